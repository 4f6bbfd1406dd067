"""MPS: gpusim's nvidia-cuda-mps-control (daemon -d/-f, stdin client), clients, reboot."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from gpusim import cli, mps, mps_client

SIM = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONTROL = os.path.join(SIM, "bin", "nvidia-cuda-mps-control")


class Mps:
    def __init__(self, host, tmp_path):
        self.host = host
        self.pipe = str(tmp_path / "pipe")
        self.log = str(tmp_path / "log")
        self.daemons: list[int] = []

    def env(self, **extra) -> dict:
        return {**os.environ, "GPUSIM_STATE": self.host.path, "CUDA_MPS_PIPE_DIRECTORY": self.pipe,
                "CUDA_MPS_LOG_DIRECTORY": self.log, **extra}

    def start(self, **extra) -> subprocess.CompletedProcess:
        done = subprocess.run([sys.executable, CONTROL, "-d"], env=self.env(**extra), capture_output=True, text=True,
                              check=False)
        if done.returncode == 0:
            self.daemons.append(self.pid())
        return done

    def pid(self) -> int:
        with open(os.path.join(self.pipe, mps.PID_FILE)) as fh:
            return int(fh.read())

    def ctl(self, *commands: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, CONTROL], input="".join(c + "\n" for c in commands), env=self.env(),
                              capture_output=True, text=True, check=False)

    def out(self, *commands: str) -> str:
        done = self.ctl(*commands)
        assert done.returncode == 0, done.stdout + done.stderr
        return done.stdout

    def client(self, action: str, pid: int, *extra: str) -> int:
        return cli.main(["mps", "client", action, "--pid", str(pid), "--pipe-directory", self.pipe, *extra])

    def log_text(self) -> str:
        with open(os.path.join(self.log, "control.log")) as fh:
            return fh.read()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().split(") ", 1)[1][:1] != "Z"
    except OSError:
        return False


def _wait_gone(pid: int, seconds: float = 5.0) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if not _alive(pid):
            return True
        time.sleep(0.02)
    return False


@pytest.fixture
def daemon(host, tmp_path):
    host.init("A100-SXM4-40GB", 1)
    m = Mps(host, tmp_path)
    yield m
    for pid in m.daemons:
        if _alive(pid):
            os.kill(pid, signal.SIGTERM)
            _wait_gone(pid)


def test_client_without_daemon_prints_nvidia_text_and_fails(daemon):
    done = daemon.ctl("get_server_list")
    assert done.returncode == 1
    assert done.stdout.strip() == "Cannot find MPS control daemon process"


def test_background_daemon_takes_defaults_from_its_environment(daemon):
    assert daemon.start(CUDA_MPS_ACTIVE_THREAD_PERCENTAGE="25", CUDA_MPS_PINNED_DEVICE_MEM_LIMIT="0=1G,1=512MB",
                        CUDA_MPS_CLIENT_PRIORITY="1").returncode == 0
    assert os.path.exists(os.path.join(daemon.pipe, "control"))
    out = daemon.out("get_default_active_thread_percentage", "get_default_device_pinned_mem_limit 0",
                     "get_default_device_pinned_mem_limit 1", "get_default_client_priority", "get_server_list")
    assert out == "25.0\n1G\n512M\n1\n"
    log = daemon.log_text()
    assert f"Starting control daemon using socket {daemon.pipe}/control" in log
    assert f"set env CUDA_MPS_PIPE_DIRECTORY={daemon.pipe}" in log
    assert "Cmd:get_default_device_pinned_mem_limit 0" in log


def test_documented_defaults_without_environment(daemon):
    daemon.start()
    assert daemon.out("get_default_active_thread_percentage", "get_default_client_priority") == "100.0\n0\n"


def test_set_commands_and_value_formats(daemon):
    daemon.start()
    # set_default_active_thread_percentage answers with the value it took (real daemons; issue 14)
    assert daemon.out("set_default_active_thread_percentage 30", "set_default_device_pinned_mem_limit 0 4096M",
                      "set_default_device_pinned_mem_limit GPU-abc 2G", "set_default_client_priority 1") == "30.0\n"
    out = daemon.out("get_default_active_thread_percentage", "get_default_device_pinned_mem_limit 0",
                     "get_default_device_pinned_mem_limit GPU-abc", "get_default_client_priority")
    # a limit is printed in whole GiB from 1 GiB on: real daemons answer 5G for 5120M
    assert out == "30.0\n4G\n2G\n1\n"


@pytest.mark.parametrize(("value", "shown"), [("5120M", "5G"), ("1044M", "1G"), ("1536M", "1G"), ("900M", "900M"),
                                              ("1024M", "1G"), ("1023M", "1023M"), ("3G", "3G")])
def test_limits_read_back_in_whole_gib_rounded_down(daemon, value, shown):
    # observed on real daemons: 5120M (set by NVIDIA's k8s-device-plugin) reads back 5G, 1044M reads back 1G
    daemon.start()
    daemon.out(f"set_default_device_pinned_mem_limit 0 {value}")
    assert daemon.out("get_default_device_pinned_mem_limit 0") == shown + "\n"


def test_a_server_gets_the_exact_limit_not_the_rounded_display(daemon):
    daemon.start(CUDA_MPS_PINNED_DEVICE_MEM_LIMIT="0=1536M")
    daemon.client("add", 10)
    snap = json.loads(mps_client.request(daemon.pipe, mps.INTERNAL_PREFIX + "snapshot\n"))
    assert snap["defaults"]["device_pinned_mem_limits"] == {"0": "1G"}
    server = snap["servers"][0]
    assert server["device_pinned_mem_limits"] == {"0": "1G"}           # as the daemon prints it
    assert server["device_pinned_mem_limits_mib"] == {"0": 1536}        # what it holds
    assert server["clients"][0]["device_pinned_mem_limits_mib"] == {"0": 1536}
    assert daemon.out(f"get_device_pinned_mem_limit {server['pid']} 0") == "1G\n"


def test_default_limits_are_kept_per_identifier_and_resolved_when_a_server_starts(daemon):
    uuid = daemon.host.state()["gpus"][0]["uuid"]
    daemon.start(CUDA_VISIBLE_DEVICES=uuid)
    daemon.out(f"set_default_device_pinned_mem_limit {uuid} 2G", "set_default_device_pinned_mem_limit 0 3G",
               "set_default_device_pinned_mem_limit 7 9G", "set_default_device_pinned_mem_limit GPU-nope 8G")
    # "does not translate between device UUIDs or ordinals": each identifier answers what was set for it
    assert daemon.out(f"get_default_device_pinned_mem_limit {uuid}", "get_default_device_pinned_mem_limit 0",
                      "get_default_device_pinned_mem_limit 7") == "2G\n3G\n9G\n"
    daemon.client("add", 42)
    server = daemon.out("get_server_list").strip()
    # "whichever limit was set last will take effect"; invalid ordinals and UUIDs are ignored
    assert daemon.out(f"get_device_pinned_mem_limit {server} 0", f"get_device_pinned_mem_limit {server} {uuid}") == \
        "3G\n3G\n"
    assert "Invalid device" in daemon.out(f"get_device_pinned_mem_limit {server} 7")
    daemon.out(f"set_default_device_pinned_mem_limit {uuid} 1G")   # set last now: the next server takes it
    assert daemon.out(f"get_device_pinned_mem_limit {server} 0") == "3G\n"   # this one keeps its own


def test_ps_shows_the_partial_uuid_of_the_device_and_takes_p(daemon):
    uuid = daemon.host.state()["gpus"][0]["uuid"]
    daemon.start(CUDA_VISIBLE_DEVICES=uuid)
    daemon.client("add", 4242, "--name", "./nbody")
    server = daemon.out("get_server_list").strip()
    rows = daemon.out("ps").splitlines()
    assert rows[0] == "PID ID SERVER DEVICE NAMESPACE COMMAND"
    pid, _id, srv, device, _ns, command = rows[1].split(" ", 5)
    assert (pid, srv, command) == ("4242", server, "./nbody")
    assert device == uuid[:22] and len(device.split("-")) == 4   # GPU-cb1213a3-d6a4-be7f in NVIDIA's example
    assert daemon.out(f"ps -p {server}") == daemon.out("ps")
    assert daemon.out("ps -p 1").splitlines() == [rows[0]]
    assert "Invalid" in daemon.out("ps -x")


@pytest.mark.parametrize("command", [
    "set_default_active_thread_percentage 0",
    "set_default_active_thread_percentage 101",
    "set_default_device_pinned_mem_limit 0 4GiB",
    "set_default_device_pinned_mem_limit 0 4GB",
    "set_default_device_pinned_mem_limit 0 1.5G",
    "set_default_device_pinned_mem_limit 0 0M",
    "set_default_device_pinned_mem_limit 0 -1G",
    "set_default_device_pinned_mem_limit 0 4096",
    "set_default_device_pinned_mem_limit 0 4T",
    "set_default_client_priority 2",
    "get_active_thread_percentage 999999",
    "quit -t soon",
])
def test_bad_values_are_refused_and_change_nothing(daemon, command):
    daemon.start()
    before = daemon.out("get_default_active_thread_percentage", "get_default_device_pinned_mem_limit 0",
                        "get_default_client_priority")
    assert "Invalid" in daemon.out(command)
    assert daemon.out("get_default_active_thread_percentage", "get_default_device_pinned_mem_limit 0",
                      "get_default_client_priority") == before


def test_servers_take_defaults_at_start_and_keep_them(daemon):
    daemon.start(CUDA_MPS_ACTIVE_THREAD_PERCENTAGE="40")
    assert daemon.client("add", 4242) == 0
    servers = daemon.out("get_server_list").split()
    assert len(servers) == 1
    server = servers[0]
    assert daemon.out(f"get_client_list {server}") == "4242\n"
    daemon.out("set_default_active_thread_percentage 20")
    # "If there is already a server spawned, this command will only affect the next server."
    assert daemon.out(f"get_active_thread_percentage {server}") == "40.0\n"
    daemon.out(f"set_active_thread_percentage {server} 10", f"set_device_pinned_mem_limit {server} 0 900M")
    assert daemon.out(f"get_active_thread_percentage {server}", f"get_device_pinned_mem_limit {server} 0") == \
        "10.0\n900M\n"
    daemon.client("add", 4243)
    snap = json.loads(mps_client.request(daemon.pipe, mps.INTERNAL_PREFIX + "snapshot\n"))
    clients = {c["pid"]: c for c in snap["servers"][0]["clients"]}
    assert clients[4242]["active_thread_percentage"] == 40.0   # existing clients are not affected
    assert clients[4243]["active_thread_percentage"] == 10.0
    assert clients[4243]["device_pinned_mem_limits"] == {"0": "900M"}
    ps = daemon.out("ps").splitlines()
    assert ps[0] == "PID ID SERVER DEVICE NAMESPACE COMMAND" and len(ps) == 3
    assert daemon.client("remove", 4242) == 0
    assert daemon.out(f"get_client_list {server}") == "4243\n"


def test_pipe_directory_has_the_real_files(daemon):
    daemon.start()
    import stat
    names = sorted(os.listdir(daemon.pipe))
    assert names == ["control", "control_lock", "control_privileged", "log", mps.PID_FILE]
    assert stat.S_ISSOCK(os.stat(os.path.join(daemon.pipe, "control")).st_mode)
    assert stat.S_ISSOCK(os.stat(os.path.join(daemon.pipe, "control_privileged")).st_mode)
    assert stat.S_ISFIFO(os.stat(os.path.join(daemon.pipe, "log")).st_mode)
    daemon.out("quit")
    assert _wait_gone(daemon.daemons[0])
    assert os.listdir(daemon.pipe) == []


def test_socket_path_limit_counts_control_privileged(daemon, tmp_path):
    # sun_path: 108 bytes with the NUL; the longest socket is <pipe>/control_privileged
    base = str(tmp_path)
    fits = base + "/" + "p" * (107 - len("/control_privileged") - len(base) - 1)
    assert len(fits + "/control_privileged") == 107
    done = subprocess.run([sys.executable, CONTROL, "-d"], env=daemon.env(CUDA_MPS_PIPE_DIRECTORY=fits),
                          capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    with open(os.path.join(fits, mps.PID_FILE)) as fh:
        daemon.daemons.append(int(fh.read()))
    done = subprocess.run([sys.executable, CONTROL, "-d"], env=daemon.env(CUDA_MPS_PIPE_DIRECTORY=fits + "q"),
                          capture_output=True, text=True, check=False)
    assert done.returncode == 1 and "too long" in done.stderr


def test_log_has_the_real_lines_per_command(daemon):
    daemon.start()
    daemon.out("get_server_list")
    lines = [line.split("] ", 1)[1] for line in daemon.log_text().splitlines()]
    at = lines.index("Cmd:get_server_list")
    assert lines[at - 2:at + 2] == ["Accepting connection...", "NEW UI", "Cmd:get_server_list", "UI closed"]


def test_quit_waits_for_the_clients_to_finish(daemon):
    daemon.start()
    pid = daemon.pid()
    daemon.client("add", 31)
    quitter = subprocess.Popen([sys.executable, CONTROL], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                               env=daemon.env())
    quitter.stdin.write("quit\n")
    quitter.stdin.close()
    time.sleep(0.5)
    assert quitter.poll() is None and _alive(pid)            # synchronous: waits while the server has a client
    assert daemon.out("get_server_list") != ""               # still answers
    with pytest.raises(SystemExit):                           # no new clients meanwhile
        daemon.client("add", 32)
    assert daemon.client("remove", 31) == 0
    assert quitter.wait(timeout=10) == 0 and quitter.stdout.read() == ""
    assert _wait_gone(pid)
    assert not os.path.exists(os.path.join(daemon.pipe, "control"))


def test_quit_t_shuts_servers_down_after_the_timeout(daemon):
    daemon.start()
    pid = daemon.pid()
    daemon.client("add", 33)
    started = time.monotonic()
    assert daemon.out("quit -t 1") == ""
    assert 0.9 <= time.monotonic() - started < 8
    assert _wait_gone(pid)
    assert "still connected" in daemon.log_text() and "exited with status 0" in daemon.log_text()


def test_quit_without_clients_is_immediate(daemon):
    daemon.start()
    pid = daemon.pid()
    daemon.out("start_server -uid 0")
    started = time.monotonic()
    assert daemon.out("quit -t 30") == ""
    assert time.monotonic() - started < 5 and _wait_gone(pid)


def test_version_flag(daemon):
    done = subprocess.run([sys.executable, CONTROL, "-v"], env=daemon.env(), capture_output=True, text=True,
                          check=False)
    assert done.returncode == 0 and str(mps.CONTROL_VERSION) in done.stdout


def test_state_mirror_and_quit_cleans_up(daemon):
    daemon.start(CUDA_VISIBLE_DEVICES="GPU-1234")
    pid = daemon.pid()
    record = daemon.host.state()["mps"]["daemons"][daemon.pipe]
    assert record["pid"] == pid and record["visible_devices"] == "GPU-1234"
    assert record["log_directory"] == daemon.log
    assert daemon.out("quit") == ""
    assert _wait_gone(pid)
    assert not os.path.exists(os.path.join(daemon.pipe, "control"))
    assert not os.path.exists(os.path.join(daemon.pipe, mps.PID_FILE))
    assert daemon.pipe not in daemon.host.state().get("mps", {}).get("daemons", {})
    assert daemon.ctl("get_server_list").returncode == 1


def test_second_daemon_on_the_same_pipe_is_refused(daemon):
    daemon.start()
    done = daemon.start()
    assert done.returncode == 1


def test_foreground_daemon_stops_cleanly_on_sigterm(daemon):
    proc = subprocess.Popen([sys.executable, CONTROL, "-f"], env=daemon.env(CUDA_MPS_ACTIVE_THREAD_PERCENTAGE="60"),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 10
        while not os.path.exists(os.path.join(daemon.pipe, "control")) and time.monotonic() < deadline:
            time.sleep(0.02)
        assert daemon.out("get_default_active_thread_percentage") == "60.0\n"
        assert daemon.pid() == proc.pid
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
    assert not os.path.exists(os.path.join(daemon.pipe, "control"))


def test_stale_socket_from_a_killed_daemon_is_replaced(daemon):
    daemon.start()
    pid = daemon.pid()
    os.kill(pid, signal.SIGKILL)
    assert _wait_gone(pid)
    assert os.path.exists(os.path.join(daemon.pipe, "control"))   # SIGKILL leaves it behind
    assert daemon.ctl("get_server_list").returncode == 1
    assert daemon.start().returncode == 0
    assert daemon.out("get_default_client_priority") == "0\n"


def test_reboot_stops_daemons_and_forgets_them(daemon):
    daemon.start()
    pid = daemon.pid()
    assert daemon.host.gpusim("reboot") == 0
    assert _wait_gone(pid)
    assert "mps" not in daemon.host.state()
    assert daemon.ctl("get_server_list").returncode == 1


def test_client_add_without_daemon_fails(daemon, capsys):
    with pytest.raises(SystemExit) as exc:
        daemon.client("add", 1)
    assert exc.value.code == 1
    assert "Cannot find MPS control daemon process" in capsys.readouterr().err


@pytest.mark.parametrize(("text", "expected"), [
    ("0=1G,1=512MB", {"0": 1024, "1": 512}), ("GPU-ab=2g", {"GPU-ab": 2048}), ("0=0M,junk", {}), ("", {}),
    ("0=1G,0=2G", {"0": 2048})])
def test_limit_environment_parsing(text, expected):
    assert mps.parse_limit_env(text) == expected


def test_percentage_echo_and_replies_logged_after_their_command(daemon):
    """Real control.log: Accepting connection..., NEW UI, Cmd:<command>, each reply line, UI closed."""
    daemon.start()
    assert daemon.out("set_default_active_thread_percentage 25") == "25.0\n"
    assert daemon.out("get_default_client_priority") == "0\n"
    lines = [line.split("] ", 1)[1] for line in daemon.log_text().splitlines() if "] " in line]
    i = lines.index("Cmd:set_default_active_thread_percentage 25")
    assert lines[i - 2:i + 3] == ["Accepting connection...", "NEW UI", "Cmd:set_default_active_thread_percentage 25",
                                  "25.0", "UI closed"]
    j = lines.index("Cmd:get_default_client_priority")
    assert lines[j:j + 3] == ["Cmd:get_default_client_priority", "0", "UI closed"]
    k = len(lines) - 1 - lines[::-1].index("UI closed")
    assert k == j + 2
