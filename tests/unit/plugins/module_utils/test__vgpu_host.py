"""The vgpu_devices host reads: a static sysfs tree in the shape of the real samples (see _vgpu_host's docstring).

The live, writable tree (gpusim's FUSE sysfs under a mount namespace) is the integration target's; here the
readers are pointed at plain files to pin down parsing and layout detection.
"""

from __future__ import annotations

import os
import re

import pytest

from ansible_collections.gpuops.sharing.plugins.module_utils import _vgpu, _vgpu_host

U1 = "4b20d080-1b54-4048-85b3-a6a62d165c01"


def put(path, text=""):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as fh:
        fh.write(text)


def link(path, target):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    os.symlink(target, path)


def pci(root, bdf, device="0x20b0", sriov=None):
    d = root / "devices" / bdf
    for name, value in (("vendor", "0x10de"), ("device", device), ("subsystem_vendor", "0x10de"),
                        ("subsystem_device", "0x134f"), ("class", "0x030200")):
        put(str(d / name), value + "\n")
    if sriov:
        total, num, offset = sriov
        for name, value in (("sriov_totalvfs", total), ("sriov_numvfs", num), ("sriov_offset", offset),
                            ("sriov_stride", 1)):
            put(str(d / name), f"{value}\n")
    link(str(root / "bus/pci/devices" / bdf), f"../../../devices/{bdf}")
    return d


def mdev_type(root, parent, tid, name, available, max_instance):
    t = root / "devices" / parent / "mdev_supported_types" / f"nvidia-{tid}"
    put(str(t / "name"), name + "\n")
    put(str(t / "available_instances"), f"{available}\n")
    text = f"num_heads=1, frl_config=60, framebuffer=4096M, max_resolution=4096x2400, max_instance={max_instance}\n"
    put(str(t / "description"), text)


@pytest.fixture
def sysroot(tmp_path, monkeypatch):
    monkeypatch.setattr(_vgpu_host, "SYS", str(tmp_path))
    (tmp_path / "class/mdev_bus").mkdir(parents=True)
    (tmp_path / "kernel/iommu_groups/1").mkdir(parents=True)
    return tmp_path


def host():
    return _vgpu_host.HostVgpu(lambda argv, **kw: (0, "", ""), [])


def test_vf_addresses_follow_offset_and_stride(sysroot):
    pci(sysroot, "0001:04:00.0", sriov=(16, 0, 2))
    # the RTX PRO 6000 sample (bigstack-oss/cubecos#312): virtfn0 -> 04:00.2, virtfn10 -> 04:01.4
    vfs = _vgpu_host.vf_addresses("0001:04:00.0", 11)
    assert vfs[0] == "0001:04:00.2" and vfs[10] == "0001:04:01.4"


def test_sriov_mdev_layout_types_and_vgpus(sysroot):
    pci(sysroot, "0000:41:00.0", sriov=(10, 2, 4))
    for vf in ("0000:41:00.4", "0000:41:00.5"):
        d = pci(sysroot, vf)
        link(str(d / "physfn"), "../0000:41:00.0")
        link(str(sysroot / "class/mdev_bus" / vf), f"../../devices/{vf}")
        mdev_type(sysroot, vf, 692, "GRID A100X-4C", 0 if vf.endswith(".4") else 1, 10)
    v = sysroot / "devices/0000:41:00.4" / U1
    link(str(v / "mdev_type"), "../mdev_supported_types/nvidia-692")
    state = host().observe()
    gpu = state["gpus"][0]
    assert (gpu["layout"], gpu["vfs"], gpu["bdf"]) == ("sriov-mdev", ["0000:41:00.4", "0000:41:00.5"], "0000:41:00.0")
    assert [t["name"] for t in gpu["types"]] == ["A100X-4C"] and gpu["types"][0]["max_instances"] == 10
    assert gpu["available"] == {"A100X-4C": 1}
    assert gpu["vgpus"] == [{"uuid": U1, "type_name": "A100X-4C", "type_id": 692, "mdev_type": "nvidia-692",
                             "parent": "0000:41:00.4", "busy": ""}]
    assert state["iommu"] is True


