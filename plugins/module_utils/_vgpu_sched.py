# Copyright (c) gpuops.sharing contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""The vGPU scheduler policy of a KVM host: the ``RmPVMRL`` registry key. Private to this collection: not a public API.

Source: NVIDIA Virtual GPU Software User Guide, "Changing Scheduling Behavior for Time-Sliced vGPUs" and its
"RmPVMRL Registry Key" (https://docs.nvidia.com/vgpu/latest/grid-vgpu-user-guide/index.html), as NVIDIA's
Omniverse deployment guide restates it (https://docs.omniverse.nvidia.com/prod_deployment/prod_deployment/
advance-gpu.html, "RmPVMRL Registry Key"). The key is a Dword:

=============  =========================================================
``0x00``       best effort scheduler (the default)
``0x01``       equal share scheduler, default time slice length
``0x00TT0001`` equal share scheduler, time slice length ``TT``
``0x11``       fixed share scheduler, default time slice length
``0x00TT0011`` fixed share scheduler, time slice length ``TT``
=============  =========================================================

``TT`` is two hex digits, the time slice in milliseconds, ``01`` to ``1E`` (1 to 30 ms); ``00`` is the
scheduler's default length. On Linux KVM the guide sets it for all GPUs with a line
``options nvidia NVreg_RegistryDwords="RmPVMRL=value"`` in a file of ``/etc/modprobe.d`` (it names
``/etc/modprobe.d/nvidia.conf``), which takes effect when the ``nvidia`` module loads again: a host reboot.
The policy applies to time-sliced vGPUs only (MIG-backed vGPUs have their own hardware), and only on the GPU
architectures the guide lists. The per-GPU form (``NVreg_RegistryDwordsPerDevice``) is not written here.

Pure: validation, the value, the file's text and the search for other files that set the same parameter.
"""

from __future__ import annotations

import re

from ansible_collections.gpuops.sharing.plugins.module_utils import _vgpu

MARK = "Managed by gpuops.sharing.vgpu_devices (scheduler): written at every run, do not edit."
DEFAULT_FILE = "/etc/modprobe.d/gpuops-vgpu-scheduler.conf"
POLICIES = {"best_effort": 0x00, "equal_share": 0x01, "fixed_share": 0x11}
MIN_SLICE_MS, MAX_SLICE_MS = 1, 30
SAFE_PATH = re.compile(r"^/[A-Za-z0-9._/-]*\.conf$")
# modprobe treats '-' and '_' in a module name alike (modprobe.d(5)); these are the nvidia module's
# registry parameters, NVreg_RegistryDwords and its per-GPU form.
_PARAM = re.compile(r"(?:^|\s)(NVreg_RegistryDwords(?:PerDevice)?)=")


def rmpvmrl(policy: str, time_slice_ms: int | None = None) -> str:
    """The ``RmPVMRL`` value of the guide's table for ``policy`` and an optional time slice (ms)."""
    mode = POLICIES[policy]
    if time_slice_ms is None:
        return f"0x{mode:02X}"
    return f"0x00{time_slice_ms:02X}00{mode:02X}"


def validate(cfg: dict) -> dict:
    """The ``scheduler`` option, checked: ``{policy, time_slice_ms, file, value}``."""
    policy = cfg.get("policy")
    ms = cfg.get("time_slice_ms")
    path = cfg.get("file") or DEFAULT_FILE
    if policy not in POLICIES:
        raise _vgpu.ConfigError(f"scheduler.policy={policy!r} is not a vGPU scheduler; give one of "
                                f"{', '.join(POLICIES)}")
    if ms is not None:
        if policy == "best_effort":
            raise _vgpu.ConfigError(f"scheduler.time_slice_ms={ms} needs policy equal_share or fixed_share: the "
                                    f"best effort scheduler takes no time slice length (NVIDIA's RmPVMRL key)")
        if isinstance(ms, bool) or not isinstance(ms, int) or not MIN_SLICE_MS <= ms <= MAX_SLICE_MS:
            raise _vgpu.ConfigError(f"scheduler.time_slice_ms={ms!r} is out of range: the time slice is "
                                    f"{MIN_SLICE_MS} to {MAX_SLICE_MS} ms (RmPVMRL's TT, 0x01 to 0x1E); leave it "
                                    f"out for the scheduler's default length")
    path = str(path)
    if not SAFE_PATH.match(path) or ".." in path.split("/") or "//" in path:
        raise _vgpu.ConfigError(f"scheduler.file={path!r} is not valid: give an absolute path of letters, digits, "
                                f"'.', '_', '-' and '/' ending in .conf (modprobe reads only *.conf files), such as "
                                f"{DEFAULT_FILE}")
    return {"policy": policy, "time_slice_ms": ms, "file": path, "value": rmpvmrl(policy, ms)}


def mig_backed_only(sched: dict, type_names: list[str]) -> str | None:
    """A warning when the configuration holds only MIG-backed vGPU types, which the scheduler does not touch."""
    if sched["policy"] == "best_effort" or not type_names:
        return None
    if all(_vgpu.parse_type(name)["g"] for name in type_names):
        return (f"scheduler.policy={sched['policy']} applies to time-sliced vGPUs only; the configuration holds only "
                f"MIG-backed types ({', '.join(sorted(set(type_names)))}), which have their own GPU instances")
    return None


def file_text(sched: dict) -> str:
    slice_text = f"{sched['time_slice_ms']} ms time slice" if sched["time_slice_ms"] else "default time slice"
    what = "best effort" if sched["policy"] == "best_effort" else f"{sched['policy'].replace('_', ' ')}, {slice_text}"
    return (f"# {MARK}\n"
            f"# vGPU scheduler of time-sliced vGPUs: {what} (NVIDIA vGPU user guide, RmPVMRL registry key).\n"
            f"# Applies when the nvidia module loads again (reboot the host).\n"
            f'options nvidia NVreg_RegistryDwords="RmPVMRL={sched["value"]}"\n')


def logical_lines(text: str) -> list[str]:
    """modprobe.d lines: a trailing backslash continues a line, '#' starts a comment line (modprobe.d(5))."""
    out, cur = [], ""
    for raw in text.splitlines():
        if raw.endswith("\\"):
            cur += raw[:-1] + " "
            continue
        cur += raw
        out.append(cur)
        cur = ""
    if cur:
        out.append(cur)
    return [line.strip() for line in out if line.strip() and not line.strip().startswith("#")]


def sets_registry(text: str) -> list[str]:
    """The nvidia registry parameters (``NVreg_RegistryDwords``, ``...PerDevice``) an options file sets."""
    found = []
    for line in logical_lines(text):
        words = line.split(None, 2)
        if len(words) == 3 and words[0] == "options" and words[1].replace("-", "_") == "nvidia":
            found += [m.group(1) for m in _PARAM.finditer(" " + words[2])]
    return sorted(set(found))
