"""gpuops.sharing.mig on the shared runner: every refusal before the first write (issue: plan every GPU
before the first write), failures that report what was done, bounded work, and the fault and
check-mode-against-real suites.  Each defect test failed on the code before the runner."""

from __future__ import annotations

import os
import random
import time

import pytest

from ansible_collections.gpuops.sharing.plugins.module_utils import _mig_host
from ansible_collections.gpuops.sharing.plugins.modules import gpu_info, mig
from gpusim import catalogue, layouts
from gpusim import state as gstate

from ...conftest import run_module

BALANCED = {"1g.5gb": 2, "2g.10gb": 1, "3g.20gb": 1}


def entry(devices, mig_devices=None, enabled=True):
    out = {"devices": devices, "mig-enabled": enabled}
    if enabled:
        out["mig-devices"] = mig_devices
    return out


def writes(sim) -> int:
    return sim.state()["counters"]["nvml_writes"]


# ---- defect 1: compute instance sizes a GPU instance does not offer ---------------------------------
@pytest.mark.parametrize("name,offered", [("3c.4g.20gb", "1, 2, 4"), ("5c.7g.40gb", "1, 2, 3, 4, 7"),
                                          ("6c.7g.40gb", "1, 2, 3, 4, 7")])
def test_compute_instance_size_not_offered_is_refused_before_any_change(sim, name, offered):
    sim.init("A100-SXM4-40GB", 1, "--mig-enabled")
    run_module(mig.main, {"config": [entry("all", BALANCED)]})
    before, count = sim.state()["gpus"][0]["gpu_instances"], writes(sim)
    for check in (True, False):
        result, failed = run_module(mig.main, {"config": [entry("all", {name: 1})], "_ansible_check_mode": check})
        assert failed and not result["changed"] and result["done"] == []
        assert f"'{name}' does not exist on GPU 0" in result["msg"]
        assert f"offers compute instances of {offered} compute slices" in result["msg"]
    assert writes(sim) == count and sim.state()["gpus"][0]["gpu_instances"] == before


# ---- defect 2: a busy instance on GPU 1 while GPU 0 and GPU 1 change together ------------------------
def test_busy_instance_on_second_gpu_refuses_before_touching_the_first(sim):
    sim.init("A100-SXM4-40GB", 2, "--mig-enabled")
    run_module(mig.main, {"config": [entry("all", {"3g.20gb": 2})]})
    gi = sim.state()["gpus"][1]["gpu_instances"][0]
    sim.gpusim("process", "add", "--gpu", "1", "--pid", "4711", "--gi", str(gi["id"]), "--ci", "0")
    count = writes(sim)
    result, failed = run_module(mig.main, {"config": [entry("all", {"1g.5gb": 7})]})
    assert failed and not result["changed"] and result["done"] == []
    assert "GPU 1 (NVIDIA A100-SXM4-40GB)" in result["msg"] and "used by process(es) 4711" in result["msg"]
    assert f"GPU instance {gi['id']} compute instance 0" in result["msg"] and "force: true" in result["msg"]
    assert writes(sim) == count


# ---- defect 3: a read that fails after a write --------------------------------------------------------
def test_read_failing_after_a_write_reports_changed_and_done(sim):
    sim.init("H100-SXM5-80GB", 1)
    # the 1st read is the observation, the 2nd follows the mode change, the 3rd is the re-read after it
    sim.gpusim("fault", "add", "--call", "nvmlDeviceGetMigMode", "--error", "UNKNOWN", "--nth", "3")
    result, failed = run_module(mig.main, {"config": [entry("all", {"3g.40gb": 2})]})
    assert failed and result["changed"]
    assert result["done"] == ["GPU 0: enable MIG mode (activation: SUCCESS)"]
    assert "Completed before the failure: GPU 0: enable MIG mode" in result["msg"]
    result, failed = run_module(mig.main, {"config": [entry("all", {"3g.40gb": 2})]})
    assert not failed and result["created"] == 4


# ---- defect 4: all counts zero -------------------------------------------------------------------
def test_all_counts_zero_is_refused_as_mig_parted_refuses_it(sim):
    sim.init("A100-SXM4-40GB", 1, "--mig-enabled")
    run_module(mig.main, {"config": [entry("all", BALANCED)]})
    count = writes(sim)
    result, failed = run_module(mig.main, {"config": [entry("all", {"1g.5gb": 0, "2g.10gb": 0})]})
    assert failed and "all counts for all MigProfiles are 0" in result["msg"] and "mig-devices: {}" in result["msg"]
    assert writes(sim) == count
    result, failed = run_module(mig.main, {"config": [entry("all", {})]})
    assert not failed and result["destroyed"] == 8 and sim.state()["gpus"][0]["gpu_instances"] == []


