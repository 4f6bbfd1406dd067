"""The whole catalogue, read back through the real nvidia-ml-py API as a caller sees it."""

from __future__ import annotations

import ctypes

import pynvml
import pytest

from gpusim import catalogue

MIB = 1024 * 1024
ARCH = {"ampere": pynvml.NVML_DEVICE_ARCH_AMPERE, "hopper": pynvml.NVML_DEVICE_ARCH_HOPPER,
        "blackwell": pynvml.NVML_DEVICE_ARCH_BLACKWELL, "ada": pynvml.NVML_DEVICE_ARCH_ADA,
        "turing": pynvml.NVML_DEVICE_ARCH_TURING, "volta": pynvml.NVML_DEVICE_ARCH_VOLTA}
MIG_MODELS = [k for k in catalogue.model_keys() if catalogue.MODELS[k].get("mig")]
PLAIN_MODELS = [k for k in catalogue.model_keys() if not catalogue.MODELS[k].get("mig")]


def placements(fn, handle, profile_id, struct):
    count = ctypes.c_uint(0)
    fn(handle, profile_id, None, ctypes.byref(count))
    array = (struct * count.value)()
    fn(handle, profile_id, array, ctypes.byref(count))
    return [(array[i].start, array[i].size) for i in range(count.value)]


def test_required_models_present():
    for key in ("A30-24GB", "A100-SXM4-40GB", "A100-SXM4-80GB", "H100-SXM5-80GB", "H100-NVL-94GB",
                "H200-141GB", "GH200-96GB", "B200-180GB", "T4", "V100", "A10", "L40S"):
        assert key in catalogue.MODELS, key


@pytest.mark.parametrize("key", catalogue.model_keys())
def test_identity(host, nvml, key):
    model = catalogue.MODELS[key]
    host.init(key, 2)
    with nvml as n:
        assert n.nvmlDeviceGetCount() == 2
        h = n.nvmlDeviceGetHandleByIndex(1)
        assert n.nvmlDeviceGetName(h) == model["name"]
        assert n.nvmlDeviceGetPciInfo(h).pciDeviceId == model["pci_device_id"]
        assert n.nvmlDeviceGetMemoryInfo(h).total == model["memory_total_mib"] * MIB
        assert n.nvmlDeviceGetArchitecture(h) == ARCH[model["architecture"]]
        assert n.nvmlDeviceGetCudaComputeCapability(h) == tuple(model["cuda_compute_capability"])
        uuid = n.nvmlDeviceGetUUID(h)
        assert uuid.startswith("GPU-") and n.nvmlDeviceGetIndex(n.nvmlDeviceGetHandleByUUID(uuid)) == 1


@pytest.mark.parametrize("key", PLAIN_MODELS)
def test_non_mig_models_refuse_mig(host, nvml, key):
    host.init(key)
    with nvml as n:
        h = n.nvmlDeviceGetHandleByIndex(0)
        with pytest.raises(n.NVMLError_NotSupported):
            n.nvmlDeviceGetMigMode(h)
        with pytest.raises(n.NVMLError_NotSupported):
            n.nvmlDeviceSetMigMode(h, n.NVML_DEVICE_MIG_ENABLE)
        with pytest.raises(n.NVMLError_NotSupported):
            n.nvmlDeviceGetGpuInstanceProfileInfo(h, n.NVML_GPU_INSTANCE_PROFILE_1_SLICE)


