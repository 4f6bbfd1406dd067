"""gridd.conf editing, validation and license summaries (plugins/module_utils/_gridd.py)."""

from __future__ import annotations

import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as s

from ansible_collections.gpuops.sharing.plugins.module_utils import _gridd

FIXTURES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures", "gridd")


def fixture(name: str, crlf: bool = False) -> str:
    with open(os.path.join(FIXTURES, name), encoding="utf-8", newline="") as fh:
        text = fh.read()
    return text.replace("\n", "\r\n") if crlf else text


FILES = [("template.conf", False), ("field_legacy.conf", False), ("field_nls.conf", False),
         ("field_windows.conf", True)]


def plan(text, **desired):
    remove = desired.pop("remove", [])
    wanted, removed = _gridd.desired_from_params({**desired, "remove": remove})
    return _gridd.plan(text, wanted, removed)


def unmanaged(text: str) -> list[str]:
    """Every line that is not an active managed key, byte for byte."""
    return [line.raw for line in _gridd.parse(text)
            if line.key is None or line.key.lower() not in _gridd.OPTION_BY_KEY]


def same_unmanaged(old: str, new: str) -> bool:
    """Unmanaged lines are equal; the one allowed difference is the line ending given to a last line
    that had none when a key is appended after it."""
    if unmanaged(new) == unmanaged(old):
        return True
    return not old.endswith(("\n", "\r")) and unmanaged(new) == unmanaged(old + "\n")


# --------------------------------------------------------------------------- round trips

@pytest.mark.parametrize(("name", "crlf"), FILES)
def test_no_options_changes_nothing(name, crlf):
    text = fixture(name, crlf)
    new, changes = plan(text)
    assert new == text
    assert changes == [] or name == "field_nls.conf"   # the NLS file repeats FeatureType: see below


@pytest.mark.parametrize(("name", "crlf"), FILES)
def test_managed_edit_keeps_every_other_byte(name, crlf):
    text = fixture(name, crlf)
    new, changes = plan(text, server_address="dls.example.com", feature_type=1, linger_interval=5)
    assert same_unmanaged(text, new)
    view = _gridd.config_view(new)
    assert view["server_address"] == "dls.example.com" and view["feature_type"] == 1 and view["linger_interval"] == 5
    params = {"server_address": "dls.example.com", "feature_type": 1, "linger_interval": 5}
    again, more = _gridd.plan(new, *_gridd.desired_from_params(params))
    assert again == new and more == []
    if crlf:
        assert "\n" not in new.replace("\r\n", "")


def test_template_values_are_edited_in_place_and_new_keys_go_under_their_example():
    text = fixture("template.conf")
    new, changes = plan(text, server_address="10.0.0.5", backup_server_address="10.0.0.6", feature_type="vgpu",
                        enable_ui=True)
    lines = new.splitlines()
    assert lines[lines.index("ServerAddress=10.0.0.5") - 1] == '# Format:  "<address>"'
    assert lines[lines.index("BackupServerAddress=10.0.0.6") - 1] == "#BackupServerAddress="
    assert lines[lines.index("EnableUI=TRUE") - 1] == "#EnableUI=TRUE"
    assert "FeatureType=1" in lines and "FeatureType=0" not in lines
    assert len(lines) == len(text.splitlines()) + 2
    assert [(c[0], c[1], c[2]) for c in changes] == [
        ("server_address", None, "10.0.0.5"), ("backup_server_address", None, "10.0.0.6"),
        ("feature_type", 0, 1), ("enable_ui", None, True)]


def test_equal_values_in_other_spellings_are_not_changes():
    text = fixture("field_legacy.conf")
    new, changes = plan(text, server_address="10.103.15.200", server_port=7070, feature_type=4, enable_ui=True,
                        license_interval="1440")
    assert new == text and changes == []


