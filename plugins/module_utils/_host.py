# Copyright (c) gpuops.sharing contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Host helpers every ``_<concern>_host.py`` shares. Private to this collection: not a public API.

One place for: running a command in the C locale (so that the output parsed is the one the
parsers were written for; ``C_LOCALE`` is also what the boot entry points put in the
environment of the commands they run), and reading ``/proc`` (which processes run, under
which name).  No ansible imports: the boot-time code runs this with the host's python3.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
import tempfile

C_LOCALE = {"LC_ALL": "C", "LANG": "C"}


TIMED_OUT = 124  # what coreutils timeout(1) exits with when it stopped the command


def module_runner(module, timeout: float | None = None):
    """``run(argv, data=None, env=None) -> (rc, stdout, stderr)`` through ``AnsibleModule.run_command``.

    ``run_command`` has no timeout; with ``timeout`` the command runs under coreutils ``timeout``
    (SIGTERM at the limit, SIGKILL 2 s later), so a hung peer (a stopped MPS control daemon) cannot
    hang the module.  A command stopped that way returns ``TIMED_OUT`` and says so in stderr.
    """
    limiter = module.get_bin_path("timeout") if timeout else None

    def run(argv, data=None, env=None):
        environ = dict(C_LOCALE)
        environ.update(env or {})
        command = list(argv)
        if limiter:
            command = [limiter, "--kill-after=2", f"{timeout:g}", *command]
        rc, out, err = module.run_command(command, data=data, environ_update=environ)
        if limiter and rc in (TIMED_OUT, 128 + 9):
            return TIMED_OUT, out, f"{err}{argv[0]} did not finish within {timeout:g} s"
        return rc, out, err

    return run


def process_names(proc_root: str = "/proc") -> dict[int, str]:
    """pid -> process name (``/proc/PID/comm``, as ``pgrep -x`` matches it) of every process.

    Raises OSError when ``/proc`` itself cannot be read: an unreadable process table is not an
    empty one.  Processes that end while being read are left out.
    """
    names = {}
    for entry in os.listdir(proc_root):
        if not entry.isdigit():
            continue
        try:
            with open(os.path.join(proc_root, entry, "comm"), encoding="utf-8", errors="replace") as fh:
                names[int(entry)] = fh.read().strip()
        except OSError:
            continue
    return names


def pids_named(name: str, proc_root: str = "/proc") -> list[int]:
    """Processes whose name is exactly ``name``."""
    return sorted(pid for pid, comm in process_names(proc_root).items() if comm == name)


# ------------------------------------------------------------------ files written as root

MAX_READ = 4 * 1024 * 1024


class HostFileError(OSError):
    """A file the module manages cannot be read or written safely; the message says why."""

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


class NotReadable(HostFileError):
    """``read_bounded`` refused the file: ``reason`` is ``link``, ``directory``, ``fifo``, ``device``
    (a device or socket) or ``too_big`` (then ``size`` is its size in bytes).  Callers turn it into
    their own message; this one is a fallback."""

    def __init__(self, path: str, reason: str, size: int | None = None):
        self.path, self.reason, self.size = path, reason, size
        super().__init__(f"{path} is not a regular file of a size the module reads ({reason})")


def read_bounded(path: str, limit: int, follow: bool = True) -> bytes:
    """The bytes of a regular file of at most ``limit`` bytes: the one bounded reader of the collection.

    ``O_NONBLOCK`` keeps a FIFO from blocking the open; what was opened is checked with ``fstat`` on
    the descriptor itself (no race between the check and the read), and read in chunks up to the
    limit whatever its size says (``/proc`` files, a file that grows).  ``follow=False`` opens with
    ``O_NOFOLLOW``: a symlink is refused, never followed.  A missing file raises FileNotFoundError
    and other failures their OSError; a refused file raises NotReadable.
    """
    flags = os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0) | (0 if follow else os.O_NOFOLLOW)
    try:
        fd = os.open(path, flags)
    except OSError as exc:
        if exc.errno == errno.ELOOP and not follow:
            raise NotReadable(path, "link") from None
        raise
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            kind = "directory" if stat.S_ISDIR(info.st_mode) else "fifo" if stat.S_ISFIFO(info.st_mode) else "device"
            raise NotReadable(path, kind)
        if info.st_size > limit:
            raise NotReadable(path, "too_big", info.st_size)
        chunks, size = [], 0
        while size <= limit:
            chunk = os.read(fd, 65536)
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
        if size > limit:
            raise NotReadable(path, "too_big", size)
        return b"".join(chunks)
    finally:
        os.close(fd)


