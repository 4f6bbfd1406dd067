"""gpuops.sharing.vgpu_license on a simulated vGPU guest (gpusim --vgpu-guest).

systemctl and journalctl are replaced by an in-process stand-in: ``systemctl restart
nvidia-gridd`` runs what gpusim's nvidia-gridd does when it starts (read gridd.conf and the
token folder, request a license, log), ``journalctl`` prints that log.  NVML and nvidia-smi are
gpusim's, read by the module exactly as on a real VM.
"""

from __future__ import annotations

import json
import os
import stat

import pytest
from ansible.module_utils import basic

from ansible_collections.gpuops.sharing.plugins.module_utils import _gridd, _gridd_host
from ansible_collections.gpuops.sharing.plugins.modules import vgpu_license
from gpusim import license as simlicense
from gpusim import state as simstate

from ...conftest import run_module

KEYS = {"changed", "path", "config", "config_changes", "backup_file", "token", "tokens_removed", "restarted", "operations", "done",
        "restart_required",
        "waited", "license"}


class Guest:
    def __init__(self, sim, tmp_path):
        self.sim = sim
        self.conf = str(tmp_path / "etc" / "nvidia" / "gridd.conf")
        self.tokens = str(tmp_path / "ClientConfigToken")
        self.calls = []
        self.warnings = []
        self.token = simlicense.make_token("dls.lab.example.com")
        self.unit = {"LoadState": "loaded", "UnitFileState": "disabled", "ActiveState": "inactive"}

    def args(self, **extra) -> dict:
        base = {"path": self.conf, "client_config_token_path": self.tokens, "token_content": self.token,
                "feature_type": 1, "timeout": 0}
        base.update(extra)
        return {k: v for k, v in base.items() if v is not None}

    def run(self, **extra):
        return run_module(vgpu_license.main, self.args(**extra))

    def token_file(self, name="client_configuration_token.tok") -> str:
        return os.path.join(self.tokens, name)


@pytest.fixture
def guest(sim, tmp_path, monkeypatch):
    sim.init("A100-SXM4-40GB", 1, "--vgpu-guest", "A100-4C")
    host = Guest(sim, tmp_path)
    real_run = basic.AnsibleModule.run_command
    real_bin = basic.AnsibleModule.get_bin_path

    def run_command(self, args, **kwargs):
        host.calls.append(list(args))
        if args[:2] == ["systemctl", "show"]:
            return 0, "\n".join(f"{k}={v}" for k, v in host.unit.items()) + "\n", ""
        if args[:2] == ["systemctl", "enable"]:
            host.unit["UnitFileState"] = "enabled"
            return 0, "", ""
        if args[:2] == ["systemctl", "start"]:
            host.unit["ActiveState"] = "active"
        if args[0] == "systemctl":
            outcome, _lines = simlicense.start(host.conf, 4242)
            return (1, "", "Job for nvidia-gridd.service failed") if outcome.fatal else (0, "", "")
        if args[0] == "journalctl":
            return 0, "\n".join(simlicense.log_lines(simstate.load(), 20)), ""
        return real_run(self, args, **kwargs)

    def get_bin_path(self, name, required=False, opt_dirs=None):
        return name if name in ("systemctl", "journalctl") else real_bin(self, name, required, opt_dirs)

    monkeypatch.setattr(basic.AnsibleModule, "run_command", run_command)
    monkeypatch.setattr(basic.AnsibleModule, "get_bin_path", get_bin_path)
    monkeypatch.setattr(basic.AnsibleModule, "warn", lambda self, text: host.warnings.append(text))
    monkeypatch.setattr(_gridd_host, "systemd_booted", lambda: True)   # the stand-in systemctl above
    return host


def restarts(host) -> int:
    return sum(1 for call in host.calls if call[:2] == ["systemctl", "restart"])


def test_configure_restart_and_wait_then_nothing_to_do(guest):
    result, failed = guest.run()
    assert not failed, result["msg"]
    assert set(result) >= KEYS
    assert result["changed"] and result["restarted"] and restarts(guest) == 1
    lic = result["license"]
    assert lic["state"] == "licensed" and lic["source"] == "nvml"
    assert lic["feature"] == "NVIDIA Virtual Compute Server" and lic["feature_code"] == 4
    assert lic["expiry"].endswith("Z") and lic["gpus"][0]["virtualization_mode"] == "vgpu"
    assert result["config"] == {"feature_type": 1, "client_config_token_path": guest.tokens}
    with open(guest.conf) as fh:
        text = fh.read()
    assert "FeatureType=1\n" in text and "#BackupServerAddress=" in text
    assert stat.S_IMODE(os.stat(guest.token_file()).st_mode) == 0o744
    with open(guest.token_file()) as fh:
        assert fh.read() == guest.token

    again, failed = guest.run()
    assert not failed and again["changed"] is False and again["restarted"] is False
    assert restarts(guest) == 1 and again["config_changes"] == [] and again["license"]["state"] == "licensed"


