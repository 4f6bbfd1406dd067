# Copyright (c) gpuops.sharing contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Observe, plan and apply MIG layouts on one host. Private to this collection: not a public API.

Used by the ``gpuops.sharing.mig`` module and, unchanged, by the boot-time
re-apply (``gpuops-mig.service`` runs the role's ``gpuops-mig-apply``, which calls
:func:`apply_config_file` with python3 on the host),
so the layout restored after a reboot comes from the same code as the layout
Ansible applied.  No ansible imports here.
"""

from __future__ import annotations

import os
import signal
import time

from ansible_collections.gpuops.sharing.plugins.module_utils import _mig, _mig_config
from ansible_collections.gpuops.sharing.plugins.module_utils._nvml import Nvml, NvmlError

BOOT_ERRORS = (_mig_config.ConfigError, _mig.MigError, NvmlError)

# What can keep a GPU from being reset, and what to do about it (NVIDIA MIG User Guide,
# "Enable MIG Mode": "All daemons holding handles on driver modules need to be stopped before
# MIG enablement"; DGX guide: stop nvsm and dcgm; HGX: Fabric Manager; nvidia_drm with modeset).
HOLDERS = {
    "nvidia-persiste": ("nvidia-persistenced", "systemctl stop nvidia-persistenced (start it again afterwards)"),
    "nv-hostengine": ("DCGM (nv-hostengine)", "systemctl stop nvidia-dcgm"),
    "dcgm-exporter": ("dcgm-exporter", "stop dcgm-exporter (its pod or service)"),
    "nv-fabricmanage": ("NVIDIA Fabric Manager", "on NVSwitch systems reset all GPUs of the system together "
                        "with Fabric Manager stopped (systemctl stop nvidia-fabricmanager), or reboot"),
    "nvsm": ("NVSM", "systemctl stop nvsm"),
    "Xorg": ("an X server", "stop the display manager"),
    "Xwayland": ("a Wayland session", "stop the display manager"),
}


class MigApplyError(Exception):
    """Applying failed; ``done`` lists what had been done by then."""

    def __init__(self, message: str, done: list[str] | None = None):
        super().__init__(message)
        self.message = message
        self.done = list(done or [])


def reset_blockers(proc_root: str = "/proc") -> list[str]:
    """Processes and kernel modules on this host that typically block a GPU reset."""
    found = []
    try:
        pids = [d for d in os.listdir(proc_root) if d.isdigit()]
    except OSError:
        pids = []
    seen = set()
    for pid in pids:
        try:
            with open(os.path.join(proc_root, pid, "comm")) as fh:
                comm = fh.read().strip()
        except OSError:
            continue
        for prefix, (what, remedy) in HOLDERS.items():
            if comm.startswith(prefix) and what not in seen:
                seen.add(what)
                found.append(f"{what} (pid {pid}) is running: {remedy}")
    try:
        with open(os.path.join(proc_root, "modules")) as fh:
            for line in fh:
                fields = line.split()
                if fields and fields[0] == "nvidia_drm" and len(fields) > 2 and fields[2] != "0":
                    found.append("the nvidia_drm module is loaded and in use (display or modeset=1): "
                                 "stop the display manager and run 'modprobe -r nvidia_drm', or reboot")
    except OSError:
        pass
    return found


class HostMig:
    """One host's GPUs: read them, plan the layout, apply it."""

    def __init__(self, nv: Nvml, run_command, check_mode: bool = False, reset: str = "auto",
                 force: bool = False, nvidia_smi: str | None = "nvidia-smi", log=None,
                 process_timeout: float = 10.0):
        self.nv = nv
        self.run_command = run_command
        self.check_mode = check_mode
        self.reset = reset
        self.force = force
        self.nvidia_smi = nvidia_smi
        self.log = log or (lambda msg: None)
        self.process_timeout = process_timeout
        self.done: list[str] = []
        self.notes: list[str] = []   # profile names taken for the driver's (warnings for the user)

    # ------------------------------------------------------------------ observe
    def observe(self, gpu) -> dict:
        facts = self.nv.summary(gpu)
        facts["gpu"] = gpu
        facts["profiles"] = self.nv.gi_profiles(gpu, with_capacity=False) if facts["mig_capable"] else []
        procs = self.nv.processes(gpu)
        facts["processes"] = procs
        facts["current"] = []
        if facts["mig_enabled"]:
            for gi in self.nv.gpu_instances(gpu, facts["profiles"]):
                for ci in gi["compute_instances"]:
                    ci["processes"] = [p["pid"] for p in procs
                                       if p["gpu_instance_id"] == gi["id"] and p["compute_instance_id"] == ci["id"]]
                facts["current"].append(gi)
        return facts

    # ------------------------------------------------------------------ plan
    def plan(self, entries: list[dict]) -> list[dict]:
        """Read every GPU and plan each one; raises MigError/ConfigError before any change."""
        gpus = [self.nv.gpu(i) for i in range(self.nv.device_count())]
        observed = [self.observe(g) for g in gpus]
        missing = _mig_config.unknown_devices(entries, observed)
        if missing:
            raise _mig.MigError(f"devices {', '.join(missing)} do not exist on this host; it has GPUs "
                                + ", ".join(f"{g['index']} ({g['uuid']})" for g in observed)
                                + ". devices lists NVML indices (0 to one less than the GPU count) or GPU UUIDs; "
                                  "is the configuration written for a host with more GPUs?")
        nothing = _mig_config.filters_select_nothing(entries, observed)
        if nothing:
            raise _mig.MigError(nothing)
        chosen = _mig_config.select(entries, observed)
        plans = []
        for facts in observed:
            item = {"facts": facts, "entry": None, "managed": False, "specs": None, "layout_plan": None,
                    "mode": None}
            if facts["index"] not in chosen:
                plans.append(item)
                continue
            number, entry = chosen[facts["index"]]
            item["entry"] = number
            label = f"GPU {facts['index']} ({facts['name']})"
            if not facts["mig_capable"]:
                if entry["mig_enabled"] and entry["devices"] != "all":
                    raise _mig.MigError(f"{label} does not support MIG, but config entry {number} enables MIG on it")
                plans.append(item)
                continue
            item["managed"] = True
            item["want_enabled"] = entry["mig_enabled"]
            item["mig_devices"] = entry["mig_devices"]
            if entry["mig_enabled"]:
                for name in entry["mig_devices"]:
                    _mig.parse_profile(name)
                if not facts["profiles"] and not facts["mig_enabled"]:
                    # a driver that lists no profiles while MIG is off: the layout is checked
                    # against the driver's profiles right after MIG mode is enabled
                    item["specs"] = None
                else:
                    specs = _mig.layout_from_mig_devices(facts["profiles"], entry["mig_devices"], label, self.notes)
                    _mig.check_feasible(facts["profiles"], specs, label)
                    item["specs"] = specs
                    if not _mig.matches(facts["current"], specs):
                        item["layout_plan"] = _mig.plan_layout(facts["profiles"], facts["current"], specs, label)
            plans.append(item)
        return plans

    # ------------------------------------------------------------------ apply
    def apply(self, entries: list[dict]) -> dict:
        plans = self.plan(entries)
        for note in self.notes:
            self.log(note)
        results = []
        for item in plans:
            results.append(self._apply_gpu(item))
        return {"gpus": results, "changed": any(r["changed"] for r in results),
                "reboot_required": any(r["reboot_required"] for r in results),
                "kept": sum(r["kept"] for r in results), "destroyed": sum(r["destroyed"] for r in results),
                "created": sum(r["created"] for r in results)}

    def _record(self, text: str) -> None:
        self.done.append(text)
        self.log(text)

    def _result(self, item: dict, facts: dict) -> dict:
        return {"index": facts["index"], "uuid": facts["uuid"], "name": facts["name"], "managed": item["managed"],
                "config_entry": item["entry"], "mig_enabled": facts["mig_enabled"],
                "mig_pending": facts["mig_pending"], "changed": False, "reboot_required": False,
                "reset": False, "kept": 0, "destroyed": 0, "created": 0, "operations": [],
                "before": _mig.render_layout(facts["profiles"], facts["current"]), "after": [],
                "instances": []}

    def _apply_gpu(self, item: dict) -> dict:
        facts = item["facts"]
        res = self._result(item, facts)
        if not item["managed"]:
            res["after"] = res["before"]
            res["instances"] = _instances(facts)
            return res
        want = item["want_enabled"]
        label = f"GPU {facts['index']} ({facts['name']}, {facts['uuid']})"
        if not want:
            if facts["current"]:
                self._destroy_everything(facts, res, label)
            if facts["mig_enabled"] or facts["mig_pending"]:
                self._set_mode(facts, res, False, label)
                res["mig_enabled"], res["mig_pending"] = facts["mig_enabled"], facts["mig_pending"]
            res["after"] = [] if not res["reboot_required"] else res["before"]
            return res
        if not facts["mig_enabled"] or not facts["mig_pending"]:
            self._set_mode(facts, res, True, label)
            res["mig_enabled"], res["mig_pending"] = facts["mig_enabled"], facts["mig_pending"]
            if item["specs"] is None and (res["reboot_required"] or self.check_mode and not facts["mig_enabled"]):
                res["after"] = [f"(after the MIG mode change) {name} x{count}"
                                for name, count in sorted(item["mig_devices"].items())]
                return res
            if res["reboot_required"] or self.check_mode and not facts["mig_enabled"]:
                plan = _mig.plan_layout(facts["profiles"], [], item["specs"], label)
                self._count_layout(plan, res, run=False, facts=facts, label=label)
                res["after"] = [f"{c['profile']} at {c['start']}:{c['size']} (after the MIG mode change)"
                                for c in plan["create"]]
                return res
            facts = self.observe(facts["gpu"])
            if item["specs"] is None:
                try:
                    item["specs"] = _mig.layout_from_mig_devices(facts["profiles"], item["mig_devices"], label)
                    _mig.check_feasible(facts["profiles"], item["specs"], label)
                except _mig.MigError as exc:
                    raise MigApplyError(f"{exc} (MIG mode was enabled first; the layout was checked after)",
                                        self.done) from None
            item["layout_plan"] = None if _mig.matches(facts["current"], item["specs"]) else \
                _mig.plan_layout(facts["profiles"], facts["current"], item["specs"], label)
        plan = item["layout_plan"]
        if plan is None:
            res["kept"] = sum(1 + len(gi["compute_instances"]) for gi in facts["current"])
        else:
            self._check_busy(plan, label)
            self._count_layout(plan, res, run=not self.check_mode, facts=facts, label=label)
        after = facts if self.check_mode or plan is None else self.observe(facts["gpu"])
        if not self.check_mode and not _mig.matches(after["current"], item["specs"]):
            raise MigApplyError(f"{label}: after applying, the layout is "
                                f"'{'; '.join(_mig.render_layout(after['profiles'], after['current']))}', not "
                                f"'{_mig.describe_specs(after['profiles'], item['specs'])}'", self.done)
        if self.check_mode and plan is not None:
            res["after"] = _planned_after(facts, plan)
        else:
            res["after"] = _mig.render_layout(after["profiles"], after["current"])
            res["instances"] = _instances(after)
            res["mig_enabled"], res["mig_pending"] = after["mig_enabled"], after["mig_pending"]
        return res

    # ------------------------------------------------------------------ pieces
    def _check_busy(self, plan: dict, label: str) -> None:
        busy = [(d["gi"], d["ci"]) for d in plan["destroy_cis"] if d["ci"].get("processes")]
        if busy and not self.force:
            what = "; ".join(f"GPU instance {gi['id']} compute instance {ci['id']} ({ci.get('mig_uuid')}) used by "
                             f"process(es) {', '.join(map(str, ci['processes']))}" for gi, ci in busy)
            raise _mig.MigError(f"{label}: reaching this layout would destroy instances with running processes: "
                                f"{what}. Stop those processes (or drain the node) and run again, or set force: true "
                                "to terminate them")

    def _count_layout(self, plan: dict, res: dict, run: bool, facts: dict | None = None, label: str = "") -> None:
        res["destroyed"] = len(plan["destroy_gis"]) + len(plan["destroy_cis"])
        res["created"] = sum(1 + len(c["cis"]) for c in plan["create"]) + sum(len(k["new_cis"]) for k in plan["keep"])
        res["kept"] = sum(1 + len(k["kept_cis"]) for k in plan["keep"])
        ops = []
        for d in plan["destroy_cis"]:
            ops.append(("destroy_ci", d))
        for gi in plan["destroy_gis"]:
            ops.append(("destroy_gi", gi))
        for k in plan["keep"]:
            if k["new_cis"]:
                ops.append(("create_cis", k))
        for c in plan["create"]:
            ops.append(("create_gi", c))
        if ops:
            res["changed"] = True
        for kind, data in ops:
            text = _describe_op(kind, data, facts["profiles"] if facts else [])
            res["operations"].append(text)
            if run:
                self._run_op(kind, data, facts, label)
                self._record(f"GPU {facts['index']}: {text}")

    def _run_op(self, kind: str, data: dict, facts: dict, label: str) -> None:
        gpu = facts["gpu"]
        profiles = {p["id"]: p for p in facts["profiles"]}
        try:
            if kind == "destroy_ci":
                if data["ci"].get("processes"):
                    self._terminate(facts, data["ci"]["processes"], label)
                self.nv.destroy_compute_instance(gpu, data["gi"]["id"], data["ci"]["id"])
            elif kind == "destroy_gi":
                self.nv.destroy_gpu_instance(gpu, data["id"])
            elif kind == "create_cis":
                gi = data["gi"]
                self._create_cis(gpu, gi["id"], profiles[gi["profile_id"]], data["new_cis"],
                                 [(c["start"], c["size"]) for c in data["kept_cis"]])
            elif kind == "create_gi":
                gi_id = self.nv.create_gpu_instance(gpu, profiles[data["profile_id"]], data["start"], data["size"])
                self._create_cis(gpu, gi_id, profiles[data["profile_id"]], data["cis"], [])
        except NvmlError as exc:
            raise MigApplyError(exc.message + ". The next run continues from what exists now.", self.done) from None

    def _create_cis(self, gpu, gi_id: int, gi_profile: dict, sizes: list[int], taken: list) -> None:
        ci_profiles = self.nv.ci_profiles_of(gpu, gi_id)
        by_slices: dict[int, dict] = {}
        for prof in ci_profiles:  # the last one listed for a size wins: the driver's current revision
            by_slices[prof["slices"]] = prof
        known = {s: p["placements"] for s, p in by_slices.items() if p["placements"]}
        for size in sizes:
            if size not in by_slices:
                raise MigApplyError(f"GPU instance {gi_id} ({gi_profile['name']}) offers no compute instance of "
                                    f"{size} slices; it offers " + ", ".join(p["name"] for p in ci_profiles), self.done)
        placements = _mig.place_cis(gi_profile["slices"], sizes, taken, known)
        if placements is None:
            raise MigApplyError(f"compute instances {sizes} do not fit in GPU instance {gi_id}", self.done)
        for size, (start, length) in zip(sizes, placements):
            self.nv.create_compute_instance(gpu, gi_id, by_slices[size], start, length)

    def _terminate(self, facts: dict, pids: list[int], label: str) -> None:
        for sig, wait in ((signal.SIGTERM, self.process_timeout), (signal.SIGKILL, 5.0)):
            for pid in pids:
                try:
                    os.kill(pid, sig)
                except ProcessLookupError:
                    pass
                except PermissionError:
                    raise MigApplyError(f"{label}: not allowed to stop process {pid}: run with become: true",
                                        self.done) from None
            deadline = time.monotonic() + wait
            while time.monotonic() < deadline:
                alive = {p["pid"] for p in self.nv.processes(facts["gpu"])} & set(pids)
                if not alive:
                    self._record(f"GPU {facts['index']}: stopped process(es) {', '.join(map(str, pids))} (force)")
                    return
                time.sleep(0.2)
        raise MigApplyError(f"{label}: process(es) {', '.join(map(str, pids))} still use the GPU after "
                            "SIGTERM and SIGKILL", self.done)

    def _destroy_everything(self, facts: dict, res: dict, label: str) -> None:
        plan = {"keep": [], "create": [], "destroy_gis": list(facts["current"]),
                "destroy_cis": [{"gi": gi, "ci": ci} for gi in facts["current"] for ci in gi["compute_instances"]]}
        self._check_busy(plan, label)
        self._count_layout(plan, res, run=not self.check_mode, facts=facts, label=label)

    def _set_mode(self, facts: dict, res: dict, enable: bool, label: str) -> None:
        word = "enable" if enable else "disable"
        res["changed"] = True
        if facts["mig_pending"] != enable:
            res["operations"].append(f"{word} MIG mode")
            if not self.check_mode:
                if facts["processes"] and enable != facts["mig_enabled"] and self.reset != "never":
                    raise MigApplyError(f"{label}: cannot {word} MIG mode while processes use the GPU: "
                                        + ", ".join(str(p["pid"]) for p in facts["processes"])
                                        + ". Stop them (or drain the node) and run again", self.done)
                try:
                    status = self.nv.set_mig_mode(facts["gpu"], enable)
                except NvmlError as exc:
                    raise MigApplyError(exc.message, self.done) from None
                self._record(f"GPU {facts['index']}: {word} MIG mode (activation: {status})")
                current, pending = self.nv.mig_mode(facts["gpu"])
                facts["mig_enabled"], facts["mig_pending"] = bool(current), bool(pending)
                if status == "RESET_REQUIRED":
                    res["reboot_required"] = True
                    res["operations"].append("reboot required: this platform cannot reset the GPU (VM pass-through)")
                    return
        if facts["mig_enabled"] == enable:
            return
        # the new mode is pending: the GPU must be reset (Ampere) for it to take effect
        if self.reset == "never":
            res["reboot_required"] = True
            res["operations"].append(f"MIG mode {word} pending: reboot (or reset the GPU) to apply it; reset: never")
            return
        if self.check_mode:
            res["operations"].append(f"reset GPU {facts['index']} if the driver does not apply the MIG mode itself")
            return
        res["operations"].append(f"reset GPU {facts['index']} to apply the MIG mode")
        procs = self.nv.processes(facts["gpu"])
        if procs:
            raise MigApplyError(f"{label}: MIG mode {word} is pending and needs a GPU reset, but processes use the GPU: "
                                + ", ".join(str(p["pid"]) for p in procs)
                                + ". Stop them and run again, or use reset: never and reboot", self.done)
        self._reset(facts, res, label)

    def _reset(self, facts: dict, res: dict, label: str) -> None:
        if not self.nvidia_smi:
            raise MigApplyError(f"{label}: a GPU reset is needed but nvidia-smi was not found", self.done)
        rc, out, err = self.run_command([self.nvidia_smi, "-r", "-i", str(facts["index"])])
        text = " ".join((out + " " + err).split())
        if rc == 0:
            res["reset"] = True
            self._record(f"GPU {facts['index']}: reset")
            current, pending = self.nv.mig_mode(facts["gpu"])
            facts["mig_enabled"], facts["mig_pending"] = bool(current), bool(pending)
            return
        if "not supported" in text.lower():
            res["reboot_required"] = True
            res["operations"].append("reboot required: the GPU cannot be reset on this platform")
            return
        blockers = reset_blockers()
        hint = ("; ".join(blockers)) if blockers else \
            "stop the services that hold the GPU (nvidia-persistenced, nvidia-dcgm, dcgm-exporter, Fabric Manager, " \
            "display managers; unload nvidia_drm), or use reset: never and reboot"
        raise MigApplyError(f"{label}: GPU reset failed: {text}. What holds the GPU: {hint}", self.done)


