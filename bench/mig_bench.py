"""MIG benchmarks (`make bench`): printed tables, measured side by side in one run.

1. Per catalogue model: the share of all valid GPU-instance layouts the mig module realises,
   beside creating the instances in listed order without placements (the nvidia-smi
   ``mig -cgi a,b,c -C`` recipe), smallest profiles first and largest first.
2. Over a fixed seeded suite of layout transitions: instances destroyed by the module, the
   minimum possible (exhaustive oracle), and destroy-all-and-recreate (what mig-parted does
   when a GPU does not already match).
3. A no-op run of the module on an 8-GPU host as a ratio to ansible.builtin.ping on the same
   host, alternating runs.
"""

from __future__ import annotations

import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SIMULATOR = os.path.join(ROOT, "simulator")
COLLECTIONS = os.path.join(ROOT, ".build", "collections")
for _p in (SIMULATOR, COLLECTIONS):
    if _p not in sys.path:
        sys.path.insert(0, _p)

import pynvml  # noqa: E402

from ansible_collections.gpuops.sharing.plugins.module_utils import _mig, _mig_config, _mig_host  # noqa: E402
from ansible_collections.gpuops.sharing.plugins.module_utils._nvml import Nvml  # noqa: E402
from ansible_collections.gpuops.sharing.plugins.module_utils._runner import RunError  # noqa: E402
from ansible_collections.gpuops.sharing.plugins.module_utils._runner import run as run_plan  # noqa: E402
from gpusim import catalogue, device, layouts  # noqa: E402
from gpusim import state as gstate  # noqa: E402

MIG_MODELS = [k for k in catalogue.model_keys() if catalogue.MODELS[k].get("mig")]


def _fresh(path: str, model: str, gpus: int = 1) -> None:
    data = device.new_state(model, gpus, host="bench")
    for gpu in data["gpus"]:
        gpu["mig_current"] = gpu["mig_pending"] = 1
    with gstate.locked(path):
        gstate.save(data, path)


def _reload_nvml() -> None:
    pynvml.nvmlLib = None
    pynvml._nvmlGetFunctionPointer_cache.clear()


def _naive(path: str, model: str, order: list[int]) -> bool:
    """nvidia-smi mig -cgi <order> -C: each GI where the driver puts it, then its full CI."""
    _fresh(path, model)
    with gstate.transaction(path) as data:
        try:
            for pid in order:
                gi = device.create_gi(data, 0, pid)
                prof = device.gi_profile(device.get_gpu(data, 0), pid)
                full = next(c for c in prof["compute_instance_profiles"] if c["slices"] == prof["slices"])
                device.create_ci(data, 0, gi["id"], full["id"])
        except device.DriverError:
            return False
    return True


def _entries(devices: dict) -> list[dict]:
    return _mig_config.normalize_entries([{"devices": "all", "mig-enabled": True, "mig-devices": devices}], "bench")


def realised_table(path: str) -> list[list[str]]:
    rows = [["model", "valid layouts", "mig module", "listed order, small first", "listed order, large first"]]
    for model in MIG_MODELS:
        profiles = {p["id"]: p for p in layouts.gi_profiles(model)}
        all_layouts = layouts.all_layouts(model)
        ok = small = large = 0
        for layout in all_layouts:
            by_slices = sorted(layout, key=lambda pid: (profiles[pid]["slices"], profiles[pid]["memory_mib"]))
            small += _naive(path, model, by_slices)
            large += _naive(path, model, list(reversed(by_slices)))
            _fresh(path, model)
            _reload_nvml()
            devices: dict[str, int] = {}
            for pid in layout:
                devices[profiles[pid]["name"]] = devices.get(profiles[pid]["name"], 0) + 1
            with Nvml() as nv:
                try:
                    run_plan(_mig_host.HostMig(nv, None, _entries(devices)), check_mode=False)
                    ok += 1
                except (_mig.MigError, RunError):
                    pass
        n = len(all_layouts)
        rows.append([model, str(n), f"{100 * ok / n:.1f}%", f"{100 * small / n:.1f}%", f"{100 * large / n:.1f}%"])
    return rows


