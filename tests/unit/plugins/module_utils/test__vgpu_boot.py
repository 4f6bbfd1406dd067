"""The vGPU boot unit: its texts, the saved devices, the boot-time request, and the bad values refused.

The boot code's real run (a reboot of a simulated hypervisor, then the unit's own command line) is the
integration target's (tests/integration/targets/vgpu_devices: FUSE sysfs in a mount namespace) and the
fleet's (real systemd, tests/fleet_checks/vgpu_host_after_reboot.yml).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess

import pytest

from ansible_collections.gpuops.sharing.plugins.module_utils import _boot, _vgpu, _vgpu_boot, _vgpu_host
from ansible_collections.gpuops.sharing.plugins.modules import vgpu_devices

from ...conftest import run_module
from .test__vgpu import counter, make_gpu, u
from .test__vgpu_host import link, pci, put

CFG = {"name": "gpuops-vgpu", "unit_dir": "/etc/systemd/system", "python": "/usr/bin/python3",
       "config_dir": "/etc/gpuops/vgpu"}


@pytest.mark.parametrize("change, boot_dir, message", [
    ({}, None, "boot_unit needs boot_dir: the unit runs the boot code the module installs there"),
    ({"name": "gpuops vgpu"}, "/lib/x", "boot_unit.name='gpuops vgpu' is not a unit name"),
    ({"python": "python3"}, "/lib/x", "boot_unit.python='python3' is not valid: give an absolute path of letters, "
                                      "digits, '.', '_', '-' and '/' (the boot unit names it)"),
    ({"config_dir": "/etc/$(id)"}, "/lib/x", "boot_unit.config_dir='/etc/$(id)' is not valid"),
    ({"unit_dir": "/etc/../tmp"}, "/lib/x", "boot_unit.unit_dir='/etc/../tmp' is not valid"),
    ({}, "/lib/a b", "boot_dir='/lib/a b' is not valid: give an absolute path"),
])
def test_validate_refuses_what_cannot_reach_a_unit(change, boot_dir, message):
    with pytest.raises(_vgpu.ConfigError) as err:
        _vgpu_boot.validate({**CFG, **change}, boot_dir)
    assert message in str(err.value)


def test_unit_is_ordered_after_the_vgpu_manager_and_before_libvirt():
    text = _vgpu_boot.unit_text(CFG, "/usr/local/lib/gpuops-sharing/vgpu/gpuops-vgpu-apply")
    assert "After=local-fs.target systemd-modules-load.service systemd-udev-settle.service nvidia-vgpud.service " \
           "nvidia-vgpu-mgr.service gpuops-mig.service\n" in text
    assert "Before=libvirtd.service virtqemud.service libvirt-guests.service\n" in text
    assert 'ExecStart="/usr/bin/python3" "/usr/local/lib/gpuops-sharing/vgpu/gpuops-vgpu-apply" ' \
           '--state-file "/etc/gpuops/vgpu/devices.json"\n' in text
    assert "ConditionPathExists=/etc/gpuops/vgpu/devices.json\n" in text and "Type=oneshot\n" in text


@pytest.mark.skipif(not shutil.which("systemd-analyze"), reason="systemd-analyze is not installed")
def test_unit_passes_systemd_analyze_verify(tmp_path):
    for name in ("python3", "gpuops-vgpu-apply"):
        os.symlink("/bin/true", tmp_path / name)
    cfg = {**CFG, "unit_dir": str(tmp_path), "python": str(tmp_path / "python3"), "config_dir": str(tmp_path)}
    path = tmp_path / "gpuops-vgpu.service"
    path.write_text(_vgpu_boot.unit_text(cfg, str(tmp_path / "gpuops-vgpu-apply")))
    done = subprocess.run(["systemd-analyze", "verify", str(path)], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr


def test_state_round_trip_uuids_on_mdev_vfs_on_vfio():
    mdev = _vgpu_boot.state_gpu("0000:41:00.0", "sriov-mdev", [
        {"uuid": u(2), "type_name": "A100X-4C", "parent": "0000:41:00.5"},
        {"uuid": u(1), "type_name": "A100X-4C", "parent": "0000:41:00.4"}])
    vfio = _vgpu_boot.state_gpu("0000:07:00.0", "vfio", [
        {"uuid": "0000:07:00.3", "type_name": "L40S-24Q", "parent": "0000:07:00.3"}])
    text = _vgpu_boot.state_text([mdev, vfio])
    assert json.loads(text)["gpus"][1]["vgpus"] == [{"type_name": "L40S-24Q", "vf": "0000:07:00.3"}]
    assert _vgpu_boot.parse_state(text, "f") == [
        {"pci_bus_id": "0000:41:00.0", "vgpus": [{"type_name": "A100X-4C", "id": u(1)},
                                                 {"type_name": "A100X-4C", "id": u(2)}]},
        {"pci_bus_id": "0000:07:00.0", "vgpus": [{"type_name": "L40S-24Q", "id": "0000:07:00.3"}]}]
    assert _vgpu_boot.state_text([mdev, vfio]) == text          # stable: the steady state writes nothing


@pytest.mark.parametrize("text, message", [
    ("{", "f is not JSON"),
    ('{"format": 2, "gpus": []}', "f: not a gpuops.sharing vGPU state file (format 1 with 'gpus')"),
    ('{"format": 1, "gpus": [{"pci_bus_id": "41:00.0", "vgpus": []}]}',
     "f: gpus[0] needs pci_bus_id (such as 0000:41:00.0) and a list of vgpus"),
    ('{"format": 1, "gpus": [{"pci_bus_id": "0000:41:00.0", "vgpus": [{"uuid": "x"}]}]}',
     "f: gpus[0].vgpus[0] needs type_name"),
    ('{"format": 1, "gpus": [{"pci_bus_id": "0000:41:00.0", "vgpus": [{"type_name": "A100X-4C", "uuid": "x"}]}]}',
     "f: gpus[0].vgpus[0]: 'x' is not a UUID"),
    ('{"format": 1, "gpus": [{"pci_bus_id": "0000:07:00.0", "vgpus": [{"type_name": "L40S-24Q", "vf": "07:00.3"}]}]}',
     "f: gpus[0].vgpus[0]: '07:00.3' is not a PCI address"),
    ('{"format": 1, "gpus": [{"pci_bus_id": "0000:41:00.0", "vgpus": [{"type_name": "nvidia-692", "uuid": "x"}]}]}',
     "is a numeric type id"),
])
def test_parse_state_refuses_anything_else(text, message):
    with pytest.raises(_vgpu.ConfigError) as err:
        _vgpu_boot.parse_state(text, "f")
    assert message in str(err.value)


def test_boot_request_pins_the_saved_ids_and_names_a_missing_gpu():
    gpus = [make_gpu(), make_gpu("L40S", index=1)]
    saved = [{"pci_bus_id": "0000:41:00.0", "vgpus": [{"type_name": "A100X-4C", "id": u(1)}]},
             {"pci_bus_id": "0000:42:00.0", "vgpus": [{"type_name": "L40S-24Q", "id": gpus[1]["vfs"][1]}]}]
    entries, fixed = _vgpu_boot.boot_request(saved, gpus)
    assert _vgpu.desired(entries, gpus) == {0: {"A100X-4C": 1}, 1: {"L40S-24Q": 1}}
    assert fixed == {0: {"A100X-4C": [u(1)]}, 1: {"L40S-24Q": [gpus[1]["vfs"][1]]}}
    with pytest.raises(_vgpu.PlanError, match=r"GPU 0000:99:00.0 of the saved vGPUs is not on this host \(GPUs: "
                                              r"0000:41:00.0, 0000:42:00.0\); run the vgpu_devices module again"):
        _vgpu_boot.boot_request([{"pci_bus_id": "0000:99:00.0", "vgpus": []}], gpus)


def test_vfio_vgpus_come_back_on_their_virtual_functions():
    """The saved VF of each vendor-VFIO vGPU is where the boot run creates it; others take unnamed VFs."""
    gpu = make_gpu("L40S")
    vf3, vf5 = gpu["vfs"][3], gpu["vfs"][5]
    res = _vgpu.plan_gpu(gpu, {"L40S-12Q": 3}, {"L40S-12Q": [vf5, vf3]}, counter())
    assert [op["parent"] for op in res["ops"]] == [vf5, vf3, gpu["vfs"][0]]
    # kept where they are when they exist there already
    gpu["vgpus"] = [{"uuid": vf3, "type_name": "L40S-12Q", "type_id": 1, "parent": vf3, "busy": ""}]
    res = _vgpu.plan_gpu(gpu, {"L40S-12Q": 2}, {"L40S-12Q": [vf3, vf5]}, counter())
    assert [v["parent"] for v in res["kept"]] == [vf3] and [op["parent"] for op in res["ops"]] == [vf5]


def test_unpinned_vgpus_leave_the_pinned_vfs_free():
    gpu = make_gpu("L40S")
    res = _vgpu.plan_gpu(gpu, {"L40S-12Q": 2}, {"L40S-12Q": [gpu["vfs"][0]]}, counter())
    assert [op["parent"] for op in res["ops"]] == [gpu["vfs"][0], gpu["vfs"][1]]


# ---- the host: boot code, unit and saved devices planned with the devices, written once --------------------

@pytest.fixture
def sysroot(tmp_path, monkeypatch):
    root = tmp_path / "sys"
    monkeypatch.setattr(_vgpu_host, "SYS", str(root))
    (root / "class/mdev_bus").mkdir(parents=True)
    (root / "kernel/iommu_groups/1").mkdir(parents=True)
    pci(root, "0000:07:00.0", device="0x26b9", sriov=(32, 2, 2))
    for vf, current, listed in (("0000:07:00.2", "0", "1155  : NVIDIA L40S-24Q\n"), ("0000:07:00.3", "1155", "")):
        d = pci(root, vf, device="0x26b9")
        link(str(d / "physfn"), "../0000:07:00.0")
        put(str(d / "nvidia/creatable_vgpu_types"), "ID    : vGPU Name\n" + listed)
        put(str(d / "nvidia/current_vgpu_type"), current + "\n")
    return root


def systemctl(enabled: set, calls: list):
    def run(argv, **_kw):
        calls.append(" ".join(argv[1:]))
        if argv[1] == "is-enabled":
            return (0, "enabled\n", "") if argv[2] in enabled else (1, "disabled\n", "")
        if argv[1] == "enable":
            enabled.add(argv[2])
        return 0, "", ""
    return run


def test_host_installs_code_unit_and_saved_devices_then_nothing(sysroot, tmp_path):
    from ansible_collections.gpuops.sharing.plugins.module_utils._runner import run
    enabled, calls = set(), []
    cfg = {**CFG, "unit_dir": str(tmp_path / "units"), "config_dir": str(tmp_path / "etc")}
    sources = _boot.closure(["_host", "_vgpu_host"], _boot.payload_source)
    assert {"_vgpu_host", "_vgpu_boot", "_vgpu", "_boot", "_host", "_runner"} <= set(sources)

    def host():
        return _vgpu_host.HostVgpu(systemctl(enabled, calls),
                                   _vgpu.parse_entries([{"devices": "all", "vgpu-devices": {"L40S-24Q": 1}}]),
                                   boot_dir=str(tmp_path / "lib"), boot_sources=sources, boot_unit=cfg,
                                   systemctl="systemctl", atomic_move=os.replace)
    first = run(host(), check_mode=False)
    assert first["changed"] and "systemctl daemon-reload" in first["done"]
    assert "enable gpuops-vgpu.service (creates the vGPUs again at boot)" in first["done"]
    saved = json.loads((tmp_path / "etc/devices.json").read_text())
    assert saved["gpus"] == [{"layout": "vfio", "pci_bus_id": "0000:07:00.0",
                              "vgpus": [{"type_name": "L40S-24Q", "vf": "0000:07:00.3"}]}]
    assert first["boot"]["unit"] == str(tmp_path / "units/gpuops-vgpu.service")
    assert first["boot"]["version"] == f"gpuops.sharing {_boot.COLLECTION_VERSION}"
    assert os.access(tmp_path / "lib/gpuops-vgpu-apply", os.X_OK)
    calls.clear()
    again = run(host(), check_mode=False)
    assert not again["changed"] and again["operations"] == [] and calls == ["is-enabled gpuops-vgpu.service"]


def test_host_without_systemctl_is_refused_before_any_write(sysroot, tmp_path):
    from ansible_collections.gpuops.sharing.plugins.module_utils._runner import Refused, run
    cfg = {**CFG, "unit_dir": str(tmp_path / "units"), "config_dir": str(tmp_path / "etc")}
    h = _vgpu_host.HostVgpu(lambda argv, **kw: (0, "", ""),
                            _vgpu.parse_entries([{"devices": "all", "vgpu-devices": {"L40S-24Q": 1}}]),
                            boot_dir=str(tmp_path / "lib"), boot_sources={}, boot_unit=cfg, systemctl=None)
    with pytest.raises(Refused, match="boot_unit needs systemd"):
        run(h, check_mode=False)
    assert not (tmp_path / "lib").exists() and not (tmp_path / "etc").exists()


def test_boot_entry_point_names_a_missing_state_file(tmp_path):
    lines = []
    rc = _vgpu_host.boot_main(["--state-file", str(tmp_path / "none.json")], lambda argv: (0, "", ""), lines.append)
    assert rc == 1 and lines == [f"gpuops-vgpu-apply: {tmp_path}/none.json is missing or not a regular file; run the "
                                 f"vgpu_devices module again"]


@pytest.mark.parametrize("args, message", [
    ({"boot_unit": {}}, "boot_unit needs boot_dir: the unit runs the boot code the module installs there"),
    ({"boot_dir": "/x", "boot_unit": {"name": "a;b"}}, "boot_unit.name='a;b' is not a unit name"),
])
def test_module_refuses_bad_boot_values_before_reading_the_host(args, message):
    result, failed = run_module(vgpu_devices.main, {"config": [{"devices": "all", "vgpu-devices": {}}], **args})
    assert failed and message in result["msg"] and not result["changed"] and result["boot"] is None
