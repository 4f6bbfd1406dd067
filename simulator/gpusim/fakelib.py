"""A stand-in for libnvidia-ml.so.1, called by the real nvidia-ml-py binding.

nvidia-ml-py (``pynvml``) is a thin ctypes layer: each API function looks up a C
symbol with ``_nvmlGetFunctionPointer(name)`` and calls it with ctypes objects
(``byref`` out-parameters, string buffers, struct instances).  FakeLibrary
provides those symbols as Python callables with the same C signatures and
NVML return codes, backed by the host's gpusim state.  Everything above this
layer - function names, constants, structs, NVMLError classes - is the real
binding, so callers cannot tell the difference.

Only symbols the collection (and NVIDIA's read-only dump tool) use are provided;
any other symbol raises AttributeError, which the binding turns into
NVMLError_FunctionNotFound exactly as with an older real driver.
"""

from __future__ import annotations

import ctypes
import fnmatch

from . import device as dev
from . import state as st

MIB = 1024 * 1024
NO_ID = 0xFFFFFFFF

KIND_DEVICE, KIND_MIG, KIND_GI, KIND_CI = 1, 2, 3, 4

# nvml.h nvmlReturn_t values (identical in every nvidia-ml-py release we support).
RC = {
    "SUCCESS": 0, "UNINITIALIZED": 1, "INVALID_ARGUMENT": 2, "NOT_SUPPORTED": 3, "NO_PERMISSION": 4,
    "ALREADY_INITIALIZED": 5, "NOT_FOUND": 6, "INSUFFICIENT_SIZE": 7, "INSUFFICIENT_POWER": 8,
    "DRIVER_NOT_LOADED": 9, "TIMEOUT": 10, "IRQ_ISSUE": 11, "LIBRARY_NOT_FOUND": 12,
    "FUNCTION_NOT_FOUND": 13, "CORRUPTED_INFOROM": 14, "GPU_IS_LOST": 15, "RESET_REQUIRED": 16,
    "OPERATING_SYSTEM": 17, "LIB_RM_VERSION_MISMATCH": 18, "IN_USE": 19, "MEMORY": 20, "NO_DATA": 21,
    "VGPU_ECC_NOT_SUPPORTED": 22, "INSUFFICIENT_RESOURCES": 23, "FREQ_NOT_SUPPORTED": 24,
    "ARGUMENT_VERSION_MISMATCH": 25, "DEPRECATED": 26, "NOT_READY": 27, "GPU_NOT_FOUND": 28,
    "INVALID_STATE": 29, "UNKNOWN": 999,
}
RC_NAME = {v: k for k, v in RC.items()}

# nvml.h nvmlErrorString texts for the codes the binding has no text for.
ERROR_STRINGS = {
    "IN_USE": b"In use by another client",
    "MEMORY": b"Insufficient Memory",
    "NO_DATA": b"No data",
    "INSUFFICIENT_RESOURCES": b"Insufficient Resources",
    "ARGUMENT_VERSION_MISMATCH": b"Argument version mismatch",
    "NOT_READY": b"System is not ready",
    "GPU_NOT_FOUND": b"GPU not found",
    "INVALID_STATE": b"Invalid state",
}

ARCH = {"kepler": 2, "maxwell": 3, "pascal": 4, "volta": 5, "turing": 6, "ampere": 7, "ada": 8,
        "hopper": 9, "blackwell": 10}

NVML_GPU_INSTANCE_PROFILE_NAMES = [
    "NVML_GPU_INSTANCE_PROFILE_1_SLICE", "NVML_GPU_INSTANCE_PROFILE_2_SLICE",
    "NVML_GPU_INSTANCE_PROFILE_3_SLICE", "NVML_GPU_INSTANCE_PROFILE_4_SLICE",
    "NVML_GPU_INSTANCE_PROFILE_7_SLICE", "NVML_GPU_INSTANCE_PROFILE_8_SLICE",
    "NVML_GPU_INSTANCE_PROFILE_6_SLICE", "NVML_GPU_INSTANCE_PROFILE_1_SLICE_REV1",
    "NVML_GPU_INSTANCE_PROFILE_2_SLICE_REV1", "NVML_GPU_INSTANCE_PROFILE_1_SLICE_REV2",
    "NVML_GPU_INSTANCE_PROFILE_1_SLICE_GFX", "NVML_GPU_INSTANCE_PROFILE_2_SLICE_GFX",
    "NVML_GPU_INSTANCE_PROFILE_4_SLICE_GFX", "NVML_GPU_INSTANCE_PROFILE_1_SLICE_NO_ME",
    "NVML_GPU_INSTANCE_PROFILE_2_SLICE_NO_ME", "NVML_GPU_INSTANCE_PROFILE_1_SLICE_ALL_ME",
    "NVML_GPU_INSTANCE_PROFILE_2_SLICE_ALL_ME", "NVML_GPU_INSTANCE_PROFILE_3_SLICE_GFX",
]
NVML_COMPUTE_INSTANCE_PROFILE_NAMES = [
    "NVML_COMPUTE_INSTANCE_PROFILE_1_SLICE", "NVML_COMPUTE_INSTANCE_PROFILE_2_SLICE",
    "NVML_COMPUTE_INSTANCE_PROFILE_3_SLICE", "NVML_COMPUTE_INSTANCE_PROFILE_4_SLICE",
    "NVML_COMPUTE_INSTANCE_PROFILE_7_SLICE", "NVML_COMPUTE_INSTANCE_PROFILE_8_SLICE",
    "NVML_COMPUTE_INSTANCE_PROFILE_6_SLICE", "NVML_COMPUTE_INSTANCE_PROFILE_1_SLICE_REV1",
    "NVML_COMPUTE_INSTANCE_PROFILE_7_SLICE_NVL",
]

