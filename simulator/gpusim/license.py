"""vGPU guest licensing: what nvidia-gridd and the guest driver do with a license.

A vGPU guest host is created with ``gpusim init --model A100-SXM4-40GB --vgpu-guest A100-4C``:
the VM sees one vGPU of that type per GPU (NVML virtualization mode VGPU) and
licensing starts *unlicensed*.  The fake ``nvidia-gridd`` (simulator/bin) reads
gridd.conf and the client configuration token folder the way the real daemon
does and moves this state to licensed, or leaves it unlicensed with the reason
in its log; the fake NVML library (``nvmlDeviceGetGridLicensableFeatures_v4``)
and ``nvidia-smi -q`` ("vGPU Software Licensed Product") read it.

State (in the host's gpusim state file)::

    "vgpu_guest": {"type": "A100-4C", "product": "NVIDIA Virtual Compute Server", "feature_code": 4}
    "license": {"licensed": false, "server": null, "product": null, "feature_code": null,
                "expiry": null (epoch seconds), "unreachable": false, "daemon_pid": null,
                "log": [{"time": epoch, "pid": 123, "message": "..."}]}

What is modelled, and from where:

* Log lines are the real daemon's texts, as they appear in ``journalctl -u nvidia-gridd`` or
  syslog (real outputs quoted in public install notes and issue reports): "Started (PID)",
  "vGPU Software package (0)", "Ignore service provider and node-locked licensing",
  "NLS initialized", "Acquiring license. (Info: SERVER; PRODUCT)", with NLS "License acquired
  successfully. (Info: SERVER, PRODUCT; Expiry: 2025-4-22 11:18:43 GMT)" and from a legacy
  license server "License acquired successfully. (Info: http://10.103.15.200:7070/request;
  NVIDIA Virtual Compute Server)" (no expiry in that line), "Failed to acquire license from
  SERVER (Info: PRODUCT - Error: ...)", "Failed to open file /etc/nvidia/gridd.conf (No such
  file or directory)", "Unable to fetch the client configuration token file" (no token and no
  license server), "Invalid feature type requested", and for a token that cannot be read
  "Failed to decode signature from token received", "Failed to read configurations from client
  configuration token (Error: ...)", "Failed to setup cloud License Manager: 3", "Shutdown
  (PID)" with exit status 1.  Lines marked ``GPUSIM_WORDING`` below have no recorded real text
  and say what happened plainly.
* Licensed product per vGPU series (Client Licensing User Guide, "NVIDIA vGPU Software
  Licensed Products"): Q -> NVIDIA RTX Virtual Workstation, C -> NVIDIA Virtual Compute
  Server, B -> NVIDIA Virtual PC, A -> NVIDIA Virtual Applications.  NVML feature codes
  (nvml.h nvmlGridLicenseFeatureCode_t): VGPU 1, NVIDIA_RTX 2, COMPUTE 4.
* FeatureType (gridd.conf.template): 0 = unlicensed state -> no license requested; 1, 2 or 4
  on a vGPU -> the product of the vGPU type ("autodetected as per vGPU type"; real logs show a
  C-series vGPU with FeatureType=4 and a Q-series one with FeatureType=2 licensed as their
  series' product); no FeatureType line at all on a vGPU -> autodetected as well (the template
  calls 1 "Optional" on a vGPU); any other value -> "Invalid feature type requested".
* gridd.conf is read as nvidia-gridd on Linux is taken to read it: lines end at a newline, ``#``
  starts a comment line, ``Key=value`` with spaces around ``=`` allowed, one pair of double
  quotes around a value removed (NVIDIA's guides write ``ClientConfigTokenPath="<path>"``), the
  first line of a repeated key wins, a UTF-8 byte order mark at the start is skipped.  NVIDIA
  documents none of these details; they match what gpuops.sharing.vgpu_license reads.
* The server: NLS takes it from the client configuration token; without a token the legacy
  ``ServerAddress``/``ServerPort`` (default 7070) is used, shown as the real daemon shows it
  (``http://ADDRESS:PORT/request``).  Real tokens are signed JWTs that gpusim cannot verify;
  a *simulated* token is ``gpusim-cct:`` + base64 JSON naming the server (``gpusim license token``);
  anything else fails the way an unreadable token does.
* ``gpusim license unreachable on`` makes every acquisition fail (network down, firewall, DLS
  stopped).  Leases last one day (LicenseInterval default 1440 minutes).
* A reboot drops the license (it is obtained again when nvidia-gridd starts at boot).
* The process: it forks into the background (NVIDIA's unit is Type=forking; see
  simulator/systemd/nvidia-gridd.service), names itself nvidia-gridd (/proc/PID/comm, what ps and
  ``systemctl status`` show for the real one) and logs through syslog(3) as "nvidia-gridd[PID]:",
  so that under systemd ``journalctl -u nvidia-gridd`` shows its lines as it shows the real
  daemon's; the host state keeps the same lines for ``gpusim license log``.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import re
import time

from . import state as st

CONF_DEFAULT = "/etc/nvidia/gridd.conf"
TOKEN_DIR_DEFAULT = "/etc/nvidia/ClientConfigToken"
LEASE_SECONDS = 24 * 3600
LOG_KEEP = 200
GPUSIM_WORDING = "gpusim wording"  # marks log texts for which no real nvidia-gridd line was found

PRODUCTS = {
    "Q": ("NVIDIA RTX Virtual Workstation", 2),
    "C": ("NVIDIA Virtual Compute Server", 4),
    "B": ("NVIDIA Virtual PC", 1),
    "A": ("NVIDIA Virtual Applications", 1),
}
_VGPU_TYPE = re.compile(r"^[A-Z][A-Z0-9]*(?:-[0-9]+)+[QCBA]$")
TOKEN_PREFIX = "gpusim-cct:"


def vgpu_guest_config(vgpu_type: str) -> dict:
    """The ``vgpu_guest`` block of a new state for a vGPU type such as ``A100-4C`` or ``A10-24Q``."""
    if not _VGPU_TYPE.match(vgpu_type or ""):
        raise ValueError(f"--vgpu-guest {vgpu_type!r} is not a vGPU type name; give one like A100-4C, A100-2-10C, "
                         f"A10-24Q or A16-1B (board, frame buffer in GB, series letter Q, C, B or A)")
    product, code = PRODUCTS[vgpu_type[-1]]
    return {"type": vgpu_type, "product": product, "feature_code": code}


def new_license() -> dict:
    return {"licensed": False, "server": None, "product": None, "feature_code": None, "expiry": None,
            "unreachable": False, "daemon_pid": None, "log": []}


def is_guest(state: dict) -> bool:
    return bool(state.get("vgpu_guest"))


def license_of(state: dict) -> dict:
    return state.get("license") or new_license()


def on_reboot(state: dict) -> None:
    """A reboot: the lease is gone and no nvidia-gridd runs until it is started again."""
    if "license" in state:
        lic = state["license"]
        lic.update({"licensed": False, "server": None, "product": None, "feature_code": None, "expiry": None,
                    "daemon_pid": None})


def expiry_fields(epoch: float | None) -> tuple[int, int, int, int, int, int] | None:
    if epoch is None:
        return None
    tm = time.gmtime(epoch)
    return tm.tm_year, tm.tm_mon, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec


def expiry_text(epoch: float | None) -> str:
    """As the daemon and nvidia-smi print it: unpadded fields, ``2022-5-27 0:8:28 GMT``."""
    f = expiry_fields(epoch)
    return "%d-%d-%d %d:%d:%d GMT" % f if f else "N/A"


# --------------------------------------------------------------------------- tokens

def make_token(server: str) -> str:
    payload = {"server": server, "issued": int(time.time()), "nonce": os.urandom(8).hex()}
    return TOKEN_PREFIX + base64.b64encode(json.dumps(payload, sort_keys=True).encode()).decode()


def token_server(content: str) -> str | None:
    text = content.strip()
    if not text.startswith(TOKEN_PREFIX):
        return None
    try:
        payload = json.loads(base64.b64decode(text[len(TOKEN_PREFIX):], validate=True))
    except (ValueError, TypeError):
        return None
    server = payload.get("server") if isinstance(payload, dict) else None
    return server if isinstance(server, str) and server else None


# --------------------------------------------------------------------------- configuration

def read_conf(path: str) -> tuple[dict | None, str | None]:
    """gridd.conf as ``{lowercased key: value}``; (None, log line) when it cannot be opened."""
    try:
        with open(path, encoding="utf-8", errors="replace") as fh:
            text = fh.read()
    except FileNotFoundError:
        return None, f"Failed to open file {path} (No such file or directory)"
    except OSError as exc:
        return None, f"Failed to open file {path} ({exc.strerror})"
    values = {}
    for raw in (text[1:] if text.startswith("\ufeff") else text).split("\n"):
        line = raw.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, _sep, value = line.partition("=")
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] == '"':
            value = value[1:-1]
        values.setdefault(key.strip().lower(), value)
    return values, None


def read_tokens(directory: str) -> list[tuple[str, str]]:
    try:
        names = sorted(n for n in os.listdir(directory) if n.endswith(".tok"))
    except OSError:
        return []
    tokens = []
    for name in names:
        try:
            with open(os.path.join(directory, name), encoding="utf-8", errors="replace") as fh:
                tokens.append((name, fh.read()))
        except OSError:
            continue
    return tokens


# --------------------------------------------------------------------------- the daemon's decisions

class Outcome:
    """What one start (or retry) of nvidia-gridd decided."""

    def __init__(self):
        self.lines: list[str] = []
        self.fatal = False          # the daemon exits with status 1
        self.server: str | None = None
        self.product: str | None = None
        self.feature_code: int | None = None
        self.request = False        # a license is to be requested from self.server
        self.legacy = False         # self.server is a legacy license server (ServerAddress), not NLS


def configure(state: dict, conf_path: str) -> Outcome:
    """Read gridd.conf and the token folder as nvidia-gridd does at start."""
    out = Outcome()
    out.lines.append("vGPU Software package (0)")
    conf, error = read_conf(conf_path)
    if error:
        out.lines.append(error)
        conf = {}
    guest = state.get("vgpu_guest")
    if not guest:
        out.lines.append("No vGPU software licensable GPU found; nothing to license (" + GPUSIM_WORDING + ")")
        return out
    token_dir = conf.get("clientconfigtokenpath") or TOKEN_DIR_DEFAULT
    tokens = read_tokens(token_dir)
    if tokens:
        out.lines += ["Ignore service provider and node-locked licensing", "NLS initialized"]
        server = token_server(tokens[-1][1])
        if server is None:
            out.lines += ["Failed to decode signature from token received",
                          "Failed to read configurations from client configuration token (Error: invalid token)",
                          "Failed to setup cloud License Manager: 3"]
            out.fatal = True
            return out
        out.server = server
    else:
        address = conf.get("serveraddress", "")
        if not address:
            out.lines.append("Unable to fetch the client configuration token file")
            return out
        out.server = "http://%s:%s/request" % (address, conf.get("serverport") or "7070")
        out.legacy = True
    feature_type = (conf.get("featuretype") or "").strip()
    number = int(feature_type) if feature_type.isdigit() else None
    if number == 0:
        out.lines.append("FeatureType=0 (unlicensed state) in " + conf_path + ": no license requested ("
                         + GPUSIM_WORDING + ")")
        return out
    if feature_type and number not in (1, 2, 4):
        out.lines.append("Invalid feature type requested")
        return out
    out.product, out.feature_code = guest["product"], guest["feature_code"]
    out.request = True
    return out


def acquire(lic: dict, outcome: Outcome, now: float | None = None) -> list[str]:
    """One license request; updates ``lic`` and returns the log lines."""
    now = time.time() if now is None else now
    lines = [f"Acquiring license. (Info: {outcome.server}; {outcome.product})"]
    if lic.get("unreachable"):
        lines.append(f"Failed to acquire license from {outcome.server} (Info: {outcome.product} - Error: "
                     f"Failed to connect to the license server)")
        lic.update({"licensed": False, "server": None, "product": None, "feature_code": None, "expiry": None})
        return lines
    expiry = now + LEASE_SECONDS
    lic.update({"licensed": True, "server": outcome.server, "product": outcome.product,
                "feature_code": outcome.feature_code, "expiry": expiry})
    if outcome.legacy:
        lines.append(f"License acquired successfully. (Info: {outcome.server}; {outcome.product})")
    else:
        lines.append(f"License acquired successfully. (Info: {outcome.server}, {outcome.product}; "
                     f"Expiry: {expiry_text(expiry)})")
    return lines


def record(state: dict, pid: int, lines: list[str]) -> None:
    lic = state.setdefault("license", new_license())
    now = time.time()
    lic.setdefault("log", []).extend({"time": now, "pid": pid, "message": line} for line in lines)
    del lic["log"][:-LOG_KEEP]


def start(conf_path: str, pid: int, path: str | None = None) -> tuple[Outcome, list[str]]:
    """The daemon starts: forget any previous lease, read the configuration, request a license."""
    with st.transaction(path) as state:
        lic = state.setdefault("license", new_license())
        lic.update({"licensed": False, "server": None, "product": None, "feature_code": None, "expiry": None,
                    "daemon_pid": pid})
        outcome = configure(state, conf_path)
        lines = [f"Started ({pid})"] + outcome.lines
        if outcome.request:
            lines += acquire(lic, outcome)
        if outcome.fatal:
            lines.append(f"Shutdown ({pid})")
            lic["daemon_pid"] = None
        record(state, pid, lines)
    return outcome, lines


def retry(outcome: Outcome, pid: int, path: str | None = None) -> list[str]:
    """A later attempt by a running daemon that has no license yet."""
    with st.transaction(path) as state:
        lic = state.setdefault("license", new_license())
        if lic.get("licensed") or not outcome.request:
            return []
        lines = acquire(lic, outcome)
        record(state, pid, lines)
    return lines


def stop(pid: int, path: str | None = None) -> None:
    """SIGTERM: the daemon returns its license and exits."""
    with st.transaction(path) as state:
        lic = state.setdefault("license", new_license())
        if lic.get("daemon_pid") == pid:
            lic["daemon_pid"] = None
        lic.update({"licensed": False, "server": None, "product": None, "feature_code": None, "expiry": None})
        record(state, pid, [f"Shutdown ({pid})"])


def log_lines(state: dict, count: int | None = None, host: str | None = None) -> list[str]:
    """The daemon's log as ``journalctl -u nvidia-gridd`` prints it (short format)."""
    entries = license_of(state).get("log", [])
    if count is not None:
        entries = entries[-count:] if count > 0 else []
    host = host or state.get("host") or "gpusim"
    return [time.strftime("%b %d %H:%M:%S", time.localtime(e["time"])) + f" {host} nvidia-gridd[{e['pid']}]: "
            + e["message"] for e in entries]


