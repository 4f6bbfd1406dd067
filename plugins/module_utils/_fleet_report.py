# Copyright (c) gpuops.sharing contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Private to this collection: the fleet report as data (site.yml's JSON and CSV files).

Pure: from what gpuops.sharing.gpu_info returned on each host (``gpus``, ``problems``,
``driver_version``), the same rows as site.yml's printed table (playbooks/templates/fleet_report.j2):
one per GPU, one for a host where no GPU is visible; and every problem. No I/O; the filter plugin
gpuops.sharing.fleet_report hands it the hosts' variables, and site.yml writes the files.
"""

from __future__ import annotations

import csv
import io

FORMAT = 1   # the report's "format" key: raised when a key changes meaning or goes away

CSV_COLUMNS = ["host", "groups", "gpu", "uuid", "model", "mig", "mig_pending", "instances", "mig_devices",
               "compute_mode", "memory_total_mib", "memory_used_mib", "processes", "driver_version",
               "problems", "host_problems"]

# A spreadsheet takes a cell that starts with one of these for a formula (OWASP, "CSV Injection"):
# such a cell is written with a leading apostrophe, which spreadsheets show as text.
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


class ReportError(ValueError):
    """Input that is not what gpu_info returns."""


def mig_state(gpu: dict) -> str:
    """``on``, ``off`` or ``n/a``, with ``*`` when a MIG mode change is pending, as the printed table."""
    if not gpu.get("mig_capable"):
        return "n/a"
    state = "on" if gpu.get("mig_enabled") else "off"
    pending = gpu.get("mig_pending")
    if pending is not None and pending != gpu.get("mig_enabled"):
        state += "*"
    return state


def _problem(host: str, problem: dict) -> dict:
    if not isinstance(problem, dict):
        raise ReportError(f"{host}: a problem of gpu_info is {type(problem).__name__}, not a dict")
    return {"host": host, "gpu": problem.get("gpu"), "severity": problem.get("severity"),
            "code": problem.get("code"), "message": problem.get("message"), "hint": problem.get("hint")}


def build(hosts: list[tuple[str, list, dict | None]], report_groups: list[str]) -> dict:
    """The report of ``hosts``: (inventory name, the host's group_names, gpu_info's registered result,
    or None where there is none), in any order; rows come sorted by host, then GPU index."""
    if not isinstance(report_groups, (list, tuple)) or not all(isinstance(g, str) for g in report_groups):
        raise ReportError(f"groups must be a list of group names, got {report_groups!r}")
    rows, problems, unreported = [], [], []
    for host, group_names, info in sorted(hosts, key=lambda h: str(h[0])):
        host = str(host)
        groups = [g for g in (group_names or []) if g in report_groups]
        if info is not None and not isinstance(info, dict):
            raise ReportError(f"{host}: gpu_info's result is {type(info).__name__}, not a dict")
        if info is None or "gpus" not in info:
            # gpu_info returns gpus always: without it the task did not run there (unreachable,
            # skipped, failed before the module) and the host's GPUs are unknown, not absent
            unreported.append(host)
            info = {}
        gpus, host_problems = info.get("gpus") or [], [_problem(host, p) for p in info.get("problems") or []]
        problems.extend(host_problems)
        attention = [p for p in host_problems if p["severity"] != "info"]
        on_host = sorted({p["code"] for p in attention if p["gpu"] is None and p["code"]})
        for gpu in gpus:
            if not isinstance(gpu, dict):
                raise ReportError(f"{host}: a GPU of gpu_info is {type(gpu).__name__}, not a dict")
        for gpu in sorted(gpus, key=lambda g: g.get("index") or 0):
            instances = gpu.get("gpu_instances") or []
            rows.append({
                "host": host, "groups": groups, "gpu": gpu.get("index"), "uuid": gpu.get("uuid"),
                "model": (gpu.get("name") or "").replace("NVIDIA ", "") or None,
                "mig": mig_state(gpu), "mig_pending": gpu.get("mig_pending"),
                "instances": [gi.get("profile") for gi in instances],
                "mig_devices": sum(len(gi.get("compute_instances") or []) for gi in instances),
                "compute_mode": gpu.get("compute_mode"),
                "memory_total_mib": gpu.get("memory_total_mib"), "memory_used_mib": gpu.get("memory_used_mib"),
                "processes": len(gpu.get("processes") or []),
                "driver_version": info.get("driver_version"),
                "problems": sorted({p["code"] for p in attention if p["gpu"] == gpu.get("index") and p["code"]}),
                "host_problems": on_host})
        if not gpus:
            rows.append({"host": host, "groups": groups, "gpu": None, "uuid": None, "model": None, "mig": None,
                         "mig_pending": None, "instances": [], "mig_devices": 0, "compute_mode": None,
                         "memory_total_mib": None, "memory_used_mib": None, "processes": 0,
                         "driver_version": info.get("driver_version"), "problems": [], "host_problems": on_host})
    needing = [p for p in problems if p["severity"] != "info"]
    return {"format": FORMAT, "hosts": len({r["host"] for r in rows}), "gpus": sum(r["gpu"] is not None for r in rows),
            "problems_needing_attention": len(needing), "unreported_hosts": unreported,
            "rows": rows, "problems": problems}


def _cell(value) -> str:
    if value is None:
        text = ""
    elif isinstance(value, bool):
        text = "true" if value else "false"
    elif isinstance(value, (list, tuple)):
        text = ";".join(str(v) for v in value)
    else:
        text = str(value)
    return "'" + text if text.startswith(_FORMULA_START) else text


def to_csv(report: dict) -> str:
    """The report's rows as CSV (RFC 4180 quoting, ``\\r\\n`` line ends as Python's csv writes them;
    lists joined with ``;``), a header line first."""
    if not isinstance(report, dict) or not isinstance(report.get("rows"), list):
        raise ReportError("fleet_report_csv takes what fleet_report returns (a dict with rows)")
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(CSV_COLUMNS)
    for row in report["rows"]:
        writer.writerow([_cell(row.get(column)) for column in CSV_COLUMNS])
    return out.getvalue()
