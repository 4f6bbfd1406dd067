# Copyright (c) gpuops.sharing contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Decisions of playbooks/cluster_bootstrap.yml. Private to this collection: not a public API.

Pure functions, no I/O, no ansible imports: the playbook's filter plugins (``plugins/filter/``) are thin
wrappers, and the Kubernetes API is reached only by the playbook's ``kubernetes.core`` tasks.

* which device plugin configs the inventory declares, one per name (the ConfigMap keys), refusing a name that
  two hosts define differently;
* the objects the playbook sends: the plugin's ConfigMap and the node label patch;
* whether a node's MIG change is disruptive (from the ``gpuops.sharing.mig`` module's plan, run in check
  mode), which of its pods use GPUs, and so whether to drain it and uncordon it afterwards;
* the health gate: which expected allocatable resources the node does not advertise yet.

Facts used, with their sources:

* NVIDIA's device plugin picks a named config from its ConfigMap by the node label
  ``nvidia.com/device-plugin.config`` (k8s-device-plugin README, "Multiple Config File Options"), and the GPU
  Operator's MIG manager applies the mig-parted config named by ``nvidia.com/mig.config`` and reports
  ``nvidia.com/mig.config.state`` (``pending``, ``rebooting``, ``success``, ``failed``; GPU Operator docs, "GPU
  Operator with MIG").
* A Node's ``status.allocatable`` maps resource names to quantities, extended resources being integers
  (Kubernetes API reference, NodeStatus; "Extended resources" must be whole numbers).
* A pod is running, or about to, unless ``status.phase`` is ``Succeeded`` or ``Failed`` (Pod lifecycle).
"""

from __future__ import annotations

import re

# a label value and a ConfigMap key: what the k8s_gpu_node role accepts as a config name
_LABEL_VALUE = re.compile(r"^[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$")
# the module options of gpuops.sharing.device_plugin_config that describe a config, from the role's variables
SPEC_VARS = {
    "config": "k8s_gpu_node_config",
    "mig_strategy": "k8s_gpu_node_mig_strategy",
    "time_slicing": "k8s_gpu_node_time_slicing",
    "mps": "k8s_gpu_node_mps",
}
# the k8s_gpu_node role's defaults (roles/k8s_gpu_node/defaults/main.yml), for hosts that do not set them
SPEC_DEFAULTS = {"config": None, "mig_strategy": "none", "time_slicing": None, "mps": None}
NAME_VAR, NAME_DEFAULT = "k8s_gpu_node_config_name", "default"
GPU_RESOURCE_PREFIX = "nvidia.com/"
DONE_PHASES = ("Succeeded", "Failed")
# the GPU Operator's MIG manager label values (see above)
MIG_STATE_LABEL = "nvidia.com/mig.config.state"


class RolloutError(ValueError):
    """A refusal, with a message that names the host and the value."""


def _spec(hostvars) -> tuple[str, dict]:
    name = hostvars.get(NAME_VAR, NAME_DEFAULT)
    spec = {}
    for option, var in SPEC_VARS.items():
        value = hostvars.get(var, SPEC_DEFAULTS[option])
        spec[option] = value
    if spec["config"] is not None:  # the plugin's own format: the shortcuts do not apply (the role asserts it)
        spec = {"config": spec["config"]}
    else:
        spec = {k: v for k, v in spec.items() if k != "config" and (v is not None or k == "mig_strategy")}
    return name, spec


def device_plugin_specs(hosts: list, hostvars) -> dict:
    """The device plugin configs the hosts declare: ``{name: {"spec": module options, "hosts": [...]}}``.

    Every host's config name must be a label value, and a name must mean the same config on every host that
    uses it: the ConfigMap has one key per name, which every node labelled with it reads.
    """
    found: dict = {}
    for host in hosts:
        name, spec = _spec(hostvars[host])
        if not isinstance(name, str) or not _LABEL_VALUE.match(name):
            raise RolloutError(f"{host}: {NAME_VAR} must be a Kubernetes label value (up to 63 letters, digits, "
                               f"'-', '_' or '.', beginning and ending with a letter or digit), got {name!r}")
        if name in found and found[name]["spec"] != spec:
            first = found[name]["hosts"][0]
            raise RolloutError(f"{host}: the device plugin config {name!r} differs from the one {first} gives it "
                               f"({spec} != {found[name]['spec']}); a name is one key of the plugin's ConfigMap, so "
                               f"give each distinct config its own {NAME_VAR}")
        found.setdefault(name, {"spec": spec, "hosts": []})["hosts"].append(host)
    return found


def device_plugin_configmap(contents: dict, name: str, namespace: str, labels: dict | None = None) -> dict:
    """The plugin's ConfigMap: one key per config name, its value the config file's text."""
    if not contents:
        raise RolloutError("no device plugin config to put in the ConfigMap: the GPU node group has no hosts")
    metadata = {"name": name, "namespace": namespace}
    if labels:
        metadata["labels"] = dict(labels)
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": metadata,
            "data": {key: contents[key] for key in sorted(contents)}}


def node_labels(node: str, config_name: str | None = None, mig_config_name: str | None = None) -> dict:
    """The patch that labels a node: ``nvidia.com/device-plugin.config`` (the device plugin's config) and/or
    ``nvidia.com/mig.config`` (the mig-parted config the GPU Operator's MIG manager applies)."""
    labels = {}
    for label, value in (("nvidia.com/device-plugin.config", config_name), ("nvidia.com/mig.config", mig_config_name)):
        if value is None or value == "":
            continue
        if not _LABEL_VALUE.match(str(value)):
            raise RolloutError(f"{node}: {label}={value!r} is not a Kubernetes label value (up to 63 letters, digits, "
                               "'-', '_' or '.', beginning and ending with a letter or digit)")
        labels[label] = str(value)
    if not labels:
        raise RolloutError(f"{node}: no label to set: give a device plugin config name or a MIG config name")
    return {"apiVersion": "v1", "kind": "Node", "metadata": {"name": node, "labels": labels}}


def mig_disruption(preview: dict | None) -> dict:
    """Whether the MIG change the ``gpuops.sharing.mig`` module plans (its check-mode result) disrupts work.

    Disruptive: an instance is destroyed, MIG mode changes (the GPU is reset, or needs a reboot), or the
    module refused the plan (it refuses a change on GPUs that processes use: draining is what frees them;
    any other refusal then fails the real run on the drained node). Creating instances on free slices alone
    is not disruptive. No preview (the node has no MIG layout) is not disruptive.
    """
    if not preview or preview.get("skipped"):
        return {"disruptive": False, "reasons": []}
    if preview.get("failed"):
        return {"disruptive": True, "reasons": [f"the MIG plan was refused: {preview.get('msg', '')}".strip()]}
    reasons = []
    for gpu in preview.get("gpus") or []:
        label = f"GPU {gpu.get('index')}"
        ops = [op[len(label) + 2:] if op.startswith(f"{label}: ") else op for op in gpu.get("operations") or []]
        mode_ops = [op for op in ops if "MIG mode" in op or op.startswith("reset")]
        if gpu.get("destroyed"):
            reasons.append(f"{label}: {gpu['destroyed']} instance(s) destroyed")
        if mode_ops:
            reasons.append(f"{label}: {mode_ops[0]}")
        if gpu.get("reboot_required"):
            reasons.append(f"{label}: needs a reboot")
    if preview.get("reboot_required") and not reasons:
        reasons.append("the node needs a reboot")
    return {"disruptive": bool(reasons), "reasons": reasons}


def _requests_gpu(container: dict, prefix: str) -> bool:
    resources = container.get("resources") or {}
    names = set(resources.get("limits") or {}) | set(resources.get("requests") or {})
    return any(str(n).startswith(prefix) for n in names)


def gpu_pods(pods: list, prefix: str = GPU_RESOURCE_PREFIX) -> list:
    """``namespace/name`` of the pods that hold GPUs: not finished, with a container requesting a
    ``nvidia.com/`` resource (``nvidia.com/gpu``, ``nvidia.com/gpu.shared``, ``nvidia.com/mig-1g.10gb``, ...)."""
    found = []
    for pod in pods or []:
        if (pod.get("status") or {}).get("phase") in DONE_PHASES:
            continue
        spec = pod.get("spec") or {}
        containers = list(spec.get("containers") or []) + list(spec.get("initContainers") or [])
        if any(_requests_gpu(c, prefix) for c in containers):
            meta = pod.get("metadata") or {}
            found.append(f"{meta.get('namespace', '')}/{meta.get('name', '')}")
    return sorted(found)


def drain_decision(node: dict, disruption: dict, pods: list) -> dict:
    """Whether to cordon and drain the node before its change, and to uncordon it after the health gate.

    Drained only when the change is disruptive and the node runs GPU pods; uncordoned only when this run
    cordoned it (a node an administrator had cordoned before stays cordoned).
    """
    holders = gpu_pods(pods)
    drain = bool(disruption.get("disruptive")) and bool(holders)
    was_cordoned = bool((node.get("spec") or {}).get("unschedulable"))
    if drain:
        why = f"drain: {'; '.join(disruption['reasons'])}; GPU pods {', '.join(holders)}"
    elif disruption.get("disruptive"):
        why = f"no drain: the change is disruptive ({'; '.join(disruption['reasons'])}) but no pod uses a GPU"
    else:
        why = "no drain: the MIG change (if any) disrupts nothing"
    return {"drain": drain, "uncordon": drain and not was_cordoned, "gpu_pods": holders,
            "was_cordoned": was_cordoned, "reason": why}


def _quantity(value) -> int | None:
    """An extended resource's quantity (a whole number, as a string in the API); None if it is not one."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    text = str(value).strip()
    if text.isdigit():
        return int(text)
    # whole-number forms with a decimal suffix, as the API may write large counts (1k)
    match = re.fullmatch(r"(\d+)([kMGTPE])", text)
    if match:
        return int(match.group(1)) * 1000 ** ("kMGTPE".index(match.group(2)) + 1)
    return None


def missing_allocatable(node: dict, expected: list, mig_state_required: bool = False) -> list:
    """What keeps the node from passing its health gate; empty when it passes.

    ``expected`` is the ``resources`` list of ``gpuops.sharing.device_plugin_config`` (``name``, ``count``):
    each must be in ``status.allocatable`` with exactly that count (a ``null`` count, where the node had no
    NVML, needs at least one). The node must be Ready, and with ``mig_state_required`` (GPU Operator MIG
    manager) labelled ``nvidia.com/mig.config.state=success``.
    """
    if not node:
        return ["the node is not in the cluster"]
    status = node.get("status") or {}
    allocatable = status.get("allocatable") or {}
    problems = []
    ready = [c for c in status.get("conditions") or [] if c.get("type") == "Ready"]
    if not ready or ready[0].get("status") != "True":
        problems.append("the node is not Ready")
    if mig_state_required:
        state = ((node.get("metadata") or {}).get("labels") or {}).get(MIG_STATE_LABEL)
        if state != "success":
            problems.append(f"{MIG_STATE_LABEL} is {state or 'not set'}, not success")
    for resource in expected or []:
        name, count = resource["name"], resource.get("count")
        have = _quantity(allocatable[name]) if name in allocatable else None
        if name in allocatable and have is None:
            problems.append(f"{name}: {allocatable[name]!r} advertised, not a whole number")
        elif have is None:
            problems.append(f"{name}: not advertised" + (f" ({count} expected)" if count is not None else ""))
        elif count is None and have < 1:
            problems.append(f"{name}: 0 advertised, at least 1 expected")
        elif count is not None and have != count:
            problems.append(f"{name}: {have} advertised, {count} expected")
    return problems
