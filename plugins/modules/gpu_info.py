#!/usr/bin/python
# Copyright (c) gpuops.sharing contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
module: gpu_info
short_description: Report what every NVIDIA GPU on a host is doing, and what is misconfigured
version_added: 0.1.0
description:
  - Reads every NVIDIA GPU through NVML (nvidia-ml-py) and returns its identity, memory, compute and persistence
    mode, MIG mode (current and pending), GPU instances with their compute instances and MIG device UUIDs, the MIG
    profiles the driver offers with their remaining capacity and placements, and the processes using each GPU.
  - Also returns RV(problems), misconfigurations found in those facts, each with a hint saying what to do,
    for example a MIG mode change still waiting for a GPU reset, a GPU in MIG mode without instances, or a
    GPU instance without a compute instance.
  - On a host without the NVIDIA driver it returns an empty RV(gpus) list and a problem saying why, instead of
    failing, unless O(require_gpu=true).
  - Changes nothing on the host.
extends_documentation_fragment:
  - gpuops.sharing._attributes
  - gpuops.sharing._attributes.INFO_MODULE
  - gpuops.sharing._attributes.NVML
options:
  require_gpu:
    description:
      - Fail when the NVIDIA driver or NVML cannot be used, or when the host has no GPU.
      - When V(false), such a host returns RV(gpus=[]) and the reason in RV(problems).
    type: bool
    default: false
  include_profiles:
    description:
      - Include the MIG GPU instance profiles of each MIG-capable GPU (RV(gpus[].gpu_instance_profiles)).
      - Leave it on to see which layouts fit; turn it off to make the result smaller on large fleets.
    type: bool
    default: true
seealso:
  - name: NVIDIA Multi-Instance GPU User Guide
    description: MIG concepts, profiles and placements.
    link: https://docs.nvidia.com/datacenter/tesla/mig-user-guide/
  - name: NVML API Reference
    description: The library this module reads.
    link: https://docs.nvidia.com/deploy/nvml-api/
author:
  - gpuops.sharing maintainers (@gpuops)
"""

EXAMPLES = r"""
- name: Gather GPU facts
  gpuops.sharing.gpu_info:
  register: gpu

- name: Show each GPU's MIG layout
  ansible.builtin.debug:
    msg: >-
      GPU {{ item.index }} {{ item.name }}: MIG {{ 'on' if item.mig_enabled else 'off' }},
      {{ item.gpu_instances | map(attribute='profile') | join(', ') }}
  loop: "{{ gpu.gpus }}"
  loop_control:
    label: "{{ item.uuid }}"

- name: Fail the play on hosts whose GPUs are misconfigured
  ansible.builtin.assert:
    that: gpu.problems | selectattr('severity', 'ne', 'info') | list | length == 0
    fail_msg: "{{ gpu.problems | map(attribute='message') | join('; ') }}"

- name: Require a working driver on GPU nodes
  gpuops.sharing.gpu_info:
    require_gpu: true
    include_profiles: false
"""

RETURN = r"""
driver_version:
  description: NVIDIA driver version; V(null) when no driver could be used.
  returned: always
  type: str
  sample: "580.95.05"
cuda_driver_version:
  description: Highest CUDA version the driver supports; V(null) when unknown.
  returned: always
  type: str
  sample: "13.0"