def transitions_table(path: str, count: int = 560, seed: int = 20261125) -> list[list[str]]:
    rng = random.Random(seed)
    totals = {"module": 0, "minimum": 0, "destroy_all": 0}
    at_min = 0
    per_model = {m: [0, 0, 0, 0] for m in MIG_MODELS}
    for i in range(count):
        model = MIG_MODELS[i % len(MIG_MODELS)]
        current = layouts.random_state(model, rng)
        target = layouts.random_target(model, rng)
        _fresh(path, model)
        with gstate.transaction(path) as data:
            layouts.create(data, 0, current)
        _reload_nvml()
        with Nvml() as nv:
            result = run_plan(_mig_host.HostMig(nv, None, _entries(target)), check_mode=False)
            profiles = nv.gi_profiles(nv.gpu(0), with_capacity=False)
        specs = _mig.layout_from_mig_devices(profiles, target)
        minimum = layouts.min_destroyed(model, current, [{"profile_id": s["profile_id"], "cis": s["cis"]}
                                                         for s in specs])
        cur = [{"profile_id": g["profile_id"], "compute_instances": [{"slices": s} for s, _st in g["cis"]]}
               for g in current]
        destroy_all = 0 if _mig.matches(cur, specs) else sum(1 + len(g["cis"]) for g in current)
        totals["module"] += result["destroyed"]
        totals["minimum"] += minimum
        totals["destroy_all"] += destroy_all
        at_min += result["destroyed"] == minimum
        row = per_model[model]
        row[0] += 1
        row[1] += result["destroyed"]
        row[2] += minimum
        row[3] += destroy_all
    rows = [["model", "transitions", "destroyed: mig module", "minimum possible", "destroy all (mig-parted)"]]
    for model, (n, mod, mn, allx) in per_model.items():
        rows.append([model, str(n), str(mod), str(mn), str(allx)])
    rows.append(["all", str(count), str(totals["module"]), str(totals["minimum"]), str(totals["destroy_all"])])
    rows.append(["", "", f"at minimum in {at_min}/{count}", "",
                 f"module/destroy-all = {totals['module'] / max(totals['destroy_all'], 1):.2f}"])
    return rows


def _wrapper(tmp: str, state: str) -> str:
    path = os.path.join(tmp, "python")
    with open(path, "w") as fh:
        fh.write(f"#!/bin/sh\nexport GPUSIM_STATE='{state}'\nexport PYTHONPATH='{SIMULATOR}'\n"
                 f"export PATH='{SIMULATOR}/bin':\"$PATH\"\nexec '{sys.executable}' \"$@\"\n")
    os.chmod(path, 0o755)
    return path


def noop_table(repeats: int = 7, gpus: int = 8) -> list[list[str]]:
    with tempfile.TemporaryDirectory() as tmp:
        state = os.path.join(tmp, "gpusim.json")
        _fresh(state, "A100-SXM4-40GB", gpus)
        python = _wrapper(tmp, state)
        env = {**os.environ, "ANSIBLE_COLLECTIONS_PATH": COLLECTIONS, "ANSIBLE_NOCOLOR": "1",
               "ANSIBLE_LOCALHOST_WARNING": "false", "ANSIBLE_INVENTORY_UNPARSED_WARNING": "false"}
        ansible = os.path.join(os.path.dirname(sys.executable), "ansible")
        base = [ansible, "localhost", "-c", "local", "-e", f"ansible_python_interpreter={python}"]
        config = json.dumps({"config": [{"devices": "all", "mig-enabled": True, "mig-devices": {"1g.5gb": 7}}]})
        mig_cmd = base + ["-m", "gpuops.sharing.mig", "-a", config]
        ping_cmd = base + ["-m", "ansible.builtin.ping"]
        first = subprocess.run(mig_cmd, env=env, capture_output=True, text=True, check=False)
        if first.returncode:
            raise RuntimeError(f"mig run failed: {first.stdout}{first.stderr}")
        times = {"ping": [], "mig": []}
        for _round in range(repeats):
            for name, cmd in (("ping", ping_cmd), ("mig", mig_cmd)):
                start = time.perf_counter()
                done = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
                times[name].append(time.perf_counter() - start)
                if done.returncode or (name == "mig" and '"changed": false' not in done.stdout):
                    raise RuntimeError(f"{name} run failed or changed: {done.stdout}{done.stderr}")
    ping, mig = statistics.median(times["ping"]), statistics.median(times["mig"])
    return [["host", "ansible.builtin.ping (median s)", "gpuops.sharing.mig no-op (median s)", "ratio", "target"],
            [f"{gpus} x A100-SXM4-40GB, 7 MIG devices each", f"{ping:.3f}", f"{mig:.3f}", f"{mig / ping:.2f}x", "<= 2x"]]


def run() -> list[tuple[str, list[list[str]]]]:
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "bench.json")
        old = os.environ.get("GPUSIM_STATE")
        os.environ["GPUSIM_STATE"] = path
        try:
            return [
                ("MIG 1: valid GPU-instance layouts realised from an empty GPU", realised_table(path)),
                ("MIG 2: instances destroyed over seeded layout transitions", transitions_table(path)),
                ("MIG 3: no-op run vs ansible.builtin.ping (same host, alternating runs)", noop_table()),
            ]
        finally:
            if old is None:
                os.environ.pop("GPUSIM_STATE", None)
            else:
                os.environ["GPUSIM_STATE"] = old
