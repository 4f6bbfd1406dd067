"""Real mig-parted configuration files from the field, unchanged, on every simulated GPU model.

The fixtures under fixtures/mig_parted are NVIDIA's own files (mig-parted's example and
default configs, mig-manager's example manifests, the GPU Operator's default-mig-parted-config
ConfigMap), copied unchanged with a header naming repository, path and commit.  Every named
configuration must parse; on every simulated model its entries are selected as mig-parted
selects them, and the outcome is checked against an oracle independent of the collection's
resolver and planner (names looked up in the simulator's catalogue, layouts in the brute-force
enumeration of gpusim.layouts): a layout that exists and fits must plan to exactly those GPU
instances, anything else must be refused with a message naming the profile or the limit.
"""

from __future__ import annotations

import functools
import os
import re

import pytest
import yaml

from ansible_collections.gpuops.sharing.plugins.module_utils import _mig, _mig_config
from gpusim import catalogue, layouts

from ...conftest import driver_profiles

FIXTURES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures", "mig_parted")
CONFIG_FILES = sorted(f for f in os.listdir(FIXTURES)
                      if f.endswith(".yaml.txt") and "hooks" not in f and not f.startswith("bad_"))
MIG_MODELS = [k for k in catalogue.model_keys() if catalogue.MODELS[k].get("mig")]
B200 = "B200-180GB"


def read(name: str) -> str:
    with open(os.path.join(FIXTURES, name), encoding="utf-8") as fh:
        return fh.read()


def naive_configs(text: str) -> dict:
    """mig-configs of a file, read the simplest way (no validation): what the parser must not lose."""
    found: dict = {}
    for doc in yaml.safe_load_all(text):
        if isinstance(doc, dict) and doc.get("kind") == "ConfigMap":
            for value in (doc.get("data") or {}).values():
                if isinstance(value, str) and "mig-configs" in value:
                    found.update(yaml.safe_load(value)["mig-configs"])
        elif isinstance(doc, dict) and "mig-configs" in doc:
            found.update(doc["mig-configs"])
    return found


@functools.cache
def valid_layouts(model: str) -> frozenset:
    return frozenset(layouts.all_layouts(model))


@pytest.fixture(scope="module")
def profiles() -> dict:
    return {model: driver_profiles(model) for model in MIG_MODELS}


def gpu_facts(model: str, index: int = 0) -> dict:
    m = catalogue.find_model(model)
    return {"index": index, "uuid": f"GPU-{index}", "name": m["name"], "pci_device_id": "0x%08X" % m["pci_device_id"],
            "pci_subsystem_id": None, "mig_capable": bool(m["mig"])}


def near_name(table: dict, name: str) -> str | None:
    """The catalogue name a driver branch apart from name: same '<g>g.' and attributes, memory within
    5% of the larger figure, and nearer than any other (driver branches name 1g.23gb/1g.24gb alike)."""
    def split(n):
        g, gb, attrs = re.match(r"^(\d+)g\.(\d+)gb(.*)$", n).groups()
        return g, int(gb), attrs
    g, gb, attrs = split(name)
    near = sorted((abs(k - gb), n) for n in table for kg, k, ka in [split(n)]
                  if kg == g and ka == attrs and abs(k - gb) <= 0.05 * max(k, gb))
    return near[0][1] if near else None


def oracle(model: str, mig_devices: dict) -> tuple[str, list]:
    """('fits', GI profile ids) | ('does not fit', ids) | ('absent', names) | ('unsimulated', names)."""
    table = {p["name"]: p for p in catalogue.find_model(model)["mig"]["gpu_instance_profiles"]}
    unsourced = set(catalogue.UNSOURCED_PROFILES.get(model, []))
    ids, absent, unsimulated = [], [], []
    for name, count in mig_devices.items():
        assert not re.match(r"^\d+c\.", name), f"{name}: real files name whole GPU instances only"
        if name in table:
            ids += [table[name]["id"]] * count
        elif near_name(table, name):
            ids += [table[near_name(table, name)]["id"]] * count
        elif name in unsourced:
            unsimulated.append(name)
        else:
            absent.append(name)
    if absent:
        return "absent", absent
    if unsimulated:
        return "unsimulated", unsimulated
    return ("fits" if not ids or tuple(sorted(ids)) in valid_layouts(model) else "does not fit"), sorted(ids)


def test_the_fixtures_are_the_real_files():
    assert len(CONFIG_FILES) == 6
    for name in CONFIG_FILES + ["mig-parted_deployments_systemd_hooks-default.yaml.txt"]:
        head = read(name).splitlines()[0]
        assert re.match(r"# Source: github\.com/NVIDIA/(mig-parted|gpu-operator) \S+ at commit [0-9a-f]{40}$", head), name


@pytest.mark.parametrize("name", CONFIG_FILES)
def test_every_real_file_parses_completely(name):
    text = read(name)
    spec = _mig_config.load_text(text, name)
    naive = naive_configs(text)
    assert spec and set(spec) == set(naive)
    for config, entries in spec.items():
        raw = naive[config]
        assert len(entries) == len(raw), config
        for entry, plain in zip(entries, raw):
            assert entry["mig_enabled"] is plain["mig-enabled"]
            assert entry["mig_devices"] == {k: v for k, v in (plain.get("mig-devices") or {}).items() if v}
            assert entry["devices"] == plain["devices"]


