"""plugins/filter/fleet_report.py: the filters read the hosts' variables and name bad input."""

from __future__ import annotations

import pytest
from ansible.errors import AnsibleFilterError

from ansible_collections.gpuops.sharing.plugins.filter.fleet_report import FilterModule

FILTERS = FilterModule().filters()
INFO = {"driver_version": "580.95.05", "problems": [],
        "gpus": [{"index": 0, "uuid": "GPU-0", "name": "NVIDIA H100 80GB HBM3", "mig_capable": True,
                  "mig_enabled": False, "mig_pending": False, "gpu_instances": []}]}
HOSTVARS = {"a": {"group_names": ["mps_inference"], "gpuops_gpu_info": INFO},
            "b": {"group_names": [], "other": INFO},
            "c": {"group_names": ["mps_inference"]}}


def test_reads_the_registered_variable_of_the_hosts_asked_for():
    report = FILTERS["fleet_report"](HOSTVARS, ["a", "c"], ["mps_inference"])
    assert [(r["host"], r["gpu"], r["model"], r["groups"]) for r in report["rows"]] == [
        ("a", 0, "H100 80GB HBM3", ["mps_inference"]), ("c", None, None, ["mps_inference"])]
    assert report["unreported_hosts"] == ["c"]


def test_another_variable_name():
    report = FILTERS["fleet_report"](HOSTVARS, ["b"], var="other")
    assert report["gpus"] == 1 and report["rows"][0]["groups"] == []


def test_csv_of_the_report():
    text = FILTERS["fleet_report_csv"](FILTERS["fleet_report"](HOSTVARS, ["a"]))
    assert text.splitlines()[1].startswith("a,,0,GPU-0,H100 80GB HBM3,off,false,")


@pytest.mark.parametrize("args, message", [
    (([1, 2], ["a"]), "fleet_report: its input must be hostvars, got list"),
    ((HOSTVARS, "a"), "fleet_report: hosts must be a list of inventory names, got 'a'"),
    ((HOSTVARS, ["zz"]), "fleet_report: host 'zz' is not in hostvars"),
    ((HOSTVARS, ["a"], "mps_inference"), "fleet_report: groups must be a list of group names"),
])
def test_bad_input_is_named(args, message):
    with pytest.raises(AnsibleFilterError, match=message):
        FILTERS["fleet_report"](*args)


def test_csv_of_something_else():
    with pytest.raises(AnsibleFilterError, match="fleet_report_csv takes what fleet_report returns"):
        FILTERS["fleet_report_csv"]("text")
