"""gridd.conf editing, validation and license summaries (plugins/module_utils/_gridd.py)."""

from __future__ import annotations

import difflib
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


# Real-world shapes, each with its source in its first lines.
NAMES = ["template.conf", "field_legacy.conf", "field_nls.conf", "field_windows.conf", "cloud_azure.conf",
         "cloud_aws_vapps.conf", "script_appended.conf", "guide_quoted.conf"]
FILES = [("template.conf", False), ("field_legacy.conf", False), ("field_nls.conf", False),
         ("field_windows.conf", True)]

# How files get mangled on their way to a VM: edited on Windows (CRLF), saved by Notepad (a UTF-8
# byte order mark), written by printf/echo -n or an editor that drops the last newline.  The tree
# holds LF files only (ansible-test sanity rejects CRLF), so the variants are made here.
VARIANTS = {
    "as-is": lambda t: t,
    "crlf": lambda t: t.replace("\n", "\r\n"),
    "bom": lambda t: _gridd.BOM + t,
    "no-final-newline": lambda t: t.rstrip("\n"),
    "bom-crlf-no-final-newline": lambda t: _gridd.BOM + t.rstrip("\n").replace("\n", "\r\n"),
}


def variant(name: str, how: str) -> str:
    return VARIANTS[how](fixture(name))


def changed_lines(old: str, new: str) -> tuple[list[str], list[str]]:
    """(lines only in old, lines only in new), by a line diff that keeps endings."""
    old_lines, new_lines = _gridd.split_lines(old), _gridd.split_lines(new)
    gone, added = [], []
    for tag, i1, i2, j1, j2 in difflib.SequenceMatcher(a=old_lines, b=new_lines, autojunk=False).get_opcodes():
        if tag != "equal":
            gone += old_lines[i1:i2]
            added += new_lines[j1:j2]
    return gone, added


def _managed_only(old: str, new: str, keys: set) -> bool:
    gone, added = changed_lines(old, new)
    for line in gone + added:
        parsed = _gridd.Line(line.lstrip(_gridd.BOM))
        if parsed.key is None or parsed.key.lower() not in keys:
            return False
    return True


def assert_only_managed_lines_differ(old: str, new: str, options) -> None:
    """Every byte outside the active lines of the given options is kept; the one exception is the
    line ending given to a last line that had none when a key is appended after it."""
    keys = {_gridd.KEYS[o][0].lower() for o in options}
    assert new.startswith(_gridd.BOM) == old.startswith(_gridd.BOM)
    eol = _gridd._eol(_gridd.parse(old))
    assert _managed_only(old, new, keys) or (old and not old.endswith("\n") and _managed_only(old + eol, new, keys)), \
        changed_lines(old, new)


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


# --------------------------------------------------------------------------- real-world files, mangled

EDITS = {
    "nls": {"feature_type": 1, "client_config_token_path": "/etc/nvidia/ClientConfigToken"},
    "legacy": {"server_address": "lic.example.com", "server_port": 7070, "backup_server_address": "10.0.0.6",
               "enable_ui": True, "license_interval": 60},
    "proxy": {"proxy_server_address": "proxy.example.com", "proxy_server_port": 3128,
              "proxy_user_name": "CORP\\svc-gridd", "proxy_credentials_file_path": "/etc/nvidia/proxy.cred"},
    "remove": {"remove": ["server_address", "server_port", "feature_type", "enable_ui"]},
}


@pytest.mark.parametrize("how", sorted(VARIANTS))
@pytest.mark.parametrize("name", NAMES)
def test_real_files_round_trip_untouched(name, how):
    text = variant(name, how)
    new, changes = plan(text)
    assert new == text
    assert changes == []


@pytest.mark.parametrize("edit", sorted(EDITS))
@pytest.mark.parametrize("how", sorted(VARIANTS))
@pytest.mark.parametrize("name", NAMES)
def test_real_files_change_only_the_managed_lines(name, how, edit):
    text = variant(name, how)
    params = dict(EDITS[edit])
    wanted, removed = _gridd.desired_from_params(params)
    new, _changes = _gridd.plan(text, wanted, removed)
    assert_only_managed_lines_differ(text, new, list(wanted) + removed)
    view = _gridd.config_view(new)
    for option, value in wanted.items():
        assert view[option] == value
    for option in removed:
        assert option not in view
    assert not _gridd.repeated_keys(new).keys() & {_gridd.KEYS[o][0] for o in list(wanted) + removed}
    if "\r\n" in text:   # a CRLF file stays CRLF, new lines included
        assert "\n" not in new.replace("\r\n", "")
    assert _gridd.plan(new, wanted, removed) == (new, [])   # and then nothing more to do


