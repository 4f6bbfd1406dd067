"""The vGPU scheduler (RmPVMRL) of vgpu_devices: values from NVIDIA's table, bad input, and the host's file."""

from __future__ import annotations

import os

import pytest

from ansible_collections.gpuops.sharing.plugins.module_utils import _vgpu, _vgpu_host, _vgpu_sched
from ansible_collections.gpuops.sharing.plugins.module_utils._runner import Refused, run


@pytest.mark.parametrize("policy, ms, value", [
    # NVIDIA vGPU user guide, "RmPVMRL Registry Key": 0x00, 0x01, 0x00TT0001, 0x11, 0x00TT0011
    ("best_effort", None, "0x00"),
    ("equal_share", None, "0x01"),
    ("fixed_share", None, "0x11"),
    ("equal_share", 3, "0x00030001"),
    ("fixed_share", 3, "0x00030011"),
    ("equal_share", 1, "0x00010001"),
    ("fixed_share", 30, "0x001E0011"),
    ("equal_share", 16, "0x00100001"),
])
def test_rmpvmrl_values(policy, ms, value):
    assert _vgpu_sched.validate({"policy": policy, "time_slice_ms": ms})["value"] == value


@pytest.mark.parametrize("cfg, message", [
    ({"policy": "round_robin"}, "scheduler.policy='round_robin' is not a vGPU scheduler; give one of best_effort, "
                                "equal_share, fixed_share"),
    ({"policy": "equal_share", "time_slice_ms": 0}, "scheduler.time_slice_ms=0 is out of range: the time slice is 1 "
                                                    "to 30 ms (RmPVMRL's TT, 0x01 to 0x1E)"),
    ({"policy": "fixed_share", "time_slice_ms": 31}, "scheduler.time_slice_ms=31 is out of range"),
    ({"policy": "best_effort", "time_slice_ms": 5}, "scheduler.time_slice_ms=5 needs policy equal_share or "
                                                    "fixed_share"),
    ({"policy": "equal_share", "file": "etc/x.conf"}, "scheduler.file='etc/x.conf' is not valid"),
    ({"policy": "equal_share", "file": "/etc/modprobe.d/x"}, "ending in .conf"),
    ({"policy": "equal_share", "file": "/etc/modprobe.d/../x.conf"}, "is not valid"),
    ({"policy": "equal_share", "file": "/etc/modprobe.d/a b.conf"}, "is not valid"),
])
def test_bad_input_messages(cfg, message):
    with pytest.raises(_vgpu.ConfigError) as exc:
        _vgpu_sched.validate(cfg)
    assert message in str(exc.value)


def test_file_text_is_the_guides_options_line():
    sched = _vgpu_sched.validate({"policy": "fixed_share", "time_slice_ms": 10})
    text = _vgpu_sched.file_text(sched)
    assert text.splitlines()[-1] == 'options nvidia NVreg_RegistryDwords="RmPVMRL=0x000A0011"'
    assert sched["file"] == "/etc/modprobe.d/gpuops-vgpu-scheduler.conf"
    assert _vgpu_sched.sets_registry(text) == ["NVreg_RegistryDwords"]


@pytest.mark.parametrize("text, found", [
    ('options nvidia NVreg_RegistryDwords="RmPVMRL=0x01"\n', ["NVreg_RegistryDwords"]),
    ('options nvidia NVreg_EnableGpuFirmware=0 \\\n  NVreg_RegistryDwords="X=1"\n', ["NVreg_RegistryDwords"]),
    ('options nvidia NVreg_RegistryDwordsPerDevice="pci=0000:41:00.0;RmPVMRL=0x11"\n',
     ["NVreg_RegistryDwordsPerDevice"]),
    ('# options nvidia NVreg_RegistryDwords="RmPVMRL=0x01"\n', []),
    ('options nvidia_drm modeset=1\noptions nvidia NVreg_DynamicPowerManagement=0x02\n', []),
    ('options nouveau NVreg_RegistryDwords=1\nblacklist nouveau\n', []),
])
def test_other_files_that_set_the_registry(text, found):
    assert _vgpu_sched.sets_registry(text) == found


@pytest.fixture
def host_env(tmp_path, monkeypatch):
    monkeypatch.setattr(_vgpu_host, "SYS", str(tmp_path / "sys"))
    (tmp_path / "sys/class/mdev_bus").mkdir(parents=True)
    (tmp_path / "sys/bus/pci/devices").mkdir(parents=True)
    (tmp_path / "sys/kernel/iommu_groups/1").mkdir(parents=True)
    monkeypatch.setattr(_vgpu_host, "MODPROBE_DIRS", (str(tmp_path / "modprobe.d"),))
    return tmp_path


def sched_host(tmp_path, policy="equal_share", ms=3):
    cfg = _vgpu_sched.validate({"policy": policy, "time_slice_ms": ms,
                                "file": str(tmp_path / "modprobe.d/gpuops-vgpu-scheduler.conf")})
    return _vgpu_host.HostVgpu(lambda argv, **kw: (0, "", ""), [], scheduler=cfg, atomic_move=os.replace)


def test_host_writes_the_file_then_nothing_and_reboot_required_follows(host_env):
    path = host_env / "modprobe.d/gpuops-vgpu-scheduler.conf"
    checked = run(sched_host(host_env), check_mode=True)
    assert checked["changed"] and checked["reboot_required"] and not path.exists()
    first = run(sched_host(host_env), check_mode=False)
    assert first["reboot_required"] and first["scheduler"] == {
        "policy": "equal_share", "time_slice_ms": 3, "value": "0x00030001", "file": str(path)}
    assert path.read_text().endswith('options nvidia NVreg_RegistryDwords="RmPVMRL=0x00030001"\n')
    again = run(sched_host(host_env), check_mode=False)
    assert not again["changed"] and not again["reboot_required"] and again["operations"] == []
    changed = run(sched_host(host_env, "fixed_share", None), check_mode=False)
    assert changed["reboot_required"] and "RmPVMRL=0x11" in path.read_text()


def test_host_refuses_a_symlink_and_warns_of_a_conflicting_file(host_env):
    d = host_env / "modprobe.d"
    d.mkdir()
    (d / "nvidia.conf").write_text('options nvidia NVreg_RegistryDwords="RmPVMRL=0x01"\n')
    h = sched_host(host_env)
    run(h, check_mode=True)
    assert len(h.warnings) == 1 and h.warnings[0].startswith(f"{d}/nvidia.conf also sets NVreg_RegistryDwords")
    (d / "target").write_text("")
    os.symlink(d / "target", d / "gpuops-vgpu-scheduler.conf")
    with pytest.raises(Refused, match="is a symbolic link"):
        run(sched_host(host_env), check_mode=False)
    assert (d / "target").read_text() == ""


@pytest.mark.parametrize("policy, types, warned", [
    ("equal_share", ["A100X-1-5C", "A100X-3-20C"], True),
    ("equal_share", ["A100X-1-5C", "A100X-4C"], False),
    ("fixed_share", ["A100X-4C"], False),
    ("best_effort", ["A100X-1-5C"], False),
    ("equal_share", [], False),
])
def test_warns_when_only_mig_backed_types_are_configured(policy, types, warned):
    got = _vgpu_sched.mig_backed_only(_vgpu_sched.validate({"policy": policy}), types)
    assert (got is not None) == warned
    if warned:
        assert got == ("scheduler.policy=equal_share applies to time-sliced vGPUs only; the configuration holds only "
                       "MIG-backed types (A100X-1-5C, A100X-3-20C), which have their own GPU instances")
