"""gpuops.sharing.mig end to end on simulated hosts (main() with injected arguments)."""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
import time

import pytest
import yaml

from ansible_collections.gpuops.sharing.plugins.module_utils import _mig_host
from ansible_collections.gpuops.sharing.plugins.modules import mig
from gpusim import catalogue

from ...conftest import SIMULATOR, run_module

BALANCED = [{"devices": "all", "mig-enabled": True,
             "mig-devices": {"1g.5gb": 2, "2g.10gb": 1, "3g.20gb": 1}}]


def layout(state, index=0):
    gpu = state["gpus"][index]
    return sorted((gi["profile_id"], gi["start"], gi["size"], tuple(c["uuid"] for c in gi["compute_instances"]))
                  for gi in gpu["gpu_instances"])


def smi(sim, *args):
    return subprocess.run([sys.executable, os.path.join(SIMULATOR, "libexec", "nvidia-smi.py"), *args],
                          capture_output=True, text=True, check=False, env={**os.environ, "GPUSIM_STATE": sim.path})


def test_apply_then_nothing_to_do(sim):
    sim.init("A100-SXM4-40GB", 2)
    first, failed = run_module(mig.main, {"config": BALANCED})
    assert not failed and first["changed"] and first["created"] == 16 and first["destroyed"] == 0
    writes = sim.state()["counters"]["nvml_writes"]
    again, failed = run_module(mig.main, {"config": BALANCED})
    assert not failed and not again["changed"] and again["kept"] == 16 and again["created"] == 0
    assert sim.state()["counters"]["nvml_writes"] == writes
    instances = again["gpus"][0]["instances"]
    assert sorted(i["profile"] for i in instances) == ["1g.5gb", "1g.5gb", "2g.10gb", "3g.20gb"]
    assert all(i["compute_instances"][0]["mig_uuid"].startswith("MIG-") for i in instances)


def test_check_mode_and_diff_write_nothing(sim):
    sim.init("H100-SXM5-80GB", 1, "--mig-enabled")
    run_module(mig.main, {"config": [{"devices": [0], "mig-enabled": True, "mig-devices": {"3g.40gb": 2}}]})
    before = sim.state()
    result, failed = run_module(mig.main, {"config": [{"devices": [0], "mig-enabled": True,
                                                       "mig-devices": {"3g.40gb": 1, "1g.10gb": 3}}],
                                           "_ansible_check_mode": True, "_ansible_diff": True})
    assert not failed and result["changed"] and result["kept"] == 2 and result["destroyed"] == 2
    assert sim.state() == before
    assert "3g.40gb at" in result["diff"]["before"] and "1g.10gb at" in result["diff"]["after"]


def test_minimal_change_keeps_uuids(sim):
    sim.init("H100-SXM5-80GB", 1, "--mig-enabled")
    run_module(mig.main, {"config": [{"devices": "all", "mig-enabled": True, "mig-devices": {"3g.40gb": 2}}]})
    uuids = {gi["start"]: gi["compute_instances"][0]["uuid"] for gi in sim.state()["gpus"][0]["gpu_instances"]}
    layout = [{"devices": "all", "mig-enabled": True, "mig-devices": {"3g.40gb": 1, "2g.20gb": 1, "1g.10gb": 1}}]
    result, _failed = run_module(mig.main, {"config": layout})
    assert (result["kept"], result["destroyed"], result["created"]) == (2, 2, 4)
    kept = [gi for gi in sim.state()["gpus"][0]["gpu_instances"] if gi["profile_id"] == 9]
    assert kept[0]["compute_instances"][0]["uuid"] == uuids[kept[0]["start"]]


def test_config_file_and_names(sim, tmp_path):
    sim.init("A100-SXM4-80GB", 2)
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump({"version": "v1", "mig-configs": {
        "all-disabled": [{"devices": "all", "mig-enabled": False}],
        "custom": [{"devices": [0], "mig-enabled": True, "mig-devices": {"1c.7g.80gb": 7}},
                   {"devices": [1], "device-filter": "0x20B210DE", "mig-enabled": True,
                    "mig-devices": {"1g.10gb": 7}}]}}))
    result, failed = run_module(mig.main, {"config_file": str(path), "config_name": "custom"})
    assert not failed and result["gpus"][0]["config_entry"] == 0 and result["gpus"][1]["config_entry"] == 1
    gis = sim.state()["gpus"][0]["gpu_instances"]
    assert len(gis) == 1 and len(gis[0]["compute_instances"]) == 7
    assert len(sim.state()["gpus"][1]["gpu_instances"]) == 7
    off, failed = run_module(mig.main, {"config_file": str(path), "config_name": "all-disabled"})
    assert not failed and off["destroyed"] == 8 + 14
    assert [g["mig_current"] for g in sim.state()["gpus"]] == [0, 0]


