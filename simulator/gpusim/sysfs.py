"""A live /sys for vGPU hosts, served through FUSE: ``python -m gpusim sysfs mount DIR``.

Plain files cannot answer a write to ``create`` the way the kernel does, so this file system computes
every read from the host's state file and turns every write into a driver call (vgpu.py), with the
kernel's errors.  Mount it on a directory, then bind that directory over ``/sys`` in a private mount
namespace (``unshare -m``) or on a fleet host: the collection reads and writes the real paths.

The tree, as on a real host (see vgpu.py for the sources):

    class/mdev_bus/<BDF>                      -> ../../devices/pci0000:00/<BDF>     (mdev parents)
    bus/mdev/devices/<uuid>                   -> ../../../devices/pci0000:00/<parent>/<uuid>
    bus/pci/devices/<BDF>                     -> ../../../devices/pci0000:00/<BDF>
    devices/pci0000:00/<PF>/{vendor,device,subsystem_vendor,subsystem_device,class}
    devices/pci0000:00/<PF>/{sriov_totalvfs,sriov_numvfs,sriov_offset,sriov_stride,virtfnN}   (SR-IOV)
    devices/pci0000:00/<VF>/physfn            -> ../<PF>
    devices/pci0000:00/<parent>/mdev_supported_types/nvidia-<id>/{name,description,available_instances,
                                                                   device_api,create,devices/}
    devices/pci0000:00/<parent>/<uuid>/{remove,mdev_type}
    devices/pci0000:00/<VF>/nvidia/{creatable_vgpu_types,current_vgpu_type}                (vendor VFIO)
    module/nvidia/version                     the driver's kernel module, loaded

Reads are direct I/O with no attribute caching, so every ``cat`` sees the driver's current answer.
"""

from __future__ import annotations

import copy
import errno
import stat
import time

from . import state as st
from . import vgpu

ROOT = "devices/pci0000:00"
# the most nodes kept between two changes of the state (lookups of paths that do not exist are kept too)
MAX_NODES = 20000
_NOW = time.time()


class Node:
    def __init__(self, kind: str, *, children=(), target: str = "", read=None, write=None, mode: int = 0o444):
        self.kind, self.children, self.target, self.read, self.write, self.mode = \
            kind, list(children), target, read, write, mode


def _dir(children):
    return Node("dir", children=children)


def _file(text, mode=0o444):
    return Node("file", read=lambda: text, mode=mode)


def _link(target):
    return Node("link", target=target)


def _all_devices(state):
    out = []
    for gpu in state["gpus"]:
        if vgpu.model(gpu):
            out.append((vgpu.bdf(gpu), gpu, "pf"))
            out += [(vf, gpu, "vf") for vf in vgpu.vfs(gpu)]
    return out


def _groups(state) -> dict[str, int]:
    """IOMMU groups: one per PCI function and per mdev device, numbered in order (as a VFIO host has them)."""
    out = {}
    for address, _gpu, _kind in _all_devices(state):
        out[address] = len(out) + 1
    for parent, gpu in _mdev_parents(state):
        for v in vgpu.vgpu_on(gpu, parent):
            out[v["uuid"]] = len(out) + 1
    return out


def _mdev_parents(state):
    return [(p, gpu) for gpu in state["gpus"] if vgpu.model(gpu) for p in vgpu.parents(state, gpu)]


def _write(path, fn):
    """A store: under the state lock, on a fresh copy, saved when it returns."""
    def store(data: bytes):
        text = data.decode("utf-8", "replace")
        with st.transaction(path) as state:
            fn(state, text)
    return store


def _gpu_in(state, address):
    gpu, _kind = vgpu.find_gpu(state, address)
    if gpu is None:
        raise vgpu.KernelError(errno.ENODEV, address)
    return gpu


