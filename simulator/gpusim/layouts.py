"""MIG layouts of catalogue models: enumeration, random states, and a brute-force oracle.

Test and benchmark tooling, independent of the collection's planner:
  * all_layouts(model)       every multiset of GPU instance profiles that fits on the model
  * random_state(...)        a random set of placed GPU instances with compute instances
  * min_destroyed(...)       the fewest instances any change from a state to a layout must
                             destroy, found by exhaustive search (no heuristics)
Placements and the compute-instance rule are the simulator's (catalogue.py).
"""

from __future__ import annotations

import itertools
import random
from collections import Counter

from . import catalogue, device


def _overlaps(a, b) -> bool:
    return a[0] < b[0] + b[1] and b[0] < a[0] + a[1]


def gi_profiles(model_key: str) -> list[dict]:
    return catalogue.find_model(model_key)["mig"]["gpu_instance_profiles"]


def all_layouts(model_key: str) -> list[tuple[int, ...]]:
    """Every non-empty multiset (sorted profile ids) of GPU instances that can be placed together."""
    profiles = gi_profiles(model_key)
    options = [(p["id"], tuple(pl)) for p in profiles for pl in p["placements"]]
    limit = {p["id"]: p["instance_count"] for p in profiles}

    def engines_ok(chosen: list) -> bool:
        return engines_fit(model_key, [pid for pid, _pl in chosen])

    found: set[tuple[int, ...]] = set()

    def extend(start: int, chosen: list) -> None:
        if chosen:
            found.add(tuple(sorted(pid for pid, _pl in chosen)))
        for i in range(start, len(options)):
            pid, pl = options[i]
            if any(_overlaps(pl, other) for _p, other in chosen):
                continue
            if sum(1 for p, _o in chosen if p == pid) >= limit[pid]:
                continue
            chosen.append(options[i])
            if engines_ok(chosen):
                extend(i + 1, chosen)
            chosen.pop()

    extend(0, [])
    return sorted(found)


ENGINES = ("decoders", "encoders", "jpegs", "ofas")


def engines_fit(model_key: str, profile_ids: list[int]) -> bool:
    """The GPU instances' media engines fit in the GPU's (those of its full-GPU profile)."""
    profiles = gi_profiles(model_key)
    by_id = {p["id"]: p for p in profiles}
    mig = catalogue.find_model(model_key)["mig"]
    full = [p for p in profiles if p["slices"] == mig["gpu_slices"]]
    if not full or any(full[0].get(e) is None for e in ENGINES):
        return True
    return all(sum(by_id[pid].get(e) or 0 for pid in profile_ids) <= full[0][e] for e in ENGINES)


def ci_rule(gi_slices: int, size: int) -> list[tuple[int, int]]:
    if size >= gi_slices:
        return [(0, gi_slices)]
    return [(s, size) for s in range(0, gi_slices - size + 1, size)]


def _ci_sizes(gi_profile: dict) -> list[int]:
    return sorted({c["slices"] for c in gi_profile["compute_instance_profiles"]})


def random_cis(gi_profile: dict, rng: random.Random) -> list[tuple[int, int]]:
    """A random non-empty set of placed compute instances (size, start) inside a GI."""
    slices = gi_profile["slices"]
    if rng.random() < 0.5:
        return [(slices, 0)]
    taken: list[tuple[int, int]] = []
    for _attempt in range(rng.randint(1, slices)):
        size = rng.choice(_ci_sizes(gi_profile))
        free = [pl for pl in ci_rule(slices, size) if not any(_overlaps(pl, t) for t in taken)]
        if free:
            taken.append(rng.choice(free))
    return [(size, start) for start, size in taken] or [(slices, 0)]


def random_state(model_key: str, rng: random.Random, fill: float | None = None) -> list[dict]:
    """Random placed GPU instances: [{profile_id, start, size, cis: [(size, start)]}]."""
    profiles = gi_profiles(model_key)
    fill = rng.random() if fill is None else fill
    placed: list[dict] = []
    for _attempt in range(rng.randint(0, 8)):
        if rng.random() > fill and placed:
            break
        prof = rng.choice(profiles)
        if sum(1 for g in placed if g["profile_id"] == prof["id"]) >= prof["instance_count"]:
            continue
        if not engines_fit(model_key, [g["profile_id"] for g in placed] + [prof["id"]]):
            continue
        free = [tuple(pl) for pl in prof["placements"]
                if not any(_overlaps(tuple(pl), (g["start"], g["size"])) for g in placed)]
        if not free:
            continue
        start, size = rng.choice(free)
        placed.append({"profile_id": prof["id"], "start": start, "size": size, "cis": random_cis(prof, rng)})
    return placed