@pytest.mark.parametrize("args,message", [
    ({"config_file": "/nonexistent.yaml", "config_name": "x"}, "cannot read config_file /nonexistent.yaml"),
    ({"config": [{"devices": "some", "mig-enabled": True}]}, "devices must be 'all' or a list"),
    ({"config": [{"devices": "all", "mig-enable": True}]}, "unexpected field 'mig-enable' (did you mean 'mig-enabled'?)"),
    ({"config": [{"devices": "all"}]}, "missing required field 'mig-enabled'"),
    ({"config": [{"devices": [5], "mig-enabled": False}]}, "devices 5 do not exist on this host"),
    ({"config": [{"devices": "all", "mig-enabled": True, "mig-devices": {"5g.30gb": 1}}]},
     "profile '5g.30gb' does not exist on GPU 0 (NVIDIA A100-SXM4-40GB)"),
    ({"config": [{"devices": "all", "mig-enabled": True, "mig-devices": {"3g.20gb": 2, "1g.5gb": 1}}]},
     "no arrangement of placements fits"),
    ({"config": [{"devices": "all", "mig-enabled": True, "mig-devices": {"1g.5gb": "two"}}]},
     "must be a whole number >= 0, not 'two'"),
    ({"config": [{"devices": "all", "device-filter": "0xZZ", "mig-enabled": True}]}, "is not a PCI id"),
])
def test_bad_input_fails_before_any_change(sim, args, message):
    sim.init("A100-SXM4-40GB", 1)
    result, failed = run_module(mig.main, args)
    assert failed and message in result["msg"]
    assert sim.state()["counters"]["nvml_writes"] == 0


def test_config_name_not_in_file(sim, tmp_path):
    sim.init("A100-SXM4-40GB", 1)
    path = tmp_path / "c.yaml"
    path.write_text("version: v1\nmig-configs:\n  all-1g.5gb:\n    - devices: all\n      mig-enabled: true\n"
                    "      mig-devices: {1g.5gb: 7}\n")
    result, failed = run_module(mig.main, {"config_file": str(path), "config_name": "all-1g.5gbb"})
    assert failed and "has no configuration 'all-1g.5gbb' (did you mean 'all-1g.5gb'?)" in result["msg"]
    path.write_text("version: v2\nmig-configs: {}\n")
    result, failed = run_module(mig.main, {"config_file": str(path), "config_name": "x"})
    assert failed and "unknown version 'v2'" in result["msg"]


def test_mig_on_non_mig_gpu(sim):
    sim.init("T4", 1)
    result, failed = run_module(mig.main, {"config": [{"devices": [0], "mig-enabled": True, "mig-devices": {}}]})
    assert failed and "does not support MIG" in result["msg"]
    result, failed = run_module(mig.main, {"config": [{"devices": "all", "mig-enabled": True, "mig-devices": {}}]})
    assert not failed and not result["changed"] and result["gpus"][0]["managed"] is False


def test_busy_instance_is_not_destroyed_without_force(sim):
    sim.init("H100-SXM5-80GB", 1, "--mig-enabled")
    run_module(mig.main, {"config": [{"devices": "all", "mig-enabled": True, "mig-devices": {"3g.40gb": 2}}]})
    gi_id = sim.state()["gpus"][0]["gpu_instances"][0]["id"]
    sleeper = subprocess.Popen(["sleep", "60"])
    try:
        sim.gpusim("process", "add", "--gpu", "0", "--pid", str(sleeper.pid), "--gi", str(gi_id), "--ci", "0",
                   "--live")
        target = {"config": [{"devices": "all", "mig-enabled": True, "mig-devices": {"7g.80gb": 1}}]}
        result, failed = run_module(mig.main, target)
        assert failed and f"used by process(es) {sleeper.pid}" in result["msg"] and "force: true" in result["msg"]
        assert len(sim.state()["gpus"][0]["gpu_instances"]) == 2
        result, failed = run_module(mig.main, dict(target, force=True))
        assert not failed and result["destroyed"] == 4
        assert sleeper.wait(timeout=5) != 0
    finally:
        sleeper.kill()