@pytest.mark.parametrize("key", MIG_MODELS)
def test_mig_profiles_and_placements(host, nvml, key):
    """Every GI profile (by NVML enum), every placement, every CI profile inside it."""
    mig = catalogue.MODELS[key]["mig"]
    host.init(key, 1, "--mig-enabled")
    by_enum = {p["nvml_profile"]: p for p in mig["gpu_instance_profiles"]}
    seen = 0
    with nvml as n:
        h = n.nvmlDeviceGetHandleByIndex(0)
        assert n.nvmlDeviceGetMigMode(h) == [1, 1]
        for enum in range(n.NVML_GPU_INSTANCE_PROFILE_COUNT):
            enum_name = next(name for name in dir(n) if name.startswith("NVML_GPU_INSTANCE_PROFILE_")
                             and name != "NVML_GPU_INSTANCE_PROFILE_COUNT" and getattr(n, name) == enum)
            want = by_enum.get(enum_name)
            if want is None:
                with pytest.raises(n.NVMLError_NotSupported):
                    n.nvmlDeviceGetGpuInstanceProfileInfo(h, enum)
                continue
            seen += 1
            info = n.nvmlDeviceGetGpuInstanceProfileInfo(h, enum)
            assert (info.id, info.sliceCount, info.instanceCount, info.memorySizeMB) == \
                (want["id"], want["slices"], want["instance_count"], want["memory_mib"])
            name = info.name.decode() if isinstance(info.name, bytes) else info.name
            assert name == "MIG " + want["name"]
            got = placements(n.nvmlDeviceGetGpuInstancePossiblePlacements, h, info.id,
                             n.c_nvmlGpuInstancePlacement_t)
            assert got == [tuple(p) for p in want["placements"]]
            assert n.nvmlDeviceGetGpuInstanceRemainingCapacity(h, info.id) == want["instance_count"]
            for start, size in got:
                pl = n.c_nvmlGpuInstancePlacement_t()
                pl.start, pl.size = start, size
                gi = n.nvmlDeviceCreateGpuInstanceWithPlacement(h, info.id, pl)
                gi_info = n.nvmlGpuInstanceGetInfo(gi)
                assert (gi_info.profileId, gi_info.placement.start, gi_info.placement.size) == (info.id, start, size)
                check_compute_profiles(n, gi, want)
                n.nvmlGpuInstanceDestroy(gi)
    assert seen == len(mig["gpu_instance_profiles"])


def check_compute_profiles(n, gi, gi_profile):
    by_enum = {p["nvml_profile"]: p for p in gi_profile["compute_instance_profiles"]}
    for enum in range(n.NVML_COMPUTE_INSTANCE_PROFILE_COUNT):
        enum_name = next(name for name in dir(n) if name.startswith("NVML_COMPUTE_INSTANCE_PROFILE_")
                         and name != "NVML_COMPUTE_INSTANCE_PROFILE_COUNT" and getattr(n, name) == enum)
        want = by_enum.get(enum_name)
        if want is None:
            with pytest.raises(n.NVMLError_NotSupported):
                n.nvmlGpuInstanceGetComputeInstanceProfileInfo(gi, enum, n.NVML_COMPUTE_INSTANCE_ENGINE_PROFILE_SHARED)
            continue
        info = n.nvmlGpuInstanceGetComputeInstanceProfileInfo(gi, enum, n.NVML_COMPUTE_INSTANCE_ENGINE_PROFILE_SHARED)
        assert (info.id, info.sliceCount, info.instanceCount) == (want["id"], want["slices"], want["instance_count"])
        got = placements(n.nvmlGpuInstanceGetComputeInstancePossiblePlacements, gi, info.id,
                         n.c_nvmlComputeInstancePlacement_t)
        assert got == [tuple(p) for p in want["placements"]]
        ci = n.nvmlGpuInstanceCreateComputeInstance(gi, info.id)
        assert n.nvmlComputeInstanceGetInfo(ci).profileId == info.id
        n.nvmlComputeInstanceDestroy(ci)


@pytest.mark.parametrize("key", MIG_MODELS)
def test_catalogue_is_self_consistent(key):
    mig = catalogue.MODELS[key]["mig"]
    ids = [p["id"] for p in mig["gpu_instance_profiles"]]
    assert len(ids) == len(set(ids)), "profile ids must be unique"
    for prof in mig["gpu_instance_profiles"]:
        assert prof["slices"] <= mig["gpu_slices"]
        assert prof["placements"], prof["name"]
        for start, size in prof["placements"]:
            assert start >= 0 and start + size <= mig["memory_slices"], (prof["name"], start, size)
        assert any(c["slices"] == prof["slices"] for c in prof["compute_instance_profiles"]), \
            f"{prof['name']} needs a compute instance profile spanning the whole GPU instance"


def test_find_model_accepts_product_names():
    assert catalogue.find_model("NVIDIA H100 80GB HBM3")["key"] == "H100-SXM5-80GB"
    assert catalogue.find_model("a100-sxm4-40gb")["key"] == "A100-SXM4-40GB"
    with pytest.raises(KeyError) as err:
        catalogue.find_model("GTX 480")
    assert "A100-SXM4-40GB" in str(err.value)
