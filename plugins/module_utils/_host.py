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


def read_managed(path: str, limit: int = MAX_READ) -> str | None:
    """The text of a file the module manages; None when it does not exist.

    Refuses what the module did not put there: a symlink (never followed), anything but a regular
    file, a file over ``limit`` bytes.
    """
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        return None
    if stat.S_ISLNK(info.st_mode):
        raise HostFileError(f"{path} is a symbolic link; the module writes only files it owns and never follows "
                            "a link there: remove the link and run again")
    if not stat.S_ISREG(info.st_mode):
        raise HostFileError(f"{path} exists and is not a regular file")
    if info.st_size > limit:
        raise HostFileError(f"{path} is {info.st_size} bytes, more than the {limit} a managed file may have")
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0))
    with os.fdopen(fd, "rb") as fh:
        return fh.read(limit + 1).decode("utf-8", "replace")


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
    """Remove each directory (deepest first, as given) if it is empty; one the admin put files in stays."""
    for directory in directories:
        with contextlib.suppress(FileNotFoundError, OSError):
            if not os.path.islink(directory):
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