def _describe_op(kind: str, data: dict, profiles: list[dict]) -> str:
    by_id = {p["id"]: p for p in profiles}
    if kind == "destroy_ci":
        gi, ci = data["gi"], data["ci"]
        name = _mig.device_name(by_id[gi["profile_id"]], ci["slices"]) if gi["profile_id"] in by_id else "?"
        return f"destroy compute instance {ci['id']} ({name}, {ci.get('mig_uuid')}) of GPU instance {gi['id']}"
    if kind == "destroy_gi":
        name = by_id[data["profile_id"]]["name"] if data["profile_id"] in by_id else "?"
        return f"destroy GPU instance {data['id']} ({name} at {data['start']}:{data['size']})"
    if kind == "create_cis":
        gi = data["gi"]
        prof = by_id[gi["profile_id"]]
        return (f"create compute instance(s) {', '.join(_mig.device_name(prof, s) for s in data['new_cis'])} "
                f"in GPU instance {gi['id']}")
    prof = by_id[data["profile_id"]]
    return (f"create GPU instance {prof['name']} at {data['start']}:{data['size']} with "
            f"{', '.join(_mig.device_name(prof, s) for s in data['cis'])}")


def _planned_after(facts: dict, plan: dict) -> list[str]:
    kept = [dict(k["gi"], compute_instances=k["kept_cis"] + [{"slices": s, "start": 0, "size": s, "id": -1}
                                                             for s in k["new_cis"]]) for k in plan["keep"]]
    new = [{"id": -1, "profile_id": c["profile_id"], "start": c["start"], "size": c["size"],
            "compute_instances": [{"slices": s, "start": 0, "size": s, "id": -1} for s in c["cis"]]}
           for c in plan["create"]]
    return _mig.render_layout(facts["profiles"], kept + new)


