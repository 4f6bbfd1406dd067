"""What the driver does to one host's GPUs: the behaviour behind every fake tool.

Functions here work on the state dict (see state.py) and raise DriverError with
an NVML return-code name (``"INSUFFICIENT_RESOURCES"``, ``"IN_USE"``, ...) when
the real driver refuses.  The fake NVML library maps those names to the real
binding's codes, and the fake nvidia-smi prints them the way the real one does.

Behaviour modelled, with the source it follows:

* MIG mode (NVML ``nvmlDeviceSetMigMode`` documentation, nvml.h; MIG User Guide,
  "Enable MIG Mode" and "Deployment Considerations"):
  - Ampere (A100/A30): setting MIG mode needs a GPU reset.  The driver tries to
    reset the GPU itself; when the GPU is idle the new mode takes effect at once
    and the activation status is SUCCESS.  When a process or a client holding the
    device (monitoring agents, nvidia-persistenced...) is present, the mode stays
    *pending* and the activation status is IN_USE.  In pass-through VMs where
    reset is not exposed the mode stays pending and the status is RESET_REQUIRED
    ("VM reboot is required").
  - Hopper and later: the mode change needs no reset ("the driver does not report
    pending mode"); it takes effect at once unless processes run on the GPU (IN_USE).
  - Disabling MIG while GPU instances exist is refused with IN_USE.
  - MIG mode persists across reboots "similar to ECC mode"; a reboot (or a GPU
    reset) applies a pending mode.
* GPU instances: creation must fit a free placement of the profile (placements
  from the catalogue, i.e. ``nvidia-smi mig -lgipp``) and the profile's instance
  count; otherwise INSUFFICIENT_RESOURCES.  Without an explicit placement the
  driver picks one itself: we model the *highest free start* of the profile's
  placement list (see default_gi_placement for the evidence).  Destroying a GPU
  instance that still has compute instances fails with IN_USE.
* GPU instance ids follow the numbering by placement seen in most real output (a
  heap over the memory slices: the full GPU is 0, the two halves 1-2, quarters
  3-6, single slices 7-14; the MIG guide's ``-cgi 19,19,14`` reports 13, 11, 3).
  Real drivers do not always keep to it, so nothing may rely on ids.
* Compute instances: placements inside the GI in compute-slice units; lowest
  free start by default; ids are the lowest unused; destroying a CI with
  processes fails with IN_USE.  Each CI is one MIG device with a MIG-<uuid> that
  stays the same for the CI's whole life.
* Reboot: pending MIG mode applied, MIG mode kept, every GPU/compute instance
  gone, compute mode back to DEFAULT, persistence mode off, processes gone.
"""

from __future__ import annotations

import hashlib
import os
import uuid as uuidlib

from . import catalogue

# NVML compute modes (nvml.h nvmlComputeMode_t)
COMPUTEMODE_DEFAULT = 0
COMPUTEMODE_EXCLUSIVE_THREAD = 1   # no longer supported by the driver
COMPUTEMODE_PROHIBITED = 2
COMPUTEMODE_EXCLUSIVE_PROCESS = 3

ARCH_NEEDS_RESET = {"ampere"}


class DriverError(Exception):
    """The driver refused; ``code`` is an NVML return-code name without NVML_ERROR_."""

    def __init__(self, code: str, detail: str = ""):
        super().__init__(f"{code}: {detail}" if detail else code)
        self.code = code
        self.detail = detail


# --------------------------------------------------------------------------- state

def _gpu_uuid(seed: str) -> str:
    digest = hashlib.sha256(seed.encode()).hexdigest()
    return "GPU-%s-%s-%s-%s-%s" % (digest[0:8], digest[8:12], digest[12:16], digest[16:20], digest[20:32])


