"""The catalogue against NVIDIA's published tables and the real outputs cited in CATALOGUE_SOURCES.md.

GUIDE holds, per model, what the MIG User Guide's "Supported MIG Profiles" tables print
(profile name -> number of instances, memory slices out of 8 (4 on A30), compute slices)
together with the profile ids of the real ``nvidia-smi mig -lgip`` outputs (and, for B200,
GKE's partition_gpu.go).  Written out by hand from those sources so that a change to the
catalogue that drifts from them fails here.
"""

from __future__ import annotations

import pytest

from gpusim import catalogue, layouts

# name: (profile id, instances, memory slices, compute slices)
_HOPPER_IDS = (19, 20, 15, 14, 9, 5, 0)
_HOPPER_SHAPE = ((7, 1, 1), (1, 1, 1), (4, 2, 1), (3, 2, 2), (2, 4, 3), (1, 4, 4), (1, 8, 7))


def _family(names):
    return {n: (pid, *shape) for n, pid, shape in zip(names, _HOPPER_IDS, _HOPPER_SHAPE)}


GUIDE = {
    "A30-24GB": {"1g.6gb": (14, 4, 1, 1), "1g.6gb+me": (21, 1, 1, 1), "2g.12gb": (5, 2, 2, 2),
                 "2g.12gb+me": (6, 1, 2, 2), "4g.24gb": (0, 1, 4, 4)},
    "A100-SXM4-40GB": _family(["1g.5gb", "1g.5gb+me", "1g.10gb", "2g.10gb", "3g.20gb", "4g.20gb", "7g.40gb"]),
    "A100-SXM4-80GB": _family(["1g.10gb", "1g.10gb+me", "1g.20gb", "2g.20gb", "3g.40gb", "4g.40gb", "7g.80gb"]),
    "H100-SXM5-80GB": _family(["1g.10gb", "1g.10gb+me", "1g.20gb", "2g.20gb", "3g.40gb", "4g.40gb", "7g.80gb"]),
    "H100-NVL-94GB": _family(["1g.12gb", "1g.12gb+me", "1g.24gb", "2g.24gb", "3g.47gb", "4g.47gb", "7g.94gb"]),
    "GH200-96GB": _family(["1g.12gb", "1g.12gb+me", "1g.24gb", "2g.24gb", "3g.48gb", "4g.48gb", "7g.96gb"]),
    "H200-141GB": _family(["1g.18gb", "1g.18gb+me", "1g.35gb", "2g.35gb", "3g.71gb", "4g.71gb", "7g.141gb"]),
    "B200-180GB": _family(["1g.23gb", "1g.23gb+me", "1g.45gb", "2g.45gb", "3g.90gb", "4g.90gb", "7g.180gb"]),
}

# Identity as the driver reports it (nvidia-smi / nvmlDeviceGetName, PCI device id, total MiB).
IDENTITY = {
    "A30-24GB": ("NVIDIA A30", 0x20B710DE, 24576),
    "A100-SXM4-40GB": ("NVIDIA A100-SXM4-40GB", 0x20B010DE, 40960),
    "A100-SXM4-80GB": ("NVIDIA A100-SXM4-80GB", 0x20B210DE, 81920),
    "H100-SXM5-80GB": ("NVIDIA H100 80GB HBM3", 0x233010DE, 81559),
    "H100-NVL-94GB": ("NVIDIA H100 NVL", 0x232110DE, 95830),
    "H200-141GB": ("NVIDIA H200", 0x233510DE, 143771),
    "GH200-96GB": ("NVIDIA GH200 480GB", 0x234210DE, 97871),
    "B200-180GB": ("NVIDIA B200", 0x290110DE, 183359),
}


def _by_name(key):
    return {p["name"]: p for p in catalogue.MODELS[key]["mig"]["gpu_instance_profiles"]}


def test_every_mig_model_is_checked():
    assert set(GUIDE) == {k for k in catalogue.model_keys() if catalogue.MODELS[k].get("mig")}


@pytest.mark.parametrize("key", sorted(GUIDE))
def test_profiles_match_the_mig_user_guide(key):
    profiles = _by_name(key)
    assert set(profiles) == set(GUIDE[key]), "profile names differ from the MIG User Guide table"
    for name, (pid, count, mem_slices, compute_slices) in GUIDE[key].items():
        p = profiles[name]
        assert (p["id"], p["instance_count"], p["slices"]) == (pid, count, compute_slices), name
        assert {size for _start, size in p["placements"]} == {mem_slices}, name
        assert len(p["placements"]) >= count, name
    assert catalogue.UNSOURCED_PROFILES.get(key) is None


@pytest.mark.parametrize("key", sorted(IDENTITY))
def test_identity_as_the_driver_reports_it(key):
    model = catalogue.MODELS[key]
    assert (model["name"], model["pci_device_id"], model["memory_total_mib"]) == IDENTITY[key]


@pytest.mark.parametrize("key", sorted(GUIDE))
def test_memory_is_monotonic_and_fits_the_board(key):
    """Larger profiles never get less memory; the full profile fits the board's total."""
    model = catalogue.MODELS[key]
    profiles = model["mig"]["gpu_instance_profiles"]
    full = max(profiles, key=lambda p: p["slices"])
    assert full["memory_mib"] <= model["memory_total_mib"]
    for a in profiles:
        for b in profiles:
            if a["placements"][0][1] < b["placements"][0][1]:
                assert a["memory_mib"] <= b["memory_mib"], (a["name"], b["name"])


def test_b200_real_rows_and_flagged_lower_half():
    """Upper half = NVIDIA's -lgip in mig-parted PR #187; lower half flagged as secondary/inferred."""
    b = _by_name("B200-180GB")
    real = {"1g.23gb": (20992, 18, 2, 1, 1, 0), "1g.23gb+me": (20992, 18, 2, 1, 1, 1),
            "1g.45gb": (45312, 30, 2, 1, 1, 0), "2g.45gb": (45312, 36, 4, 2, 2, 0)}
    for name, row in real.items():
        p = b[name]
        assert (p["memory_mib"], p["multiprocessor_count"], p["copy_engines"], p["decoders"],
                p["jpegs"], p["ofas"]) == row, name
    assert [b[n]["memory_mib"] for n in ("3g.90gb", "4g.90gb", "7g.180gb")] == [91136, 91136, 182784]
    assert [b[n]["copy_engines"] for n in ("3g.90gb", "4g.90gb", "7g.180gb")] == [6, 8, 16]
    notes = " ".join(catalogue.PROVENANCE["B200-180GB"])
    for word in ("SECONDARY", "INFERRED", "H100 geometry assumed"):
        assert word in notes


@pytest.mark.parametrize("key", sorted(GUIDE))
def test_guide_layouts_fit(key):
    """Layouts every guide diagram allows: all of the smallest profile, 4g+3g, 7g alone."""
    ids = {n: v[0] for n, v in GUIDE[key].items()}
    every = set(layouts.all_layouts(key))
    names = list(GUIDE[key])
    smallest, full = names[0], names[-1]
    assert (ids[full],) in every
    assert tuple([ids[smallest]] * GUIDE[key][smallest][1]) in every
    if key != "A30-24GB":
        assert tuple(sorted((ids[names[4]], ids[names[5]]))) in every        # 3g + 4g
        assert tuple(sorted([ids[names[1]]] + [ids[smallest]] * 6)) in every  # +me + 6 x 1g