def test_missing_final_newline_is_kept_and_appended_keys_get_one():
    text = fixture("field_legacy.conf")
    assert not text.endswith("\n")
    new, _changes = plan(text, proxy_server_address="proxy.example.com", proxy_server_port=3128)
    assert new.startswith(text + "\n")
    assert new.endswith("ProxyServerAddress=proxy.example.com\nProxyServerPort=3128\n")


def test_duplicate_active_lines_are_collapsed():
    text = fixture("field_nls.conf")
    new, changes = plan(text, feature_type=1)
    assert new.count("FeatureType=1") == 1 and changes == [(None, None, None)]
    assert plan(new, feature_type=1) == (new, [])


def test_remove_deletes_active_lines_only():
    text = fixture("field_legacy.conf")
    new, changes = plan(text, remove=["server_address", "server_port", "backup_server_address",
                                      "backup_server_port"])
    assert "ServerAddress" not in new.replace("# Description: Set License Server Address", "") \
        .replace("# Description: Set Backup License Server Address", "")
    assert "#BackupServerPort=" in new
    assert {c[0] for c in changes} == {"server_address", "server_port", "backup_server_address"}
    assert plan(new, remove=["server_address"]) == (new, [])


def test_remove_leaves_empty_template_keys_alone():
    text = fixture("template.conf")
    assert plan(text, remove=["server_address", "server_port"]) == (text, [])


def test_invalid_current_value_is_rewritten():
    new, changes = plan("ServerPort=seventy\n", server_port=7070)
    assert new == "ServerPort=7070\n"
    assert changes == [("server_port", ("invalid", "seventy"), 7070)]


def test_lowercase_key_is_replaced_not_duplicated():
    new, _changes = plan("featuretype=2\n", feature_type=1)
    assert new == "FeatureType=1\n"


def test_absent_file_gets_the_template_layout():
    new, changes = plan(None, feature_type=1)
    assert "#BackupServerAddress=" in new and "FeatureType=1" in new and "FeatureType=0" not in new
    assert changes == [("feature_type", 0, 1)]
    assert plan(new, feature_type=1) == (new, [])


def test_absent_file_without_options_is_still_created():
    new, changes = plan(None)
    assert new == _gridd.render_template() and changes == [(None, None, None)]


# --------------------------------------------------------------------------- bad values

BAD = [
    ({"server_address": "lic.example.com\nFeatureType=2"},
     "server_address='lic.example.com\\nFeatureType=2' contains a newline"),
    ({"server_address": "a=b"}, "server_address='a=b' contains '='"),
    ({"server_address": "lic#1"}, "server_address='lic#1' contains '#'"),
    ({"server_address": "https://lic.example.com"}, "is not a host name or IP address (no scheme, port or path"),
    ({"server_address": "lic.example.com:7070"}, "the port has its own option"),
    ({"server_address": "-lic.example.com"}, "server_address='-lic.example.com' is not a valid host name"),
    ({"server_address": "a" * 64 + ".example.com"}, "1 to 63 characters each"),
    ({"server_address": "10.0.0.256"}, "server_address='10.0.0.256' is not a valid host name"),
    ({"server_address": ""}, "server_address is empty; to take the key out of gridd.conf list it in remove"),
    ({"server_address": " lic"}, "has leading or trailing spaces"),
    ({"server_port": 0}, "server_port=0 is out of range: it must be between 1 and 65535 (a TCP port)"),
    ({"server_port": 65536}, "server_port=65536 is out of range"),
    ({"backup_server_port": "70x"}, "backup_server_port='70x' is not a whole number between 1 and 65535"),
    ({"proxy_server_port": True}, "proxy_server_port=True is not a whole number"),
    ({"feature_type": 3}, "feature_type=3 is reserved by NVIDIA"),
    ({"feature_type": "grid"}, "feature_type='grid' is not a FeatureType; valid values: 0 (unlicensed state"),
    ({"feature_type": True}, "feature_type=True is not a FeatureType"),
    ({"enable_ui": "maybe"}, "enable_ui='maybe' is not a boolean (true or false)"),
    ({"license_interval": 5}, "license_interval=5 is out of range: it must be between 10 and 10080 minutes"),
    ({"linger_interval": 10081}, "linger_interval=10081 is out of range: it must be between 0 and 10080 minutes"),
    ({"client_config_token_path": "etc/tokens"}, "client_config_token_path='etc/tokens' is not an absolute path"),
    ({"client_config_token_path": "/etc/my tokens"}, "contains white space"),
    ({"proxy_user_name": 'admin"'}, "proxy_user_name='admin\"' contains a double quote"),
    ({"proxy_user_name": "adm\x07in"}, "contains a control character"),
    ({"server_address": "a.example.com", "remove": ["server_address"]},
     "server_address is both set (to 'a.example.com') and listed in remove"),
    ({"server_port": 7070, "remove": ["server_address"]}, "server_port is set but server_address is listed in remove"),
    ({"remove": ["ServerAddress"]}, "remove lists 'ServerAddress', which gridd.conf has no managed key for"),
]