def test_image_build_writes_files_without_service(guest):
    result, failed = guest.run(restart=False, wait=False)
    assert not failed and result["changed"] and not result["restarted"] and result["restart_required"]
    assert not [c for c in guest.calls if c[0] in ("systemctl", "journalctl")]
    assert result["license"]["state"] == "unlicensed"   # read once, nothing waited for
    assert os.path.exists(guest.conf) and os.path.exists(guest.token_file())
    assert guest.run(restart=False, wait=False)[0]["changed"] is False


def test_check_mode_writes_nothing_and_diff_masks_the_token(guest):
    args = guest.args()
    args.update({"_ansible_check_mode": True, "_ansible_diff": True})
    result, failed = run_module(vgpu_license.main, args)
    assert not failed and result["changed"] and set(result) >= KEYS
    assert not os.path.exists(guest.conf) and not os.path.exists(guest.tokens)
    assert not guest.calls or all(c[0] not in ("systemctl",) for c in guest.calls)
    assert "FeatureType=1" in result["diff"]["after"] and f"{guest.conf}: absent" in result["diff"]["before"]
    assert "content masked" in result["diff"]["after"] and "new content" in result["diff"]["after"]
    assert guest.token not in json.dumps(result)


def test_diff_and_result_never_contain_the_token(guest):
    args = guest.args()
    args["_ansible_diff"] = True
    result, failed = run_module(vgpu_license.main, args)
    assert not failed
    dumped = json.dumps(result)
    assert guest.token not in dumped and guest.token[len("gpusim-cct:"):][:20] not in dumped
    assert "absent" in result["diff"]["before"] and "mode 0744" in result["diff"]["after"]


def test_unreachable_server_fails_with_the_reason_and_the_log(guest):
    guest.sim.gpusim("license", "unreachable", "on")
    result, failed = guest.run(timeout=0)
    assert failed and set(result) >= KEYS
    msg = result["msg"]
    assert "nvidia-gridd did not license this VM within 0 s" in msg
    assert "GPU 0 (NVIDIA A100-SXM4-40GB) is unlicensed (NVIDIA Virtual Compute Server)" in msg
    assert "Last nvidia-gridd log lines:" in msg
    assert "Failed to acquire license from dls.lab.example.com (Info: NVIDIA Virtual Compute Server" in msg
    assert result["restarted"] and result["license"]["state"] == "unlicensed"
    assert guest.token not in json.dumps(result)
    guest.sim.gpusim("license", "unreachable", "off")
    again, failed = guest.run()
    # nothing changed, so no restart: the running (simulated) daemon is still unlicensed
    assert failed and again["changed"] is False and restarts(guest) == 1


def test_bad_token_is_reported_by_the_daemon(guest):
    result, failed = guest.run(token_content="not-a-token")
    assert failed
    assert "systemctl restart nvidia-gridd failed" in result["msg"]
    assert "Failed to decode signature from token received" in result["msg"]
    assert "not-a-token" not in json.dumps(result)


@pytest.mark.parametrize(("extra", "message"), [
    ({"server_address": "lic.example.com\nFeatureType=2"},
     "server_address='lic.example.com\\nFeatureType=2' contains a newline"),
    ({"server_port": 70000}, "server_port=70000 is out of range"),
    ({"feature_type": 3}, "feature_type=3 is not a FeatureType NVIDIA documents"),
    ({"feature_type": "x"}, "feature_type='x' is not a FeatureType; valid values: 0 ("),
    ({"server_address": "https://dls.example.com/request"}, "is a URL; give only the host name or IP address"),
    ({"server_address": "dls_1.example.com"}, "contains an underscore"),
    ({"server_port": 0}, "server_port=0 is out of range: it must be a whole number from 1 to 65535"),
    ({"token_name": "../../etc/shadow.tok"}, "token_name='../../etc/shadow.tok' contains a path separator"),
    ({"token_name": "token.txt"}, "token_name='token.txt' does not end in .tok"),
    ({"token_name": ""}, "token_name='' is empty or not text"),
    ({"timeout": -1}, "timeout=-1 is out of range"),
    ({"token_content": None, "token_src": "x.tok"}, "token_src is read on the controller"),
])
def test_bad_values_fail_before_anything_changes(guest, extra, message):
    result, failed = guest.run(**extra)
    assert failed and message in result["msg"] and set(result) >= KEYS
    assert not os.path.exists(guest.conf) and not os.path.exists(guest.tokens) and restarts(guest) == 0


