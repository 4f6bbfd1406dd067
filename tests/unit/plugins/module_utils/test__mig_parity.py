"""mig-parted parity: NVIDIA's own test cases for the file format, run through this collection.

Goal (issue 14): a file mig-parted accepts, we accept; one it refuses, we refuse.  The oracle is
the test tables of the two Go projects that define the format, rebuilt case by case (the line
number is the line of the case's name in that file):

* go-nvlib ``pkg/nvlib/device/mig_profile_test.go`` at commit
  3c161560521e3208792199f2ed0d559a5f3ae4f4 (TestParseMigProfile, TestParseMigProfileEquals): the
  MIG device-name grammar mig-parted checks ``mig-devices`` keys with;
* mig-parted at commit bd7160f43f16462eeb21e1eda5e67b5b6b03fd7d: ``api/spec/v1/spec_test.go``
  (TestSpec, TestMigConfigSpec), ``api/spec/v1/helpers_test.go``
  (TestMigConfigSpecMatchesDeviceFilter) and ``pkg/types/device_test.go``
  (TestNewDeviceIDFromString, TestDeviceIDMatches).

Where this collection deliberately answers otherwise the case is listed in DIFFERENCES with the
reason (docs/mig.md, "Differences from mig-parted"), and the test asserts the difference, so
that it cannot disappear or appear unnoticed.
"""

from __future__ import annotations

import pytest

from ansible_collections.gpuops.sharing.plugins.module_utils import _mig, _mig_config

from ...conftest import driver_profiles

NVLIB = "go-nvlib pkg/nvlib/device/mig_profile_test.go"
SPEC = "mig-parted api/spec/v1/spec_test.go"
HELPERS = "mig-parted api/spec/v1/helpers_test.go"
TYPES = "mig-parted pkg/types/device_test.go"

# (line, name, input, valid format, valid on go-nvlib's mock 40 GB device)
NVLIB_FORMAT = [
    (100, "Empty device type", "", False, False),
    (106, "Valid 1g.5gb", "1g.5gb", True, True),
    (112, "Valid 1c.1g.5gb", "1c.1g.5gb", True, True),
    (118, "Valid 1g.5gb+me", "1g.5gb+me", True, True),
    (124, "Valid 1c.1g.5gb+me", "1c.1g.5gb+me", True, True),
    (130, "Valid 1c.1g.5gb-me", "1c.1g.5gb-me", True, True),
    (136, "Valid 1g.5gb+me.all", "1g.5gb+me.all", True, True),
    (142, "Valid 1c.1g.5gb+me.all", "1c.1g.5gb+me.all", True, True),
    (148, "Valid 1g.5gb+gfx", "1g.5gb+gfx", True, True),
    (154, "Valid 1c.1g.5gb+gfx", "1c.1g.5gb+gfx", True, True),
    (160, "Invalid 0g.0gb", "0g.0gb", True, False),
    (166, "Invalid 0c.0g.0gb", "0c.0g.0gb", True, False),
    (172, "Invalid 10000g.500000gb", "10000g.500000gb", True, False),
    (178, "Invalid 10000c.10000g.500000gb", "10000c.10000g.500000gb", True, False),
    (184, "Invalid ' 1c.1g.5gb'", " 1c.1g.5gb", False, False),
    (190, "Invalid '1 c.1g.5gb'", "1 c.1g.5gb", False, False),
    (196, "Invalid '1c .1g.5gb'", "1c .1g.5gb", False, False),
    (202, "Invalid '1c. 1g.5gb'", "1c. 1g.5gb", False, False),
    (208, "Invalid '1c.1 g.5gb'", "1c.1 g.5gb", False, False),
    (214, "Invalid '1c.1g .5gb'", "1c.1g .5gb", False, False),
    (220, "Invalid '1c.1g. 5gb'", "1c.1g. 5gb", False, False),
    (226, "Invalid '1c.1g.5 gb'", "1c.1g.5 gb", False, False),
    (232, "Invalid '1c.1g.5g b'", "1c.1g.5g b", False, False),
    (238, "Invalid '1c.1g.5gb '", "1c.1g.5gb ", False, False),
    (244, "Invalid '1c . 1g . 5gb'", "1c . 1g . 5gb", False, False),
    (250, "Invalid 1c.f1g.5gb", "1c.f1g.5gb", False, False),
    (256, "Invalid 1r.1g.5gb", "1r.1g.5gb", False, False),
    (262, "Invalid 1g.5gbk", "1g.5gbk", False, False),
    (268, "Invalid 1g.5", "1g.5", False, False),
    (274, "Invalid g.5gb", "g.5gb", False, False),
    (280, "Invalid 1g.gb", "1g.gb", False, False),
    (286, "Invalid 1g.5gb+me,me", "1g.5gb+me,me", False, False),
    (292, "Invalid 1g.5gb+me,you,them", "1g.5gb+me,you,them", True, False),
    (298, "Invalid 1c.1g.5gb+me,you,them", "1c.1g.5gb+me,you,them", True, False),
    (304, "Invalid 1g.5gb+", "1g.5gb+", False, False),
    (310, "Invalid 1g.5gb +", "1g.5gb +", False, False),
    (316, "Invalid 1g.5gb+ ", "1g.5gb+ ", False, False),
    (322, "Invalid 1g.5gb+ ,", "1g.5gb+ ,", False, False),
    (328, "Invalid 1g.5gb+,,", "1g.5gb+,,", False, False),
    (334, "Invalid 1g.5gb+me,", "1g.5gb+me,", False, False),
    (340, "Invalid 1g.5gb+me,,", "1g.5gb+me,,", False, False),
    (346, "Invalid 1g.5gb+me, ", "1g.5gb+me, ", False, False),
    (352, "Invalid 1g.5gb+2me", "1g.5gb+2me", False, False),
    (358, "Inavlid 1g.5gb*me", "1g.5gb*me", False, False),
    (364, "Invalid 1c.1g.5gb*me", "1c.1g.5gb*me", False, False),
    (370, "Invalid 1g.5gb*me,you,them", "1g.5gb*me,you,them", False, False),
    (376, "Invalid 1c.1g.5gb*me,you,them", "1c.1g.5gb*me,you,them", False, False),
    (382, "Invalid bogus", "bogus", False, False),
    (388, "Invalid 1c.1g.5gb+.all", "1c.1g.5gb+.all", False, False),
    (394, "Invalid 1c.1g.5gb+all.", "1c.1g.5gb+all.", False, False),
    (400, "Invalid 1c.1g.5gb+me-me", "1c.1g.5gb+me-me", False, False),
    (406, "Invalid 1c.1g.5gb-me+me", "1c.1g.5gb-me+me", False, False),
]