def test_bom_is_kept_and_not_part_of_the_first_key():
    text = _gridd.BOM + "ServerAddress=lic.example.com\r\nFeatureType=2\r\n"
    assert _gridd.config_view(text) == {"server_address": "lic.example.com", "feature_type": 2}
    new, changes = plan(text, server_address="lic2.example.com", feature_type=2)
    assert new == _gridd.BOM + "ServerAddress=lic2.example.com\r\nFeatureType=2\r\n"
    assert changes == [("server_address", "lic.example.com", "lic2.example.com")]
    assert plan(_gridd.BOM, feature_type=1) == (_gridd.BOM + "FeatureType=1\n", [("feature_type", None, 1)])


def test_no_final_newline_crlf_gets_a_crlf_before_an_appended_key():
    text = "# written on Windows\r\nFeatureType=1"
    new, _changes = plan(text, enable_ui=False)
    assert new == "# written on Windows\r\nFeatureType=1\r\nEnableUI=FALSE\r\n"
    new, _changes = plan(text, feature_type=2)
    assert new == "# written on Windows\r\nFeatureType=2\r\n"
    # the commented example a new key goes under is the last line, without a newline
    new, _changes = plan("# x\r\n#LingerInterval=10", linger_interval=5)
    assert new == "# x\r\n#LingerInterval=10\r\nLingerInterval=5\r\n"


def test_only_newline_ends_a_line():
    """str.splitlines would also split at form feeds and other separators; nvidia-gridd does not."""
    text = "# page\x0cFeatureType=2\nEnableUI=TRUE\x85x\n"
    assert _gridd.config_view(text) == {"enable_ui": ("invalid", "TRUE\x85x")[1]}
    new, _changes = plan(text, feature_type=1)
    assert new == text + "FeatureType=1\n"


def test_commented_keys_are_examples_not_settings():
    text = "#FeatureType=0\n# FeatureType=4\n  #EnableUI=TRUE\n"
    assert _gridd.config_view(text) == {}
    new, changes = plan(text, feature_type=1, enable_ui=True)
    assert new == "#FeatureType=0\nFeatureType=1\n# FeatureType=4\n  #EnableUI=TRUE\nEnableUI=TRUE\n"
    assert [c[0] for c in changes] == ["feature_type", "enable_ui"]
    assert plan(new, remove=["feature_type", "enable_ui"])[0] == text


def test_repeated_keys_first_wins_and_managing_keeps_one():
    text = fixture("script_appended.conf")
    assert _gridd.config_view(text)["feature_type"] == 1
    assert _gridd.repeated_keys(text) == {"FeatureType": [(13, "1"), (17, "2")],
                                          "ClientConfigTokenPath": [(16, "/var/lib/nvidia/tokens"),
                                                                    (18, "/var/lib/nvidia/tokens")],
                                          "IgnoreSP": [(19, "FALSE"), (20, "TRUE")]}
    new, changes = plan(text, feature_type=1)
    assert new.count("FeatureType=") == 2 and "#FeatureType=0" in new     # the comment and one setting
    assert "FeatureType=2" not in new and changes == [(None, None, None)]
    assert set(_gridd.repeated_keys(new)) == {"ClientConfigTokenPath", "IgnoreSP"}   # not managed: left alone
    new, changes = plan(text, remove=["client_config_token_path"])
    assert "\nClientConfigTokenPath=" not in new
    assert changes == [("client_config_token_path", "/var/lib/nvidia/tokens", None)]


