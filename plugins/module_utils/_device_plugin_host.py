# Copyright (c) gpuops.sharing contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""k8s-device-plugin configs on one host: the GPUs the plugin will see, the config file. Private to this collection.

The side effects of ``gpuops.sharing.device_plugin_config``, as a host object for ``_runner.run``;
every decision is in ``_device_plugin``.  No ansible imports: the module passes ``atomic_move`` in.
"""

from __future__ import annotations

import contextlib
import os
import re
import stat
import tempfile

from ansible_collections.gpuops.sharing.plugins.module_utils import _device_plugin, _mig
from ansible_collections.gpuops.sharing.plugins.module_utils._nvml import HAS_PYNVML, Nvml, NvmlError
from ansible_collections.gpuops.sharing.plugins.module_utils._runner import Op

MAX_FILE_BYTES = 1024 * 1024     # a device plugin config is a few hundred bytes


class FileError(Exception):
    """The destination cannot be read or written safely."""


# --------------------------------------------------------------------------- GPUs

def mig_profile_name(gi_profile: dict, ci_slices: int) -> str:
    """A MIG device's profile as go-nvlib's MigProfile.String() writes it, which the plugin's names use.

    go-nvlib (and mig-parted) put the GPU instance's share of the GPU's memory, rounded up to eighths,
    times the GPU's memory in whole GB in the name (``_mig.mig_parted_gb``); on most boards that is the
    driver's name.  ``<c>c.`` leads when the compute instance uses part of its GPU instance.
    """
    parsed = _mig.PROFILE_RE.match(gi_profile["name"].lower())
    attrs = (parsed.group("attrs") or "") if parsed else ""
    gb = _mig.mig_parted_gb(gi_profile)
    if gb is None:
        gb = int(parsed.group("gb")) if parsed else round(gi_profile["memory_mib"] / 1024)
    g = gi_profile["slices"]
    return (f"{ci_slices}c." if ci_slices != g else "") + f"{g}g.{gb}gb{attrs}"


def inventory(nv: Nvml) -> list[dict]:
    """Each GPU as the plugin sees it: identity, memory, compute capability, MIG devices with their profiles."""
    gpus = []
    for gpu in nv.gpus():
        info = nv.summary(gpu)
        entry = {k: info[k] for k in ("index", "uuid", "name", "memory_total_mib", "memory_used_mib",
                                      "cuda_compute_capability", "mig_enabled")}
        entry["mig_devices"] = []
        if info["mig_enabled"]:
            profiles = nv.gi_profiles(gpu, with_capacity=False)
            by_id = {p["id"]: p for p in profiles}
            for gi in nv.gpu_instances(gpu, profiles):
                for ci in gi["compute_instances"]:
                    entry["mig_devices"].append({
                        "uuid": ci["mig_uuid"], "gpu_instance_id": gi["id"], "compute_instance_id": ci["id"],
                        "profile": mig_profile_name(by_id[gi["profile_id"]], ci["slices"])})
        gpus.append(entry)
    return gpus


# --------------------------------------------------------------------------- the file

def _check_path(path: str) -> None:
    if not os.path.isabs(path):
        raise FileError(f"dest={path!r}: give an absolute path, e.g. /etc/nvidia-device-plugin/config.yaml")
    if re.search(r"[\x00-\x1f]", path):
        raise FileError(f"dest={path!r}: control characters are not allowed in the path")


def read(path: str) -> tuple[bytes | None, int | None]:
    """The file's bytes and mode, or (None, None) when it does not exist; never through a symlink."""
    _check_path(path)
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return None, None
    except OSError as exc:
        raise FileError(f"cannot read {path}: {exc.strerror} (run the task with become: true)") from None
    if stat.S_ISLNK(st.st_mode):
        raise FileError(f"dest={path} is a symbolic link (to {os.readlink(path)}); it is not followed: give the "
                        f"real path of the file")
    if not stat.S_ISREG(st.st_mode):
        raise FileError(f"dest={path} exists and is not a regular file; give the path of the config file")
    if st.st_size > MAX_FILE_BYTES:
        raise FileError(f"dest={path} has {st.st_size} bytes; a device plugin config has far fewer "
                        f"(at most {MAX_FILE_BYTES} are read): is it the right file?")
    flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0)
    try:
        fd = os.open(path, flags)
        with os.fdopen(fd, "rb") as fh:
            data = fh.read(MAX_FILE_BYTES + 1)
    except OSError as exc:
        raise FileError(f"cannot read {path}: {exc.strerror} (run the task with become: true)") from None
    return data, stat.S_IMODE(st.st_mode)


