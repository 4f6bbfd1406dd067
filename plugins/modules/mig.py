#!/usr/bin/python
# Copyright (c) gpuops.sharing contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
module: mig
short_description: Declare the MIG layout of a host's NVIDIA GPUs and get it, destroying as little as possible
version_added: 0.1.0
description:
  - Enables or disables MIG mode and creates GPU instances and compute instances so that each selected GPU holds
    exactly the layout you declare, in NVIDIA mig-parted's configuration format.
  - Profile names, ids, slice counts and placements are read from the driver on the host, so any layout that is
    valid on the GPU model is realised. Where the driver lists no profiles while MIG is off, NVIDIA's published
    tables for the model stand in, and the driver's own list is read and compared right after the mode change,
    before anything is created.
  - Every GPU of the host is planned into operations (mode changes, resets, instances to destroy, instances to
    create at explicit placements, down to each compute instance), and every refusal is decided for all GPUs
    before the first write; check mode stops there, so its verdict is the real run's. Layouts whose creation
    order matters (the MIG User Guide's C(-cgi 19,19,14,9) on an A100) work, and each instance is created with
    one call. A failure after a write reports RV(done) and C(changed=true).
  - Existing GPU and compute instances that fit the new layout are kept, with their MIG device UUIDs; only what must
    go is destroyed, and new instances are placed around the kept ones. When kept instances leave the free slices
    too fragmented, the fewest instances are moved.
  - An impossible layout is rejected before anything changes, with the reason and valid layouts close to it.
  - Instances with running processes are never destroyed unless O(force=true).
  - MIG mode changes that need a GPU reset (Ampere GPUs such as A100 and A30) reset the GPU only when no process
    uses it (O(reset=auto)); otherwise the module fails naming the processes, or returns RV(reboot_required) with
    O(reset=never) or where the platform cannot reset the GPU (VM pass-through).
  - A layout does not survive a reboot (the driver keeps MIG mode, not instances); the P(gpuops.sharing.mig#role)
    role re-applies it at boot with this module's code.
extends_documentation_fragment:
  - gpuops.sharing._attributes
  - gpuops.sharing._attributes.NVML
requirements:
  - PyYAML (C(import yaml)) for the Python interpreter Ansible uses on the managed host, to read O(config_file).
    The P(gpuops.sharing.mig#role) role always writes its layout to a file, so its hosts need PyYAML for the module
    and for the boot unit (C(python3) with nvidia-ml-py and PyYAML).
attributes:
  check_mode:
    support: full
    details:
      - Makes no NVML call that changes anything and reports the operations it would perform.
  diff_mode:
    support: full
    details:
      - The before and after layout of every GPU whose layout changes, one line per GPU instance.
  idempotent:
    support: full
options:
  config:
    description:
      - The layout, as the list of entries of one mig-parted configuration (what sits under a name in
        C(mig-configs)).
      - Each entry has C(devices) (V(all), or a list of GPU indices or GPU UUIDs), an optional C(device-filter)
        (a PCI device id such as V(0x20B010DE), optionally with V(:subsystem), or a model name such as
        V(NVIDIA A100-SXM4-40GB); a string or a list), C(mig-enabled) (bool) and C(mig-devices), a mapping from
        MIG device name to count. As with mig-parted, C(mig-devices) is required when C(mig-enabled=true);
        V({}) enables MIG with no MIG devices (destroying those there are).
      - A MIG device name is a GPU instance profile (V(3g.40gb), V(1g.10gb+me)), meaning one GPU instance with one
        compute instance spanning it, or V(<C>c.<GPU instance profile>) (V(1c.3g.40gb)), a compute instance using
        C compute slices; such compute instances share GPU instances of that profile as far as they fit, as with
        mig-parted.
      - A name must be one of the GPU's profiles, as the driver names it (C(nvidia-smi mig -lgip)) or as mig-parted
        names it (from the profile's share of the GPU's memory; the two agree on most boards), with its attributes
        (V(+me), V(+me.all), V(-me), V(+gfx)) in any order. Driver branches name the same profile a GB apart
        (V(1g.24gb) and V(1g.23gb) on HGX GB200, V(3g.39gb) and V(3g.40gb) on A100 80GB), so a name within 5% of
        exactly one profile of the same compute slices and attributes is taken for it, with a warning naming it.
        Any other name is refused before anything changes, naming the GPU's closest profiles, so a profile of
        another model (V(1g.5gb) of an A100 on an A30, V(3g.90gb) of a B200 on an H200) never silently becomes a
        different layout.
      - When several entries select a GPU, the last one wins. GPUs that no entry selects are left alone.
        An entry with C(devices=all) skips GPUs that do not support MIG.
      - When entries have a C(device-filter) and none of them selects any MIG-capable GPU of the host, the module
        fails naming the filters and the host's PCI device ids (mig-parted would silently do nothing), so a
        configuration meant for another model, or a mistyped id, is not mistaken for an applied one.
    type: list
    elements: dict
  config_file:
    description:
      - A mig-parted configuration file on the managed host (C(version=v1), C(mig-configs)), for example the
        C(/etc/nvidia-mig-manager/config.yaml) of NVIDIA's mig-manager, so existing GPU Operator and mig-parted
        configurations work unchanged. Needs PyYAML on the host.
      - It may also be a Kubernetes ConfigMap manifest that holds such a file under C(data) (as mig-manager reads
        C(data.config.yaml)), for example the GPU Operator's C(default-mig-parted-config) saved with
        C(kubectl get configmap -o yaml), or a manifest of several documents with one such ConfigMap.
      - The whole file is validated before anything changes, as mig-parted does, including configurations other
        than O(config_name). Errors name the file, the line, the configuration and entry, the value and what
        would be valid; duplicate keys (which YAML would silently collapse) are errors.
    type: path
  config_name:
    description:
      - The configuration in O(config_file) to apply, for example V(all-balanced).
      - May be left out when the file holds a single configuration, as with mig-parted.
      - When the file has no such configuration, the module fails listing the names it has.
    type: str
  reset:
    description:
      - What to do when a MIG mode change needs a GPU reset to take effect (Ampere GPUs).
      - V(auto) resets the GPU with C(nvidia-smi -r) when no process uses it; when the reset is refused, the
        module fails and says what holds the GPU (processes, nvidia-persistenced, DCGM, Fabric Manager,
        a loaded nvidia_drm).
      - V(never) leaves the mode pending and returns RV(reboot_required=true); the layout is applied after the
        reboot (by the role's boot unit, or by running this module again). The module then never resets a GPU,
        but on an idle Ampere GPU the driver itself may apply the new mode at once.
    type: str
    choices: [auto, never]
    default: auto
  force:
    description:
      - Allow destroying instances that processes are using. The processes are sent SIGTERM, then SIGKILL,
        and the instances destroyed once the driver no longer lists them.
    type: bool
    default: false
  force_timeout:
    description:
      - With O(force=true), seconds to wait after SIGTERM before sending SIGKILL.
    type: float
    default: 10
  client_services:
    description:
      - systemd units that hold the GPUs open and must not run while instances change (DCGM, dcgm-exporter,
        the kubelet or a host-installed device plugin), as NVIDIA's mig-manager stops GPU clients around a change.
      - Those of them that are active are stopped right before the first change and started again after the
        last one, also when the change fails. When nothing changes they are not touched.
      - Names are checked against the characters systemd allows in unit names, before anything changes.
    type: list
    elements: str
    default: []
  boot_dir:
    description:
      - Install the code that re-applies a layout at boot in this directory; that is the entry point
        C(gpuops-mig-apply), every C(module_utils) file it imports (followed through their imports, from this
        module's own code, so nothing is left out when the collection changes), and a C(VERSION) stamp naming
        the collection version and a digest of the files. Files there that the code no longer needs are removed.
      - The P(gpuops.sharing.mig#role) role sets it and runs the entry point from C(gpuops-mig.service) with the
        host's python3, which needs nvidia-ml-py and PyYAML (Python 3.9 or newer).
      - Files are written through a temporary file and an atomic rename, never through a symbolic link.
    type: path
  boot_unit:
    description:
      - Also write and enable the systemd oneshot unit that re-applies the layout at every boot with the boot code
        of O(boot_dir) (which it needs), so that the layout comes back without Ansible. MIG mode survives a reboot,
        GPU and compute instances do not.
      - With O(config), the layout is written as a mig-parted v1 file, C(<config_dir>/config.yaml), holding O(config)
        under O(boot_unit.config_name); with O(config_file), the unit applies O(config_name) of that file, which
        must stay where it is.
      - The unit is ordered as NVIDIA's own mig-manager unit (after C(nvidia-persistenced) and
        C(nvidia-fabricmanager)) and before the services that open GPUs (C(nvidia-dcgm), C(dcgm-exporter),
        C(containerd), C(docker), C(kubelet)). It needs systemd, and PyYAML and nvidia-ml-py in
        O(boot_unit.python).
      - In the steady state this is one C(systemctl is-enabled) call; C(systemctl daemon-reload) and
        C(systemctl enable) run only when the unit changed or is not enabled.
    type: dict
    suboptions:
      name:
        description: The unit's name.
        type: str
        default: gpuops-mig
      unit_dir:
        description: Where the unit is written.
        type: str
        default: /etc/systemd/system
      python:
        description: The host's Python (3.9 or newer, with nvidia-ml-py and PyYAML) that runs the boot code.
        type: str
        default: /usr/bin/python3
      config_dir:
        description: Where the layout file C(config.yaml) is written (with O(config)).
        type: str
        default: /etc/gpuops/mig
      config_name:
        description: The configuration's name in that file (with O(config)).
        type: str
        default: gpuops
notes:
  - Runs as root (C(become=true)).
  - GPU instance placements are in the driver's units (memory slices), as C(nvidia-smi mig -lgipp) prints them.
seealso:
  - module: gpuops.sharing.gpu_info
  - name: NVIDIA MIG User Guide
    description: Profiles, placements and MIG mode.
    link: https://docs.nvidia.com/datacenter/tesla/mig-user-guide/
  - name: NVIDIA mig-parted
    description: The configuration format this module reads.
    link: https://github.com/NVIDIA/mig-parted
author:
  - gpuops.sharing maintainers (@gpuops)
"""

EXAMPLES = r"""
# Profile names carry the memory of the model they are for: 3g.40gb is on 80 GB GPUs (A100 80GB,
# H100 80GB), 3g.20gb on the A100 40GB (docs/mig-profiles.md has every model's profiles).
- name: Two 3g.40gb instances on every H100 of the host
  gpuops.sharing.mig:
    config:
      - devices: all
        device-filter: "0x233010DE"
        mig-enabled: true
        mig-devices:
          3g.40gb: 2
  become: true

# For an A100 40GB (1g.5gb, 2g.10gb, 3g.20gb are its profiles)
- name: A mixed A100 layout that creating in listed order cannot reach (the module places it as a whole)
  gpuops.sharing.mig:
    config:
      - devices: [0]
        mig-enabled: true
        mig-devices:
          1g.5gb: 2
          2g.10gb: 1
          3g.20gb: 1
  become: true

# For a host with at least 4 GPUs of 80 GB (A100 80GB or H100 80GB: 1c.7g.80gb is theirs)
- name: Seven MIG devices in one full-size GPU instance, and MIG off on GPU 3
  gpuops.sharing.mig:
    config:
      - devices: [0, 1, 2]
        mig-enabled: true
        mig-devices:
          1c.7g.80gb: 7
      - devices: [3]
        mig-enabled: false
  become: true

- name: Apply a named configuration from NVIDIA mig-manager's config file
  gpuops.sharing.mig:
    config_file: /etc/nvidia-mig-manager/config.yaml
    config_name: all-balanced
  become: true

# all-1g.10gb has an entry per model (device-filter): seven on 80 GB A100s and H100s, four on A100 40GB
- name: Apply a configuration from the GPU Operator's ConfigMap, saved with kubectl get configmap -o yaml
  gpuops.sharing.mig:
    config_file: /root/default-mig-parted-config.yaml
    config_name: all-1g.10gb
  become: true

# seven 1g.10gb: an 80 GB A100 or H100 (an A100 40GB has at most four 1g.10gb; its seven are 1g.5gb)
- name: Change MIG mode without resetting busy GPUs; reboot later
  gpuops.sharing.mig:
    config:
      - devices: all
        mig-enabled: true
        mig-devices:
          1g.10gb: 7
    reset: never
  become: true
  register: mig

- name: Reboot when the MIG mode change needs it
  ansible.builtin.reboot:
  when: mig.reboot_required
  become: true

# 3g.40gb: an 80 GB A100 or H100
- name: Change the layout with DCGM stopped around the change, and install the boot-time code
  gpuops.sharing.mig:
    config:
      - devices: all
        mig-enabled: true
        mig-devices:
          3g.40gb: 2
    client_services: [nvidia-dcgm, dcgm-exporter]
    boot_dir: /usr/local/lib/gpuops-sharing/mig
  become: true
"""

RETURN = r"""
reboot_required:
  description: Some GPU needs a reboot (or a GPU reset) before its layout can be applied.
  returned: always
  type: bool
kept:
  description: GPU and compute instances kept as they were.
  returned: always
  type: int
destroyed:
  description: GPU and compute instances destroyed (or that would be, in check mode).
  returned: always
  type: int
created:
  description: GPU and compute instances created (or that would be, in check mode).
  returned: always
  type: int
gpus:
  description: One entry per GPU of the host.
  returned: always
  type: list
  elements: dict
  contains:
    index:
      description: NVML index.
      type: int
    uuid:
      description: GPU UUID.
      type: str
    name:
      description: Product name.
      type: str
    managed:
      description: Whether a configuration entry selected this MIG-capable GPU.
      type: bool
    config_entry:
      description: Number (from 0) of the entry that selected the GPU, V(null) if none.
      type: int
    mig_enabled:
      description: MIG mode in effect after the run.
      type: bool
    mig_pending:
      description: MIG mode after the next reset or reboot.
      type: bool
    reset:
      description: Whether the GPU was reset to apply the MIG mode.
      type: bool
    reboot_required:
      description: This GPU needs a reboot to finish.
      type: bool
    changed:
      description: Whether this GPU changed.
      type: bool
    kept:
      description: Instances kept on this GPU.
      type: int
    destroyed:
      description: Instances destroyed on this GPU.
      type: int
    created:
      description: Instances created on this GPU.
      type: int
    operations:
      description: What was done (or would be, in check mode), in order.
      type: list
      elements: str
      sample: ["destroy GPU instance 13 (1g.10gb at 6:1)", "create GPU instance 2g.20gb at 4:2 with 2g.20gb"]
    before:
      description: Layout before the run, one line per GPU instance.
      type: list
      elements: str
    after:
      description: Layout after the run (planned, in check mode).
      type: list
      elements: str
      sample: ["3g.40gb at 0:4: [3g.40gb MIG-5c1b...]", "3g.40gb at 4:4: [1c.3g.40gb MIG-0d2e..., 2c.3g.40gb MIG-77aa...]"]
    profile_source:
      description:
        - Where the profiles the GPU was planned with came from. V(driver) (the driver's own list),
          V(catalogue) (NVIDIA's published tables for the model, where the driver lists no profiles while MIG
          is off; the driver's list is read again right after the mode change and must agree before
          anything is created), or V(null) (unknown model and no list yet; the layout is planned by the next run).
      type: str
    problem:
      description: Why this GPU could not be read (a lost GPU), V(null) otherwise.
      type: str
    instances:
      description: GPU instances after the run with C(gpu_instance_id), C(profile), C(profile_id), C(placement)
        and C(compute_instances) (each with C(compute_instance_id), C(profile), C(placement) and C(mig_uuid)),
        as MPS and Kubernetes configuration consume them. Empty in check mode for GPUs that would change.
      type: list
      elements: dict
operations:
  description:
    - The whole plan for the host, in order, one sentence per operation (what check mode would do).
    - Every refusal is decided before the first of them runs, for every GPU at once.
  returned: always
  type: list
  elements: str
boot:
  description: The boot code installed with O(boot_dir) (V(null) without it).
  returned: always
  type: dict
  contains:
    dir:
      description: O(boot_dir).
      type: str
    entry_point:
      description: The script C(gpuops-mig.service) runs.
      type: str
    version:
      description: The first line of the C(VERSION) stamp, such as V(gpuops.sharing 0.1.0).
      type: str
    files:
      description: Every file the boot code is made of.
      type: list
      elements: str
    unit:
      description: The unit written with O(boot_unit) (V(null) without it).
      type: str
    config_file:
      description: The layout file the unit applies (V(null) without O(boot_unit)).
      type: str
client_services:
  description: Those of O(client_services) that were active, and so were stopped around a change.
  returned: always
  type: list
  elements: str
done:
  description:
    - The operations carried out, in order, with what the driver answered (new instance ids,
      activation status). Empty in check mode.
    - On a failure, what had been done before it (the task then reports C(changed=true) when this is
      not empty); the next run continues from there.
  returned: always
  type: list
  elements: str
  sample: ["GPU 0: enable MIG mode (activation: SUCCESS)", "GPU 0: create GPU instance 3g.40gb at 0:4 (GPU instance 2)"]
"""

from ansible.module_utils.basic import AnsibleModule, missing_required_lib

from ansible_collections.gpuops.sharing.plugins.module_utils import _boot, _host, _mig, _mig_boot, _mig_config, _mig_host
from ansible_collections.gpuops.sharing.plugins.module_utils._nvml import (
    HAS_PYNVML,
    PYNVML_IMPORT_ERROR,
    Nvml,
    NvmlError,
)
from ansible_collections.gpuops.sharing.plugins.module_utils._runner import run_module

EMPTY = {"changed": False, "reboot_required": False, "kept": 0, "destroyed": 0, "created": 0, "gpus": [],
         "operations": [], "done": [], "boot": None, "client_services": []}


def load_entries(module: AnsibleModule) -> list[dict]:
    params = module.params
    if params["config"] is not None:
        return _mig_config.normalize_entries(params["config"], "config")
    if not _mig_config.HAS_YAML:
        module.fail_json(msg=missing_required_lib("PyYAML"), exception=_mig_config.YAML_IMPORT_ERROR, **EMPTY)
    return _mig_config.load_file(params["config_file"], params["config_name"])


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "config": {"type": "list", "elements": "dict"},
            "config_file": {"type": "path"},
            "config_name": {"type": "str"},
            "reset": {"type": "str", "choices": ["auto", "never"], "default": "auto"},
            "force": {"type": "bool", "default": False},
            "force_timeout": {"type": "float", "default": 10.0},
            "client_services": {"type": "list", "elements": "str", "default": []},
            "boot_dir": {"type": "path"},
            "boot_unit": {"type": "dict", "options": {
                "name": {"type": "str", "default": "gpuops-mig"},
                "unit_dir": {"type": "str", "default": "/etc/systemd/system"},
                "python": {"type": "str", "default": "/usr/bin/python3"},
                "config_dir": {"type": "str", "default": "/etc/gpuops/mig"},
                "config_name": {"type": "str", "default": "gpuops"},
            }},
        },
        mutually_exclusive=[("config", "config_file")],
        required_one_of=[("config", "config_file")],
        required_by={"config_name": "config_file"},
        supports_check_mode=True,
    )
    if not HAS_PYNVML:
        module.fail_json(msg=missing_required_lib("nvidia-ml-py"), exception=PYNVML_IMPORT_ERROR, **EMPTY)
    try:
        entries = load_entries(module)
        for text in _mig_config.mig_parted_warnings(entries):
            module.warn(text)
        params = module.params
        sources = _boot.closure(["_host", "_mig_host"], _boot.payload_source) if params["boot_dir"] else None
        layout = None
        if params["boot_unit"] is not None:
            _mig_boot.validate(params["boot_unit"], params["boot_dir"], params["config_file"])
            layout = ({"entries": params["config"]} if params["config"] is not None
                      else {"config_file": params["config_file"], "config_name": params["config_name"]})
        with Nvml() as nv:
            host = _mig_host.HostMig(nv, _host.module_runner(module), entries, reset=params["reset"],
                                     force=params["force"], nvidia_smi=module.get_bin_path("nvidia-smi"),
                                     process_timeout=params["force_timeout"],
                                     client_services=params["client_services"],
                                     systemctl=module.get_bin_path("systemctl")
                                     if params["client_services"] or params["boot_unit"] else None,
                                     boot_dir=params["boot_dir"], boot_sources=sources,
                                     atomic_move=module.atomic_move, boot_unit=params["boot_unit"],
                                     boot_layout=layout)
            run_module(module, host, EMPTY)
    except (_mig_config.ConfigError, _mig.MigError) as exc:
        module.fail_json(msg=str(exc), **EMPTY)
    except NvmlError as exc:
        module.fail_json(msg=exc.message, **EMPTY)


if __name__ == "__main__":
    main()