def test_ampere_mode_change_with_processes(sim):
    sim.init("A100-SXM4-40GB", 1)
    sim.gpusim("process", "add", "--gpu", "0", "--pid", "4242")
    result, failed = run_module(mig.main, {"config": BALANCED})
    assert failed and "processes use the GPU: 4242" in result["msg"]
    result, failed = run_module(mig.main, {"config": BALANCED, "reset": "never"})
    assert not failed and result["reboot_required"] and result["changed"]
    assert sim.state()["gpus"][0]["mig_pending"] == 1 and sim.state()["gpus"][0]["mig_current"] == 0
    sim.gpusim("reboot")
    result, failed = run_module(mig.main, {"config": BALANCED})
    assert not failed and not result["reboot_required"] and result["created"] == 8


def test_reset_blocked_by_a_holder_says_what(sim):
    sim.init("A30-24GB", 1)
    sim.gpusim("holder", "add", "nvidia-dcgm")
    layout = [{"devices": "all", "mig-enabled": True, "mig-devices": {"2g.12gb": 2}}]
    result, failed = run_module(mig.main, {"config": layout})
    assert failed and "GPU reset failed" in result["msg"] and "nvidia-dcgm" in result["msg"]
    assert result["done"] and "enable MIG mode" in result["done"][0]


def test_vm_without_reset_needs_reboot(sim):
    sim.init("A100-SXM4-40GB", 1, "--passthrough-vm")
    result, failed = run_module(mig.main, {"config": BALANCED})
    assert not failed and result["reboot_required"] and result["gpus"][0]["mig_pending"] is True


def test_hopper_idle_gpu_enables_without_reset(sim):
    sim.init("H200-141GB", 1)
    layout = [{"devices": "all", "mig-enabled": True, "mig-devices": {"1g.18gb": 7}}]
    result, failed = run_module(mig.main, {"config": layout})
    assert not failed and not result["reboot_required"] and result["gpus"][0]["reset"] is False
    assert result["created"] == 14


def test_failure_part_way_reports_and_next_run_converges(sim):
    sim.init("A100-SXM4-40GB", 1, "--mig-enabled")
    sim.gpusim("fault", "add", "--call", "nvmlDeviceCreateGpuInstanceWithPlacement", "--nth", "3",
               "--error", "UNKNOWN")
    result, failed = run_module(mig.main, {"config": BALANCED})
    # two GPU instances, each with its compute instance, were created before the third GI failed
    assert failed and result["changed"] and len(result["done"]) == 4 and "The next run continues" in result["msg"]
    assert [d.split(":")[1].split()[1] for d in result["done"]] == ["GPU", "compute", "GPU", "compute"]
    result, failed = run_module(mig.main, {"config": BALANCED})
    assert not failed and result["kept"] == 4 and result["created"] == 4


def install_boot(sim, tmp_path, config_path=None) -> str:
    """Install the boot code the way the role does (the module's boot_dir); returns the directory."""
    lib = str(tmp_path / "lib")
    config = [{"devices": "all", "mig-enabled": False}] if config_path is None else None
    args = {"config": config} if config else {"config_file": str(config_path), "config_name": "gpuops"}
    result, failed = run_module(mig.main, {**args, "boot_dir": lib})
    assert not failed, result.get("msg")
    return lib


def boot(sim, lib, *args):
    """The installed boot-time entry point, run as gpuops-mig.service runs it: only the installed code can
    satisfy its imports (the checkout's collection is not on the path)."""
    env = {k: v for k, v in os.environ.items() if k != "GPUOPS_SHARING_LIB"}
    env.update(PYTHONPATH=SIMULATOR, GPUSIM_STATE=sim.path)
    return subprocess.run([sys.executable, os.path.join(lib, "gpuops-mig-apply"), *args], capture_output=True,
                          text=True, check=False, env=env, cwd=lib)


def test_reboot_then_boot_unit_restores_the_layout(sim, tmp_path):
    sim.init("A100-SXM4-40GB", 2)
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump({"version": "v1", "mig-configs": {"gpuops": BALANCED}}))
    lib = install_boot(sim, tmp_path, path)
    before = [[(gi["profile_id"], gi["start"], gi["size"]) for gi in g["gpu_instances"]] for g in sim.state()["gpus"]]
    sim.gpusim("reboot")
    assert all(not g["gpu_instances"] for g in sim.state()["gpus"])
    done = boot(sim, lib, "--config-file", str(path), "--config-name", "gpuops")
    assert done.returncode == 0, done.stdout + done.stderr
    after = [[(gi["profile_id"], gi["start"], gi["size"]) for gi in g["gpu_instances"]] for g in sim.state()["gpus"]]
    assert after == before
    assert "GPU 0: " in done.stdout


def test_boot_entry_point_reports_errors(sim, tmp_path):
    sim.init("A100-SXM4-40GB", 1)
    lib = install_boot(sim, tmp_path)
    done = boot(sim, lib, "--config-file", str(tmp_path / "missing.yaml"), "--config-name", "x")
    assert done.returncode == 1 and "missing.yaml" in done.stdout


