"""The containerd config planner: what nvidia-ctk runtime configure sets, by editing the text."""

from __future__ import annotations

import pytest
import tomllib

from ansible_collections.gpuops.sharing.plugins.module_utils import _containerd as c

CRI2 = "io.containerd.grpc.v1.cri"
CRI3 = "io.containerd.cri.v1.runtime"

# The shape of `containerd config default` (containerd 1.6/1.7), cut down, with an admin's comment and setting.
V2 = '''# managed by the platform team: keep the mirror
version = 2
root = "/var/lib/containerd"

[plugins]

  [plugins."io.containerd.grpc.v1.cri"]
    sandbox_image = "registry.k8s.io/pause:3.9"

    [plugins."io.containerd.grpc.v1.cri".containerd]
      default_runtime_name = "runc"
      snapshotter = "overlayfs"

      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes]

        [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
          runtime_type = "io.containerd.runc.v2"

          [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
            SystemdCgroup = true   # the kubelet's cgroup driver

    [plugins."io.containerd.grpc.v1.cri".registry.mirrors."docker.io"]
      endpoint = ["https://mirror.example.com"]
'''

# containerd 2.x (`containerd config default` of 2.0), cut down.
V3 = '''version = 3

[plugins]
  [plugins."io.containerd.cri.v1.runtime"]
    enable_selinux = false
    [plugins."io.containerd.cri.v1.runtime".containerd]
      default_runtime_name = "runc"
      [plugins."io.containerd.cri.v1.runtime".containerd.runtimes]
        [plugins."io.containerd.cri.v1.runtime".containerd.runtimes.runc]
          runtime_type = "io.containerd.runc.v2"
          [plugins."io.containerd.cri.v1.runtime".containerd.runtimes.runc.options]
            SystemdCgroup = false
'''


def plan(text, state="present", name="nvidia", binary=c.DEFAULT_BINARY, default=False, cdi=True, dirs=None,
         version=2):
    return c.plan(text, tomllib.loads, "/etc/containerd/config.toml", state, name, binary, default, cdi, dirs,
                  version)


def unchanged_lines(before: str, after: str) -> bool:
    """Every line of ``before`` is still in ``after``, in order (nothing of the admin's removed)."""
    it = iter(after.splitlines())
    return all(any(line == other for other in it) for line in before.splitlines())


def test_v2_runtime_and_cdi_added_keeping_everything_else():
    r = plan(V2, dirs=["/etc/cdi", "/var/run/cdi"])
    new = tomllib.loads(r["text"])
    cri = new["plugins"][CRI2]
    assert cri["containerd"]["runtimes"]["nvidia"] == {
        "runtime_type": "io.containerd.runc.v2",
        "options": {"SystemdCgroup": True, "BinaryName": "/usr/bin/nvidia-container-runtime"}}
    assert cri["enable_cdi"] is True and cri["cdi_spec_dirs"] == ["/etc/cdi", "/var/run/cdi"]
    assert cri["containerd"]["default_runtime_name"] == "runc"
    assert unchanged_lines(V2, r["text"])          # comments, mirror, runc: byte for byte
    assert r["version"] == 2 and r["plugin"] == CRI2
    assert r["changes"] == ["add runtime nvidia with BinaryName /usr/bin/nvidia-container-runtime (settings copied "
                            "from runtime runc)", "enable_cdi = true", "cdi_spec_dirs = ['/etc/cdi', '/var/run/cdi']"]
    assert r["before"]["runtime"] is None and r["after"]["runtime"]["options"]["BinaryName"] == c.DEFAULT_BINARY
    again = plan(r["text"], dirs=["/etc/cdi", "/var/run/cdi"])
    assert again["changes"] == [] and again["text"] == r["text"]


