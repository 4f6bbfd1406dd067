# Copyright (c) gpuops.sharing contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""The MIG plan of a whole host, as typed operations. Private to this collection: not a public API.

Pure: works on what ``_mig_host.HostMig.observe`` read (plain dicts) and the mig-parted entries,
never on NVML.  Every GPU is planned before anything changes, down to the placement of each
compute instance, so the runner's check sees every refusal (invalid compute-instance sizes, a
busy instance on any GPU, a reset that cannot happen) before the first write.  Where the driver
cannot list profiles yet (MIG mode off on drivers that refuse the query), NVIDIA's published
tables in ``_catalogue`` stand in, and the host re-reads the driver right after the mode change
to confirm them before creating anything.
"""

from __future__ import annotations

from collections import Counter

from ansible_collections.gpuops.sharing.plugins.module_utils import _catalogue, _mig, _mig_config
from ansible_collections.gpuops.sharing.plugins.module_utils._runner import Op

# The compute instance sizes a GPU instance of G compute slices offers, for models the catalogue
# does not know and whose driver cannot be asked yet: the pattern of every real `nvidia-smi mig
# -lcip` listing (MIG User Guide, A100/A30/H100), as gpusim's catalogue records it.
_RULE_CI_SIZES = _catalogue._PARTIAL_CI


def gpu_label(gpu: dict) -> str:
    return f"GPU {gpu['index']} ({gpu['name']}, {gpu['uuid']})"


def _short(gpu: dict) -> str:
    return f"GPU {gpu['index']} ({gpu['name']})"


def table_profiles(gpu: dict) -> tuple[list[dict], dict | None]:
    """NVIDIA's published profiles for this GPU's model, and the model; ([], None) when unknown."""
    model = _catalogue.find_device(gpu.get("pci_device_id"), gpu.get("name"))
    if model is None or not model.get("mig"):
        return [], None
    return _catalogue.gi_profiles(model), model


def _with_ci_profiles(profiles: list[dict], gpu: dict, table: list[dict]) -> list[dict]:
    """The driver's GI profiles, each with the compute instance profiles a GI of it offers.

    From an existing GI of that profile (the driver's own answer) first, else NVIDIA's table
    for the model (matched by profile id and slices), else the documented -lcip pattern.
    """
    known = {}
    for gi in gpu.get("current", []):
        if gi.get("ci_profiles"):
            known.setdefault(gi["profile_id"], gi["ci_profiles"])
    by_id = {p["id"]: p for p in table}
    out = []
    for prof in profiles:
        prof = dict(prof)
        if prof.get("ci_profiles"):
            pass
        elif prof["id"] in known:
            prof["ci_profiles"] = known[prof["id"]]
        elif prof["id"] in by_id and by_id[prof["id"]]["slices"] == prof["slices"]:
            prof["ci_profiles"] = by_id[prof["id"]]["ci_profiles"]
        else:
            sizes = _RULE_CI_SIZES.get(prof["slices"], []) + [prof["slices"]]
            prof["ci_profiles"] = [{"id": None, "name": _mig.device_name(prof, s), "slices": s,
                                    "instance_count": len(_mig.ci_placements(prof["slices"], s)),
                                    "placements": []} for s in sizes]
        out.append(prof)
    return out


def ci_profile_for(gi_profile: dict, slices: int) -> dict | None:
    """The compute instance profile that creates a CI of ``slices`` in a GI of this profile.

    The last one listed for a size: the driver's current revision (on a 1g GI with two memory
    slices, profile 7 ``1_SLICE_REV1``, which ``nvidia-smi mig -cgi 15 -C`` creates).
    """
    found = None
    for prof in gi_profile.get("ci_profiles") or []:
        if prof["slices"] == slices:
            found = prof
    return found


def check_compute_instances(profiles: list[dict], specs: list[dict], model: str) -> None:
    """Every compute instance of the layout is one its GPU instance offers, in a number that fits."""
    by_id = {p["id"]: p for p in profiles}
    for spec in specs:
        gi = by_id[spec["profile_id"]]
        offered = gi.get("ci_profiles") or []
        sizes = sorted({p["slices"] for p in offered})
        for size, count in Counter(spec["cis"]).items():
            prof = ci_profile_for(gi, size)
            if prof is None:
                names = ", ".join(_mig.device_name(gi, s) for s in sizes)
                raise _mig.MigError(f"'{_mig.device_name(gi, size)}' does not exist on {model}: a {gi['name']} GPU "
                                    f"instance offers compute instances of {', '.join(map(str, sizes))} compute "
                                    f"slices ({names})")
            if count > prof["instance_count"]:
                raise _mig.MigError(f"a {gi['name']} GPU instance on {model} holds at most {prof['instance_count']} x "
                                    f"{_mig.device_name(gi, size)}, not {count}")
        known = {p["slices"]: p["placements"] for p in offered if p.get("placements")}
        if _mig.place_cis(gi["slices"], list(spec["cis"]), [], known) is None:
            raise _mig.MigError(f"compute instances {', '.join(_mig.device_name(gi, s) for s in spec['cis'])} do not "
                                f"fit together in one {gi['name']} GPU instance on {model}")


# --------------------------------------------------------------------------- the host plan

def plan_host(gpus: list[dict], entries: list[dict], reset: str = "auto", force: bool = False) -> dict:
    """Plan every GPU of the host.

    Returns {"ops": [Op, ...], "gpus": [per-GPU plan], "problems": [...], "warnings": [...]}.
    ``problems`` are refusals (the runner's check reports them all, before any write);
    configuration errors that concern the whole host raise MigError.
    """
    unreadable = [g for g in gpus if g.get("error")]
    readable = [g for g in gpus if not g.get("error")]
    missing = _mig_config.unknown_devices(entries, gpus)
    if missing:
        raise _mig.MigError(f"devices {', '.join(missing)} do not exist on this host; it has GPUs "
                            + ", ".join(f"{g['index']} ({g['uuid']})" for g in gpus)
                            + ". devices lists NVML indices (0 to one less than the GPU count) or GPU UUIDs; "
                              "is the configuration written for a host with more GPUs?")
    nothing = _mig_config.filters_select_nothing(entries, readable)
    if nothing and not unreadable:
        raise _mig.MigError(nothing)
    chosen = _mig_config.select(entries, readable)
    for gpu in unreadable:  # selected by index, UUID or "all" (its PCI id and name are unknown)
        for number, entry in enumerate(entries):
            if entry["devices"] == "all" or gpu["index"] in entry["devices"] or gpu.get("uuid") in entry["devices"]:
                chosen[gpu["index"]] = (number, entry)
    out: dict = {"ops": [], "gpus": [], "problems": [], "warnings": [], "notes": []}
    for gpu in gpus:
        selected = chosen.get(gpu["index"])
        if gpu.get("error"):
            item = _unmanaged(gpu, selected[0] if selected else None)
            if selected and selected[1]["devices"] != "all":
                out["problems"].append(f"GPU {gpu['index']} cannot be read: {gpu['error']}")
            elif selected:
                out["warnings"].append(f"GPU {gpu['index']} is left out: it cannot be read ({gpu['error']})")
            out["gpus"].append(item)
            continue
        if selected is None:
            out["gpus"].append(_unmanaged(gpu, None))
            continue
        number, entry = selected
        if not gpu["mig_capable"]:
            if entry["mig_enabled"] and entry["devices"] != "all":
                out["problems"].append(f"{_short(gpu)} does not support MIG, but config entry {number} "
                                       "enables MIG on it")
            out["gpus"].append(_unmanaged(gpu, number))
            continue
        try:
            item = _plan_gpu(gpu, number, entry, reset, force, out["notes"])
        except _mig.MigError as exc:
            out["problems"].append(str(exc) if _short(gpu) in str(exc) else f"{_short(gpu)}: {exc}")
            out["gpus"].append(_unmanaged(gpu, number))
            continue
        out["problems"].extend(item.pop("problems"))
        out["warnings"].extend(item.pop("warnings"))
        out["ops"].extend(item["ops"])
        out["gpus"].append(item)
    return out


def _unmanaged(gpu: dict, number: int | None) -> dict:
    return {"gpu": gpu, "entry": number, "managed": False, "ops": [], "specs": None, "profiles": gpu.get("profiles", []),
            "layout": None, "reboot_required": False, "source": "driver", "after": None}


def _op(gpu: dict, kind: str, text: str, writes: bool = True, **data) -> Op:
    data["gpu"] = gpu["index"]
    return Op(kind, f"GPU {gpu['index']}", f"GPU {gpu['index']}: {text}", data, writes)


def _plan_gpu(gpu: dict, number: int, entry: dict, reset: str, force: bool, notes: list) -> dict:
    label = _short(gpu)
    table, model = table_profiles(gpu)
    item = {"gpu": gpu, "entry": number, "managed": True, "ops": [], "specs": None, "layout": None,
            "reboot_required": False, "problems": [], "warnings": [], "source": "driver", "after": None,
            "want_enabled": entry["mig_enabled"], "mig_devices": entry["mig_devices"]}
    ops = item["ops"]
    if gpu["profiles"]:
        profiles = _with_ci_profiles(gpu["profiles"], gpu, table)
    elif gpu["mig_enabled"]:
        raise _mig.MigError("the driver lists no GPU instance profiles although MIG mode is enabled; "
                            "cannot plan a layout from a failed read (check dmesg and nvidia-smi mig -lgip)")
    elif table:
        profiles, item["source"] = table, "catalogue"
    else:
        profiles, item["source"] = [], None
    item["profiles"] = profiles
    needs_reset = model["mig"]["mode_change_requires_reset"] if model else True
    can_reset = reset == "auto" and gpu.get("virtualization") != "passthrough"
    busy = [p["pid"] for p in gpu["processes"]]

    if not entry["mig_enabled"]:
        _plan_destroy_all(gpu, item, force)
        if gpu["mig_enabled"] or gpu["mig_pending"]:
            _plan_mode(gpu, item, False, needs_reset, can_reset, reset, busy)
        return item

    # ---- MIG on: the mode first
    specs = None
    if profiles:
        specs = _mig.layout_from_mig_devices(profiles, entry["mig_devices"], label, notes)
        _mig.check_feasible(profiles, specs, label)
        check_compute_instances(profiles, specs, label)
        item["specs"] = specs
    if not (gpu["mig_enabled"] and gpu["mig_pending"]):
        _plan_mode(gpu, item, True, needs_reset, can_reset, reset, busy)
        if item["reboot_required"] or item["problems"]:
            return item
        ops.append(_op(gpu, "reobserve", "read the GPU again after the MIG mode change", writes=False,
                       enable=True, expect=[_profile_key(p) for p in profiles] if item["source"] == "catalogue"
                       else None))
    current = gpu["current"] if gpu["mig_enabled"] else []
    if specs is None:
        item["warnings"].append(f"{label}: the driver lists no MIG profiles while MIG is off and the model is not in "
                                "NVIDIA's tables the collection carries, so the layout is checked and created by the "
                                "next run, after MIG mode is enabled; nothing else changes in this run")
        return item
    if _mig.matches(current, specs):
        return item
    layout = _mig.plan_layout(profiles, current, specs, label)
    item["layout"] = layout
    _plan_layout_ops(gpu, item, profiles, layout, force)
    return item


def _profile_key(prof: dict) -> list:
    return [prof["id"], prof["slices"], sorted(list(p) for p in prof["placements"])]


def _plan_mode(gpu: dict, item: dict, enable: bool, needs_reset: bool, can_reset: bool, reset: str,
               busy: list[int]) -> None:
    word = "enable" if enable else "disable"
    label = _short(gpu)
    pending_ok = gpu["mig_pending"] == enable
    if not needs_reset:
        if busy and gpu["mig_enabled"] != enable:
            item["problems"].append(f"{label}: cannot {word} MIG mode while processes use the GPU: "
                                    f"{', '.join(map(str, busy))}. Stop them (or drain the node) and run again")
            return
        if not pending_ok or gpu["mig_enabled"] != enable:
            item["ops"].append(_op(gpu, "set_mig_mode", f"{word} MIG mode", enable=enable))
        if gpu["mig_pending"] == enable and gpu["mig_enabled"] != enable:
            item["ops"].append(_op(gpu, "reset", "reset the GPU to apply the pending MIG mode",
                                   bus_id=gpu["pci_bus_id"], enable=enable, only_if_pending=True))
        return
    # Ampere: the new mode takes effect after a GPU reset (the driver resets an idle GPU itself)
    if not can_reset:
        why = ("this platform cannot reset the GPU (VM pass-through)" if reset == "auto" else "reset: never")
        if not pending_ok:
            item["ops"].append(_op(gpu, "set_mig_mode", f"{word} MIG mode (pending until a reboot: {why})",
                                   enable=enable))
        if gpu["mig_enabled"] != enable:
            item["reboot_required"] = True
        return
    if busy and gpu["mig_enabled"] != enable:
        item["problems"].append(f"{label}: MIG mode {word} needs a GPU reset, but processes use the GPU: "
                                f"{', '.join(map(str, busy))}. Stop them and run again, or use reset: never and "
                                "reboot")
        return
    if not pending_ok:
        item["ops"].append(_op(gpu, "set_mig_mode", f"{word} MIG mode", enable=enable))
    if gpu["mig_enabled"] != enable:
        item["ops"].append(_op(gpu, "reset", "reset the GPU if the driver does not apply the MIG mode itself",
                               bus_id=gpu["pci_bus_id"], enable=enable, only_if_pending=True))


def _busy_problem(gpu: dict, busy: list) -> str:
    what = "; ".join(f"GPU instance {gi['id']} compute instance {ci['id']} ({ci.get('mig_uuid')}) used by "
                     f"process(es) {', '.join(map(str, ci['processes']))}" for gi, ci in busy)
    return (f"{_short(gpu)}: reaching this layout would destroy instances with running processes: {what}. "
            "Stop those processes (or drain the node) and run again, or set force: true to terminate them")


def _plan_destroy_all(gpu: dict, item: dict, force: bool) -> None:
    layout = {"keep": [], "create": [], "destroy_gis": list(gpu["current"]),
              "destroy_cis": [{"gi": gi, "ci": ci} for gi in gpu["current"] for ci in gi["compute_instances"]],
              "cost": (0, 0)}
    if layout["destroy_gis"]:
        item["layout"] = layout
        _plan_layout_ops(gpu, item, item["profiles"], layout, force)


def _plan_layout_ops(gpu: dict, item: dict, profiles: list[dict], layout: dict, force: bool) -> None:
    by_id = {p["id"]: p for p in profiles}
    ops = item["ops"]
    busy = [(d["gi"], d["ci"]) for d in layout["destroy_cis"] if d["ci"].get("processes")]
    if busy and not force:
        item["problems"].append(_busy_problem(gpu, busy))
    pids = sorted({pid for _gi, ci in busy for pid in ci["processes"]})
    if pids and force:
        ops.append(_op(gpu, "terminate", f"stop process(es) {', '.join(map(str, pids))} (force)", pids=pids))
    for d in layout["destroy_cis"]:
        gi, ci = d["gi"], d["ci"]
        name = _mig.device_name(by_id[gi["profile_id"]], ci["slices"]) if gi["profile_id"] in by_id else "?"
        ops.append(_op(gpu, "destroy_ci", f"destroy compute instance {ci['id']} ({name}, {ci.get('mig_uuid')}) of "
                       f"GPU instance {gi['id']}", gi_id=gi["id"], ci_id=ci["id"]))
    for gi in layout["destroy_gis"]:
        name = by_id[gi["profile_id"]]["name"] if gi["profile_id"] in by_id else "?"
        ops.append(_op(gpu, "destroy_gi", f"destroy GPU instance {gi['id']} ({name} at {gi['start']}:{gi['size']})",
                       gi_id=gi["id"]))
    for keep in layout["keep"]:
        if keep["new_cis"]:
            gi = keep["gi"]
            prof = by_id[gi["profile_id"]]
            taken = [(c["start"], c["size"]) for c in keep["kept_cis"]]
            _plan_cis(gpu, ops, prof, keep["new_cis"], taken, gi_id=gi["id"], where=f"GPU instance {gi['id']}")
    for create in layout["create"]:
        prof = by_id[create["profile_id"]]
        ops.append(_op(gpu, "create_gi", f"create GPU instance {prof['name']} at {create['start']}:{create['size']}",
                       profile_id=prof["id"], start=create["start"], size=create["size"]))
        _plan_cis(gpu, ops, prof, create["cis"], [], gi_start=create["start"],
                  where=f"the {prof['name']} GPU instance at {create['start']}:{create['size']}")


def _plan_cis(gpu: dict, ops: list, prof: dict, sizes: list[int], taken: list, where: str, gi_id: int | None = None,
              gi_start: int | None = None) -> None:
    known = {p["slices"]: p["placements"] for p in prof.get("ci_profiles") or [] if p.get("placements")}
    placements = _mig.place_cis(prof["slices"], list(sizes), taken, known)
    if placements is None:  # check_compute_instances and plan_layout make sure it fits
        raise _mig.MigError(f"compute instances {sizes} do not fit in {where}")
    for size, (start, length) in zip(sizes, placements):
        ci = ci_profile_for(prof, size)
        ops.append(_op(gpu, "create_ci", f"create compute instance {_mig.device_name(prof, size)} at {start}:{length} "
                       f"in {where}", gi_id=gi_id, gi_start=gi_start, gi_profile_id=prof["id"], slices=size,
                       ci_profile_id=ci["id"] if ci else None, start=start, size=length))


# --------------------------------------------------------------------------- reporting

def counts(item: dict) -> tuple[int, int, int]:
    """(kept, destroyed, created) instances, GPU and compute, of one GPU's plan."""
    layout = item.get("layout")
    gpu = item["gpu"]
    if layout is None:
        mode_change = any(o.kind == "set_mig_mode" for o in item["ops"])
        if item.get("managed") and item.get("specs") is not None and not mode_change:
            return sum(1 + len(gi["compute_instances"]) for gi in gpu.get("current", [])), 0, 0
        return 0, 0, 0
    destroyed = len(layout["destroy_gis"]) + len(layout["destroy_cis"])
    created = sum(1 + len(c["cis"]) for c in layout["create"]) + sum(len(k["new_cis"]) for k in layout["keep"])
    kept = sum(1 + len(k["kept_cis"]) for k in layout["keep"])
    return kept, destroyed, created


def planned_after(item: dict) -> list[str]:
    """The layout the plan leads to, one line per GPU instance (check mode's ``after``)."""
    gpu = item["gpu"]
    profiles = item["profiles"]
    if not item.get("managed"):
        return _mig.render_layout(profiles, gpu.get("current", []))
    if item.get("reboot_required"):
        return _mig.render_layout(profiles, gpu.get("current", []))
    if not item["want_enabled"]:
        return []
    if item["specs"] is None:
        return [f"(after the MIG mode change) {name} x{count}"
                for name, count in sorted(item["mig_devices"].items())]
    layout = item["layout"]
    if layout is None:
        return _mig.render_layout(profiles, gpu.get("current", []) if gpu["mig_enabled"] else [])
    kept = [dict(k["gi"], compute_instances=k["kept_cis"] + [{"slices": s, "start": 0, "size": s, "id": -1}
                                                             for s in k["new_cis"]]) for k in layout["keep"]]
    new = [{"id": -1, "profile_id": c["profile_id"], "start": c["start"], "size": c["size"],
            "compute_instances": [{"slices": s, "start": 0, "size": s, "id": -1} for s in c["cis"]]}
           for c in layout["create"]]
    return _mig.render_layout(profiles, kept + new)
