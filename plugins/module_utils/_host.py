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

import os

C_LOCALE = {"LC_ALL": "C", "LANG": "C"}


def module_runner(module):
    """``run(argv, data=None, env=None) -> (rc, stdout, stderr)`` through ``AnsibleModule.run_command``."""

    def run(argv, data=None, env=None):
        environ = dict(C_LOCALE)
        environ.update(env or {})
        return module.run_command(argv, data=data, environ_update=environ)

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
