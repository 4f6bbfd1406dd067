#!/usr/bin/python
# Copyright (c) gpuops.sharing contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
module: cdi_spec
short_description: Keep the CDI spec of the NVIDIA devices current, and restart what hands them to containers
version_added: 0.1.0
description:
  - Runs C(nvidia-ctk cdi generate) (NVIDIA Container Toolkit) for the host's GPUs and MIG devices as they are now
    and compares the spec it prints with O(output). Only when they differ (a new file, or the devices changed, as
    after every MIG change) is the file written, through a temporary file and an atomic rename, never through a
    symbolic link.
  - The device names are the toolkit's, C(nvidia.com/gpu=0) (GPU index), C(nvidia.com/gpu=0:1) (MIG device 1 of
    GPU 0), the UUIDs, and C(nvidia.com/gpu=all); O(device_name_strategy) chooses among them.
  - With the Container Toolkit's C(nvidia-cdi-refresh.service) installed (toolkit 1.18 and later), which writes
    C(/var/run/cdi/nvidia.yaml), O(method=auto) restarts that unit instead of writing the file itself.
  - When the spec changed, the units in O(restart_units) are restarted if they run (C(systemctl try-restart)), as
    mig-parted's hooks restart the device plugin and GPU feature discovery after a MIG change. Nothing is restarted
    when nothing changed.
extends_documentation_fragment:
  - gpuops.sharing._attributes
attributes:
  check_mode:
    support: full
  diff_mode:
    support: full
    details:
      - The diff is the spec file before and after.
  idempotent:
    support: full
options:
  output:
    description:
      - The spec file, in a directory containerd reads (C(cdi_spec_dirs), by default C(/etc/cdi) and
        C(/var/run/cdi)). A name ending in C(.json) gets the JSON format, else YAML.
    type: path
    default: /etc/cdi/nvidia.yaml
  state:
    description: V(present) keeps the spec current; V(absent) removes O(output).
    type: str
    choices: [present, absent]
    default: present
  method:
    description:
      - V(nvidia-ctk) writes O(output) from C(nvidia-ctk cdi generate).
      - V(refresh-service) restarts O(refresh_service), which writes C(/var/run/cdi/nvidia.yaml).
      - V(auto) uses the service when it is installed and O(output) is the file it writes, else V(nvidia-ctk).
    type: str
    choices: [auto, nvidia-ctk, refresh-service]
    default: auto
  refresh_service:
    description: NVIDIA's unit that regenerates the spec.
    type: str
    default: nvidia-cdi-refresh.service
  device_name_strategy:
    description:
      - nvidia-ctk's C(--device-name-strategy), one or more of V(index), V(uuid), V(type-index); unset is the
        toolkit's default (V(index) and V(uuid)).
    type: list
    elements: str
  restart_units:
    description:
      - systemd services restarted (if they run) after the spec changed, for a host-installed device plugin and
        GPU feature discovery, for example V(nvidia-device-plugin.service).
    type: list
    elements: str
    default: []
  nvidia_ctk:
    description: The nvidia-ctk binary; by default the one on E(PATH).
    type: path
seealso:
  - name: NVIDIA Container Toolkit, Support for Container Device Interface
    description: C(nvidia-ctk cdi generate), C(nvidia-ctk cdi list) and C(nvidia-cdi-refresh).
    link: https://docs.nvidia.com/datacenter/cloud-native/container-toolkit/latest/cdi-support.html
  - module: gpuops.sharing.containerd_runtime
  - module: gpuops.sharing.mig
author:
  - gpuops.sharing maintainers (@gpuops)
"""

EXAMPLES = r"""
- name: Keep /etc/cdi/nvidia.yaml current, restarting the host-installed device plugin when it changed
  gpuops.sharing.cdi_spec:
    restart_units: [nvidia-device-plugin.service, gpu-feature-discovery.service]
  register: cdi

- name: Show the CDI devices containers can request
  ansible.builtin.debug:
    msg: "{{ cdi.devices }}"

- name: Name the devices by UUID only, in JSON
  gpuops.sharing.cdi_spec:
    output: /etc/cdi/nvidia-uuid.json
    device_name_strategy: [uuid]

- name: Remove that spec again
  gpuops.sharing.cdi_spec:
    output: /etc/cdi/nvidia-uuid.json
    state: absent
"""

RETURN = r"""
output:
  description: The spec file.
  returned: always
  type: str
devices:
  description: The devices of the spec, as C(nvidia-ctk cdi list) prints them (C(kind=name), sorted).
  returned: always
  type: list
  elements: str
  sample: ["nvidia.com/gpu=0", "nvidia.com/gpu=0:0", "nvidia.com/gpu=GPU-4f1d3d86-8a2c-1b4e-9d5e-3a0c7b2e6f11",
           "nvidia.com/gpu=all"]
method:
  description: How the spec is written, V(nvidia-ctk) or V(refresh-service); V(null) with O(state=absent).
  returned: always
  type: str
restarted:
  description: The O(restart_units) restarted (or, in check mode, that would be).
  returned: always
  type: list
  elements: str
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

import os

from ansible.module_utils.basic import AnsibleModule, missing_required_lib

from ansible_collections.gpuops.sharing.plugins.module_utils import _cdi, _cdi_host, _containerd_host, _host
from ansible_collections.gpuops.sharing.plugins.module_utils._runner import run_module


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "output": {"type": "path", "default": _cdi.DEFAULT_OUTPUT},
            "state": {"type": "str", "choices": ["present", "absent"], "default": "present"},
            "method": {"type": "str", "choices": ["auto", "nvidia-ctk", "refresh-service"], "default": "auto"},
            "refresh_service": {"type": "str", "default": _cdi.REFRESH_SERVICE},
            "device_name_strategy": {"type": "list", "elements": "str"},
            "restart_units": {"type": "list", "elements": "str", "default": []},
            "nvidia_ctk": {"type": "path"},
        },
        supports_check_mode=True,
    )
    p = module.params
    empty = {"changed": False, "output": p["output"], "devices": [], "method": None, "restarted": [],
             "operations": [], "done": []}
    if not _cdi_host.HAS_YAML:
        module.fail_json(msg=missing_required_lib("PyYAML"), **empty)
    try:
        _cdi.check_request(p["output"], p["device_name_strategy"], p["restart_units"], p["refresh_service"])
    except _cdi.CdiError as exc:
        module.fail_json(msg=exc.message, **empty)
    host = _cdi_host.CdiHost(dict(p), module.atomic_move, _host.module_runner(module, timeout=120),
                             p["nvidia_ctk"] or module.get_bin_path("nvidia-ctk"), module.get_bin_path("systemctl"))
    try:
        lock = _containerd_host.lock_folder(p["output"])      # one run at a time on this file
    except OSError as exc:
        module.fail_json(msg=getattr(exc, "message", None) or "cannot lock the folder of %s: %s" % (p["output"], exc),
                         **empty)
    try:
        run_module(module, host, empty)
    finally:
        if lock is not None:
            os.close(lock)


if __name__ == "__main__":
    main()
