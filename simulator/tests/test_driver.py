"""Driver behaviour that the collection relies on, as NVIDIA documents it."""

from __future__ import annotations

import ctypes
import json

import pynvml
import pytest

from gpusim import state


def gi_infos(n, h, profile_id, count=8):
    array = (n.c_nvmlGpuInstance_t * count)()
    c = ctypes.c_uint(count)
    n.nvmlDeviceGetGpuInstances(h, profile_id, array, ctypes.byref(c))
    return [n.nvmlGpuInstanceGetInfo(array[i]) for i in range(c.value)]


def test_create_order_matters_without_placement(host):
    """MIG User Guide: -cgi 19,19,14,9 fails on an A100, the order 9,14,19,19 works."""
    host.init("A100-SXM4-40GB", 1, "--mig-enabled")
    bad = host.smi("mig", "-cgi", "19,19,14,9", "-C")
    assert bad.returncode != 0
    assert "Unable to create a GPU instance on GPU  0 using profile 9: Insufficient Resources" in bad.stdout
    assert host.smi("mig", "-dci").returncode == 0
    assert host.smi("mig", "-dgi").returncode == 0
    good = host.smi("mig", "-cgi", "9,14,19,19", "-C")
    assert good.returncode == 0, good.stdout
    assert good.stdout.count("Successfully created GPU instance") == 4


def test_explicit_placement_realises_the_same_layout(host, nvml):
    host.init("A100-SXM4-40GB", 1, "--mig-enabled")
    with nvml as n:
        h = n.nvmlDeviceGetHandleByIndex(0)
        for pid, start, size in ((19, 0, 1), (19, 1, 1), (14, 2, 2), (9, 4, 4)):
            pl = n.c_nvmlGpuInstancePlacement_t()
            pl.start, pl.size = start, size
            n.nvmlDeviceCreateGpuInstanceWithPlacement(h, pid, pl)
        assert n.nvmlDeviceGetGpuInstanceRemainingCapacity(h, 19) == 0
        pl = n.c_nvmlGpuInstancePlacement_t()
        pl.start, pl.size = 4, 4
        with pytest.raises(n.NVMLError_InsufficientResources):
            n.nvmlDeviceCreateGpuInstanceWithPlacement(h, 9, pl)


def test_gpu_instance_ids_follow_placement(host, nvml):
    """MIG User Guide: two -cgi 9 on an A100 report GPU instance ids 2 then 1."""
    host.init("A100-SXM4-40GB", 1, "--mig-enabled")
    out = host.smi("mig", "-cgi", "9,9")
    assert out.returncode == 0
    assert [line.split("ID")[1].split()[0] for line in out.stdout.splitlines() if "created GPU instance" in line] \
        == ["2", "1"]


def test_destroy_gpu_instance_with_compute_instance_is_in_use(host, nvml):
    host.init("A100-SXM4-40GB", 1, "--mig-enabled")
    with nvml as n:
        h = n.nvmlDeviceGetHandleByIndex(0)
        gi = n.nvmlDeviceCreateGpuInstance(h, 9)
        prof = n.nvmlGpuInstanceGetComputeInstanceProfileInfo(gi, n.NVML_COMPUTE_INSTANCE_PROFILE_3_SLICE,
                                                              n.NVML_COMPUTE_INSTANCE_ENGINE_PROFILE_SHARED)
        ci = n.nvmlGpuInstanceCreateComputeInstance(gi, prof.id)
        with pytest.raises(n.NVMLError_InUse):
            n.nvmlGpuInstanceDestroy(gi)
        n.nvmlComputeInstanceDestroy(ci)
        n.nvmlGpuInstanceDestroy(gi)
        assert gi_infos(n, h, 9) == []


