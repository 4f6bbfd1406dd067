"""The gpuops.sharing.mps role: one module call per host (issue 11), the unit and environment files the module
writes for real targets (from its own result on a simulated host), checked by systemd-analyze; and the boot-time
MIG device lookup (gpuops-mps-exec, which the module installs from _mps_exec's import closure)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest
import yaml

from ansible_collections.gpuops.sharing.plugins.module_utils import _boot, _mps_exec
from ansible_collections.gpuops.sharing.plugins.modules import mps

from .conftest import ROOT, SIMULATOR, run_module

ROLE = os.path.join(ROOT, "roles", "mps")
SMI = [sys.executable, os.path.join(SIMULATOR, "libexec", "nvidia-smi.py")]


def role_vars(**extra) -> dict:
    with open(os.path.join(ROLE, "defaults", "main.yml")) as fh:
        values = yaml.safe_load(fh)
    values.update(**extra)
    return values


@pytest.fixture
def planned(sim, tmp_path):
    """The module's targets on a host with GPU 0 whole and two MIG devices on GPU 1."""
    sim.init("H100-SXM5-80GB", 2)
    for argv in (["-i", "1", "-mig", "1"], ["mig", "-i", "1", "-cgi", "19,19", "-C"]):
        assert subprocess.run(SMI + argv, capture_output=True, check=False).returncode == 0
    result, failed = run_module(mps.main, {"manage_daemon": True, "default_active_thread_percentage": 25,
                                           "default_device_pinned_mem_limit": "4G", "compute_mode": "unchanged",
                                           "_ansible_check_mode": True})
    assert not failed, result.get("msg")
    return result["targets"]


def test_planned_targets(planned):
    assert [t["kind"] for t in planned] == ["gpu", "mig", "mig"]
    assert planned[0]["pipe_directory"] == "/run/nvidia-mps/gpu0"


def test_the_role_is_one_module_call_per_host():
    """Issue 11: no loops of templates or units per target, no check-mode query, no check-mode flip."""
    with open(os.path.join(ROLE, "tasks", "main.yml")) as fh:
        tasks = yaml.safe_load(fh)

    def flat(items):
        for task in items:
            yield task
            yield from flat(task.get("block", []))
    every = list(flat(tasks))
    calls = [t for t in every if "gpuops.sharing.mps" in t]
    assert len(calls) == 1
    call = calls[0]["gpuops.sharing.mps"]
    assert "check_mode" not in calls[0] and "ansible_check_mode" not in str(call)
    assert call["prune"] is True and call["state"] == "{{ mps_state }}"
    remote = [t for t in every if "block" not in t and not any(k in t for k in ("ansible.builtin.debug",))]
    looped = [t["name"] for t in remote if "loop" in t and "mps_result" in str(t["loop"])]
    assert looped == []                         # nothing per target runs on the host
    banned = ("ansible.builtin.template", "ansible.builtin.systemd_service", "ansible.builtin.assert")
    assert not any(k in t for t in every for k in banned)
    assert not os.path.exists(os.path.join(ROLE, "templates")) and not os.path.exists(os.path.join(ROLE, "handlers"))


def _unit_files(planned, tmp_path, tools):
    from ansible_collections.gpuops.sharing.plugins.module_utils import _mps
    cfg = {"unit_name": "nvidia-mps", "unit_dir": str(tmp_path / "units"), "python": tools["python3"],
           "install_dir": os.path.dirname(tools["gpuops-mps-exec"]), "control_binary": tools["nvidia-cuda-mps-control"],
           "smi_binary": tools["nvidia-smi"], "after": ["gpuops-mig.service"], "stop_timeout": 20}
    config_dir = str(tmp_path / "etc")
    os.makedirs(config_dir)
    os.makedirs(cfg["unit_dir"])
    template = _mps.unit_text(cfg, config_dir)
    with open(os.path.join(cfg["unit_dir"], "nvidia-mps@.service"), "w") as fh:
        fh.write(template)
    for target in planned:
        with open(os.path.join(config_dir, target["name"] + ".conf"), "w") as fh:
            fh.write(_mps.daemon_file_text(target, {"active_thread_percentage": 25, "device_pinned_mem_limit_mib": 4096,
                                                    "client_priority": None}, "exclusive_process", "nvidia-mps"))
    return cfg, config_dir, template