def test_the_default_config_covers_every_simulated_model():
    """config-default.yaml's all-balanced has an entry for each simulated MIG model (by PCI id)."""
    spec = _mig_config.load_text(read("mig-parted_deployments_systemd_config-default.yaml.txt"), "config-default")
    for model in MIG_MODELS:
        chosen = _mig_config.select(spec["all-balanced"], [gpu_facts(model)])
        assert 0 in chosen and chosen[0][1]["device_filter"], model


@pytest.mark.parametrize("model", MIG_MODELS)
@pytest.mark.parametrize("name", CONFIG_FILES)
def test_every_real_config_on_every_model(profiles, name, model):
    spec = _mig_config.load_text(read(name), name)
    gpu = gpu_facts(model)
    label = f"GPU 0 ({gpu['name']})"
    wrong, unsimulated, planned = [], [], 0
    for config, entries in spec.items():
        chosen = _mig_config.select(entries, [gpu])
        if 0 not in chosen or not chosen[0][1]["mig_enabled"]:
            continue  # another model's entry, or MIG off: nothing to plan
        entry = chosen[0][1]
        outcome, detail = oracle(model, entry["mig_devices"])
        if outcome == "unsimulated":
            unsimulated.append((config, detail))
            continue
        try:
            specs = _mig.layout_from_mig_devices(profiles[model], entry["mig_devices"], label)
            plan = _mig.plan_layout(profiles[model], [], specs, label)
        except _mig.MigError as exc:
            message = str(exc)
            if outcome == "fits":
                wrong.append(f"{config}: refused although it fits: {message}")
            elif outcome == "absent" and not any(
                    f"profile '{n}' does not exist on {label} (did you mean" in message
                    or f"profile '{n}' does not exist on {label} (it has no" in message for n in detail):
                wrong.append(f"{config}: unclear refusal of {detail}: {message}")
            elif outcome == "does not fit" and not (label in message and re.search(
                    r"can hold at most|needs \d+ compute slices|no arrangement of placements|the GPU has", message)):
                wrong.append(f"{config}: unclear refusal of an impossible layout: {message}")
            continue
        created = sorted(c["profile_id"] for c in plan["create"])
        if outcome != "fits" or created != detail:
            wrong.append(f"{config}: planned {created}, oracle says {outcome} {detail}")
        elif any(c["cis"] != [next(p["slices"] for p in profiles[model] if p["id"] == c["profile_id"])]
                 for c in plan["create"]):
            wrong.append(f"{config}: compute instances do not span their GPU instances: {plan['create']}")
        else:
            planned += 1
    assert not wrong, "\n".join(wrong)
    if name.startswith("mig-parted_deployments_systemd_config-default") or name.startswith("gpu-operator"):
        assert planned >= 3, f"{model}: only {planned} configurations of {name} planned"
    if unsimulated:
        assert model == B200, unsimulated
        pytest.xfail(f"{name}: {len(unsimulated)} configuration(s) use B200 profiles the simulator's catalogue "
                     f"does not have yet ({', '.join(sorted({n for _c, names in unsimulated for n in names}))}: "
                     f"catalogue.UNSOURCED_PROFILES): {', '.join(c for c, _n in unsimulated)}; "
                     "everything else in the file was checked")


def test_profiles_missing_on_a_model_are_named_with_alternatives(profiles):
    """NVIDIA's all-1g.5gb (A100-40GB) on an H100: refused, naming the H100's 1-slice profiles."""
    spec = _mig_config.load_text(read("mig-parted_deployments_systemd_config-default.yaml.txt"), "config-default")
    entry = _mig_config.select(spec["all-1g.5gb"], [gpu_facts("H100-SXM5-80GB")])[0][1]
    with pytest.raises(_mig.MigError) as err:
        _mig.layout_from_mig_devices(profiles["H100-SXM5-80GB"], entry["mig_devices"], "GPU 0 (NVIDIA H100 80GB HBM3)")
    message = str(err.value)
    assert "profile '1g.5gb' does not exist on GPU 0 (NVIDIA H100 80GB HBM3) (did you mean '1g.10gb'" in message
    assert "meant for another GPU model" in message and "? Its GPU instance profiles are: 1g.10gb" in message


def test_near_names_of_other_boards_are_taken_with_a_note(profiles):
    """B200's all-1g.23gb on a GH200 (1g.12gb/1g.24gb) and H100 NVL's all-3g.47gb on a GH200 (3g.48gb):
    names a GB off, as driver branches name one profile (1g.23gb/1g.24gb on HGX GB200). mig-parted
    refuses them; the module builds the profile they are a GB from and says so."""
    spec = _mig_config.load_text(read("mig-parted_deployments_systemd_config-default.yaml.txt"), "config-default")
    for config, name, taken in (("all-1g.23gb", "1g.23gb", "1g.24gb"), ("all-3g.47gb", "3g.47gb", "3g.48gb")):
        entry = _mig_config.select(spec[config], [gpu_facts("GH200-96GB")])[0][1]
        notes = []
        specs = _mig.layout_from_mig_devices(profiles["GH200-96GB"], entry["mig_devices"],
                                             "GPU 0 (NVIDIA GH200 480GB)", notes)
        by_id = {p["id"]: p["name"] for p in profiles["GH200-96GB"]}
        assert {by_id[s["profile_id"]] for s in specs} == {taken}
        assert notes == [f"profile '{name}' is taken as {taken} (profile ID "
                         f"{next(p['id'] for p in profiles['GH200-96GB'] if p['name'] == taken)}) on GPU 0 "
                         "(NVIDIA GH200 480GB): same slices, named 1 GB apart (driver branches name profiles "
                         "differently); write that name to silence this note"]