# ---- defect 5: read errors are not "nothing there" ---------------------------------------------------
def test_unlistable_gpu_instances_are_an_error_not_an_empty_gpu(sim):
    sim.init("A100-SXM4-40GB", 1, "--mig-enabled")
    run_module(mig.main, {"config": [entry("all", BALANCED)]})
    sim.gpusim("fault", "add", "--call", "nvmlDeviceGetGpuInstances", "--error", "NOT_SUPPORTED", "--times", "100")
    count = writes(sim)
    result, failed = run_module(mig.main, {"config": [entry("all", {})]})
    assert failed and not result["changed"] and "cannot list the" in result["msg"] and "GPU instances" in result["msg"]
    assert writes(sim) == count
    facts, failed = run_module(gpu_info.main, {})
    codes = [p["code"] for p in facts["problems"]]
    assert not failed and "read_failed" in codes and "mig_without_instances" not in codes
    assert facts["gpus"][0]["unread"] == ["gpu_instances"]


def test_unlistable_processes_stop_the_busy_check(sim):
    sim.init("A100-SXM4-40GB", 1, "--mig-enabled")
    run_module(mig.main, {"config": [entry("all", BALANCED)]})
    sim.gpusim("fault", "add", "--call", "nvmlDeviceGetComputeRunningProcesses*", "--error", "NOT_SUPPORTED",
               "--times", "100")
    count = writes(sim)
    result, failed = run_module(mig.main, {"config": [entry("all", {"7g.40gb": 1})]})
    assert failed and "cannot list the processes using the GPU" in result["msg"] and writes(sim) == count
    facts, _failed = run_module(gpu_info.main, {})
    assert "processes" in facts["gpus"][0]["unread"]


# ---- defect 6: a pass-through VM with the MIG mode pending ------------------------------------------
def test_pass_through_vm_reports_pending_mode_without_retrying(sim):
    sim.init("A100-SXM4-40GB", 1, "--passthrough-vm")
    first, failed = run_module(mig.main, {"config": [entry("all", BALANCED)]})
    assert not failed and first["changed"] and first["reboot_required"]
    assert first["done"] == ["GPU 0: enable MIG mode (pending until a reboot: this platform cannot reset the GPU "
                             "(VM pass-through)) (activation: RESET_REQUIRED)"]
    count = writes(sim)
    again, failed = run_module(mig.main, {"config": [entry("all", BALANCED)]})
    assert not failed and not again["changed"] and again["reboot_required"] and again["operations"] == []
    assert again["gpus"][0]["mig_pending"] and not again["gpus"][0]["mig_enabled"]
    assert writes(sim) == count
    sim.gpusim("reboot")
    after, failed = run_module(mig.main, {"config": [entry("all", BALANCED)]})
    assert not failed and after["created"] == 8 and not after["reboot_required"]


# ---- defect 7: bounded work on any input ---------------------------------------------------------------
@pytest.mark.parametrize("devices,expect", [
    ({"1g.5gb": 40}, "no GPU holds more than 8 MIG devices"),
    ({"1g.5gb": 10 ** 12}, "no GPU holds more than 8 MIG devices"),
    ({"1g.5gb": 7, "1g.10gb": 4, "2g.10gb": 3, "3g.20gb": 2, "4g.20gb": 1}, "needs 27 compute slices, GPU 0 (NVIDIA A100-SXM4-40GB) has 7"),
    ({"1c.7g.40gb": 8}, "can hold at most 1 x 7g.40gb, not 2; valid layouts close to it: 1c.7g.40gb x7"),
])
def test_huge_requests_fail_at_once_with_a_message(sim, devices, expect):
    sim.init("A100-SXM4-40GB", 1, "--mig-enabled")
    started = time.monotonic()
    result, failed = run_module(mig.main, {"config": [entry("all", devices)]})
    assert failed and expect in result["msg"], result["msg"]
    assert time.monotonic() - started < 1.0


