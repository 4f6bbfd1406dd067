# Copyright (c) gpuops.sharing contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""vGPU devices on a hypervisor: parse, validate, plan. Private to this collection: not a public API.

Pure functions, no I/O.  The host's GPUs come in as plain dicts (``_vgpu_host.observe`` builds them from
sysfs), plans go out as lists of operations.

The configuration is NVIDIA's vgpu-device-manager file, unchanged (github.com/NVIDIA/vgpu-device-manager,
commit acb72704ad7ca54a8149f285ff55043803406da4, ``api/spec/v1/spec.go``, ``pkg/types/vgpu_type.go``,
``pkg/types/vgpu_config.go``, ``api/spec/v1/helpers.go``):

* top level: ``version`` (required when anything else is there, must be ``v1``) and ``vgpu-configs``, a
  non-empty map of named configs; any other key is refused;
* a config is a non-empty list of entries; an entry has ``devices`` (``all`` or a list of GPU indexes) and
  ``vgpu-devices`` (type name -> count > 0; an empty map means "no vGPUs"), optionally ``device-filter``
  (a PCI id ``0xDDDDVVVV`` or ``0xDDDDVVVV:0xSSSSVVVV`` with the subsystem, or a list of them);
* a type name is time-sliced ``<GPU>-<GB><series>`` (``A100-4C``, ``RTX6000-Ada-24Q``) or MIG-backed
  ``<GPU>-<G>-<GB><series>[ME|NOME|MEALL|GFX]`` (``A100-1-5C``, ``A100-1-5CME``), series A/B/C/Q; one
  entry may not mix the two kinds;
* entries are walked in order and every matching one is applied to a GPU in turn, so the last entry that
  matches a GPU is what it ends with.  NVIDIA's own ``default`` config lists one PCI id twice for two
  models that share it (0x25B610DE: A16 and A2); here the last matching entry whose types the GPU offers
  wins, so that config works on both models, and the last one is reported when none fits.

Type names are the last word of the mdev type's ``name`` file (go-nvlib ``pkg/nvmdev/nvmdev.go``
``parseMdevTypeName``: "NVIDIA A100-4C" and "GRID A100-4C" are both ``A100-4C``) or the name column of
``nvidia/creatable_vgpu_types`` on vendor-VFIO hosts.  Numeric type ids change between driver branches,
so they are never accepted as input; the plan takes them from what the host offers.

