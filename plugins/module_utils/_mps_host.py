# Copyright (c) gpuops.sharing contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""MPS on one host: the GPUs as _mps needs them, and the control daemons. Private to this collection.

The only I/O of the mps module besides NVML: ``run(argv, data, env) -> (rc, stdout, stderr)``, the
module's ``run_command`` seam, runs ``nvidia-cuda-mps-control`` (commands on stdin, as NVIDIA
documents) and ``nvidia-cuda-mps-control -d``.  Decisions are made in :mod:`_mps`.
"""

from __future__ import annotations

import os
import time
from concurrent.futures import ThreadPoolExecutor

from ansible_collections.gpuops.sharing.plugins.module_utils import _mps


class DaemonError(Exception):
    """Talking to a control daemon failed; the message names the target and what it said."""


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

    def __init__(self, run, binary: str | None, target: dict):
        self.run = run
        self.binary = binary
        self.target = target
        self.env = {"CUDA_MPS_PIPE_DIRECTORY": target["pipe_directory"], "LC_ALL": "C", "LANG": "C"}

    def _send(self, commands: list[str]) -> str:
        if not self.binary:
            raise DaemonError("nvidia-cuda-mps-control is not on PATH: install the NVIDIA driver's compute utilities "
                              "(nvidia-compute-utils or the CUDA toolkit's MPS binaries)")
        rc, out, err = self.run([self.binary], "".join(c + "\n" for c in commands), self.env)
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
        except (_mps.ReplyError, DaemonError):
            pass
        values = []
        for cmd, parse, *optional in commands:
            try:
                values.append(parse(self._send([cmd]), cmd))
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

    def apply(self, ops: list[dict], desired: dict, timeout: float) -> None:
        commands = [_mps.command(op) for op in ops if op["op"] not in ("start", "quit", "compute_mode")]
        if any(op["op"] == "start" for op in ops):
            self.start(desired)
        if commands:
            refused = _mps.refusals(commands, self._send(commands))
            if refused:   # set commands answer nothing (or echo the percentage) when they succeed
                raise DaemonError(f"{self.target['name']}: the MPS control daemon refused "
                                  f"{'; '.join(commands)}: {refused}")
        quits = [op for op in ops if op["op"] == "quit"]
        if quits:
            self.quit(timeout, _mps.command(quits[0]))

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
        try:
            self._send([line])
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
