#!/usr/bin/python
# Copyright (c) gpuops.sharing contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
module: vgpu_devices
short_description: Create the vGPU devices of a KVM hypervisor by type name, changing as little as possible
version_added: 0.1.0
description:
  - Makes each selected GPU of a hypervisor with NVIDIA's vGPU manager hold exactly the vGPU devices you declare,
    in the configuration format of NVIDIA's vgpu-device-manager, unchanged.
  - Works on the three host layouts, detected per GPU. mdev types on the physical function (T4, V100, A10 with
    vGPU 16 and older). SR-IOV with mdev types on the virtual functions, one vGPU per VF (A100, A30); the VFs
    are enabled with C(/usr/lib/nvidia/sriov-manage) first when they are off. NVIDIA's vendor-specific VFIO
    framework (vGPU 17 and later on Ada, Hopper and Blackwell with kernels without mdev), through each VF's
    C(nvidia/creatable_vgpu_types) and C(nvidia/current_vgpu_type).
  - Types are named as the driver names them, the last word of the mdev type's C(name) (V(A100-4C) for
    C(NVIDIA A100-4C) and C(GRID A100-4C)) or the name in C(creatable_vgpu_types); numeric type ids are refused,
    they change between driver branches.
  - Every existing vGPU that matches the configuration is kept with its UUID; only the difference is created and
    removed. vGPUs that a VM uses (its VFIO group open, or a running libvirt domain naming it) are never removed
    unless O(force=true).
  - Everything that could be refused is decided for all GPUs before the first write, with the reason and what
    would fit on that GPU. A failure after a write reports RV(done) and C(changed=true).
  - On mdev hosts every vGPU is defined with C(mdevctl define --auto) so that it comes back after a reboot, and
    definitions on the selected GPUs that the configuration does not hold are removed.
  - With O(scheduler), also sets the host's vGPU scheduler policy for time-sliced vGPUs, as the driver's
    C(RmPVMRL) registry key in a modprobe options file (NVIDIA's vGPU user guide, "Changing Scheduling Behavior
    for Time-Sliced vGPUs"); it applies at the next reboot, and RV(reboot_required) says when the file changed.
extends_documentation_fragment:
  - gpuops.sharing._attributes
attributes:
  check_mode:
    support: full
    details:
      - Writes nothing and reports the operations it would perform; UUIDs of vGPUs to create are drawn anew each
        run unless given in O(uuids).
  diff_mode:
    support: full
    details:
      - The vGPUs of every selected GPU before and after, one line each, and the scheduler file's C(options) line.
  idempotent:
    support: full
options:
  config:
    description:
      - The vGPU devices, as the list of entries of one vgpu-device-manager configuration (what sits under a name
        in C(vgpu-configs)).
      - Each entry has C(devices) (V(all) or a list of GPU indexes, in PCI address order), an optional
        C(device-filter) (a PCI id such as V(0x20B010DE), optionally with V(:0xSSSSVVVV) for the subsystem; a
        string or a list) and C(vgpu-devices), a mapping from vGPU type name to count. V({}) means no vGPUs.
      - An entry may not mix time-sliced (V(A100-4C)) and MIG-backed (V(A100-1-5C)) types. When several entries
        select a GPU, the last one whose types the GPU offers wins. GPUs no entry selects are left alone.
    type: list
    elements: dict
  config_file:
    description:
      - A vgpu-device-manager configuration file on the managed host (C(version=v1), C(vgpu-configs)), such as
        NVIDIA's C(examples/config-example.yaml). The whole file is validated. Needs PyYAML on the host.
    type: path
  config_name:
    description:
      - The configuration of O(config_file) to apply.
    type: str
  uuids:
    description:
      - Fixed UUIDs, so that a VM keeps its vGPU across runs and reboots. A mapping from GPU index (or PCI address)
        to a mapping from type name to a list of UUIDs, at most as many as the configuration asks for of that type.
      - An existing vGPU with such a UUID is kept; a missing one is created with it. Not for vendor-VFIO GPUs,
        whose vGPUs have no UUID (the virtual function names them).
    type: dict
  force:
    description:
      - Remove vGPUs that a VM uses when the configuration needs them gone.
    type: bool
    default: false
  boot_dir:
    description:
      - Install the code that creates the vGPUs again at boot in this directory; that is the entry point
        C(gpuops-vgpu-apply), every C(module_utils) file it imports (followed through their imports, from this
        module's own code, so nothing is left out when the collection changes), and a C(VERSION) stamp naming
        the collection version and a digest of the files. Files there that the code no longer needs are removed.
      - The P(gpuops.sharing.vgpu_host#role) role sets it to C(/usr/local/lib/gpuops-sharing/vgpu).
      - Files are written through a temporary file and an atomic rename, never through a symbolic link.
    type: path
  boot_unit:
    description:
      - Also write and enable the systemd oneshot unit that creates the vGPUs again at every boot with the boot
        code of O(boot_dir) (which it needs). SR-IOV virtual functions enabled by C(sriov-manage) and vendor-VFIO
        vGPUs do not survive a reboot; on mdev layouts C(mdevctl) brings back the definitions, and the unit enables
        the virtual functions they sit on.
      - The vGPUs the run leaves on the selected GPUs are saved in C(<config_dir>/devices.json), each with its
        UUID (mdev) or its virtual function (vendor VFIO), so a VM finds its device again after a reboot.
      - The unit runs after NVIDIA's vGPU manager (C(nvidia-vgpud), C(nvidia-vgpu-mgr)) and C(gpuops-mig)
        (MIG-backed types need their GPU instances) and before libvirt (C(libvirtd), C(virtqemud),
        C(libvirt-guests)).
      - In the steady state this is one C(systemctl is-enabled) call; C(systemctl daemon-reload) and
        C(systemctl enable) run only when the unit changed or is not enabled.
    type: dict
    suboptions:
      name:
        description: The unit's name.
        type: str
        default: gpuops-vgpu
      unit_dir:
        description: Where the unit is written.
        type: str
        default: /etc/systemd/system
      python:
        description: The host's Python (3.9 or newer; with nvidia-ml-py for MIG-backed types) that runs the boot code.
        type: str
        default: /usr/bin/python3
      config_dir:
        description: Where the saved devices, C(devices.json), are written.
        type: str
        default: /etc/gpuops/vgpu
  scheduler:
    description:
      - The vGPU scheduler of the host's time-sliced vGPUs, written as C(options nvidia
        NVreg_RegistryDwords="RmPVMRL=<value>") in O(scheduler.file), the form NVIDIA's vGPU user guide gives for
        Linux KVM hypervisors. The values are the guide's table of the C(RmPVMRL) registry key, see
        RV(scheduler.value).
      - It applies to all GPUs of the host, when the C(nvidia) module loads again (a reboot of the host); the module
        returns RV(reboot_required) when it changed the file. MIG-backed vGPUs are not time-sliced and do not use
        it (a configuration of only MIG-backed types gets a warning); the guide lists the GPU architectures on which
        the policy can be changed.
      - The per-GPU form (C(NVreg_RegistryDwordsPerDevice)) is not written. Another file of C(/etc/modprobe.d) (or of
        the file's own directory) that also sets C(NVreg_RegistryDwords) for C(nvidia) gets a warning, since only
        one of the two settings takes effect.
      - Leaving the option out leaves the file alone; the P(gpuops.sharing.vgpu_host#role) role removes it with
        C(vgpu_host_state=absent).
    type: dict
    suboptions:
      policy:
        description:
          - V(best_effort) (the driver's default, C(0x00)), V(equal_share) (C(0x01)) or V(fixed_share) (C(0x11)).
        type: str
        required: true
        choices: [best_effort, equal_share, fixed_share]
      time_slice_ms:
        description:
          - The time slice length in milliseconds, 1 to 30 (the key's C(TT), C(0x01) to C(0x1E)), for
            V(equal_share) and V(fixed_share) only; left out, the scheduler's default length.
        type: int
      file:
        description:
          - The modprobe options file the module owns whole (an absolute path ending in C(.conf)); written through a
            temporary file and an atomic rename, never through a symbolic link.
        type: path
        default: /etc/modprobe.d/gpuops-vgpu-scheduler.conf
  preflight:
    description:
      - Read-only checks of the host, made before the plan, that NVIDIA's vGPU manager is installed, the IOMMU is on
        and the kernel modules are loaded. When one fails, the module fails with every failing check and its remedy, and
        changes nothing (in check mode too).
      - Left out, the module still refuses a selected GPU that offers no vGPU types, and creating vGPUs with the
        IOMMU off. The P(gpuops.sharing.vgpu_host#role) role sets it unless C(vgpu_host_preflight=false).
    type: dict
    suboptions:
      manager_paths:
        description:
          - Paths of NVIDIA's vGPU manager; at least one must exist. V([]) skips this check.
        type: list
        elements: path
        default: [/usr/bin/nvidia-vgpu-mgr]
      kernel_modules:
        description:
          - Kernel modules that must be loaded or built into the kernel (C(/sys/module/<name>) exists; C(-) and C(_)
            are the same, as for C(modprobe)). V([]) skips this check.
        type: list
        elements: str
        default: [nvidia]
      iommu:
        description:
          - The IOMMU must be on (C(/sys/kernel/iommu_groups) is not empty), also when the run creates nothing.
        type: bool
        default: true
requirements:
  - NVIDIA vGPU manager (C(nvidia-vgpu-mgr)) on the host, the IOMMU enabled.
  - mdevctl, for mdev layouts.
  - nvidia-ml-py, for MIG-backed types (to read the GPU instances).
notes:
  - MIG-backed types need MIG mode and one GPU instance of the type's profile per vGPU; create those first with
    M(gpuops.sharing.mig).
  - Virtual functions enabled by C(sriov-manage) do not survive a reboot; use O(boot_unit) on SR-IOV and
    vendor-VFIO hosts (the P(gpuops.sharing.vgpu_host#role) role does).
seealso:
  - name: NVIDIA vgpu-device-manager
    description: The configuration format.
    link: https://github.com/NVIDIA/vgpu-device-manager
  - name: NVIDIA Virtual GPU Software User Guide
    description: vGPU types per GPU, and the host layouts.
    link: https://docs.nvidia.com/vgpu/latest/grid-vgpu-user-guide/
author:
  - gpuops.sharing maintainers (@gpuops)
"""

EXAMPLES = r"""
- name: Four A100X-4C vGPUs on every A100 40GB, one of them with a fixed UUID
  gpuops.sharing.vgpu_devices:
    config:
      - devices: all
        vgpu-devices:
          A100X-4C: 4
    uuids:
      "0":
        A100X-4C:
          - 4b20d080-1b54-4048-85b3-a6a62d165c01

- name: The same vGPUs, with the equal share scheduler and a 3 ms time slice (applies after a reboot)
  gpuops.sharing.vgpu_devices:
    config:
      - devices: all
        vgpu-devices:
          A100X-4C: 4
    uuids:
      "0":
        A100X-4C:
          - 4b20d080-1b54-4048-85b3-a6a62d165c01
    scheduler:
      policy: equal_share
      time_slice_ms: 3
  register: vgpu_scheduled

- name: Tell when the host needs a reboot for the scheduler
  ansible.builtin.debug:
    msg: "{{ inventory_hostname }} applies RmPVMRL={{ vgpu_scheduled.scheduler.value }} at its next reboot"
  when: vgpu_scheduled.reboot_required

- name: The same vGPUs, once the vGPU manager, the IOMMU and the nvidia module are found (nothing changes if not)
  gpuops.sharing.vgpu_devices:
    config:
      - devices: all
        vgpu-devices:
          A100X-4C: 4
    preflight:
      manager_paths: [/usr/bin/nvidia-vgpu-mgr]
      kernel_modules: [nvidia]

- name: A configuration of NVIDIA's own example file
  gpuops.sharing.vgpu_devices:
    config_file: /etc/nvidia/vgpu-devices.yaml
    config_name: A100X-8C
"""

RETURN = r"""
gpus:
  description: Every GPU the configuration selects, with its vGPUs after the run (in check mode, as planned).
  returned: always
  type: list
  elements: dict
  contains:
    index:
      description: GPU index (PCI address order).
      type: int
    pci_bus_id:
      description: PCI address of the physical function.
      type: str
    name:
      description: GPU model.
      type: str
    layout:
      description: V(mdev) (types on the physical function), V(sriov-mdev) (mdev types on the virtual functions)
        or V(vfio) (NVIDIA's vendor-specific VFIO).
      type: str
    vfs:
      description: PCI addresses of the virtual functions (empty for V(mdev)).
      type: list
      elements: str
    vgpus:
      description: The vGPUs, each with C(uuid) (null on V(vfio)), C(type_name), C(type_id) and C(parent), the
        PCI address of the function it sits on.
      type: list
      elements: dict
    kept:
      description: Existing vGPUs kept.
      type: int
    created:
      description: vGPUs created.
      type: int
    removed:
      description: vGPUs removed.
      type: int
  sample:
    - index: 0
      pci_bus_id: "0000:41:00.0"
      name: NVIDIA A100-SXM4-40GB
      layout: sriov-mdev
      vfs: ["0000:41:00.4", "0000:41:00.5"]
      vgpus:
        - {uuid: 4b20d080-1b54-4048-85b3-a6a62d165c01, type_name: A100X-4C, type_id: 2000, parent: "0000:41:00.4"}
      kept: 0
      created: 1
      removed: 0
kept:
  description: vGPUs kept, on all GPUs.
  returned: always
  type: int
created:
  description: vGPUs created (or that would be, in check mode).
  returned: always
  type: int
destroyed:
  description: vGPUs removed (or that would be, in check mode); the fewest the configuration allows.
  returned: always
  type: int
boot:
  description: The boot code installed with O(boot_dir) (V(null) without it).
  returned: always
  type: dict
  contains:
    dir:
      description: O(boot_dir).
      type: str
    entry_point:
      description: The script the unit runs, C(<boot_dir>/gpuops-vgpu-apply).
      type: str
    version:
      description: The first line of the C(VERSION) stamp (the collection version).
      type: str
    files:
      description: Every file the boot code is made of.
      type: list
      elements: str
    unit:
      description: The unit written with O(boot_unit) (V(null) without it).
      type: str
    state_file:
      description: The saved devices the unit applies (V(null) without O(boot_unit)).
      type: str
scheduler:
  description: The scheduler written with O(scheduler) (V(null) without it).
  returned: always
  type: dict
  contains:
    policy:
      description: O(scheduler.policy).
      type: str
    time_slice_ms:
      description: O(scheduler.time_slice_ms) (V(null) for the default length).
      type: int
    value:
      description:
        - The C(RmPVMRL) value, from NVIDIA's table. C(0x00) best effort; C(0x01) equal share and C(0x11) fixed
          share with the default time slice; C(0x00TT0001) equal share and C(0x00TT0011) fixed share with a time
          slice of C(TT) milliseconds (hex).
      type: str
    file:
      description: O(scheduler.file).
      type: str
  sample: {policy: equal_share, time_slice_ms: 3, value: "0x00030001",
           file: /etc/modprobe.d/gpuops-vgpu-scheduler.conf}
reboot_required:
  description: The scheduler file changed (or would, in check mode); the policy applies after a reboot of the host.
  returned: always
  type: bool
operations:
  description: The planned operations, one sentence each.
  returned: always
  type: list
  elements: str
done:
  description: The operations carried out (empty in check mode); on failure, those completed before it.
  returned: always
  type: list
  elements: str
"""

from ansible.module_utils.basic import AnsibleModule, missing_required_lib

from ansible_collections.gpuops.sharing.plugins.module_utils import _boot, _host, _vgpu, _vgpu_boot, _vgpu_host, _vgpu_sched
from ansible_collections.gpuops.sharing.plugins.module_utils._nvml import HAS_PYNVML, PYNVML_IMPORT_ERROR, Nvml, NvmlError
from ansible_collections.gpuops.sharing.plugins.module_utils._runner import run_module

EMPTY = {"changed": False, "gpus": [], "kept": 0, "created": 0, "destroyed": 0, "operations": [], "done": [],
         "boot": None, "scheduler": None, "reboot_required": False}


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "config": {"type": "list", "elements": "dict"},
            "config_file": {"type": "path"},
            "config_name": {"type": "str"},
            "uuids": {"type": "dict"},
            "force": {"type": "bool", "default": False},
            "boot_dir": {"type": "path"},
            "boot_unit": {"type": "dict", "options": {
                "name": {"type": "str", "default": "gpuops-vgpu"},
                "unit_dir": {"type": "str", "default": "/etc/systemd/system"},
                "python": {"type": "str", "default": "/usr/bin/python3"},
                "config_dir": {"type": "str", "default": "/etc/gpuops/vgpu"},
            }},
            "scheduler": {"type": "dict", "options": {
                "policy": {"type": "str", "required": True, "choices": list(_vgpu_sched.POLICIES)},
                "time_slice_ms": {"type": "int"},
                "file": {"type": "path", "default": _vgpu_sched.DEFAULT_FILE},
            }},
            "preflight": {"type": "dict", "options": {
                "manager_paths": {"type": "list", "elements": "path",
                                  "default": _vgpu_host.PREFLIGHT_DEFAULTS["manager_paths"]},
                "kernel_modules": {"type": "list", "elements": "str",
                                   "default": _vgpu_host.PREFLIGHT_DEFAULTS["kernel_modules"]},
                "iommu": {"type": "bool", "default": _vgpu_host.PREFLIGHT_DEFAULTS["iommu"]},
            }},
        },
        mutually_exclusive=[("config", "config_file")],
        required_one_of=[("config", "config_file")],
        required_together=[("config_file", "config_name")],
        supports_check_mode=True,
    )
    p = module.params
    try:
        if p["config"] is not None:
            entries = _vgpu.parse_entries(p["config"], "config")
        else:
            entries = _vgpu_host.load_config_file(p["config_file"], p["config_name"])
        if p["boot_unit"] is not None:
            _vgpu_boot.validate(p["boot_unit"], p["boot_dir"])
        scheduler = _vgpu_sched.validate(p["scheduler"]) if p["scheduler"] is not None else None
        preflight = _vgpu_host.validate_preflight(p["preflight"]) if p["preflight"] is not None else None
        mig_backed = any(_vgpu.parse_type(t)["g"] for e in entries for t in e["vgpu_devices"])
        if scheduler is not None:
            warning = _vgpu_sched.mig_backed_only(scheduler, [t for e in entries for t in e["vgpu_devices"]])
            if warning:
                module.warn(warning)
        tools = {"run_command": _host.module_runner(module), "entries": entries, "uuids": p["uuids"],
                 "force": p["force"], "sriov_manage": module.get_bin_path("sriov-manage", opt_dirs=["/usr/lib/nvidia"]),
                 "mdevctl": module.get_bin_path("mdevctl"), "virsh": module.get_bin_path("virsh"),
                 "boot_dir": p["boot_dir"], "boot_unit": p["boot_unit"], "atomic_move": module.atomic_move,
                 "scheduler": scheduler, "preflight": preflight,
                 "boot_sources": _boot.closure(["_host", "_vgpu_host"], _boot.payload_source) if p["boot_dir"] else None,
                 "systemctl": module.get_bin_path("systemctl") if p["boot_unit"] is not None else None}
        if mig_backed and not HAS_PYNVML:
            module.fail_json(msg=missing_required_lib("nvidia-ml-py") + " (MIG-backed vGPU types need the GPU "
                             "instances, read through NVML)", exception=PYNVML_IMPORT_ERROR, **EMPTY)
        if mig_backed:
            with Nvml() as nv:
                run_module(module, _vgpu_host.HostVgpu(nv=nv, **tools), EMPTY)
        else:
            run_module(module, _vgpu_host.HostVgpu(**tools), EMPTY)
    except (_vgpu.ConfigError, _vgpu.PlanError, _vgpu_host.HostError) as exc:
        module.fail_json(msg=str(exc), **EMPTY)
    except NvmlError as exc:
        module.fail_json(msg=exc.message, **EMPTY)


if __name__ == "__main__":
    main()