def test_boot_code_is_the_import_closure_stamped_and_pruned(sim, tmp_path):
    sim.init("A100-SXM4-40GB", 1)
    lib = install_boot(sim, tmp_path)
    pkg = os.path.join(lib, "ansible_collections", "gpuops", "sharing", "plugins", "module_utils")
    installed = sorted(os.listdir(pkg))
    assert "_mig_host.py" in installed and "_runner.py" in installed and "_catalogue.py" in installed
    assert "_gridd.py" not in installed and "_mps.py" not in installed, "only what the boot code imports"
    for name in installed:
        with open(os.path.join(pkg, name)) as fh:
            text = fh.read()
        assert "import ansible." not in text and "from ansible." not in text and "from ansible import" not in text, \
            f"{name} needs Ansible, which the boot unit does not have"
    with open(os.path.join(lib, "VERSION")) as fh:
        stamp = fh.read()
    with open(os.path.join(os.path.dirname(SIMULATOR), "galaxy.yml")) as fh:
        version = yaml.safe_load(fh)["version"]
    assert stamp.startswith(f"gpuops.sharing {version}\nsha256 ")
    # a stale file is removed, a changed one rewritten; a second run changes nothing
    with open(os.path.join(pkg, "_old.py"), "w") as fh:
        fh.write("# stale\n")
    with open(os.path.join(pkg, "_mig.py"), "a") as fh:
        fh.write("# edited by hand\n")
    result, failed = run_module(mig.main, {"config": [{"devices": "all", "mig-enabled": False}], "boot_dir": lib})
    assert not failed and result["changed"]
    rewritten = sorted(d.split(" file ")[1] for d in result["done"])
    assert rewritten == [os.path.join(pkg, "_mig.py"), os.path.join(pkg, "_old.py")]
    result, failed = run_module(mig.main, {"config": [{"devices": "all", "mig-enabled": False}], "boot_dir": lib})
    assert not failed and not result["changed"] and result["boot"]["version"] == f"gpuops.sharing {version}"


def test_boot_code_is_never_written_through_a_symlink(sim, tmp_path):
    sim.init("A100-SXM4-40GB", 1)
    lib = tmp_path / "lib"
    lib.mkdir()
    target = tmp_path / "elsewhere"
    os.symlink(target, lib / "gpuops-mig-apply")
    result, failed = run_module(mig.main, {"config": [{"devices": "all", "mig-enabled": False}], "boot_dir": str(lib)})
    assert failed and "is a symbolic link" in result["msg"] and not target.exists() and not result["changed"]


def test_client_services_are_stopped_around_a_change_only(sim, tmp_path, monkeypatch):
    """systemctl is a recording stand-in here; the fleet hosts run the real one."""
    log = tmp_path / "systemctl.log"
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "systemctl").write_text("#!/bin/sh\necho \"$@\" >> " + str(log) + "\n"
                                    "[ \"$1\" = is-active ] && { [ \"$2\" = nvidia-dcgm ] && echo active && exit 0; "
                                    "echo inactive; exit 3; }\nexit 0\n")
    (fake / "systemctl").chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake}{os.pathsep}{os.environ['PATH']}")
    sim.init("H100-SXM5-80GB", 1, "--mig-enabled")
    layout = [{"devices": "all", "mig-enabled": True, "mig-devices": {"3g.40gb": 2}}]
    result, failed = run_module(mig.main, {"config": layout, "client_services": ["nvidia-dcgm", "dcgm-exporter"]})
    assert not failed and result["client_services"] == ["nvidia-dcgm"]
    assert result["done"][0] == "stop nvidia-dcgm (they hold the GPUs)" and result["done"][-1] == "start nvidia-dcgm again"
    calls = log.read_text().splitlines()
    assert "stop nvidia-dcgm" in calls and "start nvidia-dcgm" in calls and "stop dcgm-exporter" not in calls
    log.write_text("")
    result, failed = run_module(mig.main, {"config": layout, "client_services": ["nvidia-dcgm"]})
    assert not failed and not result["changed"] and "stop nvidia-dcgm" not in log.read_text()
    sim.gpusim("fault", "add", "--call", "nvmlDeviceCreateGpuInstanceWithPlacement", "--error", "UNKNOWN")
    result, failed = run_module(mig.main, {"config": [{"devices": "all", "mig-enabled": True,
                                                       "mig-devices": {"7g.80gb": 1}}],
                                           "client_services": ["nvidia-dcgm"]})
    assert failed and result["done"][-1] == "start nvidia-dcgm again", "started again after a failure"
    for bad in ("-h", "dcgm; reboot", "a b", "$(id)"):
        result, failed = run_module(mig.main, {"config": layout, "client_services": [bad]})
        assert failed and "client_services must be systemd unit names" in result["msg"] and repr(bad) in result["msg"]


