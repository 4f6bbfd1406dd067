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
    # no config_dir: the summary names the pipe directory clients set
    assert first["summary"] == [f"{t['name']} ({t['uuid']}): running, threads 25.0%, memory 4G per client; clients: "
                                f"CUDA_MPS_PIPE_DIRECTORY={t['pipe_directory']}" for t in first["targets"]]
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
    assert result["targets"] == [] and result["restart_required"] is False
    # the refused plan is reported, nothing of it was done
    assert result["operations"] == ["gpu0: set compute mode of GPU 0 (%s) to EXCLUSIVE_PROCESS"
                                    % sim.state()["gpus"][0]["uuid"]]
    assert result["done"] == [] and result["changed"] is False


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
    ({"log_directory": "/var/log/{nope}"}, "log_directory='/var/log/{nope}' uses the field {nope}: only {name} and "
     "{uuid} can be replaced"),
    # nothing that a shell, a unit or an env file would read as more than a path (issue 10, defect 8)
    ({"pipe_directory": "/run/mps/{name.__class__.__name__}"},
     "pipe_directory='/run/mps/{name.__class__.__name__}' uses the field {name.__class__.__name__}: only {name} and "
     "{uuid} can be replaced"),
    ({"pipe_directory": "/run/mps/{name!r}"}, "uses the field {name!r}: only {name} and {uuid}"),
    ({"pipe_directory": "/run/mps/{uuid:>40}"}, "uses the field {uuid:>40}: only {name} and {uuid}"),
    ({"pipe_directory": "/run/mps/{gpu}"}, "uses the field {gpu}: only {name} and {uuid}"),
    ({"pipe_directory": "/run/mps/{0}"}, "uses the field {0}: only {name} and {uuid}"),
    ({"pipe_directory": "/run/$(touch /tmp/pwned)/{name}"},
     "pipe_directory='/run/$(touch /tmp/pwned)/{name}' contains space, '$', '(', ')': a directory may contain only "
     "letters, digits, '.', '_', '-' and '/', and the fields {name} and {uuid}"),
    ({"log_directory": "/var/log/mps `id`/{name}"}, "contains space, backquote: a directory may contain only"),
    ({"log_directory": "/var/log/mps\nX=1/{name}"}, "contains newline, '=': a directory may contain only"),
    ({"pipe_directory": "/run/'mps'/{name}"}, "contains quote: a directory may contain only"),
    ({"pipe_directory": '/run/"mps"/{name}'}, "contains double quote: a directory may contain only"),
    ({"pipe_directory": "/run/mps;reboot/{name}"}, "contains ';': a directory may contain only"),
    ({"pipe_directory": "/run/{name"}, "contains '{': a directory may contain only"),
    ({"pipe_directory": "/run/../etc/{name}"}, "contains '..': give the directory without parent references"),
    ({"timeout": 0}, "timeout=0.0 is not valid; give the seconds to wait"),
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


def test_a_stopped_daemon_fails_within_the_timeout(sim, mps_daemons, tmp_path):
    # issue 10, defect 8: a daemon stopped with kill -STOP accepts connections and never answers
    import signal
    import time
    sim.init("H100-SXM5-80GB", 2)
    for name in ("gpu0", "gpu1"):
        mps_daemons.start(pipe(tmp_path, name))
    with open(os.path.join(pipe(tmp_path, "gpu1"), "nvidia-cuda-mps-control.pid")) as fh:
        pid = int(fh.read())
    os.kill(pid, signal.SIGSTOP)
    try:
        started = time.monotonic()
        # 3 s: time enough for the daemon that answers, on a loaded machine
        result, failed = run_module(mps.main, args(tmp_path, default_active_thread_percentage=30, timeout=3,
                                                   compute_mode="unchanged"))
        took = time.monotonic() - started
    finally:
        os.kill(pid, signal.SIGCONT)
    assert failed and took < 30, took      # 3 s per command, not forever
    assert result["msg"].startswith("gpu1: the MPS control daemon on %s/control did not answer "
                                    % pipe(tmp_path, "gpu1"))
    assert "within 3 s (option timeout)" in result["msg"] and "stopped (SIGSTOP) or hung" in result["msg"]
    # a failed read is an error, not "no daemon": nothing was changed on the daemon that did answer
    assert not result["changed"] and result["done"] == []
    assert mps_daemons.ctl(pipe(tmp_path, "gpu0"), "get_default_active_thread_percentage") == "100.0\n"