Capacity, as the driver answers it (NVIDIA Virtual GPU Software User Guide, "Virtual GPU Types" and
"Valid Virtual GPU Configurations on a Single GPU", https://docs.nvidia.com/vgpu/latest/grid-vgpu-user-guide/):

* equal-size mode (the default): all time-sliced vGPUs on one GPU are of one type; once one exists the
  driver's ``available_instances`` (mdev) or ``creatable_vgpu_types`` (VFIO) list only that type.  A GPU
  whose driver offers a second type next to an existing vGPU is in mixed-size mode; each type then takes
  ``1/max_instances`` of the GPU;
* a type fits at most its ``max_instances`` (the ``max_instance=`` field of the mdev description, the
  vGPU guide's tables otherwise), and SR-IOV GPUs at most one vGPU per virtual function;
* MIG-backed types need MIG mode and one GPU instance of the matching profile per vGPU (the profile is
  ``<G>g.<GB>gb``, ``+me`` for ME, as vgpu-device-manager's ``ToMigConfigSpecSlice`` derives it);
  time-sliced types need MIG mode off.
"""

from __future__ import annotations

import re

VERSION = "v1"
LAYOUTS = ("mdev", "sriov-mdev", "vfio")
_TIME_SLICED = re.compile(r"^(?P<gpu>[A-Z0-9]+(-([a-zA-Z]+))*)-(?P<gb>0|[1-9][0-9]*)(?P<s>[ABCQ])$")
_MIG_BACKED = re.compile(r"^(?P<gpu>[A-Z0-9]+)-(?P<g>[1-9])-(?P<gb>0|[1-9][0-9]*)(?P<s>[ABCQ])"
                         r"(?P<attr>ME|NOME|MEALL|GFX)?$")
_ATTR_PROFILE = {"ME": "+me", "NOME": "-me", "MEALL": "+me.all", "GFX": "+gfx"}
_UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
UUID_RE = _UUID
_PCI_ID = re.compile(r"^0[xX][0-9a-fA-F]{1,8}$")
MAX_COUNT = 64          # no GPU offers more vGPUs of one type (the guide's largest max_instances is 48)
MAX_ENTRIES = 1024


class ConfigError(ValueError):
    """The configuration is malformed; the message names the value and what would be valid."""


class PlanError(ValueError):
    """The configuration cannot be applied to this host; the message says why and what would fit."""


# --------------------------------------------------------------------------- type names

def type_name_from_mdev(raw: str) -> str:
    """The vGPU type name in an mdev ``name`` file: its last word ("GRID A100-4C" -> "A100-4C")."""
    words = raw.strip().split()
    if not words:
        raise ConfigError("empty mdev type name")
    return words[-1]


def parse_type(name: object) -> dict:
    """A type name's parts: {"name", "gpu", "gb", "series", "g" (0 = time-sliced), "mig_profile"}."""
    if not isinstance(name, str) or not name:
        raise ConfigError(f"vGPU type {name!r} is not a type name; expected a name such as 'A100-4C' "
                          f"(time-sliced) or 'A100-1-5C' (MIG-backed)")
    m = _TIME_SLICED.match(name)
    if m:
        return {"name": name, "gpu": m["gpu"], "gb": int(m["gb"]), "series": m["s"], "g": 0, "mig_profile": None}
    m = _MIG_BACKED.match(name)
    if m:
        g, gb = int(m["g"]), int(m["gb"])
        profile = f"{g}g.{gb}gb" + _ATTR_PROFILE.get(m["attr"] or "", "")
        return {"name": name, "gpu": m["gpu"], "gb": gb, "series": m["s"], "g": g, "mig_profile": profile}
    if re.fullmatch(r"(nvidia-)?\d+", name):
        raise ConfigError(f"vGPU type {name!r} is a numeric type id; give the type by name (such as 'A100-4C'), "
                          f"ids change between driver branches")
    raise ConfigError(f"malformed vGPU type {name!r}: expected <GPU>-<GB><series> such as 'A100-4C' or "
                      f"<GPU>-<G>-<GB><series> such as 'A100-1-5C', series A, B, C or Q")


# --------------------------------------------------------------------------- config file

def _pci_id(value: object, where: str) -> tuple[int, int | None]:
    if not isinstance(value, str) or not value:
        raise ConfigError(f"{where}: device-filter {value!r} is not a PCI id; expected '0xDDDDVVVV' "
                          f"or '0xDDDDVVVV:0xSSSSVVVV' (such as '0x20B010DE')")
    parts = value.split(":")
    if len(parts) > 2 or not all(_PCI_ID.match(p) for p in parts):
        raise ConfigError(f"{where}: device-filter {value!r} is not a PCI id; expected '0xDDDDVVVV' "
                          f"or '0xDDDDVVVV:0xSSSSVVVV' (such as '0x20B010DE')")
    return int(parts[0], 16), (int(parts[1], 16) if len(parts) == 2 else None)


def validate_devices(devices: dict, where: str) -> dict:
    """A ``vgpu-devices`` map, checked as vgpu-device-manager's VGPUConfig.AssertValid does."""
    if not isinstance(devices, dict):
        raise ConfigError(f"{where}: vgpu-devices must be a map of type name to count such as "
                          f"{{'A100-4C': 2}}, not {devices!r}")
    kinds = set()
    out = {}
    for name, count in devices.items():
        info = parse_type(name)
        if isinstance(count, bool) or not isinstance(count, int) or count <= 0:
            raise ConfigError(f"{where}: count {count!r} for '{name}' must be a whole number above 0")
        if count > MAX_COUNT:
            raise ConfigError(f"{where}: count {count} for '{name}' is more than any GPU offers ({MAX_COUNT})")
        kinds.add(bool(info["g"]))
        out[name] = count
    if len(kinds) > 1:
        raise ConfigError(f"{where}: cannot mix time-sliced and MIG-backed vGPU devices on the same GPU "
                          f"({', '.join(sorted(out))})")
    return out


def _entry(raw: object, where: str) -> dict:
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: an entry must be a map with 'devices' and 'vgpu-devices', not {raw!r}")
    for key in ("devices", "vgpu-devices"):
        if key not in raw:
            raise ConfigError(f"{where}: missing required field: {key}")
    for key in raw:
        if key not in ("devices", "vgpu-devices", "device-filter"):
            raise ConfigError(f"{where}: unexpected field: {key} (valid: devices, vgpu-devices, device-filter)")
    devices = raw["devices"]
    if isinstance(devices, str):
        if devices != "all":
            raise ConfigError(f"{where}: invalid string input for 'devices': {devices} (use 'all' or a list "
                              f"of GPU indexes such as [0, 1])")
    elif isinstance(devices, list) and all(isinstance(d, int) and not isinstance(d, bool) and d >= 0
                                           for d in devices):
        devices = sorted(set(devices))
    else:
        raise ConfigError(f"{where}: devices {devices!r} must be 'all' or a list of GPU indexes such as [0, 1]")
    filters = raw.get("device-filter")
    if filters is None or filters == "":
        filters = []
    elif isinstance(filters, str):
        filters = [filters]
    elif not isinstance(filters, list):
        raise ConfigError(f"{where}: device-filter {filters!r} must be a PCI id or a list of them")
    parsed = [_pci_id(f, where) for f in filters]
    return {"devices": devices, "device_filter": parsed, "vgpu_devices": validate_devices(raw["vgpu-devices"], where)}


def parse_spec(data: object, source: str = "config") -> dict:
    """vgpu-device-manager's whole file (a parsed YAML/JSON document) -> {name: [entries]}."""
    if data is None or data == {}:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: expected a map with 'version: v1' and 'vgpu-configs', not {type(data).__name__}")
    if "version" not in data:
        raise ConfigError(f"{source}: unable to parse with missing 'version' field (add 'version: v1')")
    for key in data:
        if key not in ("version", "vgpu-configs"):
            raise ConfigError(f"{source}: unexpected field: {key} (valid: version, vgpu-configs)")
    if data["version"] != VERSION:
        raise ConfigError(f"{source}: unknown version: {data['version']} (this format is version {VERSION})")
    configs = data.get("vgpu-configs")
    if configs is None:
        return {}
    if not isinstance(configs, dict) or not configs:
        raise ConfigError(f"{source}: at least one entry in 'vgpu-configs' is required")
    out = {}
    for name, entries in configs.items():
        out[str(name)] = parse_entries(entries, f"{source}: vgpu-configs.{name}")
    return out


def parse_entries(entries: object, where: str = "config") -> list[dict]:
    """One named config (or the module's inline ``config``): a non-empty list of entries."""
    if not isinstance(entries, list) or not entries:
        raise ConfigError(f"{where}: at least one entry is required (a list of maps with 'devices' "
                          f"and 'vgpu-devices')")
    if len(entries) > MAX_ENTRIES:
        raise ConfigError(f"{where}: {len(entries)} entries, more than {MAX_ENTRIES}")
    return [_entry(e, f"{where}[{i}]") for i, e in enumerate(entries)]


def select(spec: dict, name: str, source: str = "config") -> list[dict]:
    if name not in spec:
        names = ", ".join(sorted(spec)) or "none"
        raise ConfigError(f"{source}: no vGPU config named '{name}'; the file has: {names}")
    return spec[name]


def _matches(entry: dict, gpu: dict) -> bool:
    if entry["devices"] != "all" and gpu["index"] not in entry["devices"]:
        return False
    if not entry["device_filter"]:
        return True
    return any(device == gpu.get("device_id") and (subsystem is None or subsystem == gpu.get("subsystem_id"))
               for device, subsystem in entry["device_filter"])


def desired(entries: list[dict], gpus: list[dict]) -> dict[int, dict]:
    """GPU index -> {type: count} for every GPU an entry matches (see the module docstring for ties)."""
    out = {}
    for gpu in gpus:
        matching = [e for e in entries if _matches(e, gpu)]
        if not matching:
            continue
        offered = {t["name"] for t in gpu["types"]}
        fitting = [e for e in matching if set(e["vgpu_devices"]) <= offered]
        out[gpu["index"]] = dict((fitting or matching)[-1]["vgpu_devices"])
    return out


def normalise_uuids(raw: object, gpus: list[dict]) -> dict[int, dict[str, list[str]]]:
    """The module's ``uuids`` option: {GPU index or PCI address: {type: [uuid, ...]}}."""
    if not raw:
        return {}
    if not isinstance(raw, dict):
        raise ConfigError(f"uuids must be a map of GPU index (or PCI address) to {{type: [uuid, ...]}}, not {raw!r}")
    by_key = {}
    for gpu in gpus:
        by_key[str(gpu["index"])] = gpu["index"]
        by_key[gpu["bdf"].lower()] = gpu["index"]
    out: dict[int, dict[str, list[str]]] = {}
    seen: dict[str, str] = {}
    for key, types in raw.items():
        index = by_key.get(str(key).lower())
        if index is None:
            valid = ", ".join(f"{g['index']} ({g['bdf']})" for g in gpus) or "none"
            raise ConfigError(f"uuids: GPU {key!r} is not on this host; GPUs: {valid}")
        if not isinstance(types, dict):
            raise ConfigError(f"uuids.{key} must be a map of type name to a list of UUIDs, not {types!r}")
        for name, uuids in types.items():
            parse_type(name)
            if isinstance(uuids, str):
                uuids = [uuids]
            if not isinstance(uuids, list):
                raise ConfigError(f"uuids.{key}.{name} must be a list of UUIDs, not {uuids!r}")
            clean = []
            for u in uuids:
                v = u.strip().lower() if isinstance(u, str) else u
                if not isinstance(v, str) or not _UUID.match(v):
                    raise ConfigError(f"uuids.{key}.{name}: {u!r} is not a UUID; expected the form "
                                      f"4b20d080-1b54-4048-85b3-a6a62d165c01")
                if v in seen:
                    raise ConfigError(f"uuids: {v} is given twice ({seen[v]} and {key}.{name})")
                seen[v] = f"{key}.{name}"
                clean.append(v)
            out.setdefault(index, {}).setdefault(name, []).extend(clean)
    return out


# --------------------------------------------------------------------------- planning

def _gpu_label(gpu: dict) -> str:
    return f"GPU {gpu['index']} ({gpu['bdf']})"


def mixed_size(gpu: dict) -> bool:
    """Whether the driver lets time-sliced types of different sizes share this GPU.

    Read from its answers: with a time-sliced vGPU of type X present, a different time-sliced type still
    offered with instances available means mixed-size mode.  Without vGPUs the answer is unknown and the
    default, equal-size mode, is assumed unless the host says otherwise (``gpu["mixed_size"]``).
    """
    if gpu.get("mixed_size") is not None:
        return bool(gpu["mixed_size"])
    present = {v["type_name"] for v in gpu["vgpus"] if not parse_type(v["type_name"])["g"]}
    if not present:
        return False
    return any(n not in present and not parse_type(n)["g"] and c > 0 for n, c in gpu.get("available", {}).items())


def _check_request(gpu: dict, want: dict[str, int], fixed: dict[str, list[str]]) -> None:
    label = _gpu_label(gpu)
    types = {t["name"]: t for t in gpu["types"]}
    for name in sorted(want):
        if name not in types:
            offered = ", ".join(sorted(types, key=_type_order)) or "none (is the vGPU manager loaded?)"
            raise PlanError(f"vGPU type '{name}' is not offered on {label} {gpu.get('name', '')}".rstrip()
                            + f"; types there: {offered}")
    for name, uuids in fixed.items():
        if len(uuids) > want.get(name, 0):
            raise PlanError(f"uuids for {label}: {len(uuids)} UUIDs for '{name}' but the config asks for "
                            f"{want.get(name, 0)} of that type")
    timesliced = sorted(n for n in want if not types[n]["mig_profile"])
    migbacked = sorted(n for n in want if types[n]["mig_profile"])
    slots = len(gpu.get("vfs") or []) if gpu["layout"] != "mdev" else None
    if timesliced and gpu.get("mig_enabled"):
        raise PlanError(f"{label} has MIG mode enabled; time-sliced vGPU types ({', '.join(timesliced)}) need "
                        f"MIG mode disabled, or use MIG-backed types")
    if timesliced:
        if len(timesliced) > 1 and not mixed_size(gpu):
            raise PlanError(f"{label} takes one vGPU type at a time (equal-size mode); the config asks for "
                            f"{', '.join(f'{want[n]} {n}' for n in timesliced)}; choose one type per GPU")
        share = sum(want[n] / types[n]["max_instances"] for n in timesliced)
        for n in timesliced:
            if want[n] > types[n]["max_instances"]:
                raise PlanError(f"{label} fits at most {types[n]['max_instances']} '{n}' vGPUs, "
                                f"{want[n]} requested")
        if share > 1 + 1e-9:
            raise PlanError(f"{label} cannot hold {', '.join(f'{want[n]} {n}' for n in timesliced)} together "
                            f"(mixed-size mode: each type takes 1/max_instances of the GPU)")
    if migbacked:
        if not gpu.get("mig_enabled"):
            raise PlanError(f"{label}: MIG-backed vGPU types ({', '.join(migbacked)}) need MIG mode and GPU "
                            f"instances first; enable MIG and create them (gpuops.sharing.mig)")
        per_profile: dict[str, int] = {}
        for n in migbacked:
            if want[n] > types[n]["max_instances"]:
                raise PlanError(f"{label} fits at most {types[n]['max_instances']} '{n}' vGPUs, "
                                f"{want[n]} requested")
            per_profile[types[n]["mig_profile"]] = per_profile.get(types[n]["mig_profile"], 0) + want[n]
        for profile, need in sorted(per_profile.items()):
            have = gpu.get("gpu_instances", {}).get(profile, 0)
            if need > have:
                users = ", ".join(f"{want[n]} {n}" for n in migbacked if types[n]["mig_profile"] == profile)
                raise PlanError(f"{label}: {users} need {need} GPU instances of profile {profile}, the GPU has "
                                f"{have}; create them first (gpuops.sharing.mig)")
    total = sum(want.values())
    if slots is not None and total > slots:
        raise PlanError(f"{label} has {slots} virtual functions, one vGPU each; {total} vGPUs requested")


def _type_order(name: str) -> tuple:
    info = parse_type(name)
    return (info["series"], info["g"], info["gb"], name)


def keep_and_remove(vgpus: list[dict], want: dict[str, int], fixed: dict[str, list[str]]) -> tuple[list, list]:
    """Which existing vGPUs stay: per type, those whose UUID is fixed first, then the busy ones, then by UUID.

    Keeps the most vGPUs possible: of type T, every existing one with a fixed UUID of T, and of the others as
    many as the count leaves room for after the fixed UUIDs.  Returns (kept, removed)."""
    kept, removed = [], []
    fixed_all = {u: t for t, us in fixed.items() for u in us}
    for name in sorted({v["type_name"] for v in vgpus} | set(want)):
        mine = [v for v in vgpus if v["type_name"] == name]
        pinned = [v for v in mine if fixed_all.get(v["uuid"]) == name]
        others = [v for v in mine if v["uuid"] not in fixed_all]
        wrong = [v for v in mine if v["uuid"] in fixed_all and fixed_all[v["uuid"]] != name]
        room = max(0, want.get(name, 0) - len(fixed.get(name, [])))
        others.sort(key=lambda v: (not v.get("busy"), v["uuid"]))
        kept += pinned + others[:room]
        removed += others[room:] + wrong
    return kept, removed


def plan_gpu(gpu: dict, want: dict[str, int], fixed: dict[str, list[str]], new_uuid, force: bool = False,
             reuse: dict[str, list[str]] | None = None) -> dict:
    """The operations for one GPU.  ``new_uuid()`` gives a fresh UUID (the host passes uuid4).

    ``reuse``: UUIDs per type to create before drawing new ones (mdevctl's definitions of vGPUs that are gone,
    after a reboot), so that a VM finds its vGPU again under the same UUID."""
    _check_request(gpu, want, fixed)
    label = _gpu_label(gpu)
    types = {t["name"]: t for t in gpu["types"]}
    kept, removed = keep_and_remove(gpu["vgpus"], want, fixed)
    busy = [v for v in removed if v.get("busy")]
    if busy and not force:
        v = busy[0]
        raise PlanError(f"vGPU {v['uuid']} ({v['type_name']} on {v['parent']}, {label}) is in use: {v['busy']}; "
                        f"it would have to be removed for this config; stop the VM first or set force=true"
                        + (f" ({len(busy)} vGPUs in use in all)" if len(busy) > 1 else ""))
    ops: list[dict] = []
    if gpu["layout"] != "mdev" and not gpu.get("vfs_enabled", True) and any(want.values()):
        ops.append({"kind": "enable_vfs", "target": gpu["bdf"], "text": f"enable SR-IOV virtual functions on {label}"})
    for v in sorted(removed, key=lambda v: (v["parent"], v["uuid"])):
        ops.append({"kind": "remove", "target": v["uuid"], "parent": v["parent"], "type_name": v["type_name"],
                    "type_id": v.get("type_id"),
                    "text": f"remove vGPU {v['type_name']} from {v['parent']}" if gpu["layout"] == "vfio"
                    else f"remove vGPU {v['uuid']} ({v['type_name']}) from {v['parent']}"})
    # parents free after the removals: every VF without a kept vGPU (mdev on the PF: the PF itself)
    used = {v["parent"] for v in kept}
    free = [] if gpu["layout"] == "mdev" else [vf for vf in gpu.get("vfs") or [] if vf not in used]
    have = {}
    for v in kept:
        have.setdefault(v["type_name"], set()).add(v["uuid"])
    taken = {v["uuid"] for v in gpu["vgpus"]} - {v["uuid"] for v in removed}
    for name in sorted(want, key=_type_order):
        missing = want[name] - len(have.get(name, ()))
        wanted_uuids = [u for u in fixed.get(name, []) if u not in have.get(name, set())]
        fixed_all = {u for us in fixed.values() for u in us}
        wanted_uuids += [u for u in (reuse or {}).get(name, []) if u not in taken and u not in fixed_all]
        for _slot in range(missing):
            if gpu["layout"] == "mdev":
                parent = gpu["bdf"]
            else:
                if not free:
                    raise PlanError(f"{label}: no free virtual function left for another '{name}'")
                # vendor VFIO: fixed "UUIDs" are virtual functions (the boot unit's saved placement); the
                # others take the first free VF that no fixed one names
                pins = [vf for vf in wanted_uuids if vf in free] if gpu["layout"] == "vfio" else []
                spare = [vf for vf in free if vf not in fixed_all] or free
                parent = pins[0] if pins else spare[0]
                free.remove(parent)
                if parent in wanted_uuids:
                    wanted_uuids.remove(parent)
            if gpu["layout"] == "vfio":
                uuid = parent           # a vendor-VFIO vGPU has no UUID: its virtual function names it
            else:
                uuid = wanted_uuids.pop(0) if wanted_uuids else new_uuid()
                while uuid in taken:
                    uuid = new_uuid()
            taken.add(uuid)
            ops.append({"kind": "create", "target": uuid, "parent": parent, "type_name": name,
                        "type_id": types[name]["type_id"], "mdev_type": types[name].get("mdev_type"),
                        "text": f"create vGPU {name} on {parent}" if gpu["layout"] == "vfio"
                        else f"create vGPU {uuid} ({name}) on {parent}"})
    return {"index": gpu["index"], "kept": kept, "removed": removed, "ops": ops}


def plan(gpus: list[dict], wanted: dict[int, dict], fixed: dict[int, dict], new_uuid, force: bool = False,
         reuse: dict[int, dict] | None = None) -> list[dict]:
    """Plans for every GPU a config entry names; GPUs no entry matches are left alone.

    Every check runs for every GPU before any plan is returned, so an error on GPU 1 stops the run before
    GPU 0 is touched."""
    for index in fixed:
        if index not in wanted:
            raise ConfigError(f"uuids: GPU {index} is not selected by the config")
    where = {v["uuid"]: gpu["index"] for gpu in gpus for v in gpu["vgpus"]}
    for index, types in fixed.items():
        for uuid in (u for us in types.values() for u in us):
            if where.get(uuid, index) != index:
                raise PlanError(f"uuids: {uuid} is asked for on GPU {index} but exists on GPU {where[uuid]}; "
                                f"a UUID names one vGPU on the host")
    plans = []
    for gpu in gpus:
        if gpu["index"] not in wanted:
            continue
        plans.append(plan_gpu(gpu, wanted[gpu["index"]], fixed.get(gpu["index"], {}), new_uuid, force,
                              (reuse or {}).get(gpu["index"])))
    return plans
