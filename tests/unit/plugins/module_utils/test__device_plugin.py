"""_device_plugin: the k8s-device-plugin's config rules and error texts (pure, no GPU)."""

from __future__ import annotations

import copy
import os

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from ansible_collections.gpuops.sharing.plugins.module_utils import _device_plugin as dp

FIXTURES = os.path.join(os.path.dirname(__file__), "fixtures", "device_plugin")
EXAMPLES = sorted(f for f in os.listdir(FIXTURES) if f.endswith(".yaml.txt") and "template" not in f)
TEMPLATES = sorted(f for f in os.listdir(FIXTURES) if f.endswith(".yaml.txt") and "template" in f)


def load(name: str):
    with open(os.path.join(FIXTURES, name), encoding="utf-8") as fh:
        return yaml.safe_load(fh)


def ts(*resources, **extra) -> dict:
    return {"version": "v1", "sharing": {"timeSlicing": {"resources": list(resources), **extra}}}


def mps(*resources, **extra) -> dict:
    return {"version": "v1", "flags": {"mpsRoot": "/run/nvidia/mps"},
            "sharing": {"mps": {"resources": list(resources), **extra}}}


GPU4 = {"name": "nvidia.com/gpu", "replicas": 4}


# ------------------------------------------------------------------ NVIDIA's own examples

@pytest.mark.parametrize("name", EXAMPLES)
def test_every_example_config_of_the_plugin_is_accepted(name):
    config, warnings = dp.validate(load(name))
    assert config["version"] == "v1"
    assert not [w for w in warnings if "unknown key" in w]
    # the normalised config is a fixed point, and what is written reads back to it
    assert dp.validate(copy.deepcopy(config))[0] == config
    assert dp.validate(yaml.safe_load(dp.render(config)))[0] == config


@pytest.mark.parametrize("name", TEMPLATES)
def test_the_readme_templates_with_placeholders_are_refused(name):
    with pytest.raises(dp.ConfigError, match=r"renameByDefault='<bool>'.*cannot unmarshal string into Go value of type bool"):
        dp.validate(load(name))


def test_readme_resource_names_and_counts():
    # README: "applied to a node with 8 GPUs ... advertise 80 nvidia.com/gpu.shared"
    config, _warnings = dp.validate(load("readme-L437.yaml.txt"))
    gpus = [{"index": i, "name": "NVIDIA A100", "uuid": f"GPU-{i}", "mig_enabled": False, "mig_devices": [],
             "memory_total_mib": 40960, "cuda_compute_capability": "8.0"} for i in range(8)]
    resources, _warnings = dp.advertised(config, gpus)
    assert resources == [{"name": "nvidia.com/gpu.shared", "count": 80, "replicas": 10, "shares": "nvidia.com/gpu"}]
    plain, _warnings = dp.advertised(dp.validate(load("readme-L413.yaml.txt"))[0], gpus)
    assert [(r["name"], r["count"]) for r in plain] == [("nvidia.com/gpu", 80)]


# ------------------------------------------------------------------ the plugin's rules, its texts