def test_config_file_must_be_a_small_regular_file(sim, tmp_path):
    sim.init("A100-SXM4-40GB", 1)
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    big = tmp_path / "big.yaml"
    big.write_text("# " + "x" * (5 * 1024 * 1024))
    for path, expect in (("/dev/zero", "is a device or socket, not a regular file"),
                         (str(fifo), "is a FIFO, not a regular file"), (str(tmp_path), "is a directory"),
                         (str(big), "a MIG configuration file is at most 4 MiB")):
        started = time.monotonic()
        result, failed = run_module(mig.main, {"config_file": path, "config_name": "x"})
        assert failed and expect in result["msg"], result["msg"]
        assert time.monotonic() - started < 1.0


# ---- defect 10: one lost GPU ---------------------------------------------------------------------
def test_a_lost_gpu_does_not_stop_the_others(sim):
    sim.init("A100-SXM4-40GB", 2)
    sim.gpusim("fault", "add", "--gpu-lost", "1")
    result, failed = run_module(mig.main, {"config": [entry([0], BALANCED)]})
    assert not failed and result["gpus"][0]["created"] == 8 and result["gpus"][1]["problem"]
    result, failed = run_module(mig.main, {"config": [entry("all", {"7g.40gb": 1})]})
    assert not failed and result["gpus"][0]["changed"]
    assert "GPU 1 is left out: it cannot be read" in " ".join(result["warnings"]) and result["gpus"][1]["problem"]
    result, failed = run_module(mig.main, {"config": [entry([1], BALANCED)]})
    assert failed and "GPU 1 cannot be read" in result["msg"]


def test_zero_gpus_is_a_problem_in_gpu_info(sim):
    sim.init("A100-SXM4-40GB", 1)
    with gstate.transaction(sim.path) as data:
        data["gpus"] = []
    facts, failed = run_module(gpu_info.main, {})
    assert not failed and [p["code"] for p in facts["problems"]] == ["no_gpus"]


# ---- defect 11: the reset names the GPU by PCI bus id ------------------------------------------------
def test_reset_targets_the_gpu_by_pci_bus_id():
    calls = []

    class FakeGpu:
        index = 3

        def label(self):
            return "GPU 3"

    host = _mig_host.HostMig(None, lambda argv: calls.append(argv) or (0, "", ""), [], nvidia_smi="nvidia-smi")
    host._reset(FakeGpu(), "00000000:47:00.0")
    assert calls == [["nvidia-smi", "-r", "-i", "00000000:47:00.0"]]


# ---- MIG off while the driver lists no profiles: NVIDIA's table, confirmed after the mode change -------
def test_catalogue_stands_in_when_the_driver_lists_no_profiles_yet(sim):
    sim.init("A100-SXM4-40GB", 1)
    sim.gpusim("fault", "add", "--call", "nvmlDeviceGetGpuInstanceProfileInfo*", "--error", "NOT_SUPPORTED",
               "--times", "1000")
    result, failed = run_module(mig.main, {"config": [entry("all", {"3c.4g.20gb": 1})],
                                           "_ansible_check_mode": True})
    assert failed and "offers compute instances of 1, 2, 4" in result["msg"] and writes(sim) == 0
    result, failed = run_module(mig.main, {"config": [entry("all", BALANCED)], "_ansible_check_mode": True})
    assert not failed and result["changed"] and result["gpus"][0]["profile_source"] == "catalogue"
    assert "create GPU instance 3g.20gb at 4:4" in " ".join(result["operations"])


# ---- the suites: faults at every write, and check mode against the real run ---------------------------
WRITE_CALLS = ["nvmlDeviceSetMigMode", "nvmlDeviceCreateGpuInstanceWithPlacement",
               "nvmlGpuInstanceCreateComputeInstanceWithPlacement", "nvmlComputeInstanceDestroy",
               "nvmlGpuInstanceDestroy"]
FAULT_MODELS = ["H100-SXM5-80GB", "A30-24GB", "A100-SXM4-40GB"]


def _transition(sim, model, seed):
    rng = random.Random(seed)
    sim.init(model, 2, *(["--mig-enabled"] if seed % 3 else []))
    if seed % 3:
        with gstate.transaction(sim.path) as data:
            for index in (0, 1):
                layouts.create(data, index, layouts.random_state(model, rng))
    return [entry([0], layouts.random_target(model, rng)), entry([1], layouts.random_target(model, rng))]


def _layout_counts(sim):
    return [sorted((gi["profile_id"], len(gi["compute_instances"])) for gi in g["gpu_instances"])
            for g in sim.state()["gpus"]]


FAULT_CASES = [(m, s) for m in FAULT_MODELS for s in range(4)]
COUNTS: dict = {}  # reported by GPUOPS_REPORT_COUNTS=1 (for the closing note of the runner issue)