# Which calls change driver state (counted, so tests can prove check mode writes nothing).
WRITE_CALLS = {
    "nvmlDeviceSetMigMode", "nvmlDeviceCreateGpuInstance", "nvmlDeviceCreateGpuInstanceWithPlacement",
    "nvmlGpuInstanceDestroy", "nvmlGpuInstanceCreateComputeInstance",
    "nvmlGpuInstanceCreateComputeInstanceWithPlacement", "nvmlComputeInstanceDestroy",
    "nvmlDeviceSetComputeMode", "nvmlDeviceSetPersistenceMode",
}


class _Fail(Exception):
    def __init__(self, code: str):
        super().__init__(code)
        self.code = code


# --------------------------------------------------------------------------- ctypes helpers

def _deref(ref):
    """The object behind a byref()/pointer argument (or the object itself)."""
    obj = getattr(ref, "_obj", None)
    if obj is not None:
        return obj
    if isinstance(ref, ctypes._Pointer):
        return ref.contents
    return ref


def _int(value) -> int:
    return int(getattr(value, "value", value))


def _text(value) -> str:
    value = getattr(value, "value", value)
    return value.decode() if isinstance(value, bytes) else str(value)


def _put_str(buf, text: str, size=None) -> None:
    data = text.encode()
    limit = _int(size) if size is not None else len(buf)
    if len(data) + 1 > limit:
        raise _Fail("INSUFFICIENT_SIZE")
    buf.value = data


def encode_handle(kind: int, gpu: int, gi: int = 0, ci: int = 0) -> int:
    return (kind << 56) | ((gpu + 1) << 40) | ((gi + 1) << 20) | (ci + 1)


def decode_handle(handle) -> tuple[int, int, int, int]:
    if handle is None:
        raise _Fail("INVALID_ARGUMENT")
    value = ctypes.cast(handle, ctypes.c_void_p).value
    if not value:
        raise _Fail("INVALID_ARGUMENT")
    return value >> 56, ((value >> 40) & 0xFFFF) - 1, ((value >> 20) & 0xFFFFF) - 1, (value & 0xFFFFF) - 1


def _put_handle(ref, value: int) -> None:
    target = _deref(ref)
    ctypes.c_void_p.from_buffer(target).value = value


# --------------------------------------------------------------------------- the library