# (line, name, profile 1, profile 2, equal)
NVLIB_EQUALS = [
    (440, "Exactly equal", "1g.5gb", "1g.5gb", True),
    (446, "Equal when expanded", "1c.1g.5gb", "1g.5gb", True),
    (452, "Equal with attributes", "1g.5gb+me", "1g.5gb+me", True),
    (458, "Not equal C slices", "1c.2g.10gb", "2c.2g.10gb", False),
    (464, "Not equal G slices", "1c.1g.10gb", "1c.2g.10gb", False),
    (470, "Not equal attributes", "1g.5gb", "1g.5gb+me", False),
    (476, "Not equal neg attributes", "1g.5gb", "1g.5gb-me", False),
    (482, "Not equal +/- attributes", "1g.5gb+me", "1g.5gb-me", False),
]

# (line, name, file text, accepted)
PARTED_SPEC = [
    (144, "Empty", "", True),
    (149, "Well formed",
     ("{\n"
      "\t\t\t\t\"version\": \"v1\",\n"
      "\t\t\t\t\"mig-configs\": {\n"
      "\t\t\t\t\t\"all-disabled\": [{\n"
      "\t\t\t\t\t\t\"devices\": \"all\",\n"
      "\t\t\t\t\t\t\"mig-enabled\": false\n"
      "\t\t\t\t\t}]\n"
      "\t\t\t\t}\n"
      "\t\t\t}"),
     True),
    (162, "Only version field", "{\n\t\t\t\t\"version\": \"v1\"\n\t\t\t}", True),
    (169, "Well formed - wrong version",
     ("{\n"
      "\t\t\t\t\"version\": \"v2\",\n"
      "\t\t\t\t\"mig-configs\": {\n"
      "\t\t\t\t\t\"all-disabled\": [{\n"
      "\t\t\t\t\t\t\"devices\": \"all\",\n"
      "\t\t\t\t\t\t\"mig-enabled\": false\n"
      "\t\t\t\t\t}]\n"
      "\t\t\t\t}\n"
      "\t\t\t}"),
     False),
    (182, "Only version field - wrong versiomn", "{\n\t\t\t\t\"version\": \"v2\"\n\t\t\t}", False),
    (189, "Missing version field",
     ("{\n"
      "\t\t\t\t\"mig-configs\": {\n"
      "\t\t\t\t\t\"all-disabled\": [{\n"
      "\t\t\t\t\t\t\"devices\": \"all\",\n"
      "\t\t\t\t\t\t\"mig-enabled\": false\n"
      "\t\t\t\t\t}]\n"
      "\t\t\t\t}\n"
      "\t\t\t}"),
     False),
    (201, "Erroneous field",
     ("{\n"
      "\t\t\t\t\"bogus\": \"field\",\n"
      "\t\t\t\t\"version\": \"v1\",\n"
      "\t\t\t\t\"mig-configs\": {\n"
      "\t\t\t\t\t\"all-disabled\": [{\n"
      "\t\t\t\t\t\t\"devices\": \"all\",\n"
      "\t\t\t\t\t\t\"mig-enabled\": false\n"
      "\t\t\t\t\t}]\n"
      "\t\t\t\t}\n"
      "\t\t\t}"),
     False),
    (215, "Empty 'mig-configs'", "{\n\t\t\t\t\"version\": \"v1\",\n\t\t\t\t\"mig-configs\": {}\n\t\t\t}", False),
]

