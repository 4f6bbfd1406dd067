# Copyright (c) gpuops.sharing contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Capacity planning: workloads in, a sharing plan (MIG, MPS, time-slicing per GPU) out. Private to this collection.

Pure logic, no I/O, no ansible imports.  NVIDIA's per-model tables come from ``_catalogue`` and every
MIG layout is checked with the placement code the ``mig`` module uses (``_mig._fits``,
``_mig.check_feasible``), so a plan this module returns is one the ``mig`` module applies.

The rules, from NVIDIA's documentation:

* MIG (MIG User Guide, https://docs.nvidia.com/datacenter/tesla/mig-user-guide/): a GPU instance has
  its own SMs, memory slices, L2 and memory bandwidth, so it is the only mechanism with performance
  and fault isolation.  ``hard`` isolation therefore gets a GPU instance of its own, or a whole GPU
  on its own (the only choice on models without MIG: T4, V100, A10, L40S).  Profiles, instance
  counts and placements are the catalogue's; a GPU is either in MIG mode (its devices are GPU
  instances) or not (one device, the whole GPU).
* MPS (Multi-Process Service, https://docs.nvidia.com/deploy/mps/): Volta MPS clients have
  "fully isolated GPU address spaces", but no performance isolation; memory is only bounded per
  client by ``CUDA_MPS_PINNED_DEVICE_MEM_LIMIT`` / ``set_default_device_pinned_mem_limit`` and
  compute capped (not reserved) by the active thread percentage.  A server takes at most 48 client
  CUDA contexts per device on Volta and later ("Client-Server Connection Limits"; 60 from CUDA 13.1,
  48 is planned so that older drivers work too); on MIG one control daemon runs per MIG device.
  ``soft`` workloads share a device (whole GPU or GPU instance) as MPS clients; the plan sets each
  client's pinned memory limit to its memory and its active thread percentage to its compute share.
* Time-slicing: without MPS, "work launched to the compute engine from work queues belonging to
  different CUDA contexts cannot execute concurrently"; no memory isolation.  Only ``none``
  workloads time-slice, and never with a latency-sensitive one: a group of ``none`` workloads that
  includes a latency-sensitive one runs under MPS instead (concurrent, with limits).

Model of the problem: every replica is placed on a *device* (a whole GPU, or a GPU instance of a GPU
in MIG mode).  A device holds one replica alone (any isolation), or a group of two or more that all
may share: an MPS group (at most 48 clients, members soft or none) or a time-sliced group (only
``none``, none latency-sensitive).  A group's memory and compute (fractions of a full GPU; a GPU
instance offers its SMs' share of the whole GPU's) must fit its device.  The objective is the
fewest GPUs, then the least memory on the GPUs used (memory stranded = that memory less the
demand, so the same order).  A GPU instance holding a group is the smallest profile that fits it:
among the catalogue's profiles without media-engine attributes a profile with fewer memory slices
and compute slices and (a superset of) the same placements dominates a larger one, which
``test__capacity`` checks for every model, so choosing it loses no plan.