def new_gpu(model_key: str, index: int, host: str = "gpusim", bus: int | None = None) -> dict:
    model = catalogue.find_model(model_key)
    bus = (0x07 + 0x10 * index) if bus is None else bus
    return {
        "index": index,
        "model": model["key"],
        "uuid": _gpu_uuid(f"{host}/{model['key']}/{index}"),
        "serial": str(1560000000000 + int(hashlib.sha256(f"{host}/{index}".encode()).hexdigest()[:8], 16) % 10**9),
        "pci_bus_id": "00000000:%02X:00.0" % (bus & 0xFF),
        "minor_number": index,
        "lost": False,
        "persistence_mode": 0,
        "compute_mode": COMPUTEMODE_DEFAULT,
        "mig_current": 0,
        "mig_pending": 0,
        "gpu_instances": [],
        "processes": [],
    }


def new_state(model_key: str, count: int, host: str = "gpusim", **options) -> dict:
    from .state import SCHEMA_VERSION
    if count < 1 or count > 16:
        raise ValueError(f"--gpus must be between 1 and 16, not {count}")
    gpus = [new_gpu(model_key, i, host) for i in range(count)]
    state = {
        "version": SCHEMA_VERSION,
        "host": host,
        "driver_version": options.get("driver_version", "580.95.05"),
        "cuda_driver_version": options.get("cuda_driver_version", 13000),
        "library_present": True,
        "passthrough_vm": bool(options.get("passthrough_vm", False)),
        # What nvmlDeviceGetGpuInstanceProfileInfo(V)/ProfileInfoByIdV/PossiblePlacements answer
        # while MIG mode is off: "refuse" (NOT_SUPPORTED) or "list" (CATALOGUE_SOURCES.md, "GPU
        # instance profiles with MIG disabled", has the evidence for the default).
        "profiles_when_mig_off": profiles_when_mig_off(options.get("profiles_when_mig_off", "refuse")),
        "holders": [],          # clients holding the GPUs open (e.g. nvidia-dcgm) - block resets
        "gpus": gpus,
        "faults": [],
        "counters": {"nvml_writes": 0, "boot_id": 1},
    }
    # ---- vGPU guest licensing (gpusim/license.py): a VM whose GPUs are vGPUs of one type,
    # unlicensed until nvidia-gridd obtains a license.  ``vgpu_guest="A100-4C"``.
    if options.get("vgpu_guest"):
        from . import license as lic
        state["vgpu_guest"] = lic.vgpu_guest_config(options["vgpu_guest"])
        state["license"] = lic.new_license()
    return state


PROFILES_WHEN_MIG_OFF = ("refuse", "list")


def profiles_when_mig_off(value: str) -> str:
    if value not in PROFILES_WHEN_MIG_OFF:
        raise ValueError(f"profiles_when_mig_off must be one of {', '.join(PROFILES_WHEN_MIG_OFF)}, not {value!r}")
    return value


def require_profiles_readable(state: dict, gpu: dict) -> dict:
    """GPU-instance profile queries: NOT_SUPPORTED without MIG, and while MIG is off unless the
    state says this driver lists them then (``profiles_when_mig_off: list``)."""
    mig = mig_info(gpu)
    if not gpu["mig_current"] and state.get("profiles_when_mig_off", "refuse") != "list":
        raise DriverError("NOT_SUPPORTED", "MIG mode is disabled")
    return mig


def get_gpu(state: dict, index: int) -> dict:
    for gpu in state["gpus"]:
        if gpu["index"] == index:
            return gpu
    raise DriverError("INVALID_ARGUMENT", f"no GPU with index {index}")


def model_of(gpu: dict) -> dict:
    return catalogue.find_model(gpu["model"])


def mig_info(gpu: dict) -> dict:
    mig = model_of(gpu).get("mig")
    if not mig:
        raise DriverError("NOT_SUPPORTED", f"{gpu['model']} does not support MIG")
    return mig


