"""playbooks/plan.yml: check mode shows the diff and writes nothing, a real run writes host_vars once."""

from __future__ import annotations

import os
import subprocess
import sys

import yaml

from .conftest import COLLECTIONS, ROOT

BIN = os.path.dirname(sys.executable)
FLEET = {
    "gpus": [{"host": "node-a", "model": "A100-SXM4-80GB", "count": 2}, {"host": "node-b", "model": "L40S"}],
    "workloads": [
        {"name": "isolated", "memory": "30GiB", "isolation": "hard", "replicas": 2},
        {"name": "shared", "memory": "8GiB", "compute": 0.2, "isolation": "soft", "replicas": 4},
    ],
}


def play(tmp_path, *args):
    env = {**os.environ, "ANSIBLE_COLLECTIONS_PATH": COLLECTIONS, "ANSIBLE_LOCALHOST_WARNING": "false",
           "ANSIBLE_INVENTORY_UNPARSED_WARNING": "false", "ANSIBLE_HOME": str(tmp_path / "home"),
           "ANSIBLE_PYTHON_INTERPRETER": sys.executable, "PATH": BIN + os.pathsep + os.environ.get("PATH", "")}
    done = subprocess.run([os.path.join(BIN, "ansible-playbook"), "-i", "localhost,",
                           os.path.join(ROOT, "playbooks", "plan.yml"), "-e", f"gpuops_plan_file={tmp_path / 'fleet.yml'}",
                           "-e", f"gpuops_plan_host_vars_dir={tmp_path / 'host_vars'}", *args],
                          capture_output=True, text=True, env=env, check=False)
    return done.returncode, done.stdout + done.stderr


def test_plan_playbook(tmp_path):
    (tmp_path / "fleet.yml").write_text(yaml.safe_dump(FLEET))
    written = tmp_path / "host_vars" / "node-a" / "gpuops-plan.yml"

    rc, out = play(tmp_path, "--check", "--diff")
    assert rc == 0, out
    assert "mig_config:" in out and "+++ after" in out and "changed=2" in out
    assert not (tmp_path / "host_vars").exists()

    rc, out = play(tmp_path, "-e", "gpuops_plan_print_only=true")
    assert rc == 0 and "feasible: True" in out and "isolated: 2 replica(s)" in out, out
    assert not (tmp_path / "host_vars").exists()

    rc, out = play(tmp_path)
    assert rc == 0 and "changed=2" in out, out
    node_a = yaml.safe_load(written.read_text())
    assert written.read_text().startswith("# Written by gpuops.sharing playbooks/plan.yml")
    assert [e["devices"] for e in node_a["mig_config"]] in ([[0]], [[0], [1]])
    assert node_a["mig_config"][0]["mig-enabled"] is True
    assert set(node_a) <= {"mig_config", "mps_targets", "mps_default_active_thread_percentage",
                           "mps_default_device_pinned_mem_limit"}

    rc, out = play(tmp_path, "--check", "--diff")
    assert rc == 0 and "changed=0" in out, out
    rc, out = play(tmp_path)
    assert rc == 0 and "changed=0" in out, out


def test_plan_playbook_stops_when_the_fleet_is_too_small(tmp_path):
    fleet = {"gpus": [{"host": "n", "model": "T4"}], "workloads": [{"name": "w", "memory": "10GiB", "replicas": 2}]}
    (tmp_path / "fleet.yml").write_text(yaml.safe_dump(fleet))
    rc, out = play(tmp_path)
    assert rc != 0 and "1 replicas have no room" in out and "no GPU of the fleet has room left for 10 GiB" in out
    assert not (tmp_path / "host_vars").exists()
