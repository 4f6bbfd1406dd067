"""python -m gpusim: create, inspect and disturb one host's simulated GPUs."""

from __future__ import annotations

import argparse
import json
import os
import sys

from . import catalogue, device, fakelib
from . import state as st


def _fail(message: str, code: int = 2) -> None:
    print(f"gpusim: {message}", file=sys.stderr)
    raise SystemExit(code)


def cmd_models(args) -> None:
    keys = catalogue.model_keys()
    if args.json:
        print(json.dumps([{"key": k, "name": catalogue.MODELS[k]["name"],
                           "mig": bool(catalogue.MODELS[k].get("mig"))} for k in keys], indent=1))
        return
    width = max(len(k) for k in keys)
    for key in keys:
        model = catalogue.MODELS[key]
        mig = model.get("mig")
        profiles = ", ".join(p["name"] for p in mig["gpu_instance_profiles"]) if mig else "no MIG"
        print(f"{key:<{width}}  {model['name']:<32}  {profiles}")


def cmd_init(args) -> None:
    path = st.state_path(args.state)
    if os.path.exists(path) and not args.force:
        _fail(f"state file {path} already exists; pass --force to replace it")
    try:
        data = device.new_state(args.model, args.gpus, host=args.host,
                                passthrough_vm=args.passthrough_vm, driver_version=args.driver_version,
                                profiles_when_mig_off=args.profiles_when_mig_off,
                                vgpu_guest=args.vgpu_guest)
    except KeyError as exc:
        _fail(exc.args[0] if exc.args else str(exc))
    except ValueError as exc:
        _fail(str(exc))
    if args.mig_enabled:
        if not catalogue.find_model(args.model).get("mig"):
            _fail(f"{args.model} does not support MIG")
        for gpu in data["gpus"]:
            gpu["mig_current"] = gpu["mig_pending"] = 1
    with st.locked(path):
        st.save(data, path)
    print(f"gpusim: {path}: {args.gpus} x {data['gpus'][0]['model']}")


def _describe_gpu(gpu: dict) -> list[str]:
    model = device.model_of(gpu)
    lines = [f"GPU {gpu['index']}: {model['name']} ({gpu['uuid']}) bus {gpu['pci_bus_id']}"
             + (" LOST" if gpu.get("lost") else "")]
    mig = model.get("mig")
    mode = "n/a" if not mig else ("enabled" if gpu["mig_current"] else "disabled")
    if mig and gpu["mig_pending"] != gpu["mig_current"]:
        mode += " (pending " + ("enable" if gpu["mig_pending"] else "disable") + ")"
    lines.append(f"  MIG {mode}; compute mode {gpu['compute_mode']}; persistence {gpu['persistence_mode']}")
    for gi in gpu["gpu_instances"]:
        prof = device.gi_profile(gpu, gi["profile_id"])
        lines.append(f"  GI {gi['id']}: {prof['name']} (profile {gi['profile_id']}) at {gi['start']}:{gi['size']}")
        for ci in gi["compute_instances"]:
            cprof = device.ci_profile(prof, ci["profile_id"])
            lines.append(f"    CI {ci['id']}: {cprof['name']} at {ci['start']}:{ci['size']} {ci['uuid']}")
    for proc in gpu["processes"]:
        where = "" if proc.get("gi_id") is None else f" on GI {proc['gi_id']} CI {proc['ci_id']}"
        lines.append(f"  process {proc['pid']} {proc['name']} {proc['used_memory_mib']} MiB{where}")
    return lines


def cmd_show(args) -> None:
    data = st.load(args.state)
    if args.json:
        print(json.dumps(data, indent=1, sort_keys=True))
        return
    print(f"host {data.get('host')}: driver {data['driver_version']}"
          + ("" if data.get("library_present", True) else " (library missing)")
          + (" (pass-through VM)" if data.get("passthrough_vm") else ""))
    for gpu in data["gpus"]:
        print("\n".join(_describe_gpu(gpu)))
    for holder in data.get("holders", []):
        print(f"holder: {holder}")
    for fault in data.get("faults", []):
        print(f"fault: {json.dumps(fault, sort_keys=True)}")