# (line, name, entry text, accepted)
PARTED_ENTRY = [
    (244, "Empty", "", True),
    (249, "Well formed",
     ("{\n"
      "\t\t\t\t\"devices\": \"all\",\n"
      "\t\t\t\t\"mig-enabled\": true,\n"
      "\t\t\t\t\"mig-devices\": {\n"
      "\t\t\t\t\t\"1g.5gb\": 2\n"
      "\t\t\t\t}\n"
      "\t\t\t}"),
     True),
    (260, "Well formed with filter",
     ("{\n"
      "\t\t\t\t\"device-filter\": \"MODEL\",\n"
      "\t\t\t\t\"devices\": \"all\",\n"
      "\t\t\t\t\"mig-enabled\": true,\n"
      "\t\t\t\t\"mig-devices\": {\n"
      "\t\t\t\t\t\"1g.5gb\": 2\n"
      "\t\t\t\t}\n"
      "\t\t\t}"),
     True),
    (272, "Well formed with multi-filter",
     ("{\n"
      "\t\t\t\t\"device-filter\": [\"MODEL1\", \"MODEL2\"],\n"
      "\t\t\t\t\"devices\": \"all\",\n"
      "\t\t\t\t\"mig-enabled\": true,\n"
      "\t\t\t\t\"mig-devices\": {\n"
      "\t\t\t\t\t\"1g.5gb\": 2\n"
      "\t\t\t\t}\n"
      "\t\t\t}"),
     True),
    (284, "Missing 'devices'",
     ("{\n"
      "\t\t\t\t\"mig-enabled\": true,\n"
      "\t\t\t\t\"mig-devices\": {\n"
      "\t\t\t\t\t\"1g.5gb\": 2\n"
      "\t\t\t\t}\n"
      "\t\t\t}"),
     False),
    (294, "Missing 'mig-enabled'",
     ("{\n"
      "\t\t\t\t\"devices\": \"all\",\n"
      "\t\t\t\t\"mig-devices\": {\n"
      "\t\t\t\t\t\"1g.5gb\": 2\n"
      "\t\t\t\t}\n"
      "\t\t\t}"),
     False),
    (304, "Missing 'mig-devices', enabled: false",
     ("{\n"
      "\t\t\t\t\"devices\": \"all\",\n"
      "\t\t\t\t\"mig-enabled\": false,\n"
      "\t\t\t}"),
     True),
    (312, "Missing 'mig-devices', enabled: true",
     ("{\n"
      "\t\t\t\t\"devices\": \"all\",\n"
      "\t\t\t\t\"mig-enabled\": true,\n"
      "\t\t\t}"),
     False),
    (320, "'mig-devices' formatted correctly",
     ("{\n"
      "\t\t\t\t\"devices\": \"all\",\n"
      "\t\t\t\t\"mig-enabled\": true,\n"
      "\t\t\t\t\"mig-devices\": {\n"
      "\t\t\t\t\t\"1g.5gb\": 2\n"
      "\t\t\t\t}\n"
      "\t\t\t}"),
     True),
    (331, "'mig-devices' formatted incorrectly",
     ("{\n"
      "\t\t\t\t\"devices\": \"all\",\n"
      "\t\t\t\t\"mig-enabled\": true,\n"
      "\t\t\t\t\"mig-devices\": {\n"
      "\t\t\t\t\t\"bogus\": 2\n"
      "\t\t\t\t}\n"
      "\t\t\t}"),
     False),
    (342, "Erroneous field",
     ("{\n"
      "\t\t\t\t\"bogus\": \"field\",\n"
      "\t\t\t\t\"devices\": \"all\",\n"
      "\t\t\t\t\"mig-enabled\": false,\n"
      "\t\t\t}"),
     False),
    (351, "'devices' string == all",
     ("{\n"
      "\t\t\t\t\"devices\": \"all\",\n"
      "\t\t\t\t\"mig-enabled\": false,\n"
      "\t\t\t}"),
     True),
    (359, "'devices' string != all",
     ("{\n"
      "\t\t\t\t\"devices\": \"bogus\",\n"
      "\t\t\t\t\"mig-enabled\": false,\n"
      "\t\t\t}"),
     False),
    (367, "'devices' []int", "{\n\t\t\t\t\"devices\": [0,1,2,3],\n\t\t\t\t\"mig-enabled\": false,\n\t\t\t}", True),
    (375, "'devices' not string for []int",
     ("{\n"
      "\t\t\t\t\"devices\": {},\n"
      "\t\t\t\t\"mig-enabled\": false,\n"
      "\t\t\t}"),
     False),
]

