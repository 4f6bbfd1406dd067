"""The MIG planner: names, packing, feasibility, minimal-disruption plans."""

from __future__ import annotations

import pytest

from ansible_collections.gpuops.sharing.plugins.module_utils import _mig

from ...conftest import driver_profiles


@pytest.fixture(scope="module")
def a100():
    return driver_profiles("A100-SXM4-40GB")


@pytest.fixture(scope="module")
def h100():
    return driver_profiles("H100-SXM5-80GB")


def gi(gid, profile_id, start, size, cis):
    return {"id": gid, "profile_id": profile_id, "start": start, "size": size,
            "compute_instances": [{"id": i, "slices": c, "start": s, "size": c, "mig_uuid": f"MIG-{gid}-{i}",
                                   "processes": p} for i, (c, s, p) in enumerate(cis)]}


@pytest.mark.parametrize("text,parsed", [
    ("3g.40gb", {"c": 3, "g": 3, "gb": 40, "attrs": ""}),
    ("1c.3g.40gb", {"c": 1, "g": 3, "gb": 40, "attrs": ""}),
    ("1g.10gb+me", {"c": 1, "g": 1, "gb": 10, "attrs": "+me"}),
    ("1g.24gb+me.all", {"c": 1, "g": 1, "gb": 24, "attrs": "+me.all"}),
    ("1g.24gb-me", {"c": 1, "g": 1, "gb": 24, "attrs": "-me"}),
    ("4g.96gb+gfx", {"c": 4, "g": 4, "gb": 96, "attrs": "+gfx"}),
    ("1g.24gb+me,gfx", {"c": 1, "g": 1, "gb": 24, "attrs": "+me,gfx"}),
    # go-nvlib's grammar: leading zeros are Atoi's, 0 and C > G parse (refused on a device)
    ("01g.05gb", {"c": 1, "g": 1, "gb": 5, "attrs": ""}),
    ("0g.0gb", {"c": 0, "g": 0, "gb": 0, "attrs": ""}),
    ("4c.3g.40gb", {"c": 4, "g": 3, "gb": 40, "attrs": ""}),
    ("1g.5gb+me,you,them", {"c": 1, "g": 1, "gb": 5, "attrs": "+me,you,them"}),
])
def test_parse_profile(text, parsed):
    assert _mig.parse_profile(text) == parsed


@pytest.mark.parametrize("text,message", [
    ("3g", "is not a MIG profile name"),
    ("3g.40", "is not a MIG profile name (did you mean '3g.40gb'?)"),
    # whitespace, upper case, duplicate or mixed-sign attributes and non-ASCII digits are refused,
    # as go-nvlib refuses them (the module used to strip and lower-case the name)
    (" 7G.80GB ", "(did you mean '7g.80gb'?): expected <G>g.<N>gb"),
    (" 1c.1g.5gb", "(it contains whitespace)"),
    ("1g.5gb ", "(it contains whitespace)"),
    ("7G.80GB", "(it is not in lower case)"),
    ("1g.5gb+me,me", "(an attribute is given twice)"),
    ("1c.1g.5gb+me-me", "(it has both '+' and '-' attributes)"),
    ("1c.1g.5gb-me+me", "(it has both '+' and '-' attributes)"),
    ("1g.5gb+me+gfx", "(an attribute is empty or malformed"),
    ("\uff13g.\uff12\uff10gb", "(it contains a character that is not ASCII (digits must be 0-9))"),
    ("1g.5gb\n", "(it contains whitespace)"),
    ("three", "is not a MIG profile name: expected <G>g.<N>gb"),
    ("1g.10gb.me", "(did you mean '1g.10gb+me'?)"),
    ("1g10gb", "(did you mean '1g.10gb'?)"),
    ("1g.10gbb", "(did you mean '1g.10gb'?)"),
    ("1g.10gb+", "(did you mean '1g.10gb'?)"),
])
def test_parse_profile_errors(text, message):
    with pytest.raises(_mig.MigError) as err:
        _mig.parse_profile(text)
    assert message in str(err.value)


def test_resolve_by_name_slices_and_memory(h100):
    assert _mig.resolve_gi_profile(h100, "1g.10gb")[0]["name"] == "1g.10gb"
    assert _mig.resolve_gi_profile(h100, "1g.20gb")[0]["name"] == "1g.20gb"
    assert _mig.resolve_gi_profile(h100, "1g.10gb+me")[0]["name"] == "1g.10gb+me"
    profile, c = _mig.resolve_gi_profile(h100, "1c.3g.40gb")
    assert profile["name"] == "3g.40gb" and c == 1


@pytest.mark.parametrize("text,message", [
    ("0g.0gb", "profile '0g.0gb' names a MIG device with 0 compute slices, which no GPU has"),
    ("0c.1g.10gb", "names a MIG device with 0 compute slices"),
    ("4c.3g.40gb", "'4c.3g.40gb': a compute instance cannot use 4 of 3 compute slices"),
])
def test_resolve_refuses_names_no_device_has(h100, text, message):
    """What parses but no GPU offers is refused against the device, as mig-parted does."""
    _mig.parse_profile(text)
    with pytest.raises(_mig.MigError) as err:
        _mig.resolve_gi_profile(h100, text)
    assert message in str(err.value)


