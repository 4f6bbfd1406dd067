"""gpuops.sharing.capacity_plan: its EXAMPLES run as written through ansible-playbook (the action plugin)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import yaml

from ansible_collections.gpuops.sharing.plugins.module_utils import _capacity
from ansible_collections.gpuops.sharing.plugins.modules import capacity_plan

from ...conftest import COLLECTIONS

BIN = os.path.dirname(sys.executable)


def _playbook(tmp_path, tasks) -> tuple[int, str, dict]:
    """Run the tasks on localhost; returns (rc, output, every registered variable)."""
    registered = [t["register"] for t in tasks if "register" in t]
    dump = tmp_path / "registered.json"
    tasks = [*tasks, {"name": "Dump the registered results", "ansible.builtin.copy": {
        "content": "{{ {" + ", ".join(f"'{r}': {r}" for r in registered) + "} | to_json }}", "dest": str(dump),
        "mode": "0600"}}]
    book = tmp_path / "play.yml"
    book.write_text(yaml.safe_dump([{"name": "Capacity plan", "hosts": "localhost", "gather_facts": False,
                                     "connection": "local", "tasks": tasks}]))
    env = {**os.environ, "ANSIBLE_COLLECTIONS_PATH": COLLECTIONS, "ANSIBLE_LOCALHOST_WARNING": "false",
           "ANSIBLE_INVENTORY_UNPARSED_WARNING": "false", "ANSIBLE_HOME": str(tmp_path / "home"),
           "ANSIBLE_PYTHON_INTERPRETER": sys.executable, "PATH": BIN + os.pathsep + os.environ.get("PATH", "")}
    done = subprocess.run([os.path.join(BIN, "ansible-playbook"), "-i", "localhost,", str(book)],
                          capture_output=True, text=True, env=env, check=False)
    output = done.stdout + done.stderr
    return done.returncode, output, json.loads(dump.read_text()) if dump.exists() else {}


def test_examples_run_as_written(tmp_path):
    tasks = yaml.safe_load(capacity_plan.EXAMPLES)
    rc, output, found = _playbook(tmp_path, tasks)
    assert rc == 0, output
    plan, pool = found["plan"], found["pool"]
    assert plan["feasible"] and plan["optimal"] and not plan["changed"]
    # embeddings share MPS devices, fraud-model has a MIG instance of its own
    frauds = [a for a in plan["assignments"] if a["workload"] == "fraud-model"]
    assert len(frauds) == 1 and frauds[0]["share"] == "alone"
    assert all(a["share"] == "MPS client" for a in plan["assignments"] if a["workload"] == "embeddings")
    assert set(plan["host_vars"]) <= {"gpu-node-1", "gpu-node-2"}
    assert pool["gpus_used"] >= pool["lower_bound"] and pool["host_vars"] == {}
    assert "fraud-model" in plan["explanation"] and "hard isolation" in plan["explanation"]["fraud-model"]


def test_bad_arguments_fail_with_every_key(tmp_path):
    _rc, output, found = _playbook(tmp_path, [
        {"name": "Unknown model", "gpuops.sharing.capacity_plan": {
            "gpus": [{"model": "A100-80G"}], "workloads": [{"name": "a", "memory": "1GiB"}]},
         "register": "unknown", "ignore_errors": True},
        {"name": "Bad isolation", "gpuops.sharing.capacity_plan": {
            "gpus": [{"model": "T4"}], "workloads": [{"name": "a", "memory": "1GiB", "isolation": "strict"}]},
         "register": "choice", "ignore_errors": True},
    ])
    unknown, choice = found["unknown"], found["choice"]
    assert unknown["failed"] and "unknown GPU model 'A100-80G'" in unknown["msg"] and "A100-80GB" in unknown["msg"]
    assert choice["failed"] and "isolation" in choice["msg"] and "hard, soft, none" in choice["msg"]
    for result in (unknown, choice):
        assert set(_capacity.EMPTY) <= set(result)


def test_argument_spec_matches_documentation():
    doc = yaml.safe_load(capacity_plan.DOCUMENTATION)["options"]
    for option, spec in capacity_plan.ARGUMENT_SPEC.items():
        documented = doc[option]["suboptions"]
        assert set(spec["options"]) == set(documented)
        for name, sub in spec["options"].items():
            assert sub["type"] == documented[name]["type"], name
            assert sub.get("default") == documented[name].get("default"), name
            assert sub.get("choices") == documented[name].get("choices"), name
