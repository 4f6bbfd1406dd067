# Copyright (c) gpuops.sharing contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""vGPU devices on a hypervisor: observe and apply through sysfs and mdevctl. Private to this collection.

The host half of the ``vgpu_devices`` module.  Nothing here decides: the plan comes from ``_vgpu`` and the
runner (``_runner``) runs it.  No ansible imports.

What is read, per NVIDIA GPU (``/sys/bus/pci/devices/*`` with vendor ``0x10de``, class ``0x03xxxx``, that is
not a virtual function; GPU indexes in PCI address order, as vgpu-device-manager's go-nvlib ``nvpci``
numbers them):

* the layout: mdev on the physical function (``/sys/class/mdev_bus/<PF>``), SR-IOV with mdev on the virtual
  functions (``/sys/class/mdev_bus/<VF>``), or vendor-specific VFIO (``<VF>/nvidia/creatable_vgpu_types``).
  While the VFs are not enabled the driver cannot answer, and the model's table (``_vgpu_types``) does;
* the types: ``mdev_supported_types/nvidia-<id>/{name,available_instances,description}`` (the maximum from
  the description's ``max_instance=``), or the ``ID : vGPU Name`` lines of ``creatable_vgpu_types``;
* the vGPUs: ``/sys/bus/mdev/devices/<uuid>`` (parent from the link, type from ``mdev_type``), or a VF's
  ``nvidia/current_vgpu_type`` other than 0 (such a vGPU has no UUID: the VF's address names it);
* in use: a process holding the vGPU's VFIO group (``/dev/vfio/<iommu_group>``) open, from ``/proc/*/fd``,
  or a running libvirt domain that names the vGPU (``virsh``, when installed);
* MIG mode and GPU instances through NVML, for MIG-backed types;
* mdevctl's definitions (``mdevctl list --defined --dumpjson``), for persistence.

Persistence on SR-IOV and vendor-VFIO hosts (``boot_dir`` and ``boot_unit``, see ``_vgpu_boot``): the module
installs this file's import closure under the boot directory (``_boot``), saves the vGPUs it leaves (UUIDs,
or virtual functions on vendor VFIO) in a state file and enables a oneshot unit that runs
:func:`boot_main` at boot, so the same code that Ansible ran enables the VFs and creates the vGPUs again.

sysfs attributes are the kernel's interface and are written in place: never created, never through a
link that leaves ``/sys``, one short write each (kernel-doc ``sysfs.rst``), so ``atomic_move`` does not
apply to them.  mdevctl writes its own files under ``/etc/mdevctl.d``.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import stat
import uuid as uuidlib

try:
    import yaml
except ImportError:  # pragma: no cover - the module reports it
    yaml = None

from ansible_collections.gpuops.sharing.plugins.module_utils import _boot, _host, _vgpu, _vgpu_boot, _vgpu_sched, _vgpu_types
from ansible_collections.gpuops.sharing.plugins.module_utils._catalogue import find_device
from ansible_collections.gpuops.sharing.plugins.module_utils._nvml_base import NvmlError
from ansible_collections.gpuops.sharing.plugins.module_utils._runner import Op, RunError, run

BOOT_ENTRY = "gpuops-vgpu-apply"

SYS = "/sys"
MODPROBE_DIRS = ("/etc/modprobe.d",)   # searched for other files setting the nvidia registry parameters
MAX_READ = 65536
_MAX_INSTANCE = re.compile(r"max_instance=(\d+)")
_CREATABLE = re.compile(r"^\s*(\d+)\s*:\s*(.+?)\s*$")


class HostError(RuntimeError):
    """A read or write of the host failed; the message names the path and the errno."""

    @property
    def message(self) -> str:
        return str(self)


ERRORS = (_vgpu.ConfigError, _vgpu.PlanError, HostError, OSError)


def _p(*parts: str) -> str:
    return os.path.join(SYS, *parts)


def read(path: str) -> str:
    try:
        with open(path, encoding="utf-8", errors="replace") as fh:
            return fh.read(MAX_READ)
    except OSError as exc:
        raise HostError(f"cannot read {path}: {exc.strerror}") from None


def read_int(path: str) -> int:
    text = read(path).strip()
    try:
        return int(text, 0)
    except ValueError:
        raise HostError(f"{path} holds {text!r}, not a number") from None


def write(path: str, text: str) -> None:
    """One store to a sysfs attribute (see the module docstring)."""
    real = os.path.realpath(path)
    if not (real == SYS or real.startswith(SYS.rstrip("/") + "/")):
        raise HostError(f"refusing to write {path}: it resolves to {real}, outside {SYS}")
    try:
        fd = os.open(real, os.O_WRONLY | getattr(os, "O_NOFOLLOW", 0))
    except OSError as exc:
        raise HostError(f"cannot open {path} for writing: {exc.strerror}") from None
    try:
        os.write(fd, text.encode())
    except OSError as exc:
        raise HostError(f"writing {text.strip()!r} to {path} failed: {exc.strerror}") from None
    finally:
        os.close(fd)


def listdir(path: str) -> list[str]:
    try:
        return sorted(os.listdir(path))
    except FileNotFoundError:
        return []
    except OSError as exc:
        raise HostError(f"cannot list {path}: {exc.strerror}") from None


def _pci_id(dev: str, a: str, b: str) -> int:
    return (read_int(os.path.join(dev, a)) << 16) | read_int(os.path.join(dev, b))


MAX_FILE_BYTES = 4 * 1024 * 1024     # NVIDIA's config-example.yaml, every type of every GPU, is 68 KiB


