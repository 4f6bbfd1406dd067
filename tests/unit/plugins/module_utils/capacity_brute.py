"""An independent brute force for the capacity planner's optimum (tests and bench only).

Written apart from ``_capacity`` and as simply as possible: every way to split the replicas into
GPUs, every way to split a GPU's replicas into devices, every GPU instance profile for every
device (not only the smallest), every assignment of the GPUs' contents to the fleet's GPUs.  Only
NVIDIA's tables (``_catalogue``) and the mig module's placement check (``_mig._fits``) are shared.
"""

from __future__ import annotations

import functools
import itertools

from ansible_collections.gpuops.sharing.plugins.module_utils import _catalogue, _mig

CLIENTS = 48


def set_partitions(items):
    items = list(items)
    if not items:
        yield []
        return
    first, rest = items[0], items[1:]
    for part in set_partitions(rest):
        yield [[first]] + part
        for i in range(len(part)):
            yield part[:i] + [[first] + part[i]] + part[i + 1:]


def may_share(group):
    if len(group) == 1:
        return True
    if any(r["isolation"] == "hard" for r in group):
        return False
    if all(r["isolation"] == "none" and not r["latency_sensitive"] for r in group):
        return True                       # time-slicing, no client limit
    return len(group) <= CLIENTS          # MPS


def _mem(group):
    return sum(r["memory"] for r in group)


def _compute(group):
    return sum(r["compute"] or 0 for r in group)


@functools.cache
def _model(key):
    model = _catalogue.MODELS[key]
    profiles = _catalogue.gi_profiles(model)
    plain = [p for p in profiles if "+" not in p["name"] and "-" not in p["name"]]
    return model, profiles, plain


def gpu_can_hold(key, groups):
    """One GPU of this model holds these device groups (whole GPU: one group; MIG: a profile each)."""
    model, profiles, plain = _model(key)
    if len(groups) == 1:
        g = groups[0]
        if _mem(g) <= model["memory_total_mib"] and _compute(g) <= 1 + 1e-9:
            return True
    if not profiles:
        return False
    choices = []
    for g in groups:
        ok = [p for p in plain if p["memory_mib"] >= _mem(g)
              and p["multiprocessor_count"] / model["multiprocessor_count"] + 1e-9 >= _compute(g)]
        if not ok:
            return False
        choices.append(ok)
    return any(_mig._fits(profiles, [{"profile_id": p["id"], "cis": [p["slices"]]} for p in combo]) for combo in itertools.product(*choices))


def optimum(models, replicas):
    """(GPUs, memory of those GPUs) of the best plan, or None; ``models`` one catalogue key per GPU."""
    best = None
    hold_cache = {}

    def holders(bin_):
        key = tuple(sorted(id(r) for r in bin_))
        if key not in hold_cache:
            keys = set()
            for m in set(models):
                for groups in set_partitions(bin_):
                    if all(may_share(g) for g in groups) and gpu_can_hold(m, groups):
                        keys.add(m)
                        break
            hold_cache[key] = keys
        return hold_cache[key]

    for bins in set_partitions(replicas):
        if len(bins) > len(models):
            continue
        if best is not None and len(bins) > best[0]:
            continue
        options = [holders(b) for b in bins]
        if not all(options):
            continue
        for gpus in itertools.permutations(range(len(models)), len(bins)):
            if all(models[g] in opt for g, opt in zip(gpus, options)):
                cost = (len(bins), sum(_catalogue.MODELS[models[g]]["memory_total_mib"] for g in gpus))
                if best is None or cost < best:
                    best = cost
    return best