def lookup(state: dict, parts: list[str], state_path: str | None = None) -> Node | None:
    n = len(parts)
    if n == 0:
        return _dir(["class", "bus", "devices", "kernel", "module"])
    head = parts[0]
    if head == "module":
        # the driver's kernel module, loaded (/sys/module/<name>, with the driver version in its version file)
        if n == 1:
            return _dir(["nvidia"])
        if parts[1] != "nvidia":
            return None
        if n == 2:
            return _dir(["version"])
        return _file(f"{state.get('driver_version', '580.95.05')}\n") if n == 3 and parts[2] == "version" else None
    if head == "kernel":
        groups = [str(g) for g in sorted(_groups(state).values())] if vgpu.host(state)["iommu"] else []
        if n == 1:
            return _dir(["iommu_groups"])
        if parts[1] != "iommu_groups":
            return None
        if n == 2:
            return _dir(groups)
        if parts[2] in groups:
            if n == 3:
                return _dir(["devices"])
            if n == 4 and parts[3] == "devices":
                return _dir([name for name, g in _groups(state).items() if str(g) == parts[2]])
        return None
    if head == "class":
        if n == 1:
            return _dir(["mdev_bus"])
        if parts[1] != "mdev_bus":
            return None
        parents = [p for p, _g in _mdev_parents(state)]
        if n == 2:
            return _dir(parents)
        if n == 3 and parts[2] in parents:
            return _link(f"../../{ROOT}/{parts[2]}")
        return None
    if head == "bus":
        if n == 1:
            return _dir(["mdev", "pci"])
        if parts[1] == "mdev":
            uuids = {v["uuid"]: v["parent"] for p, gpu in _mdev_parents(state) for v in vgpu.vgpu_on(gpu, p)}
            if n == 2:
                return _dir(["devices"])
            if parts[2] != "devices":
                return None
            if n == 3:
                return _dir(sorted(uuids))
            if n == 4 and parts[3] in uuids:
                return _link(f"../../../{ROOT}/{uuids[parts[3]]}/{parts[3]}")
            return None
        if parts[1] == "pci":
            addresses = [a for a, _g, _k in _all_devices(state)]
            if n == 2:
                return _dir(["devices"])
            if parts[2] != "devices":
                return None
            if n == 3:
                return _dir(addresses)
            if n == 4 and parts[3] in addresses:
                return _link(f"../../../{ROOT}/{parts[3]}")
        return None
    if head != "devices":
        return None
    if n == 1:
        return _dir(["pci0000:00"])
    if parts[1] != "pci0000:00":
        return None
    devices = {a: (g, k) for a, g, k in _all_devices(state)}
    if n == 2:
        return _dir(sorted(devices))
    if parts[2] not in devices:
        return None
    return _device(state, parts[2], *devices[parts[2]], parts[3:], state_path)


def _device(state, address, gpu, kind, rest, state_path):
    model = vgpu.model(gpu)
    cat = vgpu.catalogue.find_model(gpu["model"])
    dev_id, vendor = cat["pci_device_id"] >> 16, cat["pci_device_id"] & 0xFFFF
    files = {"vendor": _file(f"0x{vendor:04x}\n"), "device": _file(f"0x{dev_id:04x}\n"),
             "subsystem_vendor": _file(f"0x{vendor:04x}\n"), "subsystem_device": _file("0x0000\n"),
             "class": _file("0x030200\n")}
    sriov = model["layout"] != "mdev"
    groups = _groups(state) if vgpu.host(state)["iommu"] else {}
    if address in groups:
        files["iommu_group"] = _link(f"../../../kernel/iommu_groups/{groups[address]}")
    if kind == "pf" and sriov:
        files["sriov_totalvfs"] = _file(f"{model['total_vfs']}\n")
        files["sriov_offset"] = _file(f"{model['vf_offset']}\n")
        files["sriov_stride"] = _file(f"{model['vf_stride']}\n")
        files["sriov_numvfs"] = Node("file", read=lambda: f"{vgpu.section(gpu)['numvfs']}\n", mode=0o644,
                                     write=_write(state_path, lambda s, t: vgpu.set_numvfs(s, _gpu_in(s, address), t)))
        for i, vf in enumerate(vgpu.vfs(gpu)):
            files[f"virtfn{i}"] = _link(f"../{vf}")
    if kind == "vf":
        files["physfn"] = _link(f"../{vgpu.bdf(gpu)}")
    is_parent = address in vgpu.parents(state, gpu)
    mine = vgpu.vgpu_on(gpu, address) if is_parent else []
    if is_parent:
        files["mdev_supported_types"] = _dir([f"nvidia-{t['type_id']}" for t in model["types"]])
        for v in mine:
            files[v["uuid"]] = _dir(["remove", "mdev_type"] + (["iommu_group"] if v["uuid"] in groups else []))
    if kind == "vf" and model["layout"] == "vfio" and vgpu.host(state)["manager"]:
        files["nvidia"] = _dir(["creatable_vgpu_types", "current_vgpu_type"])
    if not rest:
        return _dir(sorted(files))
    if rest[0] not in files:
        return None
    node = files[rest[0]]
    if len(rest) == 1:
        return node
    if rest[0] == "mdev_supported_types":
        t = next((t for t in model["types"] if f"nvidia-{t['type_id']}" == rest[1]), None)
        if t is None:
            return None
        tfiles = {
            "name": _file(t["mdev_name"] + "\n"), "description": _file(vgpu.description(t) + "\n"),
            "available_instances": _file(f"{vgpu.available_on(state, gpu, address, t)}\n"),
            "device_api": _file("vfio-pci\n"),
            "create": Node("file", read=None, mode=0o200, write=_write(
                state_path, lambda s, text: vgpu.create(s, _gpu_in(s, address), address, t["type_id"], text))),
            "devices": _dir([v["uuid"] for v in mine if v["type_id"] == t["type_id"]]),
        }
        if len(rest) == 2:
            return _dir(sorted(tfiles))
        if rest[2] not in tfiles:
            return None
        if len(rest) == 3:
            return tfiles[rest[2]]
        if rest[2] == "devices" and len(rest) == 4 and rest[3] in tfiles["devices"].children:
            return _link(f"../../../{rest[3]}")
        return None
    if rest[0] == "nvidia" and len(rest) == 2:
        if rest[1] == "creatable_vgpu_types":
            return _file(vgpu.creatable_text(vgpu.creatable(state, gpu, address)))
        if rest[1] == "current_vgpu_type":
            current = mine_vfio = vgpu.vgpu_on(gpu, address)
            text = f"{current[0]['type_id'] if mine_vfio else 0}\n"
            return Node("file", read=lambda: text, mode=0o644, write=_write(
                state_path, lambda s, t: vgpu.set_current_type(s, _gpu_in(s, address), address, t)))
        return None
    v = next((v for v in mine if v["uuid"] == rest[0]), None)
    if v is not None and len(rest) == 2:
        if rest[1] == "remove":
            def do_remove(s, text, uuid=v["uuid"]):
                if text.strip() not in ("1",):
                    if text.strip() == "0":
                        return
                    raise vgpu.KernelError(errno.EINVAL, text.strip())
                g, found = vgpu.find_vgpu(s, uuid)
                if found is None:
                    raise vgpu.KernelError(errno.ENODEV, uuid)
                vgpu.remove(g, found)
            return Node("file", read=None, mode=0o200, write=_write(state_path, do_remove))
        if rest[1] == "mdev_type":
            return _link(f"../mdev_supported_types/nvidia-{v['type_id']}")
        if rest[1] == "iommu_group" and v["uuid"] in groups:
            return _link(f"../../../../kernel/iommu_groups/{groups[v['uuid']]}")
    return None


