# Copyright (c) gpuops.sharing contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""MPS control daemons: parse, validate, plan. Private to this collection: not a public API.

Pure functions, no I/O: the daemon's replies come in as text, the GPUs as plain dicts (see
``_mps_host.inventory``), and plans go out as lists of operations.

The control interface, as NVIDIA documents it (MPS documentation, "Legacy MPS v2 Interface",
https://docs.nvidia.com/deploy/mps/mpsv2-interface.html, and nvidia-cuda-mps-control(1)):

* The binary takes ``-d`` (daemon in the background) or ``-f`` (foreground) (and ``-v``, ``-S``); every
  other command goes to the running daemon on stdin: ``echo quit | nvidia-cuda-mps-control``.
* ``set_default_active_thread_percentage <percentage>`` / ``get_default_active_thread_percentage``;
  the reply is a float (``25.0``; a daemon set to 12 by NVIDIA's k8s-device-plugin answers ``12.0``),
  hence :func:`parse_percentage_reply`.
* ``set_default_device_pinned_mem_limit <dev> <value>``: "The value must be in the form of an
  integer followed by a qualifier, either G or M", G being 1024 M.  ``get_default_device_pinned_mem_limit
  <dev>`` does not echo what was set: real daemons answer ``5G`` for a limit set as ``5120M`` (a
  k8s-device-plugin deployment) and ``1G`` for ``1044M`` (a capture on driver 595.91.07): limits of 1 GiB
  and more are reported in whole GiB, rounded down.  :func:`as_reported` is that precision; plans compare
  at it, so a limit such as ``1536M`` is set once and then reads back as ``1G`` without a change every run.
* ``dev`` is an ordinal or a UUID and "is not validated"; default limits are kept per identifier ("does
  not translate between device UUIDs or ordinals").  Each daemon here sees exactly one device
  (``CUDA_VISIBLE_DEVICES=<UUID>``), which is ordinal ``0`` for it; limits are set by ordinal, as NVIDIA's
  k8s-device-plugin does (NVIDIA/k8s-device-plugin#572: limits set by UUID were not applied).
* ``set_default_client_priority <0|1>`` / ``get_default_client_priority``: "0 [NORMAL] and
  1 [BELOW NORMAL]", "hints to the CUDA Driver, not guarantees".
* Defaults apply to servers started later ("If there is already a server spawned, this command will
  only affect the next server").  ``get_server_list`` prints the PIDs of the servers;
  ``get_active_thread_percentage <PID>``, ``get_device_pinned_mem_limit <PID> <dev>`` read a server's
  limits and ``set_active_thread_percentage <PID> <pct>`` / ``set_device_pinned_mem_limit <PID>
  <dev> <value>`` change them for "clients created with that server afterwards. Existing clients
  are not affected."  ``get_client_list <PID>`` prints the PIDs of a server's clients.
* Not every driver has every command: the pinned memory limit came with CUDA 11.5, client priorities
  later.  A setting that is not requested is read if the daemon knows it and reported as unknown
  (``None``) otherwise, so an older daemon can still be managed for what it has.
* ``quit`` is synchronous and waits for the servers' clients to finish; ``quit -t <seconds>`` shuts
  servers down that still run after that time (nvidia-cuda-mps-control(1); "bare quit blocks until
  they finish" in real teardown scripts).  The module sends ``quit -t`` only with ``force``.
* Without a daemon the client prints ``Cannot find MPS control daemon process``.
* The environment of the control daemon at start sets its defaults:
  ``CUDA_MPS_ACTIVE_THREAD_PERCENTAGE``, ``CUDA_MPS_PINNED_DEVICE_MEM_LIMIT`` (``0=4G``: "the same
  semantics as CUDA_VISIBLE_DEVICES", ``0=1G,1=512MB``) and ``CUDA_MPS_CLIENT_PRIORITY`` ("Appendix:
  Environment Variables").  ``CUDA_MPS_PIPE_DIRECTORY`` (default ``/tmp/nvidia-mps``) holds the daemon's
  sockets ``control`` and ``control_privileged`` (and ``control_lock``, the ``log`` FIFO and
  ``nvidia-cuda-mps-control.pid``, as a listing of a live pipe directory shows), so the longer name
  bounds the directory: a Unix socket path (``sun_path``) has 108 bytes with the terminating NUL.
  ``CUDA_MPS_LOG_DIRECTORY`` holds ``control.log`` and ``server.log`` (default ``/var/log/nvidia-mps``).
  Clients need the same pipe directory and must not set ``CUDA_VISIBLE_DEVICES`` ("Appendix: Common
  Tasks").
* Compute mode: NVIDIA recommends ``EXCLUSIVE_PROCESS`` with MPS ("GPU Compute Modes"); it does not
  survive a reboot, and the driver refuses it on a MIG-enabled GPU (``nvidia-smi -c 3`` there: "Setting
  compute mode to EXCLUSIVE_PROCESS is not supported on a MIG-enabled device. Unable to set the compute
  mode for GPU ...: Not Supported. Treating as warning and moving on.", NVIDIA/DCGM#82), so it is
  managed for whole-GPU targets only.
"""

from __future__ import annotations

import copy
import math
import re
import shlex

from ansible_collections.gpuops.sharing.plugins.module_utils._runner import Op

SOCKET_PATH_MAX = 107          # sun_path is 108 bytes including the terminating NUL (unix(7))
CONTROL_SOCKET = "control"
SOCKET_NAMES = ("control", "control_privileged")   # the daemon listens on both, in the pipe directory
DEVICE = "0"                   # the one device a per-target daemon sees
DEFAULT_PIPE_DIRECTORY = "/run/nvidia-mps/{name}"
DEFAULT_LOG_DIRECTORY = "/var/log/nvidia-mps/{name}"
NO_DAEMON = "Cannot find MPS control daemon process"
COMPUTE_MODES = ("exclusive_process", "default", "unchanged")
SETTINGS = ("active_thread_percentage", "device_pinned_mem_limit_mib", "client_priority")
_NAME = re.compile(r"^gpu(\d+)(?:-mig(\d+)\.(\d+))?$")
_SIZE = re.compile(r"^\s*(\d+)\s*([A-Za-z]*)\s*$")
_UNITS = {"M": 1, "MB": 1, "MIB": 1, "G": 1024, "GB": 1024, "GIB": 1024, "T": 1024 * 1024, "TB": 1024 * 1024,
          "TIB": 1024 * 1024}


class MpsError(Exception):
    """A request that cannot be met; the message names the value, why, and what would be valid."""


# --------------------------------------------------------------------------- values

def parse_size(value, what: str = "default_device_pinned_mem_limit") -> int:
    """``4G``, ``4GiB``, ``4096M``, ``4096MB`` -> MiB (binary units: the daemon's G is 1024 M)."""
    text = str(value)
    m = _SIZE.match(text)
    unit = m.group(2).upper() if m else ""
    if m and unit in _UNITS and int(m.group(1)) == 0 or re.match(r"^\s*0+\s*$", text):
        raise MpsError(f"{what}={text!r} must be more than 0; to have no limit, leave it unset")
    if re.match(r"^\s*-", text):
        raise MpsError(f"{what}={text!r} must be more than 0: a limit is a positive size such as 4G or 4096M; "
                       f"to have no limit, leave it unset")
    if not m or unit not in _UNITS:
        hint = ""
        fraction = re.match(r"^\s*(\d+)[.,](\d+)\s*([A-Za-z]*)\s*$", text)
        if m and not unit:
            hint = f" (a number without a unit is ambiguous: did you mean {text.strip()}M?)"
        elif fraction and fraction.group(3).upper() in _UNITS:
            mib = float(f"{fraction.group(1)}.{fraction.group(2)}") * _UNITS[fraction.group(3).upper()]
            hint = (f" (use whole numbers: {int(mib)}M instead of {text.strip()})" if mib.is_integer()
                    else " (use whole numbers of M or G: the daemon takes no fractions)")
        raise MpsError(f"{what}={text!r} is not a memory size{hint}; give an integer with a unit: "
                       f"M, MB or MiB, G, GB or GiB (binary units), for example 4G or 4096M")
    return int(m.group(1)) * _UNITS[unit]


def format_size(mib: int) -> str:
    """MiB -> the daemon's form: an integer followed by G or M (``4096`` -> ``4G``, ``1536`` -> ``1536M``)."""
    return f"{mib // 1024}G" if mib % 1024 == 0 else f"{mib}M"


def as_reported(mib: int | None) -> int | None:
    """What the daemon answers for a limit of ``mib``, in MiB: whole GiB (rounded down) from 1 GiB on."""
    if mib is None:
        return None
    return mib - mib % 1024 if mib >= 1024 else mib


def exactly_reported(mib: int | None) -> bool:
    return mib is None or as_reported(mib) == mib


def human_size(mib: int | None) -> str:
    if mib is None:
        return "none"
    return f"{mib // 1024} GiB" if mib % 1024 == 0 else f"{mib} MiB"


def validate_percentage(value) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 100:
        raise MpsError(f"default_active_thread_percentage={value!r} is not valid; give a whole number from 1 to 100 "
                       f"(the share of each GPU's threads one client may use; 100 means no limit)")
    return value


def validate_priority(value) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or value not in (0, 1):
        raise MpsError(f"default_client_priority={value!r} is not valid; give 0 (NORMAL) or 1 (BELOW NORMAL)")
    return value


# --------------------------------------------------------------------------- replies

class ReplyError(ValueError):
    """A reply that is not what the command returns (an error text, or the wrong shape)."""


def _one_line(text: str, command: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if len(lines) != 1:
        raise ReplyError(f"{command}: expected one line, got {text.strip()!r}")
    return lines[0]


def parse_percentage_reply(text: str, command: str = "get_default_active_thread_percentage") -> float:
    line = _one_line(text, command)
    try:
        value = float(line)
    except ValueError:
        raise ReplyError(f"{command}: {line!r} is not a percentage") from None
    if not 0 < value <= 100:
        raise ReplyError(f"{command}: {line!r} is not a percentage")
    return round(value, 1)


def parse_limit_reply(text: str, command: str = "get_default_device_pinned_mem_limit") -> int | None:
    """``3G`` -> 3072, ``4096M`` -> 4096; ``0`` (no limit set) -> None."""
    line = _one_line(text, command)
    if line.upper() in ("0", "0M", "0G", "NONE", "N/A", "UNLIMITED"):
        return None
    m = re.match(r"^(\d+)\s*(M|G|MB|GB|MIB|GIB)$", line.upper())
    if not m:
        raise ReplyError(f"{command}: {line!r} is not a memory limit")
    return int(m.group(1)) * _UNITS[m.group(2)]


def parse_priority_reply(text: str, command: str = "get_default_client_priority") -> int:
    line = _one_line(text, command)
    if line not in ("0", "1"):
        raise ReplyError(f"{command}: {line!r} is not a client priority")
    return int(line)


def parse_pid_list(text: str, command: str = "get_server_list") -> list[int]:
    """PIDs, one a line (or separated by blanks on one line); an empty reply is no PIDs."""
    pids = []
    for word in text.split():
        if not word.isdigit():
            raise ReplyError(f"{command}: {word!r} is not a PID")
        pids.append(int(word))
    return pids


def is_no_daemon(text: str) -> bool:
    return NO_DAEMON in text


# --------------------------------------------------------------------------- targets

def target_name(gpu_index: int, mig: dict | None = None) -> str:
    """``gpu0``; a MIG device: ``gpu0-mig<GPU instance start>.<compute instance start>``."""
    if mig is None:
        return f"gpu{gpu_index}"
    return f"gpu{gpu_index}-mig{mig['gpu_instance_start']}.{mig['compute_instance_start']}"


def _gpu_target(gpu: dict) -> dict:
    return {"name": target_name(gpu["index"]), "kind": "gpu", "uuid": gpu["uuid"], "gpu_index": gpu["index"],
            "gpu_uuid": gpu["uuid"], "gpu_name": gpu["name"], "mig": None,
            "memory_total_mib": gpu["memory_total_mib"], "compute_mode": gpu.get("compute_mode")}


def _mig_target(gpu: dict, dev: dict) -> dict:
    mig = {"gpu_instance_start": dev["gpu_instance_start"], "compute_instance_start": dev["compute_instance_start"],
           "gpu_instance_id": dev.get("gpu_instance_id"), "compute_instance_id": dev.get("compute_instance_id")}
    return {"name": target_name(gpu["index"], mig), "kind": "mig", "uuid": dev["uuid"], "gpu_index": gpu["index"],
            "gpu_uuid": gpu["uuid"], "gpu_name": gpu["name"], "mig": mig,
            "memory_total_mib": dev["memory_total_mib"], "compute_mode": None}


def _mig_gpu_error(gpu: dict, asked: str) -> MpsError:
    devices = [d["uuid"] for d in gpu.get("mig_devices", [])]
    names = [target_name(gpu["index"], d) for d in gpu.get("mig_devices", [])]
    listed = ", ".join(f"{n} ({u})" for n, u in zip(names, devices)) if devices else "none yet: create them first"
    return MpsError(f"target {asked!r}: GPU {gpu['index']} ({gpu['name']}, {gpu['uuid']}) is in MIG mode; an MPS "
                    f"daemon serves one MIG device, not the GPU: name its MIG devices ({listed}) or use 'all'")


def resolve_targets(requested: list[str], gpus: list[dict]) -> tuple[list[dict], list[str]]:
    """Requested targets -> target dicts (stable order, no duplicates), and warnings.

    A target is ``all``, a GPU index or UUID, a MIG device UUID, or a target name (``gpu0``,
    ``gpu0-mig3.0``).  ``all`` is every GPU without MIG and every MIG device of the GPUs in MIG mode.
    """
    if not requested:
        raise MpsError("targets is empty; give 'all', GPU indexes or UUIDs, or MIG device UUIDs")
    by_index = {g["index"]: g for g in gpus}
    by_uuid = {g["uuid"]: g for g in gpus}
    mig_by_uuid = {d["uuid"]: (g, d) for g in gpus for d in g.get("mig_devices", [])}
    mig_by_name = {target_name(g["index"], d): (g, d) for g in gpus for d in g.get("mig_devices", [])}
    found: dict[str, dict] = {}
    warnings: list[str] = []
    for raw in requested:
        asked = str(raw).strip()
        if asked == "all":
            for gpu in gpus:
                if not gpu.get("mig_enabled"):
                    found.setdefault(target_name(gpu["index"]), _gpu_target(gpu))
                elif not gpu.get("mig_devices"):
                    warnings.append(f"GPU {gpu['index']} ({gpu['uuid']}) is in MIG mode without MIG devices: "
                                    f"no MPS daemon for it (create the MIG devices first)")
                for dev in gpu.get("mig_devices", []):
                    target = _mig_target(gpu, dev)
                    found.setdefault(target["name"], target)
            continue
        gpu = None
        if asked.isdigit():
            gpu = by_index.get(int(asked))
        elif asked in by_uuid:
            gpu = by_uuid[asked]
        elif _NAME.match(asked) and not _NAME.match(asked).group(2):
            gpu = by_index.get(int(_NAME.match(asked).group(1)))
        if gpu is not None:
            if gpu.get("mig_enabled"):
                raise _mig_gpu_error(gpu, asked)
            found.setdefault(target_name(gpu["index"]), _gpu_target(gpu))
            continue
        pair = mig_by_uuid.get(asked) or mig_by_name.get(asked)
        if pair is not None:
            target = _mig_target(*pair)
            found.setdefault(target["name"], target)
            continue
        valid = [str(g["index"]) for g in gpus] + [g["uuid"] for g in gpus] + list(mig_by_uuid) + list(mig_by_name)
        raise MpsError(f"target {asked!r} matches no GPU or MIG device on this host; valid: 'all', "
                       + (", ".join(valid) if valid else "(no GPUs found)"))
    return list(found.values()), warnings


# A directory reaches the daemon's environment, the role's unit and env files and the clients' shells:
# letters, digits and ``. _ - /`` only (no blanks, quotes, ``$``, backslashes or newlines), and of
# Python's format syntax only the plain fields ``{name}`` and ``{uuid}`` (no attribute or index lookups
# such as ``{name.__class__}``, no conversions or format specs).
SAFE_PATH = re.compile(r"^[A-Za-z0-9._/-]+$")
FIELDS = ("name", "uuid")
_FIELD = re.compile(r"\{([^{}]*)\}")
SAFE_CHARS = "letters, digits, '.', '_', '-' and '/'"


def _describe_chars(chars) -> str:
    names = {" ": "space", "\n": "newline", "\t": "tab", "'": "quote", '"': "double quote", "$": "'$'",
             "`": "backquote", "\\": "backslash"}
    return ", ".join(names.get(c, repr(c)) for c in sorted(set(chars)))


def validate_directory(template: str, what: str) -> None:
    """Refuse a directory template that could reach a shell, a unit or an env file as anything but a path."""
    text = str(template)
    for field in _FIELD.findall(text):
        if field not in FIELDS:
            raise MpsError(f"{what}={text!r} uses the field {{{field}}}: only {{name}} and {{uuid}} can be "
                           f"replaced (with the target's name and UUID), as plain fields without attributes, "
                           f"indexes or format specs")
    rest = _FIELD.sub("", text)
    bad = [c for c in rest if not SAFE_PATH.match(c)]
    if bad:
        raise MpsError(f"{what}={text!r} contains {_describe_chars(bad)}: a directory may contain only {SAFE_CHARS}, "
                       f"and the fields {{name}} and {{uuid}}")
    if not text.startswith("/"):
        raise MpsError(f"{what}={text!r} must be an absolute path (starting with /)")
    if ".." in text.split("/"):
        raise MpsError(f"{what}={text!r} contains '..': give the directory without parent references")


def expand_directory(template: str, target: dict, what: str) -> str:
    validate_directory(template, what)
    path = _FIELD.sub(lambda m: str(target[m.group(1)]), template)
    if not SAFE_PATH.match(path) or ".." in path.split("/"):
        raise MpsError(f"{what}={template!r} gives {path!r} for {target['name']}, which contains characters other "
                       f"than {SAFE_CHARS}; use {{name}} instead of {{uuid}}")
    return path.rstrip("/") or "/"


def assign_directories(targets: list[dict], pipe_template: str, log_template: str) -> None:
    """Sets ``pipe_directory``, ``log_directory`` and ``control_socket`` on each target, or raises."""
    seen: dict[str, str] = {}
    for target in targets:
        pipe = expand_directory(pipe_template, target, "pipe_directory")
        log = expand_directory(log_template, target, "log_directory")
        socket_path = pipe + "/" + CONTROL_SOCKET
        longest = pipe + "/" + max(SOCKET_NAMES, key=len)
        size = len(longest.encode())
        if size > SOCKET_PATH_MAX:
            raise MpsError(f"pipe_directory {pipe!r} of {target['name']} is too long: the daemon's socket {longest!r} "
                           f"is {size} bytes and a Unix socket path can have at most {SOCKET_PATH_MAX} "
                           f"(108 with the terminating NUL); use a pipe_directory of at most "
                           f"{SOCKET_PATH_MAX - len(longest) + len(pipe)} bytes, such as the default "
                           f"{DEFAULT_PIPE_DIRECTORY!r}")
        if pipe in seen:
            raise MpsError(f"pipe_directory {pipe_template!r} gives {pipe!r} for both {seen[pipe]} and {target['name']}: "
                           f"each daemon needs its own; put {{name}} in it")
        seen[pipe] = target["name"]
        target.update(pipe_directory=pipe, log_directory=log, control_socket=socket_path)


def validate_limit_fits(targets: list[dict], limit_mib: int | None, given: str) -> None:
    if limit_mib is None:
        return
    too_small = [t for t in targets if t["memory_total_mib"] and limit_mib > t["memory_total_mib"]]
    if too_small:
        smallest = min(t["memory_total_mib"] for t in too_small)
        names = ", ".join(f"{t['name']} ({t['uuid']}, {human_size(t['memory_total_mib'])})" for t in too_small)
        raise MpsError(f"default_device_pinned_mem_limit={given!r} ({human_size(limit_mib)}) is more than the memory of "
                       f"{names}; give at most {format_size(smallest)}")


def limit_warnings(limit_mib: int | None, given: str | None) -> list[str]:
    """A limit the daemon cannot report back exactly (``1536M`` reads back as ``1G``)."""
    if exactly_reported(limit_mib):
        return []
    return [f"default_device_pinned_mem_limit={given!r} ({limit_mib} MiB) is set as given, but the MPS control daemon "
            f"reports limits of 1 GiB and more in whole GiB ({format_size(limit_mib)} reads back as "
            f"{format_size(as_reported(limit_mib))}), so later runs can only check it to the GiB: a limit set by hand "
            f"to another value between {format_size(as_reported(limit_mib))} and "
            f"{format_size(as_reported(limit_mib) + 1023)} is not corrected; give a whole number of GiB "
            f"({format_size(as_reported(limit_mib))} or {format_size(as_reported(limit_mib) + 1024)}) to have it "
            f"checked exactly"]


def daemon_environment(target: dict, desired: dict) -> dict:
    """What a control daemon for this target is started with (``-d`` by the module, ``-f`` by systemd)."""
    env = {"CUDA_VISIBLE_DEVICES": target["uuid"], "CUDA_MPS_PIPE_DIRECTORY": target["pipe_directory"],
           "CUDA_MPS_LOG_DIRECTORY": target["log_directory"]}
    if desired.get("active_thread_percentage") is not None:
        env["CUDA_MPS_ACTIVE_THREAD_PERCENTAGE"] = str(desired["active_thread_percentage"])
    if desired.get("device_pinned_mem_limit_mib") is not None:
        env["CUDA_MPS_PINNED_DEVICE_MEM_LIMIT"] = f"{DEVICE}={format_size(desired['device_pinned_mem_limit_mib'])}"
    if desired.get("client_priority") is not None:
        env["CUDA_MPS_CLIENT_PRIORITY"] = str(desired["client_priority"])
    return env


def client_environment(target: dict) -> dict:
    return {"CUDA_MPS_PIPE_DIRECTORY": target["pipe_directory"], "CUDA_MPS_LOG_DIRECTORY": target["log_directory"]}


# --------------------------------------------------------------------------- plan

def not_running() -> dict:
    return {"running": False, "defaults": {k: None for k in SETTINGS}, "servers": []}


def started_with(desired: dict) -> dict:
    """What a daemon started with ``daemon_environment(desired)`` reports: NVIDIA's defaults where unmanaged."""
    return {"running": True, "servers": [], "defaults": {
        "active_thread_percentage": float(desired["active_thread_percentage"])
        if desired.get("active_thread_percentage") is not None else 100.0,
        "device_pinned_mem_limit_mib": as_reported(desired.get("device_pinned_mem_limit_mib")),
        "client_priority": desired["client_priority"] if desired.get("client_priority") is not None else 0}}


def _op(name: str, *args, text: str) -> dict:
    return {"op": name, "args": list(args), "text": text}


def quit_grace(timeout) -> int:
    """``quit -t`` takes whole seconds."""
    return max(0, math.ceil(float(timeout)))


def refusals(commands: list[str], reply: str) -> str:
    """What in the daemon's reply to ``commands`` is not an acknowledgement ('' when all succeeded).

    Set commands answer nothing, except ``set_default_active_thread_percentage``, which echoes the
    value it took as a float (``25`` -> ``25.0``; real control daemons, NVIDIA/k8s-device-plugin
    issues).  That echo is taken out once per such command; anything left is the daemon's refusal.
    """
    lines = [line.strip() for line in reply.splitlines() if line.strip()]
    for cmd in commands:
        words = cmd.split()
        if words[:1] != ["set_default_active_thread_percentage"] or len(words) != 2:
            continue
        try:
            wanted = float(words[1])
        except ValueError:
            continue
        for i, line in enumerate(lines):
            try:
                if float(line) == wanted:
                    del lines[i]
                    break
            except ValueError:
                continue
    return "\n".join(lines)


def command(op: dict) -> str:
    """The control-interface line of a daemon operation."""
    if op["op"] == "set_default_device_pinned_mem_limit":
        return f"set_default_device_pinned_mem_limit {DEVICE} {op['args'][0]}"
    if op["op"] == "set_device_pinned_mem_limit":
        return f"set_device_pinned_mem_limit {op['args'][0]} {DEVICE} {op['args'][1]}"
    if op["op"] == "quit" and op["args"]:
        return f"quit -t {op['args'][0]}"
    return " ".join([op["op"], *(str(a) for a in op["args"])])


def _differs(current, wanted) -> bool:
    return wanted is not None and current != wanted


def _limit_differs(current, wanted) -> bool:
    """Compared at the precision the daemon reports (whole GiB from 1 GiB on)."""
    return wanted is not None and current != as_reported(wanted)


def plan_target(target: dict, observed: dict, desired: dict, options: dict) -> dict:
    """Operations that bring one target from ``observed`` to ``desired``, and what refuses them.

    ``options``: state, manage_daemon, restart_servers, force, compute_mode.
    Returns {"operations": [...], "problems": [...], "after": predicted observation,
    "restart_required": bool, "compute_mode_after": str | None}.  Nothing raises: every refusal of
    every target is collected, so that the whole host is checked before the first write.
    """
    ops: list[dict] = []
    problems: list[str] = []
    after = copy.deepcopy(observed)
    name = target["name"]
    restart_required = False
    mode_after = target.get("compute_mode")
    want_mode = options.get("compute_mode", "exclusive_process")
    if options["state"] == "absent":
        if observed["running"]:
            busy = {s["pid"]: s["clients"] for s in observed["servers"] if s["clients"]}
            if busy and not options.get("force"):
                problems.append(f"{name}: the MPS daemon has servers with connected clients ("
                                + "; ".join(f"server {p}: clients {', '.join(map(str, c))}" for p, c in busy.items())
                                + "); quit would wait until they finish: stop the clients first, or set force: true "
                                "to give them timeout seconds and then shut their servers down (quit -t)")
            if options.get("force"):
                grace = quit_grace(options.get("timeout", 10.0))
                ops.append(_op("quit", grace, text=f"{name}: quit the MPS control daemon ({target['control_socket']}); "
                                                   f"servers still running after {grace} s are shut down"))
            else:
                ops.append(_op("quit", text=f"{name}: quit the MPS control daemon ({target['control_socket']})"))
            after = not_running()
        if target["kind"] == "gpu" and want_mode == "default" and target.get("compute_mode") != "default":
            ops.append(_op("compute_mode", "default", text=f"{name}: set compute mode of GPU "
                           f"{target['gpu_index']} to DEFAULT"))
            mode_after = "default"
        return {"operations": ops, "problems": problems, "after": after, "restart_required": False,
                "compute_mode_after": mode_after}

    if target["kind"] == "gpu" and want_mode != "unchanged" and target.get("compute_mode") != want_mode:
        ops.append(_op("compute_mode", want_mode, text=f"{name}: set compute mode of GPU {target['gpu_index']} "
                       f"({target['gpu_uuid']}) to {want_mode.upper()}"))
        mode_after = want_mode
    if not observed["running"]:
        if not options.get("manage_daemon"):
            problems.append(f"{name}: no MPS control daemon listens on {target['control_socket']}; start it (the "
                            f"gpuops.sharing.mps role runs it as systemd unit nvidia-mps@{name}) or set "
                            f"manage_daemon: true to let this module start it")
            return {"operations": ops, "problems": problems, "after": after, "restart_required": False,
                    "compute_mode_after": mode_after}
        ops.append(_op("start", text=f"{name}: start the MPS control daemon for {target['uuid']} "
                       f"(nvidia-cuda-mps-control -d, pipe directory {target['pipe_directory']})"))
        return {"operations": ops, "problems": problems, "after": started_with(desired), "restart_required": False,
                "compute_mode_after": mode_after}

    current = observed["defaults"]
    pct = desired.get("active_thread_percentage")
    if pct is not None and current["active_thread_percentage"] != float(pct):
        ops.append(_op("set_default_active_thread_percentage", pct,
                       text=f"{name}: default active thread percentage {_show_pct(current['active_thread_percentage'])}"
                            f" -> {pct}"))
        after["defaults"]["active_thread_percentage"] = float(pct)
    limit = desired.get("device_pinned_mem_limit_mib")
    if _limit_differs(current["device_pinned_mem_limit_mib"], limit):
        ops.append(_op("set_default_device_pinned_mem_limit", format_size(limit),
                       text=f"{name}: default device pinned memory limit "
                            f"{human_size(current['device_pinned_mem_limit_mib'])} -> {human_size(limit)}"))
        after["defaults"]["device_pinned_mem_limit_mib"] = as_reported(limit)
    priority = desired.get("client_priority")
    if _differs(current["client_priority"], priority):
        ops.append(_op("set_default_client_priority", priority,
                       text=f"{name}: default client priority {current['client_priority']} -> {priority}"))
        after["defaults"]["client_priority"] = priority

    for n, server in enumerate(observed["servers"]):
        stale = stale_settings(server, desired)
        if not stale:
            continue
        if not options.get("restart_servers"):
            restart_required = True
            continue
        if server["clients"] and not options.get("force"):
            problems.append(f"{name}: MPS server {server['pid']} runs with {', '.join(stale)} different from the "
                            f"requested ones and has connected clients ({', '.join(map(str, server['clients']))}) "
                            f"that keep theirs; stop those clients, or set force: true to update the server for the "
                            f"clients that connect later")
            continue
        server_after = after["servers"][n]
        if "active_thread_percentage" in stale:
            ops.append(_op("set_active_thread_percentage", server["pid"], pct,
                           text=f"{name}: server {server['pid']} active thread percentage "
                                f"{_show_pct(server['active_thread_percentage'])} -> {pct}"))
            server_after["active_thread_percentage"] = float(pct)
        if "device_pinned_mem_limit" in stale:
            ops.append(_op("set_device_pinned_mem_limit", server["pid"], format_size(limit),
                           text=f"{name}: server {server['pid']} device pinned memory limit "
                                f"{human_size(server['device_pinned_mem_limit_mib'])} -> {human_size(limit)}"))
            server_after["device_pinned_mem_limit_mib"] = as_reported(limit)
        # clients connected before keep the limits they got: they must reconnect
        restart_required = restart_required or bool(server["clients"])
    return {"operations": ops, "problems": problems, "after": after, "restart_required": restart_required,
            "compute_mode_after": mode_after}


# the runner's operation kinds, by the plan's own operation names
OP_KINDS = {"compute_mode": "set_compute_mode", "start": "start_daemon", "quit": "quit_daemon",
            "set_default_active_thread_percentage": "set_default", "set_default_device_pinned_mem_limit": "set_default",
            "set_default_client_priority": "set_default", "set_active_thread_percentage": "set_server",
            "set_device_pinned_mem_limit": "set_server"}


def plan_host(targets: list[dict], observed: list[dict], desired: dict, options: dict) -> dict:
    """Every target's plan, as the runner's typed operations in the order they run, and every refusal.

    Compute modes are set before any daemon starts (``present``: a daemon started on a GPU in
    DEFAULT mode is not alone on it) and put back after every daemon stopped (``absent``).
    Returns {"ops": [Op], "problems": [str], "targets": [plan_target(...) per target]}.
    """
    plans = [plan_target(t, o, desired, options) for t, o in zip(targets, observed)]
    modes, daemons = [], []
    for target, plan in zip(targets, plans):
        for op in plan["operations"]:
            kind = OP_KINDS[op["op"]]
            data = {"target": target["name"], "op": op}
            if kind == "set_compute_mode":
                modes.append(Op(kind, f"GPU {target['gpu_index']}", op["text"], {**data, "mode": op["args"][0]}))
            else:
                if kind in ("set_default", "set_server", "quit_daemon"):
                    data["command"] = command(op)
                daemons.append(Op(kind, target["name"], op["text"], data))
    ops = daemons + modes if options["state"] == "absent" else modes + daemons
    return {"ops": ops, "problems": [p for plan in plans for p in plan["problems"]], "targets": plans}


def stale_settings(server: dict, desired: dict) -> list[str]:
    stale = []
    pct = desired.get("active_thread_percentage")
    if pct is not None and server["active_thread_percentage"] != float(pct):
        stale.append("active_thread_percentage")
    if _limit_differs(server["device_pinned_mem_limit_mib"], desired.get("device_pinned_mem_limit_mib")):
        stale.append("device_pinned_mem_limit")
    return stale


def _show_pct(value) -> str:
    if value is None:
        return "none"
    return str(int(value)) if float(value).is_integer() else str(value)


def describe(target: dict, observed: dict, compute_mode: str | None) -> str:
    """The managed settings of one target, for diff before/after."""
    lines = [f"{target['name']} ({target['uuid']}):"]
    if not observed["running"]:
        lines.append("  daemon: stopped")
    else:
        d = observed["defaults"]
        lines += ["  daemon: running",
                  f"  default_active_thread_percentage: {_show_pct(d['active_thread_percentage'])}",
                  f"  default_device_pinned_mem_limit: {human_size(d['device_pinned_mem_limit_mib'])}",
                  f"  default_client_priority: {'unknown' if d['client_priority'] is None else d['client_priority']}"]
        for server in observed["servers"]:
            lines.append(f"  server {server['pid']}: active_thread_percentage "
                         f"{_show_pct(server['active_thread_percentage'])}, device_pinned_mem_limit "
                         f"{human_size(server['device_pinned_mem_limit_mib'])}, clients {len(server['clients'])}")
    if target["kind"] == "gpu":
        lines.append(f"  compute_mode: {compute_mode}")
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- systemd units and env files
#
# With units, each target's daemon is an instance of one generic template unit, nvidia-mps@.service:
# what differs per target is in its EnvironmentFile <config_dir>/<target>.conf (systemd reads it at
# every start; systemd.exec(5) "EnvironmentFile=": one KEY=VALUE a line, '#' comments, values in
# single or double quotes), so there are no drop-ins.  Clients source <config_dir>/<target>.env.
# Every value is quoted with shlex.quote: the directories are limited to SAFE_PATH already, and
# sourcing the file still cannot run anything if that ever changed.

MARK = "# Managed by gpuops.sharing.mps: rewritten and removed by the module, do not edit."
# headers of the files the mps role wrote before the module did (pruned like the module's own)
OLD_MARKS = ("# Environment of the MPS control daemon ", "# Clients of the MPS daemon ")
DEFAULT_UNIT = "nvidia-mps"
DEFAULT_CONFIG_DIR = "/etc/nvidia-mps"
DAEMON_FILE = ".conf"
CLIENT_FILE = ".env"
EXEC_ENTRY = "gpuops-mps-exec"   # the entry script the units start (_mps_exec), in systemd.install_dir
_TARGET_FILE = re.compile(r"^(gpu\d+(?:-mig\d+\.\d+)?)\.(conf|env)$")
_UNIT_PART = re.compile(r"^[A-Za-z0-9_.:-]+$")


def env_line(key: str, value) -> str:
    return f"{key}={shlex.quote(str(value))}"


def unit_instance(unit_name: str, target_name: str) -> str:
    return f"{unit_name}@{target_name}.service"


def validate_systemd(cfg: dict) -> None:
    """The unit's settings reach its command lines: plain names and absolute paths only."""
    if not _UNIT_PART.match(cfg["unit_name"]):
        raise MpsError(f"systemd.unit_name={cfg['unit_name']!r} is not a unit name; give letters, digits, '_', '.', "
                       f"':' or '-' (default nvidia-mps)")
    for key in ("unit_dir", "python", "install_dir", "control_binary", "smi_binary"):
        value = str(cfg[key])
        if not value.startswith("/") or not SAFE_PATH.match(value) or ".." in value.split("/"):
            raise MpsError(f"systemd.{key}={value!r} is not valid: give an absolute path of {SAFE_CHARS}")
    for unit in cfg["after"]:
        if not _UNIT_PART.match(unit):
            raise MpsError(f"systemd.after: {unit!r} is not a unit name; give names such as gpuops-mig.service")
    if not 0 < cfg["stop_timeout"] <= 3600:
        raise MpsError(f"systemd.stop_timeout={cfg['stop_timeout']!r} is not valid; give whole seconds from 1 to 3600")


def validate_config_dir(path: str) -> None:
    if not path.startswith("/") or not SAFE_PATH.match(path) or ".." in path.split("/"):
        raise MpsError(f"config_dir={path!r} is not valid: give an absolute path of {SAFE_CHARS}")


def unit_text(cfg: dict, config_dir: str) -> str:
    """The generic template unit (one instance per target)."""
    timeout = int(cfg["stop_timeout"])
    after = " ".join(["local-fs.target", "systemd-modules-load.service", "nvidia-persistenced.service",
                      *cfg["after"]])
    return f"""{MARK}
# One NVIDIA MPS control daemon per target: {cfg['unit_name']}@gpu0 (a whole GPU), {cfg['unit_name']}@gpu0-mig3.0
# (one MIG device). Everything that differs per target is in {config_dir}/<target>.conf: CUDA_VISIBLE_DEVICES
# (whole GPUs) or the MIG device's placements (GPUOPS_MPS_GPU*: MIG devices are re-created at boot with new
# UUIDs, gpuops-mps-exec finds the device by its placements after the MIG boot unit), the pipe and log
# directories, the limits the daemon takes as its defaults at start, and GPUOPS_MPS_COMPUTE_MODE (whole GPUs;
# compute mode does not survive a reboot, so it is set before every start).
[Unit]
Description=NVIDIA MPS control daemon for %i (gpuops.sharing)
Documentation=https://docs.nvidia.com/deploy/mps/
After={after}
Before=nvidia-dcgm.service dcgm-exporter.service containerd.service docker.service kubelet.service
ConditionPathExists={config_dir}/%i.conf

[Service]
Type=simple
EnvironmentFile={config_dir}/%i.conf
ExecStartPre=/bin/mkdir -p ${{CUDA_MPS_PIPE_DIRECTORY}} ${{CUDA_MPS_LOG_DIRECTORY}}
ExecStartPre=/bin/sh -c '[ -z "$${{GPUOPS_MPS_COMPUTE_MODE}}" ] || exec {cfg['smi_binary']} -i "$${{CUDA_VISIBLE_DEVICES}}" -c "$${{GPUOPS_MPS_COMPUTE_MODE}}"'
ExecStart={cfg['python']} {cfg['install_dir']}/{EXEC_ENTRY} -- {cfg['control_binary']} -f
# Started means listening: wait (at most 30 s) for the control socket. ($$ is a literal $ for the shell.)
ExecStartPost=/bin/sh -c 'i=0; until [ -S "$${{CUDA_MPS_PIPE_DIRECTORY}}/control" ]; do i=$$((i+1)); [ $$i -le 300 ] || exit 1; sleep 0.1; done'
# The binary takes only -d/-f; everything else goes to the daemon on stdin. quit waits for the servers' clients;
# -t: servers still running after {timeout} s are shut down, before systemd's own stop timeout would kill it.
# "-": after the daemon died there is nothing to quit.
ExecStop=-/bin/sh -c 'echo quit -t {timeout} | {cfg['control_binary']}'
Restart=on-failure
RestartSec=5
TimeoutStopSec={timeout + 15}

[Install]
WantedBy=multi-user.target
"""


def daemon_file_text(target: dict, desired: dict, compute_mode: str, unit_name: str) -> str:
    """``<config_dir>/<target>.conf``, the instance's EnvironmentFile."""
    env = daemon_environment(target, desired)
    lines = [MARK, f"# Environment of {unit_instance(unit_name, target['name'])}: "
             + (f"MIG device {target['mig']['gpu_instance_start']}.{target['mig']['compute_instance_start']} of GPU "
                f"{target['gpu_index']} ({target['gpu_uuid']}); now {target['uuid']}, found again at every start"
                if target["kind"] == "mig" else f"GPU {target['gpu_index']} ({target['gpu_uuid']})")]
    if target["kind"] == "mig":
        env.pop("CUDA_VISIBLE_DEVICES")
        env.update(GPUOPS_MPS_GPU=target["gpu_uuid"], GPUOPS_MPS_GPU_INSTANCE_START=target["mig"]["gpu_instance_start"],
                   GPUOPS_MPS_COMPUTE_INSTANCE_START=target["mig"]["compute_instance_start"])
    elif compute_mode == "exclusive_process":
        env["GPUOPS_MPS_COMPUTE_MODE"] = "EXCLUSIVE_PROCESS"
    lines += [env_line(k, v) for k, v in sorted(env.items())]
    return "\n".join(lines) + "\n"


def summary_line(target: dict, config_dir: str | None) -> str:
    """One line of the module's ``summary``: a target of its result, its limits and how clients reach it."""
    settings = target["settings"]
    threads = settings.get("active_thread_percentage")
    how = (f"clients: set -a; . {config_dir}/{target['name']}{CLIENT_FILE}; set +a" if config_dir
           else f"clients: CUDA_MPS_PIPE_DIRECTORY={target['pipe_directory']}")
    return (f"{target['name']} ({target['uuid']}): {'running' if target['running'] else 'not running'}, threads "
            f"{'-' if threads is None else threads}%, memory {settings.get('device_pinned_mem_limit') or 'unlimited'} "
            f"per client; {how}")


def client_file_text(target: dict, unit_name: str, config_dir: str) -> str:
    """``<config_dir>/<target>.env``, what clients source (values quoted: sourcing runs nothing)."""
    path = f"{config_dir}/{target['name']}{CLIENT_FILE}"
    lines = [MARK, f"# Clients of {unit_instance(unit_name, target['name'])} ({target['uuid']}):",
             f"#   set -a; . {path}; set +a      (shell)",
             f"#   EnvironmentFile={path}        (systemd)",
             "# Do not set CUDA_VISIBLE_DEVICES in clients: the daemon already sees only its device."]
    lines += [env_line(k, v) for k, v in sorted(client_environment(target).items())]
    return "\n".join(lines) + "\n"


def is_ours(text: str) -> bool:
    """A file the module (or the role before it) wrote."""
    head = text[:400]
    return head.startswith(MARK) or any(mark in head for mark in OLD_MARKS)


def target_file(name: str) -> tuple[str, str] | None:
    """``gpu0-mig3.0.conf`` -> (``gpu0-mig3.0``, ``conf``); None for other names."""
    m = _TARGET_FILE.match(name)
    return (m.group(1), m.group(2)) if m else None


def parse_unit_show(text: str) -> dict[str, dict]:
    """``systemctl show -p Id,LoadState,ActiveState,UnitFileState U...`` -> {Id: {key: value}}."""
    units, current = {}, {}
    for line in text.splitlines() + [""]:
        if not line.strip():
            if current.get("Id"):
                units[current["Id"]] = current
            current = {}
            continue
        key, _sep, value = line.partition("=")
        current[key.strip()] = value.strip()
    return units


def unit_on(state: dict) -> tuple[bool, bool]:
    """(active or starting, enabled) of one unit as ``systemctl show`` reports it."""
    return (state.get("ActiveState") in ("active", "activating", "reloading"),
            state.get("UnitFileState") in ("enabled", "enabled-runtime"))


def plan_units(targets: list[dict], host_plan: dict, seen: dict, desired: dict, options: dict, cfg: dict,
               config_dir: str) -> dict:
    """The units and files of every target, folded into the host plan (``plan_host``'s result).

    ``seen``: what ``_mps_host.Units.observe`` read (``files``: path -> text or None, the template
    unit among them; ``foreign``; ``drop_ins``; ``states``: unit -> ``systemctl show`` keys).
    ``options``: state, compute_mode, prune.  Daemons are started and stopped through their units,
    all in one ``systemctl`` call, so the plan's own ``start_daemon`` operations, and the
    ``quit_daemon`` operations of daemons whose unit runs, are replaced.  With ``prune`` the units
    and files of targets that no longer exist go too (a MIG re-layout that removed a device), and
    with ``state=absent`` the template unit.  Returns {"ops", "problems", "units"} (unit -> the
    (active, enabled) it must have afterwards).
    """
    systemd = cfg is not None
    unit_name = cfg["unit_name"] if systemd else DEFAULT_UNIT
    names = [t["name"] for t in targets]
    states = seen["states"]
    present = options["state"] == "present"
    prune = options.get("prune", False)
    template = f"{cfg['unit_dir']}/{unit_name}@.service" if systemd else None
    problems = list(host_plan["problems"])
    problems += [f"{path} exists and is not a file the module wrote (its first line is not {MARK!r}); move it "
                 f"away, or choose another config_dir" for path in seen["foreign"]
                 if target_file(path.rsplit("/", 1)[-1])[0] in names]
    daemon_ops = [op for op in host_plan["ops"] if op.kind != "set_compute_mode"]
    modes = [op for op in host_plan["ops"] if op.kind == "set_compute_mode"]
    writes, removes = [], []

    def want(path, text, why):
        if seen["files"].get(path) != text:
            writes.append(Op("write_file", path, f"write {path} ({why})", {"path": path, "text": text}))

    def drop(path, why, rmdir=False):
        if seen["files"].get(path) is not None or path in seen["drop_ins"]:
            removes.append(Op("remove_file", path, f"remove {path} ({why})", {"path": path, "rmdir": rmdir}))

    def unit_of(name):
        return unit_instance(unit_name, name)

    on = {unit: unit_on(state) for unit, state in states.items()}
    known = {target_file(p.rsplit("/", 1)[-1])[0] for p, text in seen["files"].items()
             if text is not None and p != template}
    known |= {u[len(unit_name) + 1:-len(".service")] for u in states}
    stale = sorted(n for n in known if n not in names) if prune else []
    affected = names + stale if not present else stale
    stop = [n for n in affected if any(on.get(unit_of(n), (False, False)))]
    for name in affected:
        why = f"{name} no longer exists" if name in stale else "state=absent"
        drop(f"{config_dir}/{name}{DAEMON_FILE}", why)
        drop(f"{config_dir}/{name}{CLIENT_FILE}", why)
    drop_in_names = {p.rsplit("/", 2)[-2][len(unit_name) + 1:-len(".service.d")]: p for p in seen["drop_ins"]}
    for name, path in sorted(drop_in_names.items()):
        if present or prune or name in affected:
            drop(path, "the generic template unit needs no drop-ins", rmdir=True)
    expected = {unit_of(n): (False, False) for n in stop}
    start, restart, kept = [], [], []
    if present and not systemd:      # client env files only; the daemons as plan_host has them
        for target in targets:
            want(f"{config_dir}/{target['name']}{CLIENT_FILE}", client_file_text(target, unit_name, config_dir),
                 f"what clients of {target['name']} source")
        kept = daemon_ops
    elif present:
        compute_mode = options.get("compute_mode", "exclusive_process")
        want(template, unit_text(cfg, config_dir), "the template unit")
        for target in targets:
            want(f"{config_dir}/{target['name']}{DAEMON_FILE}",
                 daemon_file_text(target, desired, compute_mode, unit_name), f"{target['name']}'s daemon environment")
            want(f"{config_dir}/{target['name']}{CLIENT_FILE}", client_file_text(target, unit_name, config_dir),
                 f"what clients of {target['name']} source")
        starting = {op.data["target"] for op in daemon_ops if op.kind == "start_daemon"}
        for name in names:
            active, enabled = on.get(unit_of(name), (False, False))
            if name not in starting and not active:
                problems.append(f"{name}: an MPS control daemon runs on {by_pipe(targets, name)} outside its unit "
                                f"{unit_of(name)}; stop it (echo quit | nvidia-cuda-mps-control with "
                                f"CUDA_MPS_PIPE_DIRECTORY={by_pipe(targets, name)}), then run again to start the unit")
            elif name in starting and active:
                restart.append(name)      # active but not listening where planned (its directories changed)
            elif name in starting or not enabled:
                start.append(name)
            expected[unit_of(name)] = (True, True)
        kept = [op for op in daemon_ops if op.kind != "start_daemon"]
    else:
        if prune and systemd and seen["files"].get(template) is not None:
            removes.append(Op("remove_file", template, f"remove {template} (state=absent)", {"path": template}))
        kept = [op for op in daemon_ops
                if not (op.kind == "quit_daemon" and on.get(unit_of(op.data["target"]), (False, False))[0])]
    ops = []
    if stop:
        units = [unit_of(n) for n in stop]
        ops.append(Op("stop_units", units[0], f"stop and disable {', '.join(units)}",
                      {"units": units, "targets": stop}))
    ops += [op for op in kept if op.kind == "quit_daemon"] + removes + writes
    if systemd and any(op.target == template or op.data.get("rmdir") for op in writes + removes):
        ops.append(Op("daemon_reload", "systemd", "systemctl daemon-reload"))
    if start:
        units = [unit_of(n) for n in start]
        ops.append(Op("start_units", units[0], f"enable and start {', '.join(units)}",
                      {"units": units, "targets": start}))
    if restart:
        units = [unit_of(n) for n in restart]
        ops.append(Op("restart_units", units[0], f"restart {', '.join(units)} (not listening on its pipe directory)",
                      {"units": units, "targets": restart}))
    ops += [op for op in kept if op.kind != "quit_daemon"]
    ops = modes + ops if present else ops + modes
    return {"ops": ops, "problems": problems, "units": expected}


def by_pipe(targets: list[dict], name: str) -> str:
    return next(t["pipe_directory"] for t in targets if t["name"] == name)