def test_values_as_guides_write_them():
    text = fixture("guide_quoted.conf")
    view = _gridd.config_view(text)
    assert view == {"server_address": "10.5.8.208", "server_port": 7070, "feature_type": 1,
                    "client_config_token_path": "/etc/nvidia/ClientConfigToken",
                    "backup_server_address": "backup.example.com # second license server",
                    "enable_ui": "yes", "license_interval": 1440}
    current = _gridd.current_values(_gridd.parse(text))
    assert current["backup_server_address"] == ("invalid", "backup.example.com # second license server")
    assert current["enable_ui"] == ("invalid", "yes")   # the template lists TRUE or FALSE only
    # the same values, spelt as in the file: quoted, spaced, trailing slash -> nothing to do
    same = {"server_address": "10.5.8.208", "server_port": 7070, "feature_type": 1,
            "client_config_token_path": "/etc/nvidia/ClientConfigToken", "license_interval": 1440}
    assert plan(text, **same) == (text, [])
    new, changes = plan(text, backup_server_address="backup.example.com", enable_ui=True)
    assert "BackupServerAddress=backup.example.com\n" in new and "EnableUI=TRUE\n" in new
    assert [c[0] for c in changes] == ["backup_server_address", "enable_ui"]


@pytest.mark.parametrize(("line", "value"), [("EnableUI=TRUE", True), ("EnableUI=FALSE", False),
                                             ("EnableUI=true", True), ('EnableUI="FALSE"', False),
                                             ("EnableUI=yes", ("invalid", "yes")), ("EnableUI=1", ("invalid", "1")),
                                             ("EnableUI=on", ("invalid", "on")), ("EnableUI=", None)])
def test_booleans_in_the_file(line, value):
    assert _gridd.current_values(_gridd.parse(line + "\n")).get("enable_ui") == value


@pytest.mark.parametrize(("line", "value"), [("FeatureType=3", ("invalid", "3")), ("FeatureType=x", ("invalid", "x")),
                                             ("FeatureType=vgpu", ("invalid", "vgpu")),
                                             ("FeatureType=-1", ("invalid", "-1")),
                                             ("FeatureType='1'", ("invalid", "'1'")),
                                             ("ServerPort=0", ("invalid", "0")), ("ServerPort=abc", ("invalid", "abc")),
                                             ("LicenseInterval=5", ("invalid", "5")),
                                             ("ServerAddress=http://lic:7070", ("invalid", "http://lic:7070"))])
def test_bad_values_in_the_file_are_invalid_and_rewritten_when_managed(line, value):
    option = _gridd.OPTION_BY_KEY[line.split("=")[0].lower()]
    assert _gridd.current_values(_gridd.parse(line + "\n")).get(option) == value
    good = {"feature_type": 1, "server_port": 7070, "license_interval": 1440, "server_address": "lic"}[option]
    new, changes = plan(line + "\n", **{option: good})
    assert changes and changes[0][0] == option and _gridd.config_view(new)[option] == good


def test_leading_zeros_and_spaces_read_as_the_number():
    text = "FeatureType=01\nServerPort= 7070\t\n"
    assert _gridd.config_view(text) == {"feature_type": 1, "server_port": 7070}
    assert plan(text, feature_type=1, server_port=7070) == (text, [])


def test_undecodable_bytes_are_shown_replaced():
    text = b"ProxyUserName=J\xfcrgen\n".decode("utf-8", "surrogateescape")
    assert _gridd.shown(_gridd.config_view(text)["proxy_user_name"]) == "J\ufffdrgen"
    assert _gridd.describe("proxy_user_name", ("invalid", "J\udcfc")) == "ProxyUserName=J\ufffd (invalid)"


# --------------------------------------------------------------------------- bad values