def parent_missing(path: str) -> str | None:
    """The parent folder when it does not exist (or is no folder), else None."""
    parent = os.path.dirname(path)
    try:
        st = os.lstat(parent)
    except FileNotFoundError:
        return parent
    if stat.S_ISLNK(st.st_mode):
        # a link to a folder is the admin's layout: the rename happens inside its target
        return None if os.path.isdir(parent) else parent
    return None if stat.S_ISDIR(st.st_mode) else parent


def write(path: str, data: bytes, mode: int | None, create_parent: bool, atomic_move) -> None:
    """Write through a temporary file in the same folder and ``atomic_move``; never through a symlink."""
    parent = os.path.dirname(path)
    read(path)      # refuses a symlink or special file that appeared since the plan
    try:
        if create_parent:
            os.makedirs(parent, mode=0o755, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".gpuops-", dir=parent)
    except OSError as exc:
        raise FileError(f"cannot write {path}: {exc.strerror} (run the task with become: true)") from None
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.chmod(tmp, 0o644 if mode is None else mode)
        atomic_move(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


def observe_gpus() -> tuple[list[dict] | None, str | None]:
    """The GPUs, or (None, why) where this host has no NVML binding or no NVIDIA driver; other NVML errors raise."""
    if not HAS_PYNVML:
        return None, "nvidia-ml-py (import pynvml) is not installed on this host"
    try:
        with Nvml() as nv:
            return inventory(nv), None
    except NvmlError as exc:
        if exc.code in ("LIBRARY_NOT_FOUND", "DRIVER_NOT_LOADED"):
            return None, exc.message
        raise


class DevicePluginHost:
    """One node's device plugin config for the runner: observe, plan, check, apply, verify."""

    errors = (_device_plugin.ConfigError, FileError, NvmlError)

    def __init__(self, given: dict, min_replica_memory_mib: int, dest: str | None, create_parent: bool,
                 atomic_move):
        self.given = given
        self.min_replica_memory_mib = min_replica_memory_mib
        self.dest = dest
        self.create_parent = create_parent
        self.atomic_move = atomic_move
        self.warnings: list[str] = []
        self.planned: dict = {}

    def observe(self) -> dict:
        gpus, why = observe_gpus()
        state = {"gpus": gpus, "why_no_gpus": why, "before": None, "mode": None, "parent_missing": None}
        if self.dest:
            state["before"], state["mode"] = read(self.dest)
            state["parent_missing"] = parent_missing(self.dest)
        return state

    def plan(self, state: dict) -> list[Op]:
        self.planned = _device_plugin.prepare(self.given, state["gpus"], state["why_no_gpus"],
                                              self.min_replica_memory_mib)
        self.warnings.extend(self.planned["warnings"])
        if not self.dest or state["before"] == self.planned["content"].encode("utf-8"):
            return []
        new = " (new file)" if state["before"] is None else ""
        return [Op("write_file", self.dest, f"write {self.dest}{new}",
                   {"content": self.planned["content"].encode("utf-8"), "mode": state["mode"]})]

    def check(self, state: dict, ops: list[Op]) -> list[str]:
        if ops and state["parent_missing"] and not self.create_parent:
            return [f"dest={self.dest}: the folder {state['parent_missing']} does not exist; create it first or set "
                    f"create_parent: true"]
        return []

    def apply(self, op: Op, state: dict) -> None:
        write(op.target, op.data["content"], op.data["mode"], self.create_parent, self.atomic_move)

    def verify(self, state: dict, ops: list[Op]) -> list[str]:
        problems = []
        for op in ops:
            after, _mode = read(op.target)
            if after != op.data["content"]:
                problems.append(f"{op.target} does not hold the written config after the write")
        return problems

    def result(self, state: dict, ops: list[Op], check_mode: bool) -> dict:
        self.before = state["before"]
        out = {k: self.planned[k] for k in ("config", "content", "strategy", "resources", "resource_names",
                                            "gpus_checked")}
        out["dest"] = self.dest
        return out

    def diff(self, result: dict) -> dict:
        if not self.dest:
            return {"before": "", "after": ""}
        before = getattr(self, "before", None)
        return {"before_header": self.dest, "after_header": self.dest,
                "before": "" if before is None else before.decode("utf-8", "replace"), "after": result["content"]}
