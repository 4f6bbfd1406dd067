# Copyright (c) gpuops.sharing contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Action plugin of gpuops.sharing.capacity_plan: the whole planner runs on the controller.

The arguments are validated with the module's own argument spec (so the documented options and the
checked ones cannot drift apart), then ``_capacity.run`` plans.  No connection, no managed host.
"""

from __future__ import annotations

from ansible.module_utils.common.arg_spec import ArgumentSpecValidator
from ansible.plugins.action import ActionBase

from ansible_collections.gpuops.sharing.plugins.module_utils import _capacity
from ansible_collections.gpuops.sharing.plugins.modules.capacity_plan import ARGUMENT_SPEC


class ActionModule(ActionBase):
    TRANSFERS_FILES = False
    _requires_connection = False

    def run(self, tmp=None, task_vars=None):
        result = super().run(tmp, task_vars)
        del tmp
        validated = ArgumentSpecValidator(ARGUMENT_SPEC).validate(self._task.args)
        if validated.error_messages:
            result.update(_capacity.EMPTY, failed=True, msg="; ".join(validated.error_messages))
            return result
        result.update(_capacity.run(validated.validated_parameters))
        return result