@pytest.mark.skipif(not shutil.which("systemd-analyze"), reason="systemd-analyze is not installed")
def test_units_verify(planned, tmp_path):
    # systemd-analyze verify wants the executables to exist: stand-ins for the NVIDIA tools
    tools = {}
    for tool in ("nvidia-cuda-mps-control", "nvidia-smi", "python3", "gpuops-mps-exec"):
        tools[tool] = str(tmp_path / "bin" / tool)
        os.makedirs(os.path.dirname(tools[tool]), exist_ok=True)
        os.symlink("/bin/true", tools[tool])
    cfg, config_dir, template = _unit_files(planned, tmp_path, tools)
    # quit waits for the clients; -t bounds it below systemd's own stop timeout
    assert "ExecStop=-/bin/sh -c 'echo quit -t 20 | %s'" % tools["nvidia-cuda-mps-control"] in template
    assert "TimeoutStopSec=35" in template
    assert "Restart=on-failure" in template and f"EnvironmentFile={config_dir}/%i.conf" in template
    assert "After=local-fs.target systemd-modules-load.service nvidia-persistenced.service gpuops-mig.service\n" \
        in template
    for target in planned:
        unit = os.path.join(cfg["unit_dir"], f"nvidia-mps@{target['name']}.service")
        done = subprocess.run(["systemd-analyze", "verify", unit], capture_output=True, text=True, check=False)
        assert done.returncode == 0, done.stderr


def test_daemon_env_files(planned, tmp_path):
    from ansible_collections.gpuops.sharing.plugins.module_utils import _mps
    gpu, mig = planned[0], planned[1]
    desired = {"active_thread_percentage": 25, "device_pinned_mem_limit_mib": 4096, "client_priority": None}
    conf = _mps.daemon_file_text(gpu, desired, "exclusive_process", "nvidia-mps")
    assert f"CUDA_VISIBLE_DEVICES={gpu['uuid']}\n" in conf and "GPUOPS_MPS_COMPUTE_MODE=EXCLUSIVE_PROCESS\n" in conf
    assert "CUDA_MPS_ACTIVE_THREAD_PERCENTAGE=25\n" in conf and "CUDA_MPS_PINNED_DEVICE_MEM_LIMIT=0=4G\n" in conf
    assert "GPUOPS_MPS_COMPUTE_MODE" not in _mps.daemon_file_text(gpu, desired, "unchanged", "nvidia-mps")
    mig_conf = _mps.daemon_file_text(mig, desired, "exclusive_process", "nvidia-mps")
    assert "\nCUDA_VISIBLE_DEVICES=" not in mig_conf    # found at each start: MIG UUIDs change at reboot
    assert "GPUOPS_MPS_COMPUTE_MODE" not in mig_conf     # the driver refuses it on a MIG-enabled GPU
    assert f"GPUOPS_MPS_GPU={mig['gpu_uuid']}\n" in mig_conf
    assert f"GPUOPS_MPS_GPU_INSTANCE_START={mig['mig']['gpu_instance_start']}\n" in mig_conf
    assert f"CUDA_MPS_PIPE_DIRECTORY={mig['pipe_directory']}\n" in mig_conf


def test_sourcing_the_client_env_file_runs_no_code(planned, tmp_path):
    # the module refuses such directories; the file quotes its values all the same (issue 10, defect 8)
    from ansible_collections.gpuops.sharing.plugins.module_utils import _mps
    crafted = {**planned[1], "pipe_directory": f"/run/$(touch {tmp_path}/pwned) x", "log_directory": "/var/log/`id`"}
    path = tmp_path / "client.env"
    path.write_text(_mps.client_file_text(crafted, "nvidia-mps", "/etc/nvidia-mps"))
    shown = subprocess.run(["/bin/sh", "-c", f'set -a; . "{path}"; set +a; printf "%s|%s" '
                            '"$CUDA_MPS_PIPE_DIRECTORY" "$CUDA_MPS_LOG_DIRECTORY"'],
                           capture_output=True, text=True, check=True).stdout
    assert shown == f"/run/$(touch {tmp_path}/pwned) x|/var/log/`id`"
    assert not (tmp_path / "pwned").exists()


def _exec(argv, environ):
    """Run gpuops-mps-exec's code with a stand-in for the exec; (rc, what it would exec, journal lines)."""
    ran, lines = {}, []

    def execute(command, env):
        ran.update(command=command, env=env)
        return 0
    rc = _mps_exec.exec_main(argv, None, lines.append, execute, environ=environ)
    return rc, ran, lines


