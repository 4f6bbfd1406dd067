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
import traceback

from ansible_collections.gpuops.sharing.plugins.module_utils._nvml_base import MIB, NO_ID, Gpu, NvmlError
from ansible_collections.gpuops.sharing.plugins.module_utils._nvml_base import text as _text
from ansible_collections.gpuops.sharing.plugins.module_utils._nvml_mig import MigCalls

try:
    import pynvml
except ImportError:
    pynvml = None
    PYNVML_IMPORT_ERROR = traceback.format_exc()
else:
    PYNVML_IMPORT_ERROR = None

HAS_PYNVML = pynvml is not None

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


_CODE_NAMES: dict[int, str] = {}


def error_code_name(exc: Exception) -> str:
    """``NVMLError_InUse`` -> ``IN_USE`` (the nvml.h name without NVML_ERROR_)."""
    if not _CODE_NAMES and HAS_PYNVML:
        _CODE_NAMES.update({getattr(pynvml, name): name[len("NVML_ERROR_"):]
                            for name in dir(pynvml) if name.startswith("NVML_ERROR_")})
    return _CODE_NAMES.get(getattr(exc, "value", None), "UNKNOWN")


class Nvml(MigCalls):
    """An NVML session: ``with Nvml() as nv: ...``.  MIG calls come from ``_nvml_mig.MigCalls``."""

    lib = pynvml

    def __init__(self):
        self._open = False

    @staticmethod
    def code_name(status: int) -> str:
        """An NVML return code as nvml.h names it without NVML_ERROR_ (``IN_USE``)."""
        return error_code_name(pynvml.NVMLError(status))

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
