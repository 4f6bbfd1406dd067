"""The MPS control daemon and its command-line client: gpusim's ``nvidia-cuda-mps-control``.

One program, three roles, as the real one (nvidia-cuda-mps-control(1); MPS documentation,
"Legacy MPS v2 Interface" and "Appendix: Tools and Interface Reference",
https://docs.nvidia.com/deploy/mps/):

* ``nvidia-cuda-mps-control -d`` starts the control daemon in the background and returns;
* ``nvidia-cuda-mps-control -f`` runs it in the foreground (what a systemd unit runs);
* ``nvidia-cuda-mps-control`` without options is the client: it reads commands from stdin
  (``echo quit | nvidia-cuda-mps-control``), sends them to the daemon and prints the replies.

What is modelled, and from where:

* Environment read at start: ``CUDA_MPS_PIPE_DIRECTORY`` (default ``/tmp/nvidia-mps``),
  ``CUDA_MPS_LOG_DIRECTORY`` (default ``/var/log/nvidia-mps``), ``CUDA_VISIBLE_DEVICES``,
  ``CUDA_MPS_ACTIVE_THREAD_PERCENTAGE``, ``CUDA_MPS_PINNED_DEVICE_MEM_LIMIT`` (``0=1G,1=512MB``,
  "the same semantics as CUDA_VISIBLE_DEVICES") and ``CUDA_MPS_CLIENT_PRIORITY`` ("Appendix:
  Environment Variables": each configures the daemon's default at start).
* The daemon listens on the Unix sockets ``<pipe directory>/control`` and ``control_privileged``, with
  ``control_lock`` and the ``log`` FIFO next to them (as a listing of a real pipe directory shows; the
  real sockets are SOCK_SEQPACKET, gpusim's stream sockets; only ``control`` is answered), writes
  ``nvidia-cuda-mps-control.pid`` there ("The control daemon creates a nvidia-cuda-mps-control.pid
  file that contains the PID of the control daemon process in the CUDA_MPS_PIPE_DIRECTORY") and logs
  to ``<log directory>/control.log`` with the real line format, e.g.
  ``[2024-06-12 10:28:13.702 Control    69] Starting control daemon using socket /tmp/nvidia-mps/control``
  and, per command, ``Accepting connection...``, ``NEW UI``, ``Cmd:<command>``, ``UI closed`` (real logs
  quoted in NVIDIA/k8s-device-plugin issues #679, #762, #764, #1614).  A socket path has at most 107
  bytes (``sun_path``, 108 with the NUL): a pipe directory too long for ``control_privileged`` is refused.
* Commands and their arguments (v2 interface): ``get_server_list``, ``get_server_status <PID>``,
  ``start_server -uid <uid>``, ``get_client_list <PID>``, ``get_device_client_list [<PID>]``,
  ``set_default_active_thread_percentage <pct>`` / ``get_default_active_thread_percentage``,
  ``set_active_thread_percentage <PID> <pct>`` / ``get_active_thread_percentage <PID>``,
  ``set_default_device_pinned_mem_limit <dev> <value>`` / ``get_default_device_pinned_mem_limit <dev>``,
  ``set_device_pinned_mem_limit <PID> <dev> <value>`` / ``get_device_pinned_mem_limit <PID> <dev>``,
  ``set_default_client_priority <0|1>`` / ``get_default_client_priority``, ``terminate_client
  <server PID> <client PID>`` (prints ``0`` on success), ``ps [-p PID]`` (header ``PID ID SERVER DEVICE
  NAMESPACE COMMAND``, the device as its partial UUID, ``GPU-cb1213a3-d6a4-be7f``, as in NVIDIA's
  example) and ``quit [-t <seconds>]``.  Percentages print as floats (``25.0``; a k8s-device-plugin
  daemon set to 12 answers ``12.0``), and ``set_default_active_thread_percentage`` answers with the
  value it set (``25.0``); every reply line is logged in ``control.log`` after its ``Cmd:`` line.
  Memory values are "an integer followed by a qualifier, either G or M" (G = 1024 M) and are not
  echoed as set: limits of 1 GiB and more print in whole GiB, rounded down (real daemons: ``5120M``
  reads back ``5G``, ``1044M`` reads back ``1G`` on driver 595.91.07),
  smaller ones in M (``900M``); the daemon keeps the exact value, which servers and clients get.
* ``dev`` "may be a device UUID string or an integer ordinal" and "is not validated": the defaults
  are kept per identifier ("this command does not translate between device UUIDs or ordinals").  When
  a server starts, each identifier is resolved against the devices visible to the daemon
  (``CUDA_VISIBLE_DEVICES``, ordinals in its order): "whichever limit was set last will take effect"
  per device, and "a limit set with an invalid device UUID or ordinal will be ignored".  A server's
  limits are per device, so ``get_device_pinned_mem_limit <PID> <UUID>`` answers for a limit set by
  ordinal (as a real receipt shows: set by ordinal, read by GPU UUID, ``5G``).
* ``quit`` "terminates the nvidia-cuda-mps-control daemon"; it is synchronous and, while servers have
  clients, waits until they have finished (no new clients are accepted meanwhile); ``quit -t N``
  shuts the servers down that still run after N seconds (nvidia-cuda-mps-control(1); real teardown
  scripts: "bare quit blocks until they finish").  The client that sent it gets its (empty) reply
  when the daemon exits.
* Defaults apply to servers started later ("If there is already a server spawned, this command
  will only affect the next server"); per-server settings apply to "clients created with that
  server afterwards. Existing clients are not affected."  Each server records the settings it was
  started with; each client records what it got when it connected.
* The client without a daemon prints ``Cannot find MPS control daemon process`` and exits 1
  (text as users report it, e.g. globus-labs/mof-generation-at-scale#29).
* A server is started for a client's user on its first connection (log lines "NEW CLIENT ... from
  user ...", "Starting new server ... for user ...", "NEW SERVER ...: Ready").  gpusim has no CUDA
  processes, so clients are registered with ``gpusim mps client add`` (an internal request on the
  same socket that is not part of NVIDIA's protocol) and servers are bookkeeping, not processes:
  their PIDs are numbers the daemon hands out.

Texts marked ``GPUSIM_WORDING`` have no recorded real output (error replies to bad arguments,
the reply of a get for a device without a limit, the refusal of a client while quitting); they say
what happened plainly and nothing should depend on their exact wording.

The daemon mirrors what it holds into the host's gpusim state (``"mps": {"daemons": {<pipe
directory>: {...}}}``) for ``gpusim show``/``gpusim mps list`` and tests; the daemon's memory is the
truth.  ``gpusim reboot`` stops every daemon it recorded and drops the section (MPS daemons do not
survive a reboot).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import select
import signal
import socket
import sys
import time

from .mps_client import DEFAULT_PIPE_DIRECTORY, client_main

DEFAULT_LOG_DIRECTORY = "/var/log/nvidia-mps"
PID_FILE = "nvidia-cuda-mps-control.pid"
GPUSIM_WORDING = "gpusim wording"  # marks replies for which no real nvidia-cuda-mps-control text was found
CONTROL_VERSION = 13000
INTERNAL_PREFIX = "__gpusim_"       # requests from `gpusim mps ...`, not NVIDIA's protocol
_MEM = re.compile(r"^([0-9]+)\s*(M|G)B?$", re.IGNORECASE)
_COMMAND_MEM = re.compile(r"^([0-9]+)([MG])$")   # the control commands: "an integer followed by ... G or M"
SOCKETS = ("control", "control_privileged")
SOCKET_PATH_MAX = 107                            # sun_path: 108 bytes with the terminating NUL


# --------------------------------------------------------------------------- the client
# is gpusim/mps_client.py, which imports next to nothing: the real client is a small C program, and
# benchmarks that run it once per daemon should measure the module that calls it, not Python imports.


# --------------------------------------------------------------------------- values

def parse_memory(value: str, strict: bool = False) -> int | None:
    """``10G``/``900M`` (and, in the environment variable, ``512MB``) -> MiB; None if invalid.

    ``strict``: the control commands' form, an integer directly followed by G or M."""
    m = (_COMMAND_MEM if strict else _MEM).match(value if strict else value.strip())
    if not m or int(m.group(1)) <= 0:
        return None
    return int(m.group(1)) * (1024 if m.group(2).upper() == "G" else 1)


