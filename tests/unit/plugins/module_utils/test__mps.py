"""_mps: limits, replies, targets, directories and plans (pure, no daemon)."""

from __future__ import annotations

import copy

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ansible_collections.gpuops.sharing.plugins.module_utils import _mps

# ------------------------------------------------------------------------------------------ sizes


@pytest.mark.parametrize(("value", "mib"), [
    ("4G", 4096), ("4g", 4096), ("4GiB", 4096), ("4GB", 4096), ("4096M", 4096), ("4096MiB", 4096), ("4096MB", 4096),
    (" 512M ", 512), ("1536M", 1536), ("1T", 1024 * 1024),
])
def test_parse_size(value, mib):
    assert _mps.parse_size(value) == mib


@pytest.mark.parametrize(("value", "message"), [
    ("4096", "a number without a unit is ambiguous: did you mean 4096M?"),
    ("1.5G", "use whole numbers: 1536M instead of 1.5G"),
    ("4X", "default_device_pinned_mem_limit='4X' is not a memory size"),
    ("4.5G", "use whole numbers: 4608M instead of 4.5G"),
    ("4,5G", "use whole numbers: 4608M instead of 4,5G"),
    ("1.3M", "use whole numbers of M or G: the daemon takes no fractions"),
    ("G", "is not a memory size"),
    ("-1G", "default_device_pinned_mem_limit='-1G' must be more than 0"),
    ("-4096M", "must be more than 0"),
    ("0G", "must be more than 0; to have no limit, leave it unset"),
    ("0", "default_device_pinned_mem_limit='0' must be more than 0; to have no limit, leave it unset"),
    ("0M", "must be more than 0; to have no limit, leave it unset"),
    ("4 PB", "is not a memory size"),
    ("", "is not a memory size"),
])
def test_bad_sizes_say_what_would_be_valid(value, message):
    with pytest.raises(_mps.MpsError) as exc:
        _mps.parse_size(value)
    assert message in str(exc.value)
    assert "4G or 4096M" in str(exc.value) or "leave it unset" in str(exc.value)


@pytest.mark.parametrize(("mib", "reported"), [(512, 512), (1023, 1023), (1024, 1024), (1044, 1024), (1536, 1024),
                                               (5120, 5120), (4608, 4096), (None, None)])
def test_limits_are_compared_at_the_precision_the_daemon_reports(mib, reported):
    # real daemons: 5120M reads back 5G, 1044M reads back 1G
    assert _mps.as_reported(mib) == reported
    assert _mps.exactly_reported(mib) == (mib == reported)


def test_a_limit_that_reads_back_rounded_is_warned_about():
    assert _mps.limit_warnings(4096, "4G") == [] and _mps.limit_warnings(900, "900M") == []
    [warning] = _mps.limit_warnings(1536, "1536M")
    assert "1536M reads back as 1G" in warning and "give a whole number of GiB (1G or 2G)" in warning


@pytest.mark.parametrize(("mib", "text", "human"), [(4096, "4G", "4 GiB"), (1536, "1536M", "1536 MiB"),
                                                    (1, "1M", "1 MiB"), (None, None, "none")])
def test_format_size_is_the_daemons_form(mib, text, human):
    if mib is not None:
        assert _mps.format_size(mib) == text
    assert _mps.human_size(mib) == human


@given(st.integers(min_value=1, max_value=10 ** 7))
def test_size_round_trips_through_the_daemons_form(mib):
    assert _mps.parse_size(_mps.format_size(mib)) == mib
    assert _mps.parse_limit_reply(_mps.format_size(mib) + "\n") == mib


@pytest.mark.parametrize("value", [0, 101, -5, True, "50"])
def test_bad_percentages(value):
    with pytest.raises(_mps.MpsError, match="from 1 to 100"):
        _mps.validate_percentage(value)


# ------------------------------------------------------------------------------------------ replies

@pytest.mark.parametrize(("text", "value"), [("25.0\n", 25.0), ("100.0", 100.0), ("33.3\n", 33.3), ("50\n", 50.0)])
def test_percentage_replies_are_floats(text, value):
    assert _mps.parse_percentage_reply(text) == value