def test_term_then_kill_timeout(sim):
    """A process that ignores SIGTERM is killed after the timeout."""
    sim.init("H100-SXM5-80GB", 1, "--mig-enabled")
    run_module(mig.main, {"config": [{"devices": "all", "mig-enabled": True, "mig-devices": {"7g.80gb": 1}}]})
    stubborn = subprocess.Popen([sys.executable, "-c", "import signal, time; signal.signal(signal.SIGTERM, "
                                 "signal.SIG_IGN); time.sleep(60)"])
    try:
        time.sleep(0.3)
        gi_id = sim.state()["gpus"][0]["gpu_instances"][0]["id"]
        sim.gpusim("process", "add", "--gpu", "0", "--pid", str(stubborn.pid), "--gi", str(gi_id), "--ci", "0",
                   "--live")
        layout = [{"devices": "all", "mig-enabled": True, "mig-devices": {"3g.40gb": 2}}]
        result, failed = run_module(mig.main, {"config": layout, "force": True, "force_timeout": 0.5})
        assert not failed, result.get("msg")
        assert stubborn.wait(timeout=5) == -9
    finally:
        stubborn.kill()


def test_reset_blockers_are_named(tmp_path):
    for pid, comm in ((101, "nvidia-persiste"), (202, "nv-hostengine"), (303, "bash"), (404, "nv-fabricmanage")):
        (tmp_path / str(pid)).mkdir()
        (tmp_path / str(pid) / "comm").write_text(comm + "\n")
    (tmp_path / "modules").write_text("nvidia_drm 122880 4 - Live 0x0\nnvidia 1234 10 nvidia_drm, Live 0x0\n")
    found = "\n".join(_mig_host.reset_blockers(str(tmp_path)))
    assert "nvidia-persistenced (pid 101)" in found and "systemctl stop nvidia-persistenced" in found
    assert "DCGM (nv-hostengine) (pid 202)" in found and "Fabric Manager" in found
    assert "nvidia_drm module is loaded and in use" in found and "bash" not in found


def test_driver_without_profiles_while_mig_is_off(sim):
    """Drivers that list no profiles until MIG is on: the layout is checked right after enabling."""
    sim.init("H100-SXM5-80GB", 1)
    sim.gpusim("fault", "add", "--call", "nvmlDeviceGetGpuInstanceProfileInfo*", "--error", "NOT_SUPPORTED",
               "--times", "18")
    layout = [{"devices": "all", "mig-enabled": True, "mig-devices": {"3g.40gb": 2}}]
    result, failed = run_module(mig.main, {"config": layout})
    assert not failed, result.get("msg")
    assert result["created"] == 4 and result["gpus"][0]["mig_enabled"]


# ---- real mig-parted files from the field (tests/unit/plugins/module_utils/fixtures/mig_parted), unchanged

REAL = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "module_utils", "fixtures",
                    "mig_parted")
REAL_DEFAULT = os.path.join(REAL, "mig-parted_deployments_systemd_config-default.yaml.txt")
REAL_CONFIGMAP = os.path.join(REAL, "gpu-operator_assets_state-mig-manager_0400_configmap.yaml.txt")
REAL_EXAMPLES = os.path.join(REAL, "mig-parted_examples_config.yaml.txt")
MIG_MODELS = [k for k in catalogue.model_keys() if catalogue.MODELS[k].get("mig")]


def _unsimulated_b200(model):
    missing = catalogue.UNSOURCED_PROFILES.get(model)
    if missing:
        pytest.xfail(f"all-balanced on {model} uses {', '.join(missing)}, which the simulator's catalogue lacks")


@pytest.mark.parametrize("path", [REAL_DEFAULT, REAL_CONFIGMAP], ids=["config-default.yaml", "default-mig-parted-config"])
@pytest.mark.parametrize("model", MIG_MODELS)
def test_real_all_balanced_applies_on_every_model(sim, model, path):
    """mig-manager's file (and the GPU Operator's ConfigMap holding it) as config_file, unchanged."""
    _unsimulated_b200(model)
    sim.init(model, 2)
    result, failed = run_module(mig.main, {"config_file": path, "config_name": "all-balanced"})
    assert not failed, result["msg"]
    assert all(g["managed"] and g["mig_enabled"] and g["instances"] for g in result["gpus"])
    again, failed = run_module(mig.main, {"config_file": path, "config_name": "all-balanced"})
    assert not failed and not again["changed"] and again["kept"] == result["created"]


