#!/usr/bin/python
# Copyright (c) gpuops.sharing contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
module: capacity_plan
short_description: Plan GPU sharing (MIG, MPS, time-slicing) from workload needs
version_added: 0.2.0
description:
  - Turns a fleet (O(gpus)) and workload requirements (O(workloads)) into a sharing plan per GPU
    (MIG mode and instances, MPS clients and their limits, time-slicing), ready as the variables of the
    P(gpuops.sharing.mig#role) and P(gpuops.sharing.mps#role) roles (RV(host_vars)).
  - Runs on the controller (an action plugin); it needs no managed host and changes nothing.
  - "The mechanism per replica follows NVIDIA's documentation: V(hard) isolation gets a MIG instance of its own
    (its own SMs, memory slices, L2 and memory bandwidth) or a whole GPU of its own, which is the only choice on
    models without MIG; V(soft) may share a whole GPU or a MIG instance as an MPS client, with a pinned device memory
    limit and an active thread percentage per client that the plan sets, at most 48 clients per device (NVIDIA's MPS
    documentation, Client-Server Connection Limits); V(none) may time-slice; a latency-sensitive workload never
    time-slices with others."
  - MIG profiles, instance counts and placements are NVIDIA's per-model tables (the collection's catalogue), and every
    layout is checked with the placement code of the P(gpuops.sharing.mig#module) module.
  - "The plan uses the fewest GPUs, then the least memory on the GPUs used. With at most 12 replicas the search is
    exact (RV(optimal)); above that a best-fit heuristic with an improvement pass runs, and RV(gap) to the proven
    RV(lower_bound) says how far from optimal it can be."
  - See U(https://docs.nvidia.com/datacenter/tesla/mig-user-guide/) and U(https://docs.nvidia.com/deploy/mps/).
author:
  - gpuops.sharing maintainers (@gpuops)
extends_documentation_fragment:
  - gpuops.sharing._attributes
  - gpuops.sharing._attributes.INFO_MODULE
attributes:
  action:
    support: full
    description: Runs on the controller as an action plugin.
options:
  gpus:
    description:
      - The fleet, as GPU models and counts, per inventory host or without hosts.
      - At most 5000 GPUs in all.
    type: list
    elements: dict
    required: true
    suboptions:
      host:
        description:
          - Inventory host of these GPUs; their indexes on the host count from 0 in the order given.
          - Without hosts the plan has no RV(host_vars).
        type: str
      model:
        description:
          - A catalogue model (V(A100-SXM4-80GB), V(H100-SXM5-80GB), V(A30-24GB), V(T4), ...) or the product name the
            driver reports (V(NVIDIA H100 80GB HBM3)).
        type: str
        required: true
      count:
        description: How many GPUs of this model.
        type: int
        default: 1
  workloads:
    description:
      - What runs on the fleet. At most 1000 workloads and 5000 replicas in all.
    type: list
    elements: dict
    required: true
    suboptions:
      name:
        description: Unique name of the workload.
        type: str
        required: true
      memory:
        description:
          - GPU memory of one replica, for example V(18GiB), V(4.5GiB) or V(512MiB) (GB and MB are read as GiB and MiB).
        type: str
        required: true
      compute:
        description:
          - Share of one full GPU's SMs a replica needs, more than 0 and at most 1; not planned when unset.
          - A MIG instance offers its SMs' share of the whole GPU (an A100's 3g.40gb has 42 of 108 SMs, 0.39).
        type: float
      isolation:
        description:
          - V(hard) a MIG instance or a whole GPU of its own; V(soft) may share through MPS; V(none) may time-slice.
        type: str
        choices: [hard, soft, none]
        default: soft
      replicas:
        description: How many copies of the workload run.
        type: int
        default: 1
      latency_sensitive:
        description: Never time-slice this workload with others.
        type: bool
        default: false
notes:
  - MPS limits are per client; the plan returns them per replica (RV(assignments[].client_environment)) and, where all
    clients of a host get the same, as the host's daemon defaults in RV(host_vars).
  - The CUDA context of each MPS client also takes some device memory, which NVIDIA does not state; leave headroom
    in O(workloads[].memory).
seealso:
  - module: gpuops.sharing.mig
  - module: gpuops.sharing.mps
  - name: Capacity planning guide
    description: The decision guide, worked examples and how to read a plan.
    link: https://github.com/gpuops/sharing/blob/main/docs/capacity-planning.md
"""

EXAMPLES = r"""
- name: Plan ten small inference models and one isolated model on two hosts
  gpuops.sharing.capacity_plan:
    gpus:
      - {host: gpu-node-1, model: A100-SXM4-80GB, count: 2}
      - {host: gpu-node-2, model: T4, count: 4}
    workloads:
      - {name: embeddings, memory: 6GiB, compute: 0.1, isolation: soft, replicas: 10}
      - {name: fraud-model, memory: 18GiB, isolation: hard, latency_sensitive: true}
  register: plan

- name: Show why each workload got what it got
  ansible.builtin.debug:
    msg: "{{ plan.explanation }}"

- name: Stop when the fleet is too small
  ansible.builtin.assert:
    that: plan.feasible
    fail_msg: "{{ plan.unplaced | map(attribute='reason') | list }}"

- name: Plan a pool without hosts (how many GPUs would this need?)
  gpuops.sharing.capacity_plan:
    gpus:
      - {model: H100-SXM5-80GB, count: 8}
    workloads:
      - {name: team-a-training, memory: 70GiB, compute: 0.9, isolation: hard, replicas: 2}
      - {name: dev, memory: 8GiB, isolation: none, replicas: 12}
  register: pool

- name: Report the size of the plan
  ansible.builtin.debug:
    msg: "{{ pool.gpus_used }} GPUs (at least {{ pool.lower_bound }} are needed)"
"""

RETURN = r"""
feasible:
  description: Every replica is placed.
  returned: always
  type: bool
optimal:
  description:
    - The plan is proven to use the fewest GPUs possible (the exact search ran to its end, or RV(gpus_used) equals
      RV(lower_bound)).
    - When RV(search) is V(exact), it also has the least memory of all plans with that many GPUs.
  returned: always
  type: bool
search:
  description:
    - V(exact) (at most 12 replicas, searched to the end), V(exact, stopped at its budget) or V(heuristic); null
      when the input was refused.
  returned: always
  type: str
gpus_used:
  description: GPUs the plan uses.
  returned: always
  type: int
lower_bound:
  description:
    - A proven lower bound on the GPUs any plan of all replicas needs (their memory and compute summed against the
      fleet's largest GPUs, and the replicas that need a whole GPU of their own).
  returned: always
  type: int
gap:
  description: RV(gpus_used) minus RV(lower_bound); null when the plan is not feasible.
  returned: always
  type: int
stranded_memory_mib:
  description: Memory of the GPUs used that no replica uses (MIB).
  returned: always
  type: int
gpus:
  description: The GPUs used, in fleet order.
  returned: always
  type: list
  elements: dict
  contains:
    host:
      description: Inventory host, or null.
      type: str
    index:
      description: Index of the GPU on its host.
      type: int
    model:
      description: Catalogue model.
      type: str
    mig_enabled:
      description: The GPU is in MIG mode.
      type: bool
    mig_devices:
      description: MIG devices as mig-parted's C(mig-devices) (profile name to count).
      type: dict
    mig_config:
      description: This GPU's entry for the P(gpuops.sharing.mig#role) role's C(mig_config).
      type: dict
    mps:
      description:
        - C(enabled), C(targets) (V(gpu<index>) for a whole GPU, the MIG devices otherwise), C(clients), and
          C(active_thread_percentage) and C(device_pinned_mem_limit) when every client of the GPU has the same.
      type: dict
    devices:
      description: Each device (whole GPU or MIG instance), its sharing (exclusive, mps, timeslice) and workloads.
      type: list
      elements: dict
assignments:
  description: One entry per replica.
  returned: always
  type: list
  elements: dict
  contains:
    workload:
      description: Workload name.
      type: str
    replica:
      description: Replica number, from 0.
      type: int
    host:
      description: Inventory host, or null.
      type: str
    gpu:
      description: GPU index on the host; null when unplaced.
      type: int
    profile:
      description: MIG profile of the replica's instance; null on a whole GPU.
      type: str
    share:
      description: V(alone), V(MPS client) or V(time-sliced); null when unplaced.
      type: str
    mps:
      description: C(active_thread_percentage) and C(device_pinned_mem_limit) of an MPS client.
      type: dict
      returned: for MPS clients
    client_environment:
      description:
        - The client's C(CUDA_MPS_ACTIVE_THREAD_PERCENTAGE) and C(CUDA_MPS_PINNED_DEVICE_MEM_LIMIT) (NVIDIA's MPS
          documentation, Environment Variables).
      type: dict
      returned: for MPS clients
unplaced:
  description: Replicas the fleet has no room for, with the reason.
  returned: always
  type: list
  elements: dict
explanation:
  description: Per workload, why this mechanism and this size.
  returned: always
  type: dict
host_vars:
  description:
    - Per inventory host, the variables of the P(gpuops.sharing.mig#role) and P(gpuops.sharing.mps#role) roles
      (C(mig_config); and on hosts with MPS clients C(mps_targets), C(mps_default_active_thread_percentage) and
      C(mps_default_device_pinned_mem_limit), the two limits null unless every client of the host has the same).
  returned: always
  type: dict
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.gpuops.sharing.plugins.module_utils import _capacity

ARGUMENT_SPEC = {
    "gpus": {"type": "list", "elements": "dict", "required": True, "options": {
        "host": {"type": "str"},
        "model": {"type": "str", "required": True},
        "count": {"type": "int", "default": 1},
    }},
    "workloads": {"type": "list", "elements": "dict", "required": True, "options": {
        "name": {"type": "str", "required": True},
        "memory": {"type": "str", "required": True},
        "compute": {"type": "float"},
        "isolation": {"type": "str", "choices": ["hard", "soft", "none"], "default": "soft"},
        "replicas": {"type": "int", "default": 1},
        "latency_sensitive": {"type": "bool", "default": False},
    }},
}


def main() -> None:
    """Only reached when the action plugin is bypassed: the same pure planner, on the managed host."""
    module = AnsibleModule(argument_spec=ARGUMENT_SPEC, supports_check_mode=True)
    result = _capacity.run(module.params)
    if result.get("failed"):
        module.fail_json(**result)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