@pytest.mark.parametrize(("params", "message"), BAD)
def test_bad_values_are_refused_with_the_option_and_value(params, message):
    with pytest.raises(_gridd.GriddError) as err:
        _gridd.desired_from_params(params)
    assert message in str(err.value)


def test_feature_type_error_lists_every_valid_value():
    with pytest.raises(_gridd.GriddError) as err:
        _gridd.validate_feature_type(5)
    for code in ("0 (", "1 (NVIDIA vGPU", "2 (NVIDIA RTX Virtual Workstation", "4 (NVIDIA Virtual Compute Server"):
        assert code in str(err.value)


@pytest.mark.parametrize(("value", "code"), [(0, 0), ("1", 1), ("vgpu", 1), ("RTX_VWS", 2), ("vws", 2), (4, 4),
                                             ("vcs", 4), ("unlicensed", 0)])
def test_feature_type_names_and_numbers(value, code):
    assert _gridd.validate_feature_type(value) == code


@pytest.mark.parametrize("host", ["license.example.com", "10.0.0.5", "fd00::5", "[fd00::5]", "LIC-1.Example.COM",
                                  "dls", "dls.example.com."])
def test_good_hosts(host):
    assert _gridd.validate_host("server_address", host)


@pytest.mark.parametrize("name", ["../x.tok", "a/b.tok", "a\\b.tok", ".hidden.tok", "token.txt", "", "x..tok",
                                  "tok en.tok"])
def test_bad_token_names(name):
    with pytest.raises(_gridd.GriddError) as err:
        _gridd.validate_token_name(name)
    assert "must be a plain file name ending in .tok" in str(err.value)


def test_token_content_errors_never_contain_the_token():
    secret = "eyJhbGciOi.SECRET-PART" + "x" * 70000
    with pytest.raises(_gridd.GriddError) as err:
        _gridd.validate_token_content(secret)
    assert "SECRET" not in str(err.value) and "70022 bytes" in str(err.value)
    with pytest.raises(_gridd.GriddError) as err:
        _gridd.validate_token_content("SECRET\x00")
    assert "SECRET" not in str(err.value)
    with pytest.raises(_gridd.GriddError, match="token_content is empty"):
        _gridd.validate_token_content("  \n")


# --------------------------------------------------------------------------- property: plan is a fixed point

_values = {
    "server_address": s.sampled_from(["a.example.com", "10.1.2.3", "fd00::1"]),
    "server_port": s.integers(1, 65535),
    "feature_type": s.sampled_from([0, 1, 2, 4]),
    "enable_ui": s.booleans(),
    "license_interval": s.integers(10, 10080),
    "linger_interval": s.integers(0, 10080),
    "proxy_user_name": s.sampled_from(["DOMAIN\\user", "svc-gridd"]),
}


@settings(max_examples=60, deadline=None)
@given(name=s.sampled_from([f[0] for f in FILES]),
       chosen=s.dictionaries(s.sampled_from(sorted(_values)), s.just(None), max_size=5),
       data=s.data())
