# Copyright (c) gpuops.sharing contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Filters gpuops.sharing.fleet_report and gpuops.sharing.fleet_report_csv (docs: fleet_report.yml,
fleet_report_csv.yml beside this file); the rows are built by module_utils/_fleet_report.py."""

from __future__ import annotations

from collections.abc import Mapping

from ansible.errors import AnsibleFilterError

from ansible_collections.gpuops.sharing.plugins.module_utils import _fleet_report


def fleet_report(hostvars, hosts, groups=None, var="gpuops_gpu_info"):
    """The fleet report of ``hosts`` from their variables (``hostvars``): ``var`` is what
    gpuops.sharing.gpu_info registered there."""
    if not isinstance(hostvars, Mapping):
        raise AnsibleFilterError(f"fleet_report: its input must be hostvars, got {type(hostvars).__name__}")
    if isinstance(hosts, (str, bytes)) or not all(isinstance(h, str) for h in hosts):
        raise AnsibleFilterError(f"fleet_report: hosts must be a list of inventory names, got {hosts!r}")
    entries = []
    for host in hosts:
        if host not in hostvars:
            raise AnsibleFilterError(f"fleet_report: host {host!r} is not in hostvars")
        variables = hostvars[host]
        info = variables.get(var)
        entries.append((host, list(variables.get("group_names") or []), dict(info) if info is not None else None))
    try:
        return _fleet_report.build(entries, groups or [])
    except _fleet_report.ReportError as exc:
        raise AnsibleFilterError(f"fleet_report: {exc}") from exc


def fleet_report_csv(report):
    """The rows of a fleet_report as CSV text."""
    try:
        return _fleet_report.to_csv(report)
    except _fleet_report.ReportError as exc:
        raise AnsibleFilterError(str(exc)) from exc


class FilterModule:
    def filters(self):
        return {"fleet_report": fleet_report, "fleet_report_csv": fleet_report_csv}
