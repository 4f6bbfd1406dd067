"""MPS benchmark: a no-op run of gpuops.sharing.mps against ansible.builtin.ping on the same host.

The host: 8 x A100-SXM4-40GB, each with seven 1g.5gb MIG devices, so 56 MPS control daemons
(gpusim's nvidia-cuda-mps-control, started once by the module with manage_daemon). Each run of
the module then reads every daemon's settings through its control interface and changes nothing.
Runs alternate (ping, mps, ping, mps, ...), several repetitions; the ratio is of the medians.

The fake control client is a Python script; the real one is a small C binary. So that the
measurement is of the module and not of interpreter start-up behind a version-manager shim, the
fake runs under this Python (a ``python3`` link first on PATH).

    python bench/mps_noop.py          # prints the table, exits 1 above the target
    run() -> [(title, rows)]          # for bench/run.py (`make bench`)
    measure(tmpdir) -> dict           # the numbers
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SIMULATOR = os.path.join(ROOT, "simulator")
COLLECTIONS = os.path.join(ROOT, ".build", "collections")
GPUS, MIG_PER_GPU, MODEL, PROFILE = 8, 7, "A100-SXM4-40GB", "19"   # 19 = 1g.5gb
TARGET_RATIO = 3.0

sys.path.insert(0, SIMULATOR)
from gpusim import mps as gpusim_mps  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from run import alternate, print_table  # noqa: E402


def _host(tmp: str) -> tuple[str, dict]:
    state = os.path.join(tmp, "gpusim.json")
    bindir = os.path.join(tmp, "bin")
    os.makedirs(bindir, exist_ok=True)
    python3 = os.path.join(bindir, "python3")
    if not os.path.exists(python3):
        os.symlink(sys.executable, python3)
    env = {**os.environ, "GPUSIM_STATE": state, "PYTHONPATH": SIMULATOR,
           "PATH": f"{bindir}:{SIMULATOR}/bin:{os.environ.get('PATH', '')}",
           "ANSIBLE_COLLECTIONS_PATH": COLLECTIONS, "ANSIBLE_NOCOLOR": "1", "ANSIBLE_LOCALHOST_WARNING": "false",
           "ANSIBLE_INVENTORY_UNPARSED_WARNING": "false"}
    smi = [sys.executable, os.path.join(SIMULATOR, "libexec", "nvidia-smi.py")]
    subprocess.run([sys.executable, "-m", "gpusim", "init", "--force", "--model", MODEL, "--gpus", str(GPUS),
                    "--mig-enabled"], env=env, check=True, capture_output=True)
    subprocess.run(smi + ["mig", "-cgi", ",".join([PROFILE] * MIG_PER_GPU), "-C"], env=env,   # on every GPU
                   check=True, capture_output=True)
    return state, env


def measure(tmpdir: str, repeats: int = 7) -> dict:
    """Median seconds of ping and of a no-op mps run on the 56-daemon host, alternating; and their ratio."""
    _state, env = _host(tmpdir)
    ansible = os.path.join(os.path.dirname(sys.executable), "ansible")
    base = [ansible, "localhost", "-c", "local", "-e", f"ansible_python_interpreter={sys.executable}"]
    args = json.dumps({"targets": ["all"], "pipe_directory": os.path.join(tmpdir, "mps", "{name}"),
                       "log_directory": os.path.join(tmpdir, "log", "{name}"), "manage_daemon": True,
                       "default_active_thread_percentage": 25, "default_device_pinned_mem_limit": "2G",
                       "default_client_priority": 0})
    mps_cmd = base + ["-m", "gpuops.sharing.mps", "-a", args]
    ping_cmd = base + ["-m", "ansible.builtin.ping"]
    try:
        first = subprocess.run(mps_cmd, env=env, capture_output=True, text=True, check=False)
        if first.returncode or '"changed": true' not in first.stdout:
            raise RuntimeError(f"mps start-up run failed: {first.stdout[-2000:]}{first.stderr[-2000:]}")
        daemons = first.stdout.count('"control_socket"')

        def check(name, done):
            if done.returncode or (name == "mps" and '"changed": false' not in done.stdout):
                raise RuntimeError(f"{name} run failed or changed: {done.stdout[-2000:]}{done.stderr[-2000:]}")

        times = alternate({"ping": ping_cmd, "mps": mps_cmd}, env, repeats, check)
    finally:
        gpusim_mps.stop_daemons(tmpdir)
    ping, mps = statistics.median(times["ping"]), statistics.median(times["mps"])
    return {"host": f"{GPUS} x {MODEL}, {MIG_PER_GPU} MIG devices each", "daemons": daemons, "repeats": repeats,
            "ping_median_s": ping, "mps_median_s": mps, "ratio": mps / ping, "target_ratio": TARGET_RATIO,
            "ping_s": times["ping"], "mps_s": times["mps"]}


def table(result: dict) -> list[list[str]]:
    return [["host", "daemons", "ansible.builtin.ping (median s)", "gpuops.sharing.mps no-op (median s)", "ratio",
             "target"],
            [result["host"], str(result["daemons"]), f"{result['ping_median_s']:.3f}", f"{result['mps_median_s']:.3f}",
             f"{result['ratio']:.2f}x", f"<= {result['target_ratio']:g}x"]]


TITLE = "MPS: no-op run vs ansible.builtin.ping (same host, alternating runs)"


def _measure() -> dict:
    # a short directory: the daemons' socket paths must fit 107 bytes
    with tempfile.TemporaryDirectory(prefix="mpsb", dir="/tmp") as tmp:
        return measure(tmp)


def run() -> list[tuple[str, list[list[str]]]]:
    return [(TITLE, table(_measure()))]


def main() -> int:
    result = _measure()
    print_table(TITLE, table(result))
    return 0 if result["ratio"] <= TARGET_RATIO else 1


if __name__ == "__main__":
    sys.exit(main())
