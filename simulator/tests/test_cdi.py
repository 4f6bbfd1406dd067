"""gpusim's nvidia-ctk cdi generate / list: the toolkit's layout and names, valid against the CDI schema."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import jsonschema
import pytest
import referencing
import yaml

from gpusim import cdi

HERE = os.path.dirname(os.path.abspath(__file__))
SCHEMA_DIR = os.path.join(HERE, "fixtures", "cdi-schema")
CTK = [sys.executable, os.path.join(os.path.dirname(HERE), "libexec", "nvidia-ctk.py")]


def validator() -> jsonschema.Draft7Validator:
    """The CDI project's schema.json with its defs.json, as schema/schema.go loads them."""
    with open(os.path.join(SCHEMA_DIR, "schema.json")) as fh:
        schema = json.load(fh)
    with open(os.path.join(SCHEMA_DIR, "defs.json")) as fh:
        defs = json.load(fh)
    registry = referencing.Registry().with_resource("defs.json", referencing.Resource.from_contents(
        defs, default_specification=referencing.jsonschema.DRAFT7))
    return jsonschema.Draft7Validator(schema, registry=registry)


def ctk(*args: str, env=None) -> subprocess.CompletedProcess:
    return subprocess.run(CTK + list(args), capture_output=True, text=True, check=False,
                          env={**os.environ, **(env or {})})


def test_full_gpus_named_by_index_and_uuid_valid_against_the_schema(host):
    host.init("H100-SXM5-80GB", 2)
    done = ctk("cdi", "generate")
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("---\ncdiVersion: 0.5.0\nkind: nvidia.com/gpu\ndevices:\n    - name: \"0\"\n"
                                  "      containerEdits:\n        deviceNodes:\n            - path: /dev/nvidia0\n")
    spec = yaml.safe_load(done.stdout)
    validator().validate(spec)
    uuids = [g["uuid"] for g in host.state()["gpus"]]
    assert [d["name"] for d in spec["devices"]] == ["0", uuids[0], "1", uuids[1], "all"]
    assert spec["devices"][-1]["containerEdits"]["deviceNodes"] == [
        {"path": "/dev/nvidia0", "hostPath": "/dev/nvidia0"}, {"path": "/dev/nvidia1", "hostPath": "/dev/nvidia1"}]
    assert "NVIDIA_VISIBLE_DEVICES=void" in spec["containerEdits"]["env"]
    assert {"path": "/dev/nvidiactl", "hostPath": "/dev/nvidiactl"} in spec["containerEdits"]["deviceNodes"]


def test_mig_devices_named_gpu_colon_index_with_their_caps(host):
    host.init("A100-SXM4-40GB", 1)
    assert host.smi("-i", "0", "-mig", "1").returncode == 0
    assert host.gpusim("reboot") == 0
    assert host.smi("mig", "-i", "0", "-cgi", "9,19", "-C").returncode == 0
    spec = yaml.safe_load(ctk("cdi", "generate").stdout)
    validator().validate(spec)
    gpu = host.state()["gpus"][0]
    migs = [(gi, ci) for gi in sorted(gpu["gpu_instances"], key=lambda g: g["id"])
            for ci in sorted(gi["compute_instances"], key=lambda c: c["id"])]
    names = [d["name"] for d in spec["devices"]]
    assert names == ["0", gpu["uuid"], "0:0", migs[0][1]["uuid"], "0:1", migs[1][1]["uuid"], "all"]
    gi, ci = migs[1]
    nodes = [n["path"] for n in spec["devices"][4]["containerEdits"]["deviceNodes"]]
    assert nodes == ["/dev/nvidia0", f"/dev/nvidia-caps/nvidia-cap{3 + gi['id'] * 9}",
                     f"/dev/nvidia-caps/nvidia-cap{3 + gi['id'] * 9 + 1 + ci['id']}"]


@pytest.mark.parametrize("gpu, gi, ci, minor", [(0, 0, None, 3), (0, 0, 0, 4), (0, 0, 7, 11), (0, 1, None, 12),
                                                (1, 0, None, 138), (7, 14, 7, 1082)])
def test_cap_minors_follow_the_drivers_mig_minors(gpu, gi, ci, minor):
    assert cdi.cap_minor(gpu, gi, ci) == minor


def test_output_file_list_and_strategies(host, tmp_path):
    host.init("H100-SXM5-80GB", 1)
    out = tmp_path / "cdi" / "nvidia.yaml"
    done = ctk("cdi", "generate", f"--output={out}", "--device-name-strategy=type-index")
    assert done.returncode == 0 and done.stdout == ""
    assert 'level=info msg="Generated CDI spec with version 0.5.0"' in done.stderr
    assert [d["name"] for d in yaml.safe_load(out.read_text())["devices"]] == ["gpu0", "all"]
    listed = ctk("cdi", "list", f"--spec-dir={tmp_path / 'cdi'}")
    assert listed.stdout == "nvidia.com/gpu=all\nnvidia.com/gpu=gpu0\n"
    assert 'msg="Found 2 CDI devices"' in listed.stderr
    env_out = tmp_path / "run" / "nvidia.json"
    done = ctk("cdi", "generate", env={"NVIDIA_CTK_CDI_OUTPUT_FILE_PATH": str(env_out)})
    assert done.returncode == 0
    validator().validate(json.loads(env_out.read_text()))


@pytest.mark.parametrize("args, message", [
    (["--format=toml"], 'invalid output format: \\"toml\\"'),
    (["--device-name-strategy=serial"], "invalid device name strategy: serial"),
    (["--frobnicate"], "flag provided but not defined: --frobnicate"),
])
def test_bad_flags_refused(host, args, message):
    host.init("H100-SXM5-80GB", 1)
    done = ctk("cdi", "generate", *args)
    assert done.returncode == 1 and message in done.stderr, done.stderr


def test_schema_rejects_what_it_should():
    """The vendored schema is live: a spec without devices' names fails it."""
    with pytest.raises(jsonschema.ValidationError):
        validator().validate({"cdiVersion": "0.5.0", "kind": "nvidia.com/gpu", "devices": [{"containerEdits": {}}]})