def show_memory(mib: int) -> str:
    """How the daemon prints a limit: whole GiB (rounded down) from 1 GiB on, M below."""
    return f"{mib // 1024}G" if mib >= 1024 else f"{mib}M"


def parse_percentage(value: str) -> float | None:
    try:
        pct = float(value)
    except ValueError:
        return None
    return pct if 0 < pct <= 100 else None


def parse_limit_env(text: str) -> dict[str, int]:
    """``CUDA_MPS_PINNED_DEVICE_MEM_LIMIT='0=1G,1=512MB'`` -> {"0": 1024, "1": 512} (MiB)."""
    limits = {}
    for item in (text or "").split(","):
        if "=" not in item:
            continue
        dev, value = item.split("=", 1)
        mib = parse_memory(value)
        if dev.strip() and mib:
            limits.pop(dev.strip(), None)
            limits[dev.strip()] = mib
    return limits


def _pct_text(value: float) -> str:
    return f"{value:.1f}"


def visible_devices(env_value: str | None) -> list[str]:
    """The devices a daemon started with ``CUDA_VISIBLE_DEVICES=env_value`` sees, as UUIDs where the host's
    gpusim state knows them (ordinals, UUIDs and unique UUID prefixes resolved), else as given.  Unset:
    every whole GPU, then every MIG device (a simplification: which MIG devices CUDA enumerates without
    CUDA_VISIBLE_DEVICES depends on the CUDA release; the collection always sets it)."""
    try:
        from . import state as st
        gpus = st.peek().get("gpus", [])
    except Exception:   # no state: a daemon started outside a simulated host
        gpus = []
    devices = []   # (uuid, index or None)
    for gpu in gpus:
        if gpu.get("mig_current"):
            for gi in gpu.get("gpu_instances", []):
                devices += [(ci["uuid"], None) for ci in gi.get("compute_instances", [])]
        else:
            devices.append((gpu["uuid"], gpu["index"]))
    if env_value is None:
        return [u for u, _i in devices] or ["0"]
    seen = []
    for entry in (e.strip() for e in env_value.split(",")):
        if not entry:
            break          # CUDA stops at an invalid entry
        match = [u for u, i in devices if (entry.isdigit() and i == int(entry)) or u == entry
                 or (not entry.isdigit() and u.startswith(entry))]
        if len(match) == 1:
            seen.append(match[0])
        elif not devices:
            seen.append(entry)
        else:
            break
    return seen