def test_resolve_refuses_other_models_names(h100):
    """A name further off than driver branches drift is another board's profile (GH200's 1g.12gb,
    1g.24gb, B200's 3g.90gb): taking the nearest would silently build a different layout."""
    for name, suggestion in (("1g.12gb", "1g.10gb"), ("1g.24gb", "1g.20gb"), ("1c.3g.90gb", "1c.3g.40gb")):
        with pytest.raises(_mig.MigError) as err:
            _mig.resolve_gi_profile(h100, name, "GPU 0 (NVIDIA H100 80GB HBM3)")
        assert f"profile '{name}' does not exist on GPU 0 (NVIDIA H100 80GB HBM3)" in str(err.value)
        assert f"'{suggestion}'" in str(err.value) and "meant for another GPU model" in str(err.value)


def test_resolve_takes_names_a_driver_branch_apart_with_a_note(h100):
    """3g.39gb is what R535/R545 called A100 80GB's 3g.40gb (mig-parted issue #31); a name within a GB
    (or 5%) of exactly one profile of the same slices and attributes is that profile, and a note says so."""
    notes = []
    profile, c = _mig.resolve_gi_profile(h100, "1c.3g.41gb", "GPU 0 (NVIDIA H100 80GB HBM3)", notes)
    assert profile["name"] == "3g.40gb" and c == 1
    profile, _c = _mig.resolve_gi_profile(h100, "3g.39gb", "GPU 0 (NVIDIA H100 80GB HBM3)", notes)
    assert profile["name"] == "3g.40gb"
    assert notes == [
        "profile '1c.3g.41gb' is taken as 1c.3g.40gb (profile ID 9) on GPU 0 (NVIDIA H100 80GB HBM3): same slices, "
        "named 1 GB apart (driver branches name profiles differently); write that name to silence this note",
        "profile '3g.39gb' is taken as 3g.40gb (profile ID 9) on GPU 0 (NVIDIA H100 80GB HBM3): same slices, "
        "named 1 GB apart (driver branches name profiles differently); write that name to silence this note"]
    with pytest.raises(_mig.MigError, match="does not exist"):
        _mig.resolve_gi_profile(h100, "1g.11gb+gfx", "GPU 0", notes)  # attributes must match


def test_resolve_refuses_a_name_equally_near_two_profiles():
    profiles = [{"id": 19, "name": "1g.40gb", "slices": 1, "memory_mib": 40960},
                {"id": 15, "name": "1g.42gb", "slices": 1, "memory_mib": 43008}]
    with pytest.raises(_mig.MigError, match=r"profile '1g.41gb' is ambiguous on GPU 0: it is as close to "
                                            r"1g.40gb as to 1g.42gb; name one of them"):
        _mig.resolve_gi_profile(profiles, "1g.41gb", "GPU 0")


def test_resolve_by_mig_parted_name():
    """mig-parted derives the GB of a name from the profile's share of the GPU's memory; where the
    driver's name differs (a GB200-like board: driver 1g.24gb, mig-parted 1g.23gb) both work."""
    profiles = [{"id": 19, "name": "1g.24gb", "slices": 1, "memory_mib": 23552, "gpu_memory_bytes": 189471 * 2**20},
                {"id": 15, "name": "1g.47gb", "slices": 1, "memory_mib": 47104, "gpu_memory_bytes": 189471 * 2**20}]
    assert _mig.mig_parted_gb(profiles[0]) == 23
    assert _mig.resolve_gi_profile(profiles, "1g.23gb")[0]["id"] == 19
    assert _mig.resolve_gi_profile(profiles, "1g.24gb")[0]["id"] == 19
    assert _mig.resolve_gi_profile(profiles, "1g.47gb")[0]["id"] == 15
    with pytest.raises(_mig.MigError, match="did you mean '1g.24gb'"):
        _mig.resolve_gi_profile(profiles, "1g.26gb")


def test_resolve_unknown_lists_profiles(a100):
    with pytest.raises(_mig.MigError) as err:
        _mig.resolve_gi_profile(a100, "5g.30gb", "GPU 0 (NVIDIA A100-SXM4-40GB)")
    assert "does not exist on GPU 0 (NVIDIA A100-SXM4-40GB)" in str(err.value)
    assert "3g.20gb" in str(err.value) and "1g.5gb+me" in str(err.value)


def test_packing_follows_mig_parted(a100):
    specs = _mig.layout_from_mig_devices(a100, {"1c.3g.20gb": 4, "3g.20gb": 0, "1g.5gb": 1})
    by_profile = sorted((s["profile_id"], s["cis"]) for s in specs)
    three_g = next(p["id"] for p in a100 if p["name"] == "3g.20gb")
    one_g = next(p["id"] for p in a100 if p["name"] == "1g.5gb")
    assert (three_g, [1, 1, 1]) in by_profile and (three_g, [1]) in by_profile and (one_g, [1]) in by_profile


