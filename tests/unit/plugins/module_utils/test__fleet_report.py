"""plugins/module_utils/_fleet_report.py: the fleet report's rows and problems, and its CSV."""

from __future__ import annotations

import csv
import io

import pytest

from ansible_collections.gpuops.sharing.plugins.module_utils import _fleet_report as fr

GROUPS = ["mig_training", "mps_inference"]


def gpu(index, **kw):
    base = {"index": index, "uuid": f"GPU-{index}", "name": "NVIDIA A100-SXM4-40GB", "mig_capable": True,
            "mig_enabled": False, "mig_pending": False, "gpu_instances": [], "compute_mode": "default",
            "memory_total_mib": 40960, "memory_used_mib": 0, "processes": []}
    return {**base, **kw}


@pytest.mark.parametrize("capable, enabled, pending, want", [
    (False, False, None, "n/a"),
    (True, False, False, "off"),
    (True, True, True, "on"),
    (True, False, True, "off*"),    # enable pending until a reset
    (True, True, False, "on*"),     # disable pending
    (True, True, None, "on"),       # the driver could not tell: no star
])
def test_mig_state_as_the_printed_table(capable, enabled, pending, want):
    assert fr.mig_state({"mig_capable": capable, "mig_enabled": enabled, "mig_pending": pending}) == want


def test_rows_per_gpu_sorted_with_groups_instances_and_problems():
    mig_gpu = gpu(0, mig_enabled=True, mig_pending=True, gpu_instances=[
        {"profile": "3g.20gb", "compute_instances": [{"id": 0}]},
        {"profile": "1g.5gb", "compute_instances": [{"id": 0}, {"id": 1}]}],
        processes=[{"pid": 1}, {"pid": 2}])
    info_b = {"driver_version": "580.95.05", "gpus": [gpu(1), mig_gpu], "problems": [
        {"gpu": 1, "code": "mig_pending_reset", "severity": "warning", "message": "m", "hint": "h"},
        {"gpu": 1, "code": "persistence_off", "severity": "info", "message": "i", "hint": "h"},
        {"gpu": None, "code": "fabric_manager_down", "severity": "error", "message": "f", "hint": "h"}]}
    info_a = {"driver_version": None, "gpus": [], "problems": [
        {"gpu": None, "code": "driver_not_loaded", "severity": "error", "message": "d", "hint": "h"}]}
    report = fr.build([("node-b", ["mps_inference", "gpu_nodes", "mig_training"], info_b),
                       ("node-a", ["gpu_nodes"], info_a)], GROUPS)
    rows = report["rows"]
    assert [(r["host"], r["gpu"]) for r in rows] == [("node-a", None), ("node-b", 0), ("node-b", 1)]
    none, first, second = rows
    assert none["model"] is None and none["host_problems"] == ["driver_not_loaded"] and none["groups"] == []
    assert first["groups"] == ["mps_inference", "mig_training"]     # the host's order, others left out
    assert first["model"] == "A100-SXM4-40GB" and first["mig"] == "on"
    assert first["instances"] == ["3g.20gb", "1g.5gb"] and first["mig_devices"] == 3 and first["processes"] == 2
    assert first["problems"] == [] and first["host_problems"] == ["fabric_manager_down"]
    assert second["problems"] == ["mig_pending_reset"]              # the info problem is not a code here
    assert second["driver_version"] == "580.95.05"
    assert (report["hosts"], report["gpus"], report["problems_needing_attention"]) == (2, 2, 3)
    assert len(report["problems"]) == 4 and {p["host"] for p in report["problems"]} == {"node-a", "node-b"}
    assert report["format"] == fr.FORMAT and report["unreported_hosts"] == []


@pytest.mark.parametrize("result", [
    None,                                                       # never registered
    {"unreachable": True, "msg": "ssh: connect to host node-c port 22: No route to host", "changed": False},
    {"skipped": True, "changed": False},
])
def test_a_host_without_gpu_info_is_a_row_and_listed_as_unreported(result):
    report = fr.build([("node-c", [], result), ("node-d", [], {"gpus": [], "problems": []})], GROUPS)
    assert report["unreported_hosts"] == ["node-c"]             # node-d was read: it has no GPU
    assert [(r["host"], r["gpu"], r["model"]) for r in report["rows"]] == [("node-c", None, None),
                                                                           ("node-d", None, None)]
    assert (report["hosts"], report["gpus"]) == (2, 0)


@pytest.mark.parametrize("hosts, groups, message", [
    ([("h", [], ["not", "a", "dict"])], [], "h: gpu_info's result is list, not a dict"),
    ([("h", [], {"gpus": ["x"]})], [], "h: a GPU of gpu_info is str, not a dict"),
    ([("h", [], {"gpus": [], "problems": [3]})], [], "h: a problem of gpu_info is int, not a dict"),
    ([], "mig_training", "groups must be a list of group names, got 'mig_training'"),
])
def test_bad_input_is_named(hosts, groups, message):
    with pytest.raises(fr.ReportError, match="^" + message.replace("(", r"\(").replace(")", r"\)") + "$"):
        fr.build(hosts, groups)


def test_csv_has_a_header_one_line_per_row_and_reads_back():
    report = fr.build([("node-b", ["mig_training", "mps_inference"], {"driver_version": "580.95.05", "gpus": [
        gpu(0, mig_enabled=True, mig_pending=True, gpu_instances=[{"profile": "3g.20gb"}, {"profile": "3g.20gb"}])],
        "problems": []}), ("node-a", [], {"gpus": [], "problems": []})], GROUPS)
    text = fr.to_csv(report)
    lines = list(csv.DictReader(io.StringIO(text)))
    assert text.splitlines()[0].split(",") == fr.CSV_COLUMNS
    assert [(r["host"], r["gpu"]) for r in lines] == [("node-a", ""), ("node-b", "0")]
    assert lines[1]["groups"] == "mig_training;mps_inference" and lines[1]["instances"] == "3g.20gb;3g.20gb"
    assert lines[1]["mig_pending"] == "true" and lines[1]["mig"] == "on" and lines[0]["model"] == ""


@pytest.mark.parametrize("value, cell", [
    ("=HYPERLINK(\"x\")", "'=HYPERLINK(\"x\")"), ("+1", "'+1"), ("-1", "'-1"), ("@SUM(A1)", "'@SUM(A1)"),
    ("gpu-a", "gpu-a"), (None, ""), (True, "true"), (["a", "b"], "a;b"), (3, "3"),
])
def test_cells_a_spreadsheet_would_run_are_text(value, cell):
    assert fr._cell(value) == cell


def test_a_host_name_with_a_comma_and_quotes_is_quoted():
    report = fr.build([('odd,"name"', [], {"gpus": [], "problems": []})], [])
    text = fr.to_csv(report)
    assert '"odd,""name"""' in text
    assert next(csv.DictReader(io.StringIO(text)))["host"] == 'odd,"name"'


@pytest.mark.parametrize("bad", [None, [], {"rows": "x"}, {"gpus": []}])
def test_csv_of_something_else_is_refused(bad):
    with pytest.raises(fr.ReportError, match="fleet_report_csv takes what fleet_report returns"):
        fr.to_csv(bad)