def random_target(model_key: str, rng: random.Random) -> dict:
    """A random valid layout as mig-parted ``mig-devices`` (MIG device name -> count)."""
    by_id = {p["id"]: p for p in gi_profiles(model_key)}
    state = random_state(model_key, rng, fill=0.9) or random_state(model_key, rng, fill=1.0)
    devices: Counter = Counter()
    for gi in state:
        prof = by_id[gi["profile_id"]]
        for size, _start in gi["cis"]:
            devices[prof["name"] if size == prof["slices"] else f"{size}c.{prof['name']}"] += 1
    return dict(devices)


def _cis_fit(gi_slices: int, kept: list[tuple[int, int]], sizes: list[int]) -> bool:
    if not sizes:
        return True
    size, rest = sizes[0], sizes[1:]
    return any(not any(_overlaps(pl, k) for k in kept) and _cis_fit(gi_slices, kept + [pl], rest)
               for pl in ci_rule(gi_slices, size))


def _gis_fit(profiles_by_id: dict, occupied: list, specs: list[int]) -> bool:
    if not specs:
        return True
    prof = profiles_by_id[specs[0]]
    for pl in prof["placements"]:
        pl = tuple(pl)
        if not any(_overlaps(pl, o) for o in occupied) and _gis_fit(profiles_by_id, occupied + [pl], specs[1:]):
            return True
    return False


def min_destroyed(model_key: str, current: list[dict], target: list[dict]) -> int:
    """Fewest GPU + compute instances destroyed to go from ``current`` to ``target``.

    ``current``: [{profile_id, start, size, cis: [(size, start)]}]; ``target``: [{profile_id, cis: [sizes]}].
    Exhaustive: every subset of current GPU instances to keep, every way to match them to
    target GPU instances of the same profile, every subset of their compute instances to keep.
    """
    profiles = {p["id"]: p for p in gi_profiles(model_key)}
    cur_devices = Counter((g["profile_id"], s) for g in current for s, _st in g["cis"])
    tgt_devices = Counter((t["profile_id"], s) for t in target for s in t["cis"])
    if cur_devices == tgt_devices and all(g["cis"] for g in current):
        return 0
    best = sum(1 + len(g["cis"]) for g in current)  # destroy everything: always possible
    n = len(current)
    for keep_mask in range(1, 1 << n):
        kept = [current[i] for i in range(n) if keep_mask >> i & 1]
        base = sum(1 + len(current[i]["cis"]) for i in range(n) if not keep_mask >> i & 1)
        if base >= best:
            continue
        for assign in _assignments(kept, target):
            rest = [target[t]["profile_id"] for t in range(len(target)) if t not in assign]
            occupied = [(g["start"], g["size"]) for g in kept]
            if not _gis_fit(profiles, occupied, rest):
                continue
            cost = base
            for g, t in zip(kept, assign):
                cost += _min_ci_destroyed(profiles[g["profile_id"]]["slices"], g["cis"], target[t]["cis"])
                if cost >= best:
                    break
            best = min(best, cost)
    return best


def _assignments(kept: list[dict], target: list[dict], chosen: tuple = ()):
    """Every injective match of kept GPU instances to target ones of the same profile."""
    if len(chosen) == len(kept):
        yield chosen
        return
    want = kept[len(chosen)]["profile_id"]
    for t, spec in enumerate(target):
        if t not in chosen and spec["profile_id"] == want:
            yield from _assignments(kept, target, chosen + (t,))


def _min_ci_destroyed(gi_slices: int, cis: list[tuple[int, int]], wanted: list[int]) -> int:
    best = len(cis)
    for r in range(len(cis), 0, -1):
        if len(cis) - r >= best:
            break
        for keep in itertools.combinations(cis, r):
            need = Counter(wanted)
            need.subtract(Counter(s for s, _st in keep))
            if any(v < 0 for v in need.values()):
                continue
            if _cis_fit(gi_slices, [(st, s) for s, st in keep], sorted(need.elements(), reverse=True)):
                best = min(best, len(cis) - r)
                break
    return best


def create(state: dict, index: int, current: list[dict]) -> None:
    """Create the GPU instances of a random_state() on GPU ``index`` of a state, at their placements."""
    for gi in current:
        made = device.create_gi(state, index, gi["profile_id"], (gi["start"], gi["size"]))
        prof = device.gi_profile(device.get_gpu(state, index), gi["profile_id"])
        for size, start in gi["cis"]:
            cprof = next(c for c in prof["compute_instance_profiles"] if c["slices"] == size)
            device.create_ci(state, index, made["id"], cprof["id"], (start, size))
