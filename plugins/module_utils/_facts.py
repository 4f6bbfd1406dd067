# Copyright (c) gpuops.sharing contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""GPU facts and the misconfigurations they reveal. Private to this collection: not a public API.

``gather`` reads every GPU through an :class:`_nvml.Nvml` session; ``find_problems``
is pure: it looks at gathered facts and says what is wrong and what to do.
"""

from __future__ import annotations

from ansible_collections.gpuops.sharing.plugins.module_utils._nvml import NvmlError


def _placement(start: int, size: int) -> dict:
    return {"start": start, "size": size}


def gather_gpu(nv, gpu, include_profiles: bool = True, failed: list | None = None) -> dict:
    """One GPU's facts.  A part that cannot be read (its GPU instances, its processes) is appended to
    ``failed`` as a ``read_failed`` problem and left out of the facts, never reported as empty."""
    failed = [] if failed is None else failed
    facts = nv.summary(gpu)
    facts.update({"mig_slices": None, "gpu_instances": [], "gpu_instance_profiles": [], "processes": [],
                  "unread": []})
    uuid_by_ids = {}
    if facts["mig_capable"]:
        profiles = nv.gi_profiles(gpu, with_capacity=facts["mig_enabled"])
        facts["mig_slices"] = max([p["gpu_slices"] for p in profiles] + [p["slices"] for p in profiles]) \
            if profiles else None
        if include_profiles:
            facts["gpu_instance_profiles"] = [
                {"id": p["id"], "name": p["name"], "slices": p["slices"], "memory_mib": p["memory_mib"],
                 "instance_count": p["instance_count"], "remaining": p.get("remaining"),
                 "placements": [_placement(*pl) for pl in p["placements"]]}
                for p in profiles]
        instances = []
        if facts["mig_enabled"]:
            try:
                instances = nv.gpu_instances(gpu, profiles, strict=True)
            except NvmlError as exc:
                _unread(facts, failed, "gpu_instances", exc)
            for gi in instances:
                cis = []
                for ci in gi["compute_instances"]:
                    uuid_by_ids[(gi["id"], ci["id"])] = ci["mig_uuid"]
                    cis.append({"id": ci["id"], "profile": ci["profile"], "profile_id": ci["profile_id"],
                                "placement": _placement(ci["start"], ci["size"]), "mig_uuid": ci["mig_uuid"]})
                slices = next((p["slices"] for p in profiles if p["id"] == gi["profile_id"]), None)
                facts["gpu_instances"].append({
                    "id": gi["id"], "profile": gi["profile"], "profile_id": gi["profile_id"], "slices": slices,
                    "placement": _placement(gi["start"], gi["size"]), "compute_instances": cis})
    try:
        procs = nv.processes(gpu, strict=True)
    except NvmlError as exc:
        procs = []
        _unread(facts, failed, "processes", exc)
    for proc in procs:
        proc["mig_uuid"] = uuid_by_ids.get((proc["gpu_instance_id"], proc["compute_instance_id"]))
        facts["processes"].append(proc)
    return facts


def _unread(facts: dict, failed: list, part: str, exc: NvmlError) -> None:
    facts["unread"].append(part)
    failed.append(problem("read_failed", "error", f"GPU {facts['index']}: its {part.replace('_', ' ')} cannot be "
                          f"read: {exc.message}", "the rest of the GPU was read; facts about its "
                          f"{part.replace('_', ' ')} are missing, not empty: see the message", facts["index"]))


def gather(nv, include_profiles: bool = True) -> tuple[list[dict], list[dict]]:
    """Facts for every GPU; a GPU that cannot be read becomes a problem, not a failure."""
    gpus, problems = [], []
    count = nv.device_count()
    if count == 0:
        problems.append(problem("no_gpus", "warning", "the NVIDIA driver is loaded but reports no GPU on this host",
                                "check that the GPUs are seen by the kernel (lspci -d 10de:) and bound to the "
                                "nvidia driver, not vfio-pci (pass-through to VMs) or hidden by the BIOS; dmesg "
                                "shows NVRM errors for GPUs the driver could not initialise"))
    for index in range(count):
        try:
            gpus.append(gather_gpu(nv, nv.gpu(index), include_profiles, problems))
        except NvmlError as exc:
            code = "gpu_lost" if exc.code == "GPU_IS_LOST" else "gpu_unreadable"
            problems.append(problem(code, "error", exc.message,
                                    "the other GPUs were read; " + (
                                        "check dmesg for Xid errors, then reset the GPU or reboot"
                                        if code == "gpu_lost" else "see the message"), index))
    return gpus, problems


def problem(code: str, severity: str, message: str, hint: str, gpu: int | None = None) -> dict:
    return {"gpu": gpu, "code": code, "severity": severity, "message": message, "hint": hint}


def no_driver_problem(error: NvmlError) -> dict:
    return problem("no_driver" if error.code in ("LIBRARY_NOT_FOUND", "DRIVER_NOT_LOADED") else "nvml_error",
                   "error", error.message,
                   "install or load the NVIDIA driver, then gather again" if error.code in
                   ("LIBRARY_NOT_FOUND", "DRIVER_NOT_LOADED") else "see the message")


def find_problems(gpus: list[dict]) -> list[dict]:
    """Misconfigurations visible in the facts, each with what to do about it."""
    found = []
    for gpu in gpus:
        idx = gpu["index"]
        if gpu["mig_capable"] and gpu["mig_pending"] is not None and bool(gpu["mig_pending"]) != gpu["mig_enabled"]:
            want = "enable" if gpu["mig_pending"] else "disable"
            found.append(problem(
                "mig_pending_reset", "warning",
                f"GPU {idx}: MIG mode change is pending ({want}) and not yet in effect",
                f"stop the processes and services using GPU {idx} and reset it (nvidia-smi -r -i {idx}), "
                "or reboot the host (in a VM, reboot the VM)", idx))
        if gpu["mig_enabled"] and not gpu["gpu_instances"] and "gpu_instances" not in gpu.get("unread", []):
            found.append(problem(
                "mig_without_instances", "warning",
                f"GPU {idx} is in MIG mode but has no GPU instances: CUDA sees no usable device on it",
                "apply a MIG layout (gpuops.sharing.mig) or disable MIG mode on this GPU", idx))
        for gi in gpu["gpu_instances"]:
            if not gi["compute_instances"]:
                found.append(problem(
                    "gpu_instance_without_compute_instance", "warning",
                    f"GPU {idx}: GPU instance {gi['id']} ({gi['profile']}) has no compute instance, "
                    "so no MIG device exists for it and nothing can run there",
                    "create its compute instance(s) (gpuops.sharing.mig does it with the layout) or destroy it", idx))
        if gpu["mig_enabled"] and gpu["gpu_instances"]:
            total = gpu["mig_slices"] or 0
            used = sum(gi["slices"] or 0 for gi in gpu["gpu_instances"])
            if total and used < total:
                found.append(problem(
                    "mig_unused_slices", "info",
                    f"GPU {idx}: {total - used} of {total} compute slices are not in any GPU instance",
                    "add instances to the layout if the capacity should be used", idx))
        if not gpu["mig_enabled"] and any(p["gpu_instance_id"] is not None for p in gpu["processes"]):
            found.append(problem("inconsistent_processes", "warning",
                                 f"GPU {idx}: processes report MIG instances while MIG is off",
                                 "re-read after the running jobs finish", idx))
        if gpu["persistence_mode"] is False:
            found.append(problem(
                "persistence_mode_off", "info",
                f"GPU {idx}: persistence mode is off; the driver may tear down GPU state when no client is "
                "connected, slowing job start",
                "run nvidia-persistenced (recommended by NVIDIA) on this host", idx))
    return found
