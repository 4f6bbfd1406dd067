"""`make bench`: every benchmark table, printed. Ratios are measured side by side in one run."""

from __future__ import annotations

import importlib
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

# each module has run() -> [(title, rows)]; rows[0] is the header
SECTIONS = ["mig_bench", "fleet_bench"]  # more are added as features land


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