def test_mig_uuid_is_stable_for_the_instance_life(host, nvml):
    host.init("H100-SXM5-80GB", 1, "--mig-enabled")
    assert host.smi("mig", "-cgi", "9,9", "-C").returncode == 0
    with nvml as n:
        h = n.nvmlDeviceGetHandleByIndex(0)
        first = [n.nvmlDeviceGetUUID(n.nvmlDeviceGetMigDeviceHandleByIndex(h, i)) for i in range(2)]
        again = [n.nvmlDeviceGetUUID(n.nvmlDeviceGetMigDeviceHandleByIndex(h, i)) for i in range(2)]
        assert first == again and all(u.startswith("MIG-") for u in first)
        mig = n.nvmlDeviceGetHandleByUUID(first[0])
        assert n.nvmlDeviceIsMigDeviceHandle(mig).value == 1
        assert n.nvmlDeviceGetIndex(n.nvmlDeviceGetDeviceHandleFromMigDeviceHandle(mig)) == 0


def test_ampere_mig_mode_waits_for_reset_while_in_use(host, nvml):
    host.init("A100-SXM4-80GB", 1)
    assert host.gpusim("process", "add", "--gpu", "0", "--pid", "4242") == 0
    with nvml as n:
        h = n.nvmlDeviceGetHandleByIndex(0)
        assert n.nvmlDeviceSetMigMode(h, 1) == n.NVML_ERROR_IN_USE
        assert n.nvmlDeviceGetMigMode(h) == [0, 1]
    reset = host.smi("-r", "-i", "0")
    assert reset.returncode != 0 and "currently in use" in reset.stdout
    assert host.gpusim("process", "remove", "--pid", "4242") == 0
    assert host.smi("-r", "-i", "0").returncode == 0
    with nvml as n:
        assert n.nvmlDeviceGetMigMode(n.nvmlDeviceGetHandleByIndex(0)) == [1, 1]


def test_ampere_idle_gpu_switches_at_once(host, nvml):
    host.init("A30-24GB", 1)
    with nvml as n:
        h = n.nvmlDeviceGetHandleByIndex(0)
        assert n.nvmlDeviceSetMigMode(h, 1) == n.NVML_SUCCESS
        assert n.nvmlDeviceGetMigMode(h) == [1, 1]


def test_passthrough_vm_needs_reboot(host, nvml):
    host.init("A100-SXM4-40GB", 1, "--passthrough-vm")
    with nvml as n:
        h = n.nvmlDeviceGetHandleByIndex(0)
        assert n.nvmlDeviceSetMigMode(h, 1) == n.NVML_ERROR_RESET_REQUIRED
        assert n.nvmlDeviceGetMigMode(h) == [0, 1]
    assert host.smi("-r", "-i", "0").returncode != 0
    host.gpusim("reboot")
    with nvml as n:
        assert n.nvmlDeviceGetMigMode(n.nvmlDeviceGetHandleByIndex(0)) == [1, 1]


def test_hopper_mig_mode_needs_no_reset(host, nvml):
    host.init("H100-SXM5-80GB", 1)
    with nvml as n:
        h = n.nvmlDeviceGetHandleByIndex(0)
        assert n.nvmlDeviceSetMigMode(h, 1) == n.NVML_SUCCESS
        assert n.nvmlDeviceGetMigMode(h) == [1, 1]


def test_disable_with_instances_is_refused(host, nvml):
    host.init("H100-SXM5-80GB", 1, "--mig-enabled")
    assert host.smi("mig", "-cgi", "19", "-C").returncode == 0
    with nvml as n, pytest.raises(n.NVMLError_InUse):
        n.nvmlDeviceSetMigMode(n.nvmlDeviceGetHandleByIndex(0), 0)


def test_reboot_keeps_mig_mode_and_drops_everything_else(host, nvml):
    host.init("H200-141GB", 2, "--mig-enabled")
    assert host.smi("mig", "-cgi", "9,9", "-C").returncode == 0
    assert host.smi("-c", "EXCLUSIVE_PROCESS").returncode == 0
    assert host.gpusim("reboot") == 0
    with nvml as n:
        for i in range(2):
            h = n.nvmlDeviceGetHandleByIndex(i)
            assert n.nvmlDeviceGetMigMode(h) == [1, 1]
            assert gi_infos(n, h, 9) == []
            assert n.nvmlDeviceGetComputeMode(h) == n.NVML_COMPUTEMODE_DEFAULT


