"""The capacity planner: decision tables, error messages, plan validity, optimality against a brute force."""

from __future__ import annotations

import itertools
import random
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ansible_collections.gpuops.sharing.plugins.module_utils import _capacity, _catalogue, _mig

from . import capacity_brute


def plan(gpus, workloads):
    result = _capacity.plan(gpus, workloads)
    assert _capacity.validate(result, gpus, workloads) == []
    return result


def by_workload(result, name):
    return [a for a in result["assignments"] if a["workload"] == name]


# --------------------------------------------------------------------------- memory sizes

@pytest.mark.parametrize("text,mib", [("18GiB", 18432), ("18G", 18432), ("18GB", 18432), ("4.5GiB", 4608),
                                      ("512MiB", 512), ("512 M", 512), ("1TiB", 1048576), ("0.1MiB", 1)])
def test_memory_sizes(text, mib):
    assert _capacity.parse_memory(text, "m") == mib


@pytest.mark.parametrize("value,message", [
    ("18", "'18' is not a memory size; give a number with a unit"),
    (18, "18 has no unit"),
    ("18 gigs", "'18 gigs' is not a memory size"),
    ("-1GiB", "'-1GiB' is not a memory size"),
    ("0GiB", "'0GiB' must be more than 0"),
    ("GiB", "'GiB' is not a memory size"),
])
def test_bad_memory_sizes(value, message):
    with pytest.raises(_capacity.CapacityError, match="^m=" if not isinstance(value, int) else "m=18") as err:
        _capacity.parse_memory(value, "m")
    assert message in str(err.value) and "for example 18GiB" in str(err.value)


def test_mps_sizes_are_the_daemons_form():
    assert _capacity.mps_size(18432) == "18G"
    assert _capacity.mps_size(4608) == "4608M"


# --------------------------------------------------------------------------- decision tables

@pytest.mark.parametrize("model,memory,compute,profile", [
    ("A100-SXM4-80GB", "9GiB", None, "1g.10gb"),
    ("A100-SXM4-80GB", "18GiB", None, "1g.20gb"),
    ("A100-SXM4-80GB", "18GiB", 0.2, "2g.20gb"),      # 1g has 14 of 108 SMs (0.13), 2g 28 (0.26)
    ("A100-SXM4-80GB", "30GiB", None, "3g.40gb"),
    ("A100-SXM4-80GB", "30GiB", 0.45, "4g.40gb"),     # 3g 42/108 = 0.39, 4g 56/108 = 0.52
    ("H100-SXM5-80GB", "9GiB", 0.15, "1g.20gb"),      # Hopper 1g.10gb 16 SMs (0.12), 1g.20gb 26 (0.197)
    ("A30-24GB", "11GiB", None, "2g.12gb"),
    ("H200-141GB", "60GiB", None, "3g.71gb"),
])
def test_hard_gets_the_smallest_mig_instance_that_fits(model, memory, compute, profile):
    result = plan([{"host": "h", "model": model}],
                  [{"name": "w", "memory": memory, "compute": compute, "isolation": "hard"}])
    (a,) = result["assignments"]
    assert (a["profile"], a["share"]) == (profile, "alone")
    assert result["gpus"][0]["mig_enabled"] and result["gpus"][0]["mig_devices"] == {profile: 1}
    assert result["host_vars"]["h"] == {"mig_config": [{"devices": [0], "mig-enabled": True, "mig-devices": {profile: 1}}]}


@pytest.mark.parametrize("model", ["T4", "V100", "A10", "L40S"])
def test_hard_on_a_model_without_mig_gets_a_whole_gpu(model):
    result = plan([{"model": model, "count": 3}], [{"name": "w", "memory": "2GiB", "isolation": "hard", "replicas": 2}])
    assert result["gpus_used"] == 2 and result["lower_bound"] == 2 and result["optimal"]
    assert [a["share"] for a in result["assignments"]] == ["alone", "alone"]
    assert all(not g["mig_enabled"] and g["mig_devices"] == {} for g in result["gpus"])