gpus:
  description: One entry per GPU, in NVML index order. Empty when no driver could be used.
  returned: always
  type: list
  elements: dict
  contains:
    index:
      description: NVML index of the GPU.
      type: int
      sample: 0
    uuid:
      description: GPU UUID.
      type: str
      sample: GPU-5e4d5e5a-21a8-9b2c-1fd3-8f1d2b3c4d5e
    name:
      description: Product name as the driver reports it.
      type: str
      sample: NVIDIA H100 80GB HBM3
    pci_bus_id:
      description: PCI bus id.
      type: str
      sample: "00000000:07:00.0"
    pci_device_id:
      description: PCI device id with vendor, as mig-parted's C(device-filter) uses it.
      type: str
      sample: "0x233010DE"
    pci_subsystem_id:
      description: PCI subsystem id with vendor.
      type: str
      sample: "0x16C110DE"
    memory_total_mib:
      description: Total framebuffer memory in MiB.
      type: int
    memory_used_mib:
      description: Used framebuffer memory in MiB.
      type: int
    architecture:
      description: GPU architecture (V(ampere), V(hopper), V(blackwell), ...).
      type: str
    cuda_compute_capability:
      description: CUDA compute capability, for example V(9.0).
      type: str
    compute_mode:
      description: V(default), V(exclusive_process) or V(prohibited).
      type: str
    persistence_mode:
      description: Whether persistence mode is on.
      type: bool
    mig_capable:
      description: Whether the GPU supports MIG.
      type: bool
    mig_enabled:
      description: Whether MIG mode is currently on.
      type: bool
    mig_pending:
      description: The MIG mode that applies after the next GPU reset or reboot; V(null) on GPUs without MIG.
      type: bool
    mig_slices:
      description: Compute slices a MIG-capable GPU has (7 on A100/H100, 4 on A30); V(null) without MIG.
      type: int
      sample: 7
    gpu_instances:
      description: GPU instances (empty unless MIG is on).
      type: list
      elements: dict
      contains:
        id:
          description: GPU instance id.
          type: int
        profile:
          description: Profile name as the driver reports it, for example V(3g.40gb).
          type: str
        profile_id:
          description: NVML profile id.
          type: int
        slices:
          description: Compute slices of the instance.
          type: int
        placement:
          description: Placement (C(start), C(size)) in the driver's slice units.
          type: dict
        compute_instances:
          description: Compute instances; each is one MIG device with C(id), C(profile), C(profile_id),
            C(placement) and C(mig_uuid).
          type: list
          elements: dict
    gpu_instance_profiles:
      description: MIG GPU instance profiles the driver offers, with C(id), C(name), C(slices), C(memory_mib),
        C(instance_count), C(remaining) (free capacity now, V(null) while MIG is off) and C(placements).
      type: list
      elements: dict
    processes:
      description: Compute processes on the GPU with C(pid), C(used_memory_mib), C(gpu_instance_id),
        C(compute_instance_id) and C(mig_uuid) (V(null) outside MIG).
      type: list
      elements: dict
    unread:
      description:
        - Parts of the GPU's facts the driver could not be read for (V(gpu_instances), V(processes)); each has
          a C(read_failed) problem. An unread part is missing, not empty.
      type: list
      elements: str
problems:
  description: Misconfigurations found, each with C(gpu) (index or V(null) for the host), C(code),
    C(severity) (V(error), V(warning) or V(info)), C(message) and C(hint).
  returned: always
  type: list
  elements: dict
  sample:
    - gpu: 0
      code: mig_pending_reset
      severity: warning
      message: "GPU 0: MIG mode change is pending (enable) and not yet in effect"
      hint: "stop the processes and services using GPU 0 and reset it (nvidia-smi -r -i 0), or reboot the host"
"""

from ansible.module_utils.basic import AnsibleModule, missing_required_lib

from ansible_collections.gpuops.sharing.plugins.module_utils import _facts
from ansible_collections.gpuops.sharing.plugins.module_utils._nvml import (
    HAS_PYNVML,
    PYNVML_IMPORT_ERROR,
    Nvml,
    NvmlError,
)


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "require_gpu": {"type": "bool", "default": False},
            "include_profiles": {"type": "bool", "default": True},
        },
        supports_check_mode=True,
    )
    result = {"changed": False, "driver_version": None, "cuda_driver_version": None, "gpus": [], "problems": []}
    if not HAS_PYNVML:
        if module.params["require_gpu"]:
            module.fail_json(msg=missing_required_lib("nvidia-ml-py"), exception=PYNVML_IMPORT_ERROR, **result)
        result["problems"].append(_facts.problem(
            "no_nvml_binding", "error", "nvidia-ml-py (import pynvml) is not installed for " +
            "the Python interpreter Ansible uses on this host",
            "install nvidia-ml-py (pip install nvidia-ml-py) or set ansible_python_interpreter"))
        module.exit_json(**result)
    try:
        with Nvml() as nv:
            result["driver_version"] = nv.driver_version()
            result["cuda_driver_version"] = nv.cuda_driver_version()
            result["gpus"], unreadable = _facts.gather(nv, module.params["include_profiles"])
    except NvmlError as exc:
        if module.params["require_gpu"]:
            module.fail_json(msg=exc.message, **result)
        result["problems"].append(_facts.no_driver_problem(exc))
        module.exit_json(**result)
    result["problems"] = unreadable + _facts.find_problems(result["gpus"])
    if module.params["require_gpu"] and not result["gpus"]:
        module.fail_json(msg="no NVIDIA GPU is visible on this host" + (
            ": " + "; ".join(p["message"] for p in unreadable) if unreadable else ""), **result)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