@pytest.mark.parametrize("flag", [[], ["--profiles-when-mig-off", "refuse"]])
def test_mig_disabled_gpu_refuses_profile_queries_by_default(host, nvml, flag):
    """MIG off: no instances API, and (the default, CATALOGUE_SOURCES.md "GPU instance profiles with
    MIG disabled") the profile queries answer NOT_SUPPORTED too.  The test used to assert that
    profiles are readable with MIG off; that is now the non-default 'list' behaviour below."""
    host.init("A100-SXM4-40GB", 1, *flag)
    with nvml as n:
        h = n.nvmlDeviceGetHandleByIndex(0)
        with pytest.raises(n.NVMLError_NotSupported):
            n.nvmlDeviceCreateGpuInstance(h, 19)
        for call in (lambda: n.nvmlDeviceGetGpuInstanceProfileInfo(h, n.NVML_GPU_INSTANCE_PROFILE_1_SLICE),
                     lambda: n.nvmlDeviceGetGpuInstanceProfileInfoV(h, n.NVML_GPU_INSTANCE_PROFILE_1_SLICE),
                     lambda: n.nvmlDeviceGetGpuInstancePossiblePlacements(h, 19, None, ctypes.byref(ctypes.c_uint()))):
            with pytest.raises(n.NVMLError_NotSupported):
                call()
    assert host.state()["profiles_when_mig_off"] == "refuse"


def test_mig_disabled_gpu_lists_profiles_when_told(host, nvml):
    host.init("A100-SXM4-40GB", 1, "--profiles-when-mig-off", "list")
    with nvml as n:
        h = n.nvmlDeviceGetHandleByIndex(0)
        with pytest.raises(n.NVMLError_NotSupported):
            n.nvmlDeviceCreateGpuInstance(h, 19)
        info = n.nvmlDeviceGetGpuInstanceProfileInfo(h, n.NVML_GPU_INSTANCE_PROFILE_1_SLICE)
        assert info.id == 19
        count = ctypes.c_uint()
        n.nvmlDeviceGetGpuInstancePossiblePlacements(h, 19, None, ctypes.byref(count))
        assert count.value == 7
        with pytest.raises(n.NVMLError_NotSupported):
            n.nvmlDeviceGetGpuInstanceRemainingCapacity(h, 19)   # capacity needs MIG on in both


def test_profiles_when_mig_off_refuses_other_values(host):
    with pytest.raises(SystemExit):
        host.init("A100-SXM4-40GB", 1, "--profiles-when-mig-off", "maybe")


def test_processes_per_gpu_and_per_mig_device(host, nvml):
    host.init("A100-SXM4-40GB", 1, "--mig-enabled")
    assert host.smi("mig", "-cgi", "9,9", "-C").returncode == 0
    assert host.gpusim("process", "add", "--gpu", "0", "--pid", "77", "--gi", "1", "--ci", "0",
                       "--memory", "2048") == 0
    with nvml as n:
        h = n.nvmlDeviceGetHandleByIndex(0)
        procs = n.nvmlDeviceGetComputeRunningProcesses(h)
        assert [(p.pid, p.gpuInstanceId, p.computeInstanceId, p.usedGpuMemory) for p in procs] == \
            [(77, 1, 0, 2048 * 1024 * 1024)]
        per_mig = {n.nvmlDeviceGetGpuInstanceId(m): n.nvmlDeviceGetComputeRunningProcesses(m)
                   for m in (n.nvmlDeviceGetMigDeviceHandleByIndex(h, i) for i in range(2))}
        assert [p.pid for p in per_mig[1]] == [77] and per_mig[2] == []


def test_compute_and_persistence_mode(host, nvml):
    host.init("L40S", 1)
    with nvml as n:
        h = n.nvmlDeviceGetHandleByIndex(0)
        n.nvmlDeviceSetComputeMode(h, n.NVML_COMPUTEMODE_EXCLUSIVE_PROCESS)
        n.nvmlDeviceSetPersistenceMode(h, 1)
        assert n.nvmlDeviceGetComputeMode(h) == n.NVML_COMPUTEMODE_EXCLUSIVE_PROCESS
        assert n.nvmlDeviceGetPersistenceMode(h) == 1


