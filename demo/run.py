"""`make demo`: build a small simulated GPU fleet and run playbooks/site.yml on it.

Every host is an Ansible host with the local connection whose Python
interpreter is a small wrapper that points gpusim at that host's own state
file (GPUSIM_STATE) and puts gpusim's pynvml and nvidia-smi first on the paths.
The playbooks and roles are the ones you run on real hosts: nothing in them
knows the GPUs are simulated.  To run on real hosts, use your own inventory:
    ansible-playbook -i inventory.yml gpuops.sharing.site
(examples/inventory has every group site.yml uses).
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import sys
import time

import yaml

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RUN = os.path.join(ROOT, "demo", ".run")
SIMULATOR = os.path.join(ROOT, "simulator")


GRIDD_PID_FILE = "nvidia-gridd.pid"   # gpusim's nvidia-gridd writes it in GPUSIM_GRIDD_RUNDIR


def stop_daemons() -> int:
    """End the daemons the demo's hosts started: MPS control daemons and nvidia-gridd (their pid
    files are under demo/.run); returns how many were stopped."""
    sys.path.insert(0, SIMULATOR)
    from gpusim import mps
    return mps.stop_daemons(RUN) + stop_gridd(RUN)


def _is_gridd(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/comm") as fh:   # gpusim's nvidia-gridd names itself, as the real one is named
            return fh.read().strip() == "nvidia-gridd"
    except OSError:
        return False


def stop_gridd(root: str, timeout: float = 5.0) -> int:
    """SIGTERM to each nvidia-gridd whose pid file is under root (it returns its licence and exits)."""
    pids = []
    for dirpath, _dirs, files in os.walk(root):
        if GRIDD_PID_FILE in files:
            with contextlib.suppress(OSError, ValueError), open(os.path.join(dirpath, GRIDD_PID_FILE)) as fh:
                pids.append(int(fh.read().strip()))
    stopped = []
    for pid in pids:
        if _is_gridd(pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
                stopped.append(pid)
    deadline = time.monotonic() + timeout
    while any(_is_gridd(pid) for pid in stopped) and time.monotonic() < deadline:
        time.sleep(0.05)
    return len(stopped)


def build_fleet(spec: dict) -> str:
    stop_daemons()  # left over from an earlier demo that was interrupted
    shutil.rmtree(RUN, ignore_errors=True)
    groups: dict[str, dict] = {}
    for name, host in spec["hosts"].items():
        hostdir = os.path.join(RUN, "hosts", name)
        os.makedirs(hostdir)
        state = os.path.join(hostdir, "gpusim.json")
        guest = ["--vgpu-guest", host["vgpu_guest"]] if host.get("vgpu_guest") else []
        subprocess.run([sys.executable, "-m", "gpusim", "--state", state, "init", "--model", host["model"],
                        "--gpus", str(host["gpus"]), "--host", name, *guest], check=True, stdout=subprocess.DEVNULL,
                       env={**os.environ, "PYTHONPATH": SIMULATOR})
        wrapper = os.path.join(hostdir, "python")
        with open(wrapper, "w") as fh:
            fh.write("#!/bin/sh\n"
                     f"export GPUSIM_STATE='{state}'\n"
                     f"export PYTHONPATH='{SIMULATOR}'\n"
                     f"export PATH='{SIMULATOR}/bin':\"$PATH\"\n"
                     # gpusim's nvidia-gridd: this host's gridd.conf and pid file (a VM's /etc and /run)
                     f"export GPUSIM_GRIDD_CONF='{hostdir}/etc/nvidia/gridd.conf'\n"
                     f"export GPUSIM_GRIDD_RUNDIR='{hostdir}/run/nvidia-gridd'\n"
                     "export GPUSIM_GRIDD_RETRY=1\n"
                     f"exec '{sys.executable}' \"$@\"\n")
        os.chmod(wrapper, 0o755)
        for group in host["groups"]:
            groups.setdefault(group, {"hosts": {}})["hosts"][name] = {
                "ansible_connection": "local", "ansible_python_interpreter": wrapper,
                # every demo host is this machine: keep each one's files apart; no systemd here,
                # so the boot-time unit is left out (the fleet tests run it under real systemd)
                "mig_config_dir": os.path.join(hostdir, "etc"),
                "mig_install_dir": os.path.join(hostdir, "lib"),
                "mig_boot_service_enabled": False,
                "mig_python": wrapper,
                # MPS without systemd: the module starts the control daemons in the background
                # (gpusim's nvidia-cuda-mps-control -d); stop_daemons() ends them
                "mps_service_enabled": False,
                "mps_config_dir": os.path.join(hostdir, "etc", "mps"),
                "mps_pipe_directory": os.path.join(hostdir, "mps", "{name}", "pipe"),
                "mps_log_directory": os.path.join(hostdir, "mps", "{name}", "log"),
                # vGPU guest without systemd: the module restarts gpusim's nvidia-gridd itself;
                # stop_daemons() ends it
                "vgpu_guest_service_enabled": False,
                "vgpu_guest_gridd_conf": os.path.join(hostdir, "etc", "nvidia", "gridd.conf"),
                "vgpu_guest_client_config_token_path": os.path.join(hostdir, "etc", "nvidia", "ClientConfigToken")}
    # group variables sit in demo/group_vars/, next to the inventory as in a real one
    os.symlink(os.path.join(ROOT, "demo", "group_vars"), os.path.join(RUN, "group_vars"))
    inventory = os.path.join(RUN, "inventory.yml")
    with open(inventory, "w") as fh:
        # the demo runs as root on this machine, with no sudo: no privilege escalation needed
        yaml.safe_dump({"all": {"vars": {"ansible_become": False}, "children": groups}}, fh, sort_keys=False)
    return inventory


def main() -> int:
    with open(os.path.join(ROOT, "demo", "fleet.yml")) as fh:
        spec = yaml.safe_load(fh)
    inventory = build_fleet(spec)
    print(f"== simulated fleet: {len(spec['hosts'])} hosts, inventory {os.path.relpath(inventory, ROOT)}")
    env = {**os.environ, "ANSIBLE_CALLBACK_RESULT_FORMAT": "yaml", "ANSIBLE_NOCOLOR": "1",
           "ANSIBLE_FORKS": "5", "ANSIBLE_INVENTORY_UNPARSED_WARNING": "false",
           "ANSIBLE_DISPLAY_SKIPPED_HOSTS": "false"}
    try:
        return run_twice(inventory, env)
    finally:
        stopped = stop_daemons()
        if stopped:
            print(f"== stopped the {stopped} daemons (MPS control, nvidia-gridd) the demo started")


def run_twice(inventory: str, env: dict) -> int:
    for attempt in ("first run", "second run (must change nothing)"):
        print(f"== ansible-playbook playbooks/site.yml: {attempt}", flush=True)
        proc = subprocess.Popen(["ansible-playbook", "-i", inventory, os.path.join(ROOT, "playbooks", "site.yml")],
                                env=env, cwd=ROOT, stdout=subprocess.PIPE, text=True)
        output = []
        for line in proc.stdout:
            sys.stdout.write(line)
            output.append(line)
        if proc.wait():
            return proc.returncode
        changed = recap_changed("".join(output))
    if any(changed.values()):
        print(f"== the second run changed something: {changed}", file=sys.stderr)
        return 1
    print(f"== second run: changed=0 on all {len(changed)} hosts")
    return 0


def recap_changed(output: str) -> dict[str, int]:
    """host -> changed count from ansible-playbook's PLAY RECAP."""
    recap = output.rsplit("PLAY RECAP", 1)[-1]
    counts = {}
    for line in recap.splitlines():
        match = re.match(r"^(\S+)\s+:\s+ok=\d+\s+changed=(\d+)", line)
        if match:
            counts[match.group(1)] = int(match.group(2))
    return counts


if __name__ == "__main__":
    sys.exit(main())
