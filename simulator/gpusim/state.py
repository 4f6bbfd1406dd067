"""One host's simulated GPUs and driver, kept as a JSON file.

The file is the single source of truth shared by every process on the host: the
fake NVML library, the fake CLIs (nvidia-smi, ...) and the gpusim CLI all read it
on each call and write it atomically (temporary file + rename) under an
exclusive ``flock`` on a lock file beside it.  Nothing here ever silently resets
a state: a missing or corrupt file is an error that names the file.
"""

from __future__ import annotations

import contextlib
import copy
import fcntl
import json
import os
import tempfile

SCHEMA_VERSION = 1
DEFAULT_STATE_PATH = "/var/lib/gpusim/state.json"
ENV_STATE = "GPUSIM_STATE"


class StateError(RuntimeError):
    """The state file is missing, unreadable or malformed."""


def state_path(explicit: str | None = None) -> str:
    """The state file for this host: explicit path, $GPUSIM_STATE, or the default."""
    return explicit or os.environ.get(ENV_STATE) or DEFAULT_STATE_PATH


def path_is_explicit() -> bool:
    return bool(os.environ.get(ENV_STATE))


_cache: dict[str, tuple[tuple[int, int, int], dict]] = {}


def _stamp(st: os.stat_result) -> tuple[int, int, int]:
    return (st.st_ino, st.st_mtime_ns, st.st_size)


def _validate(path: str, data: object) -> dict:
    if not isinstance(data, dict) or "gpus" not in data or not isinstance(data["gpus"], list):
        raise StateError(f"gpusim state file {path} is not a gpusim state (no 'gpus' list); "
                         f"recreate it with: python -m gpusim init --model MODEL --gpus N")
    if data.get("version") != SCHEMA_VERSION:
        raise StateError(f"gpusim state file {path} has schema version {data.get('version')!r}, "
                         f"this simulator reads version {SCHEMA_VERSION}")
    return data


def load(path: str | None = None) -> dict:
    """Read the state (cached on inode/mtime/size). Returns a private copy."""
    return copy.deepcopy(peek(path))


def peek(path: str | None = None) -> dict:
    """Read the state for reading only: the cached object itself, which callers must not change."""
    path = state_path(path)
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise StateError(f"gpusim state file {path} does not exist; create it with: "
                         f"GPUSIM_STATE={path} python -m gpusim init --model MODEL --gpus N") from None
    except OSError as exc:
        raise StateError(f"gpusim state file {path} cannot be read: {exc.strerror}") from None
    hit = _cache.get(path)
    if hit and hit[0] == _stamp(st):
        return hit[1]
    try:
        with open(path, encoding="utf-8") as fh:
            raw = fh.read()
            st = os.fstat(fh.fileno())
    except OSError as exc:
        raise StateError(f"gpusim state file {path} cannot be read: {exc.strerror}") from None
    try:
        data = json.loads(raw)
    except ValueError as exc:
        raise StateError(f"gpusim state file {path} is corrupt (not JSON: {exc}); "
                         f"nothing was changed") from None
    data = _validate(path, data)
    _cache[path] = (_stamp(st), data)
    return data


def save(data: dict, path: str | None = None) -> None:
    """Write the state atomically. Callers normally use :func:`transaction`."""
    path = state_path(path)
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".gpusim-", dir=directory)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(data, fh, indent=1, sort_keys=True)
            fh.write("\n")
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    _cache.pop(path, None)


@contextlib.contextmanager
def locked(path: str | None = None, exclusive: bool = True):
    """Hold the host's state lock (a file beside the state)."""
    path = state_path(path)
    lock_path = os.path.join(os.path.dirname(os.path.abspath(path)),
                             "." + os.path.basename(path) + ".lock")
    try:
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as exc:
        raise StateError(f"gpusim state lock {lock_path} cannot be opened: {exc.strerror}") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
        yield
    finally:
        os.close(fd)


@contextlib.contextmanager
def transaction(path: str | None = None):
    """Load the state under an exclusive lock, yield it, and save it if it changed."""
    with locked(path):
        data = load(path)
        before = json.dumps(data, sort_keys=True)
        yield data
        if json.dumps(data, sort_keys=True) != before:
            save(data, path)
