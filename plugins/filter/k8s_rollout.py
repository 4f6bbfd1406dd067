# Copyright (c) gpuops.sharing contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Filters of playbooks/cluster_bootstrap.yml; the logic is in plugins/module_utils/_k8s_rollout.py.

Each filter is documented in the file of its name next to this one (``k8s_drain_decision.yml``, ...).
"""

from __future__ import annotations

from ansible.errors import AnsibleFilterError

from ansible_collections.gpuops.sharing.plugins.module_utils import _k8s_rollout as rollout


def _refusing(name, func):
    def wrapper(*args, **kwargs):
        try:
            return func(*args, **kwargs)
        except rollout.RolloutError as exc:
            raise AnsibleFilterError(str(exc)) from exc
        except (KeyError, TypeError, AttributeError) as exc:
            raise AnsibleFilterError(f"{name}: unexpected input: {exc!r}") from exc
    wrapper.__name__ = name
    wrapper.__doc__ = func.__doc__
    return wrapper


class FilterModule:
    """The roll-out's decisions and the objects it sends to the API."""

    def filters(self):
        return {
            "k8s_device_plugin_specs": _refusing("k8s_device_plugin_specs", rollout.device_plugin_specs),
            "k8s_device_plugin_configmap": _refusing("k8s_device_plugin_configmap", rollout.device_plugin_configmap),
            "k8s_node_labels": _refusing("k8s_node_labels", rollout.node_labels),
            "k8s_mig_disruption": _refusing("k8s_mig_disruption", rollout.mig_disruption),
            "k8s_drain_decision": _refusing("k8s_drain_decision", rollout.drain_decision),
            "k8s_gpu_pods": _refusing("k8s_gpu_pods", rollout.gpu_pods),
            "k8s_missing_allocatable": _refusing("k8s_missing_allocatable", rollout.missing_allocatable),
        }