def test_v3_uses_the_containerd_2_plugin():
    r = plan(V3, default=True)
    cri = tomllib.loads(r["text"])["plugins"][CRI3]
    assert r["plugin"] == CRI3 and r["version"] == 3
    assert cri["containerd"]["default_runtime_name"] == "nvidia"
    assert cri["containerd"]["runtimes"]["nvidia"]["options"] == {"SystemdCgroup": False, "BinaryName": c.DEFAULT_BINARY}
    assert cri["enable_cdi"] is True and cri["enable_selinux"] is False
    assert "default_runtime_name = \"runc\"" not in r["text"]
    assert plan(r["text"], default=True)["changes"] == []


@pytest.mark.parametrize("text", [None, "", "# nothing yet\n"])
def test_new_or_empty_file_gets_the_requested_version(text):
    r = plan(text, version=3)
    new = tomllib.loads(r["text"])
    assert new["version"] == 3
    assert new["plugins"][CRI3]["containerd"]["runtimes"]["nvidia"] == {
        "runtime_type": "io.containerd.runc.v2", "options": {"BinaryName": c.DEFAULT_BINARY}}
    if text:
        assert r["text"].startswith(text) or text in r["text"]
    assert plan(r["text"], version=2)["changes"] == []     # the file's own version wins afterwards


def test_existing_runtime_gets_only_binary_name():
    text = V2 + '''
        [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.nvidia]
          runtime_type = "io.containerd.runc.v2"
          privileged_without_host_devices = true
          [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.nvidia.options]
            BinaryName = "/opt/old/nvidia-container-runtime"
'''
    r = plan(text)
    assert r["changes"] == [f"runtime nvidia: BinaryName = {c.DEFAULT_BINARY}", "enable_cdi = true"]
    runtime = tomllib.loads(r["text"])["plugins"][CRI2]["containerd"]["runtimes"]["nvidia"]
    assert runtime["privileged_without_host_devices"] is True
    assert "/opt/old" not in r["text"]


def test_set_as_default_false_removes_a_default_naming_the_runtime():
    r = plan(V2.replace('default_runtime_name = "runc"', 'default_runtime_name = "nvidia"'))
    assert "remove default_runtime_name = nvidia" in r["changes"]
    assert "default_runtime_name" not in tomllib.loads(r["text"])["plugins"][CRI2]["containerd"]


def test_default_nvidia_runtime_not_copied_from():
    text = V2.replace('default_runtime_name = "runc"', 'default_runtime_name = "nvidia-legacy"')
    r = plan(text)
    assert "(settings copied from runtime runc)" in r["changes"][0]


def test_absent_removes_the_runtime_and_its_default_and_keeps_cdi():
    present = plan(V2, default=True)["text"]
    r = plan(present, state="absent")
    new = tomllib.loads(r["text"])
    assert "nvidia" not in new["plugins"][CRI2]["containerd"]["runtimes"]
    assert "default_runtime_name" not in new["plugins"][CRI2]["containerd"]
    assert new["plugins"][CRI2]["enable_cdi"] is True
    assert r["changes"] == ["remove default_runtime_name = nvidia", "remove runtime nvidia"]
    assert plan(r["text"], state="absent")["changes"] == []
    assert plan(V2, state="absent")["changes"] == []


def test_multi_line_array_replaced_whole():
    text = V2.replace('    sandbox_image = "registry.k8s.io/pause:3.9"\n',
                      '    sandbox_image = "registry.k8s.io/pause:3.9"\n    cdi_spec_dirs = [\n      "/etc/cdi",\n'
                      '    ]\n')
    r = plan(text, dirs=["/etc/cdi", "/var/run/cdi"])
    assert tomllib.loads(r["text"])["plugins"][CRI2]["cdi_spec_dirs"] == ["/etc/cdi", "/var/run/cdi"]


def test_header_text_inside_a_multiline_string_is_not_a_header():
    text = 'version = 2\nnote = """\n[plugins."io.containerd.grpc.v1.cri"]\n"""\n'
    r = plan(text)
    assert tomllib.loads(r["text"])["note"] == '[plugins."io.containerd.grpc.v1.cri"]\n'
    assert tomllib.loads(r["text"])["plugins"][CRI2]["enable_cdi"] is True