@pytest.mark.parametrize(("config", "text"), [
    ({"version": "v2"}, "unknown version: v2"),
    ({"version": 1}, "unknown version: 1"),                      # sigs.k8s.io/yaml turns 1 into "1"
    ({"version": True}, "unknown version: true"),
    ({"flags": {"migStrategy": "all"}}, "unknown MIG strategy: all"),
    ({"flags": {"plugin": {"deviceListStrategy": ["envvar", "cdi"]}}},
     "invalid --device-list-strategy option: invalid strategy: cdi"),
    ({"flags": {"plugin": {"deviceIDStrategy": "serial"}}}, "invalid --device-id-strategy option: serial"),
    ({"flags": {"plugin": {"sharedDevicesAllocationPolicy": "spread"}}},
     "invalid --shared-devices-allocation-policy option: spread"),
    ({"flags": {"deviceDiscoveryStrategy": "pci"}}, "invalid --device-discovery-strategy option pci"),
    ({"flags": {"failOnInitError": "yes"}},
     "json: cannot unmarshal string into Go struct field Flags.flags.failOnInitError of type bool"),
    # no string conversion under flags (sigs.k8s.io/yaml misses the embedded CommandLineFlags)
    ({"flags": {"migStrategy": True}}, "json: cannot unmarshal bool into Go struct field Flags.flags.migStrategy of "
                                       "type string"),
    ({"flags": "mixed"}, "json: cannot unmarshal string into Go struct field Config.flags of type v1.Flags"),
    ({"flags": {"plugin": {"deviceListStrategy": 3}}}, "invalid deviceListStrategy: 3"),
    ({"sharing": ["mps"]}, "json: cannot unmarshal array into Go struct field Config.sharing of type v1.Sharing"),
    ({"imex": {"channelIDs": ["0"]}},
     "json: cannot unmarshal string into Go struct field Imex.imex.channelIDs of type int"),
    ({"sharing": {"timeSlicing": "gpu"}}, "json: cannot unmarshal string into Go value of type "
                                          "map[string]json.RawMessage"),
    ({"sharing": {"timeSlicing": {"resources": {"name": "gpu"}}}},
     "json: cannot unmarshal object into Go value of type []v1.ReplicatedResource"),
    ({"sharing": {"timeSlicing": {"resources": ["gpu"]}}},
     "json: cannot unmarshal string into Go value of type map[string]json.RawMessage"),
    (ts(GPU4, renameByDefault="yes"), "json: cannot unmarshal string into Go value of type bool"),
    (ts({"name": "gpu", "replicas": 2, "devices": None}),
     "devices set as '' but the only valid string input is 'all'"),
    (ts({"name": "gpu", "replicas": 2, "devices": True}), "unrecognized type for devices spec: true"),
    ({"imex": {"channelIDs": [1]}}, "invalid IMEX channel IDs: invalid IMEX config: channelIDs must be [] or [0]; "
                                    "found [1]"),
    ({"sharing": {"timeSlicing": {}}}, "no resources specified"),
    ({"sharing": {"timeSlicing": None}}, "no resources specified"),
    (ts(), "no resources specified"),
    (ts({"replicas": 2}), "no resource name specified"),
    (ts({"name": "gpu"}), "no replicas specified"),
    (ts({"name": "gpu", "replicas": 1}), "number of replicas must be >= 2"),
    (ts({"name": "gpu", "replicas": 0}), "number of replicas must be >= 2"),
    (ts({"name": "gpu", "replicas": -1}), "number of replicas must be >= 2"),
    (ts({"name": "gpu", "replicas": None}), "number of replicas must be >= 2"),
    (ts({"name": "gpu", "replicas": "4"}), "json: cannot unmarshal string into Go value of type int"),
    (ts({"name": "gpu", "replicas": 2.5}), "json: cannot unmarshal number 2.5 into Go value of type int"),
    (ts({"name": 7, "replicas": 2}), "json: cannot unmarshal number into Go value of type string"),
    (ts({"name": "$invalid$", "replicas": 2}),
     "incorrect format for resource name 'nvidia.com/$invalid$': [a lowercase RFC 1123 subdomain must consist of lower case"),
    (ts({"name": "GPU", "replicas": 2}), "incorrect format for resource name 'nvidia.com/GPU'"),
    (ts({"name": "example.com/gpu", "replicas": 2}), "incorrect format for resource name 'nvidia.com/example.com/gpu'"),
    (ts({"name": "g" * 53, "replicas": 2}), "fully-qualified resource name must be 63 characters or less: "
                                            "nvidia.com/" + "g" * 53),
    (ts({"name": "valid", "replicas": 2, "rename": "$invalid$"}), "incorrect format for resource name"),
    (ts({"name": "gpu", "replicas": 2, "devices": "not-all"}),
     "devices set as 'not-all' but the only valid string input is 'all'"),
    (ts({"name": "gpu", "replicas": 2, "devices": -2}), "devices set as '-2' but a count of devices must be > 0"),
    (ts({"name": "gpu", "replicas": 2, "devices": 0}), "devices set as '0' but a count of devices must be > 0"),
    (ts({"name": "gpu", "replicas": 2, "devices": [-1]}), "unsupported type for device in devices list: , string"),
    (ts({"name": "gpu", "replicas": 2, "devices": ["-1"]}), "unsupported type for device in devices list: -1, string"),
    (ts({"name": "gpu", "replicas": 2, "devices": ["invalid-UUID"]}),
     "unsupported type for device in devices list: invalid-UUID, string"),
    (ts({"name": "gpu", "replicas": 2, "devices": ["GPU-UUID"]}), "devices list: GPU-UUID, string"),
    (ts({"name": "gpu", "replicas": 2, "devices": ["MIG-UUID"]}), "devices list: MIG-UUID, string"),
    (ts({"name": "gpu", "replicas": 2, "devices": ["MIG-GPU-4cf8db2d-06c0-7d70-1a51-e59b25b2c16c"]}),
     "devices list: MIG-GPU-4cf8db2d-06c0-7d70-1a51-e59b25b2c16c, string"),
    (ts({"name": "gpu", "replicas": 2, "devices": {"a": 1}}), 'unrecognized type for devices spec: {"a":1}'),
    (ts({"name": "gpu", "replicas": 2, "devices": 2.5}), "unrecognized type for devices spec: 2.5"),
    ({"flags": {"migStrategy": "mixed"}, "sharing": {"mps": {"resources": [GPU4]}}},
     "using --mig-strategy=mixed is not supported with MPS"),
    (mps({"name": "gpu", "replicas": 49}),
     "invalid MPS configuration: invalid device maximum allowed replicas exceeded: 49 > 48"),
])
def test_refused_with_the_plugins_text(config, text):
    with pytest.raises(dp.ConfigError) as exc:
        dp.validate(config)
    message = str(exc.value)
    assert text in message
    assert "device plugin refuses it" in message
    assert dp.PLUGIN_COMMIT[:12] in message


