"""mig-parted's v1 format: what real files contain, and the mistakes people make in them.

Bad inputs are NVIDIA's real files (fixtures/mig_parted) with one realistic mistake each, plus
two mistakes NVIDIA itself published (a config-default.yaml entry without its '- ', the GPU
Operator's mis-indented values.yaml example).  Each must be refused with a message that names
the file (and line), the configuration and entry, the value, why it is wrong and what would do.
"""

from __future__ import annotations

import json
import os

import pytest
import yaml

from ansible_collections.gpuops.sharing.plugins.module_utils import _mig_config

FIXTURES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures", "mig_parted")
EXAMPLES = "mig-parted_examples_config.yaml.txt"
DEFAULT = "mig-parted_deployments_systemd_config-default.yaml.txt"
CONFIGMAP = "gpu-operator_assets_state-mig-manager_0400_configmap.yaml.txt"


def read(name: str) -> str:
    with open(os.path.join(FIXTURES, name), encoding="utf-8") as fh:
        return fh.read()


def line_of(text: str, needle: str, start: str = "") -> int:
    """1-based line of the first ``needle`` after the first ``start``."""
    lines = text.splitlines()
    begin = next(i for i, line in enumerate(lines) if start in line) if start else 0
    return next(i for i in range(begin, len(lines)) if needle in lines[i]) + 1


def mutate(name: str, old: str, new: str, count: int = 1) -> str:
    text = read(name)
    assert old in text, old
    return text.replace(old, new, count)


def refused(text: str, source: str = "config.yaml") -> str:
    with pytest.raises(_mig_config.ConfigError) as err:
        _mig_config.load_text(text, source)
    return str(err.value)


# --------------------------------------------------------------------------- what real files use

def test_anchors_aliases_and_merge_keys():
    text = """version: v1
mig-configs:
  base: &balanced
    - devices: all
      mig-enabled: true
      mig-devices: &counts {"1g.10gb": 2, "2g.20gb": 1, "3g.40gb": 1}
  again: *balanced
  more-1g:
    - devices: [0]
      mig-enabled: true
      mig-devices:
        <<: *counts
        "1g.10gb": 3
"""
    spec = _mig_config.load_text(text, "anchors.yaml")
    assert spec["again"] == spec["base"]
    assert spec["more-1g"][0]["mig_devices"] == {"1g.10gb": 3, "2g.20gb": 1, "3g.40gb": 1}


def test_forms_mig_parted_accepts():
    spec = _mig_config.load_text("""version: v1
mig-configs:
  generated:                        # nvidia-mig-parted generate-config writes mig-devices: null
    - devices: all
      mig-enabled: false
      mig-devices: null
  filters:
    - device-filter: 0x20B010DE     # unquoted: YAML reads a number, the same id
      devices: all
      mig-enabled: true
      mig-devices: {}
    - device-filter: ["0x20b210de", "0x20B510DE:0x134F10DE"]
      devices: []                   # selects nothing, as with mig-parted
      mig-enabled: true
      mig-devices: {"1g.10gb": 1, "2g.20gb": 0}   # a zero count beside others means none of that one
""", "forms.yaml")
    assert spec["generated"][0]["mig_devices"] == {}
    first, second = spec["filters"]
    assert first["device_filter"] == [0x20B010DE] and second["mig_devices"] == {"1g.10gb": 1} and second["devices"] == []
    a100 = {"index": 0, "uuid": "GPU-a", "name": "NVIDIA A100-SXM4-40GB", "pci_device_id": "0x20B010DE",
            "pci_subsystem_id": "0x134F10DE", "mig_capable": True}
    assert _mig_config.select(spec["filters"], [a100]) == {0: (0, first)}
    a100_80 = dict(a100, pci_device_id="0x20B510DE")
    assert _mig_config.entry_selects(second | {"devices": "all"}, a100_80)
    assert not _mig_config.entry_selects(second | {"devices": "all"}, dict(a100_80, pci_subsystem_id="0x145F10DE"))


def test_generate_config_json_output():
    """nvidia-mig-parted generate-config -o json: JSON is YAML too."""
    text = json.dumps({"version": "v1", "mig-configs": {
        "all-disabled": [{"devices": "all", "mig-enabled": False, "mig-devices": None}],
        "all-1g.10gb": [{"devices": "all", "mig-enabled": True, "mig-devices": {"1g.10gb": 7}}]}}, indent=2)
    assert _mig_config.load_text(text, "generated.json")["all-1g.10gb"][0]["mig_devices"] == {"1g.10gb": 7}


