# Copyright (c) gpuops.sharing contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""vGPU guest licensing on one host: files, token, nvidia-gridd, license state. Private to this collection.

The side effects of ``gpuops.sharing.vgpu_license``; the decisions are in ``_gridd``.
No ansible imports: commands run through the ``run(argv) -> (rc, out, err)`` callable the
module passes in.
"""

from __future__ import annotations

import contextlib
import os
import stat
import tempfile
import time

from ansible_collections.gpuops.sharing.plugins.module_utils import _gridd
from ansible_collections.gpuops.sharing.plugins.module_utils._nvml import Nvml, NvmlError

SERVICE = "nvidia-gridd"
LOG_LINES = 20
SYSLOG_FILES = ("/var/log/messages", "/var/log/syslog")


def read_text(path: str) -> str | None:
    """gridd.conf as text, None when it does not exist.

    Bytes that are not UTF-8 (a comment written in Latin-1, say) are kept as they are: they are
    decoded with ``surrogateescape`` and written back the same way (``encode_text``).  A file with
    NUL bytes (saved as UTF-16 by Windows Notepad) is refused: nvidia-gridd reads plain text.
    """
    if os.path.isdir(path):
        raise _gridd.GriddError(f"path={path} is a directory; give the gridd.conf file, e.g. {_gridd.DEFAULT_PATH}")
    try:
        with open(path, "rb") as fh:
            data = fh.read()
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


def encode_text(text: str) -> bytes:
    """The bytes of a text from ``read_text`` (undecodable bytes come back unchanged)."""
    return text.encode("utf-8", "surrogateescape")


def write_atomic(path: str, data: bytes, mode: int | None = None) -> None:
    """Write through a temporary file in the same folder and a rename; keeps the old file's mode and owner.

    A symbolic link is followed: its target is replaced, the link stays.
    """
    path = os.path.realpath(path) if os.path.islink(path) else path
    directory = os.path.dirname(path) or "."
    try:
        old = os.stat(path)
    except FileNotFoundError:
        old = None
    fd, tmp = tempfile.mkstemp(prefix=".gpuops-", dir=directory)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        if mode is not None:
            os.chmod(tmp, mode)
        elif old is not None:
            os.chmod(tmp, stat.S_IMODE(old.st_mode))
        else:
            os.chmod(tmp, 0o644)
        if old is not None and hasattr(os, "chown"):
            with contextlib.suppress(PermissionError):
                os.chown(tmp, old.st_uid, old.st_gid)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


# --------------------------------------------------------------------------- tokens

def plan_tokens(directory: str, name: str | None, content: bytes | None, remove_others: bool) -> dict:
    """What to do in the token folder: install/replace one token, fix its mode, remove other tokens."""
    path = os.path.join(directory, name) if name else None
    plan = {"directory": directory, "path": path, "write": False, "chmod": False, "remove": [],
            "create_directory": not os.path.isdir(directory), "before": None, "after": None}
    existing = sorted(n for n in _listdir(directory) if n.endswith(".tok"))
    if path is not None and content is not None:
        try:
            with open(path, "rb") as fh:
                current = fh.read()
            mode = stat.S_IMODE(os.stat(path).st_mode)
        except FileNotFoundError:
            current, mode = None, None
        except OSError as exc:
            raise _gridd.GriddError(f"cannot read the token {path}: {exc.strerror} (run the task with become: true)") \
                from None
        plan["before"] = None if current is None else {"bytes": len(current), "mode": mode}
        plan["write"] = current != content
        plan["chmod"] = not plan["write"] and mode != _gridd.TOKEN_MODE
        plan["after"] = {"bytes": len(content), "mode": _gridd.TOKEN_MODE, "new_content": plan["write"]}
    if remove_others:
        plan["remove"] = [n for n in existing if n != name]
    return plan


def _listdir(directory: str) -> list[str]:
    try:
        return os.listdir(directory)
    except OSError:
        return []


def token_changed(plan: dict) -> bool:
    return bool(plan["write"] or plan["chmod"] or plan["remove"])


def apply_tokens(plan: dict, content: bytes | None) -> None:
    if plan["create_directory"] and (plan["write"] or plan["chmod"]):
        os.makedirs(plan["directory"], mode=0o755, exist_ok=True)
    if plan["write"]:
        write_atomic(plan["path"], content, _gridd.TOKEN_MODE)
    elif plan["chmod"]:
        os.chmod(plan["path"], _gridd.TOKEN_MODE)
    for name in plan["remove"]:
        os.unlink(os.path.join(plan["directory"], name))


def token_diff(plan: dict, which: str) -> list[str]:
    lines = []
    info = plan[which]
    if plan["path"] is not None:
        if info is None:
            lines.append(f"token {plan['path']}: absent")
        else:
            extra = ", new content" if which == "after" and info.get("new_content") else ""
            lines.append(f"token {plan['path']}: present (content masked, {info['bytes']} bytes, "
                         f"mode {info['mode']:04o}{extra})")
    for name in plan["remove"]:
        lines.append(f"token {os.path.join(plan['directory'], name)}: "
                     + ("present (content masked)" if which == "before" else "absent"))
    return lines


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


def gridd_pids(proc: str = "/proc") -> list[int]:
    """Running nvidia-gridd processes: those whose name (``/proc/PID/comm``) is nvidia-gridd, as ``pgrep -x``."""
    pids = []
    for entry in _listdir(proc):
        if not entry.isdigit():
            continue
        try:
            with open(os.path.join(proc, entry, "comm"), encoding="utf-8", errors="replace") as fh:
                if fh.read().strip() == SERVICE:
                    pids.append(int(entry))
        except OSError:
            continue
    return sorted(pids)


def restart(run, systemctl: str | None, nvidia_gridd: str | None, booted: bool, stop_timeout: float = 10.0,
            sleep=time.sleep, pids=gridd_pids, kill=os.kill) -> tuple[str | None, str | None]:
    """Restart nvidia-gridd; (how it was restarted, error message or None).

    With systemd running: ``systemctl restart nvidia-gridd`` (the unit NVIDIA's driver installs).
    Without a service manager (a container, an image chroot that runs it by hand): what NVIDIA's
    pre-systemd init job did, stop the running daemon (SIGTERM) and run ``nvidia-gridd``, which
    forks into the background itself.
    """
    if booted:
        if not systemctl:
            return None, "systemd runs but systemctl was not found; cannot restart nvidia-gridd"
        rc, out, err = run([systemctl, "restart", SERVICE])
        if rc != 0:
            return "systemctl", f"systemctl restart {SERVICE} failed (rc={rc}): {(err or out).strip()}"
        return "systemctl", None
    if not nvidia_gridd:
        return None, ("no service manager runs and nvidia-gridd was not found on PATH: is the vGPU guest driver "
                      "installed? Set restart: false to only write the configuration (for example in an image)")
    for pid in pids():
        with contextlib.suppress(ProcessLookupError):
            kill(pid, 15)
    waited = 0.0
    while pids() and waited < stop_timeout:
        sleep(0.1)
        waited += 0.1
    left = pids()
    if left:
        return "nvidia-gridd", f"nvidia-gridd (pid {', '.join(map(str, left))}) did not stop within {stop_timeout:g} s"
    rc, out, err = run([nvidia_gridd])
    if rc != 0:
        return "nvidia-gridd", f"{nvidia_gridd} failed to start (rc={rc}): {(err or out).strip()}"
    return "nvidia-gridd", None
