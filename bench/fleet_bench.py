"""Fleet benchmarks (`make bench`): the playbooks over SSH on booted fleet test hosts.

* The whole fleet of tests/fleet/hosts.yml (every host group, mixed GPU models): a no-op
  site.yml (everything already applied) as a ratio to `ansible -m ping` over the same hosts,
  both measured alternately in the same run (median of the rounds). Target: at most 4x.
* The tasks each role runs on each host in that no-op run (bench/callback_plugins/gpuops_task_count:
  tasks that ran on the host, not skipped, not controller-only actions such as debug or assert).
* The per-host cost as the fleet grows from 2 to 16 hosts. The fleet grows by copies of one host
  (SCALE_HOST: MIG layout plus one MPS daemon per MIG device, the most work per host), so that
  every size does the same work per host; growing the mixed list instead would add other host
  groups with other plays at each size and measure the mix, not the scaling. Flat or falling
  means the seconds per host do not grow.
* The mps role (not just the module) on one host with 56 MPS daemons (8 x A100-SXM4-40GB, seven
  1g.5gb MIG devices each, under systemd), no-op, against ping on that host. Target: at most 3x.

Needs what the fleet needs (root, systemd-nspawn); elsewhere the section says why it is skipped.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(ROOT, "tests", "fleet"))

import fleet  # noqa: E402

SIZES = (2, 4, 8, 16)
SCALE_HOST = "mig-h100-01"
ROUNDS = 3
SITE_TARGET, MPS_TARGET = 4.0, 3.0
MPS_HOST = {"mps-bench-56": {"model": "A100-SXM4-40GB", "gpus": 8, "groups": []}}


def _env(**extra) -> dict:
    return {**fleet.ansible_env(), **extra}


def _timed(cmd: list[str], env: dict | None = None) -> float:
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, env=env or _env(), capture_output=True, text=True, check=False)
    if proc.returncode:
        raise fleet.FleetError(f"{' '.join(cmd)} failed: {proc.stdout[-1500:]}{proc.stderr[-500:]}")
    if "PLAY RECAP" in proc.stdout and any(c.get("changed") for c in fleet.recap(proc.stdout).values()):
        raise fleet.FleetError(f"{' '.join(cmd)} changed something in a run that must be a no-op: "
                               f"{_changed_tasks(proc.stdout)}")
    return time.perf_counter() - start


def _changed_tasks(output: str) -> list[str]:
    """'TASK name: host' for every task result reported as changed in a playbook's output."""
    found, task = [], None
    for line in output.splitlines():
        if line.startswith("TASK ["):
            task = line[6:].split("]", 1)[0]
        elif line.startswith("changed: ["):
            found.append(f"{task}: {line[10:].split(']', 1)[0]}")
    return found


def _alternate(play: list[str], ping: list[str]) -> tuple[float, float]:
    """Median seconds of the playbook and of ping, taking turns ROUNDS times."""
    plays, pings = [], []
    for _round in range(ROUNDS):
        plays.append(_timed(play))
        pings.append(_timed(ping))
    return statistics.median(plays), statistics.median(pings)


def _tasks_per_host(play: list[str]) -> dict[str, dict[str, int]]:
    """{host: {role: tasks run on the host}} of one more no-op run, through the counting callback."""
    with tempfile.NamedTemporaryFile(suffix=".json") as out:
        _timed(play, _env(ANSIBLE_CALLBACK_PLUGINS=os.path.join(HERE, "callback_plugins"),
                          ANSIBLE_CALLBACKS_ENABLED="gpuops_task_count", GPUOPS_TASK_COUNT_FILE=out.name))
        with open(out.name) as fh:
            return json.load(fh)


def _commands(playbook: str) -> tuple[list[str], list[str]]:
    inventory = os.path.join(fleet.RUN, "inventory.yml")
    return (["ansible-playbook", "-i", inventory, playbook],
            ["ansible", "-i", inventory, "all", "-m", "ansible.builtin.ping"])


# Ansible's own knobs on the same no-op site.yml (docs/scaling.md): the bench's settings (fleet.ansible_env:
# forks 10, pipelining on, SSH ControlPersist from ansible's default ssh_args), then one knob changed at a time
KNOBS = (("as benchmarked: forks 10, pipelining on", {}),
         ("pipelining off", {"ANSIBLE_PIPELINING": "false"}),
         ("forks 1 (one host at a time)", {"ANSIBLE_FORKS": "1"}),
         ("strategy free", {"ANSIBLE_STRATEGY": "free"}))