def test_remove_other_tokens(guest):
    os.makedirs(guest.tokens)
    for name in ("client_configuration_token_03-28-2023-16-16-36.tok", "notes.txt"):
        with open(os.path.join(guest.tokens, name), "w") as fh:
            fh.write("old")
    result, failed = guest.run(remove_other_tokens=True)
    assert not failed
    assert result["tokens_removed"] == [os.path.join(guest.tokens, "client_configuration_token_03-28-2023-16-16-36.tok")]
    assert sorted(os.listdir(guest.tokens)) == ["client_configuration_token.tok", "notes.txt"]
    assert guest.run(remove_other_tokens=True)[0]["changed"] is False


def test_token_mode_is_repaired(guest):
    guest.run(restart=False, wait=False)
    os.chmod(guest.token_file(), 0o600)
    result, failed = guest.run(restart=False, wait=False)
    assert not failed and result["changed"] and result["token"]["changed"]
    assert stat.S_IMODE(os.stat(guest.token_file()).st_mode) == 0o744


def test_existing_file_keeps_comments_and_backup(guest):
    os.makedirs(os.path.dirname(guest.conf))
    with open(guest.conf, "w") as fh:
        fh.write("# site settings\nFeatureType=0\nLoggingLevel=2\n")
    result, failed = guest.run(backup=True, restart=False, wait=False)
    assert not failed and result["backup_file"] and os.path.exists(result["backup_file"])
    with open(guest.conf) as fh:
        assert fh.read() == (f"# site settings\nFeatureType=1\nLoggingLevel=2\nClientConfigTokenPath={guest.tokens}\n")
    assert result["config_changes"] == ["FeatureType: 0 -> 1", f"ClientConfigTokenPath: (unset) -> {guest.tokens}"]


def test_real_world_file_bytes_are_kept(guest):
    """A Notepad-saved file (BOM, CRLF, a Latin-1 comment, no final newline): only the managed line changes."""
    os.makedirs(os.path.dirname(guest.conf))
    old = b"\xef\xbb\xbf# ge\xe4ndert von Hand\r\nFeatureType=0\r\nIgnoreSP=FALSE\r\nEnableUI=FALSE \r\n" \
          b"ClientConfigTokenPath=" + guest.tokens.encode() + b"\r\nLoggingLevel=2"
    with open(guest.conf, "wb") as fh:
        fh.write(old)
    result, failed = guest.run(restart=False, wait=False)
    assert not failed, result["msg"]
    with open(guest.conf, "rb") as fh:
        assert fh.read() == old.replace(b"FeatureType=0\r\n", b"FeatureType=1\r\n")
    assert result["config_changes"] == ["FeatureType: 0 -> 1"]
    assert guest.run(restart=False, wait=False)[0]["changed"] is False


def test_utf16_file_is_refused(guest):
    os.makedirs(os.path.dirname(guest.conf))
    with open(guest.conf, "wb") as fh:
        fh.write("FeatureType=1\r\n".encode("utf-16"))
    result, failed = guest.run(restart=False, wait=False)
    assert failed and "contains NUL bytes (it looks like UTF-16" in result["msg"] and restarts(guest) == 0


def test_symlinked_gridd_conf_is_edited_through_the_link(guest, tmp_path):
    real = tmp_path / "real-gridd.conf"
    real.write_text("FeatureType=0\n")
    os.makedirs(os.path.dirname(guest.conf))
    os.symlink(real, guest.conf)
    result, failed = guest.run(restart=False, wait=False)
    assert not failed and os.path.islink(guest.conf)
    assert real.read_text() == f"FeatureType=1\nClientConfigTokenPath={guest.tokens}\n"


def test_repeated_unmanaged_keys_warn(guest):
    os.makedirs(os.path.dirname(guest.conf))
    with open(guest.conf, "w") as fh:
        fh.write("FeatureType=2\nIgnoreSP=FALSE\nFeatureType=4\nIgnoreSP=TRUE\n")
    result, failed = guest.run(restart=False, wait=False)
    assert not failed
    with open(guest.conf) as fh:
        assert fh.read().count("FeatureType=") == 1            # managed: one line left
    assert [w for w in guest.warnings if "more than one line" in w] == [
        f"{guest.conf} sets IgnoreSP on more than one line (line 2: 'FALSE', line 4: 'TRUE'); NVIDIA does not "
        "document which one nvidia-gridd uses (this module reads the first). Remove the extra lines, or manage the "
        "key with this module, which keeps one"]


