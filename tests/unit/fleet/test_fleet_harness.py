"""The fleet harness's own logic (tests/fleet/fleet.py): what it boots, how it reads results,
and what it says where it cannot run. Booting itself is exercised by `make fleet-test`."""

import ipaddress
import os
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
sys.path.insert(0, os.path.join(ROOT, "tests", "fleet"))

import fleet  # noqa: E402


def test_not_root_says_how_to_run_it(monkeypatch):
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    with pytest.raises(fleet.FleetError, match=r"need root .*make test-quick"):
        fleet.preflight()


def test_subnet_overlapping_a_route_is_refused(monkeypatch):
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    monkeypatch.setattr(fleet.shutil, "which", lambda tool: "/usr/bin/" + tool)
    routes = '[{"dst": "10.213.0.0/16", "dev": "eth1"}, {"dst": "default", "dev": "eth0"}]'
    monkeypatch.setattr(fleet, "run", lambda cmd, **kw: type("P", (), {"stdout": routes, "returncode": 0})())
    with pytest.raises(fleet.FleetError, match=r"FLEET_SUBNET 10\.213\.0\.0/24 overlaps this machine's route 10\.213\.0\.0/16"):
        fleet.preflight()


def test_hosts_file_has_the_site_groups_and_a_rebooted_mig_host():
    hosts = fleet.load_hosts()
    groups = {g for spec in hosts.values() for g in spec["groups"]}
    assert len(hosts) >= 4
    assert {"mig_training", "mig_inference", "mps_inference"} <= groups
    assert len({spec["model"] for spec in hosts.values()}) >= 3
    rebooted = [name for name, spec in hosts.items() if spec.get("reboot")]
    assert any({"mig_training", "mig_inference"} & set(hosts[n]["groups"]) for n in rebooted)


def test_larger_fleets_cycle_through_the_hosts_without_rebooting_the_copies():
    listed = fleet.load_hosts()
    hosts = fleet.load_hosts(len(listed) * 2 + 1)
    names = list(hosts)
    assert names[:len(listed)] == list(listed)
    first = names[0]
    assert f"{first}-2" in hosts and f"{first}-3" in hosts
    assert hosts[f"{first}-2"]["model"] == listed[first]["model"]
    assert not hosts[f"{first}-2"].get("reboot")
    assert list(fleet.load_hosts(2)) == names[:2]


def test_a_uniform_fleet_copies_one_host():
    listed = fleet.load_hosts()
    name = next(n for n, spec in listed.items() if "mps_inference" in spec["groups"])
    hosts = fleet.load_hosts(3, like=name)
    assert list(hosts) == [name, f"{name}-2", f"{name}-3"]
    assert {spec["model"] for spec in hosts.values()} == {listed[name]["model"]}
    assert all(spec["groups"] == listed[name]["groups"] for spec in hosts.values())
    with pytest.raises(fleet.FleetError, match=r"no host 'nope' in .*hosts\.yml; listed: "):
        fleet.load_hosts(2, like="nope")


def test_each_host_gets_its_own_point_to_point_pair():
    pairs = [fleet.addresses(i) for i in range(8)]
    flat = [a for pair in pairs for a in pair]
    assert len(set(flat)) == 16
    for mine, theirs in pairs:
        assert ipaddress.ip_network(f"{mine}/30", strict=False) == ipaddress.ip_network(f"{theirs}/30", strict=False)
        assert ipaddress.ip_address(mine) in fleet.SUBNET


def test_recap_is_read_per_host():
    output = """PLAY RECAP *****
mig-a100-01                : ok=12   changed=0    unreachable=0    failed=0    skipped=4    rescued=0    ignored=0
mps-h200-01                : ok=9    changed=2    unreachable=0    failed=0    skipped=0    rescued=0    ignored=0
"""
    counts = fleet.recap("TASK [x]\nchanged: [mig-a100-01]\n" + output)
    assert counts["mig-a100-01"]["changed"] == 0
    assert counts["mps-h200-01"]["changed"] == 2
    assert set(counts) == {"mig-a100-01", "mps-h200-01"}


def test_checks_are_split_by_phase(monkeypatch):
    after_apply = [os.path.basename(p) for p in fleet.checks("after_apply")]
    before = [os.path.basename(p) for p in fleet.checks("before_reboot")]
    after = [os.path.basename(p) for p in fleet.checks("after_reboot")]
    assert "mig_before_reboot.yml" in before and "mig_after_reboot.yml" in after
    assert not [n for n in after_apply if "reboot" in n]
    monkeypatch.setenv("FLEET_CHECKS", "nothing-by-this-name")
    assert fleet.checks("after_reboot") == []


def test_vgpu_hosts_are_rebooted_hypervisors_of_both_layouts():
    hosts = fleet.load_hosts()
    vgpu = {name: spec for name, spec in hosts.items() if "vgpu_hosts" in spec["groups"]}
    assert {spec["model"] for spec in vgpu.values()} >= {"A100-SXM4-40GB", "L40S"}
    assert all(spec.get("vgpu_host") and spec.get("reboot") for spec in vgpu.values())


def test_vgpu_host_files_serve_the_fuse_sysfs_before_the_vgpu_manager(tmp_path):
    written = {}

    def write(path, content, mode=0o644):
        written[path] = (content, mode)
    fleet.vgpu_host_files(write, str(tmp_path))
    unit = written["/etc/systemd/system/gpusim-sysfs.service"][0]
    assert "ExecStart=/usr/bin/python3 -m gpusim sysfs mount /run/gpusim-sys\n" in unit
    assert "Before=nvidia-vgpu-mgr.service gpuops-vgpu.service libvirtd.service\n" in unit
    bind = written["/usr/local/sbin/gpusim-sysfs-bind"]
    assert bind[1] == 0o755 and "for part in bus class devices/pci0000:00 kernel/iommu_groups module; do" in bind[0]
    assert "Requires=gpusim-sysfs.service\n" in written["/etc/systemd/system/nvidia-vgpu-mgr.service"][0]
    wants = tmp_path / "etc/systemd/system/multi-user.target.wants"
    assert sorted(os.listdir(wants)) == ["gpusim-sysfs.service", "nvidia-vgpu-mgr.service"]
    assert os.readlink(wants / "gpusim-sysfs.service") == "/etc/systemd/system/gpusim-sysfs.service"