def test_exclusive_process_is_refused_on_a_mig_enabled_gpu(host, nvml):
    host.init("A100-SXM4-40GB", 2, "--mig-enabled")
    with nvml as n:
        h = n.nvmlDeviceGetHandleByIndex(0)
        with pytest.raises(n.NVMLError_NotSupported):
            n.nvmlDeviceSetComputeMode(h, n.NVML_COMPUTEMODE_EXCLUSIVE_PROCESS)
        n.nvmlDeviceSetComputeMode(h, n.NVML_COMPUTEMODE_DEFAULT)
        assert n.nvmlDeviceGetComputeMode(h) == n.NVML_COMPUTEMODE_DEFAULT
    out = host.smi("-c", "3")
    assert "Setting compute mode to EXCLUSIVE_PROCESS is not supported on a MIG-enabled device." in out.stdout
    assert "Treating as warning and moving on." in out.stdout
    assert out.stdout.rstrip().endswith("All done.")


# --------------------------------------------------------------------------- faults

def test_nth_call_fails_with_chosen_error(host, nvml):
    host.init("A100-SXM4-40GB", 1, "--mig-enabled")
    assert host.gpusim("fault", "add", "--call", "nvmlDeviceCreateGpuInstance*", "--nth", "2",
                       "--error", "INSUFFICIENT_RESOURCES") == 0
    with nvml as n:
        h = n.nvmlDeviceGetHandleByIndex(0)
        n.nvmlDeviceCreateGpuInstance(h, 19)
        with pytest.raises(n.NVMLError_InsufficientResources):
            n.nvmlDeviceCreateGpuInstance(h, 19)
        n.nvmlDeviceCreateGpuInstance(h, 19)
    assert host.state()["faults"][0]["fired"] == 1


def test_library_missing(host):
    host.init("T4", 1)
    assert host.gpusim("fault", "add", "--library-missing") == 0
    with pytest.raises(pynvml.NVMLError_LibraryNotFound):
        pynvml.nvmlInit()
    assert host.smi("-L").returncode == 9


def test_no_state_behaves_like_no_driver(monkeypatch, tmp_path):
    monkeypatch.delenv("GPUSIM_STATE", raising=False)
    monkeypatch.setattr(state, "DEFAULT_STATE_PATH", str(tmp_path / "absent.json"))
    pynvml.nvmlLib = None
    pynvml._nvmlGetFunctionPointer_cache.clear()
    with pytest.raises(pynvml.NVMLError_LibraryNotFound):
        pynvml.nvmlInit()


def test_gpu_lost(host, nvml):
    host.init("H100-SXM5-80GB", 2)
    assert host.gpusim("fault", "add", "--gpu-lost", "1") == 0
    with nvml as n:
        n.nvmlDeviceGetName(n.nvmlDeviceGetHandleByIndex(0))
        with pytest.raises(n.NVMLError_GpuIsLost):
            n.nvmlDeviceGetHandleByIndex(1)


def test_write_counter_counts_only_writes(host, nvml):
    host.init("A100-SXM4-40GB", 1, "--mig-enabled")
    with nvml as n:
        h = n.nvmlDeviceGetHandleByIndex(0)
        n.nvmlDeviceGetMigMode(h)
        n.nvmlDeviceGetGpuInstanceProfileInfo(h, 0)
        assert host.state()["counters"]["nvml_writes"] == 0
        n.nvmlDeviceCreateGpuInstance(h, 19)
    assert host.state()["counters"]["nvml_writes"] == 1


# --------------------------------------------------------------------------- CLI errors

def test_unknown_model_lists_known_ones(host, capsys):
    with pytest.raises(SystemExit):
        host.gpusim("init", "--model", "RTX-9999")
    err = capsys.readouterr().err
    assert "RTX-9999" in err and "A100-SXM4-40GB" in err and "H200-141GB" in err


def test_corrupt_state_names_the_file_and_is_not_reset(host, capsys):
    with open(host.path, "w") as fh:
        fh.write("{not json")
    with pytest.raises(SystemExit):
        host.gpusim("show")
    assert host.path in capsys.readouterr().err
    with open(host.path) as fh:
        assert fh.read() == "{not json"