# (line, name, device-filter, matches H100 0x233010DE:0x16C010DE)
PARTED_FILTER_MATCH = [
    (36, "empty filter matches all devices", '', True),
    (41, "primary-only filter matches subsystem-aware hardware", '0x233010DE', True),
    (46, "matching subsystem filter matches hardware", '0x233010DE:0x16C010DE', True),
    (51, "sibling subsystem filter does not match hardware", '0x233010DE:0x16C110DE', False),
    (56, "multiple filters stop at a matching subsystem entry", ['0x233010DE:0x16C110DE', '0x233010DE:0x16C010DE'], True),
    (61, "malformed filters with extra separators do not match", '0x233010DE:0x16C010DE:extra', False),
]

# (line, name, text, parses as a device id)
PARTED_DEVICE_ID = [
    (63, "primary only", "0x25B610DE", True),
    (68, "with subsystem", "0x25B610DE:0x14A910DE", True),
    (73, "invalid primary", "not-a-device-id", False),
    (78, "invalid subsystem", "0x25B610DE:not-a-subsystem", False),
    (83, "too many separators", "0x25B610DE:0x14A910DE:extra", False),
]

# (line, name, device-filter, hardware (device id, subsystem id), matches)
PARTED_ID_MATCH = [
    (124, "primary only filter matches same primary id", "0x25B610DE", ('0x25B610DE', '0x14A910DE'), True),
    (130, "subsystem filter matches exact hardware", "0x25B610DE:0x14A910DE", ('0x25B610DE', '0x14A910DE'), True),
    (136, "subsystem filter rejects sibling subsystem", "0x25B610DE:0x14A910DE", ('0x25B610DE', '0x157E10DE'), False),
    (142, "subsystem filter does not match hardware with unknown subsystem", "0x25B610DE:0x14A910DE", ('0x25B610DE', '0x00000000'), False),
    (148, "zero subsystem filter matches hardware with unknown subsystem", "0x25B610DE:0x00000000", ('0x25B610DE', '0x00000000'), True),
    (154, "different primary id does not match", "0x1E3010DE", ('0x25B610DE', '0x14A910DE'), False),
]

# Cases where this collection answers otherwise on purpose (docs/mig.md, "Differences from mig-parted").
DIFFERENCES = {
    (SPEC, 144): "an empty file is refused: it configures nothing, so it is a mistake to apply",
    (SPEC, 162): "a file without mig-configs is refused: there is no configuration to apply",
    (SPEC, 244): "an empty entry is refused: it has neither devices nor mig-enabled",
    (HELPERS, 61): "a device-filter with two ':' is refused when the file is read, where mig-parted "
                   "silently matches nothing",
}


def _differs(source: str, line: int) -> bool:
    return (source, line) in DIFFERENCES


def _check(source: str, line: int, ours, theirs) -> None:
    if _differs(source, line):
        assert ours != theirs, f"{source}:{line} now agrees with mig-parted; drop it from DIFFERENCES and docs/mig.md"
    else:
        assert ours == theirs


def _format_ok(text: str) -> bool:
    try:
        _mig.parse_profile(text)
    except _mig.MigError:
        return False
    return True


@pytest.fixture(scope="module")
def a100():
    return driver_profiles("A100-SXM4-40GB")


@pytest.mark.parametrize("line,name,text,valid_format,valid_device", NVLIB_FORMAT,
                         ids=[f"L{c[0]}-{c[1]}" for c in NVLIB_FORMAT])
def test_nvlib_profile_format(line, name, text, valid_format, valid_device):
    _check(NVLIB, line, _format_ok(text), valid_format)