def test_real_dgx_a100_custom_config(sim):
    """examples/config.yaml's custom-config is for a DGX A100: eight A100-SXM4-40GB."""
    sim.init("A100-SXM4-40GB", 8)
    result, failed = run_module(mig.main, {"config_file": REAL_EXAMPLES, "config_name": "custom-config"})
    assert not failed, result["msg"]
    gpus = result["gpus"]
    assert [g["mig_enabled"] for g in gpus] == [False] * 4 + [True] * 4
    assert [len(g["instances"]) for g in gpus[4:]] == [7, 3, 2, 4]


def test_real_dgx_station_config(sim):
    """The DGX Station A100 file: its A100 80GB entries apply, the display GPU's (0x1FB010DE) select nothing here."""
    sim.init("A100-SXM4-80GB", 4)
    path = os.path.join(REAL, "mig-parted_examples_dgx-station-80gb-config.yaml.txt")
    result, failed = run_module(mig.main, {"config_file": path, "config_name": "all-balanced-dgx-station-80"})
    assert not failed, result["msg"]
    assert all(sorted(i["profile"] for i in g["instances"]) == ["1g.10gb", "1g.10gb", "2g.20gb", "3g.40gb"]
               for g in result["gpus"])


@pytest.mark.parametrize("model,args,message", [
    ("H100-SXM5-80GB", {"config_file": REAL_DEFAULT, "config_name": "all-1g.5gb"},
     "profile '1g.5gb' does not exist on GPU 0 (NVIDIA H100 80GB HBM3) (did you mean '1g.10gb'"),
    ("H100-SXM5-80GB", {"config_file": REAL_DEFAULT, "config_name": "all-1g.10gb-me"},
     "has no configuration 'all-1g.10gb-me' (did you mean 'all-1g.10gb.me'"),
    ("H100-SXM5-80GB", {"config_file": REAL_DEFAULT, "config_name": "all-1g.35gb"},
     "no entry of the configuration selects any MIG-capable GPU of this host: its device-filter values 0x233510DE, "
     "0x31C210DE match none of GPU 0 (NVIDIA H100 80GB HBM3, PCI device id 0x233010DE), GPU 1 (NVIDIA H100 80GB HBM3, "
     "PCI device id 0x233010DE); the configuration may be meant for another GPU model"),
    ("H100-SXM5-80GB", {"config_file": os.path.join(REAL, "mig-parted_examples_dgx-station-80gb-config.yaml.txt"),
                        "config_name": "all-1g.10gb-dgx-station-80"},
     "its device-filter values 0x20B210DE, 0x1FB010DE match none of GPU 0"),
    ("A100-SXM4-40GB", {"config_file": REAL_EXAMPLES, "config_name": "custom-config"},
     "devices 2, 3, 4, 5, 6, 7 do not exist on this host; it has GPUs 0 (GPU-"),
    ("A100-SXM4-40GB", {"config_file": REAL_CONFIGMAP, "config_name": "all-1g.10gb.me"},
     "profile '1g.10gb+me' does not exist on GPU 0 (NVIDIA A100-SXM4-40GB) (did you mean '1g.5gb+me'"),
    ("A30-24GB", {"config_file": REAL_DEFAULT, "config_name": "all-1g.5gb"},
     "profile '1g.5gb' does not exist on GPU 0 (NVIDIA A30) (did you mean '1g.6gb'"),
    ("A100-SXM4-40GB", {"config_file": REAL_DEFAULT},
     "has 81 configurations; say which one with config_name: all-1g.10gb, "),
    ("A100-SXM4-40GB", {"config_file": os.path.join(REAL, "mig-parted_deployments_systemd_hooks-default.yaml.txt"),
                        "config_name": "all-disabled"}, "is a mig-parted hooks file (hooks:), not a MIG configuration"),
    ("A100-SXM4-40GB", {"config_file": os.path.join(REAL, "bad_gpu-operator_values-example-config.yaml.txt"),
                        "config_name": "custom-mig"}, "bad_gpu-operator_values-example-config.yaml.txt, line 13, "
                                                      "column 8: not valid YAML"),
    ("A100-SXM4-40GB", {"config_file": os.path.join(REAL, "bad_mig-parted_deployments_systemd_config-default.yaml-"
                                                          "7aa03c41.txt"), "config_name": "all-1g.5gb"},
     "mig-configs.all-1g.10gb (line 37): must be a list of entries, not a single mapping"),
    ("A100-SXM4-40GB", {"config_name": "all-balanced", "config": BALANCED}, "config_name"),
])
def test_real_files_bad_choices_fail_before_any_change(sim, model, args, message):
    sim.init(model, 2)
    result, failed = run_module(mig.main, args)
    assert failed and message in result["msg"], result["msg"]
    assert sim.state()["counters"]["nvml_writes"] == 0


