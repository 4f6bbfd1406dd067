# Copyright (c) gpuops.sharing contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""NVIDIA's vGPU type tables per GPU model. Private to this collection: not a public API.

Pure data, no imports beyond the standard library: the module reads it where the driver cannot answer
yet (an SR-IOV GPU before its virtual functions are enabled, the capacity of a vendor-VFIO type), and
gpusim loads this file by path to build its simulated sysfs (``simulator/gpusim/vgpu.py``).

Sources:

* Type names and the most instances of each type on one GPU: NVIDIA Virtual GPU Software User Guide,
  "Virtual GPU Types for Supported GPUs" (https://docs.nvidia.com/vgpu/latest/grid-vgpu-user-guide/),
  as NVIDIA's own vgpu-device-manager restates them one config per type, count = the maximum
  (github.com/NVIDIA/vgpu-device-manager ``examples/config-example.yaml`` @ acb72704ad7c, e.g.
  ``A100X-4C: 10``, ``A100X-1-5C: 7``, ``A100X-1-5CME: 1``, ``L40S-1Q: 32``, ``T4-1Q: 16``); the unit test
  ``test__vgpu_types.py`` checks every row here against that file.
* Framebuffer: the number in the name, in GiB (``A100X-4C`` 4096 MiB; ``-1Q`` 1024 MiB), as the guide's
  tables give it.
* Layout: T4 (Turing) has no SR-IOV: mdev types on the physical function (vGPU guide, "Virtual GPU
  Types"; the P40 ``mdevctl types`` sample in docs/vgpu-host.md has the same shape).  A100 uses SR-IOV
  with mdev on the virtual functions, one vGPU per VF (kata-containers
  docs/use-cases/GPU-passthrough-and-Kata.md, A100 80GB).  L40S with vGPU 17+ on a kernel without mdev
  uses NVIDIA's vendor-specific VFIO framework (kernel/hypeman#327: ``creatable_vgpu_types`` on an L40S,
  vGPU Manager 580.159.01, Ubuntu 24.04).
* Type ids: real ids where a public sample shows them (L40S-1Q 1147: kernel/hypeman#327).  Every other id
  here is the simulator's own numbering and marked so in ``PROVENANCE``: ids change between driver
  branches, the module never takes one as input, and nothing may rely on these.
* Virtual functions: ``sriov_totalvfs`` of A100 and L40S is not in the guide; the tables need one VF per
  vGPU, so the simulator offers as many VFs as the largest instance count (flagged in ``PROVENANCE``).
"""

from __future__ import annotations

# (name suffix after the model prefix, max instances), from config-example.yaml (see above)
_A100X_TYPES = [("4C", 10), ("5C", 8), ("8C", 5), ("10C", 4), ("20C", 2), ("40C", 1),
                ("1-5C", 7), ("1-5CME", 1), ("1-10C", 4), ("2-10C", 3), ("3-20C", 2), ("4-20C", 1), ("7-40C", 1)]
_L40S_TYPES = [("1Q", 32), ("2Q", 24), ("3Q", 16), ("4C", 12), ("4Q", 12), ("6C", 8), ("6Q", 8), ("8C", 6),
               ("8Q", 6), ("12C", 4), ("12Q", 4), ("16C", 3), ("16Q", 3), ("24C", 2), ("24Q", 2), ("48C", 1),
               ("48Q", 1)]
_T4_TYPES = [("1Q", 16), ("2Q", 8), ("4C", 4), ("4Q", 4), ("8C", 2), ("8Q", 2), ("16C", 1), ("16Q", 1)]

# Real type ids seen in public samples (see the docstring); the rest are numbered from the model's base.
_REAL_IDS = {"L40S-1Q": 1147}


def _types(prefix: str, rows: list, base: int, name_prefix: str) -> list[dict]:
    out = []
    for i, (suffix, max_instances) in enumerate(rows):
        name = f"{prefix}-{suffix}"
        parts = suffix.split("-")
        gb = int("".join(ch for ch in parts[-1] if ch.isdigit()))
        out.append({
            "name": name, "mdev_name": f"{name_prefix} {name}", "type_id": _REAL_IDS.get(name, base + i),
            "max_instances": max_instances, "framebuffer_mib": gb * 1024,
            "series": parts[-1].rstrip("ME").lstrip("0123456789")[:1],
            "gpu_instance_profile": (f"{parts[0]}g.{gb}gb" + ("+me" if suffix.endswith("ME") else ""))
            if len(parts) == 2 else None,
        })
    return out


# Model keys are those of _catalogue.MODELS.
VGPU_MODELS = {
    "A100-SXM4-40GB": {"layout": "sriov-mdev", "total_vfs": 10, "vf_offset": 4, "vf_stride": 1,
                       "types": _types("A100X", _A100X_TYPES, 2000, "NVIDIA")},
    "L40S": {"layout": "vfio", "total_vfs": 32, "vf_offset": 2, "vf_stride": 1,
             "types": _types("L40S", _L40S_TYPES, 1147, "NVIDIA")},
    "T4": {"layout": "mdev", "total_vfs": 0, "vf_offset": 0, "vf_stride": 0,
           "types": _types("T4", _T4_TYPES, 3000, "GRID")},
}

PROVENANCE = {
    "*": ["type_id: the simulator's numbering except where _REAL_IDS names a public sample",
          "total_vfs: the largest max_instances of the model's types (sriov_totalvfs not sourced)",
          "vf_offset/vf_stride: A100 virtfn0 at function 4 (kata sample 0000:41:00.4), VFIO hosts at "
          "function 2 (RTX PRO 6000 sample, bigstack-oss/cubecos#312)"],
    "T4": ["mdev_name prefix 'GRID' as older drivers print it (P40 sample, mdevctl/mdevctl#115)"],
}


def vgpu_model(key: str) -> dict | None:
    return VGPU_MODELS.get(key)