# --------------------------------------------------------------------------- the daemon

class Daemon:
    """The control daemon's state and command interpreter (no I/O besides its log and the state mirror)."""

    def __init__(self, env: dict, pid: int | None = None):
        self.pid = pid or os.getpid()
        self.pipe_directory = env.get("CUDA_MPS_PIPE_DIRECTORY") or DEFAULT_PIPE_DIRECTORY
        self.log_directory = env.get("CUDA_MPS_LOG_DIRECTORY") or DEFAULT_LOG_DIRECTORY
        self.visible_devices = env.get("CUDA_VISIBLE_DEVICES")
        self.devices = visible_devices(self.visible_devices)
        pct = parse_percentage(env.get("CUDA_MPS_ACTIVE_THREAD_PERCENTAGE", "") or "")
        priority = env.get("CUDA_MPS_CLIENT_PRIORITY", "")
        self.defaults = {
            "active_thread_percentage": pct if pct is not None else 100.0,
            # identifier (ordinal or UUID, as given) -> MiB, in the order they were set
            "device_pinned_mem_limits": parse_limit_env(env.get("CUDA_MPS_PINNED_DEVICE_MEM_LIMIT", "")),
            "client_priority": int(priority) if priority in ("0", "1") else 0,
        }
        self.servers: list[dict] = []
        self.started = time.time()
        self.running = True
        self.quitting = False           # quit received, waiting for the servers' clients
        self.quit_deadline = None       # quit -t: when the servers are shut down regardless
        self._next_server_pid = self.pid + 1

    # ---- log
    def log(self, message: str) -> None:
        now = time.time()
        stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(now)) + ".%03d" % int(now % 1 * 1000)
        with contextlib.suppress(OSError), open(os.path.join(self.log_directory, "control.log"), "a") as fh:
            fh.write(f"[{stamp} Control {self.pid:>5}] {message}\n")

    # ---- snapshot mirrored into the gpusim state
    def snapshot(self) -> dict:
        def shown(limits):
            return {str(k): show_memory(v) for k, v in limits.items()}

        def exact(limits):   # what the daemon holds and enforces, in MiB
            return {str(k): v for k, v in limits.items()}
        servers = [{**srv, "device_pinned_mem_limits": shown(srv["device_pinned_mem_limits"]),
                    "device_pinned_mem_limits_mib": exact(srv["device_pinned_mem_limits"]),
                    "clients": [{**c, "device_pinned_mem_limits": shown(c["device_pinned_mem_limits"]),
                                 "device_pinned_mem_limits_mib": exact(c["device_pinned_mem_limits"])}
                                for c in srv["clients"]]} for srv in self.servers]
        return {"pid": self.pid, "pipe_directory": self.pipe_directory, "log_directory": self.log_directory,
                "visible_devices": self.visible_devices, "devices": list(self.devices), "started": self.started,
                "quitting": self.quitting,
                "defaults": json.loads(json.dumps({**self.defaults, "device_pinned_mem_limits": shown(
                    self.defaults["device_pinned_mem_limits"])})),
                "servers": json.loads(json.dumps(servers))}

    # ---- devices
    def device_of(self, dev: str) -> int | None:
        """The visible device an identifier names: an ordinal, or a UUID (None: no such device)."""
        if dev.isdigit():
            return int(dev) if int(dev) < len(self.devices) else None
        return self.devices.index(dev) if dev in self.devices else None

    def partial_uuid(self, device: int = 0) -> str:
        uuid = self.devices[device] if device < len(self.devices) else (self.visible_devices or "0")
        return uuid[:22]

    # ---- servers and clients
    def _server(self, pid_text: str) -> dict | None:
        for server in self.servers:
            if str(server["pid"]) == pid_text:
                return server
        return None

    def has_clients(self) -> bool:
        return any(s["clients"] for s in self.servers)

    def start_server(self, uid: int) -> dict:
        limits = {}
        for dev, mib in self.defaults["device_pinned_mem_limits"].items():   # in the order they were set
            device = self.device_of(dev)
            if device is None:
                self.log(f"Ignoring the device pinned memory limit for unknown device {dev} ({GPUSIM_WORDING})")
                continue
            limits[device] = mib
        server = {"pid": self._next_server_pid, "uid": uid, "status": "ACTIVE",
                  "active_thread_percentage": self.defaults["active_thread_percentage"],
                  "device_pinned_mem_limits": limits, "clients": []}
        self._next_server_pid += 1
        self.servers.append(server)
        self.log(f"Starting new server {server['pid']} for user {uid}")
        self.log(f"NEW SERVER {server['pid']}: Ready")
        return server

    def add_client(self, pid: int, uid: int, command: str = "python3") -> str:
        if self.quitting:
            return f"client {pid} refused: the control daemon is shutting down ({GPUSIM_WORDING})\n"
        for server in self.servers:
            if server["uid"] != uid and server["clients"]:
                # Real daemon: the new client waits until the other user's server has no clients left.
                return (f"client {pid} of user {uid} must wait: server {server['pid']} of user "
                        f"{server['uid']} still has clients ({GPUSIM_WORDING})\n")
        self.servers = [s for s in self.servers if s["uid"] == uid or s["clients"]]
        server = next((s for s in self.servers if s["uid"] == uid), None)
        self.log("Accepting connection...")
        if server is None:
            self.log(f"NEW CLIENT {pid} from user {uid}: Server is not ready, push client to pending list")
            server = self.start_server(uid)
        else:
            self.log(f"NEW CLIENT {pid} from user {uid}: Server already exists")
        server["clients"] = [c for c in server["clients"] if c["pid"] != pid] + [{
            "pid": pid, "command": command, "priority": self.defaults["client_priority"],
            "active_thread_percentage": server["active_thread_percentage"],
            "device_pinned_mem_limits": dict(server["device_pinned_mem_limits"])}]
        return f"{server['pid']}\n"

    def remove_client(self, pid: int) -> str:
        for server in self.servers:
            if any(c["pid"] == pid for c in server["clients"]):
                server["clients"] = [c for c in server["clients"] if c["pid"] != pid]
                self.log(f"Client {pid} disconnected")
                return f"{server['pid']}\n"
        return f"no client {pid} ({GPUSIM_WORDING})\n"

    # ---- quit
    def settle(self, now: float | None = None) -> None:
        """After each request: a pending quit completes once no server has clients, or at its deadline."""
        if not self.quitting or not self.running:
            return
        if not self.has_clients():
            self.running = False
        elif self.quit_deadline is not None and (now or time.monotonic()) >= self.quit_deadline:
            for server in self.servers:
                if server["clients"]:
                    self.log(f"Shutting down server {server['pid']} with {len(server['clients'])} client(s) "
                             f"still connected ({GPUSIM_WORDING})")
                    server["clients"] = []
            self.running = False
        if not self.running:
            for server in self.servers:
                self.log(f"Server {server['pid']} exited with status 0")
            self.servers = []
            self.log("Exit")  # GPUSIM_WORDING

    # ---- commands
    def execute(self, line: str) -> str:
        words = line.split()
        if not words:
            return ""
        cmd, args = words[0], words[1:]
        if cmd.startswith(INTERNAL_PREFIX):
            return self._internal(cmd[len(INTERNAL_PREFIX):], args)
        self.log("Accepting connection...")
        self.log("NEW UI")
        self.log("Cmd:" + " ".join(words))
        handler = getattr(self, "cmd_" + cmd, None)
        reply = ""
        try:
            if handler is None:
                reply = f"Unknown command: {cmd} ({GPUSIM_WORDING})\n"
            else:
                reply = handler(*args)
            return reply
        except TypeError:
            reply = f"Invalid arguments for {cmd}: {' '.join(args) or '(none)'} ({GPUSIM_WORDING})\n"
            return reply
        finally:
            # the daemon logs what it answered after the command's Cmd: line, one log line per
            # reply line, then UI closed (real control.log, NVIDIA/k8s-device-plugin issues)
            for line in reply.splitlines():
                self.log(line)
            self.log("UI closed")

    def _internal(self, cmd: str, args: list[str]) -> str:
        if cmd == "client_add" and len(args) >= 2:
            return self.add_client(int(args[0]), int(args[1]), " ".join(args[2:]) or "python3")
        if cmd == "client_remove" and args:
            return self.remove_client(int(args[0]))
        if cmd == "snapshot":
            return json.dumps(self.snapshot(), sort_keys=True) + "\n"
        return f"unknown gpusim request {cmd}\n"

    def _bad(self, what: str, value: str) -> str:
        return f"Invalid {what}: {value} ({GPUSIM_WORDING})\n"

    def cmd_get_server_list(self) -> str:
        return "".join(f"{s['pid']}\n" for s in self.servers)

    def cmd_get_server_status(self, pid) -> str:
        server = self._server(pid)
        return f"{server['status']}\n" if server else self._bad("server PID", pid)

    def cmd_start_server(self, flag, uid, *_mlopart) -> str:
        if flag != "-uid" or not uid.isdigit():
            return self._bad("arguments", f"{flag} {uid}")
        if not any(s["uid"] == int(uid) for s in self.servers):
            self.start_server(int(uid))
        return ""

    def cmd_get_client_list(self, pid) -> str:
        server = self._server(pid)
        if server is None:
            return self._bad("server PID", pid)
        return "".join(f"{c['pid']}\n" for c in server["clients"])

    def cmd_get_device_client_list(self, *pid) -> str:
        # GPUSIM_WORDING: one line per device and client, "<device> <client PID>"
        servers = [self._server(pid[0])] if pid else self.servers
        return "".join(f"{self.partial_uuid()} {c['pid']}\n" for s in servers if s for c in s["clients"])

    def cmd_set_default_active_thread_percentage(self, value) -> str:
        pct = parse_percentage(value)
        if pct is None:
            return self._bad("active thread percentage", value)
        self.defaults["active_thread_percentage"] = pct
        # the daemon answers with the value it took, as a float: "set_default_active_thread_percentage
        # 25" prints 25.0 (real daemons, NVIDIA/k8s-device-plugin issues; issue 14, item 9)
        return _pct_text(pct) + "\n"

    def cmd_get_default_active_thread_percentage(self) -> str:
        return _pct_text(self.defaults["active_thread_percentage"]) + "\n"

    def cmd_set_active_thread_percentage(self, pid, value) -> str:
        server, pct = self._server(pid), parse_percentage(value)
        if server is None:
            return self._bad("server PID", pid)
        if pct is None:
            return self._bad("active thread percentage", value)
        server["active_thread_percentage"] = pct
        return ""

    def cmd_get_active_thread_percentage(self, pid) -> str:
        server = self._server(pid)
        return _pct_text(server["active_thread_percentage"]) + "\n" if server else self._bad("server PID", pid)

    def cmd_set_default_device_pinned_mem_limit(self, dev, value) -> str:
        mib = parse_memory(value, strict=True)
        if mib is None:
            return self._bad("memory limit (an integer followed by G or M)", value)
        limits = self.defaults["device_pinned_mem_limits"]
        limits.pop(dev, None)          # "whichever limit was set last will take effect"
        limits[dev] = mib
        return ""

    def cmd_get_default_device_pinned_mem_limit(self, dev) -> str:
        # GPUSIM_WORDING: "0" for a device without a limit (no real output recorded)
        mib = self.defaults["device_pinned_mem_limits"].get(dev)
        return (show_memory(mib) if mib else "0") + "\n"

    def cmd_set_device_pinned_mem_limit(self, pid, dev, value) -> str:
        server, mib, device = self._server(pid), parse_memory(value, strict=True), self.device_of(dev)
        if server is None:
            return self._bad("server PID", pid)
        if device is None:
            return self._bad("device", dev)
        if mib is None:
            return self._bad("memory limit (an integer followed by G or M)", value)
        server["device_pinned_mem_limits"][device] = mib
        return ""

    def cmd_get_device_pinned_mem_limit(self, pid, dev) -> str:
        server, device = self._server(pid), self.device_of(dev)
        if server is None:
            return self._bad("server PID", pid)
        if device is None:
            return self._bad("device", dev)
        mib = server["device_pinned_mem_limits"].get(device)
        return (show_memory(mib) if mib else "0") + "\n"

    def cmd_set_default_client_priority(self, value) -> str:
        if value not in ("0", "1"):
            return self._bad("client priority (0 [NORMAL] or 1 [BELOW NORMAL])", value)
        self.defaults["client_priority"] = int(value)
        return ""

    def cmd_get_default_client_priority(self) -> str:
        return f"{self.defaults['client_priority']}\n"

    def cmd_terminate_client(self, server_pid, client_pid) -> str:
        server = self._server(server_pid)
        if server is None or not any(str(c["pid"]) == client_pid for c in server["clients"]):
            return self._bad("server or client PID", f"{server_pid} {client_pid}")
        return "0\n"

    def cmd_ps(self, *args) -> str:
        if args and (args[0] != "-p" or len(args) != 2):
            return self._bad("arguments (ps [-p PID])", " ".join(args))
        rows = ["PID ID SERVER DEVICE NAMESPACE COMMAND"]
        for server in self.servers:
            if args and args[1] != str(server["pid"]):
                continue
            for n, client in enumerate(server["clients"]):
                rows.append(f"{client['pid']} {n} {server['pid']} {self.partial_uuid()} 4026531836 "
                            f"{client['command']}")
        return "\n".join(rows) + "\n"

    def cmd_quit(self, *args) -> str:
        if args and (args[0] != "-t" or len(args) != 2 or not args[1].isdigit()):
            return self._bad("arguments (quit [-t <seconds>])", " ".join(args))
        self.quitting = True
        if args:
            deadline = time.monotonic() + int(args[1])
            self.quit_deadline = deadline if self.quit_deadline is None else min(deadline, self.quit_deadline)
        self.settle()
        return ""