@pytest.mark.parametrize(("text", "value"), [("3G\n", 3072), ("4096M\n", 4096), ("0\n", None), ("0M", None)])
def test_limit_replies(text, value):
    assert _mps.parse_limit_reply(text) == value


@pytest.mark.parametrize(("parse", "text"), [
    (_mps.parse_percentage_reply, "Invalid command\n"), (_mps.parse_percentage_reply, ""),
    (_mps.parse_percentage_reply, "25.0\n3G\n"), (_mps.parse_percentage_reply, "0.0"),
    (_mps.parse_limit_reply, "lots\n"), (_mps.parse_priority_reply, "2\n"), (_mps.parse_pid_list, "12\nnope\n"),
])
def test_unexpected_replies_raise(parse, text):
    with pytest.raises(_mps.ReplyError):
        parse(text)


def test_pid_lists_and_no_daemon():
    assert _mps.parse_pid_list("") == []
    assert _mps.parse_pid_list("12\n13\n") == [12, 13]
    assert _mps.parse_pid_list("30112 30119 30204\n") == [30112, 30119, 30204]
    assert _mps.is_no_daemon("Cannot find MPS control daemon process\n")


@pytest.mark.parametrize(("text", "value"), [("5G\n", 5120), ("1G\n", 1024), ("900M\n", 900), ("12.0\n", None)])
def test_replies_of_real_daemons(text, value):
    # a k8s-device-plugin daemon (5120M per client, 12 % threads) answers 5G and 12.0
    if value is None:
        assert _mps.parse_percentage_reply(text) == 12.0
    else:
        assert _mps.parse_limit_reply(text) == value


# ------------------------------------------------------------------------------------------ targets

def gpu(index, mig=None, memory=40960, mode="default"):
    return {"index": index, "uuid": f"GPU-{index:04d}", "name": "NVIDIA A100-SXM4-40GB", "memory_total_mib": memory,
            "compute_mode": mode, "mig_enabled": mig is not None, "mig_devices": mig or []}


def mig_dev(n, gi_start, ci_start=0, memory=4864):
    return {"uuid": f"MIG-{n:04d}", "gpu_instance_start": gi_start, "compute_instance_start": ci_start,
            "gpu_instance_id": 7 + gi_start, "compute_instance_id": 0, "memory_total_mib": memory}


HOST = [gpu(0), gpu(1, mig=[mig_dev(10, 0), mig_dev(11, 4, 1)]), gpu(2, mig=[])]


def names(targets):
    return [t["name"] for t in targets]


def test_all_is_every_plain_gpu_and_every_mig_device():
    targets, warnings = _mps.resolve_targets(["all"], HOST)
    assert names(targets) == ["gpu0", "gpu1-mig0.0", "gpu1-mig4.1"]
    assert [t["uuid"] for t in targets] == ["GPU-0000", "MIG-0010", "MIG-0011"]
    assert targets[1]["gpu_uuid"] == "GPU-0001" and targets[1]["compute_mode"] is None
    assert warnings == ["GPU 2 (GPU-0002) is in MIG mode without MIG devices: no MPS daemon for it "
                        "(create the MIG devices first)"]


@pytest.mark.parametrize("asked", [["0"], ["GPU-0000"], ["gpu0"], ["0", "gpu0", "all"][:2]])
def test_a_gpu_by_index_uuid_or_name(asked):
    assert names(_mps.resolve_targets(asked, HOST)[0]) == ["gpu0"]


@pytest.mark.parametrize("asked", ["MIG-0011", "gpu1-mig4.1"])
def test_a_mig_device_by_uuid_or_stable_name(asked):
    assert names(_mps.resolve_targets([asked], HOST)[0]) == ["gpu1-mig4.1"]


def test_mig_gpu_itself_is_refused_with_its_devices():
    with pytest.raises(_mps.MpsError) as exc:
        _mps.resolve_targets(["1"], HOST)
    assert "GPU 1 (NVIDIA A100-SXM4-40GB, GPU-0001) is in MIG mode" in str(exc.value)
    assert "gpu1-mig0.0 (MIG-0010), gpu1-mig4.1 (MIG-0011)" in str(exc.value)


def test_unknown_target_lists_the_valid_ones():
    with pytest.raises(_mps.MpsError) as exc:
        _mps.resolve_targets(["GPU-9999"], HOST)
    assert "valid: 'all', 0, 1, 2, GPU-0000" in str(exc.value) and "gpu1-mig4.1" in str(exc.value)


