# Copyright (c) gpuops.sharing contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""vGPU guest licensing on one host: files, token, nvidia-gridd, license state. Private to this collection.

The effects of ``gpuops.sharing.vgpu_license`` for the shared runner (``_runner``): observe
gridd.conf, the token folder, the daemon and the license; plan through the pure ``_gridd.plan_run``;
apply each operation; verify by reading back.  Every file is written through the module's
``atomic_move`` (SELinux contexts, the file systems rename cannot replace on) from a temporary
file in the destination's own folder, never through a symbolic link: a link at the token's path
or as the token folder is refused in the check, and the rename replaces a path, not what a link
points to.  A gridd.conf that is a link to an existing file is written at the link's target.
No ansible imports: commands run through the ``run(argv) -> (rc, out, err)`` seam of ``_host``.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import signal
import stat
import tempfile
import time

from ansible_collections.gpuops.sharing.plugins.module_utils import _gridd, _host
from ansible_collections.gpuops.sharing.plugins.module_utils._nvml import Nvml, NvmlError
from ansible_collections.gpuops.sharing.plugins.module_utils._runner import Refused, RunError

SERVICE = "nvidia-gridd"
LOG_LINES = 20
SYSLOG_FILES = ("/var/log/messages", "/var/log/syslog")
CONF_MAX_BYTES = 1024 * 1024
# The daemon's pid file.  NVIDIA's own driver container stops nvidia-gridd by the pid in this file
# (NVIDIA/gpu-driver-container, ubuntu22.04/nvidia-driver, _unload_driver, commit 7796e735:
# "if [ -f /var/run/nvidia-gridd/nvidia-gridd.pid ] ... kill -SIGTERM"), and the unit the guest
# driver installs removes that folder after a stop (ExecStopPost=/bin/rm -rf /var/run/nvidia-gridd).
PIDFILE = "/var/run/nvidia-gridd/nvidia-gridd.pid"
STOP_TIMEOUT = 10.0
# One lock for every run of the module on a host (fcntl.flock): concurrent runs edit gridd.conf and
# the token folder one after the other, so that no run's read-modify-write loses another's edit.
LOCK_DIRS = ("/run/lock", "/run", "/var/lock")
LOCK_NAME = "gpuops-sharing.vgpu_license.lock"
LOCK_TIMEOUT = 120.0
ERRORS = (_gridd.GriddError, NvmlError, OSError)


def read_text(path: str) -> str | None:
    """gridd.conf as text, None when it does not exist.

    Only a regular file of at most ``CONF_MAX_BYTES`` is read (a FIFO or ``/dev/zero`` given as
    path is refused, not read).  Bytes that are not UTF-8 (a comment written in Latin-1, say) are
    kept as they are: they are decoded with ``surrogateescape`` and written back the same way
    (``encode_text``).  A file with NUL bytes (saved as UTF-16 by Windows Notepad) is refused:
    nvidia-gridd reads plain text.
    """
    if os.path.isdir(path):
        raise _gridd.GriddError(f"path={path} is a directory; give the gridd.conf file, e.g. {_gridd.DEFAULT_PATH}")
    try:
        data = read_regular(path, CONF_MAX_BYTES, "path")
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise _gridd.GriddError(f"cannot read {path}: {exc.strerror} (run the task with become: true)") from None
    if b"\x00" in data:
        hint = " (it looks like UTF-16, as Windows Notepad saves 'Unicode')" if data[:2] in (b"\xff\xfe", b"\xfe\xff") \
            else ""
        raise _gridd.GriddError(f"{path} contains NUL bytes{hint}; nvidia-gridd reads gridd.conf as plain ASCII/UTF-8 "
                                f"text: save it as UTF-8 (or remove it to have it created again)")
    return data.decode("utf-8", "surrogateescape")


def read_regular(path: str, limit: int, what: str, follow: bool = True) -> bytes:
    """The bytes of a regular file of at most ``limit`` bytes (``_host.read_bounded``); GriddError for
    anything else.  ``follow=False``: a symlink raises OSError ELOOP, as ``O_NOFOLLOW`` does."""
    try:
        return _host.read_bounded(path, limit, follow)
    except _host.NotReadable as exc:
        if exc.reason == "link":
            raise OSError(errno.ELOOP, os.strerror(errno.ELOOP), path) from None
        if exc.reason != "too_big":
            raise _gridd.GriddError(f"{what}: {path} is not a regular file; give a regular file") from None
        raise _gridd.GriddError(f"{what}: {path} is {exc.size} bytes, more than the {limit} bytes read; "
                                f"check that it is the right file") from None