def describe(state: dict) -> list[str]:
    guest = state.get("vgpu_guest")
    if not guest:
        return ["not a vGPU guest (no vGPU software licensing)"]
    lic = license_of(state)
    status = ("Licensed (Expiry: %s)" % expiry_text(lic["expiry"])) if lic.get("licensed") else \
        "Unlicensed (Unrestricted)"
    lines = [f"vGPU {guest['type']}: {guest['product']}", f"License Status: {status}"]
    if lic.get("licensed"):
        lines.append(f"server: {lic['server']}")
    lines.append("license server unreachable: " + ("on" if lic.get("unreachable") else "off"))
    lines.append("nvidia-gridd: " + (f"running (pid {lic['daemon_pid']})" if lic.get("daemon_pid") else "not running"))
    return lines


# --------------------------------------------------------------------------- the nvidia-gridd process

USAGE = """usage: nvidia-gridd [--foreground] [--once]

gpusim's nvidia-gridd (the vGPU licensing daemon of the guest driver).  Like the real one it
daemonizes: the unit NVIDIA's guest driver installs is Type=forking, ExecStart=/usr/bin/nvidia-gridd,
ExecStopPost=/bin/rm -rf /var/run/nvidia-gridd (simulator/systemd/nvidia-gridd.service), and logs to
syslog as "nvidia-gridd[PID]: ..." (journalctl -u nvidia-gridd).  It writes its pid to
/var/run/nvidia-gridd/nvidia-gridd.pid, the file NVIDIA's driver container stops it by
(NVIDIA/gpu-driver-container, ubuntu22.04/nvidia-driver, _unload_driver, commit 7796e735).
gpusim-only options: --foreground (do not fork; log lines also to stderr), --once (decide, log and
exit: no daemon).  Environment: GPUSIM_STATE, GPUSIM_GRIDD_CONF (default /etc/nvidia/gridd.conf),
GPUSIM_GRIDD_RUNDIR (default /var/run/nvidia-gridd), GPUSIM_GRIDD_RETRY (seconds between attempts, 5).
"""