@pytest.mark.parametrize("model,seed", FAULT_CASES)
def test_a_fault_at_every_write_leaves_a_state_the_next_run_converges_from(sim, model, seed):
    config = _transition(sim, model, seed)
    snapshot = sim.state()
    clean, failed = run_module(mig.main, {"config": config})
    assert not failed, clean["msg"]
    target = _layout_counts(sim)
    positions = 0
    for call in WRITE_CALLS:
        for nth in range(1, 9):
            gstate.save(snapshot, sim.path)
            sim.gpusim("fault", "add", "--call", call, "--error", "UNKNOWN", "--nth", str(nth))
            before = writes(sim)
            result, failed = run_module(mig.main, {"config": config})
            fired = any(f["fired"] for f in sim.state()["faults"])
            sim.gpusim("fault", "clear")
            if not fired:
                break
            positions += 1
            assert failed, (call, nth)
            recorded = writes(sim) - before
            assert result["changed"] == bool(result["done"]) == (recorded > 0), (call, nth, result["done"])
            assert len(result["done"]) == recorded, (call, nth, result["done"], recorded)
            again, failed = run_module(mig.main, {"config": config})
            assert not failed, (call, nth, again["msg"])
            assert _layout_counts(sim) == target, (call, nth)
            assert all(gi["compute_instances"] for g in sim.state()["gpus"] for gi in g["gpu_instances"]), \
                "an orphan GPU instance is left"
    assert positions >= 1
    COUNTS["fault positions"] = COUNTS.get("fault positions", 0) + positions


def _random_request(rng, model):
    names = [p["name"] for p in catalogue.MODELS[model]["mig"]["gpu_instance_profiles"]]
    names += [f"{c}c.{n}" for n in names for c in (1, 2, 3, 5)]
    return {rng.choice(names): rng.randint(0, 4) for _pick in range(rng.randint(1, 3))}


CHECK_CASES = [(m, s) for m in ("A100-SXM4-40GB", "H100-SXM5-80GB", "A30-24GB") for s in range(12)]


@pytest.mark.parametrize("model,seed", CHECK_CASES)
def test_check_mode_verdict_is_the_real_verdict(sim, model, seed):
    rng = random.Random(seed * 7919 + len(model))
    sim.init(model, 2, *(["--mig-enabled"] if seed % 2 else []))
    if seed % 2:
        with gstate.transaction(sim.path) as data:
            layouts.create(data, 0, layouts.random_state(model, rng))
    if seed % 4 == 3:
        gi = sim.state()["gpus"][0]["gpu_instances"]
        if gi:
            sim.gpusim("process", "add", "--gpu", "0", "--pid", "999", "--gi", str(gi[0]["id"]), "--ci",
                       str(gi[0]["compute_instances"][0]["id"]))
    request = _random_request(rng, model) if seed % 3 else layouts.random_target(model, rng)
    config = [entry("all", request)]
    checked, check_failed = run_module(mig.main, {"config": config, "_ansible_check_mode": True})
    assert writes(sim) == 0 or seed % 2
    real, real_failed = run_module(mig.main, {"config": config})
    assert check_failed == real_failed, (request, checked.get("msg"), real.get("msg"))
    key = "check cases refused" if real_failed else "check cases applied"
    COUNTS[key] = COUNTS.get(key, 0) + 1
    if real_failed:
        assert checked["msg"] == real["msg"] and not real["changed"]
    else:
        assert checked["changed"] == real["changed"] and checked["operations"] == real["operations"]


def test_report_counts():
    """Prints how many write positions and check-mode cases the suites above covered (run last in this file)."""
    if not os.environ.get("GPUOPS_REPORT_COUNTS"):
        pytest.skip("set GPUOPS_REPORT_COUNTS=1 and run the whole file to print the counts")
    print("\nsuite counts:", COUNTS)
    assert COUNTS["fault positions"] > 0 and COUNTS["check cases applied"] > 0 and COUNTS["check cases refused"] > 0


def test_model_name_filters_warn_that_mig_parted_reads_them_differently(sim):
    sim.init("A100-SXM4-40GB", 1)
    config = [{"devices": "all", "device-filter": "NVIDIA A100-SXM4-40GB", "mig-enabled": True,
               "mig-devices": {"7g.40gb": 1}}]
    result, failed = run_module(mig.main, {"config": config, "_ansible_check_mode": True})
    assert not failed and "0x20B010DE" in " ".join(result["warnings"])