def test_missing_state_names_the_file(host, capsys):
    with pytest.raises(SystemExit):
        host.gpusim("reboot")
    assert host.path in capsys.readouterr().err


def test_init_never_overwrites_silently(host, capsys):
    host.init("T4")
    with pytest.raises(SystemExit):
        host.gpusim("init", "--model", "T4")
    assert "already exists" in capsys.readouterr().err


# --------------------------------------------------------------------------- nvidia-smi

def test_smi_list_and_query(host):
    host.init("H100-SXM5-80GB", 2, "--mig-enabled")
    host.smi("mig", "-cgi", "19", "-C", "-i", "1")
    out = host.smi("-L").stdout.splitlines()
    assert out[0].startswith("GPU 0: NVIDIA H100 80GB HBM3 (UUID: GPU-")
    assert out[2].lstrip().startswith("MIG 1g.10gb") and "(UUID: MIG-" in out[2]
    csv = host.smi("--query-gpu=index,name,mig.mode.current,memory.total", "--format=csv,noheader,nounits")
    assert csv.stdout.splitlines()[0].startswith("0, NVIDIA H100 80GB HBM3, Enabled, ")
    bad = host.smi("--query-gpu=index,bogus", "--format=csv")
    assert bad.returncode == 2 and 'Field "bogus" is not a valid field to query.' in bad.stdout


def test_smi_lgipp_matches_catalogue(host):
    host.init("A100-SXM4-40GB", 1, "--mig-enabled")
    lines = host.smi("mig", "-lgipp").stdout.splitlines()
    assert "GPU  0 Profile ID  9 Placements: {0,4}:4" in lines
    assert "GPU  0 Profile ID  0 Placement : {0}:8" in lines


def test_smi_no_mig_devices(host):
    host.init("T4")
    out = host.smi("mig", "-lgip")
    assert out.returncode == 6 and "No MIG-enabled devices found." in out.stdout


def test_state_file_is_json_with_schema(host):
    host.init("A10", 1)
    with open(host.path) as fh:
        data = json.load(fh)
    assert data["version"] == state.SCHEMA_VERSION and data["gpus"][0]["model"] == "A10"


def test_media_engines_allow_one_me_instance_on_a30(host, nvml):
    """An A30 has one OFA and one JPEG decoder: a second "+me" GPU instance does not fit."""
    host.init("A30-24GB", 1, "--mig-enabled")
    out = host.smi("mig", "-cgi", "1g.6gb+me,2g.12gb+me")
    assert out.returncode != 0 and "Insufficient Resources" in out.stdout
    with nvml as n:
        h = n.nvmlDeviceGetHandleByIndex(0)
        assert n.nvmlDeviceGetGpuInstanceRemainingCapacity(h, 6) == 0


# ---- issue 14: NVML semantics as nvml.h and real output describe them

def first_gi(n, host):
    gi_id = host.state()["gpus"][0]["gpu_instances"][0]["id"]
    return n.nvmlDeviceGetGpuInstanceById(n.nvmlDeviceGetHandleByIndex(0), gi_id)


@pytest.mark.parametrize("model,name", [("A100-SXM4-40GB", "1g.10gb"), ("H100-SXM5-80GB", "1g.20gb")])
def test_two_memory_slice_1g_offers_ci_profiles_0_and_7(host, nvml, model, name):
    """mig-parted creates CI profile 0 in it (GetComputeInstanceProfileInfo(0)); -C creates ID 7."""
    host.init(model, 1, "--mig-enabled")
    out = host.smi("mig", "-cgi", "15", "-C").stdout
    assert f"using profile MIG {name} (ID  7)" in out
    with nvml as n:
        gi = first_gi(n, host)
        shared = n.NVML_COMPUTE_INSTANCE_ENGINE_PROFILE_SHARED
        for enum in (n.NVML_COMPUTE_INSTANCE_PROFILE_1_SLICE, n.NVML_COMPUTE_INSTANCE_PROFILE_1_SLICE_REV1):
            info = n.nvmlGpuInstanceGetComputeInstanceProfileInfo(gi, enum, shared)
            assert (info.id, info.sliceCount, info.instanceCount) == (enum, 1, 1)
        with pytest.raises(n.NVMLError_InsufficientResources):   # the 7 from -C fills the GI
            n.nvmlGpuInstanceCreateComputeInstance(gi, 0)
    assert host.smi("mig", "-dci").returncode == 0
    with nvml as n:
        gi = first_gi(n, host)
        ci = n.nvmlGpuInstanceCreateComputeInstance(gi, 0)
        assert n.nvmlComputeInstanceGetInfo(ci).profileId == 0