class FakeLibrary:
    """Symbols of libnvidia-ml.so.1, resolved by name like CDLL attributes."""

    def __init__(self, path: str | None = None):
        self._path = path
        self._initialized = 0
        self._symbols = {}

    def __getattr__(self, name):
        if name.startswith("_"):
            raise AttributeError(name)
        impl = getattr(type(self), "c_" + name, None)
        if impl is None:
            raise AttributeError(name)
        symbols = self.__dict__["_symbols"]
        if name not in symbols:
            symbols[name] = _Symbol(self, name, impl)
        return symbols[name]

    # ---- state access
    def _state(self) -> dict:
        return st.peek(self._path)  # read-only: every change goes through st.transaction

    def _gpu(self, state: dict, index: int) -> dict:
        try:
            gpu = dev.get_gpu(state, index)
        except dev.DriverError:
            raise _Fail("INVALID_ARGUMENT") from None
        if gpu.get("lost"):
            raise _Fail("GPU_IS_LOST")
        return gpu

    def _resolve(self, state: dict, handle, kinds=(KIND_DEVICE,)):
        kind, gpu_index, gi_id, ci_id = decode_handle(handle)
        if kind not in kinds:
            raise _Fail("INVALID_ARGUMENT")
        gpu = self._gpu(state, gpu_index)
        gi = ci = None
        if kind in (KIND_MIG, KIND_GI, KIND_CI):
            gi = next((g for g in gpu["gpu_instances"] if g["id"] == gi_id), None)
            if gi is None:
                raise _Fail("INVALID_ARGUMENT")
        if kind in (KIND_MIG, KIND_CI):
            ci = next((c for c in gi["compute_instances"] if c["id"] == ci_id), None)
            if ci is None:
                raise _Fail("INVALID_ARGUMENT")
        return kind, gpu, gi, ci

    def _mutate(self, fn):
        with st.transaction(self._path) as state:
            try:
                return fn(state)
            except dev.DriverError as exc:
                raise _Fail(exc.code) from None

    def _check_init(self):
        if not self._initialized:
            raise _Fail("UNINITIALIZED")

    # ---- init / system
    def c_nvmlInitWithFlags(self, flags):
        self._state()
        self._initialized += 1

    def c_nvmlInit_v2(self):
        self.c_nvmlInitWithFlags(0)

    def c_nvmlShutdown(self):
        self._check_init()
        self._initialized -= 1

    def c_nvmlErrorString(self, code):
        name = RC_NAME.get(_int(code), "UNKNOWN")
        return ERROR_STRINGS.get(name, name.replace("_", " ").title().encode())

    def c_nvmlSystemGetDriverVersion(self, buf, size):
        _put_str(buf, self._state()["driver_version"], size)

    def c_nvmlSystemGetNVMLVersion(self, buf, size):
        major = self._state().get("cuda_driver_version", 13000) // 1000
        _put_str(buf, f"{major}.{self._state()['driver_version']}", size)

    def c_nvmlSystemGetCudaDriverVersion(self, ref):
        _deref(ref).value = self._state().get("cuda_driver_version", 13000)

    c_nvmlSystemGetCudaDriverVersion_v2 = c_nvmlSystemGetCudaDriverVersion

    def c_nvmlDeviceGetCount_v2(self, ref):
        _deref(ref).value = len(self._state()["gpus"])

    # ---- handles
    def c_nvmlDeviceGetHandleByIndex_v2(self, index, ref):
        state = self._state()
        index = _int(index)
        if index >= len(state["gpus"]) or index < 0:
            raise _Fail("INVALID_ARGUMENT")
        self._gpu(state, index)
        _put_handle(ref, encode_handle(KIND_DEVICE, index))

    def c_nvmlDeviceGetHandleByUUID(self, uuid, ref):
        state = self._state()
        wanted = _text(uuid)
        for gpu in state["gpus"]:
            if gpu["uuid"] == wanted:
                self._gpu(state, gpu["index"])
                _put_handle(ref, encode_handle(KIND_DEVICE, gpu["index"]))
                return
            for gi, ci in dev.mig_devices(gpu):
                if ci["uuid"] == wanted:
                    _put_handle(ref, encode_handle(KIND_MIG, gpu["index"], gi["id"], ci["id"]))
                    return
        raise _Fail("NOT_FOUND")

    def c_nvmlDeviceGetHandleByPciBusId_v2(self, bus_id, ref):
        state = self._state()
        wanted = _text(bus_id).upper()
        for gpu in state["gpus"]:
            if gpu["pci_bus_id"].upper() in (wanted, "0000" + wanted):
                self._gpu(state, gpu["index"])
                _put_handle(ref, encode_handle(KIND_DEVICE, gpu["index"]))
                return
        raise _Fail("NOT_FOUND")

    # ---- identity
    def c_nvmlDeviceGetName(self, handle, buf, size):
        kind, gpu, gi, _ci = self._resolve(self._state(), handle, (KIND_DEVICE, KIND_MIG))
        name = dev.model_of(gpu)["name"]
        if kind == KIND_MIG:
            name += " MIG " + dev.gi_profile(gpu, gi["profile_id"])["name"]
        _put_str(buf, name, size)

    def c_nvmlDeviceGetUUID(self, handle, buf, size):
        kind, gpu, _gi, ci = self._resolve(self._state(), handle, (KIND_DEVICE, KIND_MIG))
        _put_str(buf, ci["uuid"] if kind == KIND_MIG else gpu["uuid"], size)

    def c_nvmlDeviceGetSerial(self, handle, buf, size):
        _kind, gpu, _gi, _ci = self._resolve(self._state(), handle)
        _put_str(buf, gpu["serial"], size)

    def c_nvmlDeviceGetIndex(self, handle, ref):
        _kind, gpu, _gi, _ci = self._resolve(self._state(), handle)
        _deref(ref).value = gpu["index"]

    def c_nvmlDeviceGetMinorNumber(self, handle, ref):
        _kind, gpu, _gi, _ci = self._resolve(self._state(), handle)
        _deref(ref).value = gpu["minor_number"]

    def c_nvmlDeviceGetPciInfo_v3(self, handle, ref):
        _kind, gpu, _gi, _ci = self._resolve(self._state(), handle)
        model = dev.model_of(gpu)
        info = _deref(ref)
        domain, bus, rest = gpu["pci_bus_id"].split(":")
        slot = rest.split(".")[0]
        info.busIdLegacy = gpu["pci_bus_id"][4:].encode()
        info.busId = gpu["pci_bus_id"].encode()
        info.domain = int(domain, 16)
        info.bus = int(bus, 16)
        info.device = int(slot, 16)
        info.pciDeviceId = model["pci_device_id"]
        info.pciSubSystemId = model.get("pci_subsystem_id") or 0

    c_nvmlDeviceGetPciInfo_v2 = c_nvmlDeviceGetPciInfo_v3

    def c_nvmlDeviceGetArchitecture(self, handle, ref):
        _kind, gpu, _gi, _ci = self._resolve(self._state(), handle)
        _deref(ref).value = ARCH.get(dev.model_of(gpu)["architecture"], 0xFFFFFFFF)

    def c_nvmlDeviceGetCudaComputeCapability(self, handle, major_ref, minor_ref):
        _kind, gpu, _gi, _ci = self._resolve(self._state(), handle)
        major, minor = dev.model_of(gpu)["cuda_compute_capability"]
        _deref(major_ref).value = major
        _deref(minor_ref).value = minor

    def _memory(self, handle):
        kind, gpu, gi, ci = self._resolve(self._state(), handle, (KIND_DEVICE, KIND_MIG))
        if kind == KIND_MIG:
            total = dev.gi_profile(gpu, gi["profile_id"])["memory_mib"] * MIB
            procs = [p for p in dev.live_processes(gpu) if p.get("gi_id") == gi["id"]]
        else:
            total = dev.model_of(gpu)["memory_total_mib"] * MIB
            procs = dev.live_processes(gpu)
        used = min(total, sum(p.get("used_memory_mib", 0) for p in procs) * MIB)
        return total, used

    def c_nvmlDeviceGetMemoryInfo(self, handle, ref):
        total, used = self._memory(handle)
        info = _deref(ref)
        info.total, info.used, info.free = total, used, total - used

    def c_nvmlDeviceGetMemoryInfo_v2(self, handle, ref):
        total, used = self._memory(handle)
        info = _deref(ref)
        info.total, info.reserved, info.used, info.free = total, 0, used, total - used

    # ---- modes
    def c_nvmlDeviceGetComputeMode(self, handle, ref):
        _kind, gpu, _gi, _ci = self._resolve(self._state(), handle)
        _deref(ref).value = gpu["compute_mode"]

    def c_nvmlDeviceSetComputeMode(self, handle, mode):
        _kind, gpu, _gi, _ci = self._resolve(self._state(), handle)
        self._mutate(lambda s: dev.set_compute_mode(s, gpu["index"], _int(mode)))

    def c_nvmlDeviceGetPersistenceMode(self, handle, ref):
        _kind, gpu, _gi, _ci = self._resolve(self._state(), handle)
        _deref(ref).value = gpu["persistence_mode"]

    def c_nvmlDeviceSetPersistenceMode(self, handle, mode):
        _kind, gpu, _gi, _ci = self._resolve(self._state(), handle)
        self._mutate(lambda s: dev.set_persistence_mode(s, gpu["index"], _int(mode)))

    def c_nvmlDeviceGetMigMode(self, handle, cur_ref, pend_ref):
        _kind, gpu, _gi, _ci = self._resolve(self._state(), handle)
        if not dev.model_of(gpu).get("mig"):
            raise _Fail("NOT_SUPPORTED")
        _deref(cur_ref).value = gpu["mig_current"]
        _deref(pend_ref).value = gpu["mig_pending"]

    def c_nvmlDeviceSetMigMode(self, handle, mode, status_ref):
        _kind, gpu, _gi, _ci = self._resolve(self._state(), handle)
        if not dev.model_of(gpu).get("mig"):
            raise _Fail("NOT_SUPPORTED")
        status = self._mutate(lambda s: dev.set_mig_mode(s, gpu["index"], _int(mode)))
        _deref(status_ref).value = RC[status]

    def c_nvmlDeviceGetMaxMigDeviceCount(self, handle, ref):
        _kind, gpu, _gi, _ci = self._resolve(self._state(), handle)
        mig = dev.model_of(gpu).get("mig")
        if not mig:
            raise _Fail("NOT_SUPPORTED")
        _deref(ref).value = mig["gpu_slices"]

    # ---- GPU instance profiles
    def _profiles_readable(self, gpu) -> dict:
        try:
            return dev.require_profiles_readable(self._state(), gpu)
        except dev.DriverError as exc:
            raise _Fail(exc.code) from None

    def _gi_prof_by_enum(self, gpu, enum_index):
        mig = self._profiles_readable(gpu)
        if enum_index < 0 or enum_index >= len(NVML_GPU_INSTANCE_PROFILE_NAMES):
            raise _Fail("INVALID_ARGUMENT")
        name = NVML_GPU_INSTANCE_PROFILE_NAMES[enum_index]
        for prof in mig["gpu_instance_profiles"]:
            if prof["nvml_profile"] == name:
                return prof
        raise _Fail("NOT_SUPPORTED")

    def _gi_prof_by_id(self, gpu, profile_id, need_readable=True):
        if not dev.model_of(gpu).get("mig"):
            raise _Fail("NOT_SUPPORTED")
        if need_readable:
            self._profiles_readable(gpu)
        try:
            return dev.gi_profile(gpu, _int(profile_id))
        except dev.DriverError:
            raise _Fail("INVALID_ARGUMENT") from None

    @staticmethod
    def _fill_gi_profile(info, prof):
        info.id = prof["id"]
        info.isP2pSupported = 1 if prof.get("p2p") else 0
        info.sliceCount = prof["slices"]
        info.instanceCount = prof["instance_count"]
        info.multiprocessorCount = prof.get("multiprocessor_count") or 0
        info.copyEngineCount = prof.get("copy_engines") or 0
        info.decoderCount = prof.get("decoders") or 0
        info.encoderCount = prof.get("encoders") or 0
        info.jpegCount = prof.get("jpegs") or 0
        info.ofaCount = prof.get("ofas") or 0
        info.memorySizeMB = prof["memory_mib"]
        if hasattr(info, "name"):
            info.name = ("MIG " + prof["name"]).encode()

    def c_nvmlDeviceGetGpuInstanceProfileInfo(self, handle, profile, ref):
        _kind, gpu, _gi, _ci = self._resolve(self._state(), handle)
        self._fill_gi_profile(_deref(ref), self._gi_prof_by_enum(gpu, _int(profile)))

    c_nvmlDeviceGetGpuInstanceProfileInfoV = c_nvmlDeviceGetGpuInstanceProfileInfo

    def c_nvmlDeviceGetGpuInstanceProfileInfoByIdV(self, handle, profile_id, ref):
        _kind, gpu, _gi, _ci = self._resolve(self._state(), handle)
        self._fill_gi_profile(_deref(ref), self._gi_prof_by_id(gpu, profile_id))

    def c_nvmlDeviceGetGpuInstancePossiblePlacements_v2(self, handle, profile_id, placements, count_ref):
        _kind, gpu, _gi, _ci = self._resolve(self._state(), handle)
        prof = self._gi_prof_by_id(gpu, profile_id)
        _fill_array(placements, count_ref, prof["placements"], _fill_placement)

    def c_nvmlDeviceGetGpuInstanceRemainingCapacity(self, handle, profile_id, ref):
        _kind, gpu, _gi, _ci = self._resolve(self._state(), handle)
        prof = self._gi_prof_by_id(gpu, profile_id, need_readable=False)
        if not gpu["mig_current"]:
            raise _Fail("NOT_SUPPORTED")
        _deref(ref).value = dev.gi_remaining_capacity(gpu, prof)

    # ---- GPU instances
    def _create_gi(self, handle, profile_id, placement, ref):
        _kind, gpu, _gi, _ci = self._resolve(self._state(), handle)
        self._gi_prof_by_id(gpu, profile_id, need_readable=False)
        index = gpu["index"]
        gi = self._mutate(lambda s: dev.create_gi(s, index, _int(profile_id), placement))
        _put_handle(ref, encode_handle(KIND_GI, index, gi["id"]))

    def c_nvmlDeviceCreateGpuInstance(self, handle, profile_id, ref):
        self._create_gi(handle, profile_id, None, ref)

    def c_nvmlDeviceCreateGpuInstanceWithPlacement(self, handle, profile_id, placement, ref):
        placement = _deref(placement)
        self._create_gi(handle, profile_id, (placement.start, placement.size), ref)

    def c_nvmlGpuInstanceDestroy(self, gi_handle):
        _kind, gpu, gi, _ci = self._resolve(self._state(), gi_handle, (KIND_GI,))
        self._mutate(lambda s: dev.destroy_gi(s, gpu["index"], gi["id"]))

    def c_nvmlDeviceGetGpuInstances(self, handle, profile_id, array, count_ref):
        _kind, gpu, _gi, _ci = self._resolve(self._state(), handle)
        prof = self._gi_prof_by_id(gpu, profile_id, need_readable=False)
        if not gpu["mig_current"]:
            raise _Fail("NOT_SUPPORTED")
        found = [gi for gi in gpu["gpu_instances"] if gi["profile_id"] == prof["id"]]
        values = [encode_handle(KIND_GI, gpu["index"], gi["id"]) for gi in found]
        _fill_array(array, count_ref, values, _fill_handle)

    def c_nvmlDeviceGetGpuInstanceById(self, handle, gi_id, ref):
        _kind, gpu, _gi, _ci = self._resolve(self._state(), handle)
        if not gpu["mig_current"]:
            raise _Fail("NOT_SUPPORTED")
        if not any(gi["id"] == _int(gi_id) for gi in gpu["gpu_instances"]):
            raise _Fail("NOT_FOUND")
        _put_handle(ref, encode_handle(KIND_GI, gpu["index"], _int(gi_id)))

    def c_nvmlGpuInstanceGetInfo(self, gi_handle, ref):
        _kind, gpu, gi, _ci = self._resolve(self._state(), gi_handle, (KIND_GI,))
        info = _deref(ref)
        _put_handle(ctypes.byref(info, type(info).device.offset), encode_handle(KIND_DEVICE, gpu["index"]))
        info.id = gi["id"]
        info.profileId = gi["profile_id"]
        info.placement.start = gi["start"]
        info.placement.size = gi["size"]

    # ---- compute instance profiles and instances
    def _ci_prof_by_enum(self, gpu, gi, enum_index):
        if enum_index < 0 or enum_index >= len(NVML_COMPUTE_INSTANCE_PROFILE_NAMES):
            raise _Fail("INVALID_ARGUMENT")
        name = NVML_COMPUTE_INSTANCE_PROFILE_NAMES[enum_index]
        for prof in dev.gi_profile(gpu, gi["profile_id"])["compute_instance_profiles"]:
            if prof["nvml_profile"] == name:
                return prof
        raise _Fail("NOT_SUPPORTED")

    def c_nvmlGpuInstanceGetComputeInstanceProfileInfo(self, gi_handle, profile, eng_profile, ref):
        _kind, gpu, gi, _ci = self._resolve(self._state(), gi_handle, (KIND_GI,))
        if _int(eng_profile) != 0:
            raise _Fail("INVALID_ARGUMENT")
        prof = self._ci_prof_by_enum(gpu, gi, _int(profile))
        info = _deref(ref)
        info.id = prof["id"]
        info.sliceCount = prof["slices"]
        info.instanceCount = prof["instance_count"]
        info.multiprocessorCount = prof.get("multiprocessor_count") or 0
        gi_prof = dev.gi_profile(gpu, gi["profile_id"])
        info.sharedCopyEngineCount = gi_prof.get("copy_engines") or 0
        info.sharedDecoderCount = gi_prof.get("decoders") or 0
        info.sharedEncoderCount = gi_prof.get("encoders") or 0
        info.sharedJpegCount = gi_prof.get("jpegs") or 0
        info.sharedOfaCount = gi_prof.get("ofas") or 0
        if hasattr(info, "name"):
            info.name = ("MIG " + prof["name"]).encode()

    c_nvmlGpuInstanceGetComputeInstanceProfileInfoV = c_nvmlGpuInstanceGetComputeInstanceProfileInfo

    def _ci_prof_by_id(self, gpu, gi, profile_id):
        try:
            return dev.ci_profile(dev.gi_profile(gpu, gi["profile_id"]), _int(profile_id))
        except dev.DriverError as exc:
            raise _Fail(exc.code) from None

    def c_nvmlGpuInstanceGetComputeInstanceRemainingCapacity(self, gi_handle, profile_id, ref):
        _kind, gpu, gi, _ci = self._resolve(self._state(), gi_handle, (KIND_GI,))
        prof = self._ci_prof_by_id(gpu, gi, profile_id)
        free = dev.ci_free_placements(gi, prof)
        used = sum(1 for c in gi["compute_instances"] if c["profile_id"] == prof["id"])
        count, taken = 0, []
        for start, size in free:
            if used + count >= prof["instance_count"]:
                break
            if not any(start < s + z and s < start + size for s, z in taken):
                taken.append((start, size))
                count += 1
        _deref(ref).value = count

    def c_nvmlGpuInstanceGetComputeInstancePossiblePlacements(self, gi_handle, profile_id, placements, count_ref):
        _kind, gpu, gi, _ci = self._resolve(self._state(), gi_handle, (KIND_GI,))
        prof = self._ci_prof_by_id(gpu, gi, profile_id)
        _fill_array(placements, count_ref, prof["placements"], _fill_placement)

    def _create_ci(self, gi_handle, profile_id, placement, ref):
        _kind, gpu, gi, _ci = self._resolve(self._state(), gi_handle, (KIND_GI,))
        self._ci_prof_by_id(gpu, gi, profile_id)
        index, gi_id = gpu["index"], gi["id"]
        ci = self._mutate(lambda s: dev.create_ci(s, index, gi_id, _int(profile_id), placement))
        _put_handle(ref, encode_handle(KIND_CI, index, gi_id, ci["id"]))

    def c_nvmlGpuInstanceCreateComputeInstance(self, gi_handle, profile_id, ref):
        self._create_ci(gi_handle, profile_id, None, ref)

    def c_nvmlGpuInstanceCreateComputeInstanceWithPlacement(self, gi_handle, profile_id, placement, ref):
        placement = _deref(placement)
        self._create_ci(gi_handle, profile_id, (placement.start, placement.size), ref)

    def c_nvmlComputeInstanceDestroy(self, ci_handle):
        _kind, gpu, gi, ci = self._resolve(self._state(), ci_handle, (KIND_CI,))
        self._mutate(lambda s: dev.destroy_ci(s, gpu["index"], gi["id"], ci["id"]))

    def c_nvmlGpuInstanceGetComputeInstances(self, gi_handle, profile_id, array, count_ref):
        _kind, gpu, gi, _ci = self._resolve(self._state(), gi_handle, (KIND_GI,))
        prof = self._ci_prof_by_id(gpu, gi, profile_id)
        values = [encode_handle(KIND_CI, gpu["index"], gi["id"], ci["id"])
                  for ci in gi["compute_instances"] if ci["profile_id"] == prof["id"]]
        _fill_array(array, count_ref, values, _fill_handle)

    def c_nvmlGpuInstanceGetComputeInstanceById(self, gi_handle, ci_id, ref):
        _kind, gpu, gi, _ci = self._resolve(self._state(), gi_handle, (KIND_GI,))
        if not any(ci["id"] == _int(ci_id) for ci in gi["compute_instances"]):
            raise _Fail("NOT_FOUND")
        _put_handle(ref, encode_handle(KIND_CI, gpu["index"], gi["id"], _int(ci_id)))

    def c_nvmlComputeInstanceGetInfo_v2(self, ci_handle, ref):
        _kind, gpu, gi, ci = self._resolve(self._state(), ci_handle, (KIND_CI,))
        info = _deref(ref)
        _put_handle(ctypes.byref(info, type(info).device.offset), encode_handle(KIND_DEVICE, gpu["index"]))
        _put_handle(ctypes.byref(info, type(info).gpuInstance.offset), encode_handle(KIND_GI, gpu["index"], gi["id"]))
        info.id = ci["id"]
        info.profileId = ci["profile_id"]
        info.placement.start = ci["start"]
        info.placement.size = ci["size"]

    # ---- MIG devices
    def c_nvmlDeviceIsMigDeviceHandle(self, handle, ref):
        kind, _gpu, _gi, _ci = self._resolve(self._state(), handle, (KIND_DEVICE, KIND_MIG))
        _deref(ref).value = 1 if kind == KIND_MIG else 0

    def c_nvmlDeviceGetGpuInstanceId(self, handle, ref):
        _kind, _gpu, gi, _ci = self._resolve(self._state(), handle, (KIND_MIG,))
        _deref(ref).value = gi["id"]

    def c_nvmlDeviceGetComputeInstanceId(self, handle, ref):
        _kind, _gpu, _gi, ci = self._resolve(self._state(), handle, (KIND_MIG,))
        _deref(ref).value = ci["id"]

    def c_nvmlDeviceGetMigDeviceHandleByIndex(self, handle, index, ref):
        _kind, gpu, _gi, _ci = self._resolve(self._state(), handle)
        if not dev.model_of(gpu).get("mig"):
            raise _Fail("NOT_SUPPORTED")
        devices = dev.mig_devices(gpu)
        index = _int(index)
        if index < 0 or index >= len(devices):
            raise _Fail("NOT_FOUND")
        gi, ci = devices[index]
        _put_handle(ref, encode_handle(KIND_MIG, gpu["index"], gi["id"], ci["id"]))

    def c_nvmlDeviceGetDeviceHandleFromMigDeviceHandle(self, handle, ref):
        _kind, gpu, _gi, _ci = self._resolve(self._state(), handle, (KIND_MIG,))
        _put_handle(ref, encode_handle(KIND_DEVICE, gpu["index"]))

    # ---- processes
    def _processes(self, handle):
        kind, gpu, gi, ci = self._resolve(self._state(), handle, (KIND_DEVICE, KIND_MIG))
        procs = dev.live_processes(gpu)
        if kind == KIND_MIG:
            procs = [p for p in procs if p.get("gi_id") == gi["id"] and p.get("ci_id") == ci["id"]]
        return procs

    def c_nvmlDeviceGetComputeRunningProcesses_v3(self, handle, count_ref, array):
        procs = self._processes(handle)
        count = _deref(count_ref)
        if array is None:
            count.value = len(procs)
            if procs:
                raise _Fail("INSUFFICIENT_SIZE")
            return
        if count.value < len(procs):
            count.value = len(procs)
            raise _Fail("INSUFFICIENT_SIZE")
        for i, proc in enumerate(procs):
            array[i].pid = proc["pid"]
            array[i].usedGpuMemory = proc.get("used_memory_mib", 0) * MIB
            array[i].gpuInstanceId = NO_ID if proc.get("gi_id") is None else proc["gi_id"]
            array[i].computeInstanceId = NO_ID if proc.get("ci_id") is None else proc["ci_id"]
        count.value = len(procs)

    c_nvmlDeviceGetComputeRunningProcesses_v2 = c_nvmlDeviceGetComputeRunningProcesses_v3

    def c_nvmlDeviceGetGraphicsRunningProcesses_v3(self, handle, count_ref, array):
        self._resolve(self._state(), handle, (KIND_DEVICE, KIND_MIG))
        _deref(count_ref).value = 0

    c_nvmlDeviceGetGraphicsRunningProcesses_v2 = c_nvmlDeviceGetGraphicsRunningProcesses_v3

    # ======================================================================= vGPU guest licensing
    # (begin block: gpusim/license.py holds the state and the behaviour; nvml.h documents the calls)
    # nvmlDeviceGetVirtualizationMode: NVML_GPU_VIRTUALIZATION_MODE_NONE=0 (bare metal),
    # PASSTHROUGH=1, VGPU=2 ("vGPU inside virtual machine").
    def c_nvmlDeviceGetVirtualizationMode(self, handle, ref):
        state = self._state()
        self._resolve(state, handle)
        if state.get("vgpu_guest"):
            mode = 2
        elif state.get("passthrough_vm"):
            mode = 1
        else:
            mode = 0
        _deref(ref).value = mode

    # nvmlDeviceGetGridLicensableFeatures_v4: isGridLicenseSupported, licensableFeaturesCount and per
    # feature featureCode, featureState ("non-zero if feature is currently licensed"), productName,
    # featureEnabled, licenseExpiry (status NVML_GRID_LICENSE_EXPIRY_VALID=2 with a date,
    # NOT_AVAILABLE=0 without).  A host without the vGPU guest driver reports no licensing support.
    def c_nvmlDeviceGetGridLicensableFeatures_v4(self, handle, ref):
        from . import license as lic
        state = self._state()
        self._resolve(state, handle)
        info = _deref(ref)
        guest = state.get("vgpu_guest")
        if not guest:
            info.isGridLicenseSupported = 0
            info.licensableFeaturesCount = 0
            return
        current = lic.license_of(state)
        info.isGridLicenseSupported = 1
        info.licensableFeaturesCount = 1
        feature = info.gridLicensableFeatures[0]
        feature.featureCode = guest["feature_code"]
        feature.featureState = 1 if current.get("licensed") else 0
        feature.productName = guest["product"].encode()
        feature.featureEnabled = 1
        fields = lic.expiry_fields(current.get("expiry")) if current.get("licensed") else None
        expiry = feature.licenseExpiry
        if fields:
            expiry.year, expiry.month, expiry.day, expiry.hour, expiry.min, expiry.sec = fields
            expiry.status = 2
        else:
            expiry.status = 0
    # (end block: vGPU guest licensing)


