"""vGPU benchmark (`make bench`): vGPUs destroyed over seeded configuration transitions.

For each simulated model (A100 40GB SR-IOV, L40S vendor VFIO, T4 mdev), a fixed seeded suite of
transitions from one valid vgpu-device-manager configuration to another, some with fixed UUIDs: vGPUs
destroyed by the vgpu_devices planner, the minimum possible (an exhaustive oracle over every subset of the
existing vGPUs), and what vgpu-device-manager does (``SetVGPUConfig``: when a GPU's counts differ from the
config it deletes every vGPU of the GPU and creates them all again with new UUIDs).
"""

from __future__ import annotations

import itertools
import os
import random
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
COLLECTIONS = os.path.join(ROOT, ".build", "collections")
if COLLECTIONS not in sys.path:
    sys.path.insert(0, COLLECTIONS)

from ansible_collections.gpuops.sharing.plugins.module_utils import _vgpu, _vgpu_types  # noqa: E402

SEED = 20261203
TRANSITIONS = 200


def gpu_of(model: str, vgpus: list[dict]) -> dict:
    m = _vgpu_types.VGPU_MODELS[model]
    vfs = [f"0000:41:{(m['vf_offset'] + i) // 8:02x}.{(m['vf_offset'] + i) % 8}" for i in range(m["total_vfs"])]
    return {"index": 0, "bdf": "0000:41:00.0", "name": model, "layout": m["layout"],
            "vfs": vfs if m["layout"] != "mdev" else [], "vfs_enabled": True, "vgpus": vgpus, "available": {},
            "types": [{"name": t["name"], "type_id": t["type_id"], "mdev_type": f"nvidia-{t['type_id']}",
                       "max_instances": t["max_instances"], "mig_profile": None}
                      for t in m["types"] if not t["gpu_instance_profile"]],
            "mig_enabled": False, "gpu_instances": {}, "mixed_size": False}


def oracle(vgpus: list[dict], want: dict, fixed: dict) -> int:
    fixed_type = {u: t for t, us in fixed.items() for u in us}
    for size in range(len(vgpus), -1, -1):
        for kept in itertools.combinations(vgpus, size):
            ok = all(fixed_type.get(v["uuid"], v["type_name"]) == v["type_name"] for v in kept)
            for t in {v["type_name"] for v in kept}:
                free = [v for v in kept if v["type_name"] == t and v["uuid"] not in fixed_type]
                ok = ok and len(free) + len(fixed.get(t, [])) <= want.get(t, 0)
            if ok:
                return len(vgpus) - size
    return len(vgpus)


def run() -> list:
    rng = random.Random(SEED)
    counter = itertools.count()

    def new_uuid():
        return "00000000-0000-4000-8000-%012d" % next(counter)

    rows = [["model", "layout", "transitions", "destroyed by vgpu_devices", "minimum (oracle)",
             "destroyed by vgpu-device-manager", "UUIDs kept by vgpu_devices"]]
    for model in _vgpu_types.VGPU_MODELS:
        ours = minimum = theirs = kept_total = 0
        for _transition in range(TRANSITIONS):
            gpu = gpu_of(model, [])
            names = [t["name"] for t in gpu["types"]]
            start_type = rng.choice(names[:4])
            start_max = next(t["max_instances"] for t in gpu["types"] if t["name"] == start_type)
            start = {start_type: rng.randint(1, min(8, start_max))}
            first = _vgpu.plan_gpu(gpu, start, {}, new_uuid)
            vgpus = [{"uuid": o["target"], "type_name": o["type_name"], "type_id": o["type_id"], "parent": o["parent"],
                      "busy": ""} for o in first["ops"] if o["kind"] == "create"]
            gpu = gpu_of(model, vgpus)
            target_type = start_type if rng.random() < 0.6 else rng.choice(names[:4])
            target_max = next(t["max_instances"] for t in gpu["types"] if t["name"] == target_type)
            target = {target_type: rng.randint(1, min(8, target_max))}
            fixed = {}
            if rng.random() < 0.3 and gpu["layout"] != "vfio":      # vendor-VFIO vGPUs have no UUID
                fixed = {target_type: [str(rng.choice(vgpus)["uuid"]) if rng.random() < 0.5 else
                                       "11111111-0000-4000-8000-%012d" % rng.randrange(10 ** 6)]}
                if fixed[target_type][0] in {v["uuid"] for v in vgpus if v["type_name"] != target_type}:
                    fixed = {}
            plan = _vgpu.plan_gpu(gpu, target, fixed, new_uuid)
            ours += len(plan["removed"])
            kept_total += len(plan["kept"])
            minimum += oracle(vgpus, target, fixed)
            counts = {}
            for v in vgpus:
                counts[v["type_name"]] = counts.get(v["type_name"], 0) + 1
            theirs += 0 if counts == target else len(vgpus)
        rows.append([model, _vgpu_types.VGPU_MODELS[model]["layout"], str(TRANSITIONS), str(ours), str(minimum),
                     str(theirs), str(kept_total)])
    return [("vGPUs destroyed over seeded configuration transitions", rows)]


if __name__ == "__main__":
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from run import print_table
    for title, table in run():
        print_table(title, table)