@pytest.mark.parametrize("text, message", [
    ("version = 2\n[plugins\n", "is not valid TOML"),
    ('[plugins.cri]\n  systemd_cgroup = true\n', "has no 'version' key, so containerd reads it as a version 1 "
                                                 "config"),
    ("version = 4\n", "version = 4 is not a containerd config version this module edits"),
    ('version = "2"\n', "version = '2' is not a containerd config version"),
    ('version = 2\nplugins."io.containerd.grpc.v1.cri".enable_cdi = false\n',
     "the edit would not parse"),
    ('version = 2\n[plugins]\n"io.containerd.grpc.v1.cri" = {enable_cdi = false}\n',
     "the edit would not parse"),
    ('version = 2\n[plugins]\n"io.containerd.grpc.v1.cri" = 1\n', 'plugins.io.containerd.grpc.v1.cri is not a table'),
])
def test_files_refused_with_their_reason(text, message):
    with pytest.raises(c.ContainerdConfigError, match=None) as info:
        plan(text)
    assert message in info.value.message, info.value.message


@pytest.mark.parametrize("args, message", [
    (("nvidia runtime", c.DEFAULT_BINARY, None, 2), "runtime_name='nvidia runtime': use 1 to 64 letters"),
    (("", c.DEFAULT_BINARY, None, 2), "runtime_name='': use 1 to 64 letters"),
    (("nvidia", "nvidia-container-runtime", None, 2), "give the absolute path of the runtime"),
    (("nvidia", '/usr/bin/a"b', None, 2), "without quotes, backslashes or control characters"),
    (("nvidia", c.DEFAULT_BINARY, [], 2), "cdi_spec_dirs=[]: containerd would find no CDI spec"),
    (("nvidia", c.DEFAULT_BINARY, ["etc/cdi"], 2), "cdi_spec_dirs: 'etc/cdi' is not an absolute directory path"),
    (("nvidia", c.DEFAULT_BINARY, ['/etc/"cdi'], 2), "is not an absolute directory path"),
    (("nvidia", c.DEFAULT_BINARY, None, 1), "config_version=1: containerd config version 2"),
])
def test_bad_requests_refused(args, message):
    with pytest.raises(c.ContainerdConfigError) as info:
        c.check_request(*args)
    assert message in info.value.message


@pytest.mark.parametrize("unit, ok", [("containerd.service", True), ("k3s-agent.service", True),
                                      ("containerd", False), ("x.service; reboot", False), ("", False)])
def test_unit_names(unit, ok):
    if ok:
        c.check_unit(unit)
    else:
        with pytest.raises(c.ContainerdConfigError, match="is not a systemd unit name"):
            c.check_unit(unit)


@pytest.mark.parametrize("key, parts", [
    ('plugins."io.containerd.grpc.v1.cri".containerd', ["plugins", "io.containerd.grpc.v1.cri", "containerd"]),
    ("a . 'b.c' . d", ["a", "b.c", "d"]),
    ('"a\\"b"', ['a"b']),
    ("a..b", None),
    ('"open', None),
])
def test_split_key(key, parts):
    assert c.split_key(key) == parts


def test_rendered_values_parse_back():
    for value in ["plain", 'with "quotes" and \\', True, 3, ["/etc/cdi", "/var/run/cdi"]]:
        assert tomllib.loads("k = " + c.render_value(value))["k"] == value
    with pytest.raises(c.ContainerdConfigError, match="cannot write the value"):
        c.render_value(1.5)


@pytest.mark.parametrize("text, version", [
    ("containerd github.com/containerd/containerd 1.6.20~ds1 1.6.20~ds1-1+b1\n", (1, 6, 20)),
    ("containerd containerd.io v1.7.24 88bf19b2105c8b17560993bee28a01ddc2f97182\n", (1, 7, 24)),
    ("containerd github.com/containerd/containerd/v2 v2.0.2 c507a0257ea6462fbd6f5ba4f5c74facb04021f4\n", (2, 0, 2)),
    ("", None),
    ("garbage", None),
])
def test_parse_version(text, version):
    assert c.parse_version(text) == version