def read_managed(path: str, limit: int = MAX_READ) -> str | None:
    """The text of a file the module manages; None when it does not exist.

    Refuses what the module did not put there: a symlink (never followed), anything but a regular
    file, a file over ``limit`` bytes.
    """
    try:
        data = read_bounded(path, limit, follow=False)
    except FileNotFoundError:
        return None
    except NotReadable as exc:
        if exc.reason == "link":
            raise HostFileError(f"{path} is a symbolic link; the module writes only files it owns and never follows "
                                "a link there: remove the link and run again") from None
        if exc.reason == "too_big":
            raise HostFileError(f"{path} is {exc.size} bytes, more than the {limit} a managed file may have") from None
        raise HostFileError(f"{path} exists and is not a regular file") from None
    return data.decode("utf-8", "replace")


def list_files(directory: str) -> list[str]:
    """Regular files directly in ``directory`` (none when it does not exist); a symlinked directory is refused."""
    try:
        info = os.lstat(directory)
    except FileNotFoundError:
        return []
    if stat.S_ISLNK(info.st_mode) or not stat.S_ISDIR(info.st_mode):
        raise HostFileError(f"{directory} is not a plain directory (a symbolic link or a file); the module never "
                            "writes through a link: remove it and run again")
    return sorted(os.path.join(directory, name) for name in os.listdir(directory)
                  if os.path.isfile(os.path.join(directory, name)) and not name.startswith("."))


def read_installed(paths, directory: str) -> dict:
    """Path -> text (None when absent) of ``paths`` and of every file now in ``directory``, which the
    caller owns whole (boot code: a file there that is not wanted is stale)."""
    current = {path: read_managed(path) for path in paths}
    for path in list_files(directory):
        current.setdefault(path, read_managed(path))
    return current


def remove_empty_dirs(directories) -> None:
    """Remove each directory (deepest first, as given) if it is empty; one the admin put files in stays.

    A ``__pycache__`` in it holding only ``*.pyc`` files counts as empty: Python's bytecode of the
    module's own files (boot code installed before entry points stopped writing it).
    """
    for directory in directories:
        with contextlib.suppress(FileNotFoundError, OSError):
            if os.path.islink(directory):
                continue
            cache = os.path.join(directory, "__pycache__")
            if os.path.isdir(cache) and not os.path.islink(cache):
                names = os.listdir(cache)
                if all(name.endswith(".pyc") and os.path.isfile(os.path.join(cache, name))
                       and not os.path.islink(os.path.join(cache, name)) for name in names):
                    for name in names:
                        os.unlink(os.path.join(cache, name))
                    os.rmdir(cache)
            os.rmdir(directory)


def make_dirs(directory: str, mode: int = 0o755) -> None:
    """Create ``directory`` and its missing parents; an existing component that is a symlink is refused
    for the parts the module creates (what exists above them is the admin's)."""
    missing = []
    path = directory
    while not os.path.lexists(path):
        missing.append(path)
        path = os.path.dirname(path)
    if os.path.islink(directory):
        raise HostFileError(f"{directory} is a symbolic link; the module never writes through a link")
    for part in reversed(missing):
        os.mkdir(part, mode)


def write_file(path: str, text: str, mode: int, atomic_move) -> None:
    """Write ``text`` to ``path`` through a temporary file beside it and ``atomic_move`` (the module's
    ``AnsibleModule.atomic_move``: SELinux contexts, unsafe_writes); never through a symlink."""
    directory = os.path.dirname(path)
    make_dirs(directory)
    if os.path.islink(path):
        raise HostFileError(f"{path} is a symbolic link; the module never writes through a link")
    fd, tmp = tempfile.mkstemp(prefix=".gpuops-", dir=directory)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(text.encode("utf-8"))
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, mode)
        atomic_move(tmp, path)
    finally:
        if os.path.lexists(tmp):
            os.unlink(tmp)


def remove_file(path: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)