def _mirror(daemon: Daemon, remove: bool = False) -> None:
    """Record the daemon in the host's gpusim state (best effort: a host without a state keeps running)."""
    from . import state as st
    path = st.state_path()
    if not os.path.exists(path):
        return
    with contextlib.suppress(st.StateError, OSError), st.transaction(path) as data:
        if remove:
            daemons = data.get("mps", {}).get("daemons", {})
            if daemons.get(daemon.pipe_directory, {}).get("pid") == daemon.pid:
                del daemons[daemon.pipe_directory]
        else:
            daemons = data.setdefault("mps", {}).setdefault("daemons", {})
            daemons[daemon.pipe_directory] = daemon.snapshot()


def _already_running(path: str) -> bool:
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(path)
        return True
    except OSError:
        return False
    finally:
        probe.close()


def _read_request(conn: socket.socket) -> str:
    conn.settimeout(30)
    data = b""
    while True:
        chunk = conn.recv(65536)
        if not chunk:
            break
        data += chunk
    return data.decode(errors="replace")


def serve(env: dict, ready_fd: int | None = None) -> int:
    """Run the control daemon in this process until ``quit`` or SIGTERM/SIGINT."""
    daemon = Daemon(env)
    for directory in (daemon.pipe_directory, daemon.log_directory):
        try:
            os.makedirs(directory, exist_ok=True)
        except OSError as exc:
            print(f"Cannot create directory {directory}: {exc.strerror} ({GPUSIM_WORDING})", file=sys.stderr)
            return 1
    path = os.path.join(daemon.pipe_directory, "control")
    longest = os.path.join(daemon.pipe_directory, max(SOCKETS, key=len))
    if len(longest.encode()) > SOCKET_PATH_MAX:
        print(f"Socket path {longest} is too long ({GPUSIM_WORDING})", file=sys.stderr)
        return 1
    if os.path.exists(path):
        if _already_running(path):
            print("An instance of this daemon is already running", file=sys.stderr)
            return 1
        os.unlink(path)
    listeners = []
    for name in SOCKETS:
        sock_path = os.path.join(daemon.pipe_directory, name)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(sock_path)
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        listener.bind(sock_path)
        listener.listen(64)
        listeners.append(listener)
    os.chmod(path, 0o666)
    os.chmod(longest, 0o755)
    extras = [os.path.join(daemon.pipe_directory, "control_lock"), os.path.join(daemon.pipe_directory, "log")]
    with open(extras[0], "w"):
        pass
    with contextlib.suppress(OSError):
        if not os.path.exists(extras[1]):
            os.mkfifo(extras[1], 0o777)
    pid_path = os.path.join(daemon.pipe_directory, PID_FILE)
    with open(pid_path, "w") as fh:
        fh.write(f"{daemon.pid}\n")

    def stop(signum, _frame):
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    daemon.log(f"Starting control daemon using socket {path}")
    daemon.log(f"To connect CUDA applications to this daemon, set env CUDA_MPS_PIPE_DIRECTORY={daemon.pipe_directory}")
    daemon.log(f"CUDA MPS Control binary version: {CONTROL_VERSION}")
    _mirror(daemon)
    if ready_fd is not None:  # -d: tell the parent we listen, then let go of its stderr
        os.write(ready_fd, b"1")
        os.close(ready_fd)
        devnull = os.open(os.devnull, os.O_RDWR)
        os.dup2(devnull, 2)
        os.close(devnull)
    waiting: list[socket.socket] = []   # clients of a pending quit: they get their reply when the daemon exits
    try:
        while daemon.running:
            timeout = None
            if daemon.quit_deadline is not None:
                timeout = max(0.0, daemon.quit_deadline - time.monotonic())
            ready, _w, _x = select.select(listeners[:1], [], [], timeout)
            if not ready:
                daemon.settle()
                continue
            conn, _address = listeners[0].accept()
            before = json.dumps(daemon.snapshot(), sort_keys=True)
            held = False
            try:
                reply = []
                for line in _read_request(conn).splitlines():
                    reply.append(daemon.execute(line))
                    if daemon.quitting and daemon.running and line.split()[:1] == ["quit"]:
                        held = True     # quit is synchronous: this client waits for the end
                        break
                    if not daemon.running:
                        break
                with contextlib.suppress(OSError):
                    conn.sendall("".join(reply).encode())
            except OSError:
                pass
            if held:
                waiting.append(conn)
            else:
                conn.close()
            daemon.settle()
            if daemon.running and json.dumps(daemon.snapshot(), sort_keys=True) != before:
                _mirror(daemon)
    finally:
        for listener in listeners:
            listener.close()
        for leftover in [os.path.join(daemon.pipe_directory, n) for n in SOCKETS] + extras + [pid_path]:
            with contextlib.suppress(OSError):
                os.unlink(leftover)
        _mirror(daemon, remove=True)
        for conn in waiting:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
            conn.close()
    return 0


