# Copyright (c) gpuops.sharing contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""NVML's MIG calls for gpuops.sharing. Private to this collection: not a public API.

The MIG half of :class:`_nvml.Nvml` (profiles, placements, GPU and compute instances, the MIG
devices MPS daemons serve), as a mix-in.  It never imports pynvml: it calls the binding that
``_nvml.py`` (the only file that imports it) hands over as ``self.lib``, through
``self._call`` / ``self._maybe``, which turn every NVMLError into an ``NvmlError`` naming the GPU.
"""

from __future__ import annotations

import ctypes

from ansible_collections.gpuops.sharing.plugins.module_utils._nvml_base import MIB, Gpu, NvmlError, strip_mig_prefix, text


class MigCalls:
    """MIG reads and writes; mixed into ``_nvml.Nvml``."""

    lib = None  # the pynvml module, set by _nvml.Nvml

    # ------------------------------------------------------------------ MIG reads
    def _placements(self, fn, handle, profile_id, gpu: Gpu, struct=None) -> list[tuple[int, int]] | None:
        count = ctypes.c_uint(0)
        try:
            self._call(fn, handle, profile_id, None, ctypes.byref(count), gpu=gpu, action="read placements")
            array = ((struct or self.lib.c_nvmlGpuInstancePlacement_t) * max(count.value, 1))()
            self._call(fn, handle, profile_id, array, ctypes.byref(count), gpu=gpu, action="read placements")
        except NvmlError as exc:
            if exc.code in ("NOT_SUPPORTED", "FUNCTION_NOT_FOUND"):
                return None
            raise
        return [(int(array[i].start), int(array[i].size)) for i in range(count.value)]

    def _gi_profile_info(self, gpu: Gpu, enum: int):
        """Profile info, v2 (with the driver's name) or, on drivers without it, v1."""
        try:
            return self._call(self.lib.nvmlDeviceGetGpuInstanceProfileInfo, gpu.handle, enum, gpu=gpu)
        except NvmlError as exc:
            if exc.code == "FUNCTION_NOT_FOUND":
                return self._maybe(self.lib.nvmlDeviceGetGpuInstanceProfileInfo, gpu.handle, enum, 1, gpu=gpu)
            if exc.code in ("NOT_SUPPORTED", "INVALID_ARGUMENT"):
                return None
            raise

    def gi_profiles(self, gpu: Gpu, with_capacity: bool = True) -> list[dict]:
        """Every GPU instance profile the driver offers on this GPU.

        Names, ids, slice counts and placements all come from the driver; ``gpu_slices`` is the
        GPU's compute slice count (the most MIG devices it can have); ``gpu_memory_bytes`` the
        GPU's memory, from which mig-parted derives the GB in its profile names.
        """
        gpu_slices = self._maybe(self.lib.nvmlDeviceGetMaxMigDeviceCount, gpu.handle, gpu=gpu, default=0)
        memory = self._maybe(self.lib.nvmlDeviceGetMemoryInfo, gpu.handle, gpu=gpu)
        profiles = []
        for enum in range(self.lib.NVML_GPU_INSTANCE_PROFILE_COUNT):
            info = self._gi_profile_info(gpu, enum)
            if info is None:
                continue
            name = strip_mig_prefix(text(getattr(info, "name", b""))) or \
                "%dg.%dgb" % (info.sliceCount, round(info.memorySizeMB / 1024))
            profile = {
                "id": int(info.id),
                "name": name,
                "slices": int(info.sliceCount),
                "instance_count": int(info.instanceCount),
                "memory_mib": int(info.memorySizeMB),
                "multiprocessor_count": int(info.multiprocessorCount),
                "decoders": int(info.decoderCount),
                "encoders": int(info.encoderCount),
                "jpegs": int(info.jpegCount),
                "ofas": int(info.ofaCount),
                "gpu_slices": gpu_slices,
                "gpu_memory_bytes": int(memory.total) if memory is not None else None,
                "placements": self._placements(self.lib.nvmlDeviceGetGpuInstancePossiblePlacements,
                                               gpu.handle, info.id, gpu) or [],
            }
            if with_capacity:
                profile["remaining"] = self._maybe(self.lib.nvmlDeviceGetGpuInstanceRemainingCapacity,
                                                   gpu.handle, info.id, gpu=gpu)
            profiles.append(profile)
        return profiles

    def ci_profiles(self, gpu: Gpu, gi_handle) -> list[dict]:
        profiles = []
        for enum in range(self.lib.NVML_COMPUTE_INSTANCE_PROFILE_COUNT):
            info = self._maybe(self.lib.nvmlGpuInstanceGetComputeInstanceProfileInfo, gi_handle, enum,
                               self.lib.NVML_COMPUTE_INSTANCE_ENGINE_PROFILE_SHARED, gpu=gpu)
            if info is None:
                continue
            profiles.append({
                "id": int(info.id),
                "name": strip_mig_prefix(text(getattr(info, "name", b""))) or "%dc" % info.sliceCount,
                "slices": int(info.sliceCount),
                "instance_count": int(info.instanceCount),
                "placements": self._placements(self.lib.nvmlGpuInstanceGetComputeInstancePossiblePlacements,
                                               gi_handle, info.id, gpu,
                                               self.lib.c_nvmlComputeInstancePlacement_t) or [],
            })
        return profiles

    def _mig_handles(self, gpu: Gpu):
        """Each MIG device of a GPU in NVML order: (index, handle, GI id, CI id)."""
        count = self._maybe(self.lib.nvmlDeviceGetMaxMigDeviceCount, gpu.handle, gpu=gpu, default=0)
        for i in range(count or 0):
            try:
                mig = self._call(self.lib.nvmlDeviceGetMigDeviceHandleByIndex, gpu.handle, i, gpu=gpu,
                                 action=f"open MIG device {i}")
            except NvmlError as exc:
                if exc.code in ("NOT_FOUND", "INVALID_ARGUMENT"):
                    continue
                raise
            yield (i, mig, int(self._call(self.lib.nvmlDeviceGetGpuInstanceId, mig, gpu=gpu)),
                   int(self._call(self.lib.nvmlDeviceGetComputeInstanceId, mig, gpu=gpu)))

    def mig_uuids(self, gpu: Gpu) -> dict[tuple[int, int], str]:
        """(GI id, CI id) -> MIG device UUID."""
        return {(gi_id, ci_id): text(self._call(self.lib.nvmlDeviceGetUUID, mig, gpu=gpu))
                for _i, mig, gi_id, ci_id in self._mig_handles(gpu)}

    def gpu_instances(self, gpu: Gpu, profiles: list[dict] | None = None, strict: bool = False) -> list[dict]:
        """The GPU instances with their compute instances, sorted by GI id.

        Each GI dict carries its NVML ``handle`` under ``_handle`` (internal use).  ``strict``: a profile
        whose instances the driver will not list raises instead of counting as "no instance of it".
        """
        if profiles is None:
            profiles = self.gi_profiles(gpu, with_capacity=False)
        names = {p["id"]: p["name"] for p in profiles}
        uuids = self.mig_uuids(gpu)
        result = []
        for prof in profiles:
            size = max(prof["instance_count"], 1)
            array = (self.lib.c_nvmlGpuInstance_t * size)()
            count = ctypes.c_uint(size)
            reader = self._call if strict else self._maybe
            extra = {} if strict else {"default": False}
            got = reader(self.lib.nvmlDeviceGetGpuInstances, gpu.handle, prof["id"], array,
                         ctypes.byref(count), gpu=gpu, action=f"list the {prof['name']} GPU instances", **extra)
            if got is False:
                continue
            for i in range(count.value):
                info = self._call(self.lib.nvmlGpuInstanceGetInfo, array[i], gpu=gpu)
                gi = {"id": int(info.id), "profile_id": int(info.profileId), "profile": names.get(info.profileId),
                      "start": int(info.placement.start), "size": int(info.placement.size),
                      "compute_instances": [], "_handle": array[i]}
                gi["compute_instances"] = self._compute_instances(gpu, gi, uuids)
                result.append(gi)
        return sorted(result, key=lambda g: g["id"])

    def _compute_instances(self, gpu: Gpu, gi: dict, uuids: dict) -> list[dict]:
        out = []
        gi["ci_profiles"] = self.ci_profiles(gpu, gi["_handle"])
        for prof in gi["ci_profiles"]:
            size = max(prof["instance_count"], 1)
            array = (self.lib.c_nvmlComputeInstance_t * size)()
            count = ctypes.c_uint(size)
            self._call(self.lib.nvmlGpuInstanceGetComputeInstances, gi["_handle"], prof["id"], array,
                       ctypes.byref(count), gpu=gpu, action="list compute instances")
            for i in range(count.value):
                info = self._call(self.lib.nvmlComputeInstanceGetInfo, array[i], gpu=gpu)
                out.append({"id": int(info.id), "profile_id": int(info.profileId), "profile": prof["name"],
                            "slices": prof["slices"],
                            "start": int(info.placement.start), "size": int(info.placement.size),
                            "mig_uuid": uuids.get((gi["id"], int(info.id))), "_handle": array[i]})
        return sorted(out, key=lambda c: c["id"])

    # ------------------------------------------------------------------ MIG writes
    def set_mig_mode(self, gpu: Gpu, enabled: bool) -> str:
        """Returns the activation status: ``SUCCESS``, ``IN_USE``, ``RESET_REQUIRED``, ..."""
        mode = self.lib.NVML_DEVICE_MIG_ENABLE if enabled else self.lib.NVML_DEVICE_MIG_DISABLE
        status = self._call(self.lib.nvmlDeviceSetMigMode, gpu.handle, mode, gpu=gpu,
                            action=("enable" if enabled else "disable") + " MIG mode")
        if status == self.lib.NVML_SUCCESS:
            return "SUCCESS"
        return self.code_name(status)

    def create_gpu_instance(self, gpu: Gpu, profile: dict, start: int, size: int) -> int:
        placement = self.lib.c_nvmlGpuInstancePlacement_t()
        placement.start, placement.size = start, size
        handle = self._call(self.lib.nvmlDeviceCreateGpuInstanceWithPlacement, gpu.handle, profile["id"],
                            ctypes.byref(placement), gpu=gpu,
                            action=f"create GPU instance {profile['name']} at {start}:{size}")
        return int(self._call(self.lib.nvmlGpuInstanceGetInfo, handle, gpu=gpu).id)

    def _gi_handle(self, gpu: Gpu, gi_id: int):
        return self._call(self.lib.nvmlDeviceGetGpuInstanceById, gpu.handle, gi_id, gpu=gpu,
                          action=f"open GPU instance {gi_id}")

    def ci_profiles_of(self, gpu: Gpu, gi_id: int) -> list[dict]:
        """Compute instance profiles (with the driver's placements) of an existing GPU instance."""
        return self.ci_profiles(gpu, self._gi_handle(gpu, gi_id))

    def create_compute_instance(self, gpu: Gpu, gi_id: int, profile: dict, start: int | None = None,
                                size: int | None = None) -> int:
        gi = self._gi_handle(gpu, gi_id)
        action = f"create compute instance {profile['name']} in GPU instance {gi_id}"
        if start is None:
            handle = self._call(self.lib.nvmlGpuInstanceCreateComputeInstance, gi, profile["id"], gpu=gpu,
                                action=action)
        else:
            placement = self.lib.c_nvmlComputeInstancePlacement_t()
            placement.start, placement.size = start, size
            handle = self._call(self.lib.nvmlGpuInstanceCreateComputeInstanceWithPlacement, gi, profile["id"],
                                ctypes.byref(placement), gpu=gpu, action=action + f" at {start}:{size}")
        return int(self._call(self.lib.nvmlComputeInstanceGetInfo, handle, gpu=gpu).id)

    def destroy_compute_instance(self, gpu: Gpu, gi_id: int, ci_id: int) -> None:
        gi = self._gi_handle(gpu, gi_id)
        ci = self._call(self.lib.nvmlGpuInstanceGetComputeInstanceById, gi, ci_id, gpu=gpu,
                        action=f"open compute instance {ci_id} of GPU instance {gi_id}")
        self._call(self.lib.nvmlComputeInstanceDestroy, ci, gpu=gpu,
                   action=f"destroy compute instance {ci_id} of GPU instance {gi_id}")

    def destroy_gpu_instance(self, gpu: Gpu, gi_id: int) -> None:
        self._call(self.lib.nvmlGpuInstanceDestroy, self._gi_handle(gpu, gi_id), gpu=gpu,
                   action=f"destroy GPU instance {gi_id}")

    # ------------------------------------------------------------------ MPS targets (mps)
    # A read for the mps module and the MPS boot-time helper: each MIG device of a GPU with its
    # memory (an MPS memory limit cannot exceed it) and the placement starts of its GPU and compute
    # instance, which name the device stably across reboots (its MIG UUID changes when the
    # instances are re-created; the placements do not when the layout is re-applied with them).
    def mig_devices(self, gpu: Gpu) -> list[dict]:
        """The MIG devices of a GPU in NVML order; empty without MIG."""
        found = []
        for i, mig, gi_id, ci_id in self._mig_handles(gpu):
            uuid = text(self._call(self.lib.nvmlDeviceGetUUID, mig, gpu=gpu, action=f"read the UUID of MIG device {i}"))
            memory = self._call(self.lib.nvmlDeviceGetMemoryInfo, mig, gpu=gpu, action=f"read the memory of {uuid}")
            gi = self._gi_handle(gpu, gi_id)
            gi_info = self._call(self.lib.nvmlGpuInstanceGetInfo, gi, gpu=gpu)
            ci = self._call(self.lib.nvmlGpuInstanceGetComputeInstanceById, gi, ci_id, gpu=gpu,
                            action=f"open compute instance {ci_id} of GPU instance {gi_id}")
            ci_info = self._call(self.lib.nvmlComputeInstanceGetInfo, ci, gpu=gpu)
            found.append({"uuid": uuid, "gpu_instance_id": gi_id, "compute_instance_id": ci_id,
                          "gpu_instance_start": int(gi_info.placement.start),
                          "compute_instance_start": int(ci_info.placement.start),
                          "memory_total_mib": int(memory.total // MIB)})
        return found
