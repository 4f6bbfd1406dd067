"""Make the next play's host a fresh machine: end the simulated daemons an earlier play of this run
started (their pid files are under the run's folder) and empty the run's /etc/nvidia (gridd.conf and
the client configuration tokens that gpusim's nvidia-gridd reads there).

    python fresh_host.py RUN_DIR
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import time

from gpusim import mps


def is_gridd(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/comm") as fh:
            return fh.read().strip() == "nvidia-gridd"
    except OSError:
        return False


def main(run_dir: str) -> int:
    stopped = mps.stop_daemons(run_dir)
    pid_file = os.path.join(os.environ.get("GPUSIM_GRIDD_RUNDIR", os.path.join(run_dir, "run")), "nvidia-gridd.pid")
    pid = None
    with contextlib.suppress(OSError, ValueError), open(pid_file) as fh:
        pid = int(fh.read().strip())
    if pid and os.path.realpath(pid_file).startswith(os.path.realpath(run_dir)) and is_gridd(pid):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
            stopped += 1
        deadline = time.monotonic() + 5
        while is_gridd(pid) and time.monotonic() < deadline:
            time.sleep(0.05)
    conf = os.environ.get("GPUSIM_GRIDD_CONF", "")
    etc = os.path.dirname(conf)
    if conf and os.path.realpath(etc).startswith(os.path.realpath(run_dir) + os.sep):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(conf)
        tokens = os.path.join(etc, "ClientConfigToken")
        for name in os.listdir(tokens) if os.path.isdir(tokens) else []:
            os.unlink(os.path.join(tokens, name))
    print(f"stopped {stopped} daemons")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