def require_mig_enabled(gpu: dict) -> dict:
    mig = mig_info(gpu)
    if not gpu["mig_current"]:
        raise DriverError("NOT_SUPPORTED", "MIG mode is disabled")
    return mig


def count_write(state: dict) -> None:
    state.setdefault("counters", {}).setdefault("nvml_writes", 0)
    state["counters"]["nvml_writes"] += 1


# --------------------------------------------------------------------------- profiles

def gi_profiles(gpu: dict) -> list[dict]:
    return mig_info(gpu)["gpu_instance_profiles"]


def gi_profile(gpu: dict, profile_id: int) -> dict:
    for prof in gi_profiles(gpu):
        if prof["id"] == profile_id:
            return prof
    raise DriverError("INVALID_ARGUMENT", f"GPU instance profile id {profile_id} does not exist on {gpu['model']}")


def ci_profile(gi_prof: dict, profile_id: int) -> dict:
    for prof in gi_prof["compute_instance_profiles"]:
        if prof["id"] == profile_id:
            return prof
    # nvml.h, nvmlGpuInstanceCreateComputeInstance: "NVML_ERROR_NOT_SUPPORTED If ... \\a profile isn't
    # supported" (a profile the GPU instance does not offer), not INVALID_ARGUMENT.
    raise DriverError("NOT_SUPPORTED",
                      f"compute instance profile id {profile_id} is not offered by {gi_prof['name']}")


def _overlaps(a_start: int, a_size: int, b_start: int, b_size: int) -> bool:
    return a_start < b_start + b_size and b_start < a_start + a_size


ENGINES = ("decoders", "encoders", "jpegs", "ofas")


def engines_left(gpu: dict) -> dict | None:
    """Media engines not yet given to a GPU instance; None when the full-GPU profile's counts are unknown.

    The full-GPU profile (7g on A100/H100, 4g on A30) owns every engine of the GPU; each
    GPU instance takes its profile's decoders, encoders, JPEG decoders and OFAs.  This is
    why an A30 can hold only one "+me" instance: its single OFA and JPEG go to that one.
    """
    mig = mig_info(gpu)
    full = [p for p in mig["gpu_instance_profiles"] if p["slices"] == mig["gpu_slices"]]
    if not full or any(full[0].get(e) is None for e in ENGINES):
        return None
    left = {e: full[0][e] for e in ENGINES}
    for gi in gpu["gpu_instances"]:
        prof = gi_profile(gpu, gi["profile_id"])
        for e in ENGINES:
            left[e] -= prof.get(e) or 0
    return left


def engines_fit(gpu: dict, prof: dict) -> bool:
    left = engines_left(gpu)
    return left is None or all((prof.get(e) or 0) <= left[e] for e in ENGINES)


def gi_placement_free(gpu: dict, start: int, size: int) -> bool:
    return not any(_overlaps(start, size, gi["start"], gi["size"]) for gi in gpu["gpu_instances"])


def gi_free_placements(gpu: dict, prof: dict) -> list[tuple[int, int]]:
    if sum(1 for gi in gpu["gpu_instances"] if gi["profile_id"] == prof["id"]) >= prof["instance_count"]:
        return []
    if not engines_fit(gpu, prof):
        return []
    return [tuple(p) for p in prof["placements"] if gi_placement_free(gpu, p[0], p[1])]


def gi_remaining_capacity(gpu: dict, prof: dict) -> int:
    """How many more instances of this profile fit, greedily packed (what NVML reports)."""
    used = [(gi["start"], gi["size"]) for gi in gpu["gpu_instances"]]
    count = sum(1 for gi in gpu["gpu_instances"] if gi["profile_id"] == prof["id"])
    left = engines_left(gpu)
    added = 0
    for start, size in prof["placements"]:
        if count + added >= prof["instance_count"]:
            break
        if left is not None and any((prof.get(e) or 0) * (added + 1) > left[e] for e in ENGINES):
            break
        if not any(_overlaps(start, size, s, z) for s, z in used):
            used.append((start, size))
            added += 1
    return added


