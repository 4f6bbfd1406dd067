"""vGPU guest licensing: gpusim's nvidia-gridd, NVML license calls and nvidia-smi -q."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pynvml
import pytest

from gpusim import cli, license

SIM = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GRIDD = os.path.join(SIM, "bin", "nvidia-gridd")


@pytest.fixture
def guest(host, tmp_path):
    host.init("A100-SXM4-40GB", 1, "--vgpu-guest", "A100-4C")
    tokens = tmp_path / "tokens"
    tokens.mkdir()
    conf = tmp_path / "gridd.conf"
    conf.write_text(f"FeatureType=1\nClientConfigTokenPath={tokens}\n")
    host.conf, host.tokens, host.rundir = str(conf), str(tokens), str(tmp_path / "run")
    return host


def gridd(host, *args, **popen):
    env = {**os.environ, "GPUSIM_STATE": host.path, "GPUSIM_GRIDD_CONF": host.conf, "GPUSIM_GRIDD_RUNDIR": host.rundir,
           "GPUSIM_GRIDD_RETRY": "0.2"}
    if popen:
        return subprocess.Popen([sys.executable, GRIDD, *args], env=env, **popen)
    return subprocess.run([sys.executable, GRIDD, *args], env=env, capture_output=True, text=True, check=False)


def put_token(host, content=None, name="client_configuration_token.tok"):
    with open(os.path.join(host.tokens, name), "w") as fh:
        fh.write(content if content is not None else license.make_token("dls.lab"))


def features(nvml):
    with nvml as n:
        h = n.nvmlDeviceGetHandleByIndex(0)
        return n.nvmlDeviceGetVirtualizationMode(h), n.nvmlDeviceGetGridLicensableFeatures_v4(h)


def test_guest_starts_unlicensed(guest, nvml):
    mode, info = features(nvml)
    assert mode == pynvml.NVML_GPU_VIRTUALIZATION_MODE_VGPU
    assert info.isGridLicenseSupported == 1 and info.licensableFeaturesCount == 1
    feature = info.gridLicensableFeatures[0]
    assert feature.featureState == 0 and feature.productName == "NVIDIA Virtual Compute Server"  # the binding decodes char[]
    assert feature.featureCode == pynvml.NVML_GRID_LICENSE_FEATURE_CODE_COMPUTE and feature.licenseExpiry.status == 0
    out = guest.smi("-q").stdout
    # the real guest's layout (tests/unit/plugins/module_utils/test__gridd.py's sample): colon at column 42
    assert "        Virtualization Mode               : VGPU" in out
    assert "        License Status                    : Unlicensed (Unrestricted)" in out


@pytest.mark.parametrize(("vgpu", "product", "code"), [("A10-24Q", "NVIDIA RTX Virtual Workstation", 2),
                                                       ("A16-1B", "NVIDIA Virtual PC", 1),
                                                       ("A100-2-10C", "NVIDIA Virtual Compute Server", 4)])
def test_product_follows_the_vgpu_series(host, vgpu, product, code):
    host.init("A10", 1, "--vgpu-guest", vgpu)
    assert host.state()["vgpu_guest"] == {"type": vgpu, "product": product, "feature_code": code}


def test_bad_vgpu_type_is_refused(host, capsys):
    with pytest.raises(SystemExit):
        cli.main(["init", "--model", "A10", "--vgpu-guest", "A10", "--force"])
    assert "is not a vGPU type name; give one like A100-4C" in capsys.readouterr().err


def test_bare_metal_and_passthrough_have_no_vgpu_licensing(host, nvml):
    host.init("A100-SXM4-40GB", 1)
    mode, info = features(nvml)
    assert mode == pynvml.NVML_GPU_VIRTUALIZATION_MODE_NONE and info.isGridLicenseSupported == 0
    host.init("A100-SXM4-40GB", 1, "--passthrough-vm")
    assert features(nvml)[0] == pynvml.NVML_GPU_VIRTUALIZATION_MODE_PASSTHROUGH
    assert "vGPU Software Licensed Product" not in host.smi("-q").stdout


def test_token_licenses_with_the_real_log_lines(guest, nvml):
    put_token(guest)
    done = gridd(guest, "--once")
    assert done.returncode == 0, done.stderr
    lines = done.stderr.splitlines()
    assert lines[1:5] == ["vGPU Software package (0)", "Ignore service provider and node-locked licensing",
                          "NLS initialized", "Acquiring license. (Info: dls.lab; NVIDIA Virtual Compute Server)"]
    assert lines[0].startswith("Started (")
    assert lines[5].startswith("License acquired successfully. (Info: dls.lab, NVIDIA Virtual Compute Server; "
                               "Expiry: ") and lines[5].endswith(" GMT)")
    _mode, info = features(nvml)
    feature = info.gridLicensableFeatures[0]
    assert feature.featureState == 1 and feature.licenseExpiry.status == 2 and feature.licenseExpiry.year >= 2024
    assert "        License Status                    : Licensed (Expiry: " in guest.smi("-q").stdout
    assert guest.state()["license"]["daemon_pid"] is None   # --once leaves no daemon


def test_legacy_server_address_without_token(guest, nvml):
    with open(guest.conf, "w") as fh:
        fh.write("ServerAddress=10.103.15.200\nFeatureType=1\n")
    out = gridd(guest, "--once").stderr
    # the legacy server's line, as real logs show it: the server URL, "; ", the product, no expiry
    assert "License acquired successfully. (Info: http://10.103.15.200:7070/request; NVIDIA Virtual Compute " \
           "Server)\n" in out
    info = features(nvml)[1].gridLicensableFeatures[0]
    assert info.featureState == 1 and info.licenseExpiry.status == 2   # NVML still reports the lease's end


def test_no_token_and_no_server_is_logged_as_the_real_daemon_does(guest, nvml):
    with open(guest.conf, "w") as fh:
        fh.write("ServerAddress=\nFeatureType=1\n")
    out = gridd(guest, "--once").stderr
    assert out.splitlines()[-1] == "Unable to fetch the client configuration token file"
    assert features(nvml)[1].gridLicensableFeatures[0].featureState == 0


@pytest.mark.parametrize("value", ["3", "5", "x", "-1"])
def test_invalid_feature_type_is_logged_as_the_real_daemon_does(guest, nvml, value):
    put_token(guest)
    with open(guest.conf, "w") as fh:
        fh.write(f"FeatureType={value}\nClientConfigTokenPath={guest.tokens}\n")
    out = gridd(guest, "--once").stderr
    assert out.splitlines()[-1] == "Invalid feature type requested" and "Acquiring license" not in out
    assert features(nvml)[1].gridLicensableFeatures[0].featureState == 0


@pytest.mark.parametrize("conf", [
    "ClientConfigTokenPath={tokens}\n",                                 # no FeatureType: autodetected on a vGPU
    "FeatureType=4\nClientConfigTokenPath={tokens}\n",                  # any documented value on a vGPU
    '\ufeffFeatureType = "1"\r\nClientConfigTokenPath="{tokens}/"\r\n',  # Notepad, quotes, spaces, CRLF
])
def test_vgpu_is_licensed_for_its_series_whatever_the_feature_type(guest, nvml, conf):
    put_token(guest)
    with open(guest.conf, "w", newline="") as fh:
        fh.write(conf.format(tokens=guest.tokens))
    out = gridd(guest, "--once").stderr
    assert "License acquired successfully. (Info: dls.lab, NVIDIA Virtual Compute Server; Expiry:" in out
    assert features(nvml)[1].gridLicensableFeatures[0].featureState == 1


def test_feature_type_zero_requests_nothing(guest, nvml):
    put_token(guest)
    with open(guest.conf, "w") as fh:
        fh.write(f"FeatureType=0\nClientConfigTokenPath={guest.tokens}\n")
    out = gridd(guest, "--once").stderr
    assert "Acquiring license" not in out and "no license requested" in out
    assert features(nvml)[1].gridLicensableFeatures[0].featureState == 0


def test_unreachable_server(guest, nvml):
    put_token(guest)
    assert guest.gpusim("license", "unreachable", "on") == 0
    out = gridd(guest, "--once").stderr
    assert "Failed to acquire license from dls.lab (Info: NVIDIA Virtual Compute Server - Error:" in out
    assert features(nvml)[1].gridLicensableFeatures[0].featureState == 0


def test_unreadable_token_shuts_the_daemon_down(guest):
    put_token(guest, "eyJhbGciOiJSUzI1NiJ9.not-a-signed-token")
    done = gridd(guest, "--once")
    assert done.returncode == 1
    assert done.stderr.splitlines()[-4:-1] == [
        "Failed to decode signature from token received",
        "Failed to read configurations from client configuration token (Error: invalid token)",
        "Failed to setup cloud License Manager: 3"]
    assert done.stderr.splitlines()[-1].startswith("Shutdown (")


def test_missing_gridd_conf_is_logged(guest):
    os.unlink(guest.conf)
    out = gridd(guest, "--once").stderr
    assert f"Failed to open file {guest.conf} (No such file or directory)" in out


def test_reboot_drops_the_license_and_keeps_the_switch(guest):
    put_token(guest)
    gridd(guest, "--once")
    guest.gpusim("license", "unreachable", "on")
    assert guest.gpusim("reboot") == 0
    state = guest.state()
    assert state["license"]["licensed"] is False and state["license"]["unreachable"] is True


def _wait(predicate, seconds=10.0):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return False


def test_daemon_retries_until_the_server_is_back_and_releases_on_sigterm(guest):
    put_token(guest)
    guest.gpusim("license", "unreachable", "on")
    proc = gridd(guest, "--foreground", stderr=subprocess.PIPE, text=True)
    try:
        assert _wait(lambda: guest.state()["license"].get("daemon_pid") == proc.pid)
        assert os.path.exists(os.path.join(guest.rundir, "nvidia-gridd.pid"))
        assert not guest.state()["license"]["licensed"]
        guest.gpusim("license", "unreachable", "off")
        assert _wait(lambda: guest.state()["license"]["licensed"])
    finally:
        proc.send_signal(signal.SIGTERM)
        _out, err = proc.communicate(timeout=10)
    assert proc.returncode == 0
    assert err.splitlines()[-1] == f"Shutdown ({proc.pid})"
    assert err.count("Failed to acquire license from dls.lab") >= 1
    state = guest.state()
    assert state["license"]["licensed"] is False and state["license"]["daemon_pid"] is None
    assert not os.path.exists(os.path.join(guest.rundir, "nvidia-gridd.pid"))


def test_forking_start_like_the_real_unit(guest):
    """nvidia-gridd.service is Type=forking: the started process exits 0, the daemon keeps running."""
    put_token(guest)
    done = gridd(guest)
    assert done.returncode == 0
    pidfile = os.path.join(guest.rundir, "nvidia-gridd.pid")
    assert _wait(lambda: os.path.exists(pidfile) and guest.state()["license"]["licensed"])
    with open(pidfile) as fh:
        pid = int(fh.read())
    with open(f"/proc/{pid}/comm") as fh:
        assert fh.read().strip() == "nvidia-gridd"   # as ps and systemctl status show the real daemon
    os.kill(pid, signal.SIGTERM)
    assert _wait(lambda: guest.state()["license"]["daemon_pid"] is None)
    log = "\n".join(license.log_lines(guest.state()))
    assert f"nvidia-gridd[{pid}]: Shutdown ({pid})" in log


def test_license_cli(guest, capsys):
    put_token(guest)
    gridd(guest, "--once")
    assert guest.gpusim("license", "show") == 0
    out = capsys.readouterr().out
    assert "vGPU A100-4C: NVIDIA Virtual Compute Server" in out and "License Status: Licensed (Expiry:" in out
    assert guest.gpusim("license", "log", "-n", "1") == 0
    assert "License acquired successfully" in capsys.readouterr().out
    assert guest.gpusim("license", "token", "--server", "cls.example") == 0
    assert license.token_server(capsys.readouterr().out) == "cls.example"
