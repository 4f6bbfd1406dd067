from __future__ import annotations

from ansible_collections.gpuops.sharing.plugins.modules import gpu_info

from ...conftest import run_module


def codes(result):
    return [p["code"] for p in result["problems"]]


def test_mixed_host_facts(sim):
    sim.init("A100-SXM4-40GB", 2, "--mig-enabled")
    result, failed = run_module(gpu_info.main, {})
    assert not failed and result["changed"] is False
    assert result["driver_version"] == "580.95.05"
    gpu = result["gpus"][0]
    assert gpu["name"] == "NVIDIA A100-SXM4-40GB" and gpu["pci_device_id"] == "0x20B010DE"
    assert gpu["architecture"] == "ampere" and gpu["mig_capable"] and gpu["mig_enabled"]
    names = [p["name"] for p in gpu["gpu_instance_profiles"]]
    assert "3g.20gb" in names and "7g.40gb" in names
    three_g = next(p for p in gpu["gpu_instance_profiles"] if p["name"] == "3g.20gb")
    assert three_g["placements"] == [{"start": 0, "size": 4}, {"start": 4, "size": 4}]
    assert three_g["remaining"] == 2
    assert "mig_without_instances" in codes(result)


def test_instances_processes_and_problems(sim, tmp_path):
    import subprocess
    import sys
    sim.init("H100-SXM5-80GB", 1, "--mig-enabled")
    smi = [sys.executable, "simulator/libexec/nvidia-smi.py"]
    assert subprocess.run(smi + ["mig", "-cgi", "9", "-C"], capture_output=True, check=False).returncode == 0
    assert subprocess.run(smi + ["mig", "-cgi", "19"], capture_output=True, check=False).returncode == 0
    sim.gpusim("process", "add", "--gpu", "0", "--pid", "321", "--gi", "2", "--ci", "0", "--memory", "512")
    result, failed = run_module(gpu_info.main, {"include_profiles": False})
    assert not failed
    gpu = result["gpus"][0]
    assert gpu["gpu_instance_profiles"] == []
    by_profile = {gi["profile"]: gi for gi in gpu["gpu_instances"]}
    assert set(by_profile) == {"3g.40gb", "1g.10gb"}
    ci = by_profile["3g.40gb"]["compute_instances"][0]
    assert ci["mig_uuid"].startswith("MIG-") and ci["placement"] == {"start": 0, "size": 3}
    assert gpu["processes"] == [{"pid": 321, "used_memory_mib": 512, "gpu_instance_id": 2,
                                 "compute_instance_id": 0, "mig_uuid": ci["mig_uuid"]}]
    assert "gpu_instance_without_compute_instance" in codes(result)
    assert "mig_unused_slices" in codes(result)


def test_pending_mig_mode_is_a_problem(sim):
    sim.init("A100-SXM4-80GB", 1)
    sim.gpusim("process", "add", "--gpu", "0", "--pid", "9")
    import pynvml
    pynvml.nvmlInit()
    pynvml.nvmlDeviceSetMigMode(pynvml.nvmlDeviceGetHandleByIndex(0), 1)
    pynvml.nvmlShutdown()
    result, failed = run_module(gpu_info.main, {})
    assert not failed
    pending = [p for p in result["problems"] if p["code"] == "mig_pending_reset"]
    assert pending and "nvidia-smi -r -i 0" in pending[0]["hint"]
    assert result["gpus"][0]["mig_enabled"] is False and result["gpus"][0]["mig_pending"] is True


def test_no_driver_is_a_problem_not_a_traceback(sim):
    sim.init("T4", 1)
    sim.gpusim("fault", "add", "--library-missing")
    result, failed = run_module(gpu_info.main, {})
    assert not failed and result["gpus"] == []
    assert result["problems"][0]["code"] == "no_driver"
    assert "NVIDIA driver not installed or libnvidia-ml.so.1 not on the loader path" in result["problems"][0]["message"]


def test_no_driver_fails_with_require_gpu(sim):
    sim.init("T4", 1)
    sim.gpusim("fault", "add", "--library-missing")
    result, failed = run_module(gpu_info.main, {"require_gpu": True})
    assert failed and "libnvidia-ml.so.1" in result["msg"]


def test_lost_gpu_is_reported_and_others_read(sim):
    sim.init("L40S", 2)
    sim.gpusim("fault", "add", "--gpu-lost", "1")
    result, failed = run_module(gpu_info.main, {})
    assert not failed and [g["index"] for g in result["gpus"]] == [0]
    lost = [p for p in result["problems"] if p["code"] == "gpu_lost"]
    assert lost and lost[0]["gpu"] == 1 and "GPU is lost" in lost[0]["message"]


def test_non_mig_gpu(sim):
    sim.init("T4", 1)
    result, failed = run_module(gpu_info.main, {})
    assert not failed
    gpu = result["gpus"][0]
    assert gpu["mig_capable"] is False and gpu["mig_pending"] is None and gpu["gpu_instances"] == []


def test_reads_do_not_write(sim):
    sim.init("B200-180GB", 2, "--mig-enabled")
    run_module(gpu_info.main, {})
    assert sim.state()["counters"]["nvml_writes"] == 0
