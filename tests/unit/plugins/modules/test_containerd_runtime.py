"""gpuops.sharing.containerd_runtime: check mode, diff, the write, restarts, refusals."""

from __future__ import annotations

import os
import stat

import pytest
import tomllib

from ansible_collections.gpuops.sharing.plugins.module_utils import _containerd_host
from ansible_collections.gpuops.sharing.plugins.modules import containerd_runtime as module

from ...conftest import run_module
from ..module_utils.test__containerd import CRI2, V2


def test_check_mode_then_real_then_idempotent(tmp_path):
    path = tmp_path / "config.toml"
    path.write_text(V2)
    os.chmod(path, 0o600)
    request = {"path": str(path), "cdi_spec_dirs": ["/etc/cdi", "/var/run/cdi"]}
    check, failed = run_module(module.main, {**request, "_ansible_check_mode": True, "_ansible_diff": True})
    assert not failed and check["changed"], check
    assert path.read_text() == V2                       # check mode wrote nothing
    assert check["diff"]["before"] == V2 and "BinaryName" in check["diff"]["after"]
    assert check["restart_required"] is True            # no systemd here
    assert check["operations"][0].startswith(f"write {path}: add runtime nvidia")
    real, failed = run_module(module.main, request)
    assert not failed and real["changed"] and real["done"] == real["operations"] == check["operations"]
    assert tomllib.loads(path.read_text())["plugins"][CRI2]["enable_cdi"] is True
    assert real["settings"]["runtime"]["options"]["BinaryName"] == "/usr/bin/nvidia-container-runtime"
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600     # the file's mode kept
    again, failed = run_module(module.main, request)
    assert not failed and not again["changed"] and again["operations"] == [] and not again["restart_required"]


def test_restart_through_systemctl_when_changed(tmp_path, monkeypatch):
    path = tmp_path / "config.toml"
    calls = []
    monkeypatch.setattr(_containerd_host, "systemd_booted", lambda: True)
    monkeypatch.setattr(module.AnsibleModule, "get_bin_path", lambda self, name, *a, **k: f"/bin/{name}")
    monkeypatch.setattr(module.AnsibleModule, "run_command",
                        lambda self, argv, **kw: (calls.append(argv), (0, "", ""))[1])
    result, failed = run_module(module.main, {"path": str(path)})
    assert not failed and result["changed"] and not result["restart_required"], result
    assert calls[-1][-2:] == ["try-restart", "containerd.service"]
    assert result["done"][-1] == "restart containerd.service if it runs (systemctl try-restart containerd.service)"
    calls.clear()
    again, failed = run_module(module.main, {"path": str(path)})
    assert not failed and not again["changed"]
    assert [c for c in calls if "systemctl" in c[-3]] == []         # no restart without a change


def test_failed_restart_reports_the_write_done(tmp_path, monkeypatch):
    path = tmp_path / "config.toml"
    monkeypatch.setattr(_containerd_host, "systemd_booted", lambda: True)
    monkeypatch.setattr(module.AnsibleModule, "get_bin_path", lambda self, name, *a, **k: f"/bin/{name}")
    monkeypatch.setattr(module.AnsibleModule, "run_command", lambda self, argv, **kw: (1, "", "Job failed"))
    result, failed = run_module(module.main, {"path": str(path)})
    assert failed and result["changed"] and len(result["done"]) == 1
    assert "systemctl try-restart containerd.service failed (rc=1): Job failed" in result["msg"]


def test_symlink_refused_not_followed(tmp_path):
    target = tmp_path / "real.toml"
    target.write_text(V2)
    link = tmp_path / "config.toml"
    link.symlink_to(target)
    result, failed = run_module(module.main, {"path": str(link)})
    assert failed and "is a symbolic link" in result["msg"] and not result["changed"]
    assert target.read_text() == V2


def test_bad_options_refused_before_reading(tmp_path):
    result, failed = run_module(module.main, {"path": str(tmp_path / "c.toml"), "service": "containerd; reboot"})
    assert failed and "is not a systemd unit name" in result["msg"]
    result, failed = run_module(module.main, {"path": "relative.toml"})
    assert failed and "give the absolute path of containerd's config" in result["msg"]
    result, failed = run_module(module.main, {"path": str(tmp_path / "c.toml"), "cdi_spec_dirs": []})
    assert failed and "cdi_spec_dirs=[]" in result["msg"]
    assert not (tmp_path / "c.toml").exists()


def test_old_containerd_warned_about_cdi(tmp_path, monkeypatch):
    path = tmp_path / "config.toml"
    monkeypatch.setattr(module.AnsibleModule, "get_bin_path",
                        lambda self, name, *a, **k: "/usr/bin/containerd" if name == "containerd" else None)
    monkeypatch.setattr(module.AnsibleModule, "run_command", lambda self, argv, **kw: (
        0, "containerd github.com/containerd/containerd 1.6.20~ds1 1.6.20~ds1-1+b1\n", ""))
    result, failed = run_module(module.main, {"path": str(path)})
    assert not failed and result["containerd_version"] == "1.6.20"
    assert any("containerd 1.6.20 has no CDI support" in w for w in result["warnings"]), result["warnings"]
    result, failed = run_module(module.main, {"path": str(tmp_path / "v3.toml"), "config_version": 3})
    assert failed and "which containerd 1.6.20 cannot load" in result["msg"]
    assert not (tmp_path / "v3.toml").exists()


def test_lock_serialises_runs_on_one_folder(tmp_path):
    import fcntl
    fd = _containerd_host.lock_folder(str(tmp_path / "config.toml"))
    try:
        other = os.open(tmp_path, os.O_RDONLY)
        try:
            with pytest.raises(BlockingIOError):
                fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)
        finally:
            os.close(other)
        with pytest.raises(_containerd_host._host.HostFileError, match="another run holds the lock"):
            _containerd_host.lock_folder(str(tmp_path / "new" / "deeper" / "config.toml"), timeout=0.1)
    finally:
        os.close(fd)
