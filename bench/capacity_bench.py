"""Capacity planner benchmarks (`make bench`): printed tables, measured side by side in one run.

1. The planner against first-fit-decreasing (FFD: largest replica first, onto the first GPU in fleet
   order where it fits, under the same sharing rules and the same MIG placement check) on seeded
   random mixed fleets: GPUs used, the proven lower bound, and time.
2. The planner against the independent brute force of the unit tests on small seeded cases: the share
   of cases where the planner's plan costs what the optimum does (should be 100 %).
3. Time against size: 10, 100 and 1,000 replicas over a mixed fleet of 500 GPUs.
"""

from __future__ import annotations

import os
import random
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
COLLECTIONS = os.path.join(ROOT, ".build", "collections")
BRUTE = os.path.join(ROOT, "tests", "unit", "plugins", "module_utils")
for _p in (COLLECTIONS, BRUTE):
    if _p not in sys.path:
        sys.path.insert(0, _p)

MIXED = ["A100-SXM4-80GB", "H100-SXM5-80GB", "A30-24GB", "T4", "L40S", "H200-141GB", "A100-SXM4-40GB"]
SMALL = ["A100-SXM4-80GB", "A30-24GB", "H100-SXM5-80GB", "T4", "L40S"]


def _link() -> None:
    link = os.path.join(COLLECTIONS, "ansible_collections", "gpuops", "sharing")
    if not os.path.islink(link):
        os.makedirs(os.path.dirname(link), exist_ok=True)
        os.symlink(ROOT, link)


def fleet(rng: random.Random, gpus: int) -> list[dict]:
    return [{"host": f"node{n}", "model": rng.choice(MIXED), "count": 4} for n in range(gpus // 4)]


def workloads(rng: random.Random, replicas: int) -> list[dict]:
    out, left = [], replicas
    while left:
        n = min(left, rng.randint(1, 20))
        left -= n
        out.append({"name": f"w{len(out)}", "memory": f"{rng.choice([2, 4, 5, 8, 10, 16, 20, 30, 40, 60])}GiB",
                    "compute": rng.choice([None, 0.05, 0.1, 0.2, 0.3]), "isolation": rng.choice(["hard", "soft", "none"]),
                    "replicas": n, "latency_sensitive": rng.random() < 0.2})
    return out


def ffd(cap, gpus: list, wls: list) -> int | None:
    """First-fit-decreasing under the planner's rules; GPUs used, or None when a replica finds no room."""
    slots = cap.normalise_gpus(gpus)
    reps = [{"workload": w["name"], "w": w["index"], "replica": i, "memory": w["memory"], "compute": w["compute"],
             "plan_compute": w["compute"] or 0.0, "isolation": w["isolation"], "latency_sensitive": w["latency_sensitive"]}
            for w in cap.normalise_workloads(wls) for i in range(w["replicas"])]
    opened, free = [], list(slots)
    for r in sorted(reps, key=lambda r: -r["memory"]):
        for g in opened:
            opts = g.options(r)
            if opts:
                g.apply(r, opts[0])
                break
        else:
            for n, slot in enumerate(free):
                modes = cap._open_options(slot, r)
                if modes:
                    g = cap.Gpu(slot, modes[0] and r["isolation"] == "hard")
                    g.apply(r, g.options(r)[0])
                    opened.append(g)
                    del free[n]
                    break
            else:
                return None
    return len(opened)


def run():
    _link()
    import capacity_brute

    from ansible_collections.gpuops.sharing.plugins.module_utils import _capacity as cap
    from ansible_collections.gpuops.sharing.plugins.module_utils import _catalogue

    rows = [["seed", "GPUs", "replicas", "lower bound", "planner GPUs", "FFD GPUs", "planner s", "FFD s", "valid"]]
    totals = [0, 0, 0]
    for seed in range(6):
        rng = random.Random(seed)
        gpus, wls = fleet(rng, 200), workloads(rng, 300)
        start = time.perf_counter()
        result = cap.plan(gpus, wls)
        t_plan = time.perf_counter() - start
        start = time.perf_counter()
        baseline = ffd(cap, gpus, wls)
        t_ffd = time.perf_counter() - start
        valid = not cap.validate(result, gpus, wls)
        rows.append([seed, 200, 300, result["lower_bound"], result["gpus_used"] if result["feasible"] else "infeasible",
                     baseline if baseline is not None else "infeasible", f"{t_plan:.2f}", f"{t_ffd:.2f}",
                     "yes" if valid else "NO"])
        if result["feasible"] and baseline is not None:
            totals[0] += result["gpus_used"]
            totals[1] += baseline
            totals[2] += result["lower_bound"]
    rows.append(["all", "", "", totals[2], totals[0], totals[1], "", "", ""])
    tables = [("Capacity plan: planner vs first-fit-decreasing (seeded random mixed fleets)", rows)]

    rng = random.Random(20261203)
    same = cases = 0
    start = time.perf_counter()
    while cases < 60:
        models = [rng.choice(SMALL) for _n in range(rng.randint(1, 3))]
        wls, left = [], rng.randint(1, 6)
        while left:
            n = rng.randint(1, left)
            left -= n
            wls.append({"name": f"w{len(wls)}", "memory": f"{rng.choice([3, 5, 8, 12, 20, 30, 45])}GiB",
                        "compute": rng.choice([None, 0.1, 0.3, 0.6]), "isolation": rng.choice(["hard", "soft", "none"]),
                        "replicas": n, "latency_sensitive": rng.random() < 0.3})
        try:
            result = cap.plan([{"model": m} for m in models], wls)
        except cap.CapacityError:
            continue
        cases += 1
        reps = [{"isolation": w["isolation"], "latency_sensitive": w["latency_sensitive"], "compute": w["compute"],
                 "memory": cap.parse_memory(w["memory"], "memory")} for w in wls for _n in range(w["replicas"])]
        best = capacity_brute.optimum([_catalogue.find_model(m)["key"] for m in models], reps)
        mine = (result["gpus_used"], sum(_catalogue.MODELS[g["model"]]["memory_total_mib"] for g in result["gpus"])) \
            if result["feasible"] else None
        same += mine == best
    tables.append(("Capacity plan: planner vs brute force (small seeded cases, <= 6 replicas, <= 3 GPUs)", [
        ["cases", "planner optimal", "exact share", "seconds (both)"],
        [cases, same, f"{100 * same / cases:.0f} %", f"{time.perf_counter() - start:.1f}"]]))

    rows = [["replicas", "GPUs in fleet", "GPUs used", "lower bound", "gap", "optimal", "seconds"]]
    for n in (10, 100, 1000):
        rng = random.Random(n)
        gpus, wls = fleet(rng, 500), workloads(rng, n)
        start = time.perf_counter()
        result = cap.plan(gpus, wls)
        rows.append([n, 500, result["gpus_used"], result["lower_bound"], result["gap"], result["optimal"],
                     f"{time.perf_counter() - start:.2f}"])
    tables.append(("Capacity plan: time against size (mixed fleet of 500 GPUs)", rows))
    return tables


if __name__ == "__main__":
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from run import print_table
    for title, rows in run():
        print_table(title, rows)