def test_directories_defaults_and_socket_limit():
    targets = _mps.resolve_targets(["all"], HOST)[0]
    _mps.assign_directories(targets, _mps.DEFAULT_PIPE_DIRECTORY, _mps.DEFAULT_LOG_DIRECTORY)
    assert targets[1]["pipe_directory"] == "/run/nvidia-mps/gpu1-mig0.0"
    assert targets[1]["control_socket"] == "/run/nvidia-mps/gpu1-mig0.0/control"
    assert targets[1]["log_directory"] == "/var/log/nvidia-mps/gpu1-mig0.0"
    # 107 bytes fit (108 with the NUL), 108 do not; the longest socket is <pipe>/control_privileged
    fits = "/" + "p" * (107 - len("/control_privileged") - 1)
    assert len(fits) == 88
    _mps.assign_directories(targets[:1], fits, "/var/log/x")
    assert targets[0]["control_socket"] == fits + "/control"
    with pytest.raises(_mps.MpsError) as exc:
        _mps.assign_directories(targets[:1], fits + "p", "/var/log/x")
    assert "the daemon's socket '/%s/control_privileged' is 108 bytes and a Unix socket path can have at most 107" \
        % ("p" * 88) in str(exc.value)
    assert "use a pipe_directory of at most 88 bytes" in str(exc.value)


def test_uuid_placeholder_and_shared_directory():
    targets = _mps.resolve_targets(["all"], HOST)[0]
    _mps.assign_directories(targets, "/run/mps/{uuid}", "/var/log/mps/{gpu}")
    assert targets[2]["pipe_directory"] == "/run/mps/MIG-0011" and targets[2]["log_directory"] == "/var/log/mps/1"
    with pytest.raises(_mps.MpsError, match="for both gpu1-mig0.0 and gpu1-mig4.1"):
        _mps.assign_directories(targets, "/run/mps/{gpu}", "/var/log/mps/{name}")


def test_limit_must_fit_every_target():
    targets = _mps.resolve_targets(["all"], HOST)[0]
    _mps.validate_limit_fits(targets, 4864, "4864M")
    with pytest.raises(_mps.MpsError) as exc:
        _mps.validate_limit_fits(targets, 5120, "5G")
    assert str(exc.value) == ("default_device_pinned_mem_limit='5G' (5 GiB) is more than the memory of gpu1-mig0.0 "
                              "(MIG-0010, 4864 MiB), gpu1-mig4.1 (MIG-0011, 4864 MiB); give at most 4864M")


def test_environments():
    target = _mps.resolve_targets(["gpu1-mig4.1"], HOST)[0][0]
    _mps.assign_directories([target], _mps.DEFAULT_PIPE_DIRECTORY, _mps.DEFAULT_LOG_DIRECTORY)
    env = _mps.daemon_environment(target, {"active_thread_percentage": 25, "device_pinned_mem_limit_mib": 2048,
                                           "client_priority": None})
    assert env == {"CUDA_VISIBLE_DEVICES": "MIG-0011", "CUDA_MPS_PIPE_DIRECTORY": "/run/nvidia-mps/gpu1-mig4.1",
                   "CUDA_MPS_LOG_DIRECTORY": "/var/log/nvidia-mps/gpu1-mig4.1",
                   "CUDA_MPS_ACTIVE_THREAD_PERCENTAGE": "25", "CUDA_MPS_PINNED_DEVICE_MEM_LIMIT": "0=2G"}
    assert _mps.client_environment(target) == {"CUDA_MPS_PIPE_DIRECTORY": "/run/nvidia-mps/gpu1-mig4.1",
                                               "CUDA_MPS_LOG_DIRECTORY": "/var/log/nvidia-mps/gpu1-mig4.1"}


# ------------------------------------------------------------------------------------------ plans

def target(kind="gpu", mode="default"):
    t = _mps.resolve_targets(["gpu0" if kind == "gpu" else "gpu1-mig0.0"], HOST)[0][0]
    t["compute_mode"] = mode if kind == "gpu" else None
    _mps.assign_directories([t], _mps.DEFAULT_PIPE_DIRECTORY, _mps.DEFAULT_LOG_DIRECTORY)
    return t


