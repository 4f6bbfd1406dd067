"""The vGPU manager on a simulated hypervisor: what the kernel and NVIDIA's host driver do with vGPU devices.

The state lives in the host's state file (state.py): ``state["vgpu_host"]`` says whether the vGPU manager
(nvidia-vgpu-mgr) and the IOMMU are there, and each GPU gets a ``"vgpu"`` section with its enabled virtual
functions and its vGPUs.  sysfs.py serves this through FUSE at the real paths; this file decides.

The type tables come from the collection's ``plugins/module_utils/_vgpu_types.py`` (loaded by path, as
catalogue.py loads _catalogue.py): names and maxima from NVIDIA's vGPU user guide.  Behaviour modelled:

* Three layouts (``_vgpu_types`` per model): mdev types on the physical function (T4); SR-IOV with mdev
  types on each virtual function, one vGPU per VF, nothing on the PF (A100: kata-containers
  GPU-passthrough-and-Kata.md); NVIDIA's vendor-specific VFIO, ``nvidia/creatable_vgpu_types`` and
  ``nvidia/current_vgpu_type`` per VF (L40S, vGPU 17+: kernel/hypeman#327, bigstack-oss/cubecos#312).
* Equal-size mode: once a time-sliced vGPU exists, only its type has instances left
  (``available_instances`` 0 elsewhere; ``creatable_vgpu_types`` lists only it, and only on free VFs; a
  VF with a vGPU, or a GPU with its framebuffer used up, prints the header alone).
* MIG-backed types need MIG mode and a GPU instance of the profile not yet used by a vGPU; time-sliced
  types are offered only with MIG mode off.
* Kernel answers: a bad UUID written to ``create`` is ``EINVAL``, an existing one ``EEXIST``, no capacity
  ``ENOSPC`` ("No space left on device", as the kernel's mdev core answers when available_instances is 0);
  ``remove`` of a vGPU a VM holds open is ``EBUSY``; ``sriov_numvfs`` above ``sriov_totalvfs`` is
  ``ERANGE`` and a change from one non-zero count to another ``EBUSY`` (drivers/pci/iov.c
  sriov_numvfs_store); an id not creatable written to ``current_vgpu_type`` is ``EINVAL``.
* Nothing survives a reboot: VFs are disabled again (sriov-manage "does not survive a reboot") and every
  vGPU is gone; mdevctl's definitions (files under /etc/mdevctl.d) bring mdev devices back.
"""

from __future__ import annotations

import errno
import importlib.util
import os
import re
import sys

from . import catalogue

_UUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")