def _instances(facts: dict) -> list[dict]:
    by_id = {p["id"]: p for p in facts["profiles"]}
    out = []
    for gi in facts["current"]:
        prof = by_id.get(gi["profile_id"], {"name": str(gi["profile_id"]), "slices": 0})
        out.append({"gpu_instance_id": gi["id"], "profile": prof["name"], "profile_id": gi["profile_id"],
                    "placement": {"start": gi["start"], "size": gi["size"]},
                    "compute_instances": [{"compute_instance_id": ci["id"],
                                           "profile": _mig.device_name(prof, ci["slices"]),
                                           "placement": {"start": ci["start"], "size": ci["size"]},
                                           "mig_uuid": ci["mig_uuid"]} for ci in gi["compute_instances"]]})
    return out


def apply_config_file(path: str, name: str | None, run_command, reset: str = "auto", nvidia_smi: str = "nvidia-smi",
                      log=None) -> dict:
    """Apply configuration ``name`` of the mig-parted file ``path`` (the boot-time re-apply).

    Raises ConfigError, MigError, NvmlError or MigApplyError with a message for the journal.
    """
    entries = _mig_config.load_file(path, name)
    with Nvml() as nv:
        return HostMig(nv, run_command, reset=reset, nvidia_smi=nvidia_smi, log=log).apply(entries)