def test_sriov_type_names_are_read_once_per_gpu_and_availability_per_vf(sysroot, monkeypatch):
    # each sysfs read of a vGPU type is a call into NVIDIA's driver: a type's name and description are the same on
    # every VF of the GPU, its available_instances is not
    pci(sysroot, "0000:41:00.0", sriov=(10, 4, 4))
    vfs = [f"0000:41:00.{f}" for f in range(4, 8)]
    for n, vf in enumerate(vfs):
        d = pci(sysroot, vf)
        link(str(d / "physfn"), "../0000:41:00.0")
        link(str(sysroot / "class/mdev_bus" / vf), f"../../devices/{vf}")
        mdev_type(sysroot, vf, 692, "GRID A100X-4C", n % 2, 10)
        mdev_type(sysroot, vf, 693, "GRID A100X-5C", 1, 8)
    reads = []
    real = _vgpu_host.read
    monkeypatch.setattr(_vgpu_host, "read", lambda path: reads.append(os.path.basename(path)) or real(path))
    gpu = host().observe()["gpus"][0]
    assert {t["name"]: t["max_instances"] for t in gpu["types"]} == {"A100X-4C": 10, "A100X-5C": 8}
    assert gpu["available"] == {"A100X-4C": 2, "A100X-5C": 4}
    assert (reads.count("name"), reads.count("description"), reads.count("available_instances")) == (2, 2, 8)


def test_vfs_off_take_the_table(sysroot):
    pci(sysroot, "0000:41:00.0", sriov=(10, 0, 4))
    gpu = host().observe()["gpus"][0]
    assert gpu["layout"] == "sriov-mdev" and not gpu["vfs_enabled"] and len(gpu["vfs"]) == 10
    assert "A100X-1-5C" in {t["name"] for t in gpu["types"]}


def test_vendor_vfio_layout(sysroot):
    pci(sysroot, "0000:07:00.0", device="0x26b9", sriov=(32, 2, 2))
    for vf, current, listed in (("0000:07:00.2", "1155", ""), ("0000:07:00.3", "0", "1155  : NVIDIA L40S-24Q\n")):
        d = pci(sysroot, vf, device="0x26b9")
        link(str(d / "physfn"), "../0000:07:00.0")
        put(str(d / "nvidia/creatable_vgpu_types"), "ID    : vGPU Name\n" + listed)
        put(str(d / "nvidia/current_vgpu_type"), current + "\n")
    gpu = host().observe()["gpus"][0]
    assert gpu["layout"] == "vfio" and gpu["available"] == {"L40S-24Q": 1}
    assert gpu["vgpus"] == [{"uuid": "0000:07:00.2", "type_name": "L40S-24Q", "type_id": 1155,
                             "parent": "0000:07:00.2", "busy": ""}]
    assert {t["name"] for t in gpu["types"]} >= {"L40S-1Q", "L40S-48Q"}     # NVIDIA's table for the rest


def test_creatable_rejects_garbage(sysroot):
    d = pci(sysroot, "0000:07:00.2", device="0x26b9")
    put(str(d / "nvidia/creatable_vgpu_types"), "ID    : vGPU Name\nnot a type line\n")
    with pytest.raises(_vgpu_host.HostError, match="is not 'ID : vGPU Name'"):
        _vgpu_host.creatable("0000:07:00.2")


def test_gpu_without_vgpu_manager_is_refused_when_selected(sysroot):
    pci(sysroot, "0000:07:00.0", device="0x1eb8")
    h = _vgpu_host.HostVgpu(lambda argv, **kw: (0, "", ""),
                            _vgpu.parse_entries([{"devices": "all", "vgpu-devices": {"T4-4Q": 1}}]))
    with pytest.raises(_vgpu.PlanError, match=r"offers no vGPU types: is the NVIDIA vGPU manager \(nvidia-vgpu-mgr\)"):
        h.plan(h.observe())


def _preflight_host(**preflight):
    return _vgpu_host.HostVgpu(lambda argv, **kw: (0, "", ""),
                               _vgpu.parse_entries([{"devices": "all", "vgpu-devices": {"T4-4Q": 1}}]),
                               preflight=_vgpu_host.validate_preflight(preflight))


def test_preflight_refuses_before_the_plan_with_every_problem_and_its_remedy(sysroot, tmp_path):
    pci(sysroot, "0000:07:00.0", device="0x1eb8")     # a T4 whose driver offers no types: the plan would refuse it
    os.rmdir(sysroot / "kernel/iommu_groups/1")
    h = _preflight_host(manager_paths=[str(tmp_path / "nvidia-vgpu-mgr")], kernel_modules=["nvidia", "nvidia-vgpu-vfio"])
    with pytest.raises(_vgpu.PlanError) as info:
        h.plan(h.observe())
    assert str(info.value) == (
        f"this host is not ready for vGPUs: NVIDIA vGPU manager not found ({tmp_path}/nvidia-vgpu-mgr): install the "
        f"vGPU manager package of your NVIDIA vGPU release; the IOMMU is off (/sys/kernel/iommu_groups is empty): "
        f"enable VT-d/AMD-Vi in the firmware and boot with intel_iommu=on or amd_iommu=on; kernel modules not "
        f"loaded: nvidia, nvidia-vgpu-vfio (modprobe them, or check the vGPU manager installation)")


