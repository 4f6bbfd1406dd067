# Copyright (c) gpuops.sharing contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""NVML access for gpuops.sharing. Private to this collection: not a public API.

The only file of the collection that imports ``pynvml`` (nvidia-ml-py).  It turns
NVML's C-shaped API into plain Python values (dicts, lists, ints) and every
NVMLError into :class:`NvmlError`, whose message names the GPU (index, model,
UUID), what was being done, and what to do about it.
"""

from __future__ import annotations

import contextlib
import ctypes
import traceback

try:
    import pynvml
except ImportError:
    pynvml = None
    PYNVML_IMPORT_ERROR = traceback.format_exc()
else:
    PYNVML_IMPORT_ERROR = None

HAS_PYNVML = pynvml is not None
MIB = 1024 * 1024
NO_ID = 0xFFFFFFFF

COMPUTE_MODES = {0: "default", 1: "exclusive_thread", 2: "prohibited", 3: "exclusive_process"}
COMPUTE_MODE_VALUES = {v: k for k, v in COMPUTE_MODES.items()}
ARCHITECTURES = {2: "kepler", 3: "maxwell", 4: "pascal", 5: "volta", 6: "turing", 7: "ampere", 8: "ada",
                 9: "hopper", 10: "blackwell", 13: "rubin"}

# What to do about each NVML return code (names as in nvml.h without NVML_ERROR_).
REMEDIES = {
    "LIBRARY_NOT_FOUND": "NVIDIA driver not installed or libnvidia-ml.so.1 not on the loader path; "
                         "install the NVIDIA datacenter driver (or fix ldconfig) on this host",
    "DRIVER_NOT_LOADED": "the NVIDIA kernel module is not loaded: check 'lsmod | grep nvidia' and dmesg, "
                         "and that the driver was built for the running kernel",
    "LIB_RM_VERSION_MISMATCH": "libnvidia-ml and the loaded kernel module are different driver versions; "
                               "reboot (or reload the nvidia modules) after a driver upgrade",
    "NO_PERMISSION": "this needs root: run the task with become: true",
    "GPU_IS_LOST": "the GPU has fallen off the bus: check dmesg for Xid errors, then reset the GPU or reboot",
    "IN_USE": "processes or services are using the GPU: stop them (see the processes listed) and run again",
    "INSUFFICIENT_RESOURCES": "the GPU has no free slices for this instance: destroy or move instances first",
    "RESET_REQUIRED": "the change needs a GPU reset (nvidia-smi -r -i INDEX) or, in a VM, a reboot",
    "NOT_SUPPORTED": "this GPU or driver does not support the operation",
    "FUNCTION_NOT_FOUND": "the installed NVIDIA driver is older than this call: upgrade the driver",
    "UNINITIALIZED": "NVML was not initialised (internal error in gpuops.sharing)",
    "TIMEOUT": "the driver timed out: check dmesg for Xid errors",
    "CORRUPTED_INFOROM": "the GPU's infoROM is corrupted: contact your hardware vendor",
    "INSUFFICIENT_POWER": "a power cable of the GPU is not connected properly",
}


class NvmlError(Exception):
    """An NVML call failed. ``code`` is the NVML return-code name, e.g. ``IN_USE``."""

    def __init__(self, message: str, code: str | None = None, gpu: int | None = None):
        super().__init__(message)
        self.message = message
        self.code = code
        self.gpu = gpu


_CODE_NAMES: dict[int, str] = {}


def error_code_name(exc: Exception) -> str:
    """``NVMLError_InUse`` -> ``IN_USE`` (the nvml.h name without NVML_ERROR_)."""
    if not _CODE_NAMES and HAS_PYNVML:
        _CODE_NAMES.update({getattr(pynvml, name): name[len("NVML_ERROR_"):]
                            for name in dir(pynvml) if name.startswith("NVML_ERROR_")})
    return _CODE_NAMES.get(getattr(exc, "value", None), "UNKNOWN")


def _text(value) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def strip_mig_prefix(name: str) -> str:
    return name[4:] if name.startswith("MIG ") else name


class Gpu:
    """A physical GPU: index, NVML handle and identity used in every message."""

    def __init__(self, index: int, handle, uuid: str, name: str):
        self.index = index
        self.handle = handle
        self.uuid = uuid
        self.name = name

    def label(self) -> str:
        return f"GPU {self.index} ({self.name}, {self.uuid})"


class Nvml:
    """An NVML session: ``with Nvml() as nv: ...``."""

    def __init__(self):
        self._open = False

    # ------------------------------------------------------------------ session
    def __enter__(self) -> Nvml:
        if not HAS_PYNVML:
            raise NvmlError("nvidia-ml-py (import pynvml) is not installed on this host", "LIBRARY_NOT_FOUND")
        self._call(pynvml.nvmlInit, action="initialise NVML")
        self._open = True
        return self

    def __exit__(self, *exc_info) -> None:
        if self._open:
            self._open = False
            with contextlib.suppress(pynvml.NVMLError):
                pynvml.nvmlShutdown()

    def _call(self, fn, *args, gpu: Gpu | None = None, action: str = ""):
        try:
            return fn(*args)
        except pynvml.NVMLError as exc:
            code = error_code_name(exc)
            where = f"{gpu.label()}: " if gpu else ""
            what = action or getattr(fn, "__name__", "NVML call")
            remedy = REMEDIES.get(code)
            message = f"{where}cannot {what}: {exc} (NVML_ERROR_{code})"
            if remedy:
                message += f". {remedy}"
            raise NvmlError(message, code, gpu.index if gpu else None) from None

    def _maybe(self, fn, *args, gpu: Gpu | None = None, default=None, action: str = ""):
        """Read something optional: NOT_SUPPORTED / FUNCTION_NOT_FOUND give ``default``."""
        try:
            return self._call(fn, *args, gpu=gpu, action=action)
        except NvmlError as exc:
            if exc.code in ("NOT_SUPPORTED", "FUNCTION_NOT_FOUND", "INVALID_ARGUMENT"):
                return default
            raise

    # ------------------------------------------------------------------ system
    def driver_version(self) -> str:
        return _text(self._call(pynvml.nvmlSystemGetDriverVersion, action="read the driver version"))

    def cuda_driver_version(self) -> str | None:
        value = self._maybe(pynvml.nvmlSystemGetCudaDriverVersion)
        return None if value is None else f"{value // 1000}.{(value % 1000) // 10}"

    def device_count(self) -> int:
        return int(self._call(pynvml.nvmlDeviceGetCount, action="count GPUs"))

    def gpus(self) -> list[Gpu]:
        return [self.gpu(i) for i in range(self.device_count())]

    def gpu(self, index: int) -> Gpu:
        handle = self._call(pynvml.nvmlDeviceGetHandleByIndex, index, action=f"open GPU {index}")
        probe = Gpu(index, handle, "UUID unknown", "model unknown")
        uuid = _text(self._call(pynvml.nvmlDeviceGetUUID, handle, gpu=probe, action="read the UUID"))
        probe.uuid = uuid
        name = _text(self._call(pynvml.nvmlDeviceGetName, handle, gpu=probe, action="read the name"))
        return Gpu(index, handle, uuid, name)

    # ------------------------------------------------------------------ GPU reads
    def summary(self, gpu: Gpu) -> dict:
        h = gpu.handle
        pci = self._call(pynvml.nvmlDeviceGetPciInfo, h, gpu=gpu, action="read PCI info")
        mem = self._call(pynvml.nvmlDeviceGetMemoryInfo, h, gpu=gpu, action="read memory info")
        arch = self._maybe(pynvml.nvmlDeviceGetArchitecture, h, gpu=gpu)
        cc = self._maybe(pynvml.nvmlDeviceGetCudaComputeCapability, h, gpu=gpu)
        compute = self._maybe(pynvml.nvmlDeviceGetComputeMode, h, gpu=gpu)
        persistence = self._maybe(pynvml.nvmlDeviceGetPersistenceMode, h, gpu=gpu)
        current, pending = self.mig_mode(gpu)
        return {
            "index": gpu.index,
            "uuid": gpu.uuid,
            "name": gpu.name,
            "pci_bus_id": _text(pci.busId),
            "pci_device_id": "0x%08X" % pci.pciDeviceId,
            "pci_subsystem_id": "0x%08X" % pci.pciSubSystemId,
            "memory_total_mib": int(mem.total // MIB),
            "memory_used_mib": int(mem.used // MIB),
            "architecture": ARCHITECTURES.get(arch, "unknown") if arch is not None else "unknown",
            "cuda_compute_capability": "%d.%d" % tuple(cc) if cc else None,
            "compute_mode": COMPUTE_MODES.get(compute, "unknown") if compute is not None else None,
            "persistence_mode": bool(persistence) if persistence is not None else None,
            "mig_capable": current is not None,
            "mig_enabled": bool(current),
            "mig_pending": None if pending is None else bool(pending),
        }

    def mig_mode(self, gpu: Gpu) -> tuple[int | None, int | None]:
        mode = self._maybe(pynvml.nvmlDeviceGetMigMode, gpu.handle, gpu=gpu, action="read MIG mode")
        return (None, None) if mode is None else (int(mode[0]), int(mode[1]))

    def _placements(self, fn, handle, profile_id, gpu: Gpu, struct=None) -> list[tuple[int, int]] | None:
        count = ctypes.c_uint(0)
        try:
            self._call(fn, handle, profile_id, None, ctypes.byref(count), gpu=gpu, action="read placements")
            array = ((struct or pynvml.c_nvmlGpuInstancePlacement_t) * max(count.value, 1))()
            self._call(fn, handle, profile_id, array, ctypes.byref(count), gpu=gpu, action="read placements")
        except NvmlError as exc:
            if exc.code in ("NOT_SUPPORTED", "FUNCTION_NOT_FOUND"):
                return None
            raise
        return [(int(array[i].start), int(array[i].size)) for i in range(count.value)]

    def _gi_profile_info(self, gpu: Gpu, enum: int):
        """Profile info, v2 (with the driver's name) or, on drivers without it, v1."""
        try:
            return self._call(pynvml.nvmlDeviceGetGpuInstanceProfileInfo, gpu.handle, enum, gpu=gpu)
        except NvmlError as exc:
            if exc.code == "FUNCTION_NOT_FOUND":
                return self._maybe(pynvml.nvmlDeviceGetGpuInstanceProfileInfo, gpu.handle, enum, 1, gpu=gpu)
            if exc.code in ("NOT_SUPPORTED", "INVALID_ARGUMENT"):
                return None
            raise

    def gi_profiles(self, gpu: Gpu, with_capacity: bool = True) -> list[dict]:
        """Every GPU instance profile the driver offers on this GPU.

        Names, ids, slice counts and placements all come from the driver; ``gpu_slices`` is the
        GPU's compute slice count (the most MIG devices it can have); ``gpu_memory_bytes`` the
        GPU's memory, from which mig-parted derives the GB in its profile names.
        """
        gpu_slices = self._maybe(pynvml.nvmlDeviceGetMaxMigDeviceCount, gpu.handle, gpu=gpu, default=0)
        memory = self._maybe(pynvml.nvmlDeviceGetMemoryInfo, gpu.handle, gpu=gpu)
        profiles = []
        for enum in range(pynvml.NVML_GPU_INSTANCE_PROFILE_COUNT):
            info = self._gi_profile_info(gpu, enum)
            if info is None:
                continue
            name = strip_mig_prefix(_text(getattr(info, "name", b""))) or \
                "%dg.%dgb" % (info.sliceCount, round(info.memorySizeMB / 1024))
            profile = {
                "id": int(info.id),
                "name": name,
                "slices": int(info.sliceCount),
                "instance_count": int(info.instanceCount),
                "memory_mib": int(info.memorySizeMB),
                "multiprocessor_count": int(info.multiprocessorCount),
                "decoders": int(info.decoderCount),
                "encoders": int(info.encoderCount),
                "jpegs": int(info.jpegCount),
                "ofas": int(info.ofaCount),
                "gpu_slices": gpu_slices,
                "gpu_memory_bytes": int(memory.total) if memory is not None else None,
                "placements": self._placements(pynvml.nvmlDeviceGetGpuInstancePossiblePlacements,
                                               gpu.handle, info.id, gpu) or [],
            }
            if with_capacity:
                profile["remaining"] = self._maybe(pynvml.nvmlDeviceGetGpuInstanceRemainingCapacity,
                                                   gpu.handle, info.id, gpu=gpu)
            profiles.append(profile)
        return profiles

    def ci_profiles(self, gpu: Gpu, gi_handle) -> list[dict]:
        profiles = []
        for enum in range(pynvml.NVML_COMPUTE_INSTANCE_PROFILE_COUNT):
            info = self._maybe(pynvml.nvmlGpuInstanceGetComputeInstanceProfileInfo, gi_handle, enum,
                               pynvml.NVML_COMPUTE_INSTANCE_ENGINE_PROFILE_SHARED, gpu=gpu)
            if info is None:
                continue
            profiles.append({
                "id": int(info.id),
                "name": strip_mig_prefix(_text(getattr(info, "name", b""))) or "%dc" % info.sliceCount,
                "slices": int(info.sliceCount),
                "instance_count": int(info.instanceCount),
                "placements": self._placements(pynvml.nvmlGpuInstanceGetComputeInstancePossiblePlacements,
                                               gi_handle, info.id, gpu,
                                               pynvml.c_nvmlComputeInstancePlacement_t) or [],
            })
        return profiles

    def _mig_handles(self, gpu: Gpu):
        """Each MIG device of a GPU in NVML order: (index, handle, GI id, CI id)."""
        count = self._maybe(pynvml.nvmlDeviceGetMaxMigDeviceCount, gpu.handle, gpu=gpu, default=0)
        for i in range(count or 0):
            try:
                mig = self._call(pynvml.nvmlDeviceGetMigDeviceHandleByIndex, gpu.handle, i, gpu=gpu,
                                 action=f"open MIG device {i}")
            except NvmlError as exc:
                if exc.code in ("NOT_FOUND", "INVALID_ARGUMENT"):
                    continue
                raise
            yield (i, mig, int(self._call(pynvml.nvmlDeviceGetGpuInstanceId, mig, gpu=gpu)),
                   int(self._call(pynvml.nvmlDeviceGetComputeInstanceId, mig, gpu=gpu)))

    def mig_uuids(self, gpu: Gpu) -> dict[tuple[int, int], str]:
        """(GI id, CI id) -> MIG device UUID."""
        return {(gi_id, ci_id): _text(self._call(pynvml.nvmlDeviceGetUUID, mig, gpu=gpu))
                for _i, mig, gi_id, ci_id in self._mig_handles(gpu)}

    def gpu_instances(self, gpu: Gpu, profiles: list[dict] | None = None, strict: bool = False) -> list[dict]:
        """The GPU instances with their compute instances, sorted by GI id.

        Each GI dict carries its NVML ``handle`` under ``_handle`` (internal use).  ``strict``: a profile
        whose instances the driver will not list raises instead of counting as "no instance of it".
        """
        if profiles is None:
            profiles = self.gi_profiles(gpu, with_capacity=False)
        names = {p["id"]: p["name"] for p in profiles}
        uuids = self.mig_uuids(gpu)
        result = []
        for prof in profiles:
            size = max(prof["instance_count"], 1)
            array = (pynvml.c_nvmlGpuInstance_t * size)()
            count = ctypes.c_uint(size)
            reader = self._call if strict else self._maybe
            extra = {} if strict else {"default": False}
            got = reader(pynvml.nvmlDeviceGetGpuInstances, gpu.handle, prof["id"], array,
                         ctypes.byref(count), gpu=gpu, action=f"list the {prof['name']} GPU instances", **extra)
            if got is False:
                continue
            for i in range(count.value):
                info = self._call(pynvml.nvmlGpuInstanceGetInfo, array[i], gpu=gpu)
                gi = {"id": int(info.id), "profile_id": int(info.profileId), "profile": names.get(info.profileId),
                      "start": int(info.placement.start), "size": int(info.placement.size),
                      "compute_instances": [], "_handle": array[i]}
                gi["compute_instances"] = self._compute_instances(gpu, gi, uuids)
                result.append(gi)
        return sorted(result, key=lambda g: g["id"])

    def _compute_instances(self, gpu: Gpu, gi: dict, uuids: dict) -> list[dict]:
        out = []
        gi["ci_profiles"] = self.ci_profiles(gpu, gi["_handle"])
        for prof in gi["ci_profiles"]:
            size = max(prof["instance_count"], 1)
            array = (pynvml.c_nvmlComputeInstance_t * size)()
            count = ctypes.c_uint(size)
            self._call(pynvml.nvmlGpuInstanceGetComputeInstances, gi["_handle"], prof["id"], array,
                       ctypes.byref(count), gpu=gpu, action="list compute instances")
            for i in range(count.value):
                info = self._call(pynvml.nvmlComputeInstanceGetInfo, array[i], gpu=gpu)
                out.append({"id": int(info.id), "profile_id": int(info.profileId), "profile": prof["name"],
                            "slices": prof["slices"],
                            "start": int(info.placement.start), "size": int(info.placement.size),
                            "mig_uuid": uuids.get((gi["id"], int(info.id))), "_handle": array[i]})
        return sorted(out, key=lambda c: c["id"])

    def processes(self, gpu: Gpu, strict: bool = False) -> list[dict]:
        """Compute processes on the GPU.  ``strict``: a driver that cannot list them raises (a busy check
        must not take an unanswered question for "no process"); otherwise that gives an empty list."""
        if strict:
            procs = self._call(pynvml.nvmlDeviceGetComputeRunningProcesses, gpu.handle, gpu=gpu,
                               action="list the processes using the GPU")
        else:
            procs = self._maybe(pynvml.nvmlDeviceGetComputeRunningProcesses, gpu.handle, gpu=gpu, default=[],
                                action="list processes")
        out = []
        for proc in procs:
            gi_id = getattr(proc, "gpuInstanceId", NO_ID)
            ci_id = getattr(proc, "computeInstanceId", NO_ID)
            used = getattr(proc, "usedGpuMemory", None)
            out.append({
                "pid": int(proc.pid),
                "used_memory_mib": None if used is None else int(used // MIB),
                "gpu_instance_id": None if gi_id in (None, NO_ID) else int(gi_id),
                "compute_instance_id": None if ci_id in (None, NO_ID) else int(ci_id),
            })
        return out

    # ------------------------------------------------------------------ writes
    def set_mig_mode(self, gpu: Gpu, enabled: bool) -> str:
        """Returns the activation status: ``SUCCESS``, ``IN_USE``, ``RESET_REQUIRED``, ..."""
        mode = pynvml.NVML_DEVICE_MIG_ENABLE if enabled else pynvml.NVML_DEVICE_MIG_DISABLE
        status = self._call(pynvml.nvmlDeviceSetMigMode, gpu.handle, mode, gpu=gpu,
                            action=("enable" if enabled else "disable") + " MIG mode")
        if status == pynvml.NVML_SUCCESS:
            return "SUCCESS"
        return error_code_name(pynvml.NVMLError(status))

    def create_gpu_instance(self, gpu: Gpu, profile: dict, start: int, size: int) -> int:
        placement = pynvml.c_nvmlGpuInstancePlacement_t()
        placement.start, placement.size = start, size
        handle = self._call(pynvml.nvmlDeviceCreateGpuInstanceWithPlacement, gpu.handle, profile["id"],
                            ctypes.byref(placement), gpu=gpu,
                            action=f"create GPU instance {profile['name']} at {start}:{size}")
        return int(self._call(pynvml.nvmlGpuInstanceGetInfo, handle, gpu=gpu).id)

    def _gi_handle(self, gpu: Gpu, gi_id: int):
        return self._call(pynvml.nvmlDeviceGetGpuInstanceById, gpu.handle, gi_id, gpu=gpu,
                          action=f"open GPU instance {gi_id}")

    def ci_profiles_of(self, gpu: Gpu, gi_id: int) -> list[dict]:
        """Compute instance profiles (with the driver's placements) of an existing GPU instance."""
        return self.ci_profiles(gpu, self._gi_handle(gpu, gi_id))

    def create_compute_instance(self, gpu: Gpu, gi_id: int, profile: dict, start: int | None = None,
                                size: int | None = None) -> int:
        gi = self._gi_handle(gpu, gi_id)
        action = f"create compute instance {profile['name']} in GPU instance {gi_id}"
        if start is None:
            handle = self._call(pynvml.nvmlGpuInstanceCreateComputeInstance, gi, profile["id"], gpu=gpu,
                                action=action)
        else:
            placement = pynvml.c_nvmlComputeInstancePlacement_t()
            placement.start, placement.size = start, size
            handle = self._call(pynvml.nvmlGpuInstanceCreateComputeInstanceWithPlacement, gi, profile["id"],
                                ctypes.byref(placement), gpu=gpu, action=action + f" at {start}:{size}")
        return int(self._call(pynvml.nvmlComputeInstanceGetInfo, handle, gpu=gpu).id)

    def destroy_compute_instance(self, gpu: Gpu, gi_id: int, ci_id: int) -> None:
        gi = self._gi_handle(gpu, gi_id)
        ci = self._call(pynvml.nvmlGpuInstanceGetComputeInstanceById, gi, ci_id, gpu=gpu,
                        action=f"open compute instance {ci_id} of GPU instance {gi_id}")
        self._call(pynvml.nvmlComputeInstanceDestroy, ci, gpu=gpu,
                   action=f"destroy compute instance {ci_id} of GPU instance {gi_id}")

    def destroy_gpu_instance(self, gpu: Gpu, gi_id: int) -> None:
        self._call(pynvml.nvmlGpuInstanceDestroy, self._gi_handle(gpu, gi_id), gpu=gpu,
                   action=f"destroy GPU instance {gi_id}")

    def set_compute_mode(self, gpu: Gpu, mode: str) -> None:
        self._call(pynvml.nvmlDeviceSetComputeMode, gpu.handle, COMPUTE_MODE_VALUES[mode], gpu=gpu,
                   action=f"set compute mode {mode}")

    def set_persistence_mode(self, gpu: Gpu, enabled: bool) -> None:
        self._call(pynvml.nvmlDeviceSetPersistenceMode, gpu.handle, 1 if enabled else 0, gpu=gpu,
                   action=("enable" if enabled else "disable") + " persistence mode")

    # ------------------------------------------------------------------ vGPU guest licensing (vgpu_license)
    # nvml.h: nvmlDeviceGetVirtualizationMode -> nvmlGpuVirtualizationMode_t (NONE=0, PASSTHROUGH=1, VGPU=2,
    # HOST_VGPU=3, HOST_VSGA=4); nvmlDeviceGetGridLicensableFeatures_v4 -> nvmlGridLicensableFeatures_t
    # (isGridLicenseSupported, licensableFeaturesCount, per feature: featureCode, featureState "non-zero if
    # feature is currently licensed", productName, featureEnabled, licenseExpiry {year..sec, status}).
    VIRTUALIZATION_MODES = {0: "none", 1: "passthrough", 2: "vgpu", 3: "host_vgpu", 4: "host_vsga"}

    def virtualization_mode(self, gpu: Gpu) -> str | None:
        mode = self._maybe(pynvml.nvmlDeviceGetVirtualizationMode, gpu.handle, gpu=gpu,
                           action="read the virtualization mode")
        return None if mode is None else self.VIRTUALIZATION_MODES.get(int(mode), "unknown")

    def grid_license(self, gpu: Gpu) -> dict | None:
        """The vGPU software license of a GPU; None when the driver lacks the call (read nvidia-smi then)."""
        info = self._maybe(pynvml.nvmlDeviceGetGridLicensableFeatures_v4, gpu.handle, gpu=gpu,
                           action="read the vGPU software license state")
        if info is None:
            return None
        features = []
        for i in range(min(int(info.licensableFeaturesCount), len(info.gridLicensableFeatures))):
            feature = info.gridLicensableFeatures[i]
            expiry = feature.licenseExpiry
            features.append({
                "code": int(feature.featureCode),
                "licensed": bool(feature.featureState),
                "enabled": bool(feature.featureEnabled),
                "product": _text(feature.productName),
                "expiry": {"year": int(expiry.year), "month": int(expiry.month), "day": int(expiry.day),
                           "hour": int(expiry.hour), "min": int(expiry.min), "sec": int(expiry.sec),
                           "status": int(expiry.status)},
            })
        return {"supported": bool(info.isGridLicenseSupported), "features": features}

    # ------------------------------------------------------------------ MPS targets (mps)
    # A read for the mps module and the MPS boot-time helper: each MIG device of a GPU with its
    # memory (an MPS memory limit cannot exceed it) and the placement starts of its GPU and compute
    # instance, which name the device stably across reboots (its MIG UUID changes when the
    # instances are re-created; the placements do not when the layout is re-applied with them).
    def mig_devices(self, gpu: Gpu) -> list[dict]:
        """The MIG devices of a GPU in NVML order; empty without MIG."""
        found = []
        for i, mig, gi_id, ci_id in self._mig_handles(gpu):
            uuid = _text(self._call(pynvml.nvmlDeviceGetUUID, mig, gpu=gpu, action=f"read the UUID of MIG device {i}"))
            memory = self._call(pynvml.nvmlDeviceGetMemoryInfo, mig, gpu=gpu, action=f"read the memory of {uuid}")
            gi = self._gi_handle(gpu, gi_id)
            gi_info = self._call(pynvml.nvmlGpuInstanceGetInfo, gi, gpu=gpu)
            ci = self._call(pynvml.nvmlGpuInstanceGetComputeInstanceById, gi, ci_id, gpu=gpu,
                            action=f"open compute instance {ci_id} of GPU instance {gi_id}")
            ci_info = self._call(pynvml.nvmlComputeInstanceGetInfo, ci, gpu=gpu)
            found.append({"uuid": uuid, "gpu_instance_id": gi_id, "compute_instance_id": ci_id,
                          "gpu_instance_start": int(gi_info.placement.start),
                          "compute_instance_start": int(ci_info.placement.start),
                          "memory_total_mib": int(memory.total // MIB)})
        return found