def running(pct=100.0, limit=None, priority=0, servers=()):
    return {"running": True, "defaults": {"active_thread_percentage": pct, "device_pinned_mem_limit_mib": limit,
                                          "client_priority": priority}, "servers": list(servers)}


def server(pid=500, pct=100.0, limit=None, clients=()):
    return {"pid": pid, "active_thread_percentage": pct, "device_pinned_mem_limit_mib": limit, "clients": list(clients)}


OPTS = {"state": "present", "manage_daemon": False, "restart_servers": False, "force": False,
        "compute_mode": "unchanged"}
WANT = {"active_thread_percentage": 25, "device_pinned_mem_limit_mib": 4096, "client_priority": 1}


def ops(plan):
    return [_mps.command(op) if op["op"] not in ("start", "compute_mode") else op["op"]
            for op in plan["operations"]]


@pytest.mark.parametrize(("observed", "options", "expected", "restart"), [
    (running(25.0, 4096, 1), {}, [], False),
    (running(), {}, ["set_default_active_thread_percentage 25", "set_default_device_pinned_mem_limit 0 4G",
                     "set_default_client_priority 1"], False),
    (running(25.0, 4096, 0), {}, ["set_default_client_priority 1"], False),
    (_mps.not_running(), {"manage_daemon": True}, ["start"], False),
    (_mps.not_running(), {"manage_daemon": True, "compute_mode": "exclusive_process"}, ["compute_mode", "start"],
     False),
    (running(25.0, 4096, 1, [server(clients=[9])]), {}, [], True),
    (running(25.0, 4096, 1, [server(pct=25.0, limit=4096, clients=[9])]), {}, [], False),
    (running(25.0, 4096, 1, [server()]), {"restart_servers": True},
     ["set_active_thread_percentage 500 25", "set_device_pinned_mem_limit 500 0 4G"], False),
    (running(25.0, 4096, 1, [server(clients=[9])]), {"restart_servers": True, "force": True},
     ["set_active_thread_percentage 500 25", "set_device_pinned_mem_limit 500 0 4G"], True),
    (running(), {"state": "absent"}, ["quit"], False),
    (running(servers=[server(clients=[9])]), {"state": "absent", "force": True}, ["quit -t 10"], False),
    (running(), {"state": "absent", "force": True, "timeout": 2.5}, ["quit -t 3"], False),
    (_mps.not_running(), {"state": "absent"}, [], False),
    (_mps.not_running(), {"state": "absent", "compute_mode": "default"}, [], False),
])
def test_plan_table(observed, options, expected, restart):
    plan = _mps.plan_target(target(mode="default" if options.get("compute_mode") != "exclusive_process" else "x"),
                            observed, WANT, {**OPTS, **options})
    assert ops(plan) == expected
    assert plan["restart_required"] is restart


@pytest.mark.parametrize(("observed", "options", "message"), [
    (_mps.not_running(), {}, "gpu0: no MPS control daemon listens on /run/nvidia-mps/gpu0/control"),
    (running(servers=[server(clients=[9, 10])]), {"restart_servers": True},
     "MPS server 500 runs with active_thread_percentage, device_pinned_mem_limit different from the requested ones "
     "and has connected clients (9, 10)"),
    (running(servers=[server(clients=[9])]), {"state": "absent"},
     "server 500: clients 9); quit would wait until they finish: stop the clients first, or set force: true"),
])
def test_plan_refusals(observed, options, message):
    with pytest.raises(_mps.MpsError) as exc:
        _mps.plan_target(target(), observed, WANT, {**OPTS, **options})
    assert message in str(exc.value)


def test_compute_mode_only_for_whole_gpus():
    want = {**OPTS, "compute_mode": "exclusive_process"}
    plan = _mps.plan_target(target(mode="default"), running(25.0, 4096, 1), WANT, want)
    assert ops(plan) == ["compute_mode"] and plan["compute_mode_after"] == "exclusive_process"
    assert _mps.plan_target(target(mode="exclusive_process"), running(25.0, 4096, 1), WANT, want)["operations"] == []
    plan = _mps.plan_target(target("mig"), running(25.0, 4096, 1), WANT, want)
    assert plan["operations"] == [] and plan["compute_mode_after"] is None