def test_boot_helper_finds_the_mig_device_by_placement(planned):
    mig = planned[2]
    start = mig["mig"]["gpu_instance_start"]
    placement = ["--gpu", mig["gpu_uuid"], "--gpu-instance-start", str(start), "--compute-instance-start", "0"]
    rc, ran, lines = _exec([*placement, "--", "/usr/bin/nvidia-cuda-mps-control", "-f"], {})
    assert rc == 0 and ran == {"command": ["/usr/bin/nvidia-cuda-mps-control", "-f"],
                               "env": {"CUDA_VISIBLE_DEVICES": mig["uuid"]}}
    assert lines == [f"gpuops-mps-exec: MIG device {start}.0 of {mig['gpu_uuid']} is {mig['uuid']}"]
    rc, ran, lines = _exec([*placement[:3], "5", *placement[4:], "--", "/bin/true"], {})
    assert rc == 1 and not ran and "has no MIG device at placement 5.0" in lines[0]
    rc, ran, lines = _exec(["--gpu", "GPU-nope", *placement[2:], "--", "/bin/true"], {})
    assert rc == 1 and lines == ["gpuops-mps-exec: no GPU GPU-nope on this host"]


@pytest.mark.parametrize("argv, message", [
    (["--", ], "give the command to run after --"),
    (["--gpu", "GPU-x", "--", "/bin/true"], "give the GPU and both placements"),
    (["--gpu"], "--gpu needs a value"),
    (["--device", "0", "--", "/bin/true"], "unknown option '--device'"),
    (["--gpu=GPU-x", "--gpu-instance-start=1", "--compute-instance-start=x", "--", "/bin/true"],
     "--compute-instance-start='x' is not a placement start; give a whole number from 0 to 255"),
    (["--gpu=GPU-x", "--gpu-instance-start=\uff11", "--compute-instance-start=0", "--", "/bin/true"],
     "is not a placement start"),
    (["--"] + ["x"] * 80, "more than the 64 a unit passes"),
])
def test_boot_helper_refuses_bad_command_lines(argv, message):
    rc, ran, lines = _exec(argv, {})
    assert rc == 2 and not ran and message in lines[0]


def test_boot_helper_takes_the_placement_from_the_environment(planned):
    mig = planned[2]
    environ = {"GPUOPS_MPS_GPU": mig["gpu_uuid"], "GPUOPS_MPS_GPU_INSTANCE_START": str(mig["mig"]["gpu_instance_start"]),
               "GPUOPS_MPS_COMPUTE_INSTANCE_START": "0"}
    rc, ran, _lines = _exec(["--", "/usr/bin/nvidia-cuda-mps-control", "-f"], environ)
    assert rc == 0 and ran["env"] == {"CUDA_VISIBLE_DEVICES": mig["uuid"]}
    # a whole GPU: no placement, CUDA_VISIBLE_DEVICES comes from the env file, NVML is not needed

    def no_nvml():
        raise AssertionError("NVML was opened for a whole GPU")
    ran = {}
    assert _mps_exec.exec_main(["--", "/usr/bin/nvidia-cuda-mps-control", "-f"], None, print,
                               lambda command, env: ran.update(command=command, env=env) or 0, environ={},
                               nvml=no_nvml) == 0
    assert ran == {"command": ["/usr/bin/nvidia-cuda-mps-control", "-f"], "env": {}}


def test_installed_entry_point_replaces_itself_with_the_daemon(planned, tmp_path, sim):
    """The entry script as the module installs it, run as a unit runs it: only the installed files on its
    path, and the process replaced by the command with the device in CUDA_VISIBLE_DEVICES."""
    sources = _boot.closure(["_host", "_mps_exec"], _boot.payload_source)
    entry = _boot.entry_point("test", "_mps_exec", "exec_main", execute=True)
    for path, text in _boot.files(str(tmp_path / "lib"), sources, _boot.COLLECTION_VERSION, "gpuops-mps-exec",
                                  entry).items():
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w") as fh:
            fh.write(text)
    mig = planned[1]
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": SIMULATOR, "GPUSIM_STATE": os.environ["GPUSIM_STATE"],
           "GPUOPS_MPS_GPU": mig["gpu_uuid"], "GPUOPS_MPS_GPU_INSTANCE_START": str(mig["mig"]["gpu_instance_start"]),
           "GPUOPS_MPS_COMPUTE_INSTANCE_START": "0"}
    # -s: no user site; the collection itself is not on the path, only what was installed
    proc = subprocess.Popen([sys.executable, "-s", str(tmp_path / "lib" / "gpuops-mps-exec"), "--",
                             "/bin/sh", "-c", 'echo "pid $$ $CUDA_VISIBLE_DEVICES"'],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, out + err
    assert out.splitlines()[-1] == f"pid {proc.pid} {mig['uuid']}"      # the same process: replaced, not a child