def test_a_hard_replica_larger_than_every_instance_gets_a_whole_mig_capable_gpu():
    # 7g.80gb on an A100 80GB has 98 of 108 SMs: compute 0.95 needs the whole GPU
    result = plan([{"model": "A100-SXM4-80GB"}], [{"name": "w", "memory": "10GiB", "compute": 0.95, "isolation": "hard"}])
    assert result["gpus"][0]["mig_enabled"] is False and result["assignments"][0]["profile"] is None


def test_soft_shares_through_mps_with_limits_per_client():
    result = plan([{"host": "h", "model": "T4", "count": 2}],
                  [{"name": "a", "memory": "4GiB", "compute": 0.25, "isolation": "soft", "replicas": 2},
                   {"name": "b", "memory": "4608MiB", "compute": 0.5, "isolation": "soft"}])
    assert result["gpus_used"] == 1 and result["optimal"]
    shares = {(a["workload"], a["share"], a["mps"]["active_thread_percentage"], a["mps"]["device_pinned_mem_limit"])
              for a in result["assignments"]}
    assert shares == {("a", "MPS client", 25, "4G"), ("b", "MPS client", 50, "4608M")}
    env = by_workload(result, "b")[0]["client_environment"]
    assert env == {"CUDA_MPS_ACTIVE_THREAD_PERCENTAGE": "50", "CUDA_MPS_PINNED_DEVICE_MEM_LIMIT": "0=4608M"}
    hv = result["host_vars"]["h"]
    assert hv["mps_targets"] == ["0"]
    # two different limits on the host: no single daemon default
    assert hv["mps_default_device_pinned_mem_limit"] is None
    assert result["gpus"][0]["mps"]["enabled"] and result["gpus"][0]["mps"]["clients"] == 3


def test_uniform_limits_become_the_hosts_daemon_defaults():
    result = plan([{"host": "h", "model": "L40S"}],
                  [{"name": "a", "memory": "8GiB", "compute": 0.2, "isolation": "soft", "replicas": 4}])
    hv = result["host_vars"]["h"]
    assert (hv["mps_default_active_thread_percentage"], hv["mps_default_device_pinned_mem_limit"]) == (20, "8G")


def test_mps_inside_a_mig_instance():
    result = plan([{"host": "h", "model": "A100-SXM4-80GB"}],
                  [{"name": "iso", "memory": "30GiB", "isolation": "hard"},
                   {"name": "s", "memory": "5GiB", "compute": 0.1, "isolation": "soft", "replicas": 3}])
    assert result["gpus_used"] == 1
    (gpu,) = result["gpus"]
    assert gpu["mig_enabled"]
    mps = [d for d in gpu["devices"] if d["sharing"] == "mps"]
    assert len(mps) == 1 and mps[0]["workloads"] == ["s", "s", "s"] and mps[0]["profile"] != "whole GPU"
    assert result["host_vars"]["h"]["mps_targets"] == ["all"]     # MIG device names exist only once created
    # 3 x 5 GiB and 0.3 of a GPU: 2g.20gb has 28/108 SMs (0.26), so 3g.40gb (42/108, 0.39); the active thread
    # percentage is of the instance: 0.1 of the GPU is 25.7 -> 26 % of the 3g.40gb
    assert mps[0]["profile"] == "3g.40gb"
    assert {a["mps"]["active_thread_percentage"] for a in by_workload(result, "s")} == {26}


def test_none_time_slices_and_latency_sensitive_never_does():
    result = plan([{"model": "T4", "count": 3}],
                  [{"name": "batch", "memory": "2GiB", "isolation": "none", "replicas": 3}])
    assert {a["share"] for a in result["assignments"]} == {"time-sliced"} and result["gpus_used"] == 1
    assert "mps" not in result["assignments"][0]
    result = plan([{"model": "T4", "count": 3}],
                  [{"name": "batch", "memory": "2GiB", "isolation": "none", "replicas": 2},
                   {"name": "api", "memory": "2GiB", "isolation": "none", "latency_sensitive": True}])
    assert result["gpus_used"] == 1
    assert {a["share"] for a in result["assignments"]} == {"MPS client"}   # concurrent, not time-sliced
    assert "never time-slices" in result["explanation"]["api"]


def test_hard_never_shares():
    result = plan([{"model": "L40S", "count": 2}],
                  [{"name": "h", "memory": "1GiB", "isolation": "hard"},
                   {"name": "s", "memory": "1GiB", "isolation": "soft"}])
    assert result["gpus_used"] == 2


