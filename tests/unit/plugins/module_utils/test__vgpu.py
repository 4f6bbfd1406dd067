"""The vGPU device planner: vgpu-device-manager's format, keep/create/remove, errors before any change."""

from __future__ import annotations

import itertools
import random
import uuid as uuidlib

import pytest

from ansible_collections.gpuops.sharing.plugins.module_utils import _vgpu, _vgpu_types


def counter():
    n = itertools.count(1)
    return lambda: "00000000-0000-4000-8000-%012d" % next(n)


def make_gpu(model="A100-SXM4-40GB", index=0, vgpus=(), mig=False, gis=None, vfs_enabled=True, mixed=None):
    m = _vgpu_types.VGPU_MODELS[model]
    bdf = "0000:%02x:00.0" % (0x41 + index)
    vfs = ["0000:%02x:%02x.%d" % (0x41 + index, (m["vf_offset"] + i) // 8, (m["vf_offset"] + i) % 8)
           for i in range(m["total_vfs"])]
    types = [{"name": t["name"], "type_id": t["type_id"], "mdev_type": f"nvidia-{t['type_id']}",
              "max_instances": t["max_instances"], "mig_profile": t["gpu_instance_profile"]} for t in m["types"]]
    gpu = {"index": index, "bdf": bdf, "name": model, "device_id": 0x20B010DE, "subsystem_id": 0x134F10DE,
           "layout": m["layout"], "vfs": vfs if m["layout"] != "mdev" else [], "vfs_enabled": vfs_enabled,
           "types": types, "vgpus": [], "mig_enabled": mig, "gpu_instances": dict(gis or {}), "available": {}}
    if mixed is not None:
        gpu["mixed_size"] = mixed
    for i, (name, uid, busy) in enumerate(vgpus):
        parent = bdf if m["layout"] == "mdev" else vfs[i]
        gpu["vgpus"].append({"uuid": uid, "type_name": name, "type_id": None, "parent": parent, "busy": busy})
    return gpu


def u(n: int) -> str:
    return "11111111-0000-4000-8000-%012d" % n


# --------------------------------------------------------------------------- names

@pytest.mark.parametrize("raw, name", [
    ("NVIDIA A100-4C\n", "A100-4C"), ("GRID A100-4C", "A100-4C"), ("  GRID P40-2B4 ", "P40-2B4"),
    ("NVIDIA RTX Pro 6000 Blackwell DC-1-24Q", "DC-1-24Q"), ("A100X-1-5CME", "A100X-1-5CME"),
])
def test_type_name_from_mdev_is_the_last_word(raw, name):
    assert _vgpu.type_name_from_mdev(raw) == name


@pytest.mark.parametrize("name, g, gb, series, profile", [
    ("A100-4C", 0, 4, "C", None), ("RTX6000-Ada-24Q", 0, 24, "Q", None), ("A100-1-5C", 1, 5, "C", "1g.5gb"),
    ("A100-1-5CME", 1, 5, "C", "1g.5gb+me"), ("A100D-7-80C", 7, 80, "C", "7g.80gb"), ("T4-1Q", 0, 1, "Q", None),
    ("DC-1-24Q", 1, 24, "Q", "1g.24gb"), ("GH200L-144C", 0, 144, "C", None),
])
def test_parse_type(name, g, gb, series, profile):
    info = _vgpu.parse_type(name)
    assert (info["g"], info["gb"], info["series"], info["mig_profile"]) == (g, gb, series, profile)


@pytest.mark.parametrize("name, message", [
    ("nvidia-692", "numeric type id; give the type by name"),
    ("692", "numeric type id"),
    ("A100-4X", "malformed vGPU type 'A100-4X'"),
    ("a100-4c", "malformed vGPU type 'a100-4c'"),
    ("", "is not a type name"),
    (4, "is not a type name"),
])
def test_parse_type_errors(name, message):
    with pytest.raises(_vgpu.ConfigError, match=message):
        _vgpu.parse_type(name)


# --------------------------------------------------------------------------- the file format

GOOD = {"version": "v1", "vgpu-configs": {
    "small": [{"devices": "all", "vgpu-devices": {"A100X-4C": 2}}],
    "split": [{"devices": [0], "vgpu-devices": {"A100X-4C": 10}},
              {"devices": [1], "device-filter": ["0x20B010DE"], "vgpu-devices": {"A100X-20C": 2}}],
    "none": [{"devices": "all", "vgpu-devices": {}}],
}}


def test_parse_spec_keeps_every_config():
    spec = _vgpu.parse_spec(GOOD)
    assert sorted(spec) == ["none", "small", "split"]
    assert spec["split"][1] == {"devices": [1], "device_filter": [(0x20B010DE, None)],
                                "vgpu_devices": {"A100X-20C": 2}}
    assert spec["none"][0]["vgpu_devices"] == {}


@pytest.mark.parametrize("data, message", [
    ({"vgpu-configs": {"a": []}}, "missing 'version' field"),
    ({"version": "v2", "vgpu-configs": {}}, "unknown version: v2"),
    ({"version": "v1", "mig-configs": {}}, "unexpected field: mig-configs"),
    ({"version": "v1", "vgpu-configs": {}}, "at least one entry in 'vgpu-configs'"),
    ({"version": "v1", "vgpu-configs": {"a": []}}, r"vgpu-configs.a: at least one entry is required"),
    ({"version": "v1", "vgpu-configs": {"a": [{"devices": "all"}]}}, "missing required field: vgpu-devices"),
    ({"version": "v1", "vgpu-configs": {"a": [{"vgpu-devices": {}}]}}, "missing required field: devices"),
    ({"version": "v1", "vgpu-configs": {"a": [{"devices": "some", "vgpu-devices": {}}]}},
     "invalid string input for 'devices': some"),
    ({"version": "v1", "vgpu-configs": {"a": [{"devices": [0, -1], "vgpu-devices": {}}]}},
     "must be 'all' or a list of GPU indexes"),
    ({"version": "v1", "vgpu-configs": {"a": [{"devices": "all", "vgpu-devices": {}, "mig-devices": {}}]}},
     "unexpected field: mig-devices"),
    ({"version": "v1", "vgpu-configs": {"a": [{"devices": "all", "vgpu-devices": {"A100-4C": 0}}]}},
     "count 0 for 'A100-4C' must be a whole number above 0"),
    ({"version": "v1", "vgpu-configs": {"a": [{"devices": "all", "vgpu-devices": {"A100-4C": 1000}}]}},
     "more than any GPU offers"),
    ({"version": "v1", "vgpu-configs": {"a": [{"devices": "all",
                                               "vgpu-devices": {"A100-4C": 1, "A100-1-5C": 1}}]}},
     "cannot mix time-sliced and MIG-backed"),
    ({"version": "v1", "vgpu-configs": {"a": [{"devices": "all", "device-filter": "20B0",
                                               "vgpu-devices": {}}]}}, "device-filter '20B0' is not a PCI id"),
    ("version: v1", "expected a map"),
])
def test_parse_spec_errors(data, message):
    with pytest.raises(_vgpu.ConfigError, match=message):
        _vgpu.parse_spec(data, "f.yaml")


def test_select_lists_the_names():
    with pytest.raises(_vgpu.ConfigError, match="no vGPU config named 'big'; the file has: none, small, split"):
        _vgpu.select(_vgpu.parse_spec(GOOD), "big", "f.yaml")


def test_desired_by_index_and_filter():
    gpus = [make_gpu(index=0), make_gpu(index=1)]
    gpus[1]["device_id"] = 0x20B210DE
    entries = _vgpu.parse_entries([{"devices": "all", "vgpu-devices": {"A100X-4C": 1}},
                                   {"devices": "all", "device-filter": "0x20B210DE", "vgpu-devices": {"A100X-8C": 1}}])
    assert _vgpu.desired(entries, gpus) == {0: {"A100X-4C": 1}, 1: {"A100X-8C": 1}}
    entries = _vgpu.parse_entries([{"devices": [1], "device-filter": "0x20B210DE:0x134F10DE",
                                    "vgpu-devices": {"A100X-4C": 1}}])
    assert _vgpu.desired(entries, gpus) == {1: {"A100X-4C": 1}}
    entries = _vgpu.parse_entries([{"devices": [1], "device-filter": "0x20B210DE:0x000010DE",
                                    "vgpu-devices": {"A100X-4C": 1}}])
    assert _vgpu.desired(entries, gpus) == {}


def test_desired_prefers_the_last_entry_whose_types_the_gpu_offers():
    # NVIDIA's default config lists 0x25B610DE twice (A16-8Q, then A2-8Q)
    gpus = [make_gpu(index=0)]
    entries = _vgpu.parse_entries([{"devices": "all", "vgpu-devices": {"A100X-8C": 2}},
                                   {"devices": "all", "vgpu-devices": {"A16-8Q": 2}}])
    assert _vgpu.desired(entries, gpus) == {0: {"A100X-8C": 2}}
    entries = _vgpu.parse_entries([{"devices": "all", "vgpu-devices": {"A2-8Q": 2}},
                                   {"devices": "all", "vgpu-devices": {"A16-8Q": 2}}])
    assert _vgpu.desired(entries, gpus) == {0: {"A16-8Q": 2}}


# --------------------------------------------------------------------------- uuids option

def test_uuids_by_index_or_address_normalised():
    gpus = [make_gpu(index=0), make_gpu(index=1)]
    upper = u(1).upper()
    out = _vgpu.normalise_uuids({"0": {"A100X-4C": [upper]}, "0000:42:00.0": {"A100X-4C": u(2)}}, gpus)
    assert out == {0: {"A100X-4C": [u(1)]}, 1: {"A100X-4C": [u(2)]}}


@pytest.mark.parametrize("raw, message", [
    ({"7": {"A100X-4C": [u(1)]}}, r"GPU '7' is not on this host; GPUs: 0 \(0000:41:00.0\)"),
    ({"0": {"A100X-4C": ["not-a-uuid"]}}, "'not-a-uuid' is not a UUID"),
    ({"0": {"A100X-4C": [u(1), u(1)]}}, "is given twice"),
    ({"0": {"nvidia-692": [u(1)]}}, "numeric type id"),
    ({"0": ["x"]}, "must be a map of type name to a list of UUIDs"),
])
def test_uuids_errors(raw, message):
    with pytest.raises(_vgpu.ConfigError, match=message):
        _vgpu.normalise_uuids(raw, [make_gpu()])


# --------------------------------------------------------------------------- planning

def kinds(result):
    return [(op["kind"], op.get("type_name")) for op in result["ops"]]


def test_fresh_gpu_creates_one_per_vf():
    res = _vgpu.plan_gpu(make_gpu(), {"A100X-4C": 3}, {}, counter())
    assert kinds(res) == [("create", "A100X-4C")] * 3
    assert [op["parent"] for op in res["ops"]] == ["0000:41:00.4", "0000:41:00.5", "0000:41:00.6"]
    assert all(op["type_id"] == res["ops"][0]["type_id"] for op in res["ops"])


def test_disabled_vfs_are_enabled_first():
    res = _vgpu.plan_gpu(make_gpu(vfs_enabled=False), {"A100X-4C": 1}, {}, counter())
    assert kinds(res) == [("enable_vfs", None), ("create", "A100X-4C")]


def test_mdev_on_the_pf():
    res = _vgpu.plan_gpu(make_gpu("T4"), {"T4-4Q": 4}, {}, counter())
    assert {op["parent"] for op in res["ops"]} == {"0000:41:00.0"} and len(res["ops"]) == 4


def test_matching_vgpus_are_kept_with_their_uuids():
    gpu = make_gpu(vgpus=[("A100X-4C", u(1), ""), ("A100X-4C", u(2), "")])
    res = _vgpu.plan_gpu(gpu, {"A100X-4C": 3}, {}, counter())
    assert [v["uuid"] for v in res["kept"]] == [u(1), u(2)]
    assert kinds(res) == [("create", "A100X-4C")]
    assert res["ops"][0]["parent"] == "0000:41:00.6"       # the first VF without a kept vGPU


def test_surplus_is_removed_idle_first():
    gpu = make_gpu(vgpus=[("A100X-4C", u(1), ""), ("A100X-4C", u(2), "VFIO device open by pid 7"),
                          ("A100X-4C", u(3), "")])
    res = _vgpu.plan_gpu(gpu, {"A100X-4C": 1}, {}, counter())
    assert [v["uuid"] for v in res["kept"]] == [u(2)]
    assert [op["target"] for op in res["ops"]] == [u(1), u(3)]


def test_other_type_replaced_in_equal_size_mode():
    gpu = make_gpu(vgpus=[("A100X-4C", u(1), ""), ("A100X-4C", u(2), "")])
    res = _vgpu.plan_gpu(gpu, {"A100X-8C": 1}, {}, counter())
    assert kinds(res) == [("remove", "A100X-4C"), ("remove", "A100X-4C"), ("create", "A100X-8C")]


def test_fixed_uuids_are_created_and_kept():
    gpu = make_gpu(vgpus=[("A100X-4C", u(1), ""), ("A100X-4C", u(2), "")])
    res = _vgpu.plan_gpu(gpu, {"A100X-4C": 2}, {"A100X-4C": [u(9)]}, counter())
    # one fixed UUID is missing: one of the two others makes room for it
    assert [v["uuid"] for v in res["kept"]] == [u(1)]
    assert [(op["kind"], op["target"]) for op in res["ops"]] == [("remove", u(2)), ("create", u(9))]
    gpu = make_gpu(vgpus=[("A100X-4C", u(9), ""), ("A100X-4C", u(2), "")])
    assert _vgpu.plan_gpu(gpu, {"A100X-4C": 2}, {"A100X-4C": [u(9)]}, counter())["ops"] == []


def test_fixed_uuid_on_another_type_is_recreated():
    gpu = make_gpu(vgpus=[("A100X-8C", u(9), "")], mixed=True)
    res = _vgpu.plan_gpu(gpu, {"A100X-4C": 1}, {"A100X-4C": [u(9)]}, counter())
    assert [(op["kind"], op["target"], op["type_name"]) for op in res["ops"]] == [
        ("remove", u(9), "A100X-8C"), ("create", u(9), "A100X-4C")]


def test_empty_request_removes_everything():
    gpu = make_gpu(vgpus=[("A100X-4C", u(1), ""), ("A100X-4C", u(2), "")])
    assert kinds(_vgpu.plan_gpu(gpu, {}, {}, counter())) == [("remove", "A100X-4C")] * 2


def test_mig_backed_with_gpu_instances():
    gpu = make_gpu(mig=True, gis={"1g.5gb": 3, "2g.10gb": 1})
    res = _vgpu.plan_gpu(gpu, {"A100X-1-5C": 3, "A100X-2-10C": 1}, {}, counter())
    assert sorted(kinds(res)) == [("create", "A100X-1-5C")] * 3 + [("create", "A100X-2-10C")]


# --------------------------------------------------------------------------- errors before any change

@pytest.mark.parametrize("gpu, want, message", [
    (make_gpu(), {"A100D-4C": 1},
     r"vGPU type 'A100D-4C' is not offered on GPU 0 \(0000:41:00.0\) A100-SXM4-40GB; types there: A100X-4C, "
     r"A100X-5C, A100X-8C, A100X-10C, A100X-20C, A100X-40C, A100X-1-5C"),
    (make_gpu(), {"A100X-4C": 11}, r"GPU 0 \(0000:41:00.0\) fits at most 10 'A100X-4C' vGPUs, 11 requested"),
    (make_gpu("T4"), {"T4-16Q": 2}, "fits at most 1 'T4-16Q' vGPUs, 2 requested"),
    (make_gpu(), {"A100X-4C": 1, "A100X-8C": 1},
     r"takes one vGPU type at a time \(equal-size mode\); the config asks for 1 A100X-4C, 1 A100X-8C"),
    (make_gpu(mixed=True), {"A100X-4C": 6, "A100X-8C": 3}, "cannot hold 6 A100X-4C, 3 A100X-8C together"),
    (make_gpu(), {"A100X-1-5C": 1}, "MIG-backed vGPU types \\(A100X-1-5C\\) need MIG mode and GPU instances"),
    (make_gpu(mig=True, gis={"1g.5gb": 2}), {"A100X-1-5C": 3},
     "3 A100X-1-5C need 3 GPU instances of profile 1g.5gb, the GPU has 2; create them first"),
    (make_gpu(mig=True, gis={"1g.5gb": 7}), {"A100X-1-5CME": 2}, "fits at most 1 'A100X-1-5CME' vGPUs"),
    (make_gpu(mig=True), {"A100X-4C": 1}, "has MIG mode enabled; time-sliced vGPU types \\(A100X-4C\\) need"),
    (make_gpu("L40S", mixed=True), {"L40S-1Q": 20, "L40S-2Q": 12}, "cannot hold 20 L40S-1Q, 12 L40S-2Q together"),
])
def test_plan_errors(gpu, want, message):
    with pytest.raises(_vgpu.PlanError, match=message):
        _vgpu.plan_gpu(gpu, want, {}, counter())


def test_unknown_type_without_any_offered_type():
    gpu = make_gpu()
    gpu["types"] = []
    with pytest.raises(_vgpu.PlanError, match=r"types there: none \(is the vGPU manager loaded\?\)"):
        _vgpu.plan_gpu(gpu, {"A100X-4C": 1}, {}, counter())


def test_busy_vgpu_needs_force():
    gpu = make_gpu(vgpus=[("A100X-4C", u(1), "libvirt domain vm1 is running")])
    with pytest.raises(_vgpu.PlanError, match=f"vGPU {u(1)} \\(A100X-4C on 0000:41:00.4, GPU 0 \\(0000:41:00.0\\)\\) "
                                              "is in use: libvirt domain vm1 is running; .* set force=true"):
        _vgpu.plan_gpu(gpu, {"A100X-8C": 1}, {}, counter())
    res = _vgpu.plan_gpu(gpu, {"A100X-8C": 1}, {}, counter(), force=True)
    assert kinds(res) == [("remove", "A100X-4C"), ("create", "A100X-8C")]


def test_too_many_fixed_uuids():
    with pytest.raises(_vgpu.PlanError, match="2 UUIDs for 'A100X-4C' but the config asks for 1"):
        _vgpu.plan_gpu(make_gpu(), {"A100X-4C": 1}, {"A100X-4C": [u(1), u(2)]}, counter())


def test_plan_checks_every_gpu_before_returning():
    gpus = [make_gpu(index=0), make_gpu(index=1)]
    with pytest.raises(_vgpu.PlanError, match="GPU 1"):
        _vgpu.plan(gpus, {0: {"A100X-4C": 1}, 1: {"A100X-4C": 99}}, {}, counter())


def test_fixed_uuid_existing_on_another_gpu():
    gpus = [make_gpu(index=0), make_gpu(index=1, vgpus=[("A100X-4C", u(1), "")])]
    with pytest.raises(_vgpu.PlanError, match=f"{u(1)} is asked for on GPU 0 but exists on GPU 1"):
        _vgpu.plan(gpus, {0: {"A100X-4C": 1}, 1: {}}, {0: {"A100X-4C": [u(1)]}}, counter())


def test_mixed_size_read_from_the_drivers_answers():
    gpu = make_gpu(vgpus=[("A100X-4C", u(1), "")])
    gpu["available"] = {"A100X-4C": 9}
    assert not _vgpu.mixed_size(gpu)
    gpu["available"] = {"A100X-4C": 7, "A100X-8C": 2}
    assert _vgpu.mixed_size(gpu)
    assert not _vgpu.mixed_size(make_gpu())


# --------------------------------------------------------------------------- against a brute-force oracle

def oracle_min_removed(vgpus, want, fixed):
    """Try every subset of the existing vGPUs as the kept set; the largest one the target allows wins."""
    fixed_type = {x: t for t, xs in fixed.items() for x in xs}

    def allowed(kept):
        for t in set(want) | {v["type_name"] for v in kept}:
            mine = [v for v in kept if v["type_name"] == t]
            if any(v["uuid"] in fixed_type and fixed_type[v["uuid"]] != t for v in mine):
                return False
            unfixed = [v for v in mine if v["uuid"] not in fixed_type]
            if len(unfixed) + len(fixed.get(t, [])) > want.get(t, 0):
                return False
        return True

    for size in range(len(vgpus), -1, -1):
        if any(allowed(kept) for kept in itertools.combinations(vgpus, size)):
            return len(vgpus) - size
    raise AssertionError("the empty set is always allowed")


def apply(gpu, ops):
    vgpus = list(gpu["vgpus"])
    for op in ops:
        if op["kind"] == "remove":
            vgpus = [v for v in vgpus if v["uuid"] != op["target"]]
        elif op["kind"] == "create":
            assert op["target"] not in {v["uuid"] for v in vgpus}
            if gpu["layout"] != "mdev":
                assert op["parent"] not in {v["parent"] for v in vgpus}, "two vGPUs on one VF"
            vgpus.append({"uuid": op["target"], "type_name": op["type_name"], "type_id": op["type_id"],
                          "parent": op["parent"], "busy": ""})
    return dict(gpu, vgpus=vgpus)


@pytest.mark.parametrize("seed", range(300))
def test_minimal_removals_match_the_oracle(seed):
    rng = random.Random(seed)
    names = ["A100X-4C", "A100X-5C", "A100X-8C"]
    pool = [u(i) for i in range(1, 9)]
    existing = [(rng.choice(names), pool[i], "") for i in range(rng.randint(0, 7))]
    gpu = make_gpu(vgpus=existing, mixed=True)
    want = {}
    for name in rng.sample(names, rng.randint(0, 2)):
        want[name] = rng.randint(1, 4)
    if sum(want[n] / 10 * {"A100X-4C": 1, "A100X-5C": 1.25, "A100X-8C": 2}[n] for n in want) > 1:
        want = {n: 1 for n in want}
    fixed = {}
    for name, count in want.items():
        k = rng.randint(0, count)
        if k:
            fixed[name] = rng.sample([p for p in pool if all(p not in f for f in fixed.values())], k)
    res = _vgpu.plan_gpu(gpu, want, fixed, lambda: str(uuidlib.UUID(int=rng.getrandbits(128), version=4)))
    assert len(res["removed"]) == oracle_min_removed(gpu["vgpus"], want, fixed)
    after = apply(gpu, res["ops"])
    got = {}
    for v in after["vgpus"]:
        got[v["type_name"]] = got.get(v["type_name"], 0) + 1
    assert got == want
    for name, uuids in fixed.items():
        assert {v["uuid"] for v in after["vgpus"] if v["type_name"] == name} >= set(uuids)
    assert _vgpu.plan_gpu(after, want, fixed, counter())["ops"] == []