def default_gi_placement(gpu: dict, prof: dict) -> tuple[int, int]:
    """The placement the driver picks when none is given (``nvidia-smi mig -cgi X``).

    Modelled rule: among the profile's free placements, the one that blocks the
    fewest still-free placements of all the GPU's GI profiles; ties go to the
    lowest start.  It reproduces every real creation sequence with a recorded
    placement (CATALOGUE_SOURCES.md, "Default placement"): the MIG User Guide's
    ``-cgi 19,19,14,9`` on an A100 (GI ids 13, 11, 3, then Insufficient
    Resources for the 3g.20gb) and ``-cgi 9,19,14,19`` succeeding, an H100 7 x 1g
    run filling slices 6, 4, 5, 0, 1, 2, 3, and A30/A100 step-by-step runs.
    """
    free = gi_free_placements(gpu, prof)
    if not free:
        raise DriverError("INSUFFICIENT_RESOURCES",
                          f"no free placement for {prof['name']} on GPU {gpu['index']}")
    alive = [tuple(pl) for other in gi_profiles(gpu) for pl in other["placements"]
             if gi_placement_free(gpu, pl[0], pl[1])]

    def blocked(pl: tuple[int, int]) -> int:
        return sum(1 for other in alive if _overlaps(pl[0], pl[1], other[0], other[1]))

    return min(free, key=lambda pl: (blocked(pl), pl[0]))


