"""gpuops.sharing.mps on simulated hosts with gpusim's MPS control daemon."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from ansible_collections.gpuops.sharing.plugins.modules import mps

from ...conftest import SIMULATOR, run_module

SMI = [sys.executable, os.path.join(SIMULATOR, "libexec", "nvidia-smi.py")]


def mig_host(sim, gpus: int = 1, spec: str = "19,19"):
    sim.init("A100-SXM4-40GB", gpus, "--mig-enabled")
    for index in range(gpus):
        done = subprocess.run(SMI + ["mig", "-i", str(index), "-cgi", spec, "-C"], capture_output=True, text=True,
                              check=False)
        assert done.returncode == 0, done.stdout + done.stderr


def args(tmp_path, **extra) -> dict:
    return {"pipe_directory": str(tmp_path / "{name}" / "pipe"), "log_directory": str(tmp_path / "{name}" / "log"),
            **extra}


def pipe(tmp_path, name: str) -> str:
    return str(tmp_path / name / "pipe")


def test_starts_daemons_per_mig_device_then_changes_nothing(sim, mps_daemons, tmp_path):
    mig_host(sim)
    request = args(tmp_path, manage_daemon=True, default_active_thread_percentage=25,
                   default_device_pinned_mem_limit="4GiB", default_client_priority=1)
    check, failed = run_module(mps.main, {**request, "_ansible_check_mode": True})
    assert not failed and check["changed"]
    assert [t["running"] for t in check["targets"]] == [True, True]          # predicted
    assert not os.path.exists(pipe(tmp_path, check["targets"][0]["name"]))  # nothing started
    first, failed = run_module(mps.main, request)
    assert not failed, first["msg"] if failed else ""
    assert first["changed"] and not first["restart_required"]
    names = [t["name"] for t in first["targets"]]
    instances = sorted(sim.state()["gpus"][0]["gpu_instances"], key=lambda gi: gi["id"])
    assert names == [f"gpu0-mig{gi['start']}.{gi['compute_instances'][0]['start']}" for gi in instances]
    assert [t["uuid"] for t in first["targets"]] == [gi["compute_instances"][0]["uuid"] for gi in instances]
    for target in first["targets"]:
        assert target["kind"] == "mig" and target["uuid"].startswith("MIG-")
        assert target["compute_mode"] is None
        assert target["settings"] == {"active_thread_percentage": 25.0, "device_pinned_mem_limit": "4G",
                                      "client_priority": 1}
        assert target["daemon_environment"]["CUDA_VISIBLE_DEVICES"] == target["uuid"]
        assert target["daemon_environment"]["CUDA_MPS_PINNED_DEVICE_MEM_LIMIT"] == "0=4G"
        assert "CUDA_VISIBLE_DEVICES" not in target["client_environment"]
        assert mps_daemons.ctl(target["pipe_directory"], "get_default_active_thread_percentage") == "25.0\n"
    second, failed = run_module(mps.main, request)
    assert not failed and not second["changed"] and second["operations"] == []
    again, failed = run_module(mps.main, {**request, "_ansible_check_mode": True})
    assert not failed and not again["changed"]


def test_settings_of_a_running_daemon_are_normalised_before_comparing(sim, mps_daemons, tmp_path):
    sim.init("H100-SXM5-80GB", 1)
    mps_daemons.start(pipe(tmp_path, "gpu0"), CUDA_MPS_ACTIVE_THREAD_PERCENTAGE="50",
                      CUDA_MPS_PINNED_DEVICE_MEM_LIMIT="0=4096M")
    request = args(tmp_path, targets=["0"], default_active_thread_percentage=50,
                   default_device_pinned_mem_limit="4G", compute_mode="unchanged")
    result, failed = run_module(mps.main, request)
    assert not failed and not result["changed"], result["operations"]
    assert result["targets"][0]["settings"]["active_thread_percentage"] == 50.0


def test_changes_only_what_differs_with_diff(sim, mps_daemons, tmp_path):
    sim.init("H100-SXM5-80GB", 1)
    mps_daemons.start(pipe(tmp_path, "gpu0"), CUDA_MPS_ACTIVE_THREAD_PERCENTAGE="50")
    request = args(tmp_path, targets=["gpu0"], default_active_thread_percentage=30, default_client_priority=0,
                   _ansible_diff=True)
    result, failed = run_module(mps.main, request)
    assert not failed and result["changed"]
    assert result["operations"] == ["gpu0: set compute mode of GPU 0 (%s) to EXCLUSIVE_PROCESS"
                                    % result["targets"][0]["uuid"],
                                    "gpu0: default active thread percentage 50 -> 30"]
    assert "default_active_thread_percentage: 50\n" in result["diff"]["before"]
    assert "default_active_thread_percentage: 30\n" in result["diff"]["after"]
    assert "compute_mode: default" in result["diff"]["before"]
    assert "compute_mode: exclusive_process" in result["diff"]["after"]
    assert sim.state()["gpus"][0]["compute_mode"] == 3
    assert mps_daemons.ctl(pipe(tmp_path, "gpu0"), "get_default_active_thread_percentage",
                           "get_default_client_priority") == "30.0\n0\n"


def test_check_mode_writes_nothing(sim, mps_daemons, tmp_path):
    sim.init("H100-SXM5-80GB", 1)
    mps_daemons.start(pipe(tmp_path, "gpu0"))
    writes = sim.state()["counters"]["nvml_writes"]
    result, failed = run_module(mps.main, args(tmp_path, targets=["0"], default_active_thread_percentage=10,
                                               _ansible_check_mode=True))
    assert not failed and result["changed"]
    assert result["targets"][0]["settings"]["active_thread_percentage"] == 10.0
    assert result["targets"][0]["compute_mode"] == "exclusive_process"
    assert sim.state()["counters"]["nvml_writes"] == writes
    assert mps_daemons.ctl(pipe(tmp_path, "gpu0"), "get_default_active_thread_percentage") == "100.0\n"


def test_running_server_with_old_limits(sim, mps_daemons, tmp_path):
    sim.init("H100-SXM5-80GB", 1)
    where = pipe(tmp_path, "gpu0")
    mps_daemons.start(where, CUDA_MPS_ACTIVE_THREAD_PERCENTAGE="50")
    mps_daemons.client(where, 4242)
    server = mps_daemons.ctl(where, "get_server_list").strip()
    base = args(tmp_path, targets=["0"], default_active_thread_percentage=20, compute_mode="unchanged")

    result, failed = run_module(mps.main, base)
    assert not failed and result["changed"] and result["restart_required"]
    assert result["targets"][0]["servers"] == [{"pid": int(server), "active_thread_percentage": 50.0,
                                                "device_pinned_mem_limit": None, "clients": [4242], "stale": True}]
    assert mps_daemons.ctl(where, f"get_active_thread_percentage {server}") == "50.0\n"   # left alone

    result, failed = run_module(mps.main, {**base, "restart_servers": True})
    assert failed and "server %s" % server in result["msg"] and "4242" in result["msg"] and "force" in result["msg"]
    assert result["changed"] is False

    result, failed = run_module(mps.main, {**base, "restart_servers": True, "force": True})
    assert not failed and result["changed"] and result["restart_required"]   # the connected client keeps 50
    assert mps_daemons.ctl(where, f"get_active_thread_percentage {server}") == "20.0\n"
    result, failed = run_module(mps.main, {**base, "restart_servers": True, "force": True})
    assert not failed and not result["changed"] and not result["restart_required"]


def test_idle_stale_server_is_updated_without_force(sim, mps_daemons, tmp_path):
    sim.init("H100-SXM5-80GB", 1)
    where = pipe(tmp_path, "gpu0")
    mps_daemons.start(where)
    mps_daemons.ctl(where, "start_server -uid 0")
    server = mps_daemons.ctl(where, "get_server_list").strip()
    result, failed = run_module(mps.main, args(tmp_path, targets=["0"], default_device_pinned_mem_limit="2G",
                                               restart_servers=True, compute_mode="unchanged"))
    assert not failed and result["changed"] and not result["restart_required"]
    assert f"gpu0: server {server} device pinned memory limit none -> 2 GiB" in result["operations"]
    assert mps_daemons.ctl(where, f"get_device_pinned_mem_limit {server} 0") == "2G\n"


def test_absent_quits_and_refuses_with_clients(sim, mps_daemons, tmp_path):
    sim.init("H100-SXM5-80GB", 2)
    for name in ("gpu0", "gpu1"):
        mps_daemons.start(pipe(tmp_path, name))
    mps_daemons.client(pipe(tmp_path, "gpu1"), 77)
    result, failed = run_module(mps.main, args(tmp_path, state="absent"))
    assert failed and "gpu1" in result["msg"] and "77" in result["msg"]
    assert mps_daemons.ctl(pipe(tmp_path, "gpu0"), "get_server_list") == ""     # nothing stopped
    result, failed = run_module(mps.main, args(tmp_path, targets=["0"], state="absent", _ansible_diff=True))
    assert not failed and result["changed"] and result["targets"][0]["running"] is False
    assert "daemon: stopped" in result["diff"]["after"]
    assert not os.path.exists(os.path.join(pipe(tmp_path, "gpu0"), "control"))
    result, failed = run_module(mps.main, args(tmp_path, targets=["0"], state="absent"))
    assert not failed and not result["changed"]
    import time
    started = time.monotonic()
    result, failed = run_module(mps.main, args(tmp_path, targets=["1"], state="absent", force=True, timeout=1))
    assert not failed and result["changed"]
    assert result["operations"] == ["gpu1: quit the MPS control daemon (%s/control); servers still running after 1 s "
                                    "are shut down" % pipe(tmp_path, "gpu1")]
    assert time.monotonic() - started < 8          # quit -t 1: the client's server was shut down after 1 s
    assert not os.path.exists(os.path.join(pipe(tmp_path, "gpu1"), "control"))
    with open(os.path.join(tmp_path, "gpu1", "log", "control.log")) as fh:
        assert "Cmd:quit -t 1" in fh.read()


def test_plain_quit_waits_for_clients_so_absent_refuses_them(sim, mps_daemons, tmp_path):
    sim.init("H100-SXM5-80GB", 1)
    where = pipe(tmp_path, "gpu0")
    mps_daemons.start(where)
    mps_daemons.client(where, 88)
    result, failed = run_module(mps.main, args(tmp_path, targets=["0"], state="absent"))
    assert failed and "quit would wait until they finish" in result["msg"] and "quit -t" in result["msg"]
    assert mps_daemons.ctl(where, "get_client_list %s" % mps_daemons.ctl(where, "get_server_list").strip()) == "88\n"


def test_a_limit_the_daemon_rounds_is_set_once_and_warned_about(sim, mps_daemons, tmp_path, monkeypatch):
    from ansible.module_utils.basic import AnsibleModule
    warned = []
    monkeypatch.setattr(AnsibleModule, "warn", lambda self, text: warned.append(text))
    sim.init("H100-SXM5-80GB", 1)
    where = pipe(tmp_path, "gpu0")
    mps_daemons.start(where)
    request = args(tmp_path, targets=["0"], default_device_pinned_mem_limit="1536M", compute_mode="unchanged")
    first, failed = run_module(mps.main, request)
    assert not failed, first.get("msg")
    assert first["changed"] and first["operations"] == ["gpu0: default device pinned memory limit none -> 1536 MiB"]
    assert first["targets"][0]["settings"]["device_pinned_mem_limit"] == "1G"     # what the daemon reports
    assert mps_daemons.ctl(where, "get_default_device_pinned_mem_limit 0") == "1G\n"
    assert any("1536M reads back as 1G" in w for w in warned)
    second, failed = run_module(mps.main, request)
    assert not failed and not second["changed"]
    # a whole number of GiB is checked exactly: 2G is a change
    third, failed = run_module(mps.main, {**request, "default_device_pinned_mem_limit": "2G"})
    assert not failed and third["changed"]
    assert mps_daemons.ctl(where, "get_default_device_pinned_mem_limit 0") == "2G\n"


def test_a_limit_set_in_megabytes_by_another_tool_reads_back_in_gib(sim, mps_daemons, tmp_path):
    # NVIDIA's k8s-device-plugin sets e.g. 5120M; the daemon answers 5G: the same limit, no change
    sim.init("H100-SXM5-80GB", 1)
    mps_daemons.start(pipe(tmp_path, "gpu0"))
    mps_daemons.ctl(pipe(tmp_path, "gpu0"), "set_default_device_pinned_mem_limit 0 5120M")
    result, failed = run_module(mps.main, args(tmp_path, targets=["0"], default_device_pinned_mem_limit="5G",
                                               compute_mode="unchanged"))
    assert not failed and not result["changed"]
    assert result["targets"][0]["settings"]["device_pinned_mem_limit"] == "5G"


def test_no_daemon_without_manage_daemon_says_how_to_start_it(sim, mps_daemons, tmp_path):
    sim.init("H100-SXM5-80GB", 1)
    result, failed = run_module(mps.main, args(tmp_path, targets=["0"]))
    assert failed and "no MPS control daemon listens on" in result["msg"]
    assert "nvidia-mps@gpu0" in result["msg"] and "manage_daemon: true" in result["msg"]
    assert sim.state()["gpus"][0]["compute_mode"] == 0   # refused before any change
    assert result["targets"] == [] and result["operations"] == [] and result["restart_required"] is False


@pytest.mark.parametrize(("extra", "message"), [
    ({"default_device_pinned_mem_limit": "41G", "targets": ["0"]},
     "default_device_pinned_mem_limit='41G' (41 GiB) is more than the memory of gpu0"),
    ({"default_device_pinned_mem_limit": "4096"}, "did you mean 4096M?"),
    ({"default_device_pinned_mem_limit": "1.5G"}, "1536M instead of 1.5G"),
    ({"default_device_pinned_mem_limit": "4X"}, "give an integer with a unit"),
    ({"default_active_thread_percentage": 101}, "give a whole number from 1 to 100"),
    ({"default_active_thread_percentage": 0}, "default_active_thread_percentage=0 is not valid"),
    ({"default_client_priority": 2}, "default_client_priority"),
    ({"targets": ["7"]}, "target '7' matches no GPU or MIG device on this host; valid: 'all', 0, 1"),
    ({"targets": ["MIG-nope"]}, "target 'MIG-nope' matches no GPU"),
    ({"targets": [], "state": "present"}, "targets is empty"),
    ({"pipe_directory": "/run/mps"}, "gives '/run/mps' for both gpu0 and gpu1: each daemon needs its own"),
    ({"pipe_directory": "/run/" + "x" * 100 + "/{name}"}, "a Unix socket path can have at most 107"),
    ({"targets": ["0"], "pipe_directory": "/" + "x" * 88}, "/control_privileged' is 108 bytes"),
    ({"default_device_pinned_mem_limit": "0"}, "must be more than 0; to have no limit, leave it unset"),
    ({"default_device_pinned_mem_limit": "-1G"}, "default_device_pinned_mem_limit='-1G' must be more than 0"),
    ({"default_device_pinned_mem_limit": "4.5G"}, "4608M instead of 4.5G"),
    ({"default_device_pinned_mem_limit": "4T", "targets": ["0"]}, "(4096 GiB) is more than the memory of gpu0"),
    ({"default_active_thread_percentage": "25.5"}, "default_active_thread_percentage"),
    ({"default_client_priority": -1}, "default_client_priority"),
    ({"pipe_directory": "relative/{name}"}, "must be an absolute path"),
    ({"log_directory": "/var/log/{nope}"}, "log_directory='/var/log/{nope}' cannot be expanded"),
    ({"compute_mode": "exclusive_thread"}, "value of compute_mode must be one of"),
])
def test_bad_requests_fail_before_any_change(sim, mps_daemons, tmp_path, extra, message):
    sim.init("A100-SXM4-40GB", 2)
    request = {**args(tmp_path, manage_daemon=True), **extra}
    result, failed = run_module(mps.main, request)
    assert failed
    assert message in result["msg"]
    assert sim.state()["counters"]["nvml_writes"] == 0
    assert not any(os.path.exists(pipe(tmp_path, n)) for n in ("gpu0", "gpu1"))


def test_a_gpu_in_mig_mode_is_not_a_target(sim, mps_daemons, tmp_path):
    mig_host(sim, spec="19")
    result, failed = run_module(mps.main, args(tmp_path, targets=["0"], manage_daemon=True))
    assert failed
    assert "GPU 0 (NVIDIA A100-SXM4-40GB" in result["msg"] and "is in MIG mode" in result["msg"]
    assert "gpu0-mig" in result["msg"] and "MIG-" in result["msg"]


def test_limit_above_a_mig_device_memory(sim, mps_daemons, tmp_path):
    mig_host(sim, spec="19")   # 1g.5gb
    result, failed = run_module(mps.main, args(tmp_path, manage_daemon=True, default_device_pinned_mem_limit="8G"))
    assert failed and "more than the memory of gpu0-mig" in result["msg"] and "give at most" in result["msg"]


def test_mig_gpu_without_devices_is_a_warning_for_all(sim, mps_daemons, tmp_path, monkeypatch):
    from ansible.module_utils.basic import AnsibleModule
    warned = []
    monkeypatch.setattr(AnsibleModule, "warn", lambda self, text: warned.append(text))
    sim.init("A100-SXM4-40GB", 1, "--mig-enabled")
    result, failed = run_module(mps.main, args(tmp_path, manage_daemon=True))
    assert not failed and result["targets"] == [] and not result["changed"]
    assert len(warned) == 1 and "GPU 0" in warned[0] and "MIG mode without MIG devices" in warned[0]


def test_daemon_killed_leaves_socket_module_starts_a_new_one(sim, mps_daemons, tmp_path):
    import signal
    import time
    sim.init("H100-SXM5-80GB", 1)
    where = pipe(tmp_path, "gpu0")
    mps_daemons.start(where)
    with open(os.path.join(where, "nvidia-cuda-mps-control.pid")) as fh:
        os.kill(int(fh.read()), signal.SIGKILL)
    time.sleep(0.2)
    result, failed = run_module(mps.main, args(tmp_path, targets=["0"], manage_daemon=True, compute_mode="unchanged"))
    assert not failed and result["changed"]
    assert result["operations"][0].startswith("gpu0: start the MPS control daemon")
    assert mps_daemons.ctl(where, "get_default_client_priority") == "0\n"


# ------------------------------------------------------------------ the control client seam, with scripted replies

def _control(replies: dict, tmp_path):
    """A Control whose nvidia-cuda-mps-control answers from ``replies`` (command -> (rc, stdout))."""
    from ansible_collections.gpuops.sharing.plugins.module_utils import _mps, _mps_host
    sock = tmp_path / "pipe" / "control"
    sock.parent.mkdir()
    sock.write_text("")
    target = {"name": "gpu0", "control_socket": str(sock), "pipe_directory": str(sock.parent)}
    sent = []

    def run(argv, data, env):
        commands = [c for c in (data or "").splitlines() if c]
        sent.append(commands)
        out, rc = "", 0
        for command in commands:
            code, text = replies.get(command, (0, "Unknown command\n"))
            out, rc = out + text, max(rc, code)
        return rc, out, ""
    return _mps_host.Control(run, "nvidia-cuda-mps-control", target), sent, _mps


def test_an_older_daemon_without_client_priorities_is_still_managed(tmp_path):
    control, sent, _mps = _control({"get_default_active_thread_percentage": (0, "25.0\n"),
                                    "get_default_device_pinned_mem_limit 0": (0, "4G\n"),
                                    "get_server_list": (0, "")}, tmp_path)
    observed = control.observe({"active_thread_percentage": 25, "device_pinned_mem_limit_mib": 4096,
                                "client_priority": None})
    assert observed["defaults"] == {"active_thread_percentage": 25.0, "device_pinned_mem_limit_mib": 4096,
                                    "client_priority": None}
    assert len(sent) == 5   # the batch, then each command on its own
    assert "default_client_priority: unknown" in _mps.describe({"name": "gpu0", "uuid": "GPU-0", "kind": "mig"},
                                                               observed, None)


def test_a_requested_setting_the_daemon_does_not_know_fails_with_its_reply(tmp_path):
    from ansible_collections.gpuops.sharing.plugins.module_utils import _mps_host
    control, _sent, _mps = _control({"get_default_active_thread_percentage": (0, "25.0\n"),
                                     "get_default_device_pinned_mem_limit 0": (0, "4G\n"),
                                     "get_server_list": (0, "")}, tmp_path)
    with pytest.raises(_mps_host.DaemonError) as exc:
        control.observe({"client_priority": 1})
    assert "get_default_client_priority: 'Unknown command' is not a client priority" in str(exc.value)
    assert "lacks the command" in str(exc.value)


def test_the_no_daemon_text_means_not_running(tmp_path):
    control, _sent, _mps = _control({}, tmp_path)
    control.run = lambda argv, data, env: (1, "Cannot find MPS control daemon process\n", "")
    assert control.observe({}) == _mps.not_running()