def test_every_refusal_of_every_target_before_the_first_write(sim, mps_daemons, tmp_path):
    sim.init("H100-SXM5-80GB", 2)
    for name, pid in (("gpu0", 31), ("gpu1", 32)):
        mps_daemons.start(pipe(tmp_path, name), CUDA_MPS_ACTIVE_THREAD_PERCENTAGE="50")
        mps_daemons.client(pipe(tmp_path, name), pid)
    result, failed = run_module(mps.main, args(tmp_path, default_active_thread_percentage=20, restart_servers=True))
    assert failed and not result["changed"] and result["done"] == []
    assert "gpu0: MPS server" in result["msg"] and "(31)" in result["msg"]
    assert "gpu1: MPS server" in result["msg"] and "(32)" in result["msg"]
    assert len(result["operations"]) >= 4        # the refused plan: compute modes and defaults of both GPUs
    assert sim.state()["gpus"][0]["compute_mode"] == 0 and sim.state()["gpus"][1]["compute_mode"] == 0
    for name in ("gpu0", "gpu1"):
        assert mps_daemons.ctl(pipe(tmp_path, name), "get_default_active_thread_percentage") == "50.0\n"


def test_done_lists_what_completed_before_a_failure(sim, mps_daemons, tmp_path):
    sim.init("H100-SXM5-80GB", 2)
    for name in ("gpu0", "gpu1"):
        mps_daemons.start(pipe(tmp_path, name))
    # gpu1's daemon goes away between the plan and its operation: the compute modes and gpu0 were done
    from ansible_collections.gpuops.sharing.plugins.module_utils import _mps_host
    real_set = _mps_host.Control.set

    def set_then_stop(self, line):
        if self.target["name"] == "gpu1":
            raise _mps_host.DaemonError("gpu1: the MPS control daemon refused " + line + ": gone")
        return real_set(self, line)
    import pytest as _pytest
    with _pytest.MonkeyPatch.context() as mp:
        mp.setattr(_mps_host.Control, "set", set_then_stop)
        result, failed = run_module(mps.main, args(tmp_path, default_active_thread_percentage=40))
    assert failed and result["changed"] is True
    uuids = [g["uuid"] for g in sim.state()["gpus"]]
    assert result["done"] == [f"gpu0: set compute mode of GPU 0 ({uuids[0]}) to EXCLUSIVE_PROCESS",
                              f"gpu1: set compute mode of GPU 1 ({uuids[1]}) to EXCLUSIVE_PROCESS",
                              "gpu0: default active thread percentage 100 -> 40"]
    assert "Completed before the failure" in result["msg"]
    again, failed = run_module(mps.main, args(tmp_path, default_active_thread_percentage=40))
    assert not failed and again["operations"] == ["gpu1: default active thread percentage 100 -> 40"]


# ------------------------------------------------------------------ units (systemd: one call per host, issue 11)

FAKE_SYSTEMCTL = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
                              "fake_systemctl.py")


@pytest.fixture
def units(tmp_path, monkeypatch, sim):
    """A host with systemd for the module: the fake systemctl, a unit directory and a config directory."""
    unit_dir, config_dir, bindir = tmp_path / "units", tmp_path / "etc", tmp_path / "fakebin"
    unit_dir.mkdir()
    bindir.mkdir()
    (bindir / "systemctl").write_text(f'#!/bin/sh\nexec {sys.executable} {FAKE_SYSTEMCTL} "$@"\n')
    (bindir / "systemctl").chmod(0o755)
    monkeypatch.setenv("PATH", str(bindir) + os.pathsep + os.environ["PATH"])
    monkeypatch.setenv("FAKE_SYSTEMCTL_STATE", str(tmp_path / "systemctl.json"))
    monkeypatch.setenv("FAKE_SYSTEMCTL_UNIT_DIR", str(unit_dir))
    # gpuops-mps-exec runs from what the module installed, nothing else of the collection on its path
    monkeypatch.delenv("GPUOPS_SHARING_LIB", raising=False)
    monkeypatch.setenv("PYTHONPATH", SIMULATOR)      # gpusim's pynvml for gpuops-mps-exec, as on the fleet hosts
    control = os.path.join(SIMULATOR, "bin", "nvidia-cuda-mps-control")

    def request(**extra):
        return {**args(tmp_path), "config_dir": str(config_dir), "prune": True,
                "systemd": {"unit_dir": str(unit_dir), "python": sys.executable, "control_binary": control,
                            "install_dir": str(tmp_path / "lib" / "mps"),
                            "smi_binary": os.path.join(SIMULATOR, "bin", "nvidia-smi")}, **extra}

    def calls():
        import json
        with open(tmp_path / "systemctl.json") as fh:
            return [c for c in json.load(fh)["calls"] if c[0] != "show"]

    return request, unit_dir, config_dir, calls