# go-nvlib's mock device offers every 1-slice variant (+me, -me, +me.all, +gfx); an A100 40GB
# offers +me only, so the device half is checked where the A100's answer is the mock's.
_ON_A100_VALID = ("1g.5gb", "1c.1g.5gb", "1g.5gb+me", "1c.1g.5gb+me")
_ON_A100 = [c for c in NVLIB_FORMAT if c[3] and (not c[4] or c[2] in _ON_A100_VALID)]


@pytest.mark.parametrize("line,name,text,valid_format,valid_device", _ON_A100,
                         ids=[f"L{c[0]}-{c[1]}" for c in _ON_A100])
def test_nvlib_profile_on_device(a100, line, name, text, valid_format, valid_device):
    try:
        _mig.resolve_gi_profile(a100, text)
    except _mig.MigError:
        ours = False
    else:
        ours = True
    _check(NVLIB, line, ours, valid_device)


@pytest.mark.parametrize("line,name,first,second,equal", NVLIB_EQUALS, ids=[f"L{c[0]}-{c[1]}" for c in NVLIB_EQUALS])
def test_nvlib_profile_equals(a100, line, name, first, second, equal):
    def key(text):
        p = _mig.parse_profile(text)
        return p["c"], p["g"], p["gb"], _mig.attr_key(p["attrs"])
    _check(NVLIB, line, key(first) == key(second), equal)


@pytest.mark.parametrize("line,name,text,accepted", PARTED_SPEC, ids=[f"L{c[0]}-{c[1]}" for c in PARTED_SPEC])
def test_parted_spec(line, name, text, accepted):
    try:
        _mig_config.load_text(text, "case.yaml")
    except _mig_config.ConfigError:
        ours = False
    else:
        ours = True
    _check(SPEC, line, ours, accepted)


@pytest.mark.parametrize("line,name,text,accepted", PARTED_ENTRY, ids=[f"L{c[0]}-{c[1]}" for c in PARTED_ENTRY])
def test_parted_entry(line, name, text, accepted):
    try:
        docs = _mig_config._documents(text, "case.yaml")
        _mig_config.normalize_entry(docs[0][1] if docs else None, "case.yaml")
    except _mig_config.ConfigError:
        ours = False
    else:
        ours = True
    _check(SPEC, line, ours, accepted)


H100 = {"index": 0, "uuid": "GPU-0", "name": "NVIDIA H100 80GB HBM3", "pci_device_id": "0x233010DE",
        "pci_subsystem_id": "0x16C010DE"}


@pytest.mark.parametrize("line,name,device_filter,matches", PARTED_FILTER_MATCH,
                         ids=[f"L{c[0]}-{c[1]}" for c in PARTED_FILTER_MATCH])
def test_parted_filter_matches(line, name, device_filter, matches):
    try:
        entry = _mig_config.normalize_entry({"devices": "all", "mig-enabled": False, "device-filter": device_filter},
                                            "case.yaml")
    except _mig_config.ConfigError:
        ours = None     # refused when the file is read
    else:
        ours = _mig_config.entry_selects(entry, H100)
    _check(HELPERS, line, ours, matches)


@pytest.mark.parametrize("line,name,text,parses", PARTED_DEVICE_ID, ids=[f"L{c[0]}-{c[1]}" for c in PARTED_DEVICE_ID])
def test_parted_device_id(line, name, text, parses):
    try:
        ours = _mig_config._parse_filter(text, "device-filter")[0] == "pci"
    except _mig_config.ConfigError:
        ours = False
    _check(TYPES, line, ours, parses)


@pytest.mark.parametrize("line,name,device_filter,hardware,matches", PARTED_ID_MATCH,
                         ids=[f"L{c[0]}-{c[1]}" for c in PARTED_ID_MATCH])
def test_parted_device_id_matches(line, name, device_filter, hardware, matches):
    gpu = {"index": 0, "uuid": "GPU-0", "name": "?", "pci_device_id": hardware[0], "pci_subsystem_id": hardware[1]}
    _check(TYPES, line, _mig_config.filter_matches(device_filter, gpu), matches)


def test_differences_are_documented():
    """Every deliberate difference is listed in docs/mig.md with its reason."""
    import os
    doc = os.path.join(os.path.dirname(__file__), "..", "..", "..", "..", "docs", "mig.md")
    with open(doc, encoding="utf-8") as fh:
        text = fh.read()
    for source, line in DIFFERENCES:
        assert f"{source.split(' ', 1)[1]}:{line}" in text