def test_plan_reaches_the_target_and_then_does_nothing(name, chosen, data):
    text = fixture(name)
    desired = {k: data.draw(_values[k]) for k in chosen}
    wanted, removed = _gridd.desired_from_params(desired)
    new, _changes = _gridd.plan(text, wanted, removed)
    assert same_unmanaged(text, new)
    view = _gridd.config_view(new)
    for option, value in wanted.items():
        assert view[option] == value
    assert _gridd.plan(new, wanted, removed) == (new, [])


# --------------------------------------------------------------------------- license readings

SMI = """
==============NVSMI LOG==============

Driver Version                            : 510.47.03

Attached GPUs                             : 1
GPU 00000000:02:01.0
    Product Name                          : GRID A100-4C
    Product Brand                         : NVIDIA Virtual Compute Server
    GPU UUID                              : GPU-62f13b27-1eda-11b2-a8b5-0869ebe25264
    GPU Virtualization Mode
        Virtualization Mode               : VGPU
        Host VGPU Mode                    : N/A
    vGPU Software Licensed Product
        Product Name                      : NVIDIA Virtual Compute Server
        License Status                    : Licensed (Expiry: 2022-5-27 0:8:28 GMT)
"""


def test_nvidia_smi_license_section_is_read():
    gpus = _gridd.parse_smi_query(SMI)
    assert gpus == [{"index": 0, "name": "GRID A100-4C", "uuid": "GPU-62f13b27-1eda-11b2-a8b5-0869ebe25264",
                     "virtualization_mode": "vgpu", "license_supported": True, "licensed": True,
                     "feature": "NVIDIA Virtual Compute Server", "feature_code": None,
                     "expiry": "2022-05-27T00:08:28Z"}]
    unlicensed = _gridd.parse_smi_query(SMI.replace("Licensed (Expiry: 2022-5-27 0:8:28 GMT)",
                                                    "Unlicensed (Restricted)"))
    assert unlicensed[0]["licensed"] is False and unlicensed[0]["expiry"] is None


def test_summary_needs_every_licensable_gpu():
    a = {"index": 0, "name": "GRID A100-4C", "license_supported": True, "licensed": True, "feature": "vCS"}
    b = {"index": 1, "name": "GRID A100-4C", "license_supported": True, "licensed": False, "feature": "vCS"}
    assert _gridd.summarize([a], "nvml")["state"] == "licensed"
    both = _gridd.summarize([a, b], "nvml")
    assert both["state"] == "unlicensed" and "GPU 1 (GRID A100-4C) is unlicensed" in _gridd.unlicensed_reason(both)
    assert _gridd.summarize([{"index": 0, "license_supported": False}], "nvml")["state"] == "unknown"


@pytest.mark.parametrize(("expiry", "text"), [
    ({"year": 2025, "month": 4, "day": 22, "hour": 11, "min": 18, "sec": 43, "status": 2}, "2025-04-22T11:18:43Z"),
    ({"year": 0, "month": 0, "day": 0, "hour": 0, "min": 0, "sec": 0, "status": 4}, "permanent"),
    ({"year": 0, "month": 0, "day": 0, "hour": 0, "min": 0, "sec": 0, "status": 0}, None),
])
def test_expiry(expiry, text):
    assert _gridd.expiry_text(expiry) == text


@pytest.mark.parametrize(("feature_type", "modes", "expected"), [
    (1, ["vgpu"], []),
    (2, ["vgpu"], ["documented for physical GPUs"]),
    (4, ["vgpu"], ["documented for physical GPUs"]),
    (1, ["none"], ["no GPU of this host is a vGPU"]),
    (0, ["vgpu"], ["requests no license"]),
    (2, ["passthrough"], []),
    (1, [], []),
])
def test_feature_type_warnings(feature_type, modes, expected):
    warnings = _gridd.feature_type_warnings(feature_type, modes)
    assert len(warnings) == len(expected)
    for warning, text in zip(warnings, expected):
        assert text in warning
