# Copyright (c) gpuops.sharing contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""MPS on one host: observe and apply for the runner. Private to this collection: not a public API.

The host half of the ``mps`` module: :class:`HostMps` observes every target's control daemon
(its defaults and servers, through ``nvidia-cuda-mps-control`` with commands on stdin, as NVIDIA
documents), lets :mod:`_mps` plan, and applies the planned operations one by one for
:func:`_runner.run`.  Every command to a daemon runs under a timeout: a daemon that is stopped
(``kill -STOP``) or hung accepts the connection and never answers, so waiting for its reply
without a limit would hang the module.  Decisions are made in :mod:`_mps`.
"""

from __future__ import annotations

import contextlib
import os
import time
from concurrent.futures import ThreadPoolExecutor

from ansible_collections.gpuops.sharing.plugins.module_utils import _boot, _host, _mps
from ansible_collections.gpuops.sharing.plugins.module_utils._nvml import NvmlError
from ansible_collections.gpuops.sharing.plugins.module_utils._runner import Op


class DaemonError(Exception):
    """Talking to a control daemon failed; the message names the target and what it said."""


class DaemonTimeout(DaemonError):
    """A control daemon did not answer within the timeout (stopped or hung): not retried."""


ERRORS = (_mps.MpsError, DaemonError, NvmlError, OSError)
TIMED_OUT = _host.TIMED_OUT  # what _host.module_runner returns for a command stopped at its timeout


def inventory(nv) -> list[dict]:
    """Every GPU with what targets are made of: identity, memory, compute mode, MIG devices."""
    gpus = []
    for gpu in nv.gpus():
        facts = nv.summary(gpu)
        gpus.append({"index": gpu.index, "uuid": gpu.uuid, "name": gpu.name,
                     "memory_total_mib": facts["memory_total_mib"], "compute_mode": facts["compute_mode"],
                     "mig_enabled": facts["mig_enabled"],
                     "mig_devices": nv.mig_devices(gpu) if facts["mig_enabled"] else []})
    return gpus


class Control:
    """One target's control daemon, reached through the nvidia-cuda-mps-control client."""

    def __init__(self, run, binary: str | None, target: dict, timeout: float = 10.0, runner=None):
        """``run`` is the ``(argv, data, env) -> (rc, stdout, stderr)`` seam for commands bounded by
        ``timeout``; ``runner(seconds)`` makes one for a longer bound (``quit -t``)."""
        self.run = run
        self.runner = runner
        self.binary = binary
        self.target = target
        self.timeout = timeout
        self.env = {"CUDA_MPS_PIPE_DIRECTORY": target["pipe_directory"], "LC_ALL": "C", "LANG": "C"}

    def _send(self, commands: list[str], run=None, timeout: float | None = None) -> str:
        if not self.binary:
            raise DaemonError("nvidia-cuda-mps-control is not on PATH: install the NVIDIA driver's compute utilities "
                              "(nvidia-compute-utils or the CUDA toolkit's MPS binaries)")
        rc, out, err = (run or self.run)([self.binary], "".join(c + "\n" for c in commands), self.env)
        if rc == TIMED_OUT and "did not finish within" in err:
            raise DaemonTimeout(
                f"{self.target['name']}: the MPS control daemon on {self.target['control_socket']} did not answer "
                f"{'; '.join(commands)} within {timeout or self.timeout:g} s (option timeout); it accepts connections "
                f"but does not reply, so it is stopped (SIGSTOP) or hung: look at its process (systemctl status "
                f"nvidia-mps@{self.target['name']}) and {self.target['log_directory']}/control.log, and restart it")
        if _mps.is_no_daemon(out + err):
            raise ConnectionError(self.target["control_socket"])
        if rc != 0:
            raise DaemonError(f"{self.target['name']}: nvidia-cuda-mps-control failed (rc={rc}) on "
                              f"{'; '.join(commands)}: {(err or out).strip()}")
        return out

    def query(self, commands: list[tuple]) -> list:
        """Ask several questions at once: every reply but the last is one line (checked by its parser).

        ``commands`` are ``(command, parser)`` or ``(command, parser, optional)``.  The client takes any
        number of commands on stdin and prints the replies one after the other; if the batch cannot be
        split unambiguously, or fails, each command is asked on its own.  An optional command that the
        daemon does not answer as expected (a command an older driver does not have) gives ``None``.
        """
        try:
            text = self._send([c[0] for c in commands])
            lines = text.splitlines(keepends=True)
            values = [c[1](lines[i] if i < len(lines) else "", c[0]) for i, c in enumerate(commands[:-1])]
            values.append(commands[-1][1]("".join(lines[len(commands) - 1:]), commands[-1][0]))
            return values
        except DaemonTimeout:
            raise
        except (_mps.ReplyError, DaemonError):
            pass
        values = []
        for cmd, parse, *optional in commands:
            try:
                values.append(parse(self._send([cmd]), cmd))
            except DaemonTimeout:
                raise
            except (_mps.ReplyError, DaemonError) as exc:
                if optional and optional[0]:
                    values.append(None)
                    continue
                if isinstance(exc, DaemonError):
                    raise
                raise DaemonError(f"{self.target['name']}: unexpected reply from the MPS control daemon: {exc} (if "
                                  f"this driver's nvidia-cuda-mps-control lacks the command, it cannot manage this "
                                  f"setting)") from None
        return values

    def observe(self, desired: dict | None = None) -> dict:
        """The daemon's defaults and servers; settings not in ``desired`` may be unknown (``None``)."""
        desired = desired or {}

        def optional(key):
            return desired.get(key) is None

        if not os.path.exists(self.target["control_socket"]):
            return _mps.not_running()
        try:
            pct, limit, priority, servers = self.query([
                ("get_default_active_thread_percentage", _mps.parse_percentage_reply),
                (f"get_default_device_pinned_mem_limit {_mps.DEVICE}", _mps.parse_limit_reply,
                 optional("device_pinned_mem_limit_mib")),
                ("get_default_client_priority", _mps.parse_priority_reply, optional("client_priority")),
                ("get_server_list", _mps.parse_pid_list)])
            observed = {"running": True, "servers": [], "defaults": {
                "active_thread_percentage": pct, "device_pinned_mem_limit_mib": limit, "client_priority": priority}}
            for pid in servers:
                s_pct, s_limit, clients = self.query([
                    (f"get_active_thread_percentage {pid}", _mps.parse_percentage_reply),
                    (f"get_device_pinned_mem_limit {pid} {_mps.DEVICE}", _mps.parse_limit_reply,
                     optional("device_pinned_mem_limit_mib")),
                    (f"get_client_list {pid}", _mps.parse_pid_list)])
                observed["servers"].append({"pid": pid, "active_thread_percentage": s_pct,
                                            "device_pinned_mem_limit_mib": s_limit, "clients": clients})
            return observed
        except ConnectionError:
            return _mps.not_running()   # a socket left behind by a daemon that died

    def set(self, line: str) -> None:
        """One ``set_...`` command; they answer nothing when they succeed, or echo the percentage set
        (``25.0`` after set_default_active_thread_percentage 25), which is no refusal."""
        refused = _mps.refusals([line], self._send([line]))
        if refused:
            raise DaemonError(f"{self.target['name']}: the MPS control daemon refused {line}: {refused}")

    def start(self, desired: dict) -> None:
        for key in ("pipe_directory", "log_directory"):
            os.makedirs(self.target[key], mode=0o755, exist_ok=True)
        env = dict(_mps.daemon_environment(self.target, desired), LC_ALL="C", LANG="C")
        rc, out, err = self.run([self.binary, "-d"], None, env)
        if rc != 0:
            raise DaemonError(f"{self.target['name']}: nvidia-cuda-mps-control -d failed (rc={rc}): "
                              f"{(err or out).strip() or 'no output'}; see {self.target['log_directory']}/control.log")

    def quit(self, timeout: float, line: str = "quit") -> None:
        """Send ``line``: ``quit`` (waits for the servers' clients to finish) or ``quit -t <grace>`` (servers
        still running after that many seconds are shut down), as :func:`_mps.command` writes it; then
        wait until the daemon is gone."""
        # quit -t <grace> may answer only once the servers are shut down
        grace = float(line.split()[-1]) if line.startswith("quit -t") else 0.0
        try:
            self._send([line], self.runner(grace + self.timeout), grace + self.timeout)
        except ConnectionError:
            return
        deadline = time.monotonic() + timeout
        while os.path.exists(self.target["control_socket"]):
            if time.monotonic() > deadline:
                raise DaemonError(f"{self.target['name']}: the MPS control daemon did not stop within {timeout:g} s "
                                  f"after quit ({self.target['control_socket']} still exists)")
            time.sleep(0.05)