def test_set_mig_mode_invalid_mode_is_invalid_argument(host, nvml):
    host.init("H100-SXM5-80GB", 1)
    with nvml as n:
        h = n.nvmlDeviceGetHandleByIndex(0)
        with pytest.raises(n.NVMLError_InvalidArgument):
            n.nvmlDeviceSetMigMode(h, 2)
        assert n.nvmlDeviceGetMigMode(h) == [0, 0]


def test_hopper_busy_gpu_reports_in_use_in_activation_status(host, nvml):
    """nvml.h: the outcome is activationStatus; the call itself succeeds (it used to raise IN_USE)."""
    host.init("H100-SXM5-80GB", 1)
    assert host.gpusim("process", "add", "--gpu", "0", "--pid", "4242") == 0
    with nvml as n:
        h = n.nvmlDeviceGetHandleByIndex(0)
        assert n.nvmlDeviceSetMigMode(h, 1) == n.NVML_ERROR_IN_USE
        assert n.nvmlDeviceGetMigMode(h) == [0, 0]   # Hopper leaves nothing pending


def test_ci_profile_the_gi_does_not_offer_is_not_supported(host, nvml):
    host.init("A100-SXM4-40GB", 1, "--mig-enabled")
    assert host.smi("mig", "-cgi", "19").returncode == 0
    with nvml as n:
        gi = first_gi(n, host)
        with pytest.raises(n.NVMLError_NotSupported):
            n.nvmlGpuInstanceCreateComputeInstance(gi, 2)   # a 3-slice CI in a 1-slice GI


def test_destroy_while_a_client_holds_the_device_is_in_use(host, nvml):
    """NVIDIA/DCGM#276 (H200, driver 580): destroying instances fails while nvidia-dcgm holds the GPU."""
    host.init("H200-141GB", 1, "--mig-enabled")
    assert host.smi("mig", "-cgi", "19", "-C").returncode == 0
    assert host.gpusim("holder", "add", "nvidia-dcgm") == 0
    with nvml as n:
        gi = first_gi(n, host)
        ci = n.nvmlGpuInstanceGetComputeInstanceById(gi, 0)
        with pytest.raises(n.NVMLError_InUse):
            n.nvmlComputeInstanceDestroy(ci)
    out = host.smi("mig", "-dci")
    assert out.returncode != 0 and "In use by another client" in out.stdout
    assert host.gpusim("holder", "remove", "nvidia-dcgm") == 0
    assert host.smi("mig", "-dci").returncode == 0
    assert host.gpusim("holder", "add", "nvidia-dcgm") == 0
    with nvml as n:
        gi = first_gi(n, host)
        with pytest.raises(n.NVMLError_InUse):
            n.nvmlGpuInstanceDestroy(gi)


@pytest.mark.parametrize("model,per_slice", [("H100-SXM5-80GB", 16), ("H200-141GB", 16), ("B200-180GB", 18)])
def test_partial_compute_instances_report_sms(host, nvml, model, per_slice):
    """Derived (CATALOGUE_SOURCES.md): one compute slice has the 1g GI's SMs, as on every real A100 -lcip."""
    host.init(model, 1, "--mig-enabled")
    assert host.smi("mig", "-cgi", "9").returncode == 0
    with nvml as n:
        gi = first_gi(n, host)
        shared = n.NVML_COMPUTE_INSTANCE_ENGINE_PROFILE_SHARED
        sms = [n.nvmlGpuInstanceGetComputeInstanceProfileInfo(gi, e, shared).multiprocessorCount
               for e in (n.NVML_COMPUTE_INSTANCE_PROFILE_1_SLICE, n.NVML_COMPUTE_INSTANCE_PROFILE_2_SLICE)]
    assert sms == [per_slice, 2 * per_slice]