def test_physical_feature_type_on_a_vgpu_warns(guest):
    result, failed = guest.run(feature_type="rtx_vws", restart=False, wait=False)
    assert not failed and any("documented for physical GPUs" in w for w in guest.warnings)


def test_host_without_vgpu_licensing_fails_at_once(sim, tmp_path, monkeypatch):
    sim.init("A100-SXM4-40GB", 1)
    monkeypatch.setattr(basic.AnsibleModule, "get_bin_path", lambda self, name, required=False, opt_dirs=None: None)
    result, failed = run_module(vgpu_license.main, {"path": str(tmp_path / "gridd.conf"), "feature_type": 1,
                                                    "restart": False, "timeout": 30})
    assert failed and result["msg"].startswith("this host has no NVIDIA vGPU (GRID) guest driver: no GPU reports "
                                               "vGPU software licensing (GPUs and their virtualization mode: none)")
    assert result["waited"] == 0 and result["license"]["gpus"][0]["virtualization_mode"] == "none"
    assert result["changed"] is False and not os.path.exists(tmp_path / "gridd.conf")   # refused before writing


def test_old_driver_without_the_nvml_call_falls_back_to_nvidia_smi(guest):
    guest.sim.gpusim("fault", "add", "--call", "nvmlDeviceGetGridLicensableFeatures_v4", "--error",
                     "FUNCTION_NOT_FOUND", "--times", "1000")
    result, failed = guest.run()
    assert not failed, result["msg"]
    lic = result["license"]
    assert lic["source"] == "nvml+nvidia-smi" and lic["state"] == "licensed"
    assert lic["feature"] == "NVIDIA Virtual Compute Server" and lic["expiry"].endswith("Z")


# ---- the daemon as its pid file names it (restart where no service manager runs) ----------------------------

def _proc(root, pid, comm, state="S"):
    (root / str(pid)).mkdir()
    (root / str(pid) / "comm").write_text(comm + "\n")
    (root / str(pid) / "stat").write_text(f"{pid} ({comm}) {state} 1 1 1\n")


@pytest.mark.parametrize(("pidfile", "pid", "others"), [
    ("7\n", 7, [9]),          # the file's daemon; 9 has the name but is not it: reported, never signalled
    ("8\n", None, [7, 9]),    # a pid reused by another program is not the daemon
    ("11\n", None, [7, 9]),   # a zombie
    ("12\n", None, [7, 9]),   # gone: a stale file
    ("x\n", None, [7, 9]),
    (None, None, [7, 9]),
])
def test_daemon_state_trusts_the_pid_file_not_the_name(tmp_path, pidfile, pid, others):
    proc = tmp_path / "proc"
    proc.mkdir()
    for number, comm, state in ((7, "nvidia-gridd", "S"), (8, "python3", "S"), (9, "nvidia-gridd", "S"),
                                (10, "nvidia-gridd-x", "S"), (11, "nvidia-gridd", "Z")):
        _proc(proc, number, comm, state)
    path = tmp_path / "nvidia-gridd.pid"
    if pidfile is not None:
        path.write_text(pidfile)
    state = _gridd_host.daemon_state(str(path), str(proc))
    assert state == {"pidfile": str(path), "pid": pid, "others": others}


def test_pid_file_that_is_a_link_is_not_read(tmp_path):
    proc = tmp_path / "proc"
    proc.mkdir()
    _proc(proc, 7, "nvidia-gridd")
    (tmp_path / "real").write_text("7\n")
    os.symlink(tmp_path / "real", tmp_path / "nvidia-gridd.pid")
    assert _gridd_host.daemon_state(str(tmp_path / "nvidia-gridd.pid"), str(proc))["pid"] is None


def test_systemd_booted(tmp_path):
    assert _gridd_host.systemd_booted(str(tmp_path / "absent")) is False and _gridd_host.systemd_booted(str(tmp_path))


def test_restart_failure_after_the_writes_reports_changed_and_done(guest):
    guest.token = "not-a-token"     # the stand-in daemon refuses it: systemctl restart fails
    result, failed = guest.run()
    assert failed and result["changed"] is True and result["restarted"] is False
    assert result["done"] == [f"create the token folder {guest.tokens}",
                              f"write the client configuration token {guest.token_file()} (mode 0744)",
                              f"write {guest.conf}"]
    assert "Completed before the failure: create the token folder" in result["msg"]
    assert result["operations"][-2:] == ["restart nvidia-gridd (systemctl restart nvidia-gridd)",
                                         "wait up to 0 s until the VM is licensed"]