def encode_text(text: str) -> bytes:
    """The bytes of a text from ``read_text`` (undecodable bytes come back unchanged)."""
    return text.encode("utf-8", "surrogateescape")


def kind_of(path: str) -> str:
    """``missing``, ``link``, ``dir``, ``file`` (regular) or ``other``, without following a link."""
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        return "missing"
    if stat.S_ISLNK(info.st_mode):
        return "link"
    if stat.S_ISDIR(info.st_mode):
        return "dir"
    return "file" if stat.S_ISREG(info.st_mode) else "other"


def write_file(atomic_move, path: str, data: bytes, mode: int | None = None) -> None:
    """Replace ``path`` by ``data``: a temporary file in the same folder, then ``atomic_move``.

    ``atomic_move`` (``AnsibleModule.atomic_move``) keeps the old file's owner, mode and SELinux
    context, or gives a new file the folder's default context.  The rename replaces the path
    itself: a link planted there meanwhile is replaced, its target is never written.  ``mode`` is
    then set on the new file through a descriptor opened with ``O_NOFOLLOW``.
    """
    directory = os.path.dirname(path) or "."
    fd, tmp = tempfile.mkstemp(prefix=".gpuops-", dir=directory)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.chmod(tmp, 0o644 if mode is None else mode)
        atomic_move(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    if mode is not None:
        set_mode(path, mode)


def set_mode(path: str, mode: int) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    try:
        os.fchmod(fd, mode)
    finally:
        os.close(fd)


class Lock:
    """An exclusive ``fcntl.flock`` on one lock file per host, waited for at most ``timeout`` seconds."""

    def __init__(self, dirs=None, name: str = LOCK_NAME, timeout: float | None = None):
        self.dirs = LOCK_DIRS if dirs is None else dirs
        self.name = name
        self.timeout = LOCK_TIMEOUT if timeout is None else timeout
        self.fd = None
        self.path = None

    def acquire(self) -> None:
        if self.fd is not None:
            return
        directory = next((d for d in self.dirs if os.path.isdir(d)), None)
        if directory is None:
            raise _gridd.GriddError(f"no folder for the lock file ({', '.join(self.dirs)}); cannot serialise runs")
        self.path = os.path.join(directory, self.name)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0), 0o600)
        deadline = time.monotonic() + self.timeout
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError as exc:
                if exc.errno not in (errno.EAGAIN, errno.EACCES) or time.monotonic() >= deadline:
                    os.close(fd)
                    raise _gridd.GriddError(f"another run of gpuops.sharing.vgpu_license holds {self.path} for "
                                            f"more than {self.timeout:g} s; try again when it has finished") from None
                time.sleep(0.05)
        self.fd = fd

    def release(self) -> None:
        if self.fd is not None:
            with contextlib.suppress(OSError):
                fcntl.flock(self.fd, fcntl.LOCK_UN)
            os.close(self.fd)
            self.fd = None


# --------------------------------------------------------------------------- tokens

def read_token(path: str) -> tuple[bytes, int]:
    """The token's bytes and mode, never through a link (the check refuses a link first)."""
    data = read_regular(path, _gridd.TOKEN_MAX_BYTES * 4, "the token", follow=False)
    return data, stat.S_IMODE(os.lstat(path).st_mode)


def _listdir(directory: str) -> list[str]:
    try:
        return os.listdir(directory)
    except OSError:
        return []


# --------------------------------------------------------------------------- license state

