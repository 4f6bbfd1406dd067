#!/usr/bin/python
# Copyright (c) gpuops.sharing contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
module: device_plugin_config
short_description: Validate and write NVIDIA k8s-device-plugin sharing configs (time-slicing, MPS, MIG strategy)
version_added: 0.2.0
description:
  - Validates a config for NVIDIA's Kubernetes device plugin (C(api/config/v1), the file behind the plugin's
    ConfigMap and C(--config-file)) with the plugin's own rules and error texts, read from its source at
    NVIDIA/k8s-device-plugin commit C(1b826acc6af3079d8923bac395c3124b8861a9a6) (v0.20.0). A config the plugin
    would refuse (and so crash-loop its daemonset with) fails here, before anything is written, with the
    plugin's message, the value and what would be valid.
  - "Adds what the plugin does not do: keys it ignores silently are warnings; C(sharing.timeSlicing) and
    C(sharing.mps) together are refused (the plugin uses MPS and drops time-slicing without a word); MPS replicas
    are checked against the GPUs of this host through NVML: the client limit by compute capability, MPS on MIG
    devices, and each client's share of the GPU's memory against O(min_replica_memory)."
  - On a host without NVML (a controller, a node without driver) the node checks are skipped with a warning and
    the resource names follow from the config alone.
  - Returns the normalised config and the extended resources the node will advertise (C(nvidia.com/gpu),
    C(nvidia.com/gpu.shared) with C(renameByDefault), C(nvidia.com/mig-1g.10gb) with the C(mixed) strategy, taken
    from the MIG devices the node has).
  - With O(dest), writes the normalised config there as YAML (through a temporary file and an atomic rename,
    never through a symbolic link, keeping the file's mode).
extends_documentation_fragment:
  - gpuops.sharing._attributes
attributes:
  check_mode:
    support: full
  diff_mode:
    support: full
    details:
      - The diff is the file at O(dest) before and after.
  idempotent:
    support: full
options:
  config:
    description:
      - The device plugin's config as a mapping, in the plugin's own format (C(version), C(flags), C(sharing),
        ...), for example the content of one key of the plugin's ConfigMap read with P(ansible.builtin.from_yaml#filter).
      - Mutually exclusive with O(mig_strategy), O(time_slicing) and O(mps).
    type: dict
  mig_strategy:
    description:
      - The plugin's C(flags.migStrategy). V(none) advertises whole GPUs only, V(single) the MIG devices as
        C(nvidia.com/gpu) (every GPU of the node in MIG mode with the same devices), V(mixed) each MIG profile as
        C(nvidia.com/mig-<profile>).
      - Without O(config), defaults to V(none).
    type: str
    choices: [none, single, mixed]
  time_slicing:
    description:
      - C(sharing.timeSlicing) in the module's terms. Mutually exclusive with O(mps).
    type: dict
    suboptions: &sharing
      replicas:
        description:
          - Replicas of each device of every resource in O(time_slicing.resources) that sets none; with no
            resources, of C(nvidia.com/gpu). At least 2.
        type: int
      rename_by_default:
        description:
          - Advertise each shared resource as C(<name>.shared) (C(renameByDefault)).
        type: bool
      fail_requests_greater_than_one:
        description:
          - Fail pods that request more than one replica (C(failRequestsGreaterThanOne)). The plugin's default is
            V(false) for time-slicing and V(true) for MPS.
        type: bool
      resources:
        description:
          - The resources to share. Each has C(name) (C(gpu) means C(nvidia.com/gpu)), C(replicas) and optionally
            C(devices) (which the plugin currently ignores, with a warning).
        type: list
        elements: dict
  mps:
    description:
      - C(sharing.mps) in the module's terms, with the same suboptions as O(time_slicing). The plugin then starts
        its own MPS control daemon on the node; host MPS daemons (P(gpuops.sharing.mps#role)) must not run there.
    type: dict
    suboptions: *sharing
  min_replica_memory:
    description:
      - With MPS, the smallest memory each client may be limited to. The plugin limits every client to the GPU's
        memory divided by the replicas; a config giving less on any GPU of this host is refused. V(0) turns the
        check off. This is this collection's safeguard, not a rule of the plugin.
      - A size in binary units, V(1G), V(512M).
    type: str
    default: 1G
  dest:
    description:
      - Absolute path of a file to write the normalised config to, for a device plugin started with
        C(--config-file) on the host. Without it, nothing is written and the module only validates.
      - A symbolic link at O(dest) is refused, not followed.
    type: path
  create_parent:
    description:
      - Create the folder of O(dest) (mode C(0755)) when it does not exist; otherwise a missing folder is an error.
    type: bool
    default: false
seealso:
  - name: NVIDIA k8s-device-plugin README, shared access to GPUs
    description: The config format, time-slicing and MPS.
    link: https://github.com/NVIDIA/k8s-device-plugin#shared-access-to-gpus
  - module: gpuops.sharing.mig
  - module: gpuops.sharing.mps
author:
  - gpuops.sharing maintainers (@gpuops)
"""

EXAMPLES = r"""
- name: Four time-sliced replicas of every GPU, advertised as nvidia.com/gpu.shared
  gpuops.sharing.device_plugin_config:
    time_slicing:
      replicas: 4
      rename_by_default: true
  register: dp

- name: Show what the node will advertise
  ansible.builtin.debug:
    msg: "{{ dp.resources | map(attribute='name') | list }}"

- name: Validate a config in the plugin's own format and write it for a host-installed plugin
  gpuops.sharing.device_plugin_config:
    config:
      version: v1
      flags:
        migStrategy: none
      sharing:
        mps:
          resources:
            - name: nvidia.com/gpu
              replicas: 4
    dest: /etc/nvidia-device-plugin/config.yaml
    create_parent: true

- name: MIG devices of each profile as their own resource, each time-sliced in two
  gpuops.sharing.device_plugin_config:
    mig_strategy: mixed
    time_slicing:
      resources:
        - name: nvidia.com/mig-1g.10gb
          replicas: 2
"""

RETURN = r"""
config:
  description: The config as the device plugin reads it, normalised (canonical keys, unknown keys dropped, full
    resource names, the defaults the plugin applies written out).
  returned: success
  type: dict
  sample: {"version": "v1", "flags": {"migStrategy": "none"},
           "sharing": {"timeSlicing": {"renameByDefault": true, "failRequestsGreaterThanOne": false,
                                       "resources": [{"name": "nvidia.com/gpu", "replicas": 4}]}}}
content:
  description: The YAML text written to O(dest) (or that would be).
  returned: always
  type: str
strategy:
  description: The plugin's sharing strategy for this config, V(none), V(time-slicing) or V(mps).
  returned: always
  type: str
resources:
  description:
    - The extended resources the node will advertise, sorted by name.
    - C(count) is the number of allocatable units on this node (devices times replicas), V(null) without NVML.
    - C(shares) is the resource whose devices are shared, V(null) for an unshared one.
  returned: always
  type: list
  elements: dict
  sample: [{"name": "nvidia.com/gpu.shared", "count": 8, "replicas": 4, "shares": "nvidia.com/gpu"}]
resource_names:
  description: The names in RV(resources), what pods request in C(resources.limits).
  returned: always
  type: list
  elements: str
  sample: ["nvidia.com/gpu.shared"]
gpus_checked:
  description: Whether the config was checked against this host's GPUs (NVML was available).
  returned: always
  type: bool
dest:
  description: O(dest), or V(null).
  returned: always
  type: str
operations:
  description: What was (or in check mode would be) done.
  returned: always
  type: list
  elements: str
done:
  description: The operations carried out (empty in check mode); after a failure, those completed before it.
  returned: always
  type: list
  elements: str
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.gpuops.sharing.plugins.module_utils import _device_plugin, _device_plugin_host, _mps
from ansible_collections.gpuops.sharing.plugins.module_utils._runner import run_module

EMPTY = {"changed": False, "config": {}, "content": "", "strategy": "none", "resources": [], "resource_names": [],
         "gpus_checked": False, "dest": None, "operations": [], "done": []}

_SHARING_OPTIONS = {
    "replicas": {"type": "int"},
    "rename_by_default": {"type": "bool"},
    "fail_requests_greater_than_one": {"type": "bool"},
    "resources": {"type": "list", "elements": "dict"},
}


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "config": {"type": "dict"},
            "mig_strategy": {"type": "str", "choices": list(_device_plugin.MIG_STRATEGIES)},
            "time_slicing": {"type": "dict", "options": _SHARING_OPTIONS},
            "mps": {"type": "dict", "options": _SHARING_OPTIONS},
            "min_replica_memory": {"type": "str", "default": "1G"},
            "dest": {"type": "path"},
            "create_parent": {"type": "bool", "default": False},
        },
        mutually_exclusive=[("config", "mig_strategy"), ("config", "time_slicing"), ("config", "mps"),
                            ("time_slicing", "mps")],
        supports_check_mode=True,
    )
    p = module.params
    empty = {**EMPTY, "dest": p["dest"]}
    try:
        minimum = 0 if str(p["min_replica_memory"]).strip() == "0" else \
            _mps.parse_size(p["min_replica_memory"], "min_replica_memory")
    except _mps.MpsError as exc:
        module.fail_json(msg=str(exc), **empty)
    given = p["config"] if p["config"] is not None else \
        _device_plugin.from_shortcuts(p["mig_strategy"], p["time_slicing"], p["mps"])
    host = _device_plugin_host.DevicePluginHost(given, minimum, p["dest"], p["create_parent"], module.atomic_move)
    run_module(module, host, empty)


if __name__ == "__main__":
    main()