@pytest.mark.parametrize("devices", [
    "all", 2, 2.0, [0], ["0"], ["0:0"], ["GPU-4cf8db2d-06c0-7d70-1a51-e59b25b2c16c"],
    ["MIG-4cf8db2d-06c0-7d70-1a51-e59b25b2c16c"], ["MIG-GPU-4cf8db2d-06c0-7d70-1a51-e59b25b2c16c/0/0"],
    [0, "0:0", "GPU-4cf8db2d-06c0-7d70-1a51-e59b25b2c16c"], [], [None],
])
def test_device_forms_the_plugin_takes(devices):
    # replicas_test.go TestUnmarshalReplicatedDevices' accepted inputs; the plugin then ignores them
    config, warnings = dp.validate(ts({"name": "gpu", "replicas": 2, "devices": devices}))
    assert "devices" in config["sharing"]["timeSlicing"]["resources"][0]
    assert any("Customizing the 'devices' field" in w for w in warnings) == (devices != "all")


@pytest.mark.parametrize(("ref", "kind"), [
    ("0", "gpu"), ("12", "gpu"), ("0:0", "mig"), ("3:10", "mig"),
    ("GPU-4cf8db2d-06c0-7d70-1a51-e59b25b2c16c", "uuid"), ("MIG-3eb87630-93d5-b2b6-b8ff-9b359caf4ee2", "uuid"),
    ("MIG-GPU-662077db-fa3f-0d8f-9502-21ab0ef058a2/10/0", "uuid"),
    ("-1", None), ("0:", None), (":0", None), ("0:0:0", None), ("GPU-xyz", None), ("gpu0", None),
])
def test_device_references(ref, kind):
    # replicas_test.go TestReplicatedDeviceRef
    assert dp.is_gpu_index(ref) == (kind == "gpu")
    assert dp.is_mig_index(ref) == (kind == "mig")
    assert (dp.is_gpu_uuid(ref) or dp.is_mig_uuid(ref)) == (kind == "uuid")


def test_defaults_the_plugin_applies_are_written_out():
    config, _warnings = dp.validate({"sharing": {"timeSlicing": {"resources": [{"name": "gpu", "replicas": 2.0}]}}})
    assert config == {"version": "v1", "flags": {"migStrategy": "none"},
                      "sharing": {"timeSlicing": {"renameByDefault": False, "failRequestsGreaterThanOne": False,
                                                  "resources": [{"name": "nvidia.com/gpu", "replicas": 2}]}}}
    relaxed, _warnings = dp.validate(load("config-test-mps-relaxed.yaml.txt"))
    assert relaxed["sharing"]["mps"]["failRequestsGreaterThanOne"] is False
    strict, _warnings = dp.validate(load("config-test-mps-default.yaml.txt"))
    assert strict["sharing"]["mps"]["failRequestsGreaterThanOne"] is True