def read_license(run, nvidia_smi: str | None, nvml_factory=Nvml) -> tuple[dict, str | None]:
    """(license result, error) from NVML, with ``nvidia-smi -q`` for GPUs whose driver lacks the call."""
    gpus = []
    missing = False
    try:
        with nvml_factory() as nv:
            for gpu in nv.gpus():
                mode = nv.virtualization_mode(gpu)
                grid = nv.grid_license(gpu)
                entry = {"index": gpu.index, "name": gpu.name, "uuid": gpu.uuid, "virtualization_mode": mode,
                         "license_supported": False, "licensed": False, "feature": None, "feature_code": None,
                         "expiry": None}
                if grid is None:
                    missing = True
                elif grid["supported"] and grid["features"]:
                    feature = next((f for f in grid["features"] if f["licensed"]),
                                   next((f for f in grid["features"] if f["enabled"]), grid["features"][0]))
                    entry.update({"license_supported": True, "licensed": feature["licensed"],
                                  "feature": feature["product"] or None, "feature_code": feature["code"],
                                  "expiry": _gridd.expiry_text(feature["expiry"]) if feature["licensed"] else None})
                gpus.append(entry)
    except NvmlError as exc:
        return _gridd.empty_license(), exc.message
    source = "nvml"
    if missing and nvidia_smi:
        rc, out, err = run([nvidia_smi, "-q"])
        if rc == 0:
            parsed = {g["index"]: g for g in _gridd.parse_smi_query(out)}
            for entry in gpus:
                smi = parsed.get(entry["index"])
                if smi and smi["license_supported"]:
                    entry.update({k: smi[k] for k in ("license_supported", "licensed", "feature", "expiry")})
                    entry["virtualization_mode"] = entry["virtualization_mode"] or smi["virtualization_mode"]
            source = "nvml+nvidia-smi"
    return _gridd.summarize(gpus, source), None


def wait_for_license(read, timeout: float, interval: float = 1.0, sleep=time.sleep, clock=time.monotonic):
    """Poll ``read() -> (license, error)`` until licensed or ``timeout`` seconds; returns (license, error, waited)."""
    start = clock()
    while True:
        result, error = read()
        waited = round(clock() - start, 1)
        if error is None and result["state"] == "licensed":
            return result, None, waited
        if error is None and result["state"] == "unknown":
            return result, None, waited      # nothing here will ever be licensed: say so at once
        if clock() - start >= timeout:
            return result, error, waited
        sleep(min(interval, max(0.0, timeout - (clock() - start))))


def gridd_log(run, journalctl: str | None, count: int = LOG_LINES, files=SYSLOG_FILES) -> list[str]:
    """The daemon's last log lines: the journal, else syslog files (/var/log/messages, /var/log/syslog)."""
    if journalctl:
        rc, out, _err = run([journalctl, "--unit", SERVICE, "--lines", str(count), "--no-pager", "--quiet"])
        lines = [line for line in out.splitlines() if line.strip()] if rc == 0 else []
        if lines:
            return lines[-count:]
    for path in files:
        try:
            with open(path, encoding="utf-8", errors="replace") as fh:
                lines = [line.rstrip("\n") for line in fh if SERVICE in line]
        except OSError:
            continue
        if lines:
            return lines[-count:]
    return []


def systemd_booted(marker: str = "/run/systemd/system") -> bool:
    """Whether systemd is the running service manager (the test of sd_booted(3))."""
    return os.path.isdir(marker)


