"""gpuops.sharing.vgpu_license: the safety defects of issue 10 (item 9), one regression test each.

Each test runs the module's real main() on a simulated vGPU guest (gpusim --vgpu-guest) and looks
at the files and processes afterwards, not at how the module got there.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import signal
import subprocess
import sys
import time

import pytest
from ansible.module_utils import basic

from ansible_collections.gpuops.sharing.plugins.module_utils import _gridd_host
from ansible_collections.gpuops.sharing.plugins.modules import vgpu_license
from gpusim import license as simlicense

from ...conftest import SIMULATOR, run_module

GRIDD = os.path.join(SIMULATOR, "libexec", "nvidia-gridd.py")


@pytest.fixture
def guest(sim, tmp_path):
    sim.init("A100-SXM4-40GB", 1, "--vgpu-guest", "A100-4C")
    conf = tmp_path / "etc" / "nvidia" / "gridd.conf"
    tokens = tmp_path / "ClientConfigToken"
    return {"conf": str(conf), "tokens": str(tokens), "token": simlicense.make_token("dls.lab.example.com"),
            "tmp": tmp_path}


def args(guest, **extra) -> dict:
    base = {"path": guest["conf"], "client_config_token_path": guest["tokens"], "token_content": guest["token"],
            "feature_type": 1, "restart": False, "wait": False}
    base.update(extra)
    return {k: v for k, v in base.items() if v is not None}


def test_symlink_at_the_token_path_is_refused_and_its_target_untouched(guest):
    victim = guest["tmp"] / "victim"
    victim.write_text("precious\n")
    os.chmod(victim, 0o600)
    os.makedirs(guest["tokens"])
    link = os.path.join(guest["tokens"], "client_configuration_token.tok")
    os.symlink(victim, link)
    result, failed = run_module(vgpu_license.main, args(guest))
    assert failed and result["changed"] is False and result["done"] == []
    assert f"{link} is a symbolic link" in result["msg"] and "remove it" in result["msg"]
    assert result["token"]["changed"] is False and result["config_changes"] == [] and result["operations"]
    assert victim.read_text() == "precious\n" and oct(os.stat(victim).st_mode & 0o777) == "0o600"
    assert os.path.islink(link) and not os.path.exists(guest["conf"])   # refused before the first write


def test_symlinked_token_folder_is_refused(guest):
    real = guest["tmp"] / "elsewhere"
    real.mkdir()
    os.symlink(real, guest["tokens"])
    result, failed = run_module(vgpu_license.main, args(guest))
    assert failed and result["changed"] is False
    assert f"the token folder {guest['tokens']} is a symbolic link" in result["msg"]
    assert os.listdir(real) == [] and not os.path.exists(guest["conf"])


def _one(conf, tokens, key, value, queue, barrier):
    import pynvml
    pynvml.nvmlLib = None
    pynvml._nvmlGetFunctionPointer_cache.clear()
    barrier.wait()
    result, failed = run_module(vgpu_license.main, {"path": conf, key: value, "restart": False, "wait": False})
    queue.put((key, failed, result.get("msg")))


def test_six_parallel_runs_each_setting_a_key_keep_all_six(guest):
    os.makedirs(os.path.dirname(guest["conf"]))
    with open(guest["conf"], "w") as fh:
        fh.write("# site\nIgnoreSP=FALSE\n")
    edits = {"server_address": "lic1.example.com", "server_port": 7071, "backup_server_address": "lic2.example.com",
             "backup_server_port": 7072, "license_interval": 60, "linger_interval": 5}
    ctx = multiprocessing.get_context("fork")
    queue, barrier = ctx.Queue(), ctx.Barrier(len(edits))
    procs = [ctx.Process(target=_one, args=(guest["conf"], guest["tokens"], key, value, queue, barrier))
             for key, value in edits.items()]
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join(60)
    outcomes = [queue.get(timeout=5) for _proc in procs]
    assert all(not failed for _key, failed, _msg in outcomes), outcomes
    with open(guest["conf"]) as fh:
        text = fh.read()
    for line in ("ServerAddress=lic1.example.com", "ServerPort=7071", "BackupServerAddress=lic2.example.com",
                 "BackupServerPort=7072", "LicenseInterval=60", "LingerInterval=5", "IgnoreSP=FALSE", "# site"):
        assert line + "\n" in text, text


def test_dangling_symlink_path_is_refused_and_nothing_is_written(guest):
    os.makedirs(os.path.dirname(guest["conf"]))
    missing = guest["tmp"] / "nowhere" / "gridd.conf"
    os.symlink(missing, guest["conf"])
    result, failed = run_module(vgpu_license.main, args(guest))
    assert failed and result["changed"] is False and result["done"] == []
    assert f"path={guest['conf']} is a symbolic link to {missing}, which does not exist" in result["msg"]
    assert not os.path.exists(guest["tokens"]) and os.path.islink(guest["conf"]) and not missing.parent.exists()


def test_token_failure_leaves_gridd_conf_untouched(guest, monkeypatch):
    os.makedirs(os.path.dirname(guest["conf"]))
    with open(guest["conf"], "w") as fh:
        fh.write("FeatureType=0\n")
    real = basic.AnsibleModule.atomic_move

    def atomic_move(self, src, dest, unsafe_writes=False, keep_dest_attrs=True):
        if dest.endswith(".tok"):
            raise OSError(28, "No space left on device", dest)
        return real(self, src, dest, unsafe_writes)

    monkeypatch.setattr(basic.AnsibleModule, "atomic_move", atomic_move)
    result, failed = run_module(vgpu_license.main, args(guest))
    assert failed and "No space left on device" in result["msg"]
    with open(guest["conf"]) as fh:
        assert fh.read() == "FeatureType=0\n"          # still pointing where the token is
    assert not [n for n in os.listdir(guest["tokens"]) if not n.startswith(".")] if os.path.isdir(guest["tokens"]) \
        else True
    assert result["done"] == [f"create the token folder {guest['tokens']}"] and result["changed"] is True


def test_writes_go_through_atomic_move(guest, monkeypatch):
    moved = []
    real = basic.AnsibleModule.atomic_move

    def atomic_move(self, src, dest, unsafe_writes=False, keep_dest_attrs=True):
        moved.append(dest)
        return real(self, src, dest, unsafe_writes)

    monkeypatch.setattr(basic.AnsibleModule, "atomic_move", atomic_move)
    result, failed = run_module(vgpu_license.main, args(guest))
    assert not failed, result["msg"]
    assert moved == [os.path.join(guest["tokens"], "client_configuration_token.tok"), guest["conf"]]
    assert oct(os.stat(moved[0]).st_mode & 0o777) == "0o744"


# ---- restart where no service manager runs: the daemon's pid file, never a process name -------------------

def _decoy(tmp_path):
    """A process that calls itself nvidia-gridd but is not the daemon (another container's, a wrapper)."""
    ready = tmp_path / "decoy-ready"
    code = ("import os,time\nopen('/proc/self/comm','w').write('nvidia-gridd')\n"
            f"open({str(ready)!r},'w').close()\ntime.sleep(60)\n")
    proc = subprocess.Popen([sys.executable, "-c", code])
    deadline = time.monotonic() + 10
    while not ready.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    return proc


@pytest.fixture
def no_systemd(guest, monkeypatch):
    rundir = guest["tmp"] / "run" / "nvidia-gridd"
    monkeypatch.setenv("GPUSIM_GRIDD_RUNDIR", str(rundir))
    monkeypatch.setenv("GPUSIM_GRIDD_CONF", guest["conf"])
    monkeypatch.setattr(_gridd_host, "systemd_booted", lambda *a, **k: False)
    started = []
    yield rundir, started
    pidfile = rundir / "nvidia-gridd.pid"
    if pidfile.exists():
        with open(pidfile) as fh:
            started.append(int(fh.read().strip()))
    for pid in started:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)