PROCESS_NAME = "nvidia-gridd"   # what ps and systemctl status show for the real daemon ("Main PID: N (nvidia-gridd)")


class _Log:
    """Where the daemon's lines go: syslog (the journal under systemd) like the real daemon, the host
    state (``gpusim license log``), and stderr while not detached (--foreground, --once)."""

    def __init__(self, to_stderr: bool):
        import syslog
        self.syslog = syslog
        self.to_stderr = to_stderr
        syslog.openlog(PROCESS_NAME, syslog.LOG_PID, syslog.LOG_DAEMON)

    def emit(self, lines: list[str]) -> None:
        import sys
        for line in lines:
            level = self.syslog.LOG_ERR if line.startswith("Failed") else self.syslog.LOG_INFO
            self.syslog.syslog(level, line)   # no /dev/log (no syslog daemon): silently nowhere, as for the real one
            if self.to_stderr:
                sys.stderr.write(line + "\n")
        if self.to_stderr:
            sys.stderr.flush()


def _name_process() -> None:
    """The process name the real daemon has, so that ps, pgrep -x and systemctl status show nvidia-gridd."""
    with contextlib.suppress(OSError), open("/proc/self/comm", "w") as fh:
        fh.write(PROCESS_NAME)


def _detach() -> None:
    """A classic daemon: own session, stdio on /dev/null (a caller waiting on our output returns)."""
    os.setsid()
    fd = os.open(os.devnull, os.O_RDWR)
    for target in (0, 1, 2):
        os.dup2(fd, target)
    if fd > 2:
        os.close(fd)


