"""`make bench`: every benchmark table, printed. Ratios are measured side by side in one run."""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

# each module has run() -> [(title, rows)]; rows[0] is the header
SECTIONS = ["mig_bench", "mps_noop", "vgpu_bench", "fleet_bench", "capacity_bench"]  # more are added as features land


def alternate(commands: dict[str, list[str]], env: dict, repeats: int, check) -> dict[str, list[float]]:
    """Seconds of each command per round, the commands taking turns (so load hits them alike);
    ``check(name, completed_process)`` raises when a run failed or did something it should not."""
    times: dict[str, list[float]] = {name: [] for name in commands}
    for _round in range(repeats):
        for name, cmd in commands.items():
            start = time.perf_counter()
            done = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
            times[name].append(time.perf_counter() - start)
            check(name, done)
    return times


def print_table(title: str, rows: list[list[str]]) -> None:
    widths = [max(len(str(r[i])) for r in rows if i < len(r)) for i in range(len(rows[0]))]
    print(f"\n## {title}\n")
    for n, row in enumerate(rows):
        print("| " + " | ".join(str(c).ljust(w) for c, w in zip(row, widths)) + " |")
        if n == 0:
            print("|" + "|".join("-" * (w + 2) for w in widths) + "|")


def main(argv: list[str]) -> int:
    wanted = argv or SECTIONS
    for name in wanted:
        if not os.path.exists(os.path.join(HERE, name + ".py")):
            print(f"(benchmark {name} is not available)")
            continue
        start = time.perf_counter()
        for title, rows in importlib.import_module(name).run():
            print_table(title, rows)
        print(f"\n({name}: {time.perf_counter() - start:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