def test_configmap_and_config_name_defaults():
    spec = _mig_config.load_text(read(CONFIGMAP), CONFIGMAP)
    assert "all-balanced" in spec and len(spec) > 50
    single = "version: v1\nmig-configs:\n  only:\n    - devices: all\n      mig-enabled: false\n"
    assert _mig_config.select_config(_mig_config.load_text(single, "one.yaml"), None, "one.yaml")[0]["mig_enabled"] is False
    with pytest.raises(_mig_config.ConfigError) as err:
        _mig_config.select_config(spec, None, CONFIGMAP)
    assert f"has {len(spec)} configurations; say which one with config_name: all-1g.10gb" in str(err.value)


# --------------------------------------------------------------------------- mistakes

@pytest.mark.parametrize("old,new,expected", [
    # profile names
    ('"1g.5gb": 7', '"1g.5gbb": 7', "mig-configs.all-1g.5gb[0] (line <entry>): mig-devices: '1g.5gbb' is not a MIG "
                                    "profile name (did you mean '1g.5gb'?): expected <G>g.<N>gb[+attr]"),
    ('"1g.5gb+me": 1', '"1g.5gb.me": 1', "mig-devices: '1g.5gb.me' is not a MIG profile name (did you mean '1g.5gb+me'?)"),
    ('"1g.5gb": 7', '"1g 5gb": 7', "'1g 5gb' is not a MIG profile name (did you mean '1g.5gb'?)"),
    # upper case is not a name to mig-parted (go-nvlib's grammar), so it is refused as one
    ('"1g.5gb": 7', '"1g.5gb": 7\n        "1G.5GB": 1', "mig-devices: '1G.5GB' is not a MIG profile name (did you "
     "mean '1g.5gb'?)"),
    ('"1g.5gb": 7', '"1g.5gb": 7\n        "01g.5gb": 1', "mig-devices names '1g.5gb' and '01g.5gb', the same MIG "
     "device"),
    # counts
    ('"1g.5gb": 7', '"1g.5gb": "7"', "mig-devices count for '1g.5gb' must be a whole number >= 0, not '7' "
                                     "(write 7 without quotes)"),
    ('"1g.5gb": 7', '"1g.5gb": -7', "mig-devices count for '1g.5gb' must be a whole number >= 0, not -7"),
    ('"1g.5gb": 7', '"1g.5gb": 3.5', "must be a whole number >= 0, not 3.5"),
    ('"1g.5gb": 7', '"1g.5gb": 7.0', "must be a whole number >= 0, not 7.0 (write 7)"),
    ('"1g.5gb": 7', '"1g.5gb": true', "must be a whole number >= 0, not True"),
    ('"1g.5gb": 7', '"1g.5gb":', "mig-devices '1g.5gb' has no count; give how many, e.g. '1g.5gb': 1"),
    ('mig-devices:\n        "1g.5gb": 7', 'mig-devices:\n        - "1g.5gb": 7',
     "mig-devices must map MIG device names to counts, not be a list: write mig-devices: {\"1g.5gb\": 7} (no '- '"),
    # devices
    ("devices: [4]", "devices: 4", "devices must be 'all' or a list of GPU indices or UUIDs, not the number 4 "
                                   "(write [4])"),
    ("devices: [4]", 'devices: "4,5"', "not the string '4,5' (a list is written [4, 5])"),
    ("devices: [4]", "devices: [-4]", "devices entry -4 is neither a GPU index (0, 1, ...) nor a GPU UUID"),
    ("devices: all", "devices: All", "devices must be 'all' or a list of GPU indices or UUIDs, not the string 'All' "
                                     "(write it in lower case: all)"),
    ("devices: [4]", "devices: [MIG-5c1b2a7e-0000-0000-0000-000000000000]", "is a MIG device UUID; devices selects "
                                                                            "whole GPUs"),
    # fields
    ("mig-devices:\n        \"1g.5gb\": 7", "mig-device:\n        \"1g.5gb\": 7",
     "mig-configs.all-1g.5gb[0] (line <entry>): unexpected field 'mig-device' (did you mean 'mig-devices'?); an entry "
     "has devices, device-filter, mig-enabled, mig-devices"),
    ("mig-enabled: true\n      mig-devices:\n        \"1g.5gb\": 7",
     "migEnabled: true\n      mig-devices:\n        \"1g.5gb\": 7", "unexpected field 'migEnabled' (did you mean "
                                                                    "'mig-enabled'?)"),
    ("mig-configs:", "mig-config:", "config.yaml: unexpected field 'mig-config' (did you mean 'mig-configs'?); a "
                                    "mig-parted file has only 'version' and 'mig-configs'"),
    ("mig-enabled: true\n      mig-devices: {}", "mig-enabled: true",
     "mig-configs.all-enabled[0] (line <enabled>): mig-enabled is true but mig-devices is missing; list the MIG "
     "devices to create (mig-devices: {\"1g.10gb\": 7}), or give mig-devices: {} to enable MIG with none"),
    ("mig-enabled: true\n      mig-devices: {}", 'mig-enabled: "true"\n      mig-devices: {}',
     "mig-enabled must be true or false, not the string 'true'"),
    ("- devices: [0,1,2,3]\n      mig-enabled: false", '- devices: [0,1,2,3]\n      mig-enabled: false\n'
                                                       '      mig-devices: {"1g.5gb": 7}',
     "mig-configs.custom-config[0] (line <custom>): mig-enabled is false but mig-devices lists 1g.5gb: 7; set "
     "mig-enabled: true to create them, or remove mig-devices (mig-devices: {} is allowed)"),
    # version
    ("version: v1", "version: v2", "config.yaml: unknown version 'v2'; mig-parted and this module read configuration "
                                   "files with 'version: v1'"),
    ("version: v1", "version: 1", "unknown version 1 (write it as the string v1)"),
    ("version: v1\n", "", "config.yaml: missing 'version' field (mig-parted configs start with 'version: v1')"),
    # structure
    ("  all-disabled:\n", "  all-balanced:\n", "line <dup>, column 3: not valid YAML: duplicate key 'all-balanced' "
                                               "(first given on line <first>); each key may appear only once"),
    ("  all-disabled:\n    - devices: all", "  - all-disabled:\n    - devices: all",
     "not valid YAML"),
    ("      mig-enabled: false\n\n  all-enabled", "\tmig-enabled: false\n\n  all-enabled",
     "line 7, column 1: not valid YAML: found character '\\t' that cannot start any token (while scanning for the "
     "next token); YAML indents with spaces, never tabs"),
])
def test_mistakes_in_a_real_file(old, new, expected):
    text = mutate(EXAMPLES, old, new)
    message = refused(text)
    original = read(EXAMPLES)
    lines = {"entry": line_of(original, "- devices: all", "all-1g.5gb:"),
             "enabled": line_of(original, "- devices", "all-enabled:"),
             "custom": line_of(original, "- devices", "custom-config:"),
             "first": line_of(original, "all-disabled:"), "dup": line_of(original, "all-balanced:")}
    for key, line in lines.items():
        expected = expected.replace(f"<{key}>", str(line))
    assert expected in message
    assert message.startswith("config.yaml")