def test_mps_null_is_no_mps():
    config, _warnings = dp.validate({"sharing": {"mps": None}})
    assert "sharing" not in config and dp.strategy(config) == "none"


def test_plugin_warnings_for_ignored_fields():
    _config, warnings = dp.validate({"resources": {"gpus": [{"pattern": "*", "name": "gpu"}]},
                                     **ts({"name": "gpu", "replicas": 2, "rename": "gpu-shared"})})
    assert any("Customizing the 'resources' field is not yet supported" in w for w in warnings)
    assert any("Setting the 'rename' field in sharing.timeSlicing.resources is not yet supported" in w
               for w in warnings)
    # renameByDefault with the default rename is what the plugin sets itself: no warning
    _config, warnings = dp.validate(ts({"name": "gpu", "replicas": 2, "rename": "nvidia.com/gpu.shared"},
                                       renameByDefault=True))
    assert not warnings


def test_mps_without_root_warns():
    _config, warnings = dp.validate({"sharing": {"mps": {"resources": [GPU4]}}})
    assert any("using MPS requires --mps-root to be specified" in w for w in warnings)
    assert not dp.validate(mps(GPU4))[1]


# ------------------------------------------------------------------ what this collection adds

def test_unknown_keys_are_warned_about_and_dropped():
    config, warnings = dp.validate({"version": "v1", "sharnig": {}, "flags": {"migStrategie": "mixed"},
                                    **{"sharing": {"timeSlicing": {"resources": [GPU4], "renameByDefaults": True}}}})
    assert "sharnig" not in config and "migStrategie" not in config["flags"]
    assert config["flags"]["migStrategy"] == "none"
    assert len([w for w in warnings if "unknown key, which the device plugin ignores silently" in w]) == 3
    assert any("sharing.timeSlicing.renameByDefaults" in w and "did you mean renameByDefault?" in w for w in warnings)


def test_struct_keys_match_case_insensitively_as_encoding_json_does():
    config, warnings = dp.validate({"Version": "v1", "Sharing": {"TimeSlicing": {"resources": [GPU4]}}})
    assert dp.strategy(config) == "time-slicing"
    assert any("case-insensitively to sharing" in w for w in warnings)
    # but the keys the plugin reads through a map are exact
    config, warnings = dp.validate(ts(GPU4, RenameByDefault=True))
    assert config["sharing"]["timeSlicing"]["renameByDefault"] is False
    assert any("did you mean renameByDefault?" in w for w in warnings)


def test_both_sharing_methods_refused():
    with pytest.raises(dp.ConfigError, match="both timeSlicing and mps are given.*would use MPS"):
        dp.validate({"sharing": {"timeSlicing": {"resources": [GPU4]}, "mps": {"resources": [GPU4]}}})


def test_a_resource_given_twice_is_refused():
    with pytest.raises(dp.ConfigError, match=r"resources\[1\].name='nvidia.com/gpu': already given in "):
        dp.validate(ts(GPU4, {"name": "gpu", "replicas": 2}))


def test_mps_resource_other_than_gpu_is_warned_about():
    _config, warnings = dp.validate(mps({"name": "nvidia.com/mig-1g.10gb", "replicas": 2}))
    assert any("only supported resource available for MPS are nvidia.com/gpu" in w for w in warnings)


def test_bounded_input():
    with pytest.raises(dp.ConfigError, match="at most 64 are taken"):
        dp.validate(ts(*[{"name": f"r{i}", "replicas": 2} for i in range(65)]))


def test_not_a_mapping():
    with pytest.raises(dp.ConfigError, match="is a mapping"):
        dp.validate(["version", "v1"])


# ------------------------------------------------------------------ the node

def gpu(index=0, name="NVIDIA H100 80GB HBM3", cc="9.0", mem=81559, mig=None, used=0):
    return {"index": index, "uuid": f"GPU-{index}", "name": name, "cuda_compute_capability": cc,
            "memory_total_mib": mem, "memory_used_mib": used, "mig_enabled": mig is not None,
            "mig_devices": [{"uuid": f"MIG-{index}-{i}", "profile": p} for i, p in enumerate(mig or [])]}