def _alive(pid: int, proc_root: str = "/proc") -> bool:
    """A live process (not a zombie waiting to be reaped)."""
    try:
        with open(os.path.join(proc_root, str(pid), "stat"), encoding="ascii", errors="replace") as fh:
            return fh.read().rsplit(")", 1)[-1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def daemon_state(pidfile: str | None = None, proc_root: str = "/proc") -> dict:
    """The running nvidia-gridd as its pid file names it.

    ``pid``: the pid of the file when that process is alive and named nvidia-gridd (a stale file,
    or a pid reused by another program, gives None).  ``others``: live processes named
    nvidia-gridd that the file does not name; they are reported, never signalled.
    """
    pidfile = PIDFILE if pidfile is None else pidfile
    pid = None
    try:
        text = read_regular(pidfile, 64, "the pid file", follow=False).decode("ascii", "replace").strip()
        pid = int(text) if text.isdigit() and int(text) > 1 else None
    except (OSError, _gridd.GriddError):
        pid = None
    names = _host.process_names(proc_root)
    if pid is not None and not (names.get(pid) == SERVICE and _alive(pid, proc_root)):
        pid = None
    others = sorted(p for p, comm in names.items() if comm == SERVICE and p != pid and _alive(p, proc_root))
    return {"pidfile": pidfile, "pid": pid, "others": others}


class HostGridd:
    """One vGPU guest for the runner: observe, plan (through ``_gridd.plan_run``), check, apply, verify."""

    errors = ERRORS

    def __init__(self, request: dict, run_command, atomic_move, backup, binaries: dict, read_license,
                 lock: Lock | None = None):
        self.request = request
        self.run_command = run_command
        self.atomic_move = atomic_move
        self.backup = backup
        self.binaries = binaries
        self.read_license = read_license
        self.lock = lock
        self.warnings: list[str] = []
        self.facts: dict = {}
        self.planned: dict = {}
        self.backup_file = None
        self.restarted = False
        self.waited = 0.0
        self.license = None

    # ------------------------------------------------------------------ observe
    def observe(self) -> dict:
        if self.lock is not None:
            self.lock.acquire()   # held until the wait (or the end): the read-modify-write is one step
        path = self.request["path"]
        facts = {"path": path, "write_path": path, "link": None, "dangling": False}
        if os.path.islink(path):
            target = os.path.realpath(path)
            facts.update(link=target, write_path=target, dangling=not os.path.exists(target))
        facts["text"] = None if facts["dangling"] else read_text(facts["write_path"])
        current = _gridd.current_values(_gridd.parse(facts["text"] or ""))
        if self.request.get("state") == "absent":   # the folder the daemon reads now, whatever remove takes out
            tdir = _gridd.token_dir({}, [], current)
        else:
            tdir = _gridd.token_dir(self.request["desired"], self.request["remove"], current)
        tpath = os.path.join(tdir, self.request["token_name"])
        facts.update(token_dir=tdir, token_dir_kind=kind_of(tdir), token_path=tpath, token_content=None,
                     token_mode=None)
        facts["token_kind"] = kind_of(tpath) if facts["token_dir_kind"] == "dir" else "missing"
        if facts["token_kind"] == "file":
            try:
                facts["token_content"], facts["token_mode"] = read_token(tpath)
            except OSError as exc:
                raise _gridd.GriddError(f"cannot read the token {tpath}: {exc.strerror} (run the task with "
                                        f"become: true)") from None
        facts["tokens"] = sorted(n for n in _listdir(tdir) if n.endswith(".tok")) \
            if facts["token_dir_kind"] == "dir" else []
        facts["systemd"] = systemd_booted()
        pidfile = self.request.get("pid_file") or PIDFILE
        facts["daemon"] = {"pidfile": pidfile, "pid": None, "others": []} if facts["systemd"] \
            else daemon_state(pidfile)
        facts["unit"] = None
        if facts["systemd"] and self.request.get("enable") and self.binaries.get("systemctl"):
            rc, out, err = self.run_command([self.binaries["systemctl"], "show",
                                             "--property=LoadState,UnitFileState,ActiveState", SERVICE])
            if rc != 0:
                raise _gridd.GriddError(f"systemctl show {SERVICE} failed (rc={rc}): {(err or out).strip()}")
            facts["unit"] = _gridd.parse_unit_show(out)
        facts["binaries"] = dict(self.binaries)
        facts["license"], facts["license_error"] = self.read_license()
        self.facts = facts
        return facts

    # ------------------------------------------------------------------ plan and check
    def plan(self, facts: dict):
        self.planned = _gridd.plan_run(facts, self.request)
        self._warn(facts)
        return self.planned["ops"]

    def _warn(self, facts: dict) -> None:
        path = facts["path"]
        still = {key.lower() for key in _gridd.repeated_keys(self.planned["new_text"])}
        for key, where in _gridd.repeated_keys(facts["text"]).items():
            if key.lower() in still:
                self.warnings.append(
                    f"{path} sets {key} on more than one line (" + ", ".join(
                        f"line {number}: {_gridd.shown(value)!r}" for number, value in where) + "); NVIDIA does "
                    "not document which one nvidia-gridd uses (this module reads the first). Remove the extra "
                    "lines, or manage the key with this module, which keeps one")
        if "feature_type" in self.request["desired"]:
            modes = [g.get("virtualization_mode") for g in facts["license"]["gpus"] if g.get("virtualization_mode")]
            self.warnings.extend(_gridd.feature_type_warnings(self.request["desired"]["feature_type"], modes))

    def check(self, facts: dict, ops) -> list[str]:
        problems = self.planned["problems"]
        if problems:
            # raised here rather than returned, so that the refusal reports what was read (license, config)
            raise Refused("; ".join(problems), result=self.result(facts, ops, True, refused=True),
                          operations=[op.text for op in ops])
        return []

    # ------------------------------------------------------------------ apply
    def apply(self, op, facts: dict):
        try:
            return self._apply(op, facts)
        except OSError as exc:
            where = exc.filename or op.target
            raise RunError(f"{op.text} failed: {where}: {exc.strerror or exc} (run the task with become: true)",
                           result=self.partial()) from None

    def _apply(self, op, facts: dict):
        kind, target = op.kind, op.data.get("path")
        if kind == "create_dir":
            os.makedirs(target, mode=0o755, exist_ok=True)
            if kind_of(target) != "dir":
                raise RunError(f"the token folder {target} is not a folder after creating it", result=self.partial())
        elif kind == "write_token":
            self._no_link(target)
            write_file(self.atomic_move, target, self.request["content"], _gridd.TOKEN_MODE)
        elif kind == "chmod_token":
            set_mode(target, _gridd.TOKEN_MODE)
        elif kind == "remove_token":
            os.unlink(target)
        elif kind == "write_conf":
            if op.data["backup"]:
                self.backup_file = self.backup(target)
            os.makedirs(os.path.dirname(target) or ".", mode=0o755, exist_ok=True)
            write_file(self.atomic_move, target, encode_text(self.planned["new_text"]))
        elif kind in ("enable_unit", "start_unit"):
            verb = "enable" if kind == "enable_unit" else "start"
            rc, out, err = self.run_command([self.binaries["systemctl"], verb, SERVICE])
            if rc != 0:
                raise RunError(f"systemctl {verb} {SERVICE} failed (rc={rc}): {(err or out).strip()}"
                               + self._log_text(), result=self.partial())
        elif kind == "restart":
            self._restart(facts, op)
            self.restarted = True
        elif kind == "wait":
            if self.lock is not None:
                self.lock.release()   # the files are written: other runs need not wait for this license
            self._wait()
        else:  # pragma: no cover - the planner makes no other kind
            raise RunError(f"unknown operation {kind}")
        return None

    def _no_link(self, path: str) -> None:
        if kind_of(path) not in ("missing", "file"):
            raise RunError(f"{path} changed since it was read: it is now {kind_of(path)}; nothing was written "
                           f"through it. Remove it and run again", result=self.partial())

    def _restart(self, facts: dict, op) -> None:
        if facts["systemd"]:
            rc, out, err = self.run_command([self.binaries["systemctl"], "restart", SERVICE])
            if rc != 0:
                raise RunError(f"systemctl restart {SERVICE} failed (rc={rc}): {(err or out).strip()}"
                               + self._log_text(), result=self.partial())
            return
        pid = op.data["pid"]
        if pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
            deadline = time.monotonic() + STOP_TIMEOUT
            while _alive(pid) and time.monotonic() < deadline:
                time.sleep(0.1)
            if _alive(pid):
                raise RunError(f"nvidia-gridd (pid {pid}) did not stop within {STOP_TIMEOUT:g} s after SIGTERM",
                               result=self.partial())
        rc, out, err = self.run_command([self.binaries["nvidia-gridd"]])
        if rc != 0:
            raise RunError(f"{self.binaries['nvidia-gridd']} failed to start (rc={rc}): {(err or out).strip()}"
                           + self._log_text(), result=self.partial())

    def _wait(self) -> None:
        timeout = self.request["timeout"]
        result, error, self.waited = wait_for_license(self.read_license, timeout)
        self.license = result
        if error is None and result["state"] == "licensed":
            return
        if error is not None:
            msg = f"cannot read the license state: {error}"
        elif result["state"] == "unknown":
            msg = "no GPU of this host supports vGPU software licensing: " + _gridd.unlicensed_reason(result)
        else:
            msg = (f"nvidia-gridd did not license this VM within {timeout} s: {_gridd.unlicensed_reason(result)}. "
                   f"Check that the license server named in the client configuration token (or ServerAddress) is "
                   f"reachable from the VM, that the token is current, and that the clock is synchronised "
                   f"(timedatectl)")
        raise RunError(msg + self._log_text(), result=self.partial())

    def _log_text(self) -> str:
        lines = gridd_log(self.run_command, self.binaries.get("journalctl"))
        if not lines:
            return ". No nvidia-gridd log lines were found (journalctl -u nvidia-gridd, /var/log/messages)"
        return ". Last nvidia-gridd log lines:\n" + "\n".join(lines)

    # ------------------------------------------------------------------ verify and report
    def verify(self, facts: dict, ops) -> list[str]:
        problems = []
        if self.planned["changes"]:
            text = read_text(facts["write_path"])
            if text != self.planned["new_text"]:
                problems.append(f"{facts['path']} does not hold what was written (another program changed it?)")
        if self.planned["token"]["write"] or self.planned["token"]["chmod"]:
            data, mode = read_token(facts["token_path"])
            if data != self.request["content"] or mode != _gridd.TOKEN_MODE:
                problems.append(f"{facts['token_path']} does not hold the token with mode {_gridd.TOKEN_MODE:04o}")
        for other in self.planned["token"]["remove"]:
            path = os.path.join(facts["token_dir"], other)
            if kind_of(path) != "missing":
                problems.append(f"{path} is still there after removing it")
        if not self.request["wait"]:
            self.license, _error = self.read_license()
        return problems

    def partial(self) -> dict:
        """The result so far, for a failure after the check."""
        return self.result(self.facts, self.planned.get("ops", []), False)

    def result(self, facts: dict, ops, check_mode: bool, refused: bool = False) -> dict:
        planned = self.planned
        token = planned.get("token", {"write": False, "chmod": False, "remove": []})
        tdir = facts.get("token_dir", "")
        tpath = facts.get("token_path")
        writes = planned.get("writes", False) and not refused
        removed = [os.path.join(tdir, name) for name in token["remove"]]
        present = (self.request["content"] is not None and not refused) or facts.get("token_kind") == "file"
        if self.request.get("state") == "absent" and not refused:
            present = False
        return {
            "path": facts.get("path", self.request["path"]),
            "config": _gridd.config_view(facts.get("text") if refused else planned.get("new_text")),
            "config_changes": [] if refused else [_gridd.change_text(*c) for c in planned.get("changes", [])],
            "backup_file": self.backup_file,
            "token": {"path": tpath, "present": bool(present),
                      "changed": bool(token["write"] or token["chmod"] or tpath in removed) and not refused},
            "tokens_removed": [] if refused else removed,
            "restarted": self.restarted,
            "restart_required": bool(writes and not self.restarted),
            "waited": self.waited,
            "license": self.license if self.license is not None else facts.get("license", _gridd.empty_license()),
        }

    def diff(self, result: dict) -> dict:
        facts, planned = self.facts, self.planned
        path = facts["path"]
        before = _gridd.current_values(_gridd.parse(facts["text"] or ""))
        after = _gridd.current_values(_gridd.parse(planned["new_text"]))
        absent = [] if facts["text"] is not None else [f"{path}: absent"]
        return {"before_header": path, "after_header": path,
                "before": "\n".join(absent + _gridd.diff_lines(before) + self._token_diff("before")) + "\n",
                "after": "\n".join(_gridd.diff_lines(after) + self._token_diff("after")) + "\n"}

    def _token_diff(self, which: str) -> list[str]:
        facts, token = self.facts, self.planned["token"]
        lines = []
        if self.request["content"] is not None:
            if which == "before":
                info = None if facts["token_content"] is None else (len(facts["token_content"]), facts["token_mode"])
                extra = ""
            else:
                info = (len(self.request["content"]), _gridd.TOKEN_MODE)
                extra = ", new content" if token["write"] else ""
            if info is None:
                lines.append(f"token {facts['token_path']}: absent")
            else:
                lines.append(f"token {facts['token_path']}: present (content masked, {info[0]} bytes, "
                             f"mode {info[1]:04o}{extra})")
        for name in token["remove"]:
            lines.append(f"token {os.path.join(facts['token_dir'], name)}: "
                         + ("present (content masked)" if which == "before" else "absent"))
        return lines