def parallel(fn, items: list, workers: int | None = None) -> list:
    """fn over items, a few at a time: each call runs the control client and waits on a daemon.

    More threads than CPUs only make the client processes compete (measured on 2 CPUs: 56 daemons
    read in 0.8 s with 2 threads, 1.2 s with 8), so at most one per CPU, and at most 8.
    """
    workers = workers or min(8, max(2, os.cpu_count() or 2))
    if len(items) <= 1:
        return [fn(item) for item in items]
    with ThreadPoolExecutor(max_workers=min(workers, len(items))) as pool:
        return list(pool.map(fn, items))


def _same(a: dict, b: dict) -> bool:
    """Running state, defaults and server limits equal (clients may come and go meanwhile)."""
    def key(o):
        servers = [(s["pid"], s["active_thread_percentage"], s["device_pinned_mem_limit_mib"]) for s in o["servers"]]
        return (o["running"], o["defaults"], servers)
    return key(a) == key(b)


class HostMps:
    """One host's MPS daemons for the runner: observe, plan (through ``_mps.plan_host``), check, apply, verify.

    ``params``: the module's parameters (targets, state, directories, options); ``desired``: the
    validated limits.  ``run`` is the command seam (with a timeout) for the control client.
    """

    errors = ERRORS

    def __init__(self, nv, run, binary: str | None, params: dict, desired: dict, runner=None, units=None,
                 boot_sources: dict | None = None):
        self.nv = nv
        self.boot_sources = boot_sources or {}
        self.boot_files: dict = {}
        self.boot_current: dict = {}
        self.units = units
        self.run = run
        self.runner = runner
        self.binary = binary
        self.params = params
        self.desired = desired
        self.options = {k: params[k] for k in ("state", "manage_daemon", "restart_servers", "force", "compute_mode",
                                               "timeout", "prune")}
        if units is not None and units.cfg is not None:
            self.options["manage_daemon"] = True     # started through their units
        self.warnings: list[str] = []
        self.controls: dict[str, Control] = {}
        self.after: dict[str, dict] = {}
        self.modes_after: dict[int, str] = {}

    # ------------------------------------------------------------------ observe
    def observe(self) -> dict:
        """Every target and its daemon; a daemon that cannot be read is an error, not "no daemon"."""
        p = self.params
        targets, warnings = _mps.resolve_targets(p["targets"], inventory(self.nv))
        self.warnings.extend(warnings)
        _mps.assign_directories(targets, p["pipe_directory"], p["log_directory"])
        if p["state"] == "present":
            limit = self.desired["device_pinned_mem_limit_mib"]
            _mps.validate_limit_fits(targets, limit, p["default_device_pinned_mem_limit"])
            self.warnings.extend(_mps.limit_warnings(limit, p["default_device_pinned_mem_limit"]))
        for target in targets:
            self.controls[target["name"]] = Control(self.run, self.binary, target, p["timeout"], self.runner)
        observed = parallel(lambda t: self.controls[t["name"]].observe(self.desired), targets)
        state = {"targets": targets, "observed": observed, "units": None, "python": None}
        if self.units is not None and self.units.cfg:
            self._observe_boot(p["state"])
        if self.units is not None:
            state["units"] = self.units.observe([t["name"] for t in targets])
            if self.units.cfg and p["state"] == "present" and any(t["kind"] == "mig" for t in targets):
                state["python"] = self.units.run([self.units.cfg["python"], "-c", "import pynvml"])
        return state

    def _observe_boot(self, wanted_state: str) -> None:
        """The entry script the units start and its import closure (``_boot``), in ``systemd.install_dir``."""
        install_dir = self.units.cfg["install_dir"].rstrip("/")
        lib = f"{install_dir}/{_boot.LIB_SUBDIR}"
        if wanted_state == "present":
            entry = _boot.entry_point("starts one target's MPS control daemon (nvidia-mps@<target>.service)",
                                      "_mps_exec", "exec_main", execute=True)
            self.boot_files = _boot.files(install_dir, self.boot_sources, _boot.COLLECTION_VERSION,
                                          _mps.EXEC_ENTRY, entry)
        owned = [f"{install_dir}/VERSION", f"{install_dir}/{_mps.EXEC_ENTRY}"]
        self.boot_current = _host.read_installed(sorted(set(self.boot_files) | set(owned)), lib)

    # ------------------------------------------------------------------ plan and check
    def plan(self, state: dict) -> list:
        self.planned = _mps.plan_host(state["targets"], state["observed"], self.desired, self.options)
        self.planned["units"] = {}
        if self.units is not None:
            folded = _mps.plan_units(state["targets"], self.planned, state["units"], self.desired, self.options,
                                     self.units.cfg, self.units.config_dir)
            self.planned.update(folded)
        if self.units is None or not self.units.cfg:
            return self.planned["ops"]
        if self.params["state"] == "present":   # the code the units start, before any unit starts
            return _boot.plan_files(self.boot_current, self.boot_files) + self.planned["ops"]
        if not self.options["prune"]:
            return self.planned["ops"]
        # state=absent, prune: nothing the module installed remains, after the units have stopped
        removals = _boot.plan_files(self.boot_current, {})
        install_dir = self.units.cfg["install_dir"].rstrip("/")
        dirs = [d for d in _host_dirs(install_dir) + [self.units.config_dir] if os.path.isdir(d)]
        # planned while there is something to remove: a directory the admin put files in stays, and is no change
        if dirs and (removals or any(op.kind == "remove_file" for op in self.planned["ops"])
                     or any(not os.listdir(d) for d in dirs)):
            shown = " and ".join(d for d in (install_dir, self.units.config_dir) if d in dirs) or dirs[0]
            removals.append(Op("remove_dirs", install_dir, f"remove {shown} (the directories the module made, where "
                               f"empty)", {"dirs": dirs}))
        return self.planned["ops"] + removals

    def check(self, state: dict, ops: list) -> list[str]:
        problems = list(self.planned["problems"])
        if state["python"] is not None and state["python"][0] != 0:
            problems.append(f"{self.units.cfg['python']} cannot import nvidia-ml-py (pynvml) "
                            f"({(state['python'][2] or state['python'][1]).strip()[-300:]}); the daemons of MIG devices "
                            f"find their device with it at every start: install it (pip install nvidia-ml-py) or set "
                            f"systemd.python")
        if not self.binary and any(op.kind != "set_compute_mode" for op in ops):
            problems.append("nvidia-cuda-mps-control is not on PATH: install the NVIDIA driver's compute utilities "
                            "(nvidia-compute-utils or the CUDA toolkit's MPS binaries)")
        return problems

    # ------------------------------------------------------------------ apply
    def apply(self, op, state: dict):
        if op.kind == "set_compute_mode":
            target = next(t for t in state["targets"] if t["name"] == op.data["target"])
            self.nv.set_compute_mode(self.nv.gpu(target["gpu_index"]), op.data["mode"])
            return None
        if op.kind in ("write_file", "remove_file", "remove_dirs", "daemon_reload", "start_units", "restart_units",
                       "stop_units"):
            return self._apply_unit(op)
        control = self.controls[op.data["target"]]
        if op.kind == "start_daemon":
            control.start(self.desired)
        elif op.kind in ("set_default", "set_server"):
            control.set(op.data["command"])
        elif op.kind == "quit_daemon":
            control.quit(self.params["timeout"], op.data["command"])
        else:   # a plan this host does not know how to apply is a bug, refused before any write
            raise DaemonError(f"unknown MPS operation {op.kind!r}")
        return None

    def _apply_unit(self, op):
        units = self.units
        if op.kind == "write_file":
            _host.write_file(op.data["path"], op.data["text"], op.data.get("mode", 0o644), units.move)
        elif op.kind == "remove_dirs":
            _host.remove_empty_dirs(op.data["dirs"])
        elif op.kind == "remove_file":
            if os.path.lexists(op.data["path"]):
                os.unlink(op.data["path"])
            if op.data.get("rmdir"):
                with contextlib.suppress(OSError):   # left in place when the admin put more in it
                    os.rmdir(os.path.dirname(op.data["path"]))
        elif op.kind == "daemon_reload":
            units.systemctl_batch("daemon-reload")
        elif op.kind == "start_units":
            units.systemctl_batch("enable", "--now", "--", *op.data["units"])
        elif op.kind == "restart_units":
            units.systemctl_batch("restart", "--", *op.data["units"])
        elif op.kind == "stop_units":
            units.systemctl_batch("disable", "--now", "--", *op.data["units"])
        return None

    # ------------------------------------------------------------------ verify and report
    def verify(self, state: dict, ops: list) -> list[str]:
        problems = []
        touched = {op.data["target"] for op in ops if "target" in op.data}
        touched |= {name for op in ops for name in op.data.get("targets", ())}
        targets = [t for t in state["targets"] if t["name"] in touched]
        fresh = parallel(lambda t: self.controls[t["name"]].observe(self.desired), targets)
        plans = dict(zip((t["name"] for t in state["targets"]), self.planned["targets"]))
        for target, obs in zip(targets, fresh):
            self.after[target["name"]] = obs
            expected = plans[target["name"]]["after"]
            if not _same(obs, expected):
                problems.append(
                    f"{target['name']}: the MPS control daemon does not report the requested settings after the "
                    f"change (expected {_mps.describe(target, expected, None).strip()!r}, got "
                    f"{_mps.describe(target, obs, None).strip()!r}); see {target['log_directory']}/control.log")
        if self.planned["units"]:
            now = self.units.show(sorted(self.planned["units"]))
            for unit, (active, enabled) in sorted(self.planned["units"].items()):
                if _mps.unit_on(now[unit]) != (active, enabled):
                    problems.append(f"{unit} is {now[unit].get('ActiveState')} and {now[unit].get('UnitFileState')}"
                                    f" after the change, not {'active' if active else 'inactive'} and "
                                    f"{'enabled' if enabled else 'disabled'}; see journalctl -u {unit}")
        for op in ops:
            if op.kind == "write_file" and _host.read_managed(op.data["path"]) != op.data["text"]:
                problems.append(f"{op.data['path']} does not hold what was written")
            if op.kind == "remove_file" and os.path.lexists(op.data["path"]):
                problems.append(f"{op.data['path']} still exists after removing it")
            if op.kind == "set_compute_mode":
                target = next(t for t in state["targets"] if t["name"] == op.data["target"])
                mode = self.nv.summary(self.nv.gpu(target["gpu_index"]))["compute_mode"]
                self.modes_after[target["gpu_index"]] = mode
                if mode != op.data["mode"]:
                    problems.append(f"{target['name']}: GPU {target['gpu_index']} is in compute mode {mode} after "
                                    f"setting {op.data['mode']}")
        return problems

    def result(self, state: dict, ops: list, check_mode: bool) -> dict:
        targets = []
        for target, plan in zip(state["targets"], self.planned["targets"]):
            obs = self.after.get(target["name"], plan["after"])
            targets.append({
                **{k: target[k] for k in ("name", "kind", "uuid", "gpu_index", "gpu_uuid", "mig", "memory_total_mib",
                                          "pipe_directory", "log_directory", "control_socket")},
                "running": obs["running"], "settings": _settings(obs), "servers": _servers(obs, self.desired),
                "compute_mode": self.modes_after.get(target["gpu_index"], plan["compute_mode_after"])
                if target["kind"] == "gpu" else None,
                "restart_required": plan["restart_required"],
                "operations": [op["text"] for op in plan["operations"]],
                "unit": self.units.instance(target["name"]) if self.units is not None and self.units.cfg else None,
                "daemon_environment": _mps.daemon_environment(target, self.desired),
                "client_environment": _mps.client_environment(target)})
        self._diff = {
            "before": "".join(_mps.describe(t, o, t["compute_mode"])
                              for t, o, pl in zip(state["targets"], state["observed"], self.planned["targets"])
                              if pl["operations"]),
            "after": "".join(_mps.describe(t, self.after.get(t["name"], pl["after"]), pl["compute_mode_after"])
                             for t, pl in zip(state["targets"], self.planned["targets"]) if pl["operations"])}
        boot = None
        if self.boot_files:
            install_dir = self.units.cfg["install_dir"].rstrip("/")
            boot = {"dir": install_dir, "entry_point": f"{install_dir}/{_mps.EXEC_ENTRY}",
                    "version": self.boot_files[f"{install_dir}/VERSION"].splitlines()[0],
                    "files": sorted(self.boot_files)}
        config_dir = self.units.config_dir if self.units is not None else None
        return {"targets": targets, "boot": boot,
                "summary": [_mps.summary_line(t, config_dir) for t in targets] if self.params["state"] == "present"
                else [],
                "restart_required": any(plan["restart_required"] for plan in self.planned["targets"])}

    def diff(self, result: dict) -> dict:
        return self._diff