def cmd_reboot(args) -> None:
    with st.transaction(args.state) as data:
        device.reboot(data)
    print("gpusim: rebooted")


def cmd_process(args) -> None:
    with st.transaction(args.state) as data:
        try:
            if args.action == "add":
                device.add_process(data, args.gpu, args.pid, args.name, args.memory, args.gi, args.ci, args.live, args.type)
            elif args.action == "remove" and not device.remove_process(data, args.pid, args.gpu):
                _fail(f"no process {args.pid}")
        except device.DriverError as exc:
            _fail(exc.detail or exc.code)
    if args.action == "list":
        for gpu in st.load(args.state)["gpus"]:
            for proc in gpu["processes"]:
                print(json.dumps({"gpu": gpu["index"], **proc}, sort_keys=True))


def _error_name(text: str) -> str:
    text = text.upper().removeprefix("NVML_ERROR_")
    if text.isdigit():
        text = fakelib.RC_NAME.get(int(text), "")
    if text not in fakelib.RC or text == "SUCCESS":
        _fail(f"unknown NVML error {text!r}; known: {', '.join(k for k in fakelib.RC if k != 'SUCCESS')}")
    return text


def cmd_fault(args) -> None:
    with st.transaction(args.state) as data:
        if args.action == "clear":
            data["faults"] = []
            data["library_present"] = True
            for gpu in data["gpus"]:
                gpu["lost"] = False
        elif args.action == "add":
            if args.library_missing:
                data["library_present"] = False
            elif args.gpu_lost is not None:
                device.get_gpu(data, args.gpu_lost)["lost"] = True
            else:
                if not args.call or not args.error:
                    _fail("fault add needs --call NAME --error CODE (or --library-missing / --gpu-lost I)")
                data.setdefault("faults", []).append({
                    "call": args.call, "error": _error_name(args.error), "nth": args.nth,
                    "times": args.times, "gpu": args.gpu, "seen": 0, "fired": 0})
    if args.action == "list":
        for fault in st.load(args.state).get("faults", []):
            print(json.dumps(fault, sort_keys=True))


def cmd_holder(args) -> None:
    with st.transaction(args.state) as data:
        holders = data.setdefault("holders", [])
        if args.action == "add" and args.name not in holders:
            holders.append(args.name)
        elif args.action == "remove" and args.name in holders:
            holders.remove(args.name)


def cmd_license(args) -> None:
    """vGPU guest licensing (gpusim/license.py)."""
    from . import license as lic
    if args.action == "token":
        print(lic.make_token(args.server))
        return
    if args.action == "unreachable":
        if args.value not in ("on", "off"):
            _fail("license unreachable needs on or off")
        with st.transaction(args.state) as data:
            if not lic.is_guest(data):
                _fail("this host is not a vGPU guest (create it with init --vgpu-guest TYPE)")
            data.setdefault("license", lic.new_license())["unreachable"] = args.value == "on"
        return
    data = st.load(args.state)
    if args.action == "log":
        print("\n".join(lic.log_lines(data, args.lines)))
    elif args.json:
        print(json.dumps({"vgpu_guest": data.get("vgpu_guest"), "license": lic.license_of(data)}, indent=1,
                         sort_keys=True))
    else:
        print("\n".join(lic.describe(data)))