def _pid(rundir, timeout=10.0):
    deadline = time.monotonic() + timeout
    path = rundir / "nvidia-gridd.pid"
    while time.monotonic() < deadline:
        if path.exists() and path.read_text().strip():
            return int(path.read_text())
        time.sleep(0.05)
    raise AssertionError("nvidia-gridd wrote no pid file")


def _alive(pid):
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().split()[2] != "Z"
    except OSError:
        return False


def test_restart_without_systemd_signals_only_the_daemon_of_the_pid_file(guest, no_systemd):
    rundir, started = no_systemd
    env = dict(os.environ)
    subprocess.run([sys.executable, GRIDD], env=env, check=True)
    first = _pid(rundir)
    started.append(first)
    decoy = _decoy(guest["tmp"])
    try:
        pid_file = str(rundir / "nvidia-gridd.pid")
        result, failed = run_module(vgpu_license.main, args(guest, restart=True, wait=True, timeout=20,
                                                            pid_file=pid_file))
        assert not failed, result["msg"]
        assert result["restarted"] and result["license"]["state"] == "licensed"
        assert result["done"][-1] == f"restart nvidia-gridd (SIGTERM to pid {first} of {rundir}/nvidia-gridd.pid, " \
                                     "then start nvidia-gridd)"
        assert decoy.poll() is None and _alive(decoy.pid)        # not the daemon: left alone
        assert not _alive(first)
        second = _pid(rundir)
        assert second != first and _alive(second)
    finally:
        decoy.kill()
        decoy.wait()


def test_restart_without_systemd_refuses_a_daemon_without_pid_file(guest, no_systemd):
    rundir, _started = no_systemd
    decoy = _decoy(guest["tmp"])
    try:
        result, failed = run_module(vgpu_license.main, args(guest, restart=True, wait=False,
                                                            pid_file=str(rundir / "nvidia-gridd.pid")))
        assert failed and result["changed"] is False and result["done"] == []
        assert "nvidia-gridd runs (pid " in result["msg"] and "but no pid file names it" in result["msg"]
        assert str(decoy.pid) in result["msg"].split("but no pid file")[0]
        assert decoy.poll() is None and not os.path.exists(guest["conf"])
    finally:
        decoy.kill()
        decoy.wait()
