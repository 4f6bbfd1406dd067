# Copyright (c) gpuops.sharing contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Benchmark callback (bench/fleet_bench.py): how many tasks ran on each host, per role.

A task counts when it ran on the managed host: not skipped, and not one of the actions that run
on the controller only (debug, set_fact, assert, meta, ...).  ``template`` and ``copy`` may run
two modules (a stat, then the write) for one task; a task counts once.  Written as JSON to
``$GPUOPS_TASK_COUNT_FILE`` at the end of the run: {host: {role or "(play)": count}}.
"""

from __future__ import annotations

import json
import os

from ansible.plugins.callback import CallbackBase

DOCUMENTATION = """
name: gpuops_task_count
type: aggregate
short_description: count the tasks each role ran on each host (gpuops.sharing benchmarks)
description: Writes {host -> role -> tasks that ran on the host} as JSON to GPUOPS_TASK_COUNT_FILE.
"""

# actions that do their work on the controller: no module runs on the host
CONTROLLER_ONLY = {"debug", "set_fact", "assert", "fail", "meta", "add_host", "group_by", "set_stats",
                   "include_vars", "include_tasks", "import_tasks", "include_role", "import_role", "pause",
                   "validate_argument_spec", "gpuops.sharing.capacity_plan"}


class CallbackModule(CallbackBase):
    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = "aggregate"
    CALLBACK_NAME = "gpuops_task_count"
    CALLBACK_NEEDS_ENABLED = True

    def __init__(self):
        super().__init__()
        self.counts: dict[str, dict[str, int]] = {}

    def _count(self, result) -> None:
        task = result._task
        action = task.action.split(".")[-1] if task.action.startswith("ansible.builtin.") else task.action
        if action in CONTROLLER_ONLY or task.delegate_to:
            return
        role = task._role.get_name() if task._role else "(play)"
        per_host = self.counts.setdefault(result._host.get_name(), {})
        per_host[role] = per_host.get(role, 0) + 1

    def v2_runner_on_ok(self, result):
        self._count(result)

    def v2_runner_on_failed(self, result, ignore_errors=False):
        self._count(result)

    def v2_playbook_on_stats(self, stats):
        path = os.environ.get("GPUOPS_TASK_COUNT_FILE")
        if path:
            with open(path, "w") as fh:
                json.dump(self.counts, fh, indent=1, sort_keys=True)