def test_preflight_passes_on_a_ready_host_and_takes_dashes_for_underscores(sysroot, tmp_path):
    pci(sysroot, "0000:07:00.0", device="0x1eb8")
    (tmp_path / "nvidia-vgpu-mgr").write_text("")
    for name in ("nvidia", "nvidia_vgpu_vfio"):
        (sysroot / "module" / name).mkdir(parents=True)
    h = _preflight_host(manager_paths=["/nonexistent/a", str(tmp_path / "nvidia-vgpu-mgr")],
                        kernel_modules=["nvidia", "nvidia-vgpu-vfio"])
    # past the preflight, the plan's own refusal of a GPU without types
    with pytest.raises(_vgpu.PlanError, match="offers no vGPU types"):
        h.plan(h.observe())
    skipped = _preflight_host(manager_paths=[], kernel_modules=[], iommu=False)
    os.rmdir(sysroot / "kernel/iommu_groups/1")
    with pytest.raises(_vgpu.PlanError, match="offers no vGPU types"):
        skipped.plan(skipped.observe())


@pytest.mark.parametrize(("preflight", "message"), [
    ({"manager_paths": ["usr/bin/nvidia-vgpu-mgr"]}, "preflight.manager_paths: 'usr/bin/nvidia-vgpu-mgr' is not an absolute path"),
    ({"manager_paths": ["/usr/bin/x\0y"]}, "is not an absolute path"),
    ({"kernel_modules": ["../../etc"]}, "preflight.kernel_modules: '../../etc' is not a kernel module name"),
    ({"kernel_modules": ["nvidia"] * 33}, "preflight.kernel_modules: at most 32 entries, got 33"),
])
def test_preflight_option_errors(preflight, message):
    with pytest.raises(_vgpu.ConfigError, match=re.escape(message)):
        _vgpu_host.validate_preflight(preflight)


def test_preflight_defaults_fill_what_is_left_out():
    assert _vgpu_host.validate_preflight({"manager_paths": None, "kernel_modules": None, "iommu": None}) == {
        "manager_paths": ["/usr/bin/nvidia-vgpu-mgr"], "kernel_modules": ["nvidia"], "iommu": True}


def test_write_refuses_paths_outside_sys(sysroot, tmp_path_factory):
    outside = tmp_path_factory.mktemp("outside") / "x"
    outside.write_text("")
    link(str(sysroot / "evil"), str(outside))
    with pytest.raises(_vgpu_host.HostError, match="outside"):
        _vgpu_host.write(str(sysroot / "evil"), "1\n")
    assert outside.read_text() == ""


def test_config_file_errors(tmp_path):
    with pytest.raises(_vgpu.ConfigError, match="is not a regular file"):
        _vgpu_host.load_config_file(str(tmp_path), "x")
    bad = tmp_path / "bad.yaml"
    bad.write_text("version: v1\nvgpu-configs:\n  a: [\n")
    with pytest.raises(_vgpu.ConfigError, match="is not valid YAML at line"):
        _vgpu_host.load_config_file(str(bad), "a")
    good = tmp_path / "good.yaml"
    good.write_text("version: v1\nvgpu-configs:\n  a:\n    - devices: all\n      vgpu-devices: {T4-4Q: 4}\n")
    with pytest.raises(_vgpu.ConfigError, match="no vGPU config named 'b'; the file has: a"):
        _vgpu_host.load_config_file(str(good), "b")
    assert _vgpu_host.load_config_file(str(good), "a")[0]["vgpu_devices"] == {"T4-4Q": 4}


def test_mig_instances_read_through_nvml(sim):
    from ansible_collections.gpuops.sharing.plugins.module_utils._nvml import Nvml
    from gpusim import device
    from gpusim import state as gstate

    sim.init("A100-SXM4-40GB", 2, "--mig-enabled")
    with gstate.transaction() as data:
        for profile_id in (19, 19, 14):                     # 1g.5gb, 1g.5gb, 2g.10gb on GPU 0 only
            device.create_gi(data, 0, profile_id)
    with Nvml() as nv:
        got = _vgpu_host.HostVgpu(lambda argv, **kw: (0, "", ""), [], nv=nv)._mig_by_bdf()
    assert got == {"0000:07:00.0": {"enabled": True, "gpu_instances": {"1g.5gb": 2, "2g.10gb": 1}},
                   "0000:17:00.0": {"enabled": True, "gpu_instances": {}}}