def cmd_mps(args) -> None:
    """MPS (gpusim/mps.py): simulated CUDA client processes of a running control daemon, and the daemons."""
    from . import mps, mps_client
    if args.action == "list":
        for pipe, daemon in sorted(st.load(args.state).get("mps", {}).get("daemons", {}).items()):
            print(json.dumps({"pipe_directory": pipe, **daemon}, sort_keys=True))
        return
    if args.action != "client" or args.what not in ("add", "remove") or args.pid is None:
        _fail("usage: gpusim mps client add|remove --pid PID [--uid UID] [--pipe-directory DIR] | gpusim mps list")
    pipe = args.pipe_directory or os.environ.get("CUDA_MPS_PIPE_DIRECTORY") or mps.DEFAULT_PIPE_DIRECTORY
    request = (f"{mps.INTERNAL_PREFIX}client_add {args.pid} {args.uid} {args.name}" if args.what == "add"
               else f"{mps.INTERNAL_PREFIX}client_remove {args.pid}")
    try:
        reply = mps_client.request(pipe, request + "\n")
    except ConnectionError:
        _fail(f"no MPS control daemon listens in {pipe} ({mps_client.NO_DAEMON})", 1)
    if not reply.strip().isdigit():
        _fail(reply.strip(), 1)
    print(f"gpusim: client {args.pid} {'connected to' if args.what == 'add' else 'left'} MPS server {reply.strip()}")


def cmd_sysfs(args) -> None:
    from . import sysfs
    st.peek(args.state)                       # a missing state is an error now, not an EIO later
    sysfs.mount(args.mountpoint, args.state, foreground=True)