def test_mixed_strategy_names_each_profile():
    config, _warnings = dp.validate({"flags": {"migStrategy": "mixed"}})
    resources, warnings = dp.advertised(config, [gpu(0, mig=["1g.10gb", "1g.10gb", "3g.40gb", "1g.10gb+me"]),
                                                 gpu(1)])
    assert [(r["name"], r["count"]) for r in resources] == [
        ("nvidia.com/gpu", 1), ("nvidia.com/mig-1g.10gb", 2), ("nvidia.com/mig-1g.10gb.me", 1),
        ("nvidia.com/mig-3g.40gb", 1)]
    assert not warnings


def test_mixed_with_time_slicing_of_one_profile():
    config, _warnings = dp.validate({"flags": {"migStrategy": "mixed"},
                                     **ts({"name": "mig-1g.10gb", "replicas": 2}, renameByDefault=True)})
    resources, _warnings = dp.advertised(config, [gpu(0, mig=["1g.10gb"] * 7)])
    assert resources == [{"name": "nvidia.com/mig-1g.10gb.shared", "count": 14, "replicas": 2,
                          "shares": "nvidia.com/mig-1g.10gb"}]


def test_mixed_refuses_partial_compute_instances():
    config, _warnings = dp.validate({"flags": {"migStrategy": "mixed"}})
    with pytest.raises(dp.ConfigError, match="MIG profile '1c.3g.40gb' does not match any resource patterns"):
        dp.advertised(config, [gpu(0, mig=["1c.3g.40gb"])])


def test_single_strategy_rules():
    config, _warnings = dp.validate({"flags": {"migStrategy": "single"}})
    resources, _warnings = dp.advertised(config, [gpu(0, mig=["1g.10gb"] * 7), gpu(1, mig=["1g.10gb"] * 7)])
    assert [(r["name"], r["count"]) for r in resources] == [("nvidia.com/gpu", 14)]
    with pytest.raises(dp.ConfigError, match="more than one MIG device type present on node"):
        dp.advertised(config, [gpu(0, mig=["1g.10gb", "3g.40gb"])])
    with pytest.raises(dp.ConfigError, match="all devices on the node must be configured with the same migEnabled"):
        dp.advertised(config, [gpu(0, mig=["1g.10gb"]), gpu(1)])
    with pytest.raises(dp.ConfigError, match="device 0 has no MIG devices configured"):
        dp.advertised(config, [gpu(0, mig=[])])


def test_none_strategy_advertises_mig_gpus_whole():
    config, _warnings = dp.validate({})
    resources, _warnings = dp.advertised(config, [gpu(0, mig=["1g.10gb"])])
    assert [(r["name"], r["count"]) for r in resources] == [("nvidia.com/gpu", 1)]


def test_shared_resource_the_node_lacks_is_warned_about():
    config, _warnings = dp.validate(ts({"name": "mig-1g.10gb", "replicas": 2}))
    _resources, warnings = dp.advertised(config, [gpu(0)])
    assert any("the node has no such resource (it has: nvidia.com/gpu); the device plugin skips it" in w
               for w in warnings)
    _resources, warnings = dp.advertised(config, None)      # no NVML: a mig-* name never matches under none
    assert any("no such resource" in w for w in warnings)


@pytest.mark.parametrize(("cc", "replicas", "refused"), [
    ("7.0", 16, False), ("7.0", 17, True), ("7.5", 48, False), ("9.0", 48, False), ("v7.5", 48, False),
])
def test_mps_client_limit_by_compute_capability(cc, replicas, refused):
    # cmd/mps-control-daemon/mps/device_test.go
    config, _warnings = dp.validate(mps({"name": "gpu", "replicas": replicas}))
    if refused:
        with pytest.raises(dp.ConfigError, match=f"replicas exceeded: {replicas} > 16"):
            dp.check_mps_node(config, [gpu(0, name="Tesla V100-SXM2-32GB", cc=cc, mem=32768)], 0)
    else:
        assert dp.check_mps_node(config, [gpu(0, cc=cc)], 0) == []


