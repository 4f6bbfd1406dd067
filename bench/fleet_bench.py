"""Fleet benchmarks (`make bench`): playbooks/site.yml over SSH on booted fleet test hosts.

* The whole fleet of tests/fleet/hosts.yml (every host group, mixed GPU models): a no-op
  site.yml (everything already applied) as a ratio to `ansible -m ping` over the same hosts,
  both measured alternately in the same run (median of the rounds).
* The per-host cost as the fleet grows from 2 to 8 hosts. The fleet grows by copies of one host
  (SCALE_HOST: MIG layout plus one MPS daemon per MIG device, the most work per host), so that
  every size does the same work per host; growing the mixed list instead would add other host
  groups with other plays at each size and measure the mix, not the scaling. Linear or better
  means the seconds per host do not grow.

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
SCALE_HOST = "mig-h100-01"
ROUNDS = 3


def _timed(cmd: list[str]) -> float:
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, env=fleet.ansible_env(), capture_output=True, text=True, check=False)
    if proc.returncode:
        raise fleet.FleetError(f"{' '.join(cmd)} failed: {proc.stdout[-1500:]}{proc.stderr[-500:]}")
    return time.perf_counter() - start


def _measure(count: int | None = None, like: str | None = None) -> tuple[int, float, float]:
    """(hosts, median no-op site.yml seconds, median ping seconds)."""
    infos = fleet.up(count, like)
    inventory = os.path.join(fleet.RUN, "inventory.yml")
    site = ["ansible-playbook", "-i", inventory, os.path.join(ROOT, "playbooks", "site.yml")]
    ping = ["ansible", "-i", inventory, "all", "-m", "ansible.builtin.ping"]
    _timed(site)  # apply once: what follows is the no-op run
    noop, pings = [], []
    for _round in range(ROUNDS):
        noop.append(_timed(site))
        pings.append(_timed(ping))
    return len(infos), statistics.median(noop), statistics.median(pings)


def run() -> list[tuple[str, list[list[str]]]]:
    try:
        fleet.preflight()
    except fleet.FleetError as exc:
        return [("Fleet (skipped)", [["reason"], [str(exc)]])]
    mixed = [["hosts", "no-op site.yml (s)", "ansible -m ping (s)", "ratio site/ping"]]
    scaling = [["hosts", "no-op site.yml (s)", "ansible -m ping (s)", "ratio site/ping", "site.yml s per host",
                "per host vs 2 hosts"]]
    try:
        hosts, noop, ping = _measure()
        mixed.append([str(hosts), f"{noop:.1f}", f"{ping:.1f}", f"{noop / ping:.2f}x"])
        base = None
        for size in SIZES:
            hosts, noop, ping = _measure(size, SCALE_HOST)
            per_host = noop / hosts
            base = base or per_host
            scaling.append([str(hosts), f"{noop:.1f}", f"{ping:.1f}", f"{noop / ping:.2f}x", f"{per_host:.2f}",
                            f"{per_host / base:.2f}x"])
    finally:
        fleet.down(quiet=True)
    return [(f"No-op site.yml over SSH on the whole fleet (every host group) vs ping (median of {ROUNDS} "
             "alternating rounds)", mixed),
            (f"Fleet growth: no-op site.yml on 2 to 8 copies of {SCALE_HOST} (MIG + MPS on MIG devices), "
             f"median of {ROUNDS}", scaling)]