def _load_types():
    here = os.path.dirname(os.path.realpath(__file__))
    path = os.environ.get("GPUSIM_VGPU_TYPES") or os.path.normpath(
        os.path.join(here, "..", "..", "plugins", "module_utils", "_vgpu_types.py"))
    spec = importlib.util.spec_from_file_location("gpusim._vgpu_types_rows", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


TYPES = _load_types()


class KernelError(OSError):
    """A sysfs write refused with an errno, as the kernel refuses it."""

    def __init__(self, code: int, detail: str = ""):
        super().__init__(code, os.strerror(code) + (f": {detail}" if detail else ""))


def host(state: dict) -> dict:
    return state.setdefault("vgpu_host", {"manager": True, "iommu": True})


def model(gpu: dict) -> dict | None:
    return TYPES.vgpu_model(gpu["model"])


def section(gpu: dict) -> dict:
    return gpu.setdefault("vgpu", {"numvfs": 0, "vgpus": [], "mixed_size": False})


def bdf(gpu: dict) -> str:
    return gpu["pci_bus_id"][4:].lower()            # NVML's 00000000:07:00.0 -> sysfs 0000:07:00.0


def vf_bdf(gpu: dict, i: int) -> str:
    m = model(gpu)
    domain, bus, _devfn = bdf(gpu).split(":")
    fn = m["vf_offset"] + i * m["vf_stride"]
    return f"{domain}:{bus}:{fn // 8:02x}.{fn % 8}"


def vfs(gpu: dict) -> list[str]:
    return [vf_bdf(gpu, i) for i in range(section(gpu)["numvfs"])]


def parents(state: dict, gpu: dict) -> list[str]:
    """The mdev parents of a GPU (empty on vendor-VFIO hosts and while the manager is not loaded)."""
    m = model(gpu)
    if not m or not host(state)["manager"] or m["layout"] == "vfio":
        return []
    return [bdf(gpu)] if m["layout"] == "mdev" else vfs(gpu)


def type_by_id(gpu: dict, type_id: int) -> dict | None:
    return next((t for t in model(gpu)["types"] if t["type_id"] == type_id), None)


def _free_gis(state: dict, gpu: dict, profile_name: str) -> list[int]:
    if not gpu.get("mig_current"):
        return []
    names = {p["id"]: p["name"] for p in catalogue.gi_profiles(catalogue.find_model(gpu["model"]))}
    used = {v.get("gi") for v in section(gpu)["vgpus"]}
    return [gi["id"] for gi in gpu["gpu_instances"]
            if names.get(gi["profile_id"]) == profile_name and gi["id"] not in used]


def available(state: dict, gpu: dict, t: dict) -> int:
    """How many more vGPUs of type ``t`` the GPU takes now (before the one-per-VF limit)."""
    vgpus = section(gpu)["vgpus"]
    if t["gpu_instance_profile"]:
        return min(len(_free_gis(state, gpu, t["gpu_instance_profile"])),
                   t["max_instances"] - sum(1 for v in vgpus if v["type_id"] == t["type_id"]))
    if gpu.get("mig_current"):
        return 0
    if not vgpus:
        return t["max_instances"]
    used = 0.0
    for v in vgpus:
        other = type_by_id(gpu, v["type_id"])
        if other["name"] != t["name"] and not section(gpu)["mixed_size"]:
            return 0
        used += 1 / other["max_instances"]
    return max(0, int(round((1 - used) * t["max_instances"], 6)))


def vgpu_on(gpu: dict, parent: str) -> list[dict]:
    return [v for v in section(gpu)["vgpus"] if v["parent"] == parent]


def available_on(state: dict, gpu: dict, parent: str, t: dict) -> int:
    """``available_instances`` of type ``t`` on one mdev parent (a VF takes one vGPU)."""
    n = available(state, gpu, t)
    if model(gpu)["layout"] != "mdev":
        return 0 if vgpu_on(gpu, parent) else min(1, n)
    return n


def find_gpu(state: dict, address: str) -> tuple[dict, str] | tuple[None, None]:
    """The GPU a PCI address belongs to, and whether it is its PF ("pf") or a VF ("vf")."""
    for gpu in state["gpus"]:
        if not model(gpu):
            continue
        if bdf(gpu) == address:
            return gpu, "pf"
        if address in vfs(gpu):
            return gpu, "vf"
    return None, None


def find_vgpu(state: dict, uuid: str) -> tuple[dict, dict] | tuple[None, None]:
    for gpu in state["gpus"]:
        for v in section(gpu)["vgpus"] if model(gpu) else []:
            if v["uuid"] == uuid:
                return gpu, v
    return None, None


def create(state: dict, gpu: dict, parent: str, type_id: int, raw: str) -> dict:
    """A UUID written to ``mdev_supported_types/nvidia-<id>/create`` (or an id to current_vgpu_type)."""
    uuid = raw.strip()
    if not _UUID.match(uuid):
        raise KernelError(errno.EINVAL, f"{uuid!r} is not a UUID")
    uuid = uuid.lower()
    if find_vgpu(state, uuid)[1]:
        raise KernelError(errno.EEXIST, uuid)
    t = type_by_id(gpu, type_id)
    if t is None:
        raise KernelError(errno.EINVAL, f"type {type_id}")
    if available_on(state, gpu, parent, t) <= 0:
        raise KernelError(errno.ENOSPC, f"no {t['name']} instance available on {parent}")
    v = {"uuid": uuid, "type_id": type_id, "parent": parent, "open": False}
    if t["gpu_instance_profile"]:
        v["gi"] = _free_gis(state, gpu, t["gpu_instance_profile"])[0]
    section(gpu)["vgpus"].append(v)
    return v


def remove(gpu: dict, v: dict) -> None:
    if v.get("open"):
        raise KernelError(errno.EBUSY, f"{v['uuid']} is open by a VM")
    section(gpu)["vgpus"].remove(v)


def set_numvfs(state: dict, gpu: dict, raw: str) -> None:
    try:
        n = int(raw.strip(), 0)
    except ValueError:
        raise KernelError(errno.EINVAL, raw.strip()) from None
    m = model(gpu)
    if n < 0 or n > m["total_vfs"]:
        raise KernelError(errno.ERANGE, f"{n} > sriov_totalvfs {m['total_vfs']}")
    s = section(gpu)
    if n == s["numvfs"]:
        return
    if n and s["numvfs"]:
        raise KernelError(errno.EBUSY, f"{s['numvfs']} VFs already enabled")
    if n == 0 and s["vgpus"]:
        raise KernelError(errno.EBUSY, "vGPUs exist on the virtual functions")
    s["numvfs"] = n


def creatable(state: dict, gpu: dict, vf: str) -> list[dict]:
    """``nvidia/creatable_vgpu_types`` of one VF (vendor-specific VFIO)."""
    if vgpu_on(gpu, vf) or not host(state)["manager"]:
        return []
    return [t for t in model(gpu)["types"] if available(state, gpu, t) > 0]


def creatable_text(types: list[dict]) -> str:
    # header and rows as on an L40S (kernel/hypeman#327): "ID    : vGPU Name", "1145  : NVIDIA L40S-1B"
    return "ID    : vGPU Name\n" + "".join(f"{t['type_id']:<6}: {t['mdev_name']}\n" for t in types)


def set_current_type(state: dict, gpu: dict, vf: str, raw: str) -> None:
    try:
        type_id = int(raw.strip())
    except ValueError:
        raise KernelError(errno.EINVAL, raw.strip()) from None
    mine = vgpu_on(gpu, vf)
    if type_id == 0:
        for v in mine:
            remove(gpu, v)
        return
    if mine:
        raise KernelError(errno.EBUSY, f"{vf} already has vGPU type {mine[0]['type_id']}")
    if type_id not in {t["type_id"] for t in creatable(state, gpu, vf)}:
        raise KernelError(errno.EINVAL, f"type {type_id} is not creatable on {vf}")
    # a vendor-VFIO vGPU has no UUID of its own in sysfs; the VF names it (its UUID is the simulator's)
    import uuid as uuidlib
    create(state, gpu, vf, type_id, str(uuidlib.uuid5(uuidlib.NAMESPACE_URL, f"{gpu['uuid']}/{vf}/{type_id}")))


def description(t: dict) -> str:
    # as the P40 sample (mdevctl/mdevctl#115): num_heads, frl_config, framebuffer, max_resolution, max_instance
    heads, frl, res = (1, 60, "4096x2400") if t["series"] == "C" else (4, 60, "7680x4320")
    return (f"num_heads={heads}, frl_config={frl}, framebuffer={t['framebuffer_mib']}M, max_resolution={res}, "
            f"max_instance={t['max_instances']}")


def on_reboot(state: dict) -> None:
    for gpu in state["gpus"]:
        if "vgpu" in gpu:
            gpu["vgpu"]["numvfs"] = 0
            gpu["vgpu"]["vgpus"] = []