def daemon_main(argv: list[str]) -> int:
    import signal
    import sys

    args = list(argv)
    if "-h" in args or "--help" in args:
        sys.stdout.write(USAGE)
        return 0
    unknown = [a for a in args if a not in ("--foreground", "--once")]
    if unknown:
        sys.stderr.write(f"nvidia-gridd: unknown option {unknown[0]}\n" + USAGE)
        return 2
    conf_path = os.environ.get("GPUSIM_GRIDD_CONF", CONF_DEFAULT)
    run_dir = os.environ.get("GPUSIM_GRIDD_RUNDIR", "/var/run/nvidia-gridd")
    retry_every = float(os.environ.get("GPUSIM_GRIDD_RETRY", "5"))
    try:
        st.load()
    except st.StateError as exc:
        sys.stderr.write(f"nvidia-gridd: {exc}\n")
        return 1
    _name_process()

    if "--once" in args:
        log = _Log(to_stderr=True)
        outcome, lines = start(conf_path, os.getpid())
        log.emit(lines)
        with st.transaction() as state:   # --once leaves no daemon behind
            if state.get("license", {}).get("daemon_pid") == os.getpid():
                state["license"]["daemon_pid"] = None
        return 1 if outcome.fatal else 0

    foreground = "--foreground" in args
    if not foreground:
        child = os.fork()
        if child:
            _write_pid(run_dir, child)   # before the parent exits, as systemd's Type=forking expects
            return 0
        _detach()
    pid = os.getpid()
    _write_pid(run_dir, pid)
    log = _Log(to_stderr=foreground)
    stopping = []
    signal.signal(signal.SIGTERM, lambda *_: stopping.append(True))
    signal.signal(signal.SIGINT, lambda *_: stopping.append(True))
    outcome, lines = start(conf_path, pid)
    log.emit(lines)
    if outcome.fatal:
        _remove_pid(run_dir)
        return 1
    while not stopping:
        deadline = time.monotonic() + retry_every
        while not stopping and time.monotonic() < deadline:
            time.sleep(0.2)
        if stopping:
            break
        log.emit(retry(outcome, pid))
    stop(pid)
    log.emit([f"Shutdown ({pid})"])
    _remove_pid(run_dir)
    return 0


def _write_pid(run_dir: str, pid: int) -> None:
    try:
        os.makedirs(run_dir, exist_ok=True)
        with open(os.path.join(run_dir, "nvidia-gridd.pid"), "w") as fh:
            fh.write(f"{pid}\n")
    except OSError:
        pass  # not root outside a test host: the pid file is a convenience, systemd finds the pid itself


def _remove_pid(run_dir: str) -> None:
    with contextlib.suppress(OSError):
        os.unlink(os.path.join(run_dir, "nvidia-gridd.pid"))
