"""Fleet benchmarks (`make bench`): playbooks/site.yml over SSH on booted fleet test hosts.

* A no-op site.yml (everything already applied) as a ratio to `ansible -m ping` over the same
  hosts, both measured alternately in the same run (median of the rounds).
* The per-host cost as the fleet grows from 2 to 8 hosts: seconds of a no-op site.yml per host.
  Linear or better means the per-host figure does not grow.

Needs what the fleet needs (root, systemd-nspawn); elsewhere the section says why it is skipped.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests", "fleet"))

import fleet  # noqa: E402

SIZES = (2, 4, 8)
ROUNDS = 3


def _timed(cmd: list[str]) -> float:
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, env=fleet.ansible_env(), capture_output=True, text=True, check=False)
    if proc.returncode:
        raise fleet.FleetError(f"{' '.join(cmd)} failed: {proc.stdout[-1500:]}{proc.stderr[-500:]}")
    return time.perf_counter() - start


def _measure(size: int) -> tuple[float, float]:
    fleet.up(size)
    inventory = os.path.join(fleet.RUN, "inventory.yml")
    site = ["ansible-playbook", "-i", inventory, os.path.join(ROOT, "playbooks", "site.yml")]
    ping = ["ansible", "-i", inventory, "all", "-m", "ansible.builtin.ping"]
    _timed(site)  # apply once: what follows is the no-op run
    noop, pings = [], []
    for _round in range(ROUNDS):
        noop.append(_timed(site))
        pings.append(_timed(ping))
    return statistics.median(noop), statistics.median(pings)


def run() -> list[tuple[str, list[list[str]]]]:
    try:
        fleet.preflight()
    except fleet.FleetError as exc:
        return [("Fleet (skipped)", [["reason"], [str(exc)]])]
    rows = [["hosts", "no-op site.yml (s)", "ansible -m ping (s)", "ratio site/ping", "site.yml s per host"]]
    try:
        for size in SIZES:
            noop, ping = _measure(size)
            rows.append([str(size), f"{noop:.1f}", f"{ping:.1f}", f"{noop / ping:.2f}x", f"{noop / size:.2f}"])
    finally:
        fleet.down(quiet=True)
    return [(f"No-op site.yml over SSH on booted fleet hosts vs ping (median of {ROUNDS} alternating rounds)", rows)]