def test_enable_enables_and_starts_the_unit_in_the_same_run(guest):
    guest.run(restart=False, wait=False)            # files in place, daemon never started
    result, failed = guest.run(enable=True)
    assert not failed, result["msg"]
    assert result["done"] == ["enable nvidia-gridd.service (systemctl enable nvidia-gridd)",
                              "start nvidia-gridd.service (systemctl start nvidia-gridd)"]
    assert result["changed"] and not result["restart_required"] and not result["restarted"]
    again, failed = guest.run(enable=True)
    assert not failed and not again["changed"] and again["done"] == []
    assert [c[1] for c in guest.calls if c[0] == "systemctl"] == ["show", "enable", "start", "show"]


@pytest.mark.parametrize(("unit", "message"), [
    ({"LoadState": "not-found", "UnitFileState": "", "ActiveState": "inactive"},
     "nvidia-gridd.service is not installed (systemctl show: LoadState=not-found): install the vGPU guest driver"),
    ({"LoadState": "loaded", "UnitFileState": "masked", "ActiveState": "inactive"},
     "nvidia-gridd.service is masked; unmask it"),
])
def test_enable_refuses_a_missing_or_masked_unit_before_writing(guest, unit, message):
    guest.unit = unit
    result, failed = guest.run(enable=True)
    assert failed and message in result["msg"] and result["changed"] is False
    assert not os.path.exists(guest.conf) and not os.path.exists(guest.tokens)


def test_absent_removes_the_token_and_the_listed_keys_then_restarts(guest):
    first, failed = guest.run()
    assert not failed and first["license"]["state"] == "licensed"
    absent = {"path": guest.conf, "state": "absent", "remove": ["feature_type", "client_config_token_path"]}
    result, failed = run_module(vgpu_license.main, absent)
    assert not failed, result["msg"]
    assert result["changed"] and result["restarted"] and result["done"][0] == f"remove the token {guest.token_file()}"
    assert result["tokens_removed"] == [guest.token_file()] and result["token"]["present"] is False
    assert not os.path.exists(guest.token_file()) and os.path.isdir(guest.tokens)
    with open(guest.conf) as fh:   # the token was looked for where gridd.conf pointed before this run
        assert [line for line in fh if line.startswith(("FeatureType=", "ClientConfigTokenPath="))] == []
    assert result["config_changes"] == ["FeatureType: 1 -> (unset)", f"ClientConfigTokenPath: {guest.tokens} -> (unset)"]
    again, failed = run_module(vgpu_license.main, absent)
    assert not failed and not again["changed"] and again["done"] == []


def test_absent_takes_no_values(guest):
    result, failed = guest.run(state="absent")
    assert failed and result["msg"].startswith("state=absent removes the token and the keys listed in remove; it "
                                               "takes no values to set (feature_type, client_config_token_path, "
                                               "token_content given)")


# ---- bounded reads and the lock ----------------------------------------------------------------------------

def test_path_that_is_not_a_regular_file_is_refused_at_once(guest, tmp_path):
    fifo = tmp_path / "gridd.fifo"
    os.mkfifo(fifo)
    for path in (str(fifo), "/dev/zero"):
        result, failed = guest.run(path=path, restart=False, wait=False)
        assert failed and result["msg"] == f"path: {path} is not a regular file; give a regular file"
        assert result["changed"] is False


def test_oversized_gridd_conf_is_refused(guest):
    os.makedirs(os.path.dirname(guest.conf))
    with open(guest.conf, "wb") as fh:
        fh.write(b"#" * (_gridd_host.CONF_MAX_BYTES + 1))
    result, failed = guest.run(restart=False, wait=False)
    assert failed and f"is {_gridd_host.CONF_MAX_BYTES + 1} bytes, more than the" in result["msg"]


def test_lock_held_by_another_run_fails_with_a_clear_message(tmp_path):
    held = _gridd_host.Lock(dirs=(str(tmp_path),), timeout=0.2)
    held.acquire()
    try:
        other = _gridd_host.Lock(dirs=(str(tmp_path),), timeout=0.2)
        with pytest.raises(_gridd.GriddError, match=r"another run of gpuops.sharing.vgpu_license holds .* for more "
                                                    r"than 0.2 s; try again when it has finished"):
            other.acquire()
    finally:
        held.release()
    again = _gridd_host.Lock(dirs=(str(tmp_path),), timeout=0.2)
    again.acquire()      # released: the next run gets it
    again.release()