@pytest.mark.parametrize("old,new,expected", [
    ('device-filter: "0x20B210DE"', 'device-filter: "0x20B210DEE"',
     "device-filter '0x20B210DEE': each part must be a 32-bit id like 0x20B010DE"),
    ('device-filter: "0x20B210DE"', 'device-filter: "20B210DE"',
     "device-filter '20B210DE' looks like a PCI id without its 0x; write 0x20B210DE"),
    ('device-filter: "0x20B210DE"', 'device-filter: "0xZZ"', "device-filter '0xZZ' is not a PCI id: expected "
                                                             "0x<device><vendor>[:0x<subsystem device>"),
    ('device-filter: "0x20B210DE"', 'device-filter: "0x20B210DE:0x1:0x2"', "expected <devicevendor> or "
                                                                           "<devicevendor>:<subsystem>"),
    ('device-filter: "0x20B210DE"', "device-filter: [true]", "device-filter must be a PCI device id (\"0x20B010DE\"), "
                                                             "a model name, or a list of them, not the boolean true"),
    ('device-filter: "0x20B210DE"', 'device_filter: "0x20B210DE"', "unexpected field 'device_filter' (did you mean "
                                                                   "'device-filter'?)"),
])
def test_mistakes_in_device_filters(old, new, expected):
    name = "mig-parted_examples_dgx-station-80gb-config.yaml.txt"
    assert expected in refused(mutate(name, old, new), name)