def test_config_name_may_be_left_out_of_a_single_config_file(sim, tmp_path):
    sim.init("A100-SXM4-40GB", 1)
    path = tmp_path / "one.yaml"
    path.write_text(yaml.safe_dump({"version": "v1", "mig-configs": {"gpuops": BALANCED}}))
    result, failed = run_module(mig.main, {"config_file": str(path)})
    assert not failed and result["created"] == 8


def test_a_name_from_another_driver_branch_is_applied_with_a_warning(sim, monkeypatch):
    """R535/R545 named A100 80GB's 3g.40gb '3g.39gb' (NVIDIA/mig-parted issue #31): a config written
    then still applies, to the same profile, and the task says which name it took."""
    from ansible.module_utils import basic

    sim.init("A100-SXM4-80GB", 1)
    warnings = []
    monkeypatch.setattr(basic.AnsibleModule, "warn", lambda self, text: warnings.append(text))
    config = [{"devices": "all", "mig-enabled": True, "mig-devices": {"3g.39gb": 2}}]
    result, failed = run_module(mig.main, {"config": config})
    assert not failed and result["changed"]
    assert sorted(i["profile"] for i in result["gpus"][0]["instances"]) == ["3g.40gb", "3g.40gb"]
    assert warnings == ["profile '3g.39gb' is taken as 3g.40gb (profile ID 9) on GPU 0 (NVIDIA A100-SXM4-80GB): "
                        "same slices, named 1 GB apart (driver branches name profiles differently); write that "
                        "name to silence this note"]
    again, failed = run_module(mig.main, {"config": config})
    assert not failed and not again["changed"]


@pytest.mark.parametrize("model,mig_devices", [
    ("A100-SXM4-40GB", {"5g.30gb": 1}),
    ("A100-SXM4-40GB", {"3g.20gb": 2, "1g.5gb": 1}),
    ("H100-SXM5-80GB", {"1g.5gb": 7}),
])
@pytest.mark.parametrize("mig_off", ["refuse", "list"])
def test_layout_refusals_before_the_mode_change_under_both_drivers(sim, model, mig_devices, mig_off):
    """A bad layout is refused before MIG mode changes, whether the driver answers GPU-instance profile
    queries while MIG is off or not (gpusim --profiles-when-mig-off; CATALOGUE_SOURCES.md)."""
    sim.init(model, 1, "--profiles-when-mig-off", mig_off)
    result, failed = run_module(mig.main, {"config": [{"devices": "all", "mig-enabled": True,
                                                       "mig-devices": mig_devices}]})
    assert failed and "MIG mode was enabled first" not in result["msg"]
    assert sim.state()["counters"]["nvml_writes"] == 0


def _recording_systemctl(tmp_path, monkeypatch):
    """A systemctl that records its calls and keeps 'enabled' units in a file (the fleet hosts run the real one)."""
    log, enabled, fake = tmp_path / "systemctl.log", tmp_path / "enabled", tmp_path / "bin"
    fake.mkdir()
    enabled.write_text("")
    (fake / "systemctl").write_text(
        "#!/bin/sh\necho \"$@\" >> " + str(log) + "\n"
        "case \"$1\" in\n"
        "  is-enabled) grep -qx \"$2\" " + str(enabled) + " && { echo enabled; exit 0; }; echo disabled; exit 1;;\n"
        "  enable) echo \"$2\" >> " + str(enabled) + ";;\n"
        "esac\nexit 0\n")
    (fake / "systemctl").chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake}{os.pathsep}{os.environ['PATH']}")
    return log


