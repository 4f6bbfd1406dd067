"""The gpuops.sharing.mps role: its unit, drop-ins and environment files as rendered for real targets
(from the module's own result on a simulated host), checked by systemd-analyze; and the boot-time
MIG device lookup (roles/mps/files/gpuops-mps-exec)."""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys

import jinja2
import pytest
import yaml
from ansible.plugins.filter.core import comment

from ansible_collections.gpuops.sharing.plugins.modules import mps

from .conftest import ROOT, SIMULATOR, run_module

ROLE = os.path.join(ROOT, "roles", "mps")
SMI = [sys.executable, os.path.join(SIMULATOR, "libexec", "nvidia-smi.py")]


def role_vars(**extra) -> dict:
    with open(os.path.join(ROLE, "defaults", "main.yml")) as fh:
        values = yaml.safe_load(fh)
    values.update(ansible_managed="Ansible managed", **extra)
    return values


def render(name: str, **variables) -> str:
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(os.path.join(ROLE, "templates")),
                             keep_trailing_newline=True, trim_blocks=True)
    env.filters["comment"] = comment
    return env.get_template(name).render(**variables)


@pytest.fixture
def planned(sim, tmp_path):
    """The role's planning call on a host with GPU 0 whole and two MIG devices on GPU 1."""
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


def test_daemon_and_client_environment_files(planned):
    gpu, mig = planned[0], planned[1]
    conf = render("daemon.conf.j2", mps_target=gpu, **role_vars())
    assert conf.startswith("#\n# Ansible managed\n#\n")
    assert f"CUDA_VISIBLE_DEVICES={gpu['uuid']}\n" in conf
    assert "CUDA_MPS_ACTIVE_THREAD_PERCENTAGE=25\n" in conf and "CUDA_MPS_PINNED_DEVICE_MEM_LIMIT=0=4G\n" in conf
    mig_conf = render("daemon.conf.j2", mps_target=mig, **role_vars())
    assert "\nCUDA_VISIBLE_DEVICES=" not in mig_conf    # set at each start: MIG UUIDs change at reboot
    assert f"CUDA_MPS_PIPE_DIRECTORY={mig['pipe_directory']}\n" in mig_conf
    client = render("client.env.j2", mps_target=mig, **role_vars())
    lines = [line for line in client.splitlines() if line and not line.startswith("#")]
    assert lines == [f"CUDA_MPS_LOG_DIRECTORY={mig['log_directory']}", f"CUDA_MPS_PIPE_DIRECTORY={mig['pipe_directory']}"]


def test_drop_ins(planned):
    gpu_conf = render("unit-target.conf.j2", mps_target=planned[0], **role_vars())
    assert f"ExecStartPre=/usr/bin/nvidia-smi -i {planned[0]['uuid']} -c EXCLUSIVE_PROCESS\n" in gpu_conf
    assert "gpuops-mig" not in gpu_conf.split("[Service]")[0].replace("# ", "") or "Wants=" not in gpu_conf
    unchanged = render("unit-target.conf.j2", mps_target=planned[0], **role_vars(mps_compute_mode="unchanged"))
    assert "ExecStartPre" not in unchanged
    mig = planned[1]
    mig_conf = render("unit-target.conf.j2", mps_target=mig, **role_vars())
    assert "Wants=gpuops-mig.service\nAfter=gpuops-mig.service\n" in mig_conf
    assert "ExecStart=\nExecStart=/usr/bin/python3 /usr/local/lib/gpuops-sharing/gpuops-mps-exec --gpu " \
           f"{mig['gpu_uuid']} --gpu-instance-start {mig['mig']['gpu_instance_start']} --compute-instance-start 0 " \
           "-- /usr/bin/nvidia-cuda-mps-control -f\n" in mig_conf
    assert "EXCLUSIVE_PROCESS" not in mig_conf.replace("# ", "").split("[Service]")[1]


@pytest.mark.skipif(not shutil.which("systemd-analyze"), reason="systemd-analyze is not installed")
def test_units_verify(planned, tmp_path):
    # systemd-analyze verify wants the executables to exist: stand-ins for the NVIDIA tools
    tools = {}
    for tool in ("nvidia-cuda-mps-control", "nvidia-smi", "python3"):
        tools[tool] = str(tmp_path / "bin" / tool)
        os.makedirs(os.path.dirname(tools[tool]), exist_ok=True)
        os.symlink("/bin/true", tools[tool])
    variables = role_vars(mps_control_binary=tools["nvidia-cuda-mps-control"], mps_smi_binary=tools["nvidia-smi"],
                          mps_python=tools["python3"])
    units = tmp_path / "units"
    units.mkdir()
    template = render("nvidia-mps@.service.j2", **variables)
    # quit waits for the clients; -t bounds it below systemd's own stop timeout
    assert "ExecStop=-/bin/sh -c 'echo quit -t 20 | %s'" % tools["nvidia-cuda-mps-control"] in template
    assert "TimeoutStopSec=35" in template
    assert "Restart=on-failure" in template and "EnvironmentFile=/etc/nvidia-mps/%i.conf" in template
    for target in planned:
        unit = units / f"nvidia-mps@{target['name']}.service"
        unit.write_text(template)
        (units / f"{unit.name}.d").mkdir()
        (units / f"{unit.name}.d" / "gpuops.conf").write_text(render("unit-target.conf.j2", mps_target=target,
                                                                     **variables))
        done = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True, text=True, check=False)
        assert done.returncode == 0, done.stderr
    broken = units / "nvidia-mps@gpu0.service.d" / "gpuops.conf"
    broken.write_text(broken.read_text() + "ExecStart=\n")  # a drop-in that loses the daemon
    done = subprocess.run(["systemd-analyze", "verify", str(units / "nvidia-mps@gpu0.service")], capture_output=True,
                          text=True, check=False)
    assert done.returncode != 0


def _exec_helper():
    spec = importlib.util.spec_from_loader("gpuops_mps_exec", loader=None)
    module = importlib.util.module_from_spec(spec)
    path = os.path.join(ROLE, "files", "gpuops-mps-exec")
    module.__dict__["__file__"] = path
    with open(path) as fh:
        exec(compile(fh.read(), "gpuops-mps-exec", "exec"), module.__dict__)
    return module


def test_boot_helper_finds_the_mig_device_by_placement(planned, monkeypatch, capsys):
    helper = _exec_helper()
    mig = planned[2]
    start = mig["mig"]["gpu_instance_start"]
    assert helper.find(mig["gpu_uuid"], start, 0) == mig["uuid"]
    ran = {}
    monkeypatch.setattr(os, "execv", lambda path, argv: ran.update(path=path, argv=argv,
                                                                   env=os.environ["CUDA_VISIBLE_DEVICES"]))
    helper.main(["--gpu", mig["gpu_uuid"], "--gpu-instance-start", str(start), "--compute-instance-start", "0", "--",
                 "/usr/bin/nvidia-cuda-mps-control", "-f"])
    assert ran == {"path": "/usr/bin/nvidia-cuda-mps-control", "argv": ["/usr/bin/nvidia-cuda-mps-control", "-f"],
                   "env": mig["uuid"]}
    assert helper.main(["--gpu", mig["gpu_uuid"], "--gpu-instance-start", "5", "--compute-instance-start", "0", "--",
                        "/bin/true"]) == 1
    assert "has no MIG device at placement 5.0" in capsys.readouterr().err
    assert helper.main(["--gpu", "GPU-nope", "--gpu-instance-start", "0", "--compute-instance-start", "0", "--",
                        "/bin/true"]) == 1
    assert "no GPU GPU-nope on this host" in capsys.readouterr().err
