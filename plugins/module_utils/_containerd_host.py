# Copyright (c) gpuops.sharing contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""containerd's config.toml and service on one host. Private to this collection.

The side effects of ``gpuops.sharing.containerd_runtime``, as a host object for ``_runner.run``; every
decision is in ``_containerd``.  No ansible imports: the module passes ``atomic_move`` and the command seam in.
"""

from __future__ import annotations

import os

from ansible_collections.gpuops.sharing.plugins.module_utils import _containerd, _host
from ansible_collections.gpuops.sharing.plugins.module_utils._runner import Op, RunError

try:
    import tomllib as toml_reader  # Python 3.11+
except ImportError:                    # pragma: no cover - older managed hosts
    try:
        import tomli as toml_reader  # Debian python3-tomli
    except ImportError:
        toml_reader = None

HAS_TOML = toml_reader is not None
MAX_CONFIG_BYTES = 1024 * 1024


def lock_folder(path: str, timeout: float = 120.0) -> int | None:
    """An exclusive ``flock`` on the nearest existing folder of ``path`` (its descriptor, for the caller to close),
    so that concurrent runs on one file read, plan and write one after the other (no lock file is left behind)."""
    import fcntl
    import time
    if not os.path.isabs(path):
        return None          # nothing to lock: observe() refuses the path with its own message
    folder = os.path.dirname(path)
    while not os.path.isdir(folder):
        folder = os.path.dirname(folder)
    fd = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) | getattr(os, "O_CLOEXEC", 0))
    deadline = time.monotonic() + timeout
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return fd
        except BlockingIOError:
            if time.monotonic() >= deadline:
                os.close(fd)
                raise _host.HostFileError(f"another run holds the lock on {folder} for more than {timeout:g} s; "
                                          "try again when it has finished") from None
            time.sleep(0.05)


def systemd_booted(marker: str = "/run/systemd/system") -> bool:
    """Whether systemd is the running service manager (the test of sd_booted(3))."""
    return os.path.isdir(marker)


class ContainerdHost:
    """One host's containerd config for the runner."""

    errors = (_containerd.ContainerdConfigError, _host.HostFileError, OSError)

    def __init__(self, request: dict, atomic_move, run_command, systemctl: str | None,
                 containerd: str | None = None):
        self.request = request
        self.containerd = containerd
        self.atomic_move = atomic_move
        self.run_command = run_command
        self.systemctl = systemctl
        self.warnings: list[str] = []
        self.planned: dict = {}

    def observe(self) -> dict:
        path = self.request["path"]
        if not os.path.isabs(path) or any(ord(ch) < 32 for ch in path):
            raise _containerd.ContainerdConfigError(f"path={path!r}: give the absolute path of containerd's "
                                                    f"config, e.g. {_containerd.DEFAULT_PATH}")
        text = _host.read_managed(path, MAX_CONFIG_BYTES)
        mode = None
        if text is not None:
            mode = os.lstat(path).st_mode & 0o7777
        version = None
        if self.containerd:
            rc, out, _err = self.run_command([self.containerd, "--version"])
            version = _containerd.parse_version(out) if rc == 0 else None
        return {"text": text, "mode": mode, "systemd": systemd_booted(), "containerd_version": version}

    def plan(self, state: dict) -> list[Op]:
        r = self.request
        self.planned = _containerd.plan(state["text"], toml_reader.loads, r["path"], r["state"], r["runtime_name"],
                                        r["binary_name"], r["set_as_default"], r["enable_cdi"], r["cdi_spec_dirs"],
                                        r["config_version"])
        if not self.planned["changes"]:
            return []
        new = " (new file)" if state["text"] is None else ""
        ops = [Op("write_file", r["path"], f"write {r['path']}{new}: " + "; ".join(self.planned["changes"]),
                  {"text": self.planned["text"], "mode": 0o644 if state["mode"] is None else state["mode"]})]
        if r["restart"] and state["systemd"]:
            unit = r["service"]
            ops.append(Op("restart_unit", unit, f"restart {unit} if it runs (systemctl try-restart {unit})"))
        return ops

    def check(self, state: dict, ops: list[Op]) -> list[str]:
        r = self.request
        problems, warnings = _containerd.version_problems(state["containerd_version"], self.planned["version"],
                                                          r["enable_cdi"], r["state"])
        self.warnings.extend(warnings)
        if any(op.kind == "restart_unit" for op in ops) and not self.systemctl:
            problems.append("systemd runs but systemctl was not found; cannot restart containerd (set restart: false)")
        return problems

    def apply(self, op: Op, state: dict) -> None:
        if op.kind == "write_file":
            _host.write_file(op.target, op.data["text"], op.data["mode"], self.atomic_move)
            return
        rc, out, err = self.run_command([self.systemctl, "try-restart", op.target])
        if rc != 0:
            raise RunError(f"systemctl try-restart {op.target} failed (rc={rc}): {(err or out).strip()}; see "
                           f"journalctl -u {op.target}: containerd refuses a config it cannot load")

    def verify(self, state: dict, ops: list[Op]) -> list[str]:
        for op in ops:
            if op.kind == "write_file" and _host.read_managed(op.target, MAX_CONFIG_BYTES) != op.data["text"]:
                return [f"{op.target} does not hold the written config after the write"]
        return []

    def result(self, state: dict, ops: list[Op], check_mode: bool) -> dict:
        self.before_text = state["text"]
        restarted = any(op.kind == "restart_unit" for op in ops)
        return {"path": self.request["path"], "version": self.planned["version"], "plugin": self.planned["plugin"],
                "changes": self.planned["changes"], "settings": self.planned["after"],
                "restart_required": bool(ops) and not restarted,
                "containerd_version": ".".join(map(str, state["containerd_version"])) if state["containerd_version"]
                else None}

    def diff(self, result: dict) -> dict:
        path = self.request["path"]
        return {"before_header": path, "after_header": path, "before": self.before_text or "",
                "after": self.planned.get("text", "")}