def test_boot_unit_is_written_enabled_and_restores_the_layout(sim, tmp_path, monkeypatch):
    """One module call installs the boot code, the layout file and the unit, and enables it; the unit's own
    command line, run after a reboot, brings the layout back; the next run is one is-enabled call."""
    log = _recording_systemctl(tmp_path, monkeypatch)
    sim.init("A100-SXM4-40GB", 2)
    lib, units, etc = tmp_path / "lib", tmp_path / "units", tmp_path / "etc"
    request = {"config": BALANCED, "boot_dir": str(lib),
               "boot_unit": {"unit_dir": str(units), "python": sys.executable, "config_dir": str(etc),
                             "config_name": "balanced"}}
    check, failed = run_module(mig.main, {**request, "_ansible_check_mode": True})
    assert not failed and check["changed"] and not units.exists() and log.read_text() == "is-enabled gpuops-mig.service\n"
    first, failed = run_module(mig.main, request)
    assert not failed, first.get("msg")
    for text in (f"install the boot code file {units}/gpuops-mig.service", f"install the boot code file {etc}/config.yaml",
                 "systemctl daemon-reload", "enable gpuops-mig.service (re-applies the layout at boot)"):
        assert text in check["operations"] and text in first["done"]
    unit = (units / "gpuops-mig.service").read_text()
    assert first["boot"]["unit"] == str(units / "gpuops-mig.service")
    assert first["boot"]["config_file"] == str(etc / "config.yaml")
    assert f'ExecStart="{sys.executable}" "{lib}/gpuops-mig-apply" --config-file "{etc}/config.yaml" ' \
           '--config-name "balanced" --reset auto\n' in unit
    assert "After=local-fs.target systemd-modules-load.service nvidia-persistenced.service " \
           "nvidia-fabricmanager.service\n" in unit and "WantedBy=multi-user.target\n" in unit
    written = yaml.safe_load((etc / "config.yaml").read_text())
    assert written == {"version": "v1", "mig-configs": {"balanced": BALANCED}}
    # observed, reloaded and enabled, then verified enabled
    assert log.read_text().splitlines() == ["is-enabled gpuops-mig.service", "is-enabled gpuops-mig.service",
                                            "daemon-reload", "enable gpuops-mig.service",
                                            "is-enabled gpuops-mig.service"]
    # the next run: nothing to do, one systemctl call
    log.write_text("")
    again, failed = run_module(mig.main, request)
    assert not failed and not again["changed"] and log.read_text() == "is-enabled gpuops-mig.service\n"
    # a reboot: the unit's command line restores the layout
    before = [[(gi["profile_id"], gi["start"]) for gi in g["gpu_instances"]] for g in sim.state()["gpus"]]
    sim.gpusim("reboot")
    argv = shlex.split(unit.split("ExecStart=", 1)[1].splitlines()[0])
    env = {k: v for k, v in os.environ.items() if k != "GPUOPS_SHARING_LIB"}
    env.update(PYTHONPATH=SIMULATOR, GPUSIM_STATE=sim.path)
    done = subprocess.run(argv, capture_output=True, text=True, check=False, env=env, cwd=str(lib))
    assert done.returncode == 0, done.stdout + done.stderr
    assert [[(gi["profile_id"], gi["start"]) for gi in g["gpu_instances"]] for g in sim.state()["gpus"]] == before


@pytest.mark.skipif(not shutil.which("systemd-analyze"), reason="systemd-analyze is not installed")
def test_boot_unit_passes_systemd_analyze_verify(tmp_path):
    from ansible_collections.gpuops.sharing.plugins.module_utils import _mig_boot
    for name in ("python3", "gpuops-mig-apply"):
        os.symlink("/bin/true", tmp_path / name)
    cfg = {"name": "gpuops-mig", "unit_dir": str(tmp_path), "python": str(tmp_path / "python3"),
           "config_dir": str(tmp_path), "config_name": "gpuops"}
    path = tmp_path / "gpuops-mig.service"
    path.write_text(_mig_boot.unit_text(cfg, str(tmp_path / "gpuops-mig-apply"), str(tmp_path / "config.yaml"),
                                        "gpuops", "never"))
    done = subprocess.run(["systemd-analyze", "verify", str(path)], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr


@pytest.mark.parametrize("unit, extra, message", [
    ({}, {"boot_dir": None}, "boot_unit needs boot_dir: the unit runs the boot code the module installs there"),
    ({"name": "gpuops mig"}, {}, "boot_unit.name='gpuops mig' is not a unit name"),
    ({"config_name": "-x"}, {}, "boot_unit.config_name='-x' is not valid"),
    ({"python": "python3"}, {}, "boot_unit.python='python3' is not valid: give an absolute path"),
    ({"config_dir": "/etc/$(id)"}, {}, "boot_unit.config_dir='/etc/$(id)' is not valid"),
    ({"unit_dir": "/etc/../tmp"}, {}, "boot_unit.unit_dir='/etc/../tmp' is not valid"),
])
def test_boot_unit_bad_values_are_refused_before_any_change(sim, tmp_path, unit, extra, message):
    sim.init("A100-SXM4-40GB", 1)
    request = {"config": BALANCED, "boot_dir": str(tmp_path / "lib"), "boot_unit": unit, **extra}
    request = {k: v for k, v in request.items() if v is not None}
    result, failed = run_module(mig.main, request)
    assert failed and message in result["msg"] and not result["changed"]
    assert not sim.state()["gpus"][0]["gpu_instances"] and not (tmp_path / "lib").exists()