def _knobs(site: list[str], ping: list[str]) -> list[list[str]]:
    rows = [["setting", "seconds", "vs as benchmarked"]]
    base = None
    for name, extra in KNOBS:
        seconds = statistics.median(_timed(site, _env(**extra)) for _round in range(ROUNDS))
        base = base or seconds
        rows.append([f"no-op site.yml, {name}", f"{seconds:.1f}", f"{seconds / base:.2f}x"])
    # the collection's plays gather no facts: what one gathering over the same hosts costs (each play with
    # gather_facts on would add about this much)
    setup = [*ping[:-1], "ansible.builtin.setup"]
    seconds = statistics.median(_timed(setup) for _round in range(ROUNDS))
    rows.append(["one fact gathering (ansible -m setup), per play that gathers", f"{seconds:.1f}",
                 f"{seconds / base:.2f}x"])
    return rows


def _site(count: int | None = None, like: str | None = None, count_tasks: bool = False):
    infos = fleet.up(count, like)
    site, ping = _commands(os.path.join(ROOT, "playbooks", "site.yml"))
    subprocess.run(site, cwd=ROOT, env=_env(), capture_output=True, text=True, check=True)  # apply once
    noop, pinged = _alternate(site, ping)
    tasks = _tasks_per_host(site) if count_tasks else None
    knobs = _knobs(site, ping) if count_tasks else None
    return len(infos), noop, pinged, tasks, knobs


def _mps_role() -> tuple[int, float, float, dict]:
    fleet.up(specs=MPS_HOST)
    setup = _commands(os.path.join(HERE, "playbooks", "mps_56_setup.yml"))[0]
    play, ping = _commands(os.path.join(HERE, "playbooks", "mps_56.yml"))
    subprocess.run(setup, cwd=ROOT, env=_env(), capture_output=True, text=True, check=True)
    first = subprocess.run(play, cwd=ROOT, env=_env(), capture_output=True, text=True, check=False)
    if first.returncode:
        raise fleet.FleetError(f"the mps role failed on the benchmark host: {first.stdout[-2000:]}")
    # the role's report: one line per daemon, "<target> (<uuid>): running, threads ..."
    daemons = sum(1 for line in first.stdout.splitlines() if "): running, threads" in line)
    noop, pinged = _alternate(play, ping)
    return daemons, noop, pinged, _tasks_per_host(play)


def _tasks_table(tasks: dict[str, dict[str, int]]) -> list[list[str]]:
    roles = sorted({role for per in tasks.values() for role in per})
    rows = [["host", *roles, "total"]]
    for host, per in sorted(tasks.items()):
        rows.append([host, *(str(per.get(r, "-")) for r in roles), str(sum(per.values()))])
    return rows


def run() -> list[tuple[str, list[list[str]]]]:
    try:
        fleet.preflight()
    except fleet.FleetError as exc:
        return [("Fleet (skipped)", [["reason"], [str(exc)]])]
    mixed = [["hosts", "no-op site.yml (s)", "ansible -m ping (s)", "ratio site/ping", "target"]]
    scaling = [["hosts", "no-op site.yml (s)", "ansible -m ping (s)", "ratio site/ping", "site.yml s per host",
                "per host vs 2 hosts"]]
    mps = [["host", "daemons", "no-op mps role (s)", "ansible -m ping (s)", "ratio role/ping", "target"]]
    try:
        hosts, noop, ping, tasks, knobs = _site(count_tasks=True)
        mixed.append([str(hosts), f"{noop:.1f}", f"{ping:.1f}", f"{noop / ping:.2f}x", f"<= {SITE_TARGET:g}x"])
        base = None
        for size in SIZES:
            hosts, noop, ping = _site(size, SCALE_HOST)[:3]
            per_host = noop / hosts
            base = base or per_host
            scaling.append([str(hosts), f"{noop:.1f}", f"{ping:.1f}", f"{noop / ping:.2f}x", f"{per_host:.2f}",
                            f"{per_host / base:.2f}x"])
        daemons, noop, ping, mps_tasks = _mps_role()
        mps.append([next(iter(MPS_HOST)) + " (8 x A100-SXM4-40GB, 7 x 1g.5gb each)", str(daemons), f"{noop:.1f}",
                    f"{ping:.1f}", f"{noop / ping:.2f}x", f"<= {MPS_TARGET:g}x"])
    finally:
        fleet.down(quiet=True)
    return [(f"No-op site.yml over SSH on the whole fleet (every host group) vs ping (median of {ROUNDS} "
             "alternating rounds)", mixed),
            ("Tasks run on each host per role in that no-op site.yml (not skipped, not controller-only)",
             _tasks_table(tasks)),
            (f"Ansible's knobs, one at a time, on that no-op site.yml (median of {ROUNDS})", knobs),
            (f"Fleet growth: no-op site.yml on 2 to 16 copies of {SCALE_HOST} (MIG + MPS on MIG devices), "
             f"median of {ROUNDS}", scaling),
            (f"The mps role, no-op, on one host with 56 MPS daemons under systemd vs ping (median of {ROUNDS})", mps),
            ("Tasks run on that host per role in the no-op mps role", _tasks_table(mps_tasks))]