def daemonize(env: dict) -> int:
    """``-d``: fork a background daemon, return once it listens (or failed)."""
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(read_fd)
        os.setsid()
        if os.fork():
            os._exit(0)
        devnull = os.open(os.devnull, os.O_RDWR)
        for fd in (0, 1):  # stderr stays until the daemon listens (errors before that are the parent's)
            os.dup2(devnull, fd)
        os.close(devnull)
        code = 1
        try:
            code = serve(env, ready_fd=write_fd)
        finally:
            os._exit(code)
    os.close(write_fd)
    os.waitpid(pid, 0)
    ready = os.read(read_fd, 1)
    os.close(read_fd)
    return 0 if ready == b"1" else 1


USAGE = """Usage: nvidia-cuda-mps-control [-d | -f | -v]
  -d  start the MPS control daemon in the background
  -f  start the MPS control daemon in the foreground
  -v  print the version of the control daemon executable
  without options: read commands from stdin and send them to the running daemon
(gpusim's nvidia-cuda-mps-control)
"""


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv:
        return client_main()
    if argv[0] == "-d":
        return daemonize(dict(os.environ))
    if argv[0] == "-f":
        return serve(dict(os.environ))
    if argv[0] == "-v":   # GPUSIM_WORDING: the format of the real version line is not recorded
        sys.stdout.write(f"CUDA MPS Control binary version: {CONTROL_VERSION}\n")
        return 0
    if argv[0] in ("-h", "--help"):
        sys.stdout.write(USAGE)
        return 0
    sys.stderr.write(USAGE)
    return 1


