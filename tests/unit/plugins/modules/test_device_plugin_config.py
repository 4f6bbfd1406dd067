"""gpuops.sharing.device_plugin_config on simulated hosts (gpusim as the node's NVML)."""

from __future__ import annotations

import os
import stat
import subprocess
import sys

import pytest
import yaml
from ansible.module_utils.basic import AnsibleModule

from ansible_collections.gpuops.sharing.plugins.module_utils import _device_plugin_host
from ansible_collections.gpuops.sharing.plugins.modules import device_plugin_config as module

from ...conftest import SIMULATOR, run_module

SMI = [sys.executable, os.path.join(SIMULATOR, "libexec", "nvidia-smi.py")]


@pytest.fixture
def warned(monkeypatch) -> list[str]:
    seen: list[str] = []
    monkeypatch.setattr(AnsibleModule, "warn", lambda self, text: seen.append(text))
    return seen


def smi(*argv: str) -> None:
    done = subprocess.run(SMI + list(argv), capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stdout + done.stderr


def test_time_slicing_written_once_check_mode_first(sim, tmp_path):
    sim.init("H100-SXM5-80GB", 2)
    dest = str(tmp_path / "dp" / "config.yaml")
    request = {"time_slicing": {"replicas": 4, "rename_by_default": True}, "dest": dest, "create_parent": True}
    check, failed = run_module(module.main, {**request, "_ansible_check_mode": True, "_ansible_diff": True})
    assert not failed and check["changed"], check
    assert check["operations"] == [f"write {dest} (new file)"]
    assert not os.path.exists(os.path.dirname(dest))          # check mode wrote nothing, not even the folder
    assert check["diff"]["before"] == "" and "renameByDefault: true" in check["diff"]["after"]
    assert check["resources"] == [{"name": "nvidia.com/gpu.shared", "count": 8, "replicas": 4,
                                   "shares": "nvidia.com/gpu"}]
    assert check["gpus_checked"] is True

    real, failed = run_module(module.main, request)
    assert not failed and real["changed"]
    with open(dest, encoding="utf-8") as fh:
        written = yaml.safe_load(fh)
    assert written == real["config"] == check["config"]
    assert written["sharing"]["timeSlicing"]["resources"] == [{"name": "nvidia.com/gpu", "replicas": 4}]
    assert stat.S_IMODE(os.stat(dest).st_mode) == 0o644

    again, failed = run_module(module.main, request)
    assert not failed and not again["changed"] and again["operations"] == []
    again_check, failed = run_module(module.main, {**request, "_ansible_check_mode": True})
    assert not failed and not again_check["changed"]


def test_mode_of_an_existing_file_is_kept(sim, tmp_path):
    sim.init("A10", 1)
    dest = tmp_path / "config.yaml"
    dest.write_text("version: v1\n")
    os.chmod(dest, 0o600)
    result, failed = run_module(module.main, {"mig_strategy": "none", "dest": str(dest)})
    assert not failed and result["changed"]
    assert stat.S_IMODE(os.stat(dest).st_mode) == 0o600


def test_mps_replicas_over_the_client_limit_of_an_old_gpu(sim):
    sim.init("V100", 2)          # compute capability 7.0: 16 MPS clients
    result, failed = run_module(module.main, {"mps": {"replicas": 20}})
    assert failed
    assert "invalid MPS configuration: invalid device maximum allowed replicas exceeded: 20 > 16" in result["msg"]
    assert "Tesla V100-SXM2-32GB" in result["msg"] and result["changed"] is False and result["done"] == []
    ok, failed = run_module(module.main, {"mps": {"replicas": 16}})
    assert not failed and [r["count"] for r in ok["resources"]] == [32]


def test_mps_memory_share_on_this_node(sim):
    sim.init("T4", 1)
    result, failed = run_module(module.main, {"mps": {"replicas": 40}, "min_replica_memory": "1G"})
    assert failed and "below min_replica_memory (1024 MiB); give at most" in result["msg"]
    result, failed = run_module(module.main, {"mps": {"replicas": 40}, "min_replica_memory": "0"})
    assert not failed, result


def test_mps_on_mig_devices_is_refused(sim):
    sim.init("H100-SXM5-80GB", 1, "--mig-enabled")
    smi("mig", "-i", "0", "-cgi", "19,19", "-C")
    result, failed = run_module(module.main, {"mig_strategy": "single", "mps": {"replicas": 2}})
    assert failed and "sharing using MPS is not supported for MIG devices" in result["msg"]


def test_mixed_strategy_names_come_from_the_mig_devices(sim, warned):
    sim.init("H100-SXM5-80GB", 2, "--mig-enabled")
    # GPU 1, not 0: gpusim's nvidia-smi takes -i 0 for every GPU whose PCI bus id ends in 0
    smi("mig", "-i", "1", "-cgi", "19,19,9", "-C")
    result, failed = run_module(module.main, {"mig_strategy": "mixed",
                                              "time_slicing": {"resources": [{"name": "mig-1g.10gb", "replicas": 3}]}})
    assert not failed, result
    assert [(r["name"], r["count"]) for r in result["resources"]] == [
        ("nvidia.com/mig-1g.10gb", 6), ("nvidia.com/mig-3g.40gb", 1)]
    # GPU 0 is in MIG mode without MIG devices: it advertises nothing, which is said
    assert any("GPU 0: MIG is enabled but has no MIG devices" in w for w in warned)


def test_both_sharing_options_are_refused_by_the_argument_spec(sim):
    sim.init("A10", 1)
    result, failed = run_module(module.main, {"mps": {"replicas": 2}, "time_slicing": {"replicas": 2}})
    assert failed and "mutually exclusive" in result["msg"]


def test_unknown_keys_warned(sim, warned):
    sim.init("A10", 1)
    result, failed = run_module(module.main, {"config": {"version": "v1", "sharing": {
        "timeSlicing": {"resources": [{"name": "gpu", "replica": 4, "replicas": 4}]}}}})
    assert not failed
    assert any("resources[0].replica: unknown key, which the device plugin ignores silently (did you mean replicas?)"
               in w for w in warned)


def test_bad_config_fails_before_writing(sim, tmp_path):
    sim.init("A10", 1)
    dest = tmp_path / "config.yaml"
    result, failed = run_module(module.main, {"config": {"sharing": {"timeSlicing": {
        "resources": [{"name": "gpu", "replicas": 1}]}}}, "dest": str(dest)})
    assert failed and "number of replicas must be >= 2" in result["msg"]
    assert not dest.exists()
    assert set(result) >= {"config", "content", "strategy", "resources", "resource_names", "gpus_checked", "dest",
                           "operations", "done"}


def test_symlink_dest_is_refused(sim, tmp_path):
    sim.init("A10", 1)
    target = tmp_path / "elsewhere.yaml"
    target.write_text("keep\n")
    link = tmp_path / "config.yaml"
    link.symlink_to(target)
    result, failed = run_module(module.main, {"mig_strategy": "none", "dest": str(link)})
    assert failed and "is a symbolic link" in result["msg"] and "not followed" in result["msg"]
    assert target.read_text() == "keep\n"


def test_missing_folder_needs_create_parent(sim, tmp_path):
    sim.init("A10", 1)
    result, failed = run_module(module.main, {"mig_strategy": "none", "dest": str(tmp_path / "no" / "c.yaml")})
    assert failed and "does not exist; create it first or set create_parent: true" in result["msg"]


def test_relative_dest_is_refused(sim):
    sim.init("A10", 1)
    result, failed = run_module(module.main, {"mig_strategy": "none", "dest": "config.yaml"})
    assert failed and "give an absolute path" in result["msg"]


def test_failure_after_the_write_returns_done(sim, tmp_path, monkeypatch):
    sim.init("A10", 1)
    dest = tmp_path / "config.yaml"
    real_read = _device_plugin_host.read
    calls = []

    def read(path):
        calls.append(path)
        if len(calls) == 3:                      # plan, pre-write guard, then the read-back
            return b"changed by someone else\n", 0o644
        return real_read(path)

    monkeypatch.setattr(_device_plugin_host, "read", read)
    result, failed = run_module(module.main, {"mig_strategy": "none", "dest": str(dest)})
    assert failed and result["changed"] is True and result["done"] == [f"write {dest} (new file)"]
    assert "does not hold the written config" in result["msg"]


def test_without_nvml_the_node_checks_are_skipped_with_a_warning(monkeypatch, warned):
    monkeypatch.setattr(_device_plugin_host, "HAS_PYNVML", False)
    result, failed = run_module(module.main, {"mps": {"replicas": 40}})
    assert not failed and result["gpus_checked"] is False
    assert any("not checked against this host's GPUs" in w for w in warned)
    assert result["resources"] == [{"name": "nvidia.com/gpu", "count": None, "replicas": 40,
                                    "shares": "nvidia.com/gpu"}]


def test_without_driver_the_node_checks_are_skipped(sim, warned):
    sim.init("A10", 1)
    sim.gpusim("fault", "add", "--library-missing")
    result, failed = run_module(module.main, {"mps": {"replicas": 4}})
    assert not failed and result["gpus_checked"] is False
    assert any("libnvidia-ml.so.1" in w for w in warned)


def test_every_example_runs(sim, tmp_path):
    sim.init("H100-SXM5-80GB", 1, "--mig-enabled")
    smi("mig", "-i", "0", "-cgi", "19,19", "-C")
    tasks = [t for t in yaml.safe_load(module.EXAMPLES) if "gpuops.sharing.device_plugin_config" in t]
    assert len(tasks) == 3
    for task in tasks:
        args = dict(task["gpuops.sharing.device_plugin_config"])
        if "dest" in args:
            args["dest"] = str(tmp_path / args["dest"].lstrip("/"))
        if args.get("mps") or (args.get("config") or {}).get("sharing", {}).get("mps"):
            sim.init("H100-SXM5-80GB", 1)          # MPS needs whole GPUs
        result, failed = run_module(module.main, args)
        assert not failed, (task["name"], result)
