# Copyright (c) gpuops.sharing contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""MIG on one host: observe and apply through NVML. Private to this collection: not a public API.

The host half of the ``mig`` module and of the boot-time re-apply (``gpuops-mig.service`` runs
the role's ``gpuops-mig-apply``, which calls :func:`apply_config_file` with python3 on the host),
so the layout restored after a reboot comes from the same code as the layout Ansible applied.
Nothing here decides: the plan comes from ``_mig_plan`` and the runner (``_runner``) runs it.
No ansible imports here.
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import time

from ansible_collections.gpuops.sharing.plugins.module_utils import _boot, _host, _mig, _mig_boot, _mig_config, _mig_plan
from ansible_collections.gpuops.sharing.plugins.module_utils._nvml import Nvml, NvmlError
from ansible_collections.gpuops.sharing.plugins.module_utils._runner import Op, RunError, run

ERRORS = (_mig_config.ConfigError, _mig.MigError, NvmlError, OSError)
BOOT_ENTRY = "gpuops-mig-apply"
# systemd unit names as systemd.unit(5) allows them (no spaces, quotes or shell syntax can pass)
UNIT_RE = re.compile(r"^(?!-)[A-Za-z0-9:_.\\@-]+(\.(service|socket|target|timer|path|scope|slice))?$")
BOOT_ERRORS = ERRORS + (RunError,)

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


def reset_blockers(proc_root: str = "/proc") -> list[str]:
    """Processes and kernel modules on this host that typically block a GPU reset."""
    found = []
    try:
        names = _host.process_names(proc_root)
    except OSError:
        names = {}
    seen = set()
    for pid, comm in sorted(names.items()):
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
    """One host's GPUs for the runner: observe, plan (through ``_mig_plan``), check, apply, verify."""

    errors = ERRORS

    def __init__(self, nv: Nvml, run_command, entries: list[dict], reset: str = "auto", force: bool = False,
                 nvidia_smi: str | None = "nvidia-smi", process_timeout: float = 10.0,
                 client_services: list[str] | None = None, systemctl: str | None = None,
                 boot_dir: str | None = None, boot_sources: dict | None = None, atomic_move=None,
                 boot_unit: dict | None = None, boot_layout: dict | None = None):
        """``boot_unit``: the validated option (``_mig_boot.validate``); ``boot_layout``: what its unit applies,
        {"entries": the config as given} (written to the unit's config file) or {"config_file", "config_name"}."""
        self.boot_unit = boot_unit
        self.boot_layout = boot_layout or {}
        self.unit_enabled: bool | None = None
        self.client_services = list(client_services or [])
        self.systemctl = systemctl
        self.boot_dir = boot_dir
        self.boot_sources = boot_sources or {}
        self.atomic_move = atomic_move
        self.active_services: list[str] = []
        self.boot_files: dict = {}
        self.nv = nv
        self.run_command = run_command
        self.entries = entries
        self.reset = reset
        self.force = force
        self.nvidia_smi = nvidia_smi
        self.process_timeout = process_timeout
        self.warnings: list[str] = []
        self.handles: dict = {}
        self.created: dict = {}      # (GPU index, GI placement start) -> GI id, for the CIs created in it
        self.after: dict = {}        # GPU index -> what verify read back
        self.reset_done: set = set()

    # ------------------------------------------------------------------ observe
    def observe(self) -> list[dict]:
        if self.boot_dir:
            self.boot_files = self._boot_wanted()
            self.boot_current = _host.read_installed(self.boot_files, os.path.join(self.boot_dir, _boot.LIB_SUBDIR))
        if self.client_services and self.systemctl:
            self.active_services = [unit for unit in self.client_services if self._is_active(unit)]
        if self.boot_unit and self.systemctl:
            self.unit_enabled = self._is_enabled(_mig_boot.unit_name(self.boot_unit))
        gpus = []
        for index in range(self.nv.device_count()):
            try:
                handle = self.nv.gpu(index)
            except NvmlError as exc:
                if exc.code in ("GPU_IS_LOST", "UNKNOWN", "NOT_SUPPORTED", "INSUFFICIENT_POWER", "IRQ_ISSUE"):
                    gpus.append({"index": index, "uuid": None, "name": "unknown", "error": exc.message})
                    continue
                raise
            self.handles[index] = handle
            try:
                gpus.append(self.read_gpu(handle))
            except NvmlError as exc:
                if exc.code != "GPU_IS_LOST":
                    raise
                gpus.append({"index": index, "uuid": handle.uuid, "name": handle.name, "error": exc.message})
        return gpus

    def read_gpu(self, gpu) -> dict:
        """Everything the plan needs of one GPU; any failed read raises (never "nothing there")."""
        facts = self.nv.summary(gpu)
        facts["error"] = None
        facts["virtualization"] = self.nv.virtualization_mode(gpu)
        facts["profiles"] = self.nv.gi_profiles(gpu, with_capacity=False) if facts["mig_capable"] else []
        facts["processes"] = self.nv.processes(gpu, strict=True)
        facts["current"] = []
        if facts["mig_enabled"]:
            for gi in self.nv.gpu_instances(gpu, facts["profiles"], strict=True):
                gi.pop("_handle", None)
                for ci in gi["compute_instances"]:
                    ci.pop("_handle", None)
                    ci["processes"] = [p["pid"] for p in facts["processes"]
                                       if p["gpu_instance_id"] == gi["id"] and p["compute_instance_id"] == ci["id"]]
                facts["current"].append(gi)
        return facts

    def _boot_wanted(self) -> dict:
        entry = _boot.entry_point("re-applies the MIG layout at boot (gpuops-mig.service)", "_mig_host", "boot_main")
        wanted = _boot.files(self.boot_dir, self.boot_sources, _boot.COLLECTION_VERSION, BOOT_ENTRY, entry)
        if self.boot_unit:
            cfg = self.boot_unit
            if "entries" in self.boot_layout:
                config_file, config_name = _mig_boot.config_path(cfg), cfg["config_name"]
                wanted[config_file] = _mig_boot.config_text(config_name, self.boot_layout["entries"],
                                                            _mig_config.yaml.safe_dump)
            else:
                config_file, config_name = self.boot_layout["config_file"], self.boot_layout["config_name"]
            wanted[_mig_boot.unit_path(cfg)] = _mig_boot.unit_text(cfg, os.path.join(self.boot_dir, BOOT_ENTRY),
                                                                   config_file, config_name, self.reset)
        return wanted

    def _is_enabled(self, unit: str) -> bool:
        rc, out, _err = self.run_command([self.systemctl, "is-enabled", unit])
        return rc == 0 and out.strip() in ("enabled", "enabled-runtime")

    def _is_active(self, unit: str) -> bool:
        if not UNIT_RE.match(unit):
            return False  # refused by check
        rc, out, _err = self.run_command([self.systemctl, "is-active", unit])
        return rc == 0 and out.strip() in ("active", "activating", "reloading")

    # ------------------------------------------------------------------ plan and check
    def plan(self, gpus: list[dict]):
        self.planned = _mig_plan.plan_host(gpus, self.entries, self.reset, self.force)
        self.warnings.extend(self.planned["notes"])
        self.warnings.extend(self.planned["warnings"])
        ops = _boot.plan_files(self.boot_current, self.boot_files) if self.boot_dir else []
        if self.boot_unit:
            unit = _mig_boot.unit_name(self.boot_unit)
            if any(op.target == _mig_boot.unit_path(self.boot_unit) for op in ops):
                ops.append(Op("daemon_reload", "systemd", "systemctl daemon-reload"))
            if not self.unit_enabled:
                ops.append(Op("enable_unit", unit, f"enable {unit} (re-applies the layout at boot)", {"unit": unit}))
        gpu_ops = self.planned["ops"]
        if self.active_services and any(op.writes for op in gpu_ops):
            units = ", ".join(self.active_services)
            gpu_ops = ([Op("stop_services", "systemd", f"stop {units} (they hold the GPUs)",
                           {"units": self.active_services})] + gpu_ops
                       + [Op("start_services", "systemd", f"start {units} again", {"units": self.active_services},
                             always=True)])
        return ops + gpu_ops

    def check(self, gpus, ops) -> list[str]:
        problems = list(self.planned["problems"])
        bad = [unit for unit in self.client_services if not UNIT_RE.match(unit)]
        if bad:
            problems.append("client_services must be systemd unit names (letters, digits and :_.\\@-, such as "
                            f"nvidia-dcgm or dcgm-exporter.service), not {', '.join(repr(u) for u in bad)}")
        if self.client_services and not self.systemctl:
            problems.append("client_services needs systemd (systemctl was not found on this host)")
        if self.boot_unit and not self.systemctl:
            problems.append("boot_unit needs systemd (systemctl was not found on this host); leave it out and "
                            "re-apply the layout after each boot another way")
        if self.boot_unit and "entries" in self.boot_layout and _mig_config.yaml is None:
            problems.append("boot_unit writes the layout as a mig-parted file, which needs PyYAML (python3-yaml) on "
                            "the host; the boot unit reads it with PyYAML too")
        if not problems and any(op.kind == "reset" for op in ops) and not self.nvidia_smi:
            problems.append("a GPU reset may be needed to apply the MIG mode, but nvidia-smi was not found; "
                            "install the NVIDIA driver utilities or use reset: never and reboot")
        return problems

    # ------------------------------------------------------------------ apply
    def apply(self, op, gpus):
        kind = op.kind
        if kind == "write_file":
            _host.write_file(op.data["path"], op.data["text"], op.data["mode"], self.atomic_move)
            return None
        if kind == "remove_file":
            _host.remove_file(op.data["path"])
            return None
        if kind in ("daemon_reload", "enable_unit"):
            argv = ["daemon-reload"] if kind == "daemon_reload" else ["enable", op.data["unit"]]
            rc, out, err = self.run_command([self.systemctl, *argv])
            if rc != 0:
                raise RunError(f"systemctl {' '.join(argv)} failed: {(err or out).strip()}")
            return None
        if kind in ("stop_services", "start_services"):
            verb = "stop" if kind == "stop_services" else "start"
            rc, out, err = self.run_command([self.systemctl, verb, *op.data["units"]])
            if rc != 0:
                raise RunError(f"systemctl {verb} {' '.join(op.data['units'])} failed: {(err or out).strip()}")
            return None
        gpu = self.handles[op.data["gpu"]]
        if kind == "set_mig_mode":
            status = self.nv.set_mig_mode(gpu, op.data["enable"])
            if status not in ("SUCCESS", "IN_USE", "RESET_REQUIRED"):
                raise RunError(f"{gpu.label()}: the driver answered {status} to the MIG mode change")
            current, pending = self.nv.mig_mode(gpu)
            if status == "IN_USE" and current == pending:
                raise RunError(f"{gpu.label()}: the driver refused the MIG mode change: the GPU is in use "
                               "(NVML activation status IN_USE); stop what uses it and run again")
            return f"{op.text} (activation: {status})"
        if kind == "reset":
            current, pending = self.nv.mig_mode(gpu)
            if current == pending:
                return False  # the driver applied the mode itself: nothing to reset
            self._reset(gpu, op.data["bus_id"])
            return op.text.replace(" if the driver does not apply the MIG mode itself", "")
        if kind == "reobserve":
            fresh = self.read_gpu(gpu)
            if fresh["mig_enabled"] != op.data["enable"]:
                raise RunError(f"{gpu.label()}: MIG mode is still {'off' if op.data['enable'] else 'on'} after the "
                               "change (pending: " + str(fresh["mig_pending"]) + "); reboot to apply it")
            expect = op.data.get("expect")
            if expect is not None:
                got = [_mig_plan._profile_key(p) for p in fresh["profiles"]]
                if sorted(got) != sorted(expect):
                    raise RunError(f"{gpu.label()}: the driver's MIG profiles differ from NVIDIA's published table "
                                   "the layout was planned with; nothing was created. Run again: the layout is "
                                   "then planned from the driver's own profiles")
            return False
        if kind == "terminate":
            self._terminate(gpu, op.data["pids"])
        elif kind == "destroy_ci":
            self.nv.destroy_compute_instance(gpu, op.data["gi_id"], op.data["ci_id"])
        elif kind == "destroy_gi":
            self.nv.destroy_gpu_instance(gpu, op.data["gi_id"])
        elif kind == "create_gi":
            profile = self._profile(op.data["gpu"], op.data["profile_id"])
            gi_id = self.nv.create_gpu_instance(gpu, profile, op.data["start"], op.data["size"])
            self.created[(op.data["gpu"], op.data["start"])] = gi_id
            return f"{op.text} (GPU instance {gi_id})"
        elif kind == "create_ci":
            gi_id = op.data["gi_id"]
            if gi_id is None:
                gi_id = self.created[(op.data["gpu"], op.data["gi_start"])]
            ci_profile = self._ci_profile(gpu, gi_id, op.data)
            self.nv.create_compute_instance(gpu, gi_id, ci_profile, op.data["start"], op.data["size"])
        else:  # pragma: no cover - the planner makes no other kind
            raise RunError(f"unknown operation {kind}")
        return None

    def _profile(self, index: int, profile_id: int) -> dict:
        item = next(i for i in self.planned["gpus"] if i["gpu"]["index"] == index)
        return next(p for p in item["profiles"] if p["id"] == profile_id)

    def _ci_profile(self, gpu, gi_id: int, data: dict) -> dict:
        """The driver's compute instance profile for the planned size (its id, when the plan came from a table)."""
        offered = self.nv.ci_profiles_of(gpu, gi_id)
        match = [p for p in offered if p["slices"] == data["slices"]]
        if not match:
            raise RunError(f"{gpu.label()}: GPU instance {gi_id} offers no compute instance of {data['slices']} "
                           "slices; it offers " + ", ".join(p["name"] for p in offered))
        chosen = [p for p in match if p["id"] == data["ci_profile_id"]]
        return chosen[-1] if chosen else match[-1]

    def _terminate(self, gpu, pids: list[int]) -> None:
        for sig, wait in ((signal.SIGTERM, self.process_timeout), (signal.SIGKILL, 5.0)):
            for pid in pids:
                try:
                    os.kill(pid, sig)
                except ProcessLookupError:
                    pass
                except PermissionError:
                    raise RunError(f"{gpu.label()}: not allowed to stop process {pid}: run with become: true") from None
            deadline = time.monotonic() + wait
            while time.monotonic() < deadline:
                alive = {p["pid"] for p in self.nv.processes(gpu, strict=True)} & set(pids)
                if not alive:
                    return
                time.sleep(0.2)
        raise RunError(f"{gpu.label()}: process(es) {', '.join(map(str, pids))} still use the GPU after "
                       "SIGTERM and SIGKILL")

    def _reset(self, gpu, bus_id: str) -> None:
        # by PCI bus id: an index can mean another GPU to nvidia-smi when CUDA_VISIBLE_DEVICES or
        # NVML's enumeration order differ, a bus id cannot
        rc, out, err = self.run_command([self.nvidia_smi, "-r", "-i", bus_id])
        text = " ".join((out + " " + err).split())
        if rc == 0:
            self.reset_done.add(gpu.index)
            return
        if "not supported" in text.lower():
            raise RunError(f"{gpu.label()}: the GPU cannot be reset on this platform ({text}); reboot to apply the "
                           "MIG mode, or use reset: never")
        blockers = reset_blockers()
        hint = ("; ".join(blockers)) if blockers else \
            "stop the services that hold the GPU (nvidia-persistenced, nvidia-dcgm, dcgm-exporter, Fabric Manager, " \
            "display managers; unload nvidia_drm), or use reset: never and reboot"
        raise RunError(f"{gpu.label()}: GPU reset failed: {text}. What holds the GPU: {hint}")

    # ------------------------------------------------------------------ verify and report
    def verify(self, gpus, ops) -> list[str]:
        problems = []
        for path, text in self.boot_files.items():
            if _host.read_managed(path) != text:
                problems.append(f"{path} does not hold the boot code written to it")
        if any(op.kind == "enable_unit" for op in ops) and not self._is_enabled(_mig_boot.unit_name(self.boot_unit)):
            problems.append(f"{_mig_boot.unit_name(self.boot_unit)} is not enabled after enabling it; see "
                            f"systemctl status {_mig_boot.unit_name(self.boot_unit)}")
        for item in self.planned["gpus"]:
            if not item["managed"] or item["gpu"]["index"] not in self.handles:
                continue
            index = item["gpu"]["index"]
            fresh = self.read_gpu(self.handles[index])
            self.after[index] = fresh
            if item["reboot_required"] or item["specs"] is None:
                continue
            if not item["want_enabled"]:
                if fresh["current"] or fresh["mig_enabled"]:
                    problems.append(f"{_mig_plan.gpu_label(fresh)}: MIG is still "
                                    f"{'on' if fresh['mig_enabled'] else 'off'} with "
                                    f"{len(fresh['current'])} GPU instance(s) after disabling it")
                continue
            profiles = fresh["profiles"] or item["profiles"]
            if not _mig.matches(fresh["current"], item["specs"]):
                problems.append(f"{_mig_plan.gpu_label(fresh)}: after applying, the layout is "
                                f"'{'; '.join(_mig.render_layout(profiles, fresh['current']))}', not "
                                f"'{_mig.describe_specs(profiles, item['specs'])}'")
        return problems

    def result(self, gpus, ops, check_mode: bool) -> dict:
        results = []
        for item in self.planned["gpus"]:
            results.append(self._gpu_result(item, check_mode))
        boot = None
        if self.boot_dir:
            boot = {"dir": self.boot_dir, "entry_point": os.path.join(self.boot_dir, BOOT_ENTRY),
                    "version": self.boot_files[os.path.join(self.boot_dir, "VERSION")].splitlines()[0],
                    "files": sorted(p for p in self.boot_files if p.startswith(self.boot_dir.rstrip("/") + "/")),
                    "unit": _mig_boot.unit_path(self.boot_unit) if self.boot_unit else None,
                    "config_file": (_mig_boot.config_path(self.boot_unit) if "entries" in self.boot_layout
                                    else self.boot_layout.get("config_file")) if self.boot_unit else None}
        return {"gpus": results, "boot": boot, "client_services": list(self.active_services),
                "reboot_required": any(r["reboot_required"] for r in results),
                "kept": sum(r["kept"] for r in results), "destroyed": sum(r["destroyed"] for r in results),
                "created": sum(r["created"] for r in results)}

    def _gpu_result(self, item: dict, check_mode: bool) -> dict:
        gpu = item["gpu"]
        kept, destroyed, created = _mig_plan.counts(item)
        before = _mig.render_layout(item["profiles"], gpu.get("current", [])) if not gpu.get("error") else []
        fresh = self.after.get(gpu["index"])
        writes = [op for op in item["ops"] if op.writes]
        res = {"index": gpu["index"], "uuid": gpu.get("uuid"), "name": gpu.get("name"),
               "managed": item["managed"], "config_entry": item["entry"],
               "mig_enabled": gpu.get("mig_enabled", False), "mig_pending": gpu.get("mig_pending"),
               "changed": bool(writes), "reboot_required": item["reboot_required"],
               "reset": gpu["index"] in self.reset_done, "kept": kept, "destroyed": destroyed, "created": created,
               "operations": [op.text for op in writes], "before": before, "after": before, "instances": [],
               "profile_source": item.get("source"), "problem": gpu.get("error")}
        if gpu.get("error"):
            return res
        if check_mode or fresh is None:
            res["after"] = _mig_plan.planned_after(item) if item["managed"] else before
            if not writes:
                res["instances"] = _instances(item["profiles"], gpu.get("current", []))
            return res
        profiles = fresh["profiles"] or item["profiles"]
        res["after"] = _mig.render_layout(profiles, fresh["current"])
        res["instances"] = _instances(profiles, fresh["current"])
        res["mig_enabled"], res["mig_pending"] = fresh["mig_enabled"], fresh["mig_pending"]
        res["reboot_required"] = bool(item["reboot_required"] and fresh["mig_enabled"] != fresh["mig_pending"])
        return res

    def diff(self, result: dict) -> dict:
        return {"before": _diff_text(result["gpus"], "before"), "after": _diff_text(result["gpus"], "after")}


def _diff_text(gpus: list[dict], key: str) -> str:
    lines = []
    for gpu in gpus:
        if gpu["changed"]:
            lines.append(f"GPU {gpu['index']} {gpu['name']} ({gpu['uuid']}):")
            lines.extend("  " + line for line in (gpu[key] or ["(no GPU instances)"]))
    return "\n".join(lines) + ("\n" if lines else "")


def _instances(profiles: list[dict], current: list[dict]) -> list[dict]:
    by_id = {p["id"]: p for p in profiles}
    out = []
    for gi in current:
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

    Raises ConfigError, MigError, NvmlError or RunError with a message for the journal.
    """
    entries = _mig_config.load_file(path, name)
    with Nvml() as nv:
        host = HostMig(nv, run_command, entries, reset=reset, nvidia_smi=nvidia_smi)
        result = run(host, check_mode=False, log=log)
        for text in host.warnings:
            (log or (lambda _t: None))(text)
        return result


def boot_main(argv: list[str], run_command, out) -> int:
    """``gpuops-mig-apply``, which ``gpuops-mig.service`` runs at boot (the entry script calls this)."""
    parser = argparse.ArgumentParser(prog=BOOT_ENTRY, description="Re-apply the MIG layout (gpuops.sharing).")
    parser.add_argument("--config-file", required=True)
    parser.add_argument("--config-name", help="the configuration to apply (default: the file's only one)")
    parser.add_argument("--reset", choices=["auto", "never"], default="auto")
    parser.add_argument("--nvidia-smi", default="nvidia-smi")
    args = parser.parse_args(argv)
    try:
        result = apply_config_file(args.config_file, args.config_name, run_command, reset=args.reset,
                                   nvidia_smi=args.nvidia_smi, log=out)
    except BOOT_ERRORS as exc:
        out(f"{BOOT_ENTRY}: {getattr(exc, 'message', exc)}")
        return 1
    for gpu in result["gpus"]:
        if gpu["managed"]:
            out(f"GPU {gpu['index']}: " + ("; ".join(gpu["after"]) or "MIG off"))
    if result["reboot_required"]:
        out(f"{BOOT_ENTRY}: a reboot is required to finish")
    return 0
