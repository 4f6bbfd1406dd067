"""playbooks/site.yml's fleet report: printed as before, and with gpuops_report_dir written as JSON
and CSV on the controller (two gpusim hosts on a local connection, in no group site.yml configures; the report
is told to show gpu-a's group)."""

from __future__ import annotations

import csv
import json
import os
import re
import subprocess
import sys

import yaml

from .conftest import COLLECTIONS, ROOT, SIMULATOR

BIN = os.path.dirname(sys.executable)


def site(tmp_path, *args, playbook=None):
    state = tmp_path / "gpus.json"
    if not state.exists():
        subprocess.run([sys.executable, "-m", "gpusim", "--state", str(state), "init", "--model", "A100-SXM4-40GB",
                        "--gpus", "2"], check=True, capture_output=True, env={**os.environ, "PYTHONPATH": SIMULATOR})
    inventory = tmp_path / "inventory.yml"
    inventory.write_text(yaml.safe_dump({"all": {
        "vars": {"ansible_connection": "local", "ansible_python_interpreter": sys.executable},
        "children": {"batch_jobs": {"hosts": {"gpu-a": None}}, "others": {"hosts": {"gpu-b": None}}}}}))
    env = {**os.environ, "ANSIBLE_COLLECTIONS_PATH": COLLECTIONS, "ANSIBLE_HOME": str(tmp_path / "home"),
           "GPUSIM_STATE": str(state), "PYTHONPATH": SIMULATOR, "ANSIBLE_NOCOLOR": "1",
           "PATH": BIN + os.pathsep + os.environ.get("PATH", "")}
    done = subprocess.run([os.path.join(BIN, "ansible-playbook"), "-i", str(inventory),
                           playbook or os.path.join(ROOT, "playbooks", "site.yml"),
                           # gpu-a's group is one site.yml configures nothing in, shown as if it were one of its own
                           "-e", '{"gpuops_report_groups": ["batch_jobs"]}', *args],
                          capture_output=True, text=True, env=env, cwd=tmp_path, check=False)
    return done.returncode, done.stdout + done.stderr


def test_report_written_as_json_and_csv_and_still_printed(tmp_path):
    report_dir = tmp_path / "reports" / "today"
    rc, out = site(tmp_path, "-e", f"gpuops_report_dir={report_dir}")
    assert rc == 0, out
    # the printed table as before: header, one line per GPU, the problem count
    assert "HOST             GROUP                        GPU  MODEL" in out
    assert "gpu-a            batch_jobs                     1  A100-SXM4-40GB             off" in out
    assert "0 problem(s) needing attention" in out

    report = json.loads((report_dir / "fleet-report.json").read_text())
    assert (report["format"], report["hosts"], report["gpus"]) == (1, 2, 4)
    assert [(r["host"], r["gpu"], r["groups"], r["mig"]) for r in report["rows"]] == [
        ("gpu-a", 0, ["batch_jobs"], "off"), ("gpu-a", 1, ["batch_jobs"], "off"),
        ("gpu-b", 0, [], "off"), ("gpu-b", 1, [], "off")]
    assert report["rows"][0]["uuid"].startswith("GPU-") and report["rows"][0]["memory_total_mib"] == 40960
    rows = list(csv.DictReader((report_dir / "fleet-report.csv").open(newline="")))
    assert [(r["host"], r["gpu"], r["groups"], r["model"]) for r in rows] == [
        ("gpu-a", "0", "batch_jobs", "A100-SXM4-40GB"), ("gpu-a", "1", "batch_jobs", "A100-SXM4-40GB"),
        ("gpu-b", "0", "", "A100-SXM4-40GB"), ("gpu-b", "1", "", "A100-SXM4-40GB")]
    assert oct((report_dir / "fleet-report.json").stat().st_mode & 0o777) == "0o644"


def test_report_dir_must_be_absolute_and_nothing_is_written_without_it(tmp_path):
    rc, out = site(tmp_path, "-e", "gpuops_report_dir=reports")
    assert rc != 0
    assert "gpuops_report_dir must be an absolute path on the controller, got reports" in out
    assert not (tmp_path / "reports").exists()

    rc, out = site(tmp_path)
    assert rc == 0, out
    # one skipped include, not a skipped task per file
    assert re.search(r"TASK \[Write the fleet report as JSON and CSV on the controller\] \*+\nskipping: \[gpu-[ab]\]\n",
                     out), out
    assert "Write fleet-report.json" not in out
    assert not list(tmp_path.rglob("fleet-report.*"))


def test_the_filters_examples_run_as_written(tmp_path):
    """Every task of the EXAMPLES of plugins/filter/fleet_report*.yml, in one play on the two hosts
    (their /var/tmp/ paths mapped into this test's folder)."""
    tasks = []
    for name in ("fleet_report", "fleet_report_csv"):
        with open(os.path.join(ROOT, "plugins", "filter", name + ".yml")) as fh:
            tasks += yaml.safe_load(yaml.safe_load(fh)["EXAMPLES"])
    assert [t["name"] for t in tasks][0] == "Gather what every GPU is doing"
    text = yaml.safe_dump([{"name": "the filters' examples", "hosts": "all", "gather_facts": False, "tasks": tasks}])
    playbook = tmp_path / "examples.yml"
    playbook.write_text(text.replace("/var/tmp/", f"{tmp_path}/"))
    rc, out = site(tmp_path, playbook=str(playbook))
    assert rc == 0, out
    report = json.loads((tmp_path / "fleet-report.json").read_text())
    assert [(r["host"], r["gpu"], r["groups"]) for r in report["rows"]] == [
        ("gpu-a", 0, []), ("gpu-a", 1, []), ("gpu-b", 0, []), ("gpu-b", 1, [])]   # only mig_training is shown
    rows = list(csv.DictReader((tmp_path / "fleet-report.csv").open(newline="")))
    assert [(r["host"], r["gpu"]) for r in rows] == [("gpu-a", "0"), ("gpu-a", "1"), ("gpu-b", "0"), ("gpu-b", "1")]