def test_version_problems():
    refusals, warnings = c.version_problems((1, 6, 20), 2, True, "present")
    assert refusals == [] and warnings == [
        "containerd 1.6.20 has no CDI support (it came with containerd 1.7.0): it ignores enable_cdi, so pods get "
        "devices only through the nvidia runtime; upgrade containerd to use CDI"]
    refusals, warnings = c.version_problems((1, 7, 24), 3, True, "present")
    assert refusals == ["the config is version 3, which containerd 1.7.24 cannot load (version 3 is containerd "
                        "2.x's); set config_version: 2 or upgrade containerd"] and warnings == []
    assert c.version_problems((2, 0, 2), 3, True, "present") == ([], [])
    assert c.version_problems(None, 3, True, "present") == ([], [])
    assert c.version_problems((1, 6, 0), 3, True, "absent") == ([], [])


# ------------------------------------------------------------------ properties

from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402


@st.composite
def configs(draw):
    """containerd config files of version 2 or 3 with or without each piece the planner touches."""
    version = draw(st.sampled_from([2, 3]))
    cri = f'plugins."{CRI2 if version == 2 else CRI3}"'
    lines = ["# admin", f"version = {version}"]
    if draw(st.booleans()):
        lines += [f"[{cri}]"]
        if draw(st.booleans()):
            lines += [f"  enable_cdi = {draw(st.sampled_from(['true', 'false']))}"]
        if draw(st.booleans()):
            lines += ['  cdi_spec_dirs = ["/etc/cdi"]  # admin\'s']
    if draw(st.booleans()):
        lines += [f"[{cri}.containerd]",
                  f'  default_runtime_name = "{draw(st.sampled_from(["runc", "nvidia", "crun"]))}"']
    if draw(st.booleans()):
        lines += [f"[{cri}.containerd.runtimes.runc]", '  runtime_type = "io.containerd.runc.v2"',
                  f"[{cri}.containerd.runtimes.runc.options]", "  SystemdCgroup = true"]
    if draw(st.booleans()):
        lines += [f"[{cri}.containerd.runtimes.nvidia]", '  runtime_type = ""']
        if draw(st.booleans()):
            lines += [f"[{cri}.containerd.runtimes.nvidia.options]", '  BinaryName = "/old"']
    if draw(st.booleans()):
        lines += ["[metrics]", '  address = "127.0.0.1:1338"']
    return "\n".join(lines) + "\n", version


@settings(max_examples=200, deadline=None)
@given(configs(), st.sampled_from(["present", "absent"]), st.booleans(), st.booleans(),
       st.sampled_from([None, ["/etc/cdi", "/var/run/cdi"]]))
def test_applying_the_plan_reaches_the_request_and_replanning_is_empty(config, state, default, cdi, dirs):
    text, version = config
    r = plan(text, state=state, default=default, cdi=cdi, dirs=dirs)
    after = tomllib.loads(r["text"])
    cri = after.get("plugins", {}).get(CRI2 if version == 2 else CRI3, {})
    runtimes = cri.get("containerd", {}).get("runtimes", {})
    if state == "present":
        assert runtimes["nvidia"]["options"]["BinaryName"] == c.DEFAULT_BINARY
        assert runtimes["nvidia"]["runtime_type"]
        assert (cri["containerd"].get("default_runtime_name") == "nvidia") == default
        if cdi:
            assert cri["enable_cdi"] is True
        if dirs:
            assert cri["cdi_spec_dirs"] == dirs
    else:
        assert "nvidia" not in runtimes
        assert cri.get("containerd", {}).get("default_runtime_name") != "nvidia"
    assert after.get("metrics") == tomllib.loads(text).get("metrics")
    assert "# admin" in r["text"]
    assert plan(r["text"], state=state, default=default, cdi=cdi, dirs=dirs)["changes"] == []
