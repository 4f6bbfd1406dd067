# Copyright (c) gpuops.sharing contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""The vGPU boot unit and the device file it applies. Private to this collection: not a public API.

Virtual functions that ``sriov-manage`` enables do not survive a reboot (the VFs are the driver's runtime
state, ``sriov_numvfs``; see simulator/gpusim/vgpu.py for what survives and its sources), and vendor-VFIO
vGPUs (``nvidia/current_vgpu_type``) have no mdevctl to bring them back.  With ``boot_unit`` the
``vgpu_devices`` module writes, besides the boot code (``_boot``), the devices it left as a JSON file, and
a systemd oneshot unit that applies that file at boot with the installed ``gpuops-vgpu-apply``: it enables
the VFs and creates every vGPU again, on mdev with its UUID, on vendor VFIO on its virtual function (the
address a VM's libvirt XML names).  Pure: texts, parsing and validation; the module writes them through
``_host``.

Ordering: after the vGPU manager (``nvidia-vgpud.service``, ``nvidia-vgpu-mgr.service``, the units NVIDIA's
vGPU manager package installs) and after ``gpuops-mig.service`` (MIG-backed types need their GPU instances),
before libvirt (``libvirtd.service``, the modular ``virtqemud.service``, ``libvirt-guests.service``), so that
VMs started at boot find their vGPUs.
"""

from __future__ import annotations

import json
import re

from ansible_collections.gpuops.sharing.plugins.module_utils import _boot, _vgpu

MARK = "Managed by gpuops.sharing.vgpu_devices: written at every run, do not edit (change the devices in Ansible)."
STATE_FILE = "devices.json"
FORMAT = 1
_BDF = re.compile(r"^[0-9a-f]{4}:[0-9a-f]{2}:[0-9a-f]{2}\.[0-7]$")
MAX_GPUS = 64


def validate(cfg: dict, boot_dir: str | None) -> None:
    """``boot_unit``'s values reach a unit's command line: plain names and absolute paths only."""
    if not boot_dir:
        raise _vgpu.ConfigError("boot_unit needs boot_dir: the unit runs the boot code the module installs there")
    problem = _boot.unit_name_problem(cfg, "gpuops-vgpu") or next(filter(None, (
        _boot.path_problem(key, value) for key, value in (
            ("boot_unit.unit_dir", cfg["unit_dir"]), ("boot_unit.python", cfg["python"]),
            ("boot_unit.config_dir", cfg["config_dir"]), ("boot_dir", boot_dir)))), None)
    if problem:
        raise _vgpu.ConfigError(problem)


unit_name = _boot.unit_name
unit_path = _boot.unit_path


def state_path(cfg: dict) -> str:
    return f"{cfg['config_dir'].rstrip('/')}/{STATE_FILE}"


def unit_text(cfg: dict, entry_point: str) -> str:
    state = state_path(cfg)
    return f"""# {MARK}
# Creates the vGPU devices again at boot: SR-IOV virtual functions enabled by sriov-manage and vendor-VFIO
# vGPUs do not survive a reboot. After NVIDIA's vGPU manager (and the MIG layout), before libvirt.
[Unit]
Description=Create the NVIDIA vGPU devices of this hypervisor (gpuops.sharing)
After=local-fs.target systemd-modules-load.service systemd-udev-settle.service nvidia-vgpud.service nvidia-vgpu-mgr.service gpuops-mig.service
Wants=nvidia-vgpu-mgr.service
Before=libvirtd.service virtqemud.service libvirt-guests.service
ConditionPathExists={state}

[Service]
Type=oneshot
RemainAfterExit=yes
TimeoutStartSec=300
ExecStart="{cfg['python']}" "{entry_point}" --state-file "{state}"

[Install]
WantedBy=multi-user.target
"""


def state_text(gpus: list[dict]) -> str:
    """The devices the module left, per GPU: ``[{"pci_bus_id", "vgpus": [{"type_name", "uuid"|"vf"}]}]``.

    ``uuid`` for mdev vGPUs, ``vf`` (the virtual function's address) for vendor-VFIO ones."""
    doc = {"comment": MARK, "format": FORMAT, "gpus": gpus}
    return json.dumps(doc, indent=2, sort_keys=True) + "\n"


def state_gpu(bdf: str, layout: str, vgpus: list[dict]) -> dict:
    """One GPU of the state file from the vGPUs it ends with (``uuid``, ``type_name``, ``parent``)."""
    out = []
    for v in sorted(vgpus, key=lambda v: (v["type_name"], v["parent"], v["uuid"] or "")):
        if layout == "vfio":
            out.append({"type_name": v["type_name"], "vf": v["parent"]})
        else:
            out.append({"type_name": v["type_name"], "uuid": v["uuid"]})
    return {"pci_bus_id": bdf, "layout": layout, "vgpus": out}


def parse_state(text: str, source: str) -> list[dict]:
    """The state file back: the GPUs, each with a PCI address and its vGPUs; refuses anything else."""
    try:
        doc = json.loads(text)
    except ValueError as exc:
        raise _vgpu.ConfigError(f"{source} is not JSON: {exc}") from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT or not isinstance(doc.get("gpus"), list):
        raise _vgpu.ConfigError(f"{source}: not a gpuops.sharing vGPU state file (format {FORMAT} with 'gpus')")
    if len(doc["gpus"]) > MAX_GPUS:
        raise _vgpu.ConfigError(f"{source}: {len(doc['gpus'])} GPUs, more than {MAX_GPUS}")
    gpus = []
    for i, gpu in enumerate(doc["gpus"]):
        where = f"{source}: gpus[{i}]"
        if not isinstance(gpu, dict) or not isinstance(gpu.get("pci_bus_id"), str) \
                or not _BDF.match(gpu["pci_bus_id"]) or not isinstance(gpu.get("vgpus"), list):
            raise _vgpu.ConfigError(f"{where} needs pci_bus_id (such as 0000:41:00.0) and a list of vgpus")
        if len(gpu["vgpus"]) > _vgpu.MAX_COUNT:
            raise _vgpu.ConfigError(f"{where}: {len(gpu['vgpus'])} vGPUs, more than {_vgpu.MAX_COUNT}")
        vgpus = []
        for j, v in enumerate(gpu["vgpus"]):
            if not isinstance(v, dict) or not isinstance(v.get("type_name"), str):
                raise _vgpu.ConfigError(f"{where}.vgpus[{j}] needs type_name")
            _vgpu.parse_type(v["type_name"])
            ident = v.get("vf") if "vf" in v else v.get("uuid")
            pattern = _BDF if "vf" in v else _vgpu.UUID_RE
            if not isinstance(ident, str) or not pattern.match(ident):
                raise _vgpu.ConfigError(f"{where}.vgpus[{j}]: {ident!r} is not a "
                                        f"{'PCI address' if 'vf' in v else 'UUID'}")
            vgpus.append({"type_name": v["type_name"], "id": ident})
        gpus.append({"pci_bus_id": gpu["pci_bus_id"], "vgpus": vgpus})
    return gpus


def boot_request(saved: list[dict], gpus: list[dict]) -> tuple[list[dict], dict]:
    """(config entries, fixed ids per GPU index) that bring the saved vGPUs back on the observed GPUs.

    A GPU of the file that is not on the host any more is an error: the boot unit says so in the journal
    rather than creating vGPUs somewhere else."""
    by_bdf = {g["bdf"].lower(): g for g in gpus}
    entries, fixed = [], {}
    for item in saved:
        gpu = by_bdf.get(item["pci_bus_id"].lower())
        if gpu is None:
            present = ", ".join(sorted(by_bdf)) or "none"
            raise _vgpu.PlanError(f"GPU {item['pci_bus_id']} of the saved vGPUs is not on this host (GPUs: "
                                  f"{present}); run the vgpu_devices module again")
        counts: dict[str, int] = {}
        ids: dict[str, list[str]] = {}
        for v in item["vgpus"]:
            counts[v["type_name"]] = counts.get(v["type_name"], 0) + 1
            ids.setdefault(v["type_name"], []).append(v["id"].lower())
        entries.append({"devices": [gpu["index"]], "device_filter": [], "vgpu_devices": counts})
        if ids:
            fixed[gpu["index"]] = ids
    return entries, fixed