def _settings(observed: dict) -> dict:
    d = observed["defaults"]
    limit = d["device_pinned_mem_limit_mib"]
    return {"active_thread_percentage": d["active_thread_percentage"], "client_priority": d["client_priority"],
            "device_pinned_mem_limit": None if limit is None else _mps.format_size(limit)}


def _servers(observed: dict, desired: dict) -> list[dict]:
    return [{"pid": s["pid"], "active_thread_percentage": s["active_thread_percentage"],
             "device_pinned_mem_limit": None if s["device_pinned_mem_limit_mib"] is None
             else _mps.format_size(s["device_pinned_mem_limit_mib"]),
             "clients": s["clients"], "stale": bool(_mps.stale_settings(s, desired))} for s in observed["servers"]]


# --------------------------------------------------------------------------- units and env files

MAX_FILE = 64 * 1024     # an env or unit file the module wrote is a few hundred bytes


def read_small(path: str) -> str | None:
    """A regular file's text (None when it does not exist); refuses symlinks, other file types and big files."""
    try:
        data = _host.read_bounded(path, MAX_FILE, follow=False)
    except FileNotFoundError:
        return None
    except _host.NotReadable as exc:
        if exc.reason == "too_big":
            raise _mps.MpsError(f"{path} is {exc.size} bytes, more than the {MAX_FILE} an MPS env or unit file has; "
                                f"it is not one the module wrote: move it away") from None
        raise _mps.MpsError(f"{path} is {'a symlink' if exc.reason == 'link' else 'not a regular file'}; the "
                            f"module writes and removes only regular files there: remove it or choose another "
                            f"config_dir") from None
    return data.decode("utf-8", "replace")