BAD = [
    # injection: a value must stay one Key=value line
    ({"server_address": "lic.example.com\nFeatureType=2"},
     "server_address='lic.example.com\\nFeatureType=2' contains a newline"),
    ({"proxy_user_name": "svc\r\nFeatureType=0"}, "contains a newline"),
    ({"server_address": "a=b"}, "server_address='a=b' contains '='"),
    ({"server_address": "lic#1"}, "server_address='lic#1' contains '#'"),
    ({"proxy_user_name": 'admin"'}, "proxy_user_name='admin\"' contains a double quote"),
    ({"proxy_user_name": "'admin'"}, "contains a single quote"),
    ({"proxy_user_name": "adm\x07in"}, "contains the control character '\\x07'"),
    ({"proxy_credentials_file_path": "/etc/x\x00y"}, "contains a NUL byte"),
    # host names and addresses
    ({"server_address": "https://lic.example.com"},
     "server_address='https://lic.example.com' is a URL; give only the host name or IP address"),
    ({"server_address": "lic.example.com/request"}, "contains a path"),
    ({"server_address": "lic.example.com:7070"},
     "includes a port; give the host 'lic.example.com' here and the port 7070 in the port option (server_port)"),
    ({"backup_server_address": "[fd00::5]:7070"}, "in the port option (backup_server_port)"),
    ({"server_address": "lic_1.example.com"},
     "server_address='lic_1.example.com' contains an underscore; host names (RFC 1123)"),
    ({"server_address": "-lic.example.com"}, "the label '-lic' starts or ends with '-'"),
    ({"server_address": "a" * 64 + ".example.com"},
     "has 64 characters; each dot-separated label of a host name has 1 to 63"),
    ({"server_address": ("a" * 60 + ".") * 4 + "example.com"}, "characters long; a host name has at most 253"),
    ({"server_address": "lic..example.com"}, "has an empty label"),
    ({"server_address": "10.0.0.256"}, "server_address='10.0.0.256' is not a valid IPv4 address"),
    ({"server_address": "10.0.0.05"}, "is not a valid IPv4 address (four numbers 0 to 255, without leading zeros"),
    ({"server_address": "fd00::g"}, "server_address='fd00::g' is not a valid IPv6 address"),
    ({"server_address": "fe80::1%eth0"}, "is a scoped IPv6 address"),
    ({"server_address": "[lic.example.com]"}, "brackets are only for an IPv6 address"),
    ({"server_address": "lic example.com"}, "contains white space"),
    ({"server_address": "lïc.example.com"}, "contains the characters 'ï'"),
    ({"server_address": ""}, "server_address is empty; to take the key out of gridd.conf list it in remove"),
    ({"server_address": " lic"}, "has leading or trailing white space"),
    ({"server_address": 10}, "server_address=10 is not a host name or IP address"),
    # ports and minutes
    ({"server_port": 0}, "server_port=0 is out of range: it must be a whole number from 1 to 65535 (a TCP port)"),
    ({"server_port": 65536}, "server_port=65536 is out of range"),
    ({"server_port": "abc"}, "server_port='abc' is not a whole number from 1 to 65535 (a TCP port)"),
    ({"backup_server_port": "70x"}, "backup_server_port='70x' is not a whole number from 1 to 65535"),
    ({"proxy_server_port": "-1"}, "proxy_server_port='-1' is not a whole number"),
    ({"proxy_server_port": True}, "proxy_server_port=True is not a whole number"),
    ({"proxy_server_port": 3128.5}, "proxy_server_port=3128.5 is not a whole number"),
    ({"license_interval": 5}, "license_interval=5 is out of range: it must be a whole number from 10 to 10080 "
                              "minutes"),
    ({"license_interval": 10081}, "license_interval=10081 is out of range"),
    ({"linger_interval": 10081}, "linger_interval=10081 is out of range: it must be a whole number from 0 to 10080 "
                                 "minutes"),
    # FeatureType
    ({"feature_type": 3}, "feature_type=3 is not a FeatureType NVIDIA documents (gridd.conf.template: 'All other "
                          "values reserved'); valid values: 0 ("),
    ({"feature_type": 5}, "feature_type=5 is not a FeatureType NVIDIA documents"),
    ({"feature_type": "x"}, "feature_type='x' is not a FeatureType; valid values: 0 (unlicensed state on a vGPU"),
    ({"feature_type": "grid"}, "feature_type='grid' is not a FeatureType"),
    ({"feature_type": True}, "feature_type=True is not a FeatureType"),
    ({"feature_type": 1.0}, "feature_type=1.0 is not a FeatureType"),
    # booleans: the options take true/false (Ansible turns yes/no into those before the module runs)
    ({"enable_ui": "maybe"}, "enable_ui='maybe' is not a boolean gridd.conf takes: give true or false (written "
                             "EnableUI=TRUE or EnableUI=FALSE"),
    ({"enable_ui": "yes"}, "enable_ui='yes' is not a boolean gridd.conf takes"),
    ({"enable_ui": "1"}, "enable_ui='1' is not a boolean gridd.conf takes"),
    # paths
    ({"client_config_token_path": "etc/tokens"}, "client_config_token_path='etc/tokens' is not an absolute path"),
    ({"client_config_token_path": "/etc/my tokens"}, "contains white space"),
    # combinations
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


@pytest.mark.parametrize(("name", "message"), [
    ("../x.tok", "contains a path separator"),
    ("a/b.tok", "contains a path separator"),
    ("a\\b.tok", "contains a path separator"),
    ("/etc/nvidia/ClientConfigToken/t.tok", "contains a path separator"),
    ("..", "contains '..'"),
    ("x..tok", "contains '..'"),
    ("", "is empty or not text"),
    (None, "is empty or not text"),
    (".hidden.tok", "starts with '.' (a hidden file)"),
    (".tok", "starts with '.'"),
    ("token.txt", "does not end in .tok (lower case)"),
    ("token.TOK", "does not end in .tok (lower case)"),
    ("token.tok.bak", "does not end in .tok"),
    ("client_configuration_token", "does not end in .tok"),
    ("tok en.tok", "contains ' '"),
    ("tök.tok", "contains 'ö'"),
    ("t" * 252 + ".tok", "a file name has at most 255"),
])
def test_bad_token_names(name, message):
    with pytest.raises(_gridd.GriddError) as err:
        _gridd.validate_token_name(name)
    text = str(err.value)
    assert text.startswith(f"token_name={name!r}" if len(str(name)) < 200 else "token_name is 256 characters")
    assert message in text and "ends in .tok, for example client_configuration_token.tok" in text \
        or "at most 255" in text


@pytest.mark.parametrize("name", ["client_configuration_token.tok", "client_configuration_token_03-28-2023-16-16-36.tok",
                                  "A.tok", "t" * 251 + ".tok"])
def test_good_token_names(name):
    assert _gridd.validate_token_name(name) == name


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


def test_the_fake_and_a_real_q_still_parse(sim):
    """gpusim's -q (with its Display, Utilization, ECC and Clocks sections) and a real H100's -q
    (simulator/tests/fixtures/smi/q_h100_565_thamada.txt) go through the fallback parser."""
    from gpusim import smi
    sim.init("A100-SXM4-40GB", 1, "--vgpu-guest", "A100-4C")
    rc, text = smi.run(["-q"])
    assert rc == 0 and "    Utilization" in text and "    Max Clocks" in text
    [gpu] = _gridd.parse_smi_query(text)
    assert gpu["name"] == "NVIDIA A100-SXM4-40GB" and gpu["virtualization_mode"] == "vgpu"
    assert gpu["license_supported"] and not gpu["licensed"] and gpu["feature"] == "NVIDIA Virtual Compute Server"
    fixture_path = os.path.join(os.path.dirname(__file__), "..", "..", "..", "..", "simulator", "tests", "fixtures",
                                "smi", "q_h100_565_thamada.txt")
    with open(fixture_path, encoding="utf-8") as fh:
        real = fh.read().split("---\n", 1)[1]
    [h100] = _gridd.parse_smi_query(real)
    assert h100["name"] == "NVIDIA H100 80GB HBM3" and h100["virtualization_mode"] == "none"
    assert not h100["license_supported"] and h100["uuid"] == "GPU-b42dd28e-ffdd-8720-1df0-98bd8cdc05b1"


def test_nvidia_smi_license_section_is_read():
    gpus = _gridd.parse_smi_query(SMI)
    assert gpus == [{"index": 0, "name": "GRID A100-4C", "uuid": "GPU-62f13b27-1eda-11b2-a8b5-0869ebe25264",
                     "virtualization_mode": "vgpu", "license_supported": True, "licensed": True,
                     "feature": "NVIDIA Virtual Compute Server", "feature_code": None,
                     "expiry": "2022-05-27T00:08:28Z"}]
    unlicensed = _gridd.parse_smi_query(SMI.replace("Licensed (Expiry: 2022-5-27 0:8:28 GMT)",
                                                    "Unlicensed (Restricted)"))
    assert unlicensed[0]["licensed"] is False and unlicensed[0]["expiry"] is None


@pytest.mark.parametrize(("status", "licensed", "expiry"), [
    ("Licensed (Expiry: 2024-8-15 0:0:0 GMT)", True, "2024-08-15T00:00:00Z"),
    ("Licensed", True, None),
    ("Unlicensed (Unrestricted)", False, None),
    ("Unlicensed (Restricted)", False, None),
    ("Unlicensed", False, None),
])
def test_nvidia_smi_license_status_texts(status, licensed, expiry):
    gpu = _gridd.parse_smi_query(SMI.replace("Licensed (Expiry: 2022-5-27 0:8:28 GMT)", status))[0]
    assert (gpu["licensed"], gpu["expiry"]) == (licensed, expiry)


def test_nvidia_smi_of_older_drivers_names_the_section_grid_licensed_product():
    old = SMI.replace("vGPU Software Licensed Product", "GRID Licensed Product").replace(
        "NVIDIA Virtual Compute Server\n        License", "GRID Virtual Workstation\n        License").replace(
        "Licensed (Expiry: 2022-5-27 0:8:28 GMT)", "Licensed")
    gpu = _gridd.parse_smi_query(old)[0]
    assert gpu["license_supported"] and gpu["licensed"] and gpu["feature"] == "GRID Virtual Workstation"


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


# ---- plan_run: the operations of one run, in order, and the refusals (a decision table) -------------------

def _facts(**extra) -> dict:
    facts = {"path": "/etc/nvidia/gridd.conf", "write_path": "/etc/nvidia/gridd.conf", "link": None,
             "dangling": False, "text": "FeatureType=0\n", "token_dir": "/etc/nvidia/ClientConfigToken",
             "token_dir_kind": "dir", "token_path": "/etc/nvidia/ClientConfigToken/client_configuration_token.tok",
             "token_kind": "missing", "token_content": None, "token_mode": None, "tokens": [], "systemd": True,
             "daemon": {"pidfile": "/var/run/nvidia-gridd/nvidia-gridd.pid", "pid": None, "others": []},
             "binaries": {"systemctl": "/usr/bin/systemctl", "nvidia-gridd": "/usr/bin/nvidia-gridd"},
             "license": _gridd.summarize([{"index": 0, "license_supported": True, "licensed": False}], "nvml"),
             "license_error": None}
    facts.update(extra)
    return facts


def _request(**extra) -> dict:
    request = {"path": "/etc/nvidia/gridd.conf", "desired": {"feature_type": 1}, "remove": [],
               "token_name": "client_configuration_token.tok", "content": b"tok", "remove_other_tokens": False,
               "backup": False, "restart": True, "wait": True, "timeout": 5}
    request.update(extra)
    return request


def test_plan_run_orders_token_before_gridd_conf_then_restart_then_wait():
    planned = _gridd.plan_run(_facts(token_dir_kind="missing", tokens=[]),
                              _request(remove_other_tokens=True))
    assert [op.kind for op in planned["ops"]] == ["create_dir", "write_token", "write_conf", "restart", "wait"]
    assert planned["problems"] == [] and planned["writes"]
    assert [op.writes for op in planned["ops"]] == [True, True, True, True, False]


def test_plan_run_steady_state_only_waits_and_writes_nothing():
    facts = _facts(text="FeatureType=1\n", token_kind="file", token_content=b"tok", token_mode=0o744,
                   tokens=["client_configuration_token.tok"])
    planned = _gridd.plan_run(facts, _request())
    assert [op.kind for op in planned["ops"]] == ["wait"] and not planned["writes"]
    assert [op.kind for op in _gridd.plan_run(facts, _request(wait=False))["ops"]] == []


@pytest.mark.parametrize(("facts", "request_", "problem"), [
    ({"dangling": True, "link": "/nowhere/gridd.conf", "text": None}, {},
     "path=/etc/nvidia/gridd.conf is a symbolic link to /nowhere/gridd.conf, which does not exist"),
    ({"token_kind": "link"}, {}, "client_configuration_token.tok is a symbolic link; the token is never written"),
    ({"token_kind": "other"}, {}, "client_configuration_token.tok is not a regular file"),
    ({"token_dir_kind": "link"}, {}, "the token folder /etc/nvidia/ClientConfigToken is a symbolic link"),
    ({"token_dir_kind": "other"}, {}, "exists but is not a folder"),
    ({"binaries": {}}, {}, "systemd runs but systemctl was not found"),
    ({"systemd": False, "binaries": {}}, {}, "nvidia-gridd was not found on PATH"),
    ({"systemd": False, "daemon": {"pidfile": "/p", "pid": None, "others": [42]}}, {},
     "nvidia-gridd runs (pid 42) but no pid file names it (/p"),
    ({"license": _gridd.empty_license("nvml")}, {}, "this host has no NVIDIA vGPU (GRID) guest driver: no GPU "
                                                    "reports vGPU software licensing (GPUs and their virtualization "
                                                    "mode: none found)"),
])
def test_plan_run_refusals(facts, request_, problem):
    planned = _gridd.plan_run(_facts(**facts), _request(**request_))
    assert any(problem in text for text in planned["problems"]), planned["problems"]


@pytest.mark.parametrize(("facts", "request_"), [
    ({"systemd": False, "daemon": {"pidfile": "/p", "pid": None, "others": [42]}}, {"restart": False}),
    ({"license": _gridd.empty_license("nvml")}, {"wait": False}),
    ({"token_kind": "link", "token_dir_kind": "dir"}, {"content": None}),
    ({"binaries": {}}, {"restart": False}),
])
def test_plan_run_refuses_only_what_the_run_would_touch(facts, request_):
    assert _gridd.plan_run(_facts(**facts), _request(**request_))["problems"] == []


def test_plan_run_restart_names_the_pid_of_the_pid_file():
    facts = _facts(systemd=False, daemon={"pidfile": "/run/nvidia-gridd/nvidia-gridd.pid", "pid": 77, "others": [5]})
    restart = [op for op in _gridd.plan_run(facts, _request())["ops"] if op.kind == "restart"][0]
    assert restart.data == {"pid": 77}
    assert restart.text == ("restart nvidia-gridd (SIGTERM to pid 77 of /run/nvidia-gridd/nvidia-gridd.pid, then "
                            "start nvidia-gridd)")


@pytest.mark.parametrize("kind", ["file", "link"])
def test_plan_run_absent_removes_the_token_and_never_waits(kind):
    facts = _facts(text="FeatureType=1\n", token_kind=kind, tokens=["client_configuration_token.tok", "old.tok"])
    planned = _gridd.plan_run(facts, _request(state="absent", content=None, desired={}, remove=["feature_type"]))
    assert [(op.kind, op.target) for op in planned["ops"]] == [
        ("remove_token", "/etc/nvidia/ClientConfigToken/client_configuration_token.tok"),
        ("write_conf", "/etc/nvidia/gridd.conf"), ("restart", "nvidia-gridd")]
    assert planned["problems"] == []


@pytest.mark.parametrize(("unit", "kinds"), [
    ({"load": "loaded", "file_state": "disabled", "active": "inactive"}, ["enable_unit", "start_unit"]),
    ({"load": "loaded", "file_state": "enabled", "active": "inactive"}, ["start_unit"]),
    ({"load": "loaded", "file_state": "static", "active": "active"}, []),
])
def test_plan_run_enable(unit, kinds):
    facts = _facts(text="FeatureType=1\n", token_kind="file", token_content=b"tok", token_mode=0o744, unit=unit)
    planned = _gridd.plan_run(facts, _request(enable=True, wait=False))
    assert [op.kind for op in planned["ops"]] == kinds and not planned["writes"]
    # with a file change the restart starts the unit: no separate start
    changed = _gridd.plan_run(dict(facts, text="FeatureType=0\n"), _request(enable=True, wait=False))
    assert "start_unit" not in [op.kind for op in changed["ops"]] and changed["ops"][-1].kind == "restart"


def test_parse_unit_show():
    assert _gridd.parse_unit_show("LoadState=loaded\nUnitFileState=enabled\nActiveState=active\n") == {
        "load": "loaded", "file_state": "enabled", "active": "active"}