def cmd_vgpu(args) -> None:
    from . import vgpu
    with st.transaction(args.state) as data:
        host = vgpu.host(data)
        if args.action in ("manager", "iommu", "mixed-size"):
            if args.value not in ("on", "off"):
                _fail(f"vgpu {args.action} takes on or off, not {args.value!r}")
            if args.action == "mixed-size":
                for gpu in data["gpus"]:
                    vgpu.section(gpu)["mixed_size"] = args.value == "on"
            else:
                host[args.action] = args.value == "on"
        elif args.action in ("open", "close"):
            _gpu, found = vgpu.find_vgpu(data, (args.value or "").lower())
            if found is None:
                _fail(f"no vGPU {args.value!r}")
            found["open"] = args.action == "open"
        else:
            for gpu in data["gpus"]:
                if vgpu.model(gpu):
                    s = vgpu.section(gpu)
                    print(f"GPU {gpu['index']} {vgpu.bdf(gpu)} {vgpu.model(gpu)['layout']} vfs={s['numvfs']}")
                    for v in s["vgpus"]:
                        t = vgpu.type_by_id(gpu, v["type_id"])
                        print(f"  {v['uuid']} {t['name']} on {v['parent']}" + (" open" if v.get("open") else ""))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="gpusim", description=__doc__)
    parser.add_argument("--state", help="state file (default: $GPUSIM_STATE or /var/lib/gpusim/state.json)")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("models", help="list the GPU models in the catalogue")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_models)

    p = sub.add_parser("init", help="create a host state")
    p.add_argument("--model", required=True, help="catalogue key or product name")
    p.add_argument("--gpus", type=int, default=1)
    p.add_argument("--host", default=os.uname().nodename)
    p.add_argument("--driver-version", default="580.95.05")
    p.add_argument("--passthrough-vm", action="store_true", help="GPU reset not available (VM pass-through)")
    p.add_argument("--profiles-when-mig-off", choices=["refuse", "list"], default="refuse",
                   help="what GPU-instance profile queries answer while MIG mode is disabled: NOT_SUPPORTED "
                        "(refuse, the default; see CATALOGUE_SOURCES.md) or the profiles (list)")
    p.add_argument("--mig-enabled", action="store_true", help="start with MIG mode enabled")
    p.add_argument("--vgpu-guest", metavar="VGPU_TYPE",
                   help="a VM with the vGPU guest driver whose GPUs are vGPUs of this type (A100-4C, A10-24Q)")
    p.add_argument("--force", action="store_true", help="replace an existing state file")
    p.set_defaults(func=cmd_init)

    p = sub.add_parser("show", help="print the state")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_show)

    p = sub.add_parser("reboot", help="what a power cycle does to the GPUs")
    p.set_defaults(func=cmd_reboot)

    p = sub.add_parser("process", help="simulated GPU processes")
    p.add_argument("action", choices=["add", "remove", "list"])
    p.add_argument("--gpu", type=int)
    p.add_argument("--pid", type=int)
    p.add_argument("--name", default="python3")
    p.add_argument("--memory", type=int, default=1024, help="MiB")
    p.add_argument("--gi", type=int)
    p.add_argument("--ci", type=int)
    p.add_argument("--type", default="C", choices=device.PROCESS_TYPES,
                   help="what nvidia-smi's Type column shows (M+C: an MPS client)")
    p.add_argument("--live", action="store_true",
                   help="PID of a real process: the driver forgets it once the process exits")
    p.set_defaults(func=cmd_process)

    p = sub.add_parser("fault", help="make NVML calls fail")
    p.add_argument("action", choices=["add", "clear", "list"])
    p.add_argument("--call", help="NVML C symbol or glob, e.g. nvmlDeviceCreateGpuInstance*")
    p.add_argument("--error", help="NVML error name, e.g. INSUFFICIENT_RESOURCES")
    p.add_argument("--nth", type=int, default=1, help="fail the Nth matching call (1 = the next one)")
    p.add_argument("--times", type=int, default=1, help="fail this many matching calls from the Nth on")
    p.add_argument("--gpu", type=int, help="only calls on this GPU index")
    p.add_argument("--library-missing", action="store_true", help="libnvidia-ml.so.1 cannot be loaded")
    p.add_argument("--gpu-lost", type=int, metavar="INDEX", help="the GPU falls off the bus")
    p.set_defaults(func=cmd_fault)

    p = sub.add_parser("license", help="vGPU guest licensing: show, log, unreachable on|off, token")
    p.add_argument("action", choices=["show", "log", "unreachable", "token"])
    p.add_argument("value", nargs="?", help="on or off (unreachable)")
    p.add_argument("--json", action="store_true", help="show: the license state as JSON")
    p.add_argument("-n", "--lines", type=int, help="log: only the last N lines")
    p.add_argument("--server", default="dls.example.com", help="token: the license server the token names")
    p.set_defaults(func=cmd_license)

    p = sub.add_parser("mps", help="MPS: simulated client processes (client add|remove), daemons (list)")
    p.add_argument("action", choices=["client", "list"])
    p.add_argument("what", nargs="?", choices=["add", "remove"])
    p.add_argument("--pid", type=int, help="client process id")
    p.add_argument("--uid", type=int, default=os.getuid(), help="client user id (default: yours)")
    p.add_argument("--name", default="python3", help="client command name (shown by ps)")
    p.add_argument("--pipe-directory", help="the daemon's CUDA_MPS_PIPE_DIRECTORY (default: $CUDA_MPS_PIPE_DIRECTORY "
                   "or /tmp/nvidia-mps)")
    p.set_defaults(func=cmd_mps)

    p = sub.add_parser("holder", help="clients holding the GPUs open (block resets)")
    p.add_argument("action", choices=["add", "remove"])
    p.add_argument("name")
    p.set_defaults(func=cmd_holder)

    p = sub.add_parser("sysfs", help="serve the vGPU host's sysfs through FUSE (mount DIR, in the foreground)")
    p.add_argument("action", choices=["mount"])
    p.add_argument("mountpoint")
    p.set_defaults(func=cmd_sysfs)

    p = sub.add_parser("vgpu", help="vGPU host: show, manager on|off, iommu on|off, mixed-size on|off, open|close UUID")
    p.add_argument("action", choices=["show", "manager", "iommu", "mixed-size", "open", "close"])
    p.add_argument("value", nargs="?")
    p.set_defaults(func=cmd_vgpu)
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "process" and args.action in ("add", "remove") and args.pid is None:
        _fail("process add/remove needs --pid")
    if args.command == "process" and args.action == "add" and args.gpu is None:
        _fail("process add needs --gpu")
    try:
        args.func(args)
    except st.StateError as exc:
        _fail(str(exc))
    except device.DriverError as exc:
        _fail(exc.detail or exc.code)
    return 0
