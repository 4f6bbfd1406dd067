"""gpuops.sharing.cdi_spec on simulated hosts: written when the devices change, units restarted only then."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import yaml

from ansible_collections.gpuops.sharing.plugins.module_utils import _cdi, _cdi_host
from ansible_collections.gpuops.sharing.plugins.modules import cdi_spec as module

from ...conftest import SIMULATOR, run_module

SMI = [sys.executable, os.path.join(SIMULATOR, "libexec", "nvidia-smi.py")]


def smi(*argv: str) -> None:
    done = subprocess.run(SMI + list(argv), capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.fixture
def systemd(monkeypatch) -> list[list[str]]:
    """A booted systemd whose systemctl records each call; nvidia-cdi-refresh is not installed."""
    calls: list[list[str]] = []
    real_run = module.AnsibleModule.run_command
    monkeypatch.setattr(_cdi_host, "systemd_booted", lambda: True)
    real_bin = module.AnsibleModule.get_bin_path
    monkeypatch.setattr(module.AnsibleModule, "get_bin_path",
                        lambda self, name, *a, **k: "/bin/systemctl" if name == "systemctl" else
                        real_bin(self, name, *a, **k))

    def run(self, argv, **kwargs):
        if "/bin/systemctl" in argv:
            calls.append(argv[argv.index("/bin/systemctl") + 1:])
            return (0, "LoadState=not-found\n", "") if "show" in argv else (0, "", "")
        return real_run(self, argv, **kwargs)

    monkeypatch.setattr(module.AnsibleModule, "run_command", run)
    return calls


def test_written_once_then_again_after_a_mig_change_with_restarts(sim, tmp_path, systemd):
    sim.init("A100-SXM4-40GB", 1)
    output = str(tmp_path / "cdi" / "nvidia.yaml")
    request = {"output": output, "restart_units": ["nvidia-device-plugin.service", "gpu-feature-discovery.service"]}
    check, failed = run_module(module.main, {**request, "_ansible_check_mode": True, "_ansible_diff": True})
    assert not failed and check["changed"], check
    assert not os.path.exists(output) and check["diff"]["before"] == ""
    assert check["operations"][0] == f"write {output} (new file) from nvidia-ctk cdi generate"
    assert [c for c in systemd if c[0] != "show"] == []          # check mode restarted nothing
    real, failed = run_module(module.main, request)
    assert not failed and real["changed"] and real["method"] == "nvidia-ctk"
    uuid = sim.state()["gpus"][0]["uuid"]
    assert real["devices"] == ["nvidia.com/gpu=0", f"nvidia.com/gpu={uuid}", "nvidia.com/gpu=all"]
    assert real["restarted"] == request["restart_units"]
    assert [c for c in systemd if c[0] != "show"] == [["try-restart", "nvidia-device-plugin.service"],
                                                      ["try-restart", "gpu-feature-discovery.service"]]
    with open(output, encoding="utf-8") as fh:
        assert yaml.safe_load(fh)["kind"] == "nvidia.com/gpu"
    systemd.clear()
    again, failed = run_module(module.main, request)
    assert not failed and not again["changed"] and again["restarted"] == []
    assert [c for c in systemd if c[0] != "show"] == []          # no change, no restart

    smi("-i", "0", "-mig", "1")
    sim.gpusim("reboot")
    smi("mig", "-i", "0", "-cgi", "9,9", "-C")
    after, failed = run_module(module.main, request)
    assert not failed and after["changed"]
    assert after["operations"][0] == f"write {output} (the devices changed) from nvidia-ctk cdi generate"
    assert "nvidia.com/gpu=0:1" in after["devices"] and "nvidia.com/gpu=0:0" in after["devices"]
    assert after["restarted"] == request["restart_units"]


def test_no_systemd_no_restart_and_absent_removes(sim, tmp_path):
    sim.init("H100-SXM5-80GB", 1)
    output = str(tmp_path / "nvidia.json")
    real, failed = run_module(module.main, {"output": output, "restart_units": ["nvidia-device-plugin.service"],
                                            "device_name_strategy": ["uuid"]})
    assert not failed and real["changed"] and real["restarted"] == []
    assert real["devices"] == [f"nvidia.com/gpu={sim.state()['gpus'][0]['uuid']}", "nvidia.com/gpu=all"]
    gone, failed = run_module(module.main, {"output": output, "state": "absent"})
    assert not failed and gone["changed"] and not os.path.exists(output)
    again, failed = run_module(module.main, {"output": output, "state": "absent"})
    assert not failed and not again["changed"]


def test_refresh_service_chosen_when_installed(sim, tmp_path, monkeypatch, systemd):
    sim.init("H100-SXM5-80GB", 1)
    monkeypatch.setattr(_cdi, "REFRESH_OUTPUT", str(tmp_path / "run" / "nvidia.yaml"))
    real_run = module.AnsibleModule.run_command

    def run(self, argv, **kwargs):
        if "/bin/systemctl" in argv and "show" in argv:
            return 0, "LoadState=loaded\n", ""
        if "/bin/systemctl" in argv:       # the unit runs nvidia-ctk cdi generate --output=...
            systemd.append(argv)
            subprocess.run([os.path.join(SIMULATOR, "bin", "nvidia-ctk"), "cdi", "generate",
                            f"--output={_cdi.REFRESH_OUTPUT}"], check=True, capture_output=True)
            return 0, "", ""
        return real_run(self, argv, **kwargs)

    monkeypatch.setattr(module.AnsibleModule, "run_command", run)
    result, failed = run_module(module.main, {"output": _cdi.REFRESH_OUTPUT})
    assert not failed and result["changed"] and result["method"] == "refresh-service", result
    assert systemd[-1][-2:] == ["restart", "nvidia-cdi-refresh.service"]
    again, failed = run_module(module.main, {"output": _cdi.REFRESH_OUTPUT})
    assert not failed and not again["changed"]


def test_refresh_service_refused_where_it_cannot_work(sim, tmp_path):
    sim.init("H100-SXM5-80GB", 1)
    result, failed = run_module(module.main, {"output": str(tmp_path / "x.yaml"), "method": "refresh-service"})
    assert failed and not result["changed"]
    assert "method=refresh-service needs systemd" in result["msg"]
    assert "method=refresh-service writes /var/run/cdi/nvidia.yaml" in result["msg"]


def test_nvidia_ctk_failure_reported(sim, tmp_path):
    sim.init("H100-SXM5-80GB", 1)
    os.unlink(sim.path)
    result, failed = run_module(module.main, {"output": str(tmp_path / "x.yaml")})
    assert failed and "cdi generate --format=yaml failed (rc=1)" in result["msg"] and "does not exist" in result["msg"]


@pytest.mark.parametrize("args, message", [
    ({"output": "nvidia.yaml"}, "output='nvidia.yaml': give an absolute path ending in .yaml or .json"),
    ({"output": "/etc/cdi/nvidia.toml"}, "give an absolute path ending in .yaml or .json"),
    ({"output": "/etc/cdi/../x.yaml"}, "give an absolute path"),
    ({"device_name_strategy": ["serial"]}, "device_name_strategy: 'serial' is not one of nvidia-ctk's strategies"),
    ({"restart_units": ["nvidia-device-plugin"]}, "'nvidia-device-plugin' is not a systemd service name"),
    ({"restart_units": ["a.service; reboot"]}, "is not a systemd service name"),
    ({"refresh_service": "x y.service"}, "'x y.service' is not a systemd service name"),
])
def test_bad_requests_refused(args, message):
    result, failed = run_module(module.main, args)
    assert failed and message in result["msg"], result["msg"]


@pytest.mark.parametrize("spec, message", [
    (None, "printed no CDI spec"),
    ({"kind": "nvidia.com/gpu"}, "printed no CDI spec"),
    ({"kind": "nvidia.com/gpu", "devices": [{"containerEdits": {}}]}, "a device without a name"),
])
def test_device_names_refuse_what_is_no_spec(spec, message):
    with pytest.raises(_cdi.CdiError) as info:
        _cdi.device_names(spec)
    assert message in info.value.message


@pytest.mark.parametrize("method, output, loaded, chosen", [
    ("auto", "/var/run/cdi/nvidia.yaml", True, "refresh-service"),
    ("auto", "/etc/cdi/nvidia.yaml", True, "nvidia-ctk"),
    ("auto", "/var/run/cdi/nvidia.yaml", False, "nvidia-ctk"),
    ("nvidia-ctk", "/var/run/cdi/nvidia.yaml", True, "nvidia-ctk"),
])
def test_choose_method(method, output, loaded, chosen):
    assert _cdi.choose_method(method, output, loaded) == chosen


def test_written_spec_valid_against_the_cdi_schema(sim, tmp_path):
    """The file the module writes is a CDI spec as the CDI project's JSON schema defines it."""
    jsonschema = pytest.importorskip("jsonschema")     # in requirements/main.txt; not in the floor venvs
    referencing = pytest.importorskip("referencing")
    import json
    schema_dir = os.path.join(SIMULATOR, "tests", "fixtures", "cdi-schema")
    with open(os.path.join(schema_dir, "schema.json")) as fh:
        schema = json.load(fh)
    with open(os.path.join(schema_dir, "defs.json")) as fh:
        defs = json.load(fh)
    registry = referencing.Registry().with_resource("defs.json", referencing.Resource.from_contents(
        defs, default_specification=referencing.jsonschema.DRAFT7))
    validator = jsonschema.Draft7Validator(schema, registry=registry)
    sim.init("A100-SXM4-40GB", 2)
    smi("-i", "1", "-mig", "1")
    sim.gpusim("reboot")
    smi("mig", "-i", "1", "-cgi", "19,19,19", "-C")
    output = tmp_path / "nvidia.yaml"
    result, failed = run_module(module.main, {"output": str(output)})
    assert not failed and "nvidia.com/gpu=1:2" in result["devices"]
    with open(output, encoding="utf-8") as fh:
        spec = yaml.safe_load(fh)
    validator.validate(spec)
    spec["devices"][0]["containerEdits"]["deviceNodes"][0].pop("path")
    with pytest.raises(jsonschema.ValidationError):     # the schema is live: a node without a path fails it
        validator.validate(spec)