def test_mps_client_limit_per_device():
    result = plan([{"model": "L40S", "count": 3}],
                  [{"name": "tiny", "memory": "100MiB", "isolation": "soft", "replicas": 49}])
    assert result["feasible"] and result["gpus_used"] == 2
    assert max(d["clients"] for g in result["gpus"] for d in g["devices"]) == _capacity.MPS_CLIENTS_PER_DEVICE
    # time-slicing has no client limit
    result = plan([{"model": "L40S", "count": 3}],
                  [{"name": "tiny", "memory": "100MiB", "isolation": "none", "replicas": 49}])
    assert result["gpus_used"] == 1


def test_compute_is_not_oversubscribed():
    result = plan([{"model": "L40S", "count": 3}],
                  [{"name": "c", "memory": "1GiB", "compute": 0.6, "isolation": "soft", "replicas": 2}])
    assert result["gpus_used"] == 2 and result["lower_bound"] == 2


def test_fewest_gpus_then_least_memory():
    result = plan([{"model": "H200-141GB"}, {"model": "T4"}], [{"name": "w", "memory": "10GiB"}])
    assert [g["model"] for g in result["gpus"]] == ["T4"]
    result = plan([{"model": "T4", "count": 4}, {"model": "H200-141GB"}],
                  [{"name": "w", "memory": "10GiB", "replicas": 4}])
    assert [g["model"] for g in result["gpus"]] == ["H200-141GB"] and result["optimal"]


def test_too_small_a_fleet_leaves_replicas_unplaced_with_the_reason():
    result = plan([{"model": "T4"}], [{"name": "w", "memory": "10GiB", "replicas": 3}])
    assert not result["feasible"] and result["gap"] is None
    assert len(result["unplaced"]) == 2 and len([a for a in result["assignments"] if a["gpu"] is None]) == 2
    assert result["unplaced"][0]["reason"] == "no GPU of the fleet has room left for 10 GiB with soft isolation"
    assert "could not be placed" in result["explanation"]["w"]


def test_hosts_and_indexes():
    result = plan([{"host": "a", "model": "T4", "count": 2}, {"host": "b", "model": "T4"}, {"host": "a", "model": "L40S"}],
                  [{"name": "w", "memory": "40GiB"}])
    (gpu,) = result["gpus"]
    assert (gpu["host"], gpu["index"], gpu["model"]) == ("a", 2, "L40S")
    assert result["host_vars"]["a"]["mig_config"] == [{"devices": [2], "mig-enabled": False}]


# --------------------------------------------------------------------------- bad input