Search: branch and bound over replicas (largest first) when there are at most EXACT_REPLICAS,
with identical replicas in canonical order and states de-duplicated; a greedy best-fit with an
improvement pass (empty the emptiest GPUs, move a GPU's contents to a smaller model) otherwise,
and as the first incumbent of the exact search.  Work is bounded: MAX_REPLICAS, MAX_GPUS and a
node budget (a search stopped by the budget says so in ``search``).  ``optimal`` means the fewest GPUs
are proven (the exact search ran to its end, or the GPUs used meet the lower bound); only a complete exact
search also proves the least memory among plans with that many GPUs.
"""

from __future__ import annotations

import difflib
import itertools
import math
import re

from ansible_collections.gpuops.sharing.plugins.module_utils import _catalogue, _mig

ISOLATIONS = ("hard", "soft", "none")
MPS_CLIENTS_PER_DEVICE = 48      # MPS docs, "Client-Server Connection Limits": Volta and later, CUDA <= 13.0
MAX_REPLICAS = 5000
MAX_GPUS = 5000
MAX_WORKLOADS = 1000
EXACT_REPLICAS = 12
NODE_BUDGET = 50_000
EPS = 1e-9

_MEMORY = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([A-Za-z]+)\s*$")
_UNITS = {"m": 1, "mb": 1, "mib": 1, "g": 1024, "gb": 1024, "gib": 1024, "t": 1024 ** 2, "tb": 1024 ** 2,
          "tib": 1024 ** 2}
_MEMORY_HELP = ("give a number with a unit: MiB, GiB or TiB (MB/M, GB/G, TB/T are read as the same binary units, "
                "as nvidia-smi's profile names use them), for example 18GiB, 4.5GiB or 512MiB")


class CapacityError(Exception):
    """Bad input, or a request no fleet of this shape can meet; says which value, why, and what would do."""


# --------------------------------------------------------------------------- input

def parse_memory(value, what: str) -> int:
    """``18GiB`` -> 18432 (MiB, rounded up to a whole MiB)."""
    if isinstance(value, (bool, int, float)):
        raise CapacityError(f"{what}={value!r} has no unit; {_MEMORY_HELP}")
    match = _MEMORY.match(str(value))
    if not match or match.group(2).lower() not in _UNITS:
        raise CapacityError(f"{what}={value!r} is not a memory size; {_MEMORY_HELP}")
    mib = math.ceil(float(match.group(1)) * _UNITS[match.group(2).lower()] - EPS)
    if mib <= 0:
        raise CapacityError(f"{what}={value!r} must be more than 0; {_MEMORY_HELP}")
    return mib


def human(mib: int | float) -> str:
    gib = mib / 1024
    return f"{gib:.2f}".rstrip("0").rstrip(".") + " GiB"


def mps_size(mib: int) -> str:
    """The MPS daemon's form of a limit: an integer followed by G or M (MPS docs)."""
    return f"{mib // 1024}G" if mib % 1024 == 0 else f"{mib}M"


def _model_names() -> list[str]:
    names = []
    for key, model in _catalogue.MODELS.items():
        names += [key, model["name"]] + list(model["aliases"])
    return names


def find_model(text) -> dict:
    try:
        return _catalogue.find_model(str(text))
    except KeyError:
        close = difflib.get_close_matches(str(text), _model_names(), n=3, cutoff=0.5)
        close += [n for n in _model_names() if str(text).lower() in n.lower() and n not in close][:3 - len(close)]
        hint = f" (did you mean {' or '.join(repr(c) for c in close)}?)" if close else ""
        raise CapacityError(f"unknown GPU model {text!r}{hint}; known models: {', '.join(_catalogue.MODELS)}") \
            from None


class ModelInfo:
    """What the planner needs of one catalogue model."""

    def __init__(self, model: dict):
        self.key = model["key"]
        self.name = model["name"]
        self.memory = model["memory_total_mib"]
        self.sms = model["multiprocessor_count"]
        self.profiles = _catalogue.gi_profiles(model)     # the driver's shape, as _mig reads it
        self.by_id = {p["id"]: p for p in self.profiles}
        usable = [p for p in self.profiles if not _mig.attr_key(_mig.PROFILE_RE.match(p["name"]).group("attrs") or "")]
        gpu_slices = _mig.total_slices(self.profiles) or 1
        for p in usable:
            p["_compute"] = (p["multiprocessor_count"] / self.sms if p["multiprocessor_count"] and self.sms
                             else p["slices"] / gpu_slices)
        # smallest first: memory slices of a placement, compute slices, memory
        self.usable = sorted(usable, key=lambda p: (p["placements"][0][1], p["slices"], p["memory_mib"]))
        self.mig = bool(self.profiles)
        self.max_gi_memory = max((p["memory_mib"] for p in usable), default=0)
        self._fit_cache: dict[tuple, bool] = {}

    def min_profile(self, memory: float, compute: float) -> dict | None:
        for p in self.usable:
            if p["memory_mib"] >= memory and p["_compute"] + EPS >= compute:
                return p
        return None

    def fits(self, profile_ids: tuple) -> bool:
        """The GPU instances fit one GPU of this model (counts, engines, placements: ``_mig._fits``)."""
        key = tuple(sorted(profile_ids))
        hit = self._fit_cache.get(key)
        if hit is None:
            specs = [{"profile_id": i, "cis": [self.by_id[i]["slices"]]} for i in key]
            hit = self._fit_cache[key] = _mig._fits(self.profiles, specs)
        return hit


_MODEL_CACHE: dict[str, ModelInfo] = {}


def model_info(text) -> ModelInfo:
    model = find_model(text)
    if model["key"] not in _MODEL_CACHE:
        _MODEL_CACHE[model["key"]] = ModelInfo(model)
    return _MODEL_CACHE[model["key"]]


def _whole(value, what: str, minimum: int = 0) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise CapacityError(f"{what}={value!r} must be a whole number >= {minimum}")
    return value


def normalise_gpus(gpus: list) -> list[dict]:
    """``[{model, count, host?}]`` -> one slot per GPU: {host, index, model (ModelInfo)}; indexes per host."""
    if not isinstance(gpus, list) or not gpus:
        raise CapacityError("gpus is empty; give a list of {model, count} or {host, model, count}")
    slots: list[dict] = []
    next_index: dict = {}
    for n, entry in enumerate(gpus):
        if not isinstance(entry, dict) or "model" not in entry:
            raise CapacityError(f"gpus[{n}]={entry!r} must be a dict with model and count (and host, optionally)")
        extra = sorted(set(entry) - {"model", "count", "host"})
        if extra:
            raise CapacityError(f"gpus[{n}] has unknown keys {', '.join(extra)}; valid keys: host, model, count")
        info = model_info(entry["model"])
        count = _whole(entry.get("count", 1), f"gpus[{n}].count")
        host = entry.get("host")
        if host is not None and (not isinstance(host, str) or not host.strip()):
            raise CapacityError(f"gpus[{n}].host={host!r} must be an inventory host name")
        if len(slots) + count > MAX_GPUS:
            raise CapacityError(f"gpus: more than {MAX_GPUS} GPUs in all; plan the fleet in parts of at most "
                                f"{MAX_GPUS} GPUs")
        for _i in range(count):
            index = next_index.get(host, 0)
            next_index[host] = index + 1
            slots.append({"host": host, "index": index, "model": info})
    return slots


def normalise_workloads(workloads: list) -> list[dict]:
    if not isinstance(workloads, list) or not workloads:
        raise CapacityError("workloads is empty; give a list of {name, memory, isolation, ...}")
    if len(workloads) > MAX_WORKLOADS:
        raise CapacityError(f"workloads: {len(workloads)} entries, at most {MAX_WORKLOADS}; use replicas for copies")
    seen: set = set()
    out = []
    total = 0
    valid = {"name", "memory", "compute", "isolation", "replicas", "latency_sensitive"}
    for n, w in enumerate(workloads):
        if not isinstance(w, dict):
            raise CapacityError(f"workloads[{n}]={w!r} must be a dict with name and memory")
        name = w.get("name")
        if not isinstance(name, str) or not name.strip():
            raise CapacityError(f"workloads[{n}].name={name!r} must be a non-empty string")
        if name in seen:
            raise CapacityError(f"workloads[{n}].name={name!r} is used twice; workload names must be unique")
        seen.add(name)
        extra = sorted(set(w) - valid)
        if extra:
            raise CapacityError(f"workload {name!r} has unknown keys {', '.join(extra)}; valid keys: "
                                + ", ".join(sorted(valid)))
        if w.get("memory") is None:
            raise CapacityError(f"workload {name!r} has no memory; {_MEMORY_HELP}")
        memory = parse_memory(w["memory"], f"workload {name!r} memory")
        compute = w.get("compute")
        if compute is not None:
            if isinstance(compute, bool) or not isinstance(compute, (int, float)) or not 0 < compute <= 1:
                raise CapacityError(f"workload {name!r} compute={compute!r} must be a fraction of one full GPU, "
                                    f"more than 0 and at most 1 (0.25 is a quarter); a workload that needs more "
                                    f"than one GPU is several replicas")
            compute = float(compute)
        isolation = w.get("isolation", "soft")
        if isolation not in ISOLATIONS:
            raise CapacityError(f"workload {name!r} isolation={isolation!r} must be one of: hard (its own MIG "
                                f"instance or GPU), soft (may share through MPS), none (may time-slice)")
        replicas = _whole(w.get("replicas", 1), f"workload {name!r} replicas")
        latency = w.get("latency_sensitive", False)
        if not isinstance(latency, bool):
            raise CapacityError(f"workload {name!r} latency_sensitive={latency!r} must be true or false")
        total += replicas
        if total > MAX_REPLICAS:
            raise CapacityError(f"workloads: more than {MAX_REPLICAS} replicas in all; plan in parts of at most "
                                f"{MAX_REPLICAS} replicas")
        out.append({"name": name, "memory": memory, "compute": compute, "isolation": isolation,
                    "replicas": replicas, "latency_sensitive": latency, "index": n})
    return out


# --------------------------------------------------------------------------- groups

def group_kind(members: list[dict]) -> str | None:
    """How a device's replicas share it: exclusive (alone), mps, timeslice; None when they may not."""
    if len(members) == 1:
        return "exclusive"
    if any(r["isolation"] == "hard" for r in members):
        return None
    if all(r["isolation"] == "none" and not r["latency_sensitive"] for r in members):
        return "timeslice"
    if len(members) > MPS_CLIENTS_PER_DEVICE:
        return None
    return "mps"


class Device:
    __slots__ = ("profile", "members", "memory", "compute", "hard", "ts_only")

    def __init__(self, profile):
        self.profile = profile              # GI profile dict, or None for the whole GPU
        self.members: list[dict] = []
        self.memory = 0
        self.compute = 0.0
        self.hard = False                   # holds a replica that may share with no one
        self.ts_only = True                 # every member is none and not latency-sensitive

    def copy(self) -> Device:
        d = Device(self.profile)
        d.members = list(self.members)
        d.memory, d.compute, d.hard, d.ts_only = self.memory, self.compute, self.hard, self.ts_only
        return d

    def add(self, r: dict) -> None:
        self.members.append(r)
        self.memory += r["memory"]
        self.compute += r["plan_compute"]
        self.hard = self.hard or r["isolation"] == "hard"
        self.ts_only = self.ts_only and r["isolation"] == "none" and not r["latency_sensitive"]

    def may_join(self, r: dict) -> bool:
        if not self.members:
            return True
        if self.hard or r["isolation"] == "hard":
            return False
        ts = self.ts_only and r["isolation"] == "none" and not r["latency_sensitive"]
        return ts or len(self.members) < MPS_CLIENTS_PER_DEVICE


class Gpu:
    __slots__ = ("slot", "mig", "devices")

    def __init__(self, slot: dict, mig: bool):
        self.slot = slot
        self.mig = mig
        self.devices: list[Device] = []

    def copy(self) -> Gpu:
        g = Gpu(self.slot, self.mig)
        g.devices = [d.copy() for d in self.devices]
        return g

    @property
    def model(self) -> ModelInfo:
        return self.slot["model"]

    def used_memory(self) -> int:
        return sum(d.memory for d in self.devices)

    def options(self, r: dict):
        """Ways to put replica r on this GPU: (device index or -1 for a new device, new profile, waste)."""
        model = self.model
        out = []
        if not self.mig:
            if not self.devices:
                if r["memory"] <= model.memory and r["plan_compute"] <= 1 + EPS:
                    out.append((-1, None, model.memory - r["memory"]))
                return out
            d = self.devices[0]
            if d.may_join(r) and d.memory + r["memory"] <= model.memory and d.compute + r["plan_compute"] <= 1 + EPS:
                out.append((0, None, model.memory - d.memory - r["memory"]))
            return out
        ids = [d.profile["id"] for d in self.devices]
        for n, d in enumerate(self.devices):
            if not d.may_join(r):
                continue
            p = model.min_profile(d.memory + r["memory"], d.compute + r["plan_compute"])
            if p is None:
                continue
            if p is not d.profile and not model.fits(tuple(ids[:n] + [p["id"]] + ids[n + 1:])):
                continue
            out.append((n, p, p["memory_mib"] - d.memory - r["memory"] + (p["memory_mib"] - d.profile["memory_mib"])))
        p = model.min_profile(r["memory"], r["plan_compute"])
        if p is not None and model.fits(tuple(ids + [p["id"]])):
            out.append((-1, p, p["memory_mib"] - r["memory"] + p["memory_mib"]))
        return out

    def apply(self, r: dict, option) -> None:
        n, profile, _waste = option
        if n < 0:
            self.devices.append(Device(profile))
            n = len(self.devices) - 1
        elif profile is not None:
            self.devices[n].profile = profile
        self.devices[n].add(r)


# --------------------------------------------------------------------------- bounds

def lower_bound(slots: list[dict], replicas: list[dict]) -> int:
    """A proven lower bound on the GPUs any plan of all replicas needs; the largest of four.

    * memory: the fewest GPUs of the fleet whose memory together holds the replicas' memory;
    * compute: the same for compute (a GPU offers at most 1);
    * alone: the replicas that need a whole GPU to themselves (hard, and larger than every GPU instance
      of every MIG model in the fleet);
    * share: every replica takes at least a share of the GPU it lands on -- a sharer its memory over the
      GPU's memory, a hard replica the memory slices of the smallest GPU instance that holds it over the
      GPU's memory slices (the whole GPU where none does) -- and the shares on one GPU add up to at
      most 1, because a GPU instance of s of S memory slices has at most s/S of the GPU's memory
      (``test__capacity`` checks this for every catalogue profile).  So the sum over the replicas of
      their smallest share over the fleet's models is a bound.
    """
    if not replicas:
        return 0
    sizes = sorted((s["model"].memory for s in slots), reverse=True)
    need = sum(r["memory"] for r in replicas)
    prefix = list(itertools.accumulate(sizes))
    by_memory = next((n + 1 for n, have in enumerate(prefix) if have >= need), len(sizes) + 1)
    by_compute = math.ceil(sum(r["plan_compute"] for r in replicas) - 1e-6)
    alone = sum(1 for r in replicas if r["isolation"] == "hard" and not _fits_some_gi(slots, r))
    models = [s["model"] for s in _distinct(slots)]
    by_share = math.ceil(sum(min(_share(m, r) for m in models) for r in replicas) - 1e-6)
    return max(by_memory, by_compute, alone, by_share, 1)


def _share(model: ModelInfo, r: dict) -> float:
    """The least share of one GPU of this model that replica r takes (see lower_bound)."""
    if r["isolation"] != "hard":
        return r["memory"] / model.memory
    p = model.min_profile(r["memory"], r["plan_compute"]) if model.mig else None
    if p is None:
        return 1.0
    slots = max(a + b for gi in model.profiles for a, b in gi["placements"])
    return min(p2["placements"][0][1] for p2 in model.usable
               if p2["memory_mib"] >= r["memory"] and p2["_compute"] + EPS >= r["plan_compute"]) / slots


def _fits_some_gi(slots: list[dict], r: dict) -> bool:
    return any(s["model"].min_profile(r["memory"], r["plan_compute"]) is not None for s in _distinct(slots))


def _distinct(slots: list[dict]) -> list[dict]:
    seen, out = set(), []
    for s in slots:
        if s["model"].key not in seen:
            seen.add(s["model"].key)
            out.append(s)
    return out


# --------------------------------------------------------------------------- search

def _cost(gpus: list[Gpu]) -> tuple[int, int]:
    used = [g for g in gpus if g.devices]
    return len(used), sum(g.model.memory for g in used)


def _open_options(slot: dict, r: dict) -> list[bool]:
    """Modes a fresh GPU can take for replica r: True (MIG) and/or False (whole)."""
    model = slot["model"]
    modes = []
    if model.mig and model.min_profile(r["memory"], r["plan_compute"]) is not None:
        modes.append(True)
    if r["memory"] <= model.memory:
        modes.append(False)
    return modes


def _best_option(gpus: list[Gpu], r: dict, skip: Gpu | None = None):
    best = None
    for g in gpus:
        if g is skip or not g.devices or g.model.memory - g.used_memory() < r["memory"]:
            continue
        for opt in g.options(r):
            key = (opt[0] < 0, opt[2])          # joining a device beats a new one; then the least waste
            if best is None or key < best[0]:
                best = (key, g, opt)
    return best


def _order(replicas: list[dict]) -> list[dict]:
    return sorted(replicas, key=lambda r: (r["isolation"] != "hard", -r["memory"], -r["plan_compute"],
                                           r["w"], r["replica"]))


def greedy(slots: list[dict], replicas: list[dict]) -> tuple[list[Gpu], list[dict]]:
    """Best fit, largest first; a fresh GPU is the largest model left that holds the replica."""
    free: dict[str, list[dict]] = {}
    for s in slots:
        free.setdefault(s["model"].key, []).append(s)
    gpus: list[Gpu] = []
    unplaced: list[dict] = []
    for r in _order(replicas):
        best = _best_option(gpus, r)
        if best is not None:
            best[1].apply(r, best[2])
            continue
        candidates = [pool[0] for pool in free.values() if pool and _open_options(pool[0], r)]
        if not candidates:
            unplaced.append(r)
            continue
        slot = max(candidates, key=lambda s: (s["model"].memory, s["model"].mig))
        free[slot["model"].key].pop(0)
        mig = _open_options(slot, r)[0] and (r["isolation"] == "hard" or not _prefers_whole(slot, r))
        g = Gpu(slot, mig)
        g.apply(r, g.options(r)[0])
        gpus.append(g)
    _improve(gpus, free)
    return gpus, unplaced


def _prefers_whole(slot: dict, r: dict) -> bool:
    """Sharers open a whole GPU (all of its memory and SMs); hard replicas a GPU in MIG mode."""
    return r["memory"] <= slot["model"].memory


def _improve(gpus: list[Gpu], free: dict[str, list[dict]], budget: int = 400) -> None:
    """Empty the emptiest GPUs into the others; move a GPU's contents to a smaller free model."""
    for g in sorted(gpus, key=lambda g: g.used_memory()):
        if budget <= 0:
            break
        budget -= 1
        if not g.devices:
            continue
        members = [r for d in g.devices for r in d.members]
        saved: dict[int, tuple[Gpu, list[Device]]] = {}
        ok = True
        for r in _order(members):
            best = _best_option(gpus, r, skip=g)
            if best is None:
                ok = False
                break
            if id(best[1]) not in saved:
                saved[id(best[1])] = (best[1], [d.copy() for d in best[1].devices])
            best[1].apply(r, best[2])
        if ok:
            free[g.slot["model"].key].insert(0, g.slot)
            g.devices = []
        else:
            for h, devices in saved.values():
                h.devices = devices
    gpus[:] = [g for g in gpus if g.devices]
    for n, g in enumerate(gpus):
        members = _order([r for d in g.devices for r in d.members])
        for key in sorted(free, key=lambda k: free[k][0]["model"].memory if free[k] else 0):
            pool = free[key]
            if not pool or pool[0]["model"].memory >= g.model.memory:
                continue
            packed = _pack_one(pool[0], members)
            if packed is not None:
                free[g.slot["model"].key].insert(0, g.slot)
                pool.pop(0)
                gpus[n] = packed
                break


def _pack_one(slot: dict, members: list[dict]) -> Gpu | None:
    """All members on one fresh GPU of this slot, in MIG mode or not, or None."""
    for mig in (False, True):
        if mig and not slot["model"].mig:
            continue
        g = Gpu(slot, mig)
        for r in members:
            opts = g.options(r)
            if not opts:
                break
            g.apply(r, min(opts, key=lambda o: (o[0] < 0, o[2])))
        else:
            return g
    return None


def exact(slots: list[dict], replicas: list[dict], incumbent: list[Gpu] | None, budget: int = NODE_BUDGET):
    """Branch and bound from an incumbent plan (None: none known); returns (gpus or None, search complete)."""
    order = _order(replicas)
    pools: dict[str, list[dict]] = {}
    for s in slots:
        pools.setdefault(s["model"].key, []).append(s)
    keys = sorted(pools, key=lambda key: pools[key][0]["model"].memory)   # small GPUs first: least memory
    biggest = max(s["model"].memory for s in slots)
    best = {"cost": _cost(incumbent) if incumbent is not None else (math.inf, math.inf), "gpus": incumbent}
    seen: set = set()
    nodes = [0]
    suffix_mem = [0] * (len(order) + 1)
    for i in range(len(order) - 1, -1, -1):
        suffix_mem[i] = suffix_mem[i + 1] + order[i]["memory"]

    def state_key(k, gpus, floor):
        # GPUs and devices in creation order (the floor refers to those positions); replicas of one
        # workload are interchangeable, so a device is its profile and its workloads' multiset
        return (k, floor, tuple((g.model.key, g.mig, tuple(
            ((d.profile["id"] if d.profile else -1), tuple(sorted(r["w"] for r in d.members)))
            for d in g.devices)) for g in gpus))

    def search(k: int, gpus: list[Gpu], used: dict, last: dict) -> None:
        nodes[0] += 1
        if nodes[0] > budget:
            return
        cost = _cost(gpus)
        if k == len(order):
            if cost < best["cost"]:
                best.update(cost=cost, gpus=[g.copy() for g in gpus])
            return
        extra = max(0, suffix_mem[k] - sum(g.model.memory - g.used_memory() for g in gpus))
        # a lower bound of every completion: the memory left over needs GPUs of at least that much memory
        if (cost[0] + math.ceil(extra / biggest), cost[1] + extra) >= best["cost"]:
            return
        r = order[k]
        floor = last.get(r["w"], (-1, -1))     # identical replicas: canonical (gpu, device) order
        key = state_key(k, gpus, floor)
        if key in seen:
            return
        seen.add(key)
        for gi, g in enumerate(gpus):
            if gi < floor[0]:
                continue
            for opt in g.options(r):
                di = opt[0] if opt[0] >= 0 else len(g.devices)
                if (gi, di) < floor:
                    continue
                saved = g.copy()
                g.apply(r, opt)
                search(k + 1, gpus, used, {**last, r["w"]: (gi, di)})
                gpus[gi] = saved
                g = saved
        for key_ in keys:
            if used[key_] >= len(pools[key_]):
                continue
            slot = pools[key_][used[key_]]
            for mig in _open_options(slot, r):
                g = Gpu(slot, mig)
                opts = g.options(r)
                if not opts:
                    continue
                g.apply(r, opts[0])
                used[key_] += 1
                gpus.append(g)
                search(k + 1, gpus, used, {**last, r["w"]: (len(gpus) - 1, 0)})
                gpus.pop()
                used[key_] -= 1

    search(0, [], {k: 0 for k in keys}, {})
    return best["gpus"], nodes[0] <= budget


# --------------------------------------------------------------------------- the plan

def _check_possible(slots: list[dict], workloads: list[dict]) -> None:
    models = _distinct(slots)
    largest = max(models, key=lambda s: s["model"].memory)["model"]
    for w in workloads:
        if w["memory"] > largest.memory:
            raise CapacityError(
                f"workload {w['name']!r} needs {human(w['memory'])} per replica, more than any GPU of the fleet has "
                f"(the largest, {largest.key}, has {human(largest.memory)}); split it into replicas that each fit, "
                f"or add a larger model")
    whole_needed = [w for w in workloads if w["isolation"] == "hard" and w["replicas"]
                    and not _fits_some_gi(slots, {"memory": w["memory"], "plan_compute": w["compute"] or 0.0})]
    count = sum(w["replicas"] for w in whole_needed)
    holders = sum(1 for s in slots if s["model"].memory >= min((w["memory"] for w in whole_needed), default=0))
    if whole_needed and count > holders:
        mig = sorted({s["model"].key for s in models if s["model"].mig})
        why = (f"no MIG instance of {', '.join(mig)} is large enough" if mig
               else "no GPU model of the fleet has MIG")
        raise CapacityError(
            "hard isolation needs a MIG instance or a whole GPU per replica: "
            + ", ".join(f"{w['name']!r} ({w['replicas']} x {human(w['memory'])})" for w in whole_needed)
            + f" need {count} whole GPUs ({why}), the fleet has {holders} that can hold them; add GPUs, "
              f"use a MIG model, or relax isolation to soft")


def plan(gpus: list, workloads: list) -> dict:
    """The capacity plan; raises CapacityError for bad input."""
    slots = normalise_gpus(gpus)
    wls = normalise_workloads(workloads)
    _check_possible(slots, wls)
    replicas = []
    for w in wls:
        for i in range(w["replicas"]):
            replicas.append({"workload": w["name"], "w": w["index"], "replica": i, "memory": w["memory"],
                             "compute": w["compute"], "plan_compute": w["compute"] or 0.0,
                             "isolation": w["isolation"], "latency_sensitive": w["latency_sensitive"]})
    bound = lower_bound(slots, replicas)
    placed, unplaced = greedy(slots, replicas)
    search = "heuristic"
    optimal = False
    if len(replicas) <= EXACT_REPLICAS:
        found, complete = exact(slots, replicas, None if unplaced else placed)
        if found is not None:
            placed, unplaced = found, []
        search = "exact" if complete else "exact, stopped at its budget"
        optimal = complete and not unplaced
    if not unplaced and _cost(placed)[0] == bound:
        optimal = True
    return {**render(slots, wls, placed, unplaced, bound, optimal), "search": search}


EMPTY = {"changed": False, "feasible": False, "optimal": False, "search": None, "gpus_used": 0, "lower_bound": 0, "gap": None,
         "stranded_memory_mib": 0, "gpus": [], "assignments": [], "unplaced": [], "explanation": {}, "host_vars": {}}


def run(params: dict) -> dict:
    """The module's result for validated parameters: the plan, or ``failed`` and ``msg`` with every key empty."""
    try:
        return {**EMPTY, **plan(params["gpus"], params["workloads"])}
    except CapacityError as exc:
        return {**EMPTY, "failed": True, "msg": str(exc)}


def _limits(device: Device, share: float) -> list[dict]:
    """Per-client MPS limits of a device: pinned memory = the replica's, threads = its compute share."""
    given = sum(r["plan_compute"] for r in device.members)
    unset = [r for r in device.members if r["compute"] is None]
    spare = max(0.0, share - given) / len(unset) if unset else 0.0
    out = []
    for r in device.members:
        want = r["compute"] if r["compute"] is not None else spare
        pct = min(100, max(1, math.ceil(100 * want / share - 1e-6))) if want else max(1, 100 // len(device.members))
        out.append({"active_thread_percentage": pct, "device_pinned_mem_limit": mps_size(r["memory"])})
    return out


def render(slots, wls, placed: list[Gpu], unplaced: list[dict], bound: int, optimal: bool) -> dict:
    placed = sorted(placed, key=lambda g: slots.index(g.slot))
    out_gpus, assignments, host_vars = [], [], {}
    chosen: dict[str, list] = {w["name"]: [] for w in wls}
    stranded = 0
    for g in placed:
        model = g.model
        mig_devices: dict[str, int] = {}
        devices = []
        for _n, d in enumerate(sorted(g.devices, key=lambda d: (-(d.profile or {}).get("slices", 99), d.members[0]["w"]))):
            kind = group_kind(d.members)
            name = d.profile["name"] if d.profile else "whole GPU"
            dev_mem = d.profile["memory_mib"] if d.profile else model.memory
            share = d.profile["_compute"] if d.profile else 1.0
            if d.profile:
                mig_devices[name] = mig_devices.get(name, 0) + 1
            limits = _limits(d, share) if kind == "mps" else [{}] * len(d.members)
            label = f"{name} #{sum(1 for x in devices if x['profile'] == name)}" if d.profile else "whole GPU"
            devices.append({"profile": name, "device": label, "sharing": kind, "memory_mib": dev_mem,
                            "memory_used_mib": d.memory, "clients": len(d.members),
                            "workloads": [r["workload"] for r in d.members]})
            for r, lim in zip(d.members, limits):
                share_text = {"exclusive": "alone", "mps": "MPS client", "timeslice": "time-sliced"}[kind]
                a = {"workload": r["workload"], "replica": r["replica"], "host": g.slot["host"],
                     "gpu": g.slot["index"], "model": model.key, "profile": d.profile["name"] if d.profile else None,
                     "device": label, "share": share_text}
                if lim:
                    a["mps"] = dict(lim)
                    a["client_environment"] = {
                        "CUDA_MPS_ACTIVE_THREAD_PERCENTAGE": str(lim["active_thread_percentage"]),
                        "CUDA_MPS_PINNED_DEVICE_MEM_LIMIT": "0=" + lim["device_pinned_mem_limit"]}
                assignments.append(a)
                chosen[r["workload"]].append((kind, d.profile, model, dev_mem, len(d.members)))
        stranded += model.memory - g.used_memory()
        mps_devices = [d for d in devices if d["sharing"] == "mps"]
        limits = sorted({(a["mps"]["active_thread_percentage"], a["mps"]["device_pinned_mem_limit"])
                         for a in assignments if a.get("mps") and a["host"] == g.slot["host"]
                         and a["gpu"] == g.slot["index"]})
        mps = {"enabled": bool(mps_devices),
               "targets": ([f"gpu{g.slot['index']}"] if mps_devices and not g.mig else
                           [d["device"] for d in mps_devices]),
               "clients": sum(d["clients"] for d in mps_devices)}
        if len(limits) == 1:
            mps["active_thread_percentage"], mps["device_pinned_mem_limit"] = limits[0]
        entry = {"host": g.slot["host"], "index": g.slot["index"], "model": model.key, "mig_enabled": g.mig,
                 "mig_devices": dict(sorted(mig_devices.items())), "mps": mps, "devices": devices,
                 "memory_mib": model.memory, "memory_used_mib": g.used_memory(),
                 "mig_config": {"devices": [g.slot["index"]], "mig-enabled": g.mig,
                                **({"mig-devices": dict(sorted(mig_devices.items()))} if g.mig else {})}}
        out_gpus.append(entry)
    for entry in out_gpus:
        if entry["host"] is None:
            continue
        hv = host_vars.setdefault(entry["host"], {"mig_config": [], "mps_targets": [], "_limits": set()})
        hv["mig_config"].append(entry["mig_config"])
        if entry["mps"]["enabled"]:
            if entry["mig_enabled"]:
                hv["_mig_mps"] = True
            else:
                hv["mps_targets"].append(str(entry["index"]))
    for host, hv in host_vars.items():
        lims = {(a["mps"]["active_thread_percentage"], a["mps"]["device_pinned_mem_limit"])
                for a in assignments if a["host"] == host and a.get("mps")}
        hv.pop("_limits")
        if hv.pop("_mig_mps", False):
            hv["mps_targets"] = ["all"]       # MIG device names exist only once the instances are created
        if not hv["mps_targets"]:
            del hv["mps_targets"]
            continue
        pct, mem = next(iter(lims)) if len(lims) == 1 else (None, None)
        hv["mps_default_active_thread_percentage"] = pct
        hv["mps_default_device_pinned_mem_limit"] = mem
    for r in unplaced:
        assignments.append({"workload": r["workload"], "replica": r["replica"], "host": None, "gpu": None,
                            "model": None, "profile": None, "device": None, "share": None})
    reasons = []
    for r in unplaced:
        reasons.append({"workload": r["workload"], "replica": r["replica"],
                        "reason": f"no GPU of the fleet has room left for {human(r['memory'])}"
                                  + (f" and {r['compute']:g} of a GPU's compute" if r["compute"] else "")
                                  + f" with {r['isolation']} isolation"})
    used = len(out_gpus)
    return {"feasible": not unplaced, "gpus_used": used, "lower_bound": bound, "gap": used - bound if not unplaced
            else None, "optimal": optimal, "stranded_memory_mib": stranded, "gpus": out_gpus,
            "assignments": assignments, "unplaced": reasons, "host_vars": host_vars,
            "explanation": {w["name"]: explain(w, chosen[w["name"]], len([r for r in unplaced
                                                                          if r["workload"] == w["name"]]))
                            for w in wls}}


def explain(w: dict, chosen: list, unplaced: int) -> str:
    need = f"{human(w['memory'])}" + (f" and {w['compute']:g} of a GPU's compute" if w["compute"] else "")
    rule = {
        "hard": "hard isolation: each replica gets a MIG instance of its own (its own SMs, memory slices, L2 and "
                "memory bandwidth, MIG User Guide) or, where no instance is large enough or the model has no MIG, "
                "a whole GPU of its own",
        "soft": "soft isolation: replicas may share a whole GPU or a MIG instance as MPS clients (isolated address "
                "spaces on Volta and later, no performance isolation), each with a pinned device memory limit of "
                "its memory and an active thread percentage of its compute share (MPS documentation); at most "
                f"{MPS_CLIENTS_PER_DEVICE} clients per device",
        "none": "no isolation: replicas may time-slice a device (no memory isolation, contexts take turns)"
                + (", but it is latency-sensitive, so it never time-slices with others: it shares only as an MPS "
                   "client, or runs alone" if w["latency_sensitive"] else ""),
    }[w["isolation"]]
    if w["isolation"] == "soft" and w["latency_sensitive"]:
        rule += "; latency-sensitive, so never time-sliced"
    where = {}
    for kind, profile, model, dev_mem, n in chosen:
        what = (f"{profile['name']} on {model.key}" if profile else f"a whole {model.key}")
        how = {"exclusive": "alone", "mps": f"as one of {n} MPS clients", "timeslice": f"time-sliced with {n - 1} others"}[kind]
        key = f"{what} ({human(dev_mem)}) {how}"
        where[key] = where.get(key, 0) + 1
    placed = "; ".join(f"{k} x{v}" if v > 1 else k for k, v in where.items()) or "nothing"
    text = f"{w['name']}: {w['replicas']} replica(s) of {need}. {rule}. Placed: {placed}."
    if unplaced:
        text += f" {unplaced} replica(s) could not be placed: the fleet has no room left."
    return text


# --------------------------------------------------------------------------- validation (tests, benches)

def validate(result: dict, gpus: list, workloads: list) -> list[str]:
    """Every rule a returned plan must keep; the problems found (an empty list for a valid plan)."""
    problems = []
    wls = {w["name"]: w for w in normalise_workloads(workloads)}
    slots = {(s["host"], s["index"]): s for s in normalise_gpus(gpus)}
    by_gpu: dict = {}
    for a in result["assignments"]:
        if a["gpu"] is None:
            continue
        by_gpu.setdefault((a["host"], a["gpu"]), []).append(a)
    for g in result["gpus"]:
        slot = slots.get((g["host"], g["index"]))
        if slot is None or slot["model"].key != g["model"]:
            problems.append(f"GPU {g['host']}/{g['index']} is not in the fleet as {g['model']}")
            continue
        model = slot["model"]
        if g["mig_enabled"]:
            try:
                specs = _mig.layout_from_mig_devices(model.profiles, g["mig_devices"], model.key)
                _mig.check_feasible(model.profiles, specs, model.key)
            except _mig.MigError as exc:
                problems.append(str(exc))
        devices: dict = {}
        for a in by_gpu.get((g["host"], g["index"]), []):
            devices.setdefault(a["device"], []).append(a)
        for label, members in devices.items():
            profile = members[0]["profile"]
            cap = model.memory if profile is None else next(
                p["memory_mib"] for p in model.profiles if p["name"] == profile)
            share = 1.0 if profile is None else next(p["_compute"] for p in model.usable if p["name"] == profile)
            ws = [wls[a["workload"]] for a in members]
            if sum(w["memory"] for w in ws) > cap:
                problems.append(f"{label} on GPU {g['index']}: memory over {cap} MiB")
            if sum(w["compute"] or 0 for w in ws) > share + 1e-6:
                problems.append(f"{label} on GPU {g['index']}: compute over {share}")
            if (profile is None) == g["mig_enabled"]:
                problems.append(f"{label} on GPU {g['index']}: device kind does not match MIG mode")
            if len(ws) > 1:
                if any(w["isolation"] == "hard" for w in ws):
                    problems.append(f"{label}: hard isolation shares a device")
                ts = all(w["isolation"] == "none" and not w["latency_sensitive"] for w in ws)
                if not ts:
                    if len(ws) > MPS_CLIENTS_PER_DEVICE:
                        problems.append(f"{label}: more than {MPS_CLIENTS_PER_DEVICE} MPS clients")
                    for a, w in zip(members, ws):
                        lim = a.get("mps") or {}
                        if lim.get("device_pinned_mem_limit") != mps_size(w["memory"]):
                            problems.append(f"{label}: {w['name']} has no pinned memory limit of its memory")
                        if not 1 <= lim.get("active_thread_percentage", 0) <= 100:
                            problems.append(f"{label}: {w['name']} has no active thread percentage")
    return problems