def gi_id_for(gpu: dict, start: int, size: int) -> int:
    mig = mig_info(gpu)
    mem = mig["memory_slices"]
    taken = {gi["id"] for gi in gpu["gpu_instances"]}
    if size and mem % size == 0 and start % size == 0 and (size & (size - 1)) == 0:
        heap_id = (mem // size - 1) + start // size
        if heap_id not in taken:
            return heap_id
    candidate = 1
    while candidate in taken:
        candidate += 1
    return candidate


# --------------------------------------------------------------------------- GPU instances

def create_gi(state: dict, index: int, profile_id: int, placement: tuple[int, int] | None = None) -> dict:
    gpu = get_gpu(state, index)
    require_mig_enabled(gpu)
    prof = gi_profile(gpu, profile_id)
    if placement is None:
        start, size = default_gi_placement(gpu, prof)
    else:
        start = int(placement[0])
        size = int(placement[1]) if placement[1] else None
        valid = {p[0]: p[1] for p in prof["placements"]}
        if start not in valid or (size is not None and size != valid[start]):
            raise DriverError("INVALID_ARGUMENT",
                              f"{start}:{size} is not a placement of {prof['name']}")
        size = valid[start]
        if (start, size) not in gi_free_placements(gpu, prof):
            raise DriverError("INSUFFICIENT_RESOURCES",
                              f"placement {start}:{size} for {prof['name']} is not free")
    gi = {"id": gi_id_for(gpu, start, size), "profile_id": prof["id"], "start": start, "size": size,
          "compute_instances": []}
    gpu["gpu_instances"].append(gi)
    gpu["gpu_instances"].sort(key=lambda g: g["id"])
    count_write(state)
    return gi


def get_gi(gpu: dict, gi_id: int) -> dict:
    for gi in gpu["gpu_instances"]:
        if gi["id"] == gi_id:
            return gi
    raise DriverError("NOT_FOUND", f"GPU instance {gi_id} does not exist on GPU {gpu['index']}")


def destroy_gi(state: dict, index: int, gi_id: int) -> None:
    gpu = get_gpu(state, index)
    require_mig_enabled(gpu)
    gi = get_gi(gpu, gi_id)
    if gi["compute_instances"]:
        raise DriverError("IN_USE", f"GPU instance {gi_id} still has compute instances")
    if any(p.get("gi_id") == gi_id for p in live_processes(gpu)):
        raise DriverError("IN_USE", f"GPU instance {gi_id} is in use by processes")
    _refuse_if_held(state, f"GPU instance {gi_id}")
    gpu["gpu_instances"].remove(gi)
    count_write(state)


# --------------------------------------------------------------------------- compute instances

def ci_free_placements(gi: dict, prof: dict) -> list[tuple[int, int]]:
    if sum(1 for ci in gi["compute_instances"] if ci["profile_id"] == prof["id"]) >= prof["instance_count"]:
        return []
    return [tuple(p) for p in prof["placements"]
            if not any(_overlaps(p[0], p[1], ci["start"], ci["size"]) for ci in gi["compute_instances"])]


def create_ci(state: dict, index: int, gi_id: int, profile_id: int,
              placement: tuple[int, int] | None = None) -> dict:
    gpu = get_gpu(state, index)
    require_mig_enabled(gpu)
    gi = get_gi(gpu, gi_id)
    gi_prof = gi_profile(gpu, gi["profile_id"])
    prof = ci_profile(gi_prof, profile_id)
    free = ci_free_placements(gi, prof)
    if placement is None:
        if not free:
            raise DriverError("INSUFFICIENT_RESOURCES",
                              f"no room for compute instance {prof['name']} in GPU instance {gi_id}")
        start, size = min(free)
    else:
        start, size = int(placement[0]), int(placement[1])
        if (start, size) not in [tuple(p) for p in prof["placements"]]:
            raise DriverError("INVALID_ARGUMENT", f"{start}:{size} is not a placement of {prof['name']}")
        if (start, size) not in free:
            raise DriverError("INSUFFICIENT_RESOURCES", f"placement {start}:{size} is not free")
    taken = {ci["id"] for ci in gi["compute_instances"]}
    ci_id = 0
    while ci_id in taken:
        ci_id += 1
    ci = {"id": ci_id, "profile_id": prof["id"], "start": start, "size": size,
          "uuid": "MIG-" + str(uuidlib.uuid4())}
    gi["compute_instances"].append(ci)
    gi["compute_instances"].sort(key=lambda c: c["id"])
    count_write(state)
    return ci


def get_ci(gi: dict, ci_id: int) -> dict:
    for ci in gi["compute_instances"]:
        if ci["id"] == ci_id:
            return ci
    raise DriverError("NOT_FOUND", f"compute instance {ci_id} does not exist in GPU instance {gi['id']}")


def destroy_ci(state: dict, index: int, gi_id: int, ci_id: int) -> None:
    gpu = get_gpu(state, index)
    require_mig_enabled(gpu)
    gi = get_gi(gpu, gi_id)
    ci = get_ci(gi, ci_id)
    if any(p.get("gi_id") == gi_id and p.get("ci_id") == ci_id for p in live_processes(gpu)):
        raise DriverError("IN_USE", f"compute instance {ci_id} of GPU instance {gi_id} has running processes")
    _refuse_if_held(state, f"compute instance {ci_id} of GPU instance {gi_id}")
    gi["compute_instances"].remove(ci)
    count_write(state)


def _refuse_if_held(state: dict, what: str) -> None:
    """A client holding the device open (nvidia-dcgm, nv-hostengine, dcgm-exporter) blocks destroying
    GPU and compute instances: IN_USE, as on an H200 with driver 580 in NVIDIA/DCGM#276
    ("Unable to destroy ... In use by another client" until nvidia-dcgm was stopped)."""
    holders = state.get("holders", [])
    if holders:
        raise DriverError("IN_USE", f"{what} is held open by {', '.join(holders)}")


def mig_devices(gpu: dict) -> list[tuple[dict, dict]]:
    """(gi, ci) pairs in the order NVML enumerates MIG devices."""
    return [(gi, ci) for gi in sorted(gpu["gpu_instances"], key=lambda g: g["id"])
            for ci in sorted(gi["compute_instances"], key=lambda c: c["id"])]


# --------------------------------------------------------------------------- modes, reset, reboot

def live_processes(gpu: dict) -> list[dict]:
    """The GPU's processes; a process registered as ``live`` is gone once its PID has exited,
    as the driver drops a process's contexts when it dies."""
    return [p for p in gpu["processes"] if not p.get("live") or _pid_alive(p["pid"])]


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().split(") ", 1)[1][:1] != "Z"
    except OSError:
        return False


def gpu_busy_reasons(state: dict, gpu: dict) -> list[str]:
    reasons = [f"process {p['pid']} ({p.get('name', '?')})" for p in live_processes(gpu)]
    reasons += list(state.get("holders", []))
    return reasons


def set_mig_mode(state: dict, index: int, mode: int) -> str:
    """Returns the activation status name (``SUCCESS``, ``IN_USE``, ``RESET_REQUIRED``); raises
    INVALID_ARGUMENT for a mode other than 0/1 and IN_USE when disabling with GPU instances."""
    gpu = get_gpu(state, index)
    mig = mig_info(gpu)
    if mode not in (0, 1):
        # nvml.h nvmlDeviceSetMigMode: "NVML_ERROR_INVALID_ARGUMENT If device, mode or activationStatus
        # are invalid" (mode is NVML_DEVICE_MIG_DISABLE 0 or NVML_DEVICE_MIG_ENABLE 1)
        raise DriverError("INVALID_ARGUMENT", f"MIG mode {mode} is neither 0 (disable) nor 1 (enable)")
    if mode == 0 and gpu["gpu_instances"]:
        raise DriverError("IN_USE", "GPU instances exist; destroy them before disabling MIG")
    count_write(state)
    busy = gpu_busy_reasons(state, gpu)
    if not mig.get("mode_change_requires_reset", model_of(gpu)["architecture"] in ARCH_NEEDS_RESET):
        # nvml.h nvmlDeviceSetMigMode: the outcome of the change is reported in activationStatus
        # ("NVML_ERROR_IN_USE ... if the GPU is in use"), the call itself succeeds; on Hopper and
        # later nothing is left pending, so a busy GPU keeps its mode.
        if live_processes(gpu) and mode != gpu["mig_current"]:
            return "IN_USE"
        gpu["mig_current"] = gpu["mig_pending"] = mode
        return "SUCCESS"
    gpu["mig_pending"] = mode
    if gpu["mig_current"] == mode:
        return "SUCCESS"
    if state.get("passthrough_vm"):
        return "RESET_REQUIRED"
    if busy:
        return "IN_USE"
    _apply_reset(gpu)
    return "SUCCESS"


def _apply_reset(gpu: dict) -> None:
    gpu["mig_current"] = gpu["mig_pending"]
    gpu["gpu_instances"] = []


def reset_gpu(state: dict, index: int) -> None:
    """``nvidia-smi -r``: refused while anything uses the GPU or in pass-through VMs."""
    gpu = get_gpu(state, index)
    if state.get("passthrough_vm"):
        raise DriverError("NOT_SUPPORTED", "GPU reset is not supported in this VM; reboot the VM")
    busy = gpu_busy_reasons(state, gpu)
    if busy:
        raise DriverError("IN_USE", ", ".join(busy))
    _apply_reset(gpu)
    count_write(state)


def set_compute_mode(state: dict, index: int, mode: int) -> None:
    gpu = get_gpu(state, index)
    if mode not in (COMPUTEMODE_DEFAULT, COMPUTEMODE_PROHIBITED, COMPUTEMODE_EXCLUSIVE_PROCESS):
        # EXCLUSIVE_THREAD was removed from the driver (CUDA 8 era): the driver refuses it.
        raise DriverError("INVALID_ARGUMENT" if mode > 3 or mode < 0 else "NOT_SUPPORTED",
                          f"compute mode {mode} is not supported")
    if mode == COMPUTEMODE_EXCLUSIVE_PROCESS and gpu["mig_current"]:
        # What the driver answers on a MIG-enabled GPU (nvidia-smi -c 3 on an A100 in MIG mode,
        # https://github.com/NVIDIA/DCGM/issues/82): NVML_ERROR_NOT_SUPPORTED.
        raise DriverError("NOT_SUPPORTED", "Setting compute mode to EXCLUSIVE_PROCESS is not supported on a "
                          "MIG-enabled device.")
    gpu["compute_mode"] = mode
    count_write(state)


def set_persistence_mode(state: dict, index: int, mode: int) -> None:
    gpu = get_gpu(state, index)
    gpu["persistence_mode"] = 1 if mode else 0
    count_write(state)


def reboot(state: dict) -> None:
    """What a power cycle does to the GPUs and the driver's volatile settings."""
    for gpu in state["gpus"]:
        gpu["mig_current"] = gpu["mig_pending"]
        gpu["gpu_instances"] = []
        gpu["compute_mode"] = COMPUTEMODE_DEFAULT
        gpu["persistence_mode"] = 0
        gpu["processes"] = []
        gpu["lost"] = False
    state["holders"] = []
    counters = state.setdefault("counters", {})
    counters["boot_id"] = counters.get("boot_id", 1) + 1
    for extra in state.get("volatile", []):
        state.pop(extra, None)
    # ---- vGPU guest licensing (gpusim/license.py): the lease and the running daemon are gone.
    from . import license as lic
    lic.on_reboot(state)
    # ---- MPS (gpusim/mps.py): control daemons do not survive a reboot; stop the recorded ones and
    # drop the "mps" section (their pipe directories under /run are gone too).
    from . import mps
    mps.on_reboot(state)
    # ---- vGPU host (gpusim/vgpu.py): virtual functions disabled again, every vGPU gone.
    from . import vgpu
    vgpu.on_reboot(state)


# --------------------------------------------------------------------------- processes

PROCESS_TYPES = ("C", "G", "C+G", "M", "M+C")


def add_process(state: dict, index: int, pid: int, name: str = "python3", used_memory_mib: int = 1024,
                gi_id: int | None = None, ci_id: int | None = None, live: bool = False, kind: str = "C") -> dict:
    """A process on a GPU or MIG device; ``kind`` is what nvidia-smi's Type column shows (nvidia-smi(1):
    C compute, G graphics, C+G both; M+C an MPS client, as real summaries show it)."""
    if kind not in PROCESS_TYPES:
        raise DriverError("INVALID_ARGUMENT", f"process type {kind!r}: one of {', '.join(PROCESS_TYPES)}")
    gpu = get_gpu(state, index)
    if gpu["mig_current"]:
        if gi_id is None or ci_id is None:
            raise DriverError("INVALID_ARGUMENT",
                              f"GPU {index} is in MIG mode: a process runs on a MIG device (give --gi and --ci)")
        get_ci(get_gi(gpu, gi_id), ci_id)
    elif gi_id is not None or ci_id is not None:
        raise DriverError("INVALID_ARGUMENT", f"GPU {index} is not in MIG mode; --gi/--ci do not apply")
    proc = {"pid": int(pid), "name": name, "used_memory_mib": int(used_memory_mib), "gi_id": gi_id, "ci_id": ci_id,
            "live": bool(live)}
    if kind != "C":
        proc["type"] = kind
    gpu["processes"] = [p for p in gpu["processes"] if p["pid"] != proc["pid"]] + [proc]
    return proc


def remove_process(state: dict, pid: int, index: int | None = None) -> int:
    removed = 0
    for gpu in state["gpus"]:
        if index is not None and gpu["index"] != index:
            continue
        keep = [p for p in gpu["processes"] if p["pid"] != int(pid)]
        removed += len(gpu["processes"]) - len(keep)
        gpu["processes"] = keep
    return removed