@pytest.mark.parametrize("gpus,workloads,message", [
    ([{"model": "A100-80G"}], [{"name": "w", "memory": "1GiB"}],
     "unknown GPU model 'A100-80G' (did you mean 'A100-80GB'"),
    ([{"model": "H100"}], [{"name": "w", "memory": "200GiB"}],
     "workload 'w' needs 200 GiB per replica, more than any GPU of the fleet has (the largest, H100-SXM5-80GB, "
     "has 79.65 GiB); split it"),
    ([{"model": "T4", "count": 2}], [{"name": "w", "memory": "1GiB", "isolation": "hard", "replicas": 3}],
     "hard isolation needs a MIG instance or a whole GPU per replica: 'w' (3 x 1 GiB) need 3 whole GPUs (no GPU model "
     "of the fleet has MIG), the fleet has 2"),
    ([{"model": "A30", "count": 1}], [{"name": "w", "memory": "23.5GiB", "isolation": "hard",
                                       "replicas": 2}],
     "need 2 whole GPUs (no MIG instance of A30-24GB is large enough), the fleet has 1"),
    ([{"model": "T4"}], [{"name": "w", "memory": "18"}], "workload 'w' memory='18' is not a memory size"),
    ([{"model": "T4"}], [{"name": "w", "memory": "1GiB", "compute": 1.5}],
     "workload 'w' compute=1.5 must be a fraction of one full GPU"),
    ([{"model": "T4"}], [{"name": "w", "memory": "1GiB", "compute": 0}], "compute=0 must be a fraction"),
    ([{"model": "T4"}], [{"name": "w", "memory": "1GiB", "isolation": "strict"}],
     "isolation='strict' must be one of: hard"),
    ([{"model": "T4"}], [{"name": "w", "memory": "1GiB"}, {"name": "w", "memory": "1GiB"}], "is used twice"),
    ([{"model": "T4"}], [{"name": "w", "memory": "1GiB", "gpu": 1}], "unknown keys gpu; valid keys"),
    ([{"model": "T4"}], [{"name": "w"}], "workload 'w' has no memory"),
    ([{"model": "T4"}], [{"name": "w", "memory": "1GiB", "replicas": -1}], "replicas=-1 must be a whole number >= 0"),
    ([{"model": "T4"}], [{"name": "w", "memory": "1GiB", "replicas": 6000}], "more than 5000 replicas in all"),
    ([{"model": "T4", "count": 6000}], [{"name": "w", "memory": "1GiB"}], "more than 5000 GPUs in all"),
    ([{"model": "T4", "count": -2}], [{"name": "w", "memory": "1GiB"}], "gpus[0].count=-2 must be a whole number"),
    ([], [{"name": "w", "memory": "1GiB"}], "gpus is empty"),
    ([{"model": "T4"}], [], "workloads is empty"),
    ([{"model": "T4", "hosts": "x"}], [{"name": "w", "memory": "1GiB"}], "gpus[0] has unknown keys hosts"),
])
def test_bad_input_is_refused_with_a_clear_message(gpus, workloads, message):
    with pytest.raises(_capacity.CapacityError) as err:
        _capacity.plan(gpus, workloads)
    assert message in str(err.value)
    result = _capacity.run({"gpus": gpus, "workloads": workloads})
    assert result["failed"] and result["msg"] == str(err.value) and set(_capacity.EMPTY) <= set(result)


# --------------------------------------------------------------------------- the smallest profile dominates

@pytest.mark.parametrize("key", [k for k, m in _catalogue.MODELS.items() if m["mig"]])
def test_the_smallest_fitting_profile_loses_no_layout(key):
    """Any layout that fits with a larger profile q also fits with the smallest profile p meeting q's memory and
    compute: the reason the planner only tries the smallest profile per device."""
    info = _capacity.model_info(key)
    usable = info.usable
    layouts = [c for n in range(1, 8) for c in itertools.combinations_with_replacement(usable, n)
               if _mig._fits(info.profiles, [{"profile_id": p["id"], "cis": [p["slices"]]} for p in c])]
    checked = 0
    for q in usable:
        for m, c in itertools.product([x["memory_mib"] for x in usable], [x["_compute"] for x in usable]):
            p = info.min_profile(m, c)
            if p is None or q is p or q["memory_mib"] < m or q["_compute"] + 1e-9 < c:
                continue
            for layout in layouts:
                if q in layout:
                    swapped = list(layout)
                    swapped[swapped.index(q)] = p
                    assert info.fits(tuple(x["id"] for x in swapped)), (key, q["name"], p["name"], layout)
                    checked += 1
    assert checked


# --------------------------------------------------------------------------- optimality against a brute force

MODELS = ["A100-SXM4-80GB", "A30-24GB", "H100-SXM5-80GB", "T4", "L40S"]


def random_case(rng, max_gpus, max_replicas):
    fleet = [rng.choice(MODELS) for _n in range(rng.randint(1, max_gpus))]
    workloads, left = [], rng.randint(1, max_replicas)
    while left:
        n = rng.randint(1, left)
        left -= n
        workloads.append({"name": f"w{len(workloads)}", "memory": f"{rng.choice([3, 5, 8, 12, 20, 30, 45])}GiB",
                          "compute": rng.choice([None, 0.1, 0.3, 0.6]), "isolation": rng.choice(_capacity.ISOLATIONS),
                          "replicas": n, "latency_sensitive": rng.random() < 0.3})
    return fleet, workloads


def brute_optimum(fleet, workloads):
    replicas = [{"isolation": w["isolation"], "latency_sensitive": w["latency_sensitive"], "compute": w["compute"],
                 "memory": _capacity.parse_memory(w["memory"], "memory")} for w in workloads for _n in range(w["replicas"])]
    return capacity_brute.optimum([_catalogue.find_model(m)["key"] for m in fleet], replicas)