def _fill_placement(slot, value):
    slot.start, slot.size = value[0], value[1]


def _fill_handle(slot, value):
    ctypes.c_void_p.from_buffer(slot).value = value


def _fill_array(array, count_ref, values, fill):
    """NVML's two-call convention: NULL array -> count only; short array -> INSUFFICIENT_SIZE."""
    count = _deref(count_ref)
    if array is None:
        count.value = len(values)
        return
    capacity = len(array) if hasattr(array, "__len__") else count.value
    if capacity < len(values):
        count.value = len(values)
        raise _Fail("INSUFFICIENT_SIZE")
    for i, value in enumerate(values):
        fill(array[i], value)
    count.value = len(values)


class _Symbol:
    """One exported C function: runs fault injection, then the implementation."""

    def __init__(self, lib: FakeLibrary, name: str, impl):
        self.lib = lib
        self.name = name
        self.impl = impl
        self.restype = None
        self.argtypes = None

    def __call__(self, *args):
        if self.name == "nvmlErrorString":
            return self.impl(self.lib, *args)
        try:
            if self.name not in ("nvmlInitWithFlags", "nvmlInit_v2", "nvmlErrorString"):
                self.lib._check_init()
            _maybe_fault(self.lib, self.name, args)
            self.impl(self.lib, *args)
        except _Fail as exc:
            return RC[exc.code]
        return RC["SUCCESS"]


def _handle_gpu(args) -> int | None:
    for arg in args[:1]:
        try:
            return decode_handle(arg)[1]
        except (_Fail, TypeError, ctypes.ArgumentError):
            return None
    return None


def _maybe_fault(lib: FakeLibrary, name: str, args) -> None:
    state = lib._state()
    faults = state.get("faults") or []
    gpu_index = None
    matching = []
    for i, fault in enumerate(faults):
        if not fnmatch.fnmatchcase(name, fault.get("call", "*")):
            continue
        if fault.get("gpu") is not None:
            if gpu_index is None:
                gpu_index = _handle_gpu(args)
            if gpu_index != fault["gpu"]:
                continue
        matching.append(i)
    if not matching:
        return
    fire = None
    with st.transaction(lib._path) as fresh:
        for i in matching:
            fault = fresh["faults"][i]
            fault["seen"] = fault.get("seen", 0) + 1
            nth, times = fault.get("nth", 1), fault.get("times", 1)
            if fire is None and nth <= fault["seen"] < nth + times:
                fault["fired"] = fault.get("fired", 0) + 1
                fire = fault["error"]
    if fire:
        raise _Fail(fire)