# --------------------------------------------------------------------------- for gpusim's CLI and reboot

def on_reboot(state: dict) -> None:
    """A power cycle: every control daemon recorded on this host is gone."""
    for record in state.get("mps", {}).get("daemons", {}).values():
        _terminate(record.get("pid"))
        for name in (*SOCKETS, "control_lock", "log", PID_FILE):
            with contextlib.suppress(OSError):
                os.unlink(os.path.join(record.get("pipe_directory", "/nonexistent"), name))
    state.pop("mps", None)


def stop_daemons(root: str, timeout: float = 5.0) -> int:
    """Stop every control daemon whose pid file is under ``root`` (tests, the demo, benchmarks);
    returns how many were stopped, once they have exited and removed their socket."""
    pids = []
    for dirpath, _dirs, files in os.walk(root):
        if PID_FILE in files:
            with contextlib.suppress(OSError, ValueError), open(os.path.join(dirpath, PID_FILE)) as fh:
                pids.append(int(fh.read().strip()))
    stopped = [pid for pid in pids if _terminate(pid)]
    deadline = time.monotonic() + timeout
    while any(_is_control_daemon(pid) for pid in stopped) and time.monotonic() < deadline:   # zombies: no cmdline
        time.sleep(0.01)
    return len(stopped)


def _terminate(pid: int | None) -> bool:
    if not pid or not _is_control_daemon(pid):
        return False
    try:
        os.kill(pid, signal.SIGTERM)
    except OSError:
        return False
    return True


def _is_control_daemon(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            return b"nvidia-cuda-mps-control" in fh.read()
    except OSError:
        return False