def planned_cost(result):
    if not result["feasible"]:
        return None
    return result["gpus_used"], sum(_catalogue.MODELS[g["model"]]["memory_total_mib"] for g in result["gpus"])


def test_exact_on_small_cases_equals_the_brute_force():
    rng = random.Random(20261203)
    compared = 0
    for _case in range(60):
        fleet, workloads = random_case(rng, 3, 6)
        try:
            result = plan([{"model": m} for m in fleet], workloads)
        except _capacity.CapacityError:
            continue
        assert planned_cost(result) == brute_optimum(fleet, workloads), (fleet, workloads)
        assert result["optimal"] == result["feasible"] and result["search"] == "exact"
        compared += 1
    assert compared >= 40


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.integers(min_value=0, max_value=2 ** 32))
def test_exact_equals_the_brute_force_property(seed):
    fleet, workloads = random_case(random.Random(seed), 3, 5)
    try:
        result = plan([{"model": m} for m in fleet], workloads)
    except _capacity.CapacityError:
        return
    assert planned_cost(result) == brute_optimum(fleet, workloads)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.integers(min_value=0, max_value=2 ** 32), st.sampled_from([(4, 12), (12, 40), (40, 150)]))
def test_every_plan_is_valid_and_above_the_lower_bound(seed, size):
    rng = random.Random(seed)
    fleet, workloads = random_case(rng, *size)
    gpus = [{"host": f"h{i % 3}", "model": m} for i, m in enumerate(fleet)]
    try:
        result = plan(gpus, workloads)             # plan() checks _capacity.validate: MIG layouts, limits, MPS
    except _capacity.CapacityError:
        return
    total = sum(w["replicas"] for w in workloads)
    assert len(result["assignments"]) == total
    assert len(result["unplaced"]) == sum(1 for a in result["assignments"] if a["gpu"] is None)
    if result["feasible"]:
        assert result["gpus_used"] >= result["lower_bound"] and result["gap"] == result["gpus_used"] - result["lower_bound"]
    for gpu in result["gpus"]:
        if gpu["mig_enabled"]:
            info = _capacity.model_info(gpu["model"])
            _mig.check_feasible(info.profiles, _mig.layout_from_mig_devices(info.profiles, gpu["mig_devices"]), gpu["model"])
        assert gpu["memory_used_mib"] <= gpu["memory_mib"]


def test_validate_catches_a_broken_plan():
    gpus, workloads = [{"model": "A30"}], [{"name": "w", "memory": "5GiB", "isolation": "hard", "replicas": 2}]
    result = _capacity.plan(gpus, workloads)
    result["gpus"][0]["mig_devices"] = {"4g.24gb": 2}
    broken = [dict(a, device="4g.24gb #0") for a in result["assignments"]]
    result["assignments"] = broken
    problems = _capacity.validate(result, gpus, workloads)
    assert any("at most 1 x 4g.24gb" in p for p in problems) and any("hard isolation shares" in p for p in problems)


# --------------------------------------------------------------------------- speed and bounded work

def test_a_thousand_replicas_over_five_hundred_gpus_in_under_ten_seconds():
    rng = random.Random(7)
    models = ["A100-SXM4-80GB", "H100-SXM5-80GB", "A30-24GB", "T4", "L40S", "H200-141GB", "A100-SXM4-40GB"]
    gpus = [{"host": f"n{i}", "model": models[i % len(models)], "count": 4} for i in range(125)]
    workloads = [{"name": f"w{i}", "memory": f"{rng.choice([2, 4, 5, 8, 10, 16, 20, 30, 40])}GiB",
                  "compute": rng.choice([None, 0.05, 0.1, 0.2]), "isolation": rng.choice(_capacity.ISOLATIONS),
                  "replicas": 10, "latency_sensitive": rng.random() < 0.2} for i in range(100)]
    start = time.process_time()
    result = _capacity.plan(gpus, workloads)
    assert time.process_time() - start < 10
    assert result["feasible"] and _capacity.validate(result, gpus, workloads) == []
    assert result["search"] == "heuristic" and result["gap"] == result["gpus_used"] - result["lower_bound"]