def test_a_mistake_nvidia_shipped_entry_without_dash():
    """config-default.yaml at 7aa03c41: 'all-1g.10gb:' followed by fields, not a list item."""
    name = "bad_mig-parted_deployments_systemd_config-default.yaml-7aa03c41.txt"
    text = read(name)
    message = refused(text, name)
    assert message == (f"{name}: mig-configs.all-1g.10gb (line {line_of(text, 'devices: all', 'all-1g.10gb:')}): must "
                       "be a list of entries, not a single mapping: put '- ' before its first field ('- devices: all')")


def test_a_mistake_nvidia_published_misindented_example():
    """The GPU Operator's values.yaml example of a custom config, uncommented: one entry indented too deep."""
    name = "bad_gpu-operator_values-example-config.yaml.txt"
    text = read(name)
    message = refused(text, name)
    line = line_of(text, "   mig-enabled: true", "- devices: [1]")
    assert message.startswith(f"{name}, line {line}, column 8: not valid YAML: expected <block end>, but found "
                              "'<block mapping start>'")
    assert "check the indentation of this line against the lines above it" in message


def test_a_mistake_inside_a_configmap_points_into_the_file():
    text = mutate(CONFIGMAP, '            "1g.5gb": 7\n', '            "1g.5gb": 7\n           "2g.10gb": 1\n')
    message = refused(text, "cm.yaml")
    bad = line_of(text, '"2g.10gb": 1')
    assert message.startswith(f"cm.yaml (in ConfigMap default-mig-parted-config, data.config.yaml), line {bad}, ")
    text = mutate(CONFIGMAP, "      all-enabled:", "      all-disabled:")
    first, second = (i + 1 for i, line in enumerate(text.splitlines()) if line == "      all-disabled:")
    assert refused(text, "cm.yaml") == (
        f"cm.yaml (in ConfigMap default-mig-parted-config, data.config.yaml), line {second}, column 7: not valid YAML: "
        f"duplicate key 'all-disabled' (first given on line {first}); each key may appear only once in a mapping, "
        "the second would silently replace the first")
    text = mutate(CONFIGMAP, '"1g.5gb": 7', '"1g.5gb": seven')
    message = refused(text, "cm.yaml")
    assert message.startswith("cm.yaml (ConfigMap default-mig-parted-config, data.config.yaml): mig-configs.all-1g.5gb[0] "
                              f"(line {line_of(text, '- devices: all', 'all-1g.5gb:')}): mig-devices count for '1g.5gb' "
                              "must be a whole number >= 0, not 'seven'")


def test_other_files_than_a_config():
    hooks = "mig-parted_deployments_systemd_hooks-default.yaml.txt"
    assert refused(read(hooks), hooks).startswith(f"{hooks} is a mig-parted hooks file (hooks:), not a MIG "
                                                  "configuration; config_file needs the file with 'mig-configs'")
    assert "is empty; a mig-parted configuration file starts with 'version: v1'" in refused("# nothing\n")
    assert "not the string 'all-balanced'" in refused("all-balanced\n")
    manifest = read("mig-parted_deployments_container_nvidia-mig-manager-example.yaml.txt")
    configmap = next(doc for doc in manifest.split("\n---\n") if "kind: ConfigMap" in doc and "mig-configs" in doc)
    twice = manifest + "\n---\n" + configmap.replace("name: mig-parted-config", "name: other-config")
    assert refused(twice) == ("config.yaml holds 2 mig-parted configurations (config.yaml (ConfigMap mig-parted-config, "
                              "data.config.yaml); config.yaml (ConfigMap other-config, data.config.yaml)); give a file "
                              "with one")
    deployment = manifest.split("\n---\n")[1]
    assert "holds 2 YAML documents and none is a mig-parted configuration" in refused(deployment + "\n---\n" + deployment)


def test_unknown_config_name_lists_the_names():
    spec = _mig_config.load_text(read(DEFAULT), DEFAULT)
    with pytest.raises(_mig_config.ConfigError) as err:
        _mig_config.select_config(spec, "all-1g.10gb-me", DEFAULT)
    message = str(err.value)
    assert message.startswith(f"{DEFAULT} has no configuration 'all-1g.10gb-me' (did you mean 'all-1g.10gb.me'")
    assert "; it has: all-1g.10gb, all-1g.10gb.me, " in message and message.endswith(", all-disabled, all-enabled")