def test_units_one_batch_then_no_change_then_pruned_and_removed(sim, mps_daemons, tmp_path, units):
    request, unit_dir, config_dir, calls = units
    mig_host(sim, spec="19,19,19")
    want = request(default_active_thread_percentage=25, default_device_pinned_mem_limit="2G")
    check, failed = run_module(mps.main, {**want, "_ansible_check_mode": True})
    assert not failed, check["msg"]
    assert check["changed"] and check["done"] == [] and not os.path.exists(config_dir)
    names = [t["name"] for t in check["targets"]]
    assert len(names) == 3 and all(t["unit"] == f"nvidia-mps@{t['name']}.service" for t in check["targets"])
    assert check["operations"][-1] == "enable and start " + ", ".join(f"nvidia-mps@{n}.service" for n in names)

    first, failed = run_module(mps.main, want)
    assert not failed, first["msg"]
    assert first["changed"] and first["done"] == check["operations"]
    # one systemctl call starts every daemon
    assert calls() == [["daemon-reload"], ["enable", "--now", "--", *(f"nvidia-mps@{n}.service" for n in names)]]
    for target in first["targets"]:
        assert target["running"] and target["settings"]["active_thread_percentage"] == 25.0
        # the daemon of a MIG device found its device by placement (gpuops-mps-exec, from the env file)
        assert mps_daemons.ctl(target["pipe_directory"], "get_default_device_pinned_mem_limit 0") == "2G\n"
    # the summary the role prints: one line per target
    target = first["targets"][0]
    assert first["summary"][0] == (f"{names[0]} ({target['uuid']}): running, threads 25.0%, memory 2G per client; "
                                   f"clients: set -a; . {config_dir}/{names[0]}.env; set +a")
    assert len(first["summary"]) == len(names)
    # the code the units start: gpuops-mps-exec and its import closure, stamped, before the units started
    boot = first["boot"]
    lib = tmp_path / "lib" / "mps"
    assert boot["entry_point"] == str(lib / "gpuops-mps-exec") and boot["version"] == "gpuops.sharing 0.1.0"
    assert first["done"].index(f"install the boot code file {lib / 'gpuops-mps-exec'}") < first["done"].index(
        check["operations"][-1])
    shipped = {os.path.basename(p) for p in boot["files"]}
    assert {"_mps_exec.py", "_nvml.py", "_host.py", "VERSION", "gpuops-mps-exec"} <= shipped
    assert "_mps.py" not in shipped and "_mig_plan.py" not in shipped     # only what gpuops-mps-exec imports
    assert (lib / "VERSION").read_text().splitlines()[2] == "files " + " ".join(
        sorted(n for n in shipped if n.endswith(".py")))
    conf = (config_dir / f"{names[0]}.conf").read_text()
    assert conf.startswith("# Managed by gpuops.sharing.mps") and "GPUOPS_MPS_GPU_INSTANCE_START=" in conf
    assert "CUDA_VISIBLE_DEVICES" not in conf
    assert (unit_dir / "nvidia-mps@.service").read_text().count("EnvironmentFile=%s/%%i.conf" % config_dir) == 1

    again, failed = run_module(mps.main, want)
    assert not failed and not again["changed"] and again["operations"] == [] and again["done"] == []
    again, failed = run_module(mps.main, {**want, "_ansible_check_mode": True})
    assert not failed and not again["changed"]

    # a MIG re-layout removes the last MIG device: its unit and files go in the same run
    gone = names[-1]
    gi = max(sim.state()["gpus"][0]["gpu_instances"], key=lambda g: g["start"])
    for argv in (["mig", "-i", "0", "-dci", "-gi", str(gi["id"])], ["mig", "-i", "0", "-dgi", "-gi", str(gi["id"])]):
        done = subprocess.run(SMI + argv, capture_output=True, text=True, check=False)
        assert done.returncode == 0, done.stdout + done.stderr
    before = len(calls())
    pruned, failed = run_module(mps.main, want)
    assert not failed, pruned["msg"]
    assert f"stop and disable nvidia-mps@{gone}.service" in pruned["done"]
    assert calls()[before:] == [["disable", "--now", "--", f"nvidia-mps@{gone}.service"]]
    assert not (config_dir / f"{gone}.conf").exists() and not (config_dir / f"{gone}.env").exists()
    assert [t["name"] for t in pruned["targets"]] == names[:-1]

    # state=absent with prune: nothing the module installed remains
    removed, failed = run_module(mps.main, {**want, "state": "absent", "force": True})
    assert not failed, removed["msg"]
    assert not config_dir.exists() and os.listdir(unit_dir) == []
    assert not (tmp_path / "lib" / "mps").exists() and removed["boot"] is None
    assert removed["done"][-1] == (f"remove {tmp_path / 'lib' / 'mps'} and {config_dir} (the directories the module "
                                   f"made, where empty)")
    assert all(not t["running"] for t in removed["targets"])
    assert calls()[-2:] == [["disable", "--now", "--", *(f"nvidia-mps@{n}.service" for n in names[:-1])],
                            ["daemon-reload"]]
    again, failed = run_module(mps.main, {**want, "state": "absent"})
    assert not failed and not again["changed"]


