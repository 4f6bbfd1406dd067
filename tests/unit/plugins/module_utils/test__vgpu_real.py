"""NVIDIA's vgpu-device-manager example configs, unchanged, parsed and planned (see fixtures/vgpu_device_manager).

Every named config must parse, keep every type and count (read again the simplest way, without
validation), and, for every config whose types one of the simulated models offers, plan on a fresh GPU of
that model to exactly the requested vGPUs, or be refused with the capacity message.  The vGPU type tables
(_vgpu_types) are checked against the same file: it restates the vGPU guide's maximum per type.
"""

from __future__ import annotations

import copy
import functools
import itertools
import os

import pytest
import yaml

from ansible_collections.gpuops.sharing.plugins.module_utils import _vgpu, _vgpu_types

from .test__vgpu import make_gpu

FIXTURES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures", "vgpu_device_manager")
FILES = sorted(f for f in os.listdir(FIXTURES) if f.endswith(".yaml.txt"))


@functools.cache
def _read(name):
    with open(os.path.join(FIXTURES, name), encoding="utf-8") as fh:
        return yaml.load(fh, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))


@functools.cache
def _parsed(name):
    return _vgpu.parse_spec(_read(name), name)


def load(name):
    return copy.deepcopy(_read(name))


def test_every_example_is_here():
    assert FILES == ["examples_config-example.yaml.txt", "examples_config-t4.yaml.txt"]


@pytest.mark.parametrize("name", FILES)
def test_every_config_parses_and_keeps_its_types(name):
    raw = load(name)
    spec = _vgpu.parse_spec(raw, name)
    assert sorted(spec) == sorted(raw["vgpu-configs"])
    for cname, entries in raw["vgpu-configs"].items():
        assert [e["vgpu-devices"] for e in entries] == [e["vgpu_devices"] for e in spec[cname]]


def test_config_example_has_the_default_by_pci_id():
    spec = _vgpu.parse_spec(load(FILES[0]))
    gpu = make_gpu("L40S")
    gpu["device_id"] = 0x26B910DE
    assert _vgpu.desired(spec["default"], [gpu]) == {0: {"L40S-24Q": 2}}


def _model_of(type_name):
    for key, model in _vgpu_types.VGPU_MODELS.items():
        if type_name in {t["name"] for t in model["types"]}:
            return key
    return None


CASES = []
for _file in FILES:
    for _cname, _entries in load(_file)["vgpu-configs"].items():
        _models = {_model_of(t) for e in _entries for t in e["vgpu-devices"]}
        if len(_models) == 1 and None not in _models:
            CASES.append((_file, _cname, _models.pop()))


def test_cases_cover_the_simulated_models():
    assert {m for _f, _c, m in CASES} == set(_vgpu_types.VGPU_MODELS)
    assert len(CASES) >= 35


@pytest.mark.parametrize("file, cname, model", CASES, ids=[f"{c}@{f[:20]}" for f, c, _m in CASES])
def test_plans_on_the_simulated_model(file, cname, model):
    entries = _parsed(file)[cname]
    gpus = [make_gpu(model, index=i) for i in range(2)]
    for gpu in gpus:
        profiles = {t["mig_profile"] for t in gpu["types"] if t["mig_profile"]}
        wants = [t for e in entries for t in e["vgpu_devices"]]
        if any(gpu["types"][[x["name"] for x in gpu["types"]].index(t)]["mig_profile"] for t in wants):
            gpu["mig_enabled"] = True
            gpu["gpu_instances"] = {p: 7 for p in profiles}
    wanted = _vgpu.desired(entries, gpus)
    assert wanted
    n = itertools.count()
    plans = _vgpu.plan(gpus, wanted, {}, lambda: "00000000-0000-4000-8000-%012d" % next(n))
    for p in plans:
        created = {}
        for op in p["ops"]:
            assert op["kind"] == "create"
            created[op["type_name"]] = created.get(op["type_name"], 0) + 1
        assert created == wanted[p["index"]]


def test_type_tables_match_config_example():
    configs = load(FILES[0])["vgpu-configs"]
    for key, model in _vgpu_types.VGPU_MODELS.items():
        for t in model["types"]:
            assert configs[t["name"]] == [{"devices": "all", "vgpu-devices": {t["name"]: t["max_instances"]}}], key
        assert model["layout"] in _vgpu.LAYOUTS
        if model["layout"] != "mdev":
            assert model["total_vfs"] >= max(t["max_instances"] for t in model["types"])
    prefixes = {"A100-SXM4-40GB": "A100X-", "L40S": "L40S-", "T4": "T4-"}
    for key, prefix in prefixes.items():
        listed = {n for n in configs if n.startswith(prefix)}
        assert listed == {t["name"] for t in _vgpu_types.VGPU_MODELS[key]["types"]}, key


def test_type_fields_follow_the_name():
    for model in _vgpu_types.VGPU_MODELS.values():
        for t in model["types"]:
            info = _vgpu.parse_type(t["name"])
            assert t["framebuffer_mib"] == info["gb"] * 1024
            assert t["gpu_instance_profile"] == info["mig_profile"]
            assert t["series"] == info["series"]
            assert _vgpu.type_name_from_mdev(t["mdev_name"]) == t["name"]
        ids = [t["type_id"] for t in model["types"]]
        assert len(set(ids)) == len(ids)