def test_absent_can_put_the_gpu_back_to_default():
    plan = _mps.plan_target(target(mode="exclusive_process"), running(), WANT,
                            {**OPTS, "state": "absent", "compute_mode": "default"})
    assert ops(plan) == ["quit", "compute_mode"] and plan["after"]["running"] is False


def _apply(observed: dict, plan: dict) -> dict:
    """What a daemon does with the plan's commands (independent of plan_target's own prediction)."""
    state = copy.deepcopy(observed)
    for op in plan["operations"]:
        name, a = op["op"], op["args"]
        if name == "set_default_active_thread_percentage":
            state["defaults"]["active_thread_percentage"] = float(a[0])
        elif name == "set_default_device_pinned_mem_limit":   # read back in whole GiB from 1 GiB on
            state["defaults"]["device_pinned_mem_limit_mib"] = _mps.as_reported(_mps.parse_limit_reply(a[0]))
        elif name == "set_default_client_priority":
            state["defaults"]["client_priority"] = a[0]
        elif name == "set_active_thread_percentage":
            next(s for s in state["servers"] if s["pid"] == a[0])["active_thread_percentage"] = float(a[1])
        elif name == "set_device_pinned_mem_limit":
            next(s for s in state["servers"] if s["pid"] == a[0])["device_pinned_mem_limit_mib"] = \
                _mps.as_reported(_mps.parse_limit_reply(a[1]))
    return state


pcts = st.sampled_from([None, 1, 25, 50, 100])
limits = st.one_of(st.none(), st.integers(min_value=1, max_value=40960))
priorities = st.sampled_from([None, 0, 1])


@given(cur_pct=st.sampled_from([1.0, 25.0, 33.3, 100.0]), cur_limit=limits, cur_prio=st.sampled_from([0, 1]),
       srv_pct=st.sampled_from([25.0, 100.0]), srv_limit=limits, clients=st.lists(st.integers(1, 99), max_size=2),
       pct=pcts, limit=limits, priority=priorities, restart=st.booleans(), force=st.booleans())
def test_plans_reach_the_target_and_replan_to_nothing(cur_pct, cur_limit, cur_prio, srv_pct, srv_limit, clients,
                                                      pct, limit, priority, restart, force):
    observed = running(cur_pct, cur_limit, cur_prio, [server(pct=srv_pct, limit=srv_limit, clients=clients)])
    want = {"active_thread_percentage": pct, "device_pinned_mem_limit_mib": limit, "client_priority": priority}
    options = {**OPTS, "restart_servers": restart, "force": force}
    try:
        plan = _mps.plan_target(target(), observed, want, options)
    except _mps.MpsError:
        assert restart and clients and not force and _mps.stale_settings(observed["servers"][0], want)
        return
    reached = _apply(observed, plan)
    assert reached == plan["after"]
    for key, value in (("active_thread_percentage", pct), ("device_pinned_mem_limit_mib", _mps.as_reported(limit)),
                       ("client_priority", priority)):
        if value is not None:
            assert reached["defaults"][key] == value
    was_stale = bool(_mps.stale_settings(observed["servers"][0], want))
    assert bool(_mps.stale_settings(reached["servers"][0], want)) == (was_stale and not restart)
    again = _mps.plan_target(target(), reached, want, options)
    assert again["operations"] == []
    assert plan["restart_required"] == bool(_mps.stale_settings(observed["servers"][0], want)
                                            and (clients or not restart))


@pytest.mark.parametrize("commands,reply,left", [
    (["set_default_active_thread_percentage 25", "set_default_client_priority 1"], "25.0\n", ""),
    (["set_default_active_thread_percentage 12.5"], "12.5\n", ""),
    (["set_default_client_priority 1"], "", ""),
    (["set_default_active_thread_percentage 25"], "25.0\nInvalid value\n", "Invalid value"),
    (["set_default_active_thread_percentage 25"], "30.0\n", "30.0"),
    (["set_default_device_pinned_mem_limit 0 4G"], "25.0\n", "25.0"),
])
def test_refusals_ignore_only_the_percentage_echo(commands, reply, left):
    """The daemon echoes set_default_active_thread_percentage (25 -> 25.0); nothing else is an acknowledgement."""
    assert _mps.refusals(commands, reply) == left