def load_config_file(path: str, name: str) -> list[dict]:
    """The entries of config ``name`` in a vgpu-device-manager file (a regular file, at most 4 MiB, YAML)."""
    if yaml is None:
        raise _vgpu.ConfigError(f"reading {path} needs PyYAML (python3-yaml), which is not installed")
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except OSError as exc:
        raise _vgpu.ConfigError(f"cannot read config_file {path}: {exc.strerror}") from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise _vgpu.ConfigError(f"config_file {path} is not a regular file")
        if info.st_size > MAX_FILE_BYTES:
            raise _vgpu.ConfigError(f"config_file {path} is {info.st_size} bytes; at most {MAX_FILE_BYTES} are read")
        data = os.read(fd, MAX_FILE_BYTES + 1)
    finally:
        os.close(fd)
    try:
        doc = yaml.safe_load(data.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise _vgpu.ConfigError(f"config_file {path} is not UTF-8 text (byte {exc.start})") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise _vgpu.ConfigError(f"config_file {path} is not valid YAML{where}: {getattr(exc, 'problem', exc)}") from None
    return _vgpu.select(_vgpu.parse_spec(doc, path), name, path)


def nvidia_gpus() -> list[str]:
    out = []
    for bdf in listdir(_p("bus/pci/devices")):
        dev = _p("bus/pci/devices", bdf)
        if os.path.lexists(os.path.join(dev, "physfn")):
            continue
        if read(os.path.join(dev, "vendor")).strip().lower() != "0x10de":
            continue
        if not read(os.path.join(dev, "class")).strip().lower().startswith("0x03"):
            continue
        out.append(bdf)
    return out


def vf_addresses(pf: str, count: int) -> list[str]:
    """The VF addresses SR-IOV gives (PCIe: routing id = PF's + offset + i * stride)."""
    dev = _p("bus/pci/devices", pf)
    offset, stride = read_int(os.path.join(dev, "sriov_offset")), read_int(os.path.join(dev, "sriov_stride"))
    domain, bus, devfn = pf.split(":")
    slot, fn = devfn.split(".")
    base = (int(bus, 16) << 8) | (int(slot, 16) << 3) | int(fn)
    out = []
    for i in range(count):
        rid = base + offset + i * stride
        out.append(f"{domain}:{rid >> 8:02x}:{(rid >> 3) & 0x1f:02x}.{rid & 7}")
    return out


def mdev_types(parent: str, known: dict | None = None) -> list[dict]:
    """The mdev types of one parent. ``known`` ({type directory: (name, max_instances)}, filled here) carries what
    a type directory says of itself from one parent to the next of the same GPU: the VFs of an SR-IOV GPU list the
    same types, and each read of these files is a call into NVIDIA's driver, so only ``available_instances`` is
    read again per parent."""
    base = _p("class/mdev_bus", parent, "mdev_supported_types")
    known = {} if known is None else known
    out = []
    for entry in listdir(base):
        d = os.path.join(base, entry)
        if entry not in known:
            m = _MAX_INSTANCE.search(read(os.path.join(d, "description")))
            known[entry] = (_vgpu.type_name_from_mdev(read(os.path.join(d, "name"))), int(m.group(1)) if m else None)
        name, max_instances = known[entry]
        tid = entry.rsplit("-", 1)[-1]
        out.append({"name": name, "mdev_type": entry, "type_id": int(tid) if tid.isdigit() else None,
                    "available": read_int(os.path.join(d, "available_instances")), "max_instances": max_instances})
    return out


def creatable(vf: str) -> list[dict]:
    out = []
    for line in read(_p("bus/pci/devices", vf, "nvidia", "creatable_vgpu_types")).splitlines()[1:]:
        m = _CREATABLE.match(line)
        if m:
            out.append({"type_id": int(m.group(1)), "name": _vgpu.type_name_from_mdev(m.group(2))})
        elif line.strip():
            raise HostError(f"{vf}/nvidia/creatable_vgpu_types: line {line!r} is not 'ID : vGPU Name'")
    return out


def open_vfio_groups(proc: str = "/proc") -> dict[str, str]:
    """/dev/vfio/<group> -> 'pid P (comm)' for every process holding one open."""
    out = {}
    for pid in listdir(proc):
        if not pid.isdigit():
            continue
        fds = os.path.join(proc, pid, "fd")
        try:
            names = os.listdir(fds)
        except OSError:
            continue
        for fd in names:
            try:
                target = os.readlink(os.path.join(fds, fd))
            except OSError:
                continue
            if target.startswith("/dev/vfio/") and target[10:].isdigit():
                try:
                    with open(os.path.join(proc, pid, "comm"), encoding="utf-8", errors="replace") as fh:
                        comm = fh.read().strip()
                except OSError:
                    comm = "?"
                out.setdefault(target, f"pid {pid} ({comm})")
    return out


# ------------------------------------------------------------------ preflight
# Read-only checks of the host before anything changes (the module's preflight option): NVIDIA's vGPU manager, the
# IOMMU, the kernel modules. /sys/module/<name> exists for a loaded module and for one built into the kernel; the
# kernel names modules with "_" where their files may have "-" (modprobe takes either).
PREFLIGHT_DEFAULTS = {"manager_paths": ["/usr/bin/nvidia-vgpu-mgr"], "kernel_modules": ["nvidia"], "iommu": True}
MAX_PREFLIGHT_ITEMS = 32
_KERNEL_MODULE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
# the preflight's and the plan check's (vGPUs to create) refusal of a host without an IOMMU
IOMMU_OFF = ("the IOMMU is off (/sys/kernel/iommu_groups is empty): enable VT-d/AMD-Vi in the firmware and boot with "
             "intel_iommu=on or amd_iommu=on")


def validate_preflight(value: dict) -> dict:
    """The preflight option, checked: absolute manager paths and kernel module names, at most MAX_PREFLIGHT_ITEMS
    of each."""
    out = dict(PREFLIGHT_DEFAULTS, **{k: v for k, v in value.items() if v is not None})
    for key in ("manager_paths", "kernel_modules"):
        if len(out[key]) > MAX_PREFLIGHT_ITEMS:
            raise _vgpu.ConfigError(f"preflight.{key}: at most {MAX_PREFLIGHT_ITEMS} entries, got {len(out[key])}")
    for path in out["manager_paths"]:
        if not path.startswith("/") or "\0" in path or len(path) > 4096:
            raise _vgpu.ConfigError(f"preflight.manager_paths: {path!r} is not an absolute path")
    for name in out["kernel_modules"]:
        if not _KERNEL_MODULE.match(name):
            raise _vgpu.ConfigError(f"preflight.kernel_modules: {name!r} is not a kernel module name (letters, "
                                    f"digits, '_' and '-', as in /sys/module)")
    return out


def preflight_problems(preflight: dict, iommu: bool) -> list[str]:
    """What keeps the host from vGPUs, each with its remedy (empty: ready)."""
    problems = []
    if preflight["manager_paths"] and not any(os.path.exists(p) for p in preflight["manager_paths"]):
        problems.append(f"NVIDIA vGPU manager not found ({', '.join(preflight['manager_paths'])}): install the vGPU "
                        f"manager package of your NVIDIA vGPU release")
    if preflight["iommu"] and not iommu:
        problems.append(IOMMU_OFF)
    missing = [m for m in preflight["kernel_modules"] if not os.path.isdir(_p("module", m.replace("-", "_")))]
    if missing:
        problems.append(f"kernel modules not loaded: {', '.join(missing)} (modprobe them, or check the vGPU manager "
                        f"installation)")
    return problems


class HostVgpu:
    """The vgpu_devices host: one run over every GPU the configuration selects."""

    errors = ERRORS

    def __init__(self, run_command, entries: list[dict], uuids: dict | None = None, force: bool = False,
                 sriov_manage: str | None = None, mdevctl: str | None = None, virsh: str | None = None, nv=None,
                 boot_dir: str | None = None, boot_sources: dict | None = None, boot_unit: dict | None = None,
                 systemctl: str | None = None, atomic_move=None, saved: list[dict] | None = None,
                 scheduler: dict | None = None, preflight: dict | None = None):
        """``boot_unit``: the validated option (``_vgpu_boot.validate``); ``saved``: the boot state file's GPUs
        (``_vgpu_boot.parse_state``), which the boot-time run applies instead of ``entries`` and ``uuids``;
        ``scheduler``: the validated scheduler option (``_vgpu_sched.validate``), written as a modprobe file;
        ``preflight``: the validated preflight option (``validate_preflight``), checked before the plan."""
        self.scheduler = scheduler
        self.preflight = preflight
        self.sched_current: str | None = None
        self.boot_dir = boot_dir
        self.boot_sources = boot_sources or {}
        self.boot_unit = boot_unit
        self.systemctl = systemctl
        self.atomic_move = atomic_move
        self.saved = saved
        self.boot_files: dict = {}
        self.boot_current: dict = {}
        self.unit_enabled: bool | None = None
        self.run = run_command
        self.entries = entries
        self.uuids_raw = uuids or {}
        self.force = force
        self.sriov_manage = sriov_manage
        self.mdevctl = mdevctl
        self.virsh = virsh
        self.nv = nv
        self.warnings: list[str] = []

    # ------------------------------------------------------------------ observe
    def observe(self) -> dict:
        state = self._devices()
        self._observe_boot()
        self._observe_scheduler()
        return state

    def _observe_scheduler(self) -> None:
        """The scheduler file as it is, and a warning for each other modprobe file that sets the nvidia module's
        registry parameters too (one NVreg_RegistryDwords wins over the other, so one of the settings is lost)."""
        if not self.scheduler:
            return
        path = self.scheduler["file"]
        self.sched_current = _host.read_managed(path)
        for directory in sorted({os.path.dirname(path), *MODPROBE_DIRS}):
            for other in _host.list_files(directory):
                if other == path or not other.endswith(".conf"):
                    continue
                try:
                    text = _host.read_bounded(other, MAX_READ).decode("utf-8", "replace")
                except OSError:
                    continue
                params = _vgpu_sched.sets_registry(text)
                if params:
                    self.warnings.append(
                        f"{other} also sets {' and '.join(params)} for the nvidia module: modprobe passes both, the "
                        f"last one wins and the other's registry keys are lost; move its keys (the driver takes "
                        f"several, separated by ';') or RmPVMRL into one file")

    def _devices(self) -> dict:
        bdfs = nvidia_gpus()
        mdev_bus = set(listdir(_p("class/mdev_bus")))
        groups = open_vfio_groups()
        domains = self._libvirt_domains()
        mig = self._mig_by_bdf()
        gpus = [self.read_gpu(i, bdf, mdev_bus, groups, domains, mig.get(bdf)) for i, bdf in enumerate(bdfs)]
        return {"gpus": gpus, "iommu": bool(listdir(_p("kernel/iommu_groups"))),
                "defined": self._defined()}

    def _observe_boot(self) -> None:
        if self.boot_dir:
            entry = _boot.entry_point("creates the vGPU devices again at boot (gpuops-vgpu.service)", "_vgpu_host",
                                      "boot_main")
            self.boot_files = _boot.files(self.boot_dir, self.boot_sources, _boot.COLLECTION_VERSION, BOOT_ENTRY,
                                          entry)
            if self.boot_unit:
                self.boot_files[_vgpu_boot.unit_path(self.boot_unit)] = _vgpu_boot.unit_text(
                    self.boot_unit, os.path.join(self.boot_dir, BOOT_ENTRY))
            state_file = _vgpu_boot.state_path(self.boot_unit) if self.boot_unit else None
            self.boot_current = _host.read_installed([*self.boot_files, *([state_file] if state_file else [])],
                                                     os.path.join(self.boot_dir, _boot.LIB_SUBDIR))
        if self.boot_unit and self.systemctl:
            self.unit_enabled = self._is_enabled(_vgpu_boot.unit_name(self.boot_unit))

    def _is_enabled(self, unit: str) -> bool:
        rc, out, _err = self.run([self.systemctl, "is-enabled", unit])
        return rc == 0 and out.strip() in ("enabled", "enabled-runtime")

    def read_gpu(self, index: int, bdf: str, mdev_bus: set, groups: dict, domains: dict, mig: dict | None) -> dict:
        dev = _p("bus/pci/devices", bdf)
        device_id = _pci_id(dev, "device", "vendor")
        model = find_device(device_id)
        table = _vgpu_types.vgpu_model(model["key"]) if model else None
        total_vfs = read_int(os.path.join(dev, "sriov_totalvfs")) if os.path.exists(os.path.join(dev, "sriov_totalvfs")) else 0
        numvfs = read_int(os.path.join(dev, "sriov_numvfs")) if total_vfs else 0
        vfs = vf_addresses(bdf, numvfs) if numvfs else []
        gpu = {"index": index, "bdf": bdf, "name": model["name"] if model else f"PCI {device_id:#010x}",
               "device_id": device_id, "subsystem_id": _pci_id(dev, "subsystem_device", "subsystem_vendor"),
               "vfs_enabled": bool(numvfs), "total_vfs": total_vfs, "vgpus": [], "types": [], "available": {},
               "mig_enabled": bool(mig and mig["enabled"]), "gpu_instances": (mig or {}).get("gpu_instances", {})}
        parents = [bdf] if bdf in mdev_bus else [vf for vf in vfs if vf in mdev_bus]
        if bdf in mdev_bus:
            gpu["layout"] = "mdev"
        elif parents:
            gpu["layout"] = "sriov-mdev"
        elif vfs and os.path.exists(_p("bus/pci/devices", vfs[0], "nvidia", "creatable_vgpu_types")):
            gpu["layout"] = "vfio"
        elif total_vfs and table and table["layout"] != "mdev":
            gpu["layout"] = table["layout"]          # VFs not enabled: NVIDIA's table answers for the driver
        else:
            gpu["layout"] = None
        gpu["vfs"] = vfs if vfs or not total_vfs else vf_addresses(bdf, total_vfs)
        if gpu["layout"] == "mdev":
            gpu["vfs"] = []
        catalogue = {t["name"]: t for t in (table or {}).get("types", [])}
        types: dict[str, dict] = {}
        if parents:
            seen: dict = {}
            for parent in parents:
                for t in mdev_types(parent, seen):
                    gpu["available"][t["name"]] = gpu["available"].get(t["name"], 0) + t["available"]
                    if t["name"] not in types:
                        known = catalogue.get(t["name"], {})
                        types[t["name"]] = {"name": t["name"], "type_id": t["type_id"], "mdev_type": t["mdev_type"],
                                            "max_instances": t["max_instances"] or known.get("max_instances") or 1,
                                            "mig_profile": _vgpu.parse_type(t["name"])["mig_profile"]}
        elif gpu["layout"] == "vfio" and vfs:
            for vf in vfs:
                for t in creatable(vf):
                    gpu["available"][t["name"]] = gpu["available"].get(t["name"], 0) + 1
                    types.setdefault(t["name"], {"name": t["name"], "type_id": t["type_id"], "mdev_type": None,
                                                 "max_instances": catalogue.get(t["name"], {}).get("max_instances")
                                                 or len(vfs),
                                                 "mig_profile": _vgpu.parse_type(t["name"])["mig_profile"]})
        driver_ids = {t["type_id"]: t["name"] for t in types.values()}
        if gpu["layout"] == "vfio" or (gpu["layout"] and not parents and not vfs):
            for name, t in catalogue.items():          # what the driver lists only once VFs or capacity are free
                types.setdefault(name, {"name": name, "type_id": t["type_id"],
                                        "mdev_type": f"nvidia-{t['type_id']}" if gpu["layout"] != "vfio" else None,
                                        "max_instances": t["max_instances"], "mig_profile": t["gpu_instance_profile"]})
        gpu["types"] = list(types.values())
        # the driver's own ids first: NVIDIA's table stands in only for ids the driver does not list now
        by_id = {**{t["type_id"]: t["name"] for t in gpu["types"]}, **driver_ids}
        for parent in parents:
            self._mdev_vgpus(gpu, parent, groups, domains)
        if gpu["layout"] == "vfio":
            for vf in vfs:
                current = read_int(_p("bus/pci/devices", vf, "nvidia", "current_vgpu_type"))
                if current:
                    if current not in by_id:
                        raise HostError(f"VF {vf} of GPU {index} holds vGPU type id {current}, which neither "
                                        f"creatable_vgpu_types nor NVIDIA's table for {gpu['name']} names")
                    gpu["vgpus"].append({"uuid": vf, "type_name": by_id[current], "type_id": current, "parent": vf,
                                         "busy": self._busy(vf, _p("bus/pci/devices", vf), groups, domains)})
        return gpu

    def _mdev_vgpus(self, gpu, parent, groups, domains):
        base = _p("class/mdev_bus", parent)
        for entry in listdir(base):
            d = os.path.join(base, entry)
            if not os.path.exists(os.path.join(d, "mdev_type")):
                continue
            mdev_type = os.path.basename(os.readlink(os.path.join(d, "mdev_type")))
            name = _vgpu.type_name_from_mdev(read(os.path.join(base, "mdev_supported_types", mdev_type, "name")))
            tid = mdev_type.rsplit("-", 1)[-1]
            gpu["vgpus"].append({"uuid": entry.lower(), "type_name": name, "type_id": int(tid) if tid.isdigit() else None,
                                 "mdev_type": mdev_type, "parent": parent,
                                 "busy": self._busy(entry.lower(), d, groups, domains)})

    def _busy(self, name: str, path: str, groups: dict, domains: dict) -> str:
        group = os.path.join(path, "iommu_group")
        if os.path.lexists(group):
            holder = groups.get(f"/dev/vfio/{os.path.basename(os.readlink(group))}")
            if holder:
                return f"its VFIO device /dev/vfio/{os.path.basename(os.readlink(group))} is open by {holder}"
        for domain, xml in domains.items():
            if name in xml:
                return f"running libvirt domain {domain} uses it"
        return ""

    def _libvirt_domains(self) -> dict[str, str]:
        if not self.virsh:
            return {}
        rc, out, err = self.run([self.virsh, "-c", "qemu:///system", "list", "--name", "--state-running"])
        if rc != 0:
            raise HostError(f"virsh list failed ({rc}): {err.strip() or out.strip()}")
        domains = {}
        for name in (n.strip() for n in out.splitlines()):
            if name:
                rc, xml, err = self.run([self.virsh, "-c", "qemu:///system", "dumpxml", name])
                if rc != 0:
                    raise HostError(f"virsh dumpxml {name} failed ({rc}): {err.strip()}")
                domains[name] = xml.lower()
        return domains

    def _mig_by_bdf(self) -> dict[str, dict]:
        if self.nv is None:
            return {}
        out = {}
        for handle in self.nv.gpus():
            facts = self.nv.summary(handle)
            bdf = facts["pci_bus_id"].lower()[-12:]
            info = {"enabled": facts["mig_enabled"], "gpu_instances": {}}
            if facts["mig_enabled"]:
                for gi in self.nv.gpu_instances(handle, strict=True):
                    info["gpu_instances"][gi["profile"]] = info["gpu_instances"].get(gi["profile"], 0) + 1
            out[bdf] = info
        return out

    def _defined(self) -> dict[str, dict]:
        """uuid -> {"parent", "mdev_type", "start"} of mdevctl's definitions (empty without mdevctl)."""
        if not self.mdevctl:
            return {}
        rc, out, err = self.run([self.mdevctl, "list", "--defined", "--dumpjson"])
        if rc != 0:
            raise HostError(f"mdevctl list --defined failed ({rc}): {err.strip() or out.strip()}")
        if not out.strip():
            return {}
        try:
            data = json.loads(out)
        except ValueError as exc:
            raise HostError(f"mdevctl list --defined --dumpjson printed no JSON: {exc}") from None
        defined = {}
        for parents in data if isinstance(data, list) else [data]:
            for parent, devices in parents.items():
                for device in devices:
                    for uuid, conf in device.items():
                        defined[uuid.lower()] = {"parent": parent, "mdev_type": conf.get("mdev_type"),
                                                 "start": conf.get("start")}
        return defined

    # ------------------------------------------------------------------ plan and check
    def plan(self, state: dict) -> list[Op]:
        if self.preflight:
            problems = preflight_problems(self.preflight, state["iommu"])
            if problems:
                raise _vgpu.PlanError(f"this host is not ready for vGPUs: {'; '.join(problems)}")
        gpus = state["gpus"]
        if self.saved is not None:        # at boot: the saved devices, with their UUIDs and VFs
            self.entries, fixed = _vgpu_boot.boot_request(self.saved, gpus)
            self.wanted = _vgpu.desired(self.entries, gpus)
        else:
            self.wanted = _vgpu.desired(self.entries, gpus)
            fixed = _vgpu.normalise_uuids(self.uuids_raw, gpus)
        for index in fixed if self.saved is None else ():
            if next(g for g in gpus if g["index"] == index)["layout"] == "vfio":
                raise _vgpu.ConfigError(f"uuids: GPU {index} uses vendor-specific VFIO, where a vGPU has no UUID "
                                        f"(its virtual function names it); leave uuids out for it")
        for gpu in gpus:
            if any(self.wanted.get(gpu["index"], {}).values()) and gpu["layout"] is None:
                raise _vgpu.PlanError(f"GPU {gpu['index']} ({gpu['bdf']}) {gpu['name']} offers no vGPU types: is the "
                                      f"NVIDIA vGPU manager (nvidia-vgpu-mgr) installed and running?")
        self.plans = _vgpu.plan(gpus, self.wanted, fixed, lambda: str(uuidlib.uuid4()), self.force,
                                self._reuse(state))
        ops = []
        for p in self.plans:
            gpu = next(g for g in gpus if g["index"] == p["index"])
            for op in p["ops"]:
                data = dict(op, layout=gpu["layout"], gpu=gpu["index"], bdf=gpu["bdf"])
                ops.append(Op(op["kind"], op["target"], op["text"], data))
            if gpu["layout"] in ("mdev", "sriov-mdev") and self.mdevctl:
                ops += self._persistence(state, gpu, p)
        return self._scheduler_ops() + self._boot_ops(gpus) + ops

    def _scheduler_ops(self) -> list[Op]:
        if not self.scheduler:
            return []
        s = self.scheduler
        self.sched_text = _vgpu_sched.file_text(s)
        if self.sched_current == self.sched_text:
            return []
        return [Op("write_file", s["file"], f"write {s['file']}: vGPU scheduler {s['policy']} (RmPVMRL={s['value']}), "
                   f"applied at the next reboot", {"path": s["file"], "text": self.sched_text, "mode": 0o644})]

    def _boot_ops(self, gpus: list[dict]) -> list[Op]:
        """The boot code, the unit and the state file of the vGPUs the plan leaves (its UUIDs are drawn)."""
        if not self.boot_dir:
            return []
        if self.boot_unit:
            saved = []
            for p in self.plans:
                gpu = next(g for g in gpus if g["index"] == p["index"])
                final = [dict(v) for v in p["kept"]] + [{"uuid": o["target"], "type_name": o["type_name"],
                                                         "parent": o["parent"]}
                                                        for o in p["ops"] if o["kind"] == "create"]
                saved.append(_vgpu_boot.state_gpu(gpu["bdf"], gpu["layout"], final))
            self.boot_files[_vgpu_boot.state_path(self.boot_unit)] = _vgpu_boot.state_text(saved)
        ops = _boot.plan_files(self.boot_current, self.boot_files)
        if self.boot_unit:
            unit = _vgpu_boot.unit_name(self.boot_unit)
            if any(op.target == _vgpu_boot.unit_path(self.boot_unit) for op in ops):
                ops.append(Op("daemon_reload", "systemd", "systemctl daemon-reload"))
            if not self.unit_enabled:
                ops.append(Op("enable_unit", unit, f"enable {unit} (creates the vGPUs again at boot)",
                              {"unit": unit}))
        return ops

    def _reuse(self, state) -> dict[int, dict[str, list[str]]]:
        """mdevctl definitions of vGPUs that are not there (after a reboot): UUIDs to create again, per type."""
        out: dict[int, dict[str, list[str]]] = {}
        active = {v["uuid"] for g in state["gpus"] for v in g["vgpus"]}
        for gpu in state["gpus"]:
            names = {t.get("mdev_type"): t["name"] for t in gpu["types"]}
            parents = {gpu["bdf"], *gpu["vfs"]}
            for uuid, d in sorted(state["defined"].items()):
                if uuid not in active and d["parent"] in parents and d["mdev_type"] in names:
                    out.setdefault(gpu["index"], {}).setdefault(names[d["mdev_type"]], []).append(uuid)
        return out

    def _persistence(self, state, gpu, p) -> list[Op]:
        ops = []
        removed = {v["uuid"] for v in p["removed"]}
        final = [(v["uuid"], v["parent"], v.get("mdev_type")) for v in p["kept"]] + [
            (o["target"], o["parent"], o.get("mdev_type")) for o in p["ops"] if o["kind"] == "create"]
        keep = [u for u, _p, _t in final]
        for uuid, parent, mdev_type in final:
            d = state["defined"].get(uuid)
            if d and (d["parent"] != parent or (mdev_type and d["mdev_type"] != mdev_type)):
                ops.append(Op("undefine", uuid, f"undefine vGPU {uuid} in mdevctl (defined on {d['parent']} "
                              f"as {d['mdev_type']})", {"gpu": gpu["index"]}))
                d = None
            if d and d["start"] != "auto":
                ops.append(Op("undefine", uuid, f"undefine vGPU {uuid} in mdevctl (defined to start manually)",
                              {"gpu": gpu["index"]}))
                d = None
            if not d:
                ops.append(Op("define", uuid, f"define vGPU {uuid} with mdevctl (start at boot)", {"gpu": gpu["index"]}))
        parents = {gpu["bdf"], *gpu["vfs"]}
        for uuid, d in sorted(state["defined"].items()):
            if d["parent"] in parents and (uuid in removed or uuid not in keep):
                ops.append(Op("undefine", uuid, f"undefine vGPU {uuid} in mdevctl (it is not in the config)",
                              {"gpu": gpu["index"]}))
        return ops

    def check(self, state: dict, ops: list[Op]) -> list[str]:
        problems = []
        if self.boot_unit and not self.systemctl:
            problems.append("boot_unit needs systemd (systemctl was not found on this host); leave it out and "
                            "create the vGPUs after each boot another way")
        if any(op.kind == "create" for op in ops) and not state["iommu"]:
            problems.append(IOMMU_OFF)
        if any(op.kind == "enable_vfs" for op in ops) and not self.sriov_manage:
            problems.append("SR-IOV virtual functions must be enabled but /usr/lib/nvidia/sriov-manage (from the "
                            "NVIDIA vGPU manager) was not found")
        needs_mdevctl = [g["index"] for g in state["gpus"]
                         if g["index"] in self.wanted and g["layout"] in ("mdev", "sriov-mdev")]
        if needs_mdevctl and not self.mdevctl:
            problems.append(f"GPUs {needs_mdevctl} use mdev: install mdevctl so that their vGPUs are defined to "
                            f"come back after a reboot")
        return problems

    # ------------------------------------------------------------------ apply and verify
    def apply(self, op: Op, state: dict):
        d = op.data
        if op.kind == "enable_vfs":
            rc, out, err = self.run([self.sriov_manage, "-e", d["bdf"]])
            if rc != 0:
                raise HostError(f"sriov-manage -e {d['bdf']} failed ({rc}): {err.strip() or out.strip()}")
            if not read_int(_p("bus/pci/devices", d["bdf"], "sriov_numvfs")):
                raise HostError(f"sriov-manage -e {d['bdf']} left sriov_numvfs at 0")
        elif op.kind == "remove" and d["layout"] == "vfio":
            write(_p("bus/pci/devices", d["parent"], "nvidia", "current_vgpu_type"), "0\n")
        elif op.kind == "remove":
            write(_p("bus/mdev/devices", d["target"], "remove"), "1\n")
        elif op.kind == "create" and d["layout"] == "vfio":
            # the id as this VF's driver lists it now (NVIDIA's table stood in while the VFs were off)
            offered = {t["name"]: t["type_id"] for t in creatable(d["parent"])}
            if d["type_name"] not in offered:
                raise HostError(f"{d['parent']} does not list {d['type_name']} in creatable_vgpu_types (it lists: "
                                f"{', '.join(sorted(offered)) or 'nothing'})")
            write(_p("bus/pci/devices", d["parent"], "nvidia", "current_vgpu_type"), f"{offered[d['type_name']]}\n")
            return f"create vGPU {d['type_name']} (type id {offered[d['type_name']]}) on {d['parent']}"
        elif op.kind == "create" and os.path.lexists(_p("bus/mdev/devices", d["target"])):
            # at boot, mdevctl's udev rule may have started a defined vGPU as its VF appeared
            parent = os.path.basename(os.path.dirname(os.path.realpath(_p("bus/mdev/devices", d["target"]))))
            if parent != d["parent"]:
                raise HostError(f"vGPU {d['target']} appeared on {parent} while it was being created on {d['parent']}")
            return f"create vGPU {d['target']} ({d['type_name']}) on {d['parent']}: it was there already (mdevctl)"
        elif op.kind == "create":
            offered = {t["name"]: t["mdev_type"] for t in mdev_types(d["parent"])}
            if d["type_name"] not in offered:
                raise HostError(f"{d['parent']} has no mdev type {d['type_name']} (it has: "
                                f"{', '.join(sorted(offered)) or 'none'})")
            write(_p("class/mdev_bus", d["parent"], "mdev_supported_types", offered[d["type_name"]], "create"),
                  d["target"] + "\n")
        elif op.kind == "write_file":
            _host.write_file(d["path"], d["text"], d["mode"], self.atomic_move)
        elif op.kind == "remove_file":
            _host.remove_file(d["path"])
        elif op.kind in ("daemon_reload", "enable_unit"):
            argv = ["daemon-reload"] if op.kind == "daemon_reload" else ["enable", d["unit"]]
            rc, out, err = self.run([self.systemctl, *argv])
            if rc != 0:
                raise HostError(f"systemctl {' '.join(argv)} failed: {(err or out).strip()}")
        elif op.kind in ("define", "undefine"):
            argv = [self.mdevctl, op.kind, "-u", op.target] + (["--auto"] if op.kind == "define" else [])
            rc, out, err = self.run(argv)
            if rc != 0:
                raise HostError(f"mdevctl {op.kind} -u {op.target} failed ({rc}): {err.strip() or out.strip()}")
        else:
            raise HostError(f"unknown operation {op.kind}")
        return None

    def verify(self, state: dict, ops: list[Op]) -> list[str]:
        after = self._devices()
        self.after = after
        problems = []
        wanted = dict(self.boot_files)
        if self.scheduler:
            wanted[self.scheduler["file"]] = self.sched_text
        for path, text in wanted.items():
            if _host.read_managed(path) != text:
                problems.append(f"{path} does not hold what was written to it")
        if any(op.kind == "enable_unit" for op in ops) and not self._is_enabled(_vgpu_boot.unit_name(self.boot_unit)):
            problems.append(f"{_vgpu_boot.unit_name(self.boot_unit)} is not enabled after enabling it; see "
                            f"systemctl status {_vgpu_boot.unit_name(self.boot_unit)}")
        for gpu in after["gpus"]:
            want = self.wanted.get(gpu["index"])
            if want is None:
                continue
            got: dict[str, int] = {}
            for v in gpu["vgpus"]:
                got[v["type_name"]] = got.get(v["type_name"], 0) + 1
            if got != want:
                problems.append(f"GPU {gpu['index']} holds {got or 'no vGPUs'} after the run, not {want}")
        return problems

    # ------------------------------------------------------------------ result
    def result(self, state: dict, ops: list[Op], check_mode: bool) -> dict:
        final = getattr(self, "after", None) if not check_mode else None
        gpus = []
        for p in self.plans:
            gpu = next(g for g in (final or state)["gpus"] if g["index"] == p["index"])
            if final is None:
                vgpus = [dict(v) for v in p["kept"]] + [
                    {"uuid": o["target"], "type_name": o["type_name"], "type_id": o["type_id"], "parent": o["parent"]}
                    for o in p["ops"] if o["kind"] == "create"]
            else:
                vgpus = gpu["vgpus"]
            gpus.append({
                "index": gpu["index"], "pci_bus_id": gpu["bdf"], "name": gpu["name"], "layout": gpu["layout"],
                "vfs": list(gpu["vfs"]) if gpu["layout"] != "mdev" else [],
                "vgpus": sorted(({"uuid": None if gpu["layout"] == "vfio" else v["uuid"], "type_name": v["type_name"],
                                  "type_id": v["type_id"], "parent": v["parent"]} for v in vgpus),
                                key=lambda v: (v["parent"], v["uuid"] or "")),
                "kept": len(p["kept"]), "removed": len(p["removed"]),
                "created": sum(1 for o in p["ops"] if o["kind"] == "create"),
            })
        boot = None
        if self.boot_dir:
            prefix = self.boot_dir.rstrip("/") + "/"
            boot = {"dir": self.boot_dir, "entry_point": os.path.join(self.boot_dir, BOOT_ENTRY),
                    "version": self.boot_files[os.path.join(self.boot_dir, "VERSION")].splitlines()[0],
                    "files": sorted(p for p in self.boot_files if p.startswith(prefix)),
                    "unit": _vgpu_boot.unit_path(self.boot_unit) if self.boot_unit else None,
                    "state_file": _vgpu_boot.state_path(self.boot_unit) if self.boot_unit else None}
        sched = None
        if self.scheduler:
            sched = {k: self.scheduler[k] for k in ("policy", "time_slice_ms", "value", "file")}
        reboot = any(op.kind == "write_file" and self.scheduler and op.target == self.scheduler["file"] for op in ops)
        return {"gpus": gpus, "kept": sum(g["kept"] for g in gpus), "destroyed": sum(g["removed"] for g in gpus),
                "created": sum(g["created"] for g in gpus), "boot": boot, "scheduler": sched,
                "reboot_required": bool(reboot)}

    def diff(self, result: dict) -> dict:
        before, after = [], []
        for p in self.plans:
            gone = sorted(f"{v['type_name']} {v['uuid']} on {v['parent']}" for v in p["removed"])
            kept = sorted(f"{v['type_name']} {v['uuid']} on {v['parent']}" for v in p["kept"])
            new = sorted(f"{o['type_name']} {o['target']} on {o['parent']}" for o in p["ops"] if o["kind"] == "create")
            before += [f"GPU {p['index']}: {x}" for x in sorted(kept + gone)]
            after += [f"GPU {p['index']}: {x}" for x in sorted(kept + new)]
        if self.scheduler and self.sched_current != self.sched_text:
            before += [f"{self.scheduler['file']}: {line}" for line in (self.sched_current or "").splitlines()
                       if line.startswith("options ")] or [f"{self.scheduler['file']}: absent"]
            after += [f"{self.scheduler['file']}: {line}" for line in self.sched_text.splitlines()
                      if line.startswith("options ")]
        return {"before": "\n".join(before) + "\n" if before else "", "after": "\n".join(after) + "\n" if after else ""}


def apply_state_file(path: str, run_command, sriov_manage: str | None, mdevctl: str | None, log=None) -> dict:
    """Create the vGPUs the state file ``path`` saved (the boot-time run of ``gpuops-vgpu.service``)."""
    saved = _vgpu_boot.parse_state(_host.read_managed(path) or "", path) if os.path.isfile(path) else None
    if saved is None:
        raise _vgpu.ConfigError(f"{path} is missing or not a regular file; run the vgpu_devices module again")
    mig_backed = any(_vgpu.parse_type(v["type_name"])["g"] for g in saved for v in g["vgpus"])
    tools = {"sriov_manage": sriov_manage, "mdevctl": mdevctl, "saved": saved}
    if not mig_backed:
        return run(HostVgpu(run_command, [], **tools), check_mode=False, log=log)
    from ansible_collections.gpuops.sharing.plugins.module_utils._nvml import Nvml  # only MIG-backed types need it

    with Nvml() as nv:
        return run(HostVgpu(run_command, [], nv=nv, **tools), check_mode=False, log=log)


def _tool(argv_value: str | None, *candidates: str) -> str | None:
    for path in ([argv_value] if argv_value else list(candidates)):
        if path and os.path.isfile(path) and os.access(path, os.X_OK):
            return path
    return None


def boot_main(argv: list[str], run_command, out) -> int:
    """``gpuops-vgpu-apply``, which ``gpuops-vgpu.service`` runs at boot (the entry script calls this)."""
    parser = argparse.ArgumentParser(prog=BOOT_ENTRY, description="Create the saved vGPU devices (gpuops.sharing).")
    parser.add_argument("--state-file", required=True)
    parser.add_argument("--sriov-manage", help="default: /usr/lib/nvidia/sriov-manage")
    parser.add_argument("--mdevctl", help="default: mdevctl in /usr/sbin or /usr/bin")
    args = parser.parse_args(argv)
    on_path = [os.path.join(d, "sriov-manage") for d in os.environ.get("PATH", "").split(":")]
    sriov = _tool(args.sriov_manage, "/usr/lib/nvidia/sriov-manage", *on_path)
    mdevctl = _tool(args.mdevctl, "/usr/sbin/mdevctl", "/usr/bin/mdevctl")
    try:
        result = apply_state_file(args.state_file, run_command, sriov, mdevctl, log=out)
    except (RunError, NvmlError) + ERRORS as exc:
        out(f"{BOOT_ENTRY}: {getattr(exc, 'message', exc)}")
        return 1
    for gpu in result["gpus"]:
        out(f"GPU {gpu['index']} ({gpu['pci_bus_id']}): " + (", ".join(
            f"{v['type_name']} {v['uuid'] or v['parent']}" for v in gpu["vgpus"]) or "no vGPUs"))
    return 0