def test_units_env_files_quote_and_refuse_symlinks(sim, mps_daemons, tmp_path, units):
    request, unit_dir, config_dir, calls = units
    sim.init("H100-SXM5-80GB", 1)
    config_dir.mkdir()
    (config_dir / "gpu0.env").symlink_to(tmp_path / "elsewhere")
    result, failed = run_module(mps.main, request(compute_mode="unchanged"))
    assert failed and not result["changed"]
    assert result["msg"] == (f"{config_dir}/gpu0.env is a symlink; the module writes and removes only regular files "
                             f"there: remove it or choose another config_dir")
    assert not (tmp_path / "elsewhere").exists()
    (config_dir / "gpu0.env").unlink()
    (config_dir / "gpu0.env").write_text("CUDA_MPS_PIPE_DIRECTORY=/mine\n")     # an admin's own file
    result, failed = run_module(mps.main, request(compute_mode="unchanged"))
    assert failed and "gpu0.env exists and is not a file the module wrote" in result["msg"]
    (config_dir / "gpu0.env").unlink()
    result, failed = run_module(mps.main, request(compute_mode="unchanged"))
    assert not failed, result["msg"]
    client = (config_dir / "gpu0.env").read_text()
    shown = subprocess.run(["/bin/sh", "-c", f'set -a; . "{config_dir}/gpu0.env"; printf %s "$CUDA_MPS_PIPE_DIRECTORY"'],
                           capture_output=True, text=True, check=True).stdout
    assert shown == pipe(tmp_path, "gpu0") and f"CUDA_MPS_PIPE_DIRECTORY={pipe(tmp_path, 'gpu0')}\n" in client


@pytest.mark.parametrize(("extra", "message"), [
    ({"manage_daemon": True}, "manage_daemon: true and systemd: the daemons run either under their systemd units"),
    ({"config_dir": "/etc/mps $(id)"}, "config_dir='/etc/mps $(id)' is not valid: give an absolute path of letters"),
    ({"systemd": {"unit_name": "nvidia mps"}}, "systemd.unit_name='nvidia mps' is not a unit name"),
    ({"systemd": {"python": "python3"}}, "systemd.python='python3' is not valid: give an absolute path"),
    ({"systemd": {"after": ["a.service;b"]}}, "systemd.after: 'a.service;b' is not a unit name"),
    ({"systemd": {"stop_timeout": 0}}, "systemd.stop_timeout=0 is not valid; give whole seconds from 1 to 3600"),
    ({"systemd": None, "config_dir": None, "prune": True},
     "prune: true removes the units and files of targets that no longer exist; it needs the systemd option or a "
     "config_dir"),
])
def test_bad_unit_settings(sim, mps_daemons, tmp_path, units, extra, message):
    request = units[0]
    sim.init("H100-SXM5-80GB", 1)
    base = request()
    if extra.get("systemd"):
        extra = {**extra, "systemd": {**base["systemd"], **extra["systemd"]}}
    result, failed = run_module(mps.main, {**base, **extra})
    assert failed and message in result["msg"], result["msg"]
    assert result["done"] == [] and not result["changed"]


def test_client_env_files_without_systemd(sim, mps_daemons, tmp_path):
    sim.init("H100-SXM5-80GB", 2)
    config_dir = tmp_path / "etc"
    request = args(tmp_path, manage_daemon=True, compute_mode="unchanged", config_dir=str(config_dir), prune=True)
    first, failed = run_module(mps.main, request)
    assert not failed, first["msg"]
    assert sorted(os.listdir(config_dir)) == ["gpu0.env", "gpu1.env"]       # no units, no daemon env files
    assert first["done"][:2] == [f"write {config_dir}/gpu0.env (what clients of gpu0 source)",
                                 f"write {config_dir}/gpu1.env (what clients of gpu1 source)"]
    again, failed = run_module(mps.main, request)
    assert not failed and not again["changed"]
    narrowed, failed = run_module(mps.main, {**request, "targets": ["0"]})     # gpu1 is no target any more
    assert not failed and narrowed["done"] == [f"remove {config_dir}/gpu1.env (gpu1 no longer exists)"]
    assert os.listdir(config_dir) == ["gpu0.env"]