@pytest.mark.parametrize("devices,message", [
    ({"3g.20gb": 3}, "at most 2 x 3g.20gb"),
    ({"3g.20gb": 2, "1g.5gb": 1}, "no arrangement of placements fits"),
    ({"4g.20gb": 1, "3g.20gb": 1, "1g.5gb": 1}, "needs 8 compute slices"),
    ({"1g.5gb": -1}, "whole number"),
])
def test_impossible_layouts_rejected_with_reason_and_alternatives(a100, devices, message):
    with pytest.raises(_mig.MigError) as err:
        specs = _mig.layout_from_mig_devices(a100, devices)
        _mig.check_feasible(a100, specs, "GPU 0")
    assert message in str(err.value)
    if "needs" in message or "arrangement" in message:
        assert "valid layouts close to it" in str(err.value)


def test_order_sensitive_layout_gets_explicit_placements(a100):
    specs = _mig.layout_from_mig_devices(a100, {"1g.5gb": 2, "2g.10gb": 1, "3g.20gb": 1})
    plan = _mig.plan_layout(a100, [], specs)
    starts = sorted((c["profile"], c["start"]) for c in plan["create"])
    assert ("3g.20gb", 4) in starts or ("3g.20gb", 0) in starts
    used = sorted((c["start"], c["size"]) for c in plan["create"])
    for (s1, z1), (s2, _z2) in zip(used, used[1:]):
        assert s1 + z1 <= s2


def test_keeps_instances_that_fit(a100):
    one_g = next(p["id"] for p in a100 if p["name"] == "1g.5gb")
    three_g = next(p["id"] for p in a100 if p["name"] == "3g.20gb")
    current = [gi(2, three_g, 4, 4, [(3, 0, [])]), gi(7, one_g, 0, 1, [(1, 0, [])])]
    specs = _mig.layout_from_mig_devices(a100, {"3g.20gb": 1, "1g.5gb": 4})
    plan = _mig.plan_layout(a100, current, specs)
    assert plan["destroy_gis"] == [] and plan["destroy_cis"] == []
    assert sorted(c["start"] for c in plan["create"]) == [1, 2, 3]


def test_fragmented_free_slices_move_the_fewest(a100):
    one_g = next(p["id"] for p in a100 if p["name"] == "1g.5gb")
    current = [gi(7 + s, one_g, s, 1, [(1, 0, [])]) for s in (0, 2, 4, 6)]
    specs = _mig.layout_from_mig_devices(a100, {"1g.5gb": 4, "3g.20gb": 1})
    plan = _mig.plan_layout(a100, current, specs)
    assert len(plan["destroy_gis"]) == 2 and plan["cost"] == (0, 4)
    assert _mig.minimum_destroyed(a100, current, specs) == 4


def test_busy_instances_weigh_more_than_idle_ones(a100):
    one_g = next(p["id"] for p in a100 if p["name"] == "1g.5gb")
    current = [gi(7, one_g, 0, 1, [(1, 0, [4242])]), gi(9, one_g, 2, 1, [(1, 0, [])]),
               gi(11, one_g, 4, 1, [(1, 0, [])]), gi(13, one_g, 6, 1, [(1, 0, [])])]
    specs = _mig.layout_from_mig_devices(a100, {"1g.5gb": 4, "3g.20gb": 1})
    plan = _mig.plan_layout(a100, current, specs)
    assert plan["cost"][0] == 0
    assert {g["id"] for g in plan["destroy_gis"]} == {11, 13}


def test_compute_instances_edited_inside_a_kept_gpu_instance(h100):
    three_g = next(p["id"] for p in h100 if p["name"] == "3g.40gb")
    current = [gi(1, three_g, 0, 4, [(1, 0, []), (1, 1, [])])]
    specs = _mig.layout_from_mig_devices(h100, {"1c.3g.40gb": 3})
    plan = _mig.plan_layout(h100, current, specs)
    assert plan["destroy_cis"] == [] and plan["keep"][0]["new_cis"] == [1]


def test_already_matching_layout_is_left_alone(a100):
    three_g = next(p["id"] for p in a100 if p["name"] == "3g.20gb")
    # two GIs with one 1c each: mig-parted counts MIG devices, so this matches 1c.3g.20gb: 2
    current = [gi(1, three_g, 0, 4, [(1, 0, [])]), gi(2, three_g, 4, 4, [(1, 0, [])])]
    specs = _mig.layout_from_mig_devices(a100, {"1c.3g.20gb": 2})
    assert _mig.matches(current, specs)
    empty_gi = current + [gi(13, next(p["id"] for p in a100 if p["name"] == "1g.5gb"), 6, 1, [])]
    assert not _mig.matches(empty_gi, specs)


def test_media_engines_limit_me_profiles_on_a30():
    a30 = driver_profiles("A30-24GB")
    specs = _mig.layout_from_mig_devices(a30, {"1g.6gb+me": 1, "2g.12gb+me": 1})
    with pytest.raises(_mig.MigError) as err:
        _mig.check_feasible(a30, specs, "GPU 0 (NVIDIA A30)")
    assert "optical flow accelerators" in str(err.value) or "JPEG decoders" in str(err.value)
    assert "the GPU has 1" in str(err.value)