def test_the_exact_search_stops_at_its_budget():
    slots = _capacity.normalise_gpus([{"model": "A100-SXM4-80GB", "count": 4}])
    replicas = [{"workload": f"w{i}", "w": i, "replica": 0, "memory": 4096 * (1 + i % 3), "compute": None,
                 "plan_compute": 0.0, "isolation": "hard", "latency_sensitive": False} for i in range(12)]
    found, complete = _capacity.exact(slots, replicas, None, budget=50)
    assert complete is False


@pytest.mark.parametrize("key", [k for k, m in _catalogue.MODELS.items() if m["mig"]])
def test_an_instance_has_at_most_its_memory_slices_share_of_the_memory(key):
    """The premise of lower_bound's share bound."""
    model = _catalogue.MODELS[key]
    profiles = _catalogue.gi_profiles(model)
    slices = max(a + b for p in profiles for a, b in p["placements"])
    for p in profiles:
        assert p["memory_mib"] * slices <= p["placements"][0][1] * model["memory_total_mib"], p["name"]


def test_host_vars_are_what_the_mig_and_mps_roles_take():
    """The mig role's config parser and the mps module's target resolver accept the plan's host_vars."""
    from ansible_collections.gpuops.sharing.plugins.module_utils import _mig_config, _mps

    gpus = [{"host": "a", "model": "A100-SXM4-80GB", "count": 3}, {"host": "b", "model": "L40S", "count": 2}]
    workloads = [{"name": "iso", "memory": "30GiB", "isolation": "hard", "replicas": 3},
                 {"name": "s", "memory": "6GiB", "compute": 0.1, "isolation": "soft", "replicas": 14},
                 {"name": "big", "memory": "40GiB", "compute": 0.5, "isolation": "soft", "replicas": 2}]
    result = plan(gpus, workloads)
    assert result["feasible"]
    for host, hv in result["host_vars"].items():
        entries = _mig_config.normalize_entries(hv["mig_config"], f"{host} mig_config")
        inventory = []
        for entry, gpu in zip(entries, [g for g in result["gpus"] if g["host"] == host]):
            info = _capacity.model_info(gpu["model"])
            assert entry["mig_enabled"] == gpu["mig_enabled"] and entry["devices"] == [gpu["index"]]
            devices = []
            if gpu["mig_enabled"]:
                specs = _mig.layout_from_mig_devices(info.profiles, entry["mig_devices"], gpu["model"])
                for spec, (start, _size) in zip(specs, _mig.place_gis(info.profiles, specs, [])):
                    devices.append({"uuid": f"MIG-{host}-{gpu['index']}-{start}", "gpu_instance_start": start,
                                    "compute_instance_start": 0, "memory_total_mib": info.by_id[spec["profile_id"]]["memory_mib"]})
            inventory.append({"index": gpu["index"], "uuid": f"GPU-{host}-{gpu['index']}", "name": info.name,
                              "mig_enabled": gpu["mig_enabled"], "mig_devices": devices, "memory_total_mib": info.memory})
        if "mps_targets" in hv:
            targets, _warnings = _mps.resolve_targets(hv["mps_targets"], inventory)
            planned = {g["index"] for g in result["gpus"] if g["host"] == host and g["mps"]["enabled"]}
            assert planned <= {t["gpu_index"] for t in targets}
            limit = hv["mps_default_device_pinned_mem_limit"]
            if limit is not None:
                _mps.validate_limit_fits(targets, _mps.parse_size(limit), limit)


def test_a_hard_exact_search_is_cut_at_its_budget_and_still_gives_a_valid_plan():
    gpus = [{"model": key, "count": 50} for key in _catalogue.MODELS]
    rng = random.Random(0)
    workloads = [{"name": f"w{i}", "memory": f"{rng.randint(1, 60)}GiB", "compute": rng.choice([None, 0.05, 0.15, 0.3]),
                  "isolation": rng.choice(_capacity.ISOLATIONS), "latency_sensitive": rng.random() < 0.3}
                 for i in range(12)]
    start = time.process_time()
    result = plan(gpus, workloads)
    assert time.process_time() - start < 30
    assert result["feasible"] and result["search"] == "exact, stopped at its budget"
    assert result["gpus_used"] >= result["lower_bound"]