def test_mps_on_mig_devices_refused_with_the_plugins_text():
    config, _warnings = dp.validate({"flags": {"migStrategy": "single", "mpsRoot": "/run/nvidia/mps"},
                                     "sharing": {"mps": {"resources": [GPU4]}}})
    with pytest.raises(dp.ConfigError, match="sharing using MPS is not supported for MIG devices"):
        dp.check_mps_node(config, [gpu(0, mig=["1g.10gb"] * 7)], 0)


def test_mps_memory_share():
    config, _warnings = dp.validate(mps({"name": "gpu", "replicas": 20}))
    t4 = gpu(0, name="Tesla T4", cc="7.5", mem=15360)
    assert dp.check_mps_node(config, [t4], 512) == []          # 768 MiB each
    with pytest.raises(dp.ConfigError, match=r"limited to 768 MiB .* below min_replica_memory \(1024 MiB\); give at "
                                             r"most 15 replicas"):
        dp.check_mps_node(config, [t4], 1024)
    busy = dp.check_mps_node(config, [{**t4, "memory_used_mib": 4096}], 512)
    assert busy and "4096 MiB of its memory is in use now" in busy[0]


@given(replicas=st.integers(min_value=2, max_value=48), mem=st.integers(min_value=1024, max_value=200_000),
       minimum=st.integers(min_value=0, max_value=8192))
def test_memory_check_agrees_with_the_plugins_split(replicas, mem, minimum):
    config, _warnings = dp.validate(mps({"name": "gpu", "replicas": replicas}))
    share = mem // replicas
    try:
        dp.check_mps_node(config, [gpu(0, mem=mem)], minimum)
        assert share >= minimum
    except dp.ConfigError as exc:
        assert share < minimum
        suggested = int(str(exc).split("give at most ")[1].split(" ")[0])
        assert suggested <= 1 or mem // suggested >= minimum


# ------------------------------------------------------------------ shortcuts and the file

def test_shortcuts():
    assert dp.from_shortcuts(None, {"replicas": 4, "rename_by_default": True}, None) == {
        "version": "v1", "flags": {"migStrategy": "none"},
        "sharing": {"timeSlicing": {"resources": [{"name": "nvidia.com/gpu", "replicas": 4}],
                                    "renameByDefault": True}}}
    shortcut = {"replicas": 3, "resources": [{"name": "gpu"}, {"name": "x", "replicas": 5}]}
    given_ = dp.from_shortcuts("mixed", None, shortcut)
    assert given_["sharing"]["mps"]["resources"] == [{"name": "gpu", "replicas": 3}, {"name": "x", "replicas": 5}]


@pytest.mark.parametrize("name", EXAMPLES)
def test_render_is_yaml_of_the_config(name):
    config, _warnings = dp.validate(load(name))
    text = dp.render(config)
    assert yaml.safe_load(text) == config
    assert text.startswith("# Managed by gpuops.sharing.device_plugin_config")


def test_a_missing_key_is_named_as_missing():
    with pytest.raises(dp.ConfigError, match=r"^sharing.timeSlicing.resources\[0\].replicas is missing: the device "
                                             r"plugin refuses it \('no replicas specified'"):
        dp.validate(ts({"name": "gpu"}))


def test_time_slicing_resource_other_than_gpu_or_mig_is_warned_about():
    _config, warnings = dp.validate(ts({"name": "valid", "replicas": 2}))
    assert any("only supported resource available for time-slicing are nvidia.com/gpu" in w for w in warnings)
    assert not dp.validate(ts({"name": "mig-1g.5gb", "replicas": 2}))[1]


def test_the_text_does_not_depend_on_the_order_keys_were_given_in():
    # the role validates, then writes the returned config: a second order must give the same bytes
    given = {"sharing": {"mps": {"resources": [{"replicas": 4, "name": "gpu"}], "renameByDefault": True}},
             "flags": {"mpsRoot": "/run/nvidia/mps", "migStrategy": "none"}, "version": "v1"}
    config = dp.validate(given)[0]
    again = dp.validate(dict(reversed(list(config.items()))))[0]
    assert dp.render(config) == dp.render(again) == dp.render(dp.validate(yaml.safe_load(dp.render(config)))[0])
    assert list(config) == ["version", "flags", "sharing"]
    assert list(config["sharing"]["mps"]) == ["renameByDefault", "failRequestsGreaterThanOne", "resources"]