def test_configmap_as_kubectl_json_and_configmaps_without_a_config():
    """kubectl get configmap -o json (the file is then a JSON string: lines count within it)."""
    configmap = yaml.safe_load(read(CONFIGMAP))
    assert len(_mig_config.load_text(json.dumps(configmap, indent=2), "cm.json")) == len(
        _mig_config.load_text(read(CONFIGMAP), CONFIGMAP))
    configmap["data"]["config.yaml"] = configmap["data"]["config.yaml"].replace('"1g.5gb": 7', '"1g.5gb": x')
    assert refused(json.dumps(configmap), "cm.json").startswith(
        "cm.json (ConfigMap default-mig-parted-config, data.config.yaml; lines counted within that value): "
        "mig-configs.all-1g.5gb[0] (line ")
    configmap["data"] = {"config.yaml": "version: v1\nmig-config: {}\n"}
    assert "unexpected field 'mig-config' (did you mean 'mig-configs'?)" in refused(json.dumps(configmap))
    configmap["data"] = {"clients.yaml": "version: v1\nsystemd-services: []\n"}
    assert refused(json.dumps(configmap)) == (
        "config.yaml: no mig-parted configuration in ConfigMap default-mig-parted-config (data keys: clients.yaml); "
        "mig-manager reads data.config.yaml, a mig-parted file (version: v1, mig-configs)")


# ---- issue 14: what mig-parted reads, read the same way

TAB_JSON = ('{\n\t"version": "v1",\n\t"mig-configs": {\n\t\t"all-1g": [{\n\t\t\t"devices":\t"all",\n'
            '\t\t\t"mig-enabled": true,\n\t\t\t"mig-devices": {"1g.5gb": 7},\n\t\t}]\n\t}\n}\n')


def test_tab_indented_json_is_read():
    spec = _mig_config.load_text(TAB_JSON, "config.json")
    assert spec == {"all-1g": [{"devices": "all", "device_filter": [], "mig_enabled": True,
                                "mig_devices": {"1g.5gb": 7}}]}


def test_tab_in_a_quoted_string_is_kept():
    text = '{\n\t"version": "v1",\n\t"mig-configs": {"a\tb": [{"devices": "all", "mig-enabled": false}]}\n}\n'
    assert list(_mig_config.load_text(text, "config.json")) == ["a\tb"]


def test_tabs_in_block_yaml_still_refused_with_the_hint():
    text = "version: v1\nmig-configs:\n\tall-disabled:\n\t\t- devices: all\n"
    with pytest.raises(_mig_config.ConfigError) as err:
        _mig_config.load_text(text, "config.yaml")
    assert "config.yaml, line 3, column 1: not valid YAML" in str(err.value)
    assert "YAML indents with spaces, never tabs" in str(err.value)


def test_zero_subsystem_filter_matches_boards_without_one():
    entry = _mig_config.normalize_entry({"devices": "all", "mig-enabled": False,
                                         "device-filter": "0x25B610DE:0x00000000"}, "e")
    gpu = {"index": 0, "uuid": "GPU-0", "name": "NVIDIA A16", "pci_device_id": "0x25B610DE"}
    assert _mig_config.entry_selects(entry, gpu)
    assert not _mig_config.entry_selects(entry, dict(gpu, pci_subsystem_id="0x14A910DE"))


@pytest.mark.parametrize("value,message", [
    ("0x00000000", "each part must be a 32-bit id like 0x20B010DE (the device id non-zero"),
    ("0x25B610DE:0x14A910DE:extra", "expected <devicevendor> or <devicevendor>:<subsystem>"),
])
def test_filter_refusals_kept(value, message):
    with pytest.raises(_mig_config.ConfigError) as err:
        _mig_config.normalize_entry({"devices": "all", "mig-enabled": False, "device-filter": value}, "e")
    assert f"device-filter {value!r}" in str(err.value) and message in str(err.value)


def test_model_name_filters_warn_for_mig_parted():
    entries = _mig_config.normalize_entries(
        [{"devices": "all", "mig-enabled": False, "device-filter": ["A100-SXM4-40GB", "0x20B010DE"]},
         {"devices": "all", "mig-enabled": False, "device-filter": "Some Future GPU"}], "e")
    warnings = _mig_config.mig_parted_warnings(entries)
    assert len(warnings) == 2
    assert warnings[0].startswith("device-filter 'A100-SXM4-40GB' is a model name")
    assert 'write the PCI id (for NVIDIA A100-SXM4-40GB: "0x20B010DE")' in warnings[0]
    assert "match device-filter only as a PCI device id and skip this entry" in warnings[1]
    assert warnings[1].endswith("write the PCI id")
    assert _mig_config.mig_parted_warnings(_mig_config.normalize_entries(
        [{"devices": "all", "mig-enabled": False, "device-filter": "0x20B010DE"}], "e")) == []