def _host_dirs(install_dir: str) -> list[str]:
    """The directories of the boot code, deepest first, down to ``install_dir`` itself."""
    dirs, path = [], f"{install_dir}/{_boot.LIB_SUBDIR}"
    while len(path) > len(install_dir):
        dirs.append(path)
        path = os.path.dirname(path)
    return dirs + [install_dir]


class Units:
    """The files of one host: the template unit and one EnvironmentFile per target (``cfg``, with systemd;
    None without), and the clients' env files in ``config_dir``."""

    def __init__(self, run, systemctl: str | None, cfg: dict | None, config_dir: str, move):
        self.run = run
        self.systemctl = systemctl
        self.cfg = cfg
        self.config_dir = config_dir
        self.move = move
        self.unit_path = os.path.join(cfg["unit_dir"], f"{cfg['unit_name']}@.service") if cfg else None

    def instance(self, name: str) -> str:
        return _mps.unit_instance(self.cfg["unit_name"] if self.cfg else _mps.DEFAULT_UNIT, name)

    def observe(self, names: list[str]) -> dict:
        """Files in config_dir, the template unit, old drop-ins, enabled instances and the units' states."""
        files: dict[str, str | None] = {}
        foreign: list[str] = []
        if os.path.lexists(self.config_dir) and not os.path.isdir(self.config_dir) \
                or os.path.islink(self.config_dir):
            raise _mps.MpsError(f"config_dir {self.config_dir} is not a directory (or is a symlink); give a plain "
                                f"directory")
        if os.path.isdir(self.config_dir):
            for entry in sorted(os.listdir(self.config_dir)):
                if _mps.target_file(entry) is None or not self.cfg and entry.endswith(_mps.DAEMON_FILE):
                    continue
                path = os.path.join(self.config_dir, entry)
                text = read_small(path)
                if _mps.is_ours(text):
                    files[path] = text
                else:
                    foreign.append(path)
        for name in names:
            for suffix in (_mps.DAEMON_FILE, _mps.CLIENT_FILE) if self.cfg else (_mps.CLIENT_FILE,):
                path = os.path.join(self.config_dir, name + suffix)
                if path not in files and path not in foreign:
                    files[path] = None
        if not self.cfg:
            return {"files": files, "foreign": foreign, "drop_ins": [], "states": {}}
        prefix = f"{self.cfg['unit_name']}@"
        drop_ins, enabled = [], set()
        unit_dir = self.cfg["unit_dir"]
        if os.path.isdir(unit_dir):
            for entry in sorted(os.listdir(unit_dir)):
                path = os.path.join(unit_dir, entry)
                if entry.startswith(prefix) and entry.endswith(".service.d"):
                    if os.path.lexists(os.path.join(path, "gpuops.conf")):
                        drop_ins.append(os.path.join(path, "gpuops.conf"))
                elif entry.endswith(".wants") and os.path.isdir(path) and not os.path.islink(path):
                    enabled.update(e for e in os.listdir(path) if e.startswith(prefix) and e != prefix + ".service")
        files[self.unit_path] = read_small(self.unit_path)
        units = sorted({self.instance(n) for n in names} | enabled
                       | {self.instance(_mps.target_file(os.path.basename(p))[0]) for p in files
                          if p != self.unit_path and files[p] is not None}
                       | {os.path.basename(os.path.dirname(p))[:-2] for p in drop_ins})
        return {"files": files, "foreign": foreign, "drop_ins": drop_ins, "states": self.show(units)}

    def show(self, units: list[str]) -> dict[str, dict]:
        if not units:
            return {}
        if not self.systemctl:
            raise _mps.MpsError("systemctl was not found: the systemd option needs systemd; leave it out on hosts "
                                "without systemd (with manage_daemon: true the module starts the daemons itself)")
        rc, out, err = self.run([self.systemctl, "show", "--property=Id,LoadState,ActiveState,UnitFileState",
                                 "--", *units])
        if rc != 0:
            raise DaemonError(f"systemctl show {' '.join(units)} failed (rc={rc}): {(err or out).strip()}")
        states = _mps.parse_unit_show(out)
        missing = [u for u in units if u not in states]
        if missing:
            raise DaemonError(f"systemctl show did not report {', '.join(missing)}: {out.strip()!r}")
        return states

    def systemctl_batch(self, *argv: str) -> None:
        rc, out, err = self.run([self.systemctl, *argv])
        if rc != 0:
            raise DaemonError(f"systemctl {' '.join(argv)} failed (rc={rc}): {(err or out).strip()}; see "
                              f"journalctl -u {self.cfg['unit_name']}@<target>")