def make_operations(state_path: str | None):
    import mfusepy

    class SysFS(mfusepy.Operations):
        use_ns = True
        _seen = None
        _state = None
        _nodes_of = None
        _nodes: dict = {}

        def _current(self) -> dict:
            """The state, copied once per change of the file (reads may fill in defaults on the copy)."""
            seen = st.peek(state_path)
            if seen is not self._seen:
                self._seen, self._state = seen, copy.deepcopy(seen)
            return self._state

        def _node(self, path: str) -> Node:
            # A node depends only on the state, so the nodes looked up are kept until the state file changes: the
            # kernel resolves every component of a path again on each open (no entry or attribute caching, as
            # mounted below), which made each open of a deep file cost a dozen tree walks.
            try:
                state = self._current()
                if self._nodes_of is not state or len(self._nodes) > MAX_NODES:
                    self._nodes_of, self._nodes = state, {}
                if path not in self._nodes:
                    self._nodes[path] = lookup(state, [p for p in path.split("/") if p], state_path)
                node = self._nodes[path]
            except st.StateError:
                raise mfusepy.FuseOSError(errno.EIO) from None
            if node is None:
                raise mfusepy.FuseOSError(errno.ENOENT)
            return node

        def getattr(self, path, fh=None):
            node = self._node(path)
            ns = int(_NOW * 1e9)
            base = {"st_uid": 0, "st_gid": 0, "st_atime": ns, "st_mtime": ns, "st_ctime": ns}
            if node.kind == "dir":
                return dict(base, st_mode=stat.S_IFDIR | 0o755, st_nlink=2)
            if node.kind == "link":
                return dict(base, st_mode=stat.S_IFLNK | 0o777, st_nlink=1, st_size=len(node.target))
            return dict(base, st_mode=stat.S_IFREG | node.mode, st_nlink=1, st_size=4096)

        def readdir(self, path, fh):
            node = self._node(path)
            if node.kind != "dir":
                raise mfusepy.FuseOSError(errno.ENOTDIR)
            return [".", "..", *node.children]

        def readlink(self, path):
            node = self._node(path)
            if node.kind != "link":
                raise mfusepy.FuseOSError(errno.EINVAL)
            return node.target

        def open(self, path, flags):
            node = self._node(path)
            if node.kind != "file":
                raise mfusepy.FuseOSError(errno.EISDIR)
            return 0

        def read(self, path, size, offset, fh):
            node = self._node(path)
            if node.read is None:
                raise mfusepy.FuseOSError(errno.EACCES)
            return node.read().encode()[offset:offset + size]

        def truncate(self, path, length, fh=None):
            self._node(path)
            return 0

        def write(self, path, data, offset, fh):
            node = self._node(path)
            if node.write is None:
                raise mfusepy.FuseOSError(errno.EACCES)
            try:
                node.write(bytes(data))
            except vgpu.KernelError as exc:
                raise mfusepy.FuseOSError(exc.errno) from None
            return len(data)

    return SysFS()


def mount(mountpoint: str, state_path: str | None = None, foreground: bool = True) -> None:
    import mfusepy
    mfusepy.FUSE(make_operations(state_path), mountpoint, foreground=foreground, nothreads=True,
                 direct_io=True, attr_timeout=0, entry_timeout=0, negative_timeout=0,
                 allow_other=True, fsname="gpusim-sysfs")
