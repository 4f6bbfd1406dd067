"""The fake ``nvidia-smi``: the subset people and our docs use, shaped like the real tool.

Supported: ``-L``; ``-q [-i ID]`` (``-i`` takes an index, a UUID or a PCI bus id); ``--query-gpu=FIELDS --format=csv[,noheader][,nounits]``;
``-mig 0|1 [-i ID]``; ``-r|--gpu-reset -i ID``; ``-pm 0|1``, ``-c MODE`` (with ``-i``);
``mig -lgip|-lgipp|-lgi|-lci|-lcip [-gi ID] [-i ID]``; ``mig -cgi LIST [-C]``, ``mig -cci [LIST] -gi ID``,
``mig -dci [-gi ID] [-ci ID]``, ``mig -dgi [-gi ID]``.
Exit codes follow nvidia-smi(1): 0 success, 2 bad argument, 3 not supported,
6 not found, 9 driver not loaded, 12 NVML library not found, 15 GPU lost,
255 other errors.
"""

from __future__ import annotations

import sys
import time

from . import device as dev
from . import fakelib
from . import state as st

NO_DRIVER = ("NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver. "
             "Make sure that the latest NVIDIA driver is installed and running.\n")
EXIT = {"INVALID_ARGUMENT": 2, "NOT_SUPPORTED": 3, "NO_PERMISSION": 4, "NOT_FOUND": 6,
        "DRIVER_NOT_LOADED": 9, "LIBRARY_NOT_FOUND": 12, "GPU_IS_LOST": 15}
COMPUTE_MODES = {0: "Default", 1: "Exclusive_Thread", 2: "Prohibited", 3: "Exclusive_Process"}
COMPUTE_MODE_ARGS = {"0": 0, "DEFAULT": 0, "1": 1, "EXCLUSIVE_THREAD": 1, "2": 2, "PROHIBITED": 2,
                     "3": 3, "EXCLUSIVE_PROCESS": 3}


class SmiExit(Exception):
    def __init__(self, code: int, message: str = ""):
        super().__init__(message)
        self.code = code
        self.message = message


def _err_text(code: str) -> str:
    return fakelib.ERROR_STRINGS.get(code, code.replace("_", " ").title().encode()).decode()


def _onoff(value: int) -> str:
    return "Enabled" if value else "Disabled"


def _bus_key(text: str) -> str | None:
    """A PCI bus id as nvidia-smi -i takes it (domain:bus:device.function, the domain optional or of
    4 or 8 hex digits), normalised to the 8-digit form the driver prints; None if it is not one."""
    parts = text.strip().upper().split(":")
    if len(parts) == 2:
        parts = ["0"] + parts
    if len(parts) != 3 or "." not in parts[2]:
        return None
    dev, _dot, fn = parts[2].partition(".")
    try:
        domain, bus, dev_n, fn_n = (int(x, 16) for x in (parts[0], parts[1], dev, fn))
    except ValueError:
        return None
    return "%08X:%02X:%02X.%X" % (domain, bus, dev_n, fn_n)


def _select(state: dict, ident: str | None) -> list[dict]:
    """``-i``: a GPU index, a GPU UUID or a PCI bus id (nvidia-smi(1) "-i, --id=ID"), or a
    comma-separated list of them.  An index selects that GPU only (``-i 0`` used to select every GPU
    whose bus id ended in 0 as well)."""
    if ident is None:
        return list(state["gpus"])
    chosen = []
    for part in ident.split(","):
        part = part.strip()
        bus = _bus_key(part)
        match = [g for g in state["gpus"]
                 if (part.isdigit() and g["index"] == int(part)) or g["uuid"] == part
                 or (bus is not None and _bus_key(g["pci_bus_id"]) == bus)]
        if not match:
            raise SmiExit(6, f"No devices were found matching {part!r}\n" if not part.isdigit()
                          else f"Invalid GPU index or UUID: {part}\n")
        chosen.extend(g for g in match if g not in chosen)
    return chosen


def _live(gpu: dict) -> dict:
    if gpu.get("lost"):
        raise SmiExit(15, f"Unable to determine the device handle for GPU{gpu['pci_bus_id']}: GPU is lost. "
                          f"Reboot the system to recover this GPU\n")
    return gpu


# ---------------------------------------------------------------------- -L and -q

def list_gpus(state: dict) -> str:
    out = []
    for gpu in state["gpus"]:
        _live(gpu)
        out.append(f"GPU {gpu['index']}: {dev.model_of(gpu)['name']} (UUID: {gpu['uuid']})")
        if gpu["mig_current"]:
            for i, (gi, ci) in enumerate(dev.mig_devices(gpu)):
                gi_prof = dev.gi_profile(gpu, gi["profile_id"])
                ci_prof = dev.ci_profile(gi_prof, ci["profile_id"])
                name = ci_prof["name"] if ci_prof["slices"] != gi_prof["slices"] else gi_prof["name"]
                # "  MIG 3g.40gb     Device  0: (UUID: MIG-...)" (NVIDIA/nvidia-container-toolkit#203)
                out.append(f"  MIG {name:<11} Device {i:>2}: (UUID: {ci['uuid']})")
    return "\n".join(out) + "\n"


def _query_block(state: dict, gpu: dict) -> list[str]:
    model = dev.model_of(gpu)
    total = model["memory_total_mib"]
    used = sum(p.get("used_memory_mib", 0) for p in dev.live_processes(gpu))
    domain, bus, rest = gpu["pci_bus_id"].split(":")

    def kv(key, value, ind=4):
        # "    Product Name                          : NVIDIA H200": every key, top level or nested,
        # is padded so that its colon stands at index 42, as the top-level keys below are
        return f"{' ' * ind}{key:<{42 - ind}}: {value}"

    lines = [f"GPU {gpu['pci_bus_id']}",
             kv("Product Name", model["name"]),
             kv("Product Brand", "NVIDIA"),
             kv("Product Architecture", model["architecture"].capitalize()),
             kv("Persistence Mode", _onoff(gpu["persistence_mode"]))]
    if model.get("mig"):
        lines += ["    MIG Mode", kv("Current", _onoff(gpu["mig_current"]), 8),
                  kv("Pending", _onoff(gpu["mig_pending"]), 8)]
    else:
        lines += ["    MIG Mode", kv("Current", "N/A", 8), kv("Pending", "N/A", 8)]
    lines += [kv("Serial Number", gpu["serial"]), kv("GPU UUID", gpu["uuid"]),
              kv("Minor Number", gpu["minor_number"]),
              "    PCI", kv("Bus", "0x" + bus, 8), kv("Device", "0x" + rest.split(".")[0], 8),
              kv("Domain", "0x" + domain[-4:], 8), kv("Device Id", "0x%08X" % model["pci_device_id"], 8),
              kv("Bus Id", gpu["pci_bus_id"], 8),
              kv("Sub System Id", "0x%08X" % (model.get("pci_subsystem_id") or 0), 8),
              "    FB Memory Usage", kv("Total", f"{total} MiB", 8), kv("Reserved", "0 MiB", 8),
              kv("Used", f"{used} MiB", 8), kv("Free", f"{total - used} MiB", 8),
              kv("Compute Mode", COMPUTE_MODES[gpu["compute_mode"]])]
    lines += vgpu_license_lines(state, kv)
    extra = state.get("query_extra", {}).get(str(gpu["index"]))
    if extra:
        lines += extra
    if dev.live_processes(gpu):
        lines.append("    Processes")
        for proc in dev.live_processes(gpu):
            lines += [kv("GPU instance ID", "N/A" if proc.get("gi_id") is None else proc["gi_id"], 8),
                      kv("Compute instance ID", "N/A" if proc.get("ci_id") is None else proc["ci_id"], 8),
                      kv("Process ID", proc["pid"], 8), kv("Type", "C", 8), kv("Name", proc["name"], 8),
                      kv("Used GPU Memory", f"{proc['used_memory_mib']} MiB", 8)]
    else:
        lines.append(kv("Processes", "None"))
    return lines


def vgpu_license_lines(state: dict, kv) -> list[str]:
    """vGPU guest (gpusim/license.py): the "GPU Virtualization Mode" and "vGPU Software Licensed
    Product" sections as a guest's nvidia-smi -q prints them, e.g. "License Status : Licensed
    (Expiry: 2022-5-27 0:8:28 GMT)" or "Unlicensed (Unrestricted)"."""
    guest = state.get("vgpu_guest")
    if not guest:
        return []
    from . import license as lic
    current = lic.license_of(state)
    status = f"Licensed (Expiry: {lic.expiry_text(current['expiry'])})" if current.get("licensed") \
        else "Unlicensed (Unrestricted)"
    return ["    GPU Virtualization Mode", kv("Virtualization Mode", "VGPU", 8), kv("Host VGPU Mode", "N/A", 8),
            "    vGPU Software Licensed Product", kv("Product Name", guest["product"], 8),
            kv("License Status", status, 8)]


def query(state: dict, gpus: list[dict]) -> str:
    cuda = state.get("cuda_driver_version", 13000)
    lines = ["", "==============NVSMI LOG==============", "",
             f"{'Timestamp':<42}: {time.strftime('%a %b %d %H:%M:%S %Y')}",
             f"{'Driver Version':<42}: {state['driver_version']}",
             f"{'CUDA Version':<42}: {cuda // 1000}.{(cuda % 1000) // 10}", "",
             f"{'Attached GPUs':<42}: {len(state['gpus'])}"]
    for gpu in gpus:
        lines += _query_block(state, _live(gpu)) + [""]
    return "\n".join(lines) + "\n"


QUERY_FIELDS = {
    "index": (None, lambda s, g: g["index"]),
    "count": (None, lambda s, g: len(s["gpus"])),
    "name": (None, lambda s, g: dev.model_of(g)["name"]),
    "gpu_name": (None, lambda s, g: dev.model_of(g)["name"]),
    "uuid": (None, lambda s, g: g["uuid"]),
    "gpu_uuid": (None, lambda s, g: g["uuid"]),
    "serial": (None, lambda s, g: g["serial"]),
    "driver_version": (None, lambda s, g: s["driver_version"]),
    "pci.bus_id": (None, lambda s, g: g["pci_bus_id"]),
    "gpu_bus_id": (None, lambda s, g: g["pci_bus_id"]),
    "pci.device_id": (None, lambda s, g: "0x%08X" % dev.model_of(g)["pci_device_id"]),
    "memory.total": ("MiB", lambda s, g: dev.model_of(g)["memory_total_mib"]),
    "memory.used": ("MiB", lambda s, g: sum(p.get("used_memory_mib", 0) for p in dev.live_processes(g))),
    "memory.free": ("MiB", lambda s, g: dev.model_of(g)["memory_total_mib"]
                    - sum(p.get("used_memory_mib", 0) for p in dev.live_processes(g))),
    "compute_mode": (None, lambda s, g: COMPUTE_MODES[g["compute_mode"]]),
    "persistence_mode": (None, lambda s, g: _onoff(g["persistence_mode"])),
    "mig.mode.current": (None, lambda s, g: _onoff(g["mig_current"]) if dev.model_of(g).get("mig") else "[N/A]"),
    "mig.mode.pending": (None, lambda s, g: _onoff(g["mig_pending"]) if dev.model_of(g).get("mig") else "[N/A]"),
}


def query_gpu(state: dict, gpus: list[dict], fields: str, fmt: str) -> str:
    opts = [o.strip() for o in fmt.split(",")]
    if not opts or opts[0] != "csv":
        raise SmiExit(2, f'"{fmt}" is not a valid format.\n')
    names = [f.strip() for f in fields.split(",") if f.strip()]
    for name in names:
        if name not in QUERY_FIELDS:
            raise SmiExit(2, f'Field "{name}" is not a valid field to query.\n\n')
    out = []
    if "noheader" not in opts:
        out.append(", ".join(name + (f" [{QUERY_FIELDS[name][0]}]" if QUERY_FIELDS[name][0] else "")
                             for name in names))
    for gpu in gpus:
        _live(gpu)
        row = []
        for name in names:
            unit, fn = QUERY_FIELDS[name]
            value = fn(state, gpu)
            row.append(f"{value}" if not unit or "nounits" in opts else f"{value} {unit}")
        out.append(", ".join(row))
    return "\n".join(out) + "\n"


# ---------------------------------------------------------------------- mig listings

def _mig_gpus(gpus: list[dict]) -> list[dict]:
    chosen = [g for g in gpus if dev.model_of(_live(g)).get("mig") and g["mig_current"]]
    if not chosen:
        raise SmiExit(6, "No MIG-enabled devices found.\n")
    return chosen


def list_gi_profiles(gpus: list[dict]) -> str:
    """``nvidia-smi mig -lgip``, column for column as NVIDIA's own pastes (mig-parted PR #187 on B200,
    gpu-operator PR #900 on H100 NVL, both 79 columns wide).  A driver with longer profile names
    (``1g.24gb+me.all``, bigstack-oss/cubecos#312) widens the Name column, and the frame to 81."""
    chosen = _mig_gpus(gpus)
    longest = max(len(p["name"]) for g in chosen for p in dev.gi_profiles(g))
    extra = max(0, longest + 1 - 13)
    width = 77 + extra
    rule = "+" + "-" * width + "+"

    def widen(line: str) -> str:
        return line[:12] + " " * extra + line[12:]

    out = [rule, "| GPU instance profiles:".ljust(width + 1) + "|",
           widen("| GPU   Name             ID    Instances   Memory     P2P    SM    DEC   ENC  |"),
           widen("|                              Free/Total   GiB              CE    JPEG  OFA  |"),
           "|" + "=" * width + "|"]
    for gpu in chosen:
        for prof in dev.gi_profiles(gpu):
            free = dev.gi_remaining_capacity(gpu, prof)
            mem = "%.2f" % (prof["memory_mib"] / 1024)
            p2p = "Yes" if prof.get("p2p") else "No"
            out.append(f"|{gpu['index']:>4}  MIG {prof['name']:<{13 + extra}}{prof['id']:>3}{free:>6}/"
                       f"{prof['instance_count']:<3}{mem:>11}      {p2p:<3}{prof.get('multiprocessor_count') or 0:>6}"
                       f"{prof.get('decoders') or 0:>6}{prof.get('encoders') or 0:>6}   |")
            out.append(f"|{'':{56 + extra}}{prof.get('copy_engines') or 0:>6}{prof.get('jpegs') or 0:>6}"
                       f"{prof.get('ofas') or 0:>6}   |")
            out.append(rule)
    return "\n".join(out) + "\n"


def list_gi_placements(gpus: list[dict]) -> str:
    out = []
    for gpu in _mig_gpus(gpus):
        for prof in dev.gi_profiles(gpu):
            starts = ",".join(str(p[0]) for p in prof["placements"])
            sizes = {p[1] for p in prof["placements"]}
            label = "Placements" if len(prof["placements"]) > 1 else "Placement "
            out.append(f"GPU {gpu['index']:>2} Profile ID {prof['id']:>2} {label}: {{{starts}}}:{min(sizes)}")
    return "\n".join(out) + "\n"


def list_gis(gpus: list[dict]) -> str:
    """``nvidia-smi mig -lgi`` as real output prints it (NVIDIA/DCGM#138): per GPU, rows grouped by
    profile in the order -lgip lists the profiles, each row followed by a rule."""
    rule = "+" + "-" * 55 + "+"
    rows = []
    for gpu in _mig_gpus(gpus):
        order = {p["id"]: i for i, p in enumerate(dev.gi_profiles(gpu))}
        for gi in sorted(gpu["gpu_instances"], key=lambda g: (order.get(g["profile_id"], 99), g["id"])):
            prof = dev.gi_profile(gpu, gi["profile_id"])
            rows += [f"|{gpu['index']:>4}  MIG {prof['name']:<13}{gi['profile_id']:>5}{gi['id']:>9}"
                     f"{'':10}{str(gi['start']) + ':' + str(gi['size']):<8}|", rule]
    if not rows:
        raise SmiExit(6, "No GPU instances found: Not Found\n")
    return "\n".join([rule, "| GPU instances:" + " " * 40 + "|",
                      "| GPU   Name             Profile  Instance   Placement  |",
                      "|                          ID       ID       Start:Size |",
                      "|" + "=" * 55 + "|"] + rows) + "\n"


def list_cis(gpus: list[dict]) -> str:
    rows = []
    for gpu in _mig_gpus(gpus):
        for gi, ci in dev.mig_devices(gpu):
            gi_prof = dev.gi_profile(gpu, gi["profile_id"])
            name = dev.ci_profile(gi_prof, ci["profile_id"])["name"]
            rows.append(f"| {gpu['index']:>3}   {gi['id']:>4}       MIG {name:<16} {ci['profile_id']:>3}"
                        f"       {ci['id']:>3}          {ci['start']}:{ci['size']:<5}  |")
    if not rows:
        raise SmiExit(6, "No compute instances found: Not Found\n")
    rule = "+" + "-" * 72 + "+"
    return "\n".join([rule, "| Compute instances:" + " " * 53 + "|",
                      "| GPU     GPU       Name                 Profile   Instance   Placement  |",
                      "|       Instance                            ID        ID       Start:Size |",
                      "|         ID                                                             |",
                      "|" + "=" * 72 + "|"] + rows + [rule]) + "\n"


def list_ci_profiles(gpus: list[dict], gi_ids: list[int]) -> str:
    """``nvidia-smi mig -lcip [-gi ID]``.  The frame and the first header lines are NVIDIA's (an H100's
    ``-lcip -gi 0`` in NVIDIA/gpu-operator#622); the rows follow the MIG User Guide's A100 example
    (the default profile marked ``*``).  Only the header is checked against a real sample: no
    complete real -lcip could be read from here."""
    width = 86
    rule = "+" + "-" * width + "+"
    out = [rule, "| Compute instance profiles:".ljust(width + 1) + "|",
           "| GPU     GPU       Name             Profile  Instances   Exclusive       Shared       |",
           "|       Instance                       ID     Free/Total     SM       DEC   ENC   OFA  |",
           "|         ID                                                          CE    JPEG       |",
           "|" + "=" * width + "|"]
    rows = 0
    for gpu in _mig_gpus(gpus):
        for gi in gpu["gpu_instances"]:
            if gi_ids and gi["id"] not in gi_ids:
                continue
            gi_prof = dev.gi_profile(gpu, gi["profile_id"])
            for prof in gi_prof["compute_instance_profiles"]:
                used = sum(1 for c in gi["compute_instances"] if c["profile_id"] == prof["id"])
                free = len(list(dev.ci_free_placements(gi, prof))[:max(0, prof["instance_count"] - used)])
                pid = f"{prof['id']}{'*' if prof.get('default') else ' '}"
                out.append(f"|{gpu['index']:>4}{gi['id']:>7}       MIG {prof['name']:<13}{pid:>5}"
                           f"{free:>6}/{prof['instance_count']:<3}{prof.get('multiprocessor_count') or 0:>11}"
                           f"{gi_prof.get('decoders') or 0:>10}{gi_prof.get('encoders') or 0:>6}"
                           f"{gi_prof.get('ofas') or 0:>6}   |")
                out.append(f"|{'':64}{gi_prof.get('copy_engines') or 0:>6}{gi_prof.get('jpegs') or 0:>8}{'':8}|")
                out.append(rule)
                rows += 1
    if not rows:
        raise SmiExit(6, "No GPU instances found: Not Found\n")
    return "\n".join(out) + "\n"


# ---------------------------------------------------------------------- changes

def _resolve_gi_profile(gpu: dict, token: str) -> dict:
    token = token.strip()
    for prof in dev.gi_profiles(gpu):
        if token == str(prof["id"]) or token == prof["name"] or token == "MIG " + prof["name"]:
            return prof
    raise SmiExit(2, f"Invalid profile ID/name {token!r} for GPU {gpu['index']}\n")


def _default_ci(gi_prof: dict) -> dict:
    """The CI profile ``-C`` / a bare ``-cci`` creates: the GI's default (``*`` in ``-lcip``); on the
    1g GI with two memory slices that is ID 7 ("-cgi 15 -C ... using profile MIG 1g.20gb (ID 7)")."""
    return next(c for c in gi_prof["compute_instance_profiles"] if c.get("default"))


def create_gis(path: str, gpus: list[dict], spec: str, with_ci: bool) -> str:
    out, rc = [], 0
    for gpu in _mig_gpus(gpus):
        for token in spec.split(","):
            prof = _resolve_gi_profile(gpu, token)
            try:
                with st.transaction(path) as state:
                    gi = dev.create_gi(state, gpu["index"], prof["id"])
                    out.append(f"Successfully created GPU instance ID {gi['id']:>2} on GPU {gpu['index']:>2} "
                               f"using profile MIG {prof['name']} (ID {prof['id']:>2})")
                    if with_ci:
                        ci_prof = _default_ci(prof)
                        ci = dev.create_ci(state, gpu["index"], gi["id"], ci_prof["id"])
                        out.append(f"Successfully created compute instance ID {ci['id']:>2} on GPU {gpu['index']:>2} "
                                   f"GPU instance ID {gi['id']:>2} using profile MIG {ci_prof['name']} "
                                   f"(ID {ci_prof['id']:>2})")
            except dev.DriverError as exc:
                # the MIG guide's "-cgi 19,19,14,9" example: the refusal, then a closing line
                out.append(f"Unable to create a GPU instance on GPU {gpu['index']:>2} using profile "
                           f"{prof['id']}: {_err_text(exc.code)}")
                out.append(f"Failed to create GPU instances: {_err_text(exc.code)}")
                rc = EXIT.get(exc.code, 255)
                break
    raise SmiExit(rc, "\n".join(out) + "\n")


def create_cis(path: str, gpus: list[dict], gi_ids: list[int], spec: str | None) -> str:
    out, rc = [], 0
    for gpu in _mig_gpus(gpus):
        for gi in [g for g in gpu["gpu_instances"] if not gi_ids or g["id"] in gi_ids]:
            gi_prof = dev.gi_profile(gpu, gi["profile_id"])
            tokens = spec.split(",") if spec else [None]
            for token in tokens:
                if token is None:
                    ci_prof = _default_ci(gi_prof)
                else:
                    ci_prof = next((c for c in gi_prof["compute_instance_profiles"]
                                    if token.strip() in (str(c["id"]), c["name"])), None)
                    if ci_prof is None:
                        raise SmiExit(2, f"Invalid compute instance profile {token!r}\n")
                try:
                    with st.transaction(path) as state:
                        ci = dev.create_ci(state, gpu["index"], gi["id"], ci_prof["id"])
                    out.append(f"Successfully created compute instance ID {ci['id']:>2} on GPU {gpu['index']:>2} "
                               f"GPU instance ID {gi['id']:>2} using profile MIG {ci_prof['name']} "
                               f"(ID {ci_prof['id']:>2})")
                except dev.DriverError as exc:
                    out.append(f"Unable to create a compute instance on GPU {gpu['index']:>2} GPU instance ID "
                               f"{gi['id']:>2} using profile {ci_prof['id']}: {_err_text(exc.code)}")
                    rc = EXIT.get(exc.code, 255)
    raise SmiExit(rc, "\n".join(out) + "\n")


def destroy(path: str, gpus: list[dict], what: str, gi_ids: list[int], ci_ids: list[int]) -> str:
    out, rc = [], 0
    for gpu in _mig_gpus(gpus):
        for gi in [g for g in gpu["gpu_instances"] if not gi_ids or g["id"] in gi_ids]:
            targets = [c for c in gi["compute_instances"] if not ci_ids or c["id"] in ci_ids] if what == "ci" else [None]
            for ci in targets:
                try:
                    with st.transaction(path) as state:
                        if what == "ci":
                            dev.destroy_ci(state, gpu["index"], gi["id"], ci["id"])
                        else:
                            dev.destroy_gi(state, gpu["index"], gi["id"])
                    if what == "ci":
                        out.append(f"Successfully destroyed compute instance ID {ci['id']:>2} from GPU "
                                   f"{gpu['index']:>2} GPU instance ID {gi['id']:>2}")
                    else:
                        out.append(f"Successfully destroyed GPU instance ID {gi['id']:>2} from GPU {gpu['index']:>2}")
                except dev.DriverError as exc:
                    target = (f"compute instance ID {ci['id']:>2} from GPU {gpu['index']:>2} GPU instance ID "
                              f"{gi['id']:>2}" if what == "ci" else
                              f"GPU instance ID {gi['id']:>2} from GPU {gpu['index']:>2}")
                    out.append(f"Unable to destroy {target}: {_err_text(exc.code)}")
                    rc = EXIT.get(exc.code, 255)
    if not out:
        raise SmiExit(6, "No " + ("compute" if what == "ci" else "GPU") + " instances found: Not Found\n")
    raise SmiExit(rc, "\n".join(out) + "\n")


def set_mig(path: str, gpus: list[dict], mode: int) -> str:
    out, rc = [], 0
    verb = "Enabled" if mode else "Disabled"
    for gpu in gpus:
        bus = gpu["pci_bus_id"]
        try:
            with st.transaction(path) as state:
                status = dev.set_mig_mode(state, _live(gpu)["index"], mode)
        except dev.DriverError as exc:
            out.append(f"Unable to {'enable' if mode else 'disable'} MIG Mode for GPU {bus}: {_err_text(exc.code)}")
            rc = EXIT.get(exc.code, 255)
            continue
        if status == "SUCCESS":
            out.append(f"{verb} MIG Mode for GPU {bus}")
        else:
            pending = "enable" if mode else "disable"
            out.append(f"Warning: MIG mode is in pending {pending} state for GPU {bus}:{_err_text(status)}")
            if status == "IN_USE":
                out.append(f"{bus} is currently being used by one or more other processes (e.g. CUDA application "
                           "or a monitoring application such as another instance of nvidia-smi). Please first kill "
                           "all processes using the device and retry the command or reboot the system to make MIG "
                           "mode effective.")
            else:
                out.append("Reboot the system (VM) to make MIG mode effective.")
    out.append("All done.")
    raise SmiExit(rc, "\n".join(out) + "\n")


def reset(path: str, gpus: list[dict]) -> str:
    out, rc = [], 0
    for gpu in gpus:
        bus = gpu["pci_bus_id"]
        try:
            with st.transaction(path) as state:
                dev.reset_gpu(state, _live(gpu)["index"])
            out.append(f"GPU {bus} was successfully reset.")
        except dev.DriverError as exc:
            rc = EXIT.get(exc.code, 255)
            if exc.code == "IN_USE":
                out.append(f"GPU {bus} is currently in use by another process.\n\n1 device is currently being used "
                           "by one or more other processes (e.g., Fabric Manager, CUDA application, graphics "
                           "application such as an X server, or a monitoring application such as another instance "
                           "of nvidia-smi). Please first kill all processes using this device and all compute "
                           f"applications running in the system. ({exc.detail})")
            else:
                out.append(f"Resetting GPU {bus} is not supported: {exc.detail}")
    if rc == 0:
        out.append("All done.")
    raise SmiExit(rc, "\n".join(out) + "\n")


def set_simple(path: str, gpus: list[dict], what: str, value: str) -> str:
    out = []
    for gpu in gpus:
        with st.transaction(path) as state:
            if what == "pm":
                dev.set_persistence_mode(state, _live(gpu)["index"], int(value))
                out.append(f"{'Enabled' if int(value) else 'Disabled'} persistence mode for GPU {gpu['pci_bus_id']}.")
            else:
                mode = COMPUTE_MODE_ARGS.get(value.upper())
                if mode is None:
                    raise SmiExit(2, f"Invalid compute mode {value!r}\n")
                try:
                    dev.set_compute_mode(state, _live(gpu)["index"], mode)
                except dev.DriverError as exc:
                    # nvidia-smi reports the refusal and goes on to the next GPU, as real output shows
                    # (https://github.com/NVIDIA/DCGM/issues/82)
                    out.extend([exc.detail, f"Unable to set the compute mode for GPU {gpu['pci_bus_id']}: Not Supported",
                                "Treating as warning and moving on."])
                    continue
                out.append(f"Set compute mode to {COMPUTE_MODES[mode].upper()} for GPU {gpu['pci_bus_id']}.")
    out.append("All done.")
    raise SmiExit(0, "\n".join(out) + "\n")


# ---------------------------------------------------------------------- argument handling

def _take(argv: list[str], *names: str, value: bool = True):
    for i, arg in enumerate(argv):
        for name in names:
            if arg == name:
                if not value:
                    del argv[i]
                    return True
                if i + 1 >= len(argv):
                    raise SmiExit(2, f"Option {name} requires a value\n")
                val = argv[i + 1]
                del argv[i:i + 2]
                return val
            if value and name.startswith("--") and arg.startswith(name + "="):
                del argv[i]
                return arg.split("=", 1)[1]
    return None if value else False


def _ids(text: str | None) -> list[int]:
    return [int(x) for x in text.split(",")] if text else []


def run(argv: list[str]) -> tuple[int, str]:
    argv = list(argv)
    path = st.state_path()
    try:
        state = st.load(path)
    except st.StateError:
        if st.path_is_explicit():
            raise
        return 9, NO_DRIVER
    if not state.get("library_present", True):
        return 9, NO_DRIVER
    try:
        ident = _take(argv, "-i", "--id")
        gpus = _select(state, ident)
        if argv and argv[0] == "mig":
            argv.pop(0)
            gi = _take(argv, "-gi", "--gpu-instance-id")
            ci = _take(argv, "-ci", "--compute-instance-id")
            if _take(argv, "-lgip", "--list-gpu-instance-profiles", value=False):
                return 0, list_gi_profiles(gpus)
            if _take(argv, "-lgipp", "--list-gpu-instance-possible-placements", value=False):
                return 0, list_gi_placements(gpus)
            if _take(argv, "-lgi", "--list-gpu-instances", value=False):
                return 0, list_gis(gpus)
            if _take(argv, "-lcip", "--list-compute-instance-profiles", value=False):
                return 0, list_ci_profiles(gpus, _ids(gi))
            if _take(argv, "-lci", "--list-compute-instances", value=False):
                return 0, list_cis(gpus)
            with_ci = _take(argv, "-C", "--default-compute-instance", value=False)
            spec = _take(argv, "-cgi", "--create-gpu-instance")
            if spec:
                create_gis(path, gpus, spec, with_ci)
            if "-cci" in argv or "--create-compute-instance" in argv:
                idx = argv.index("-cci") if "-cci" in argv else argv.index("--create-compute-instance")
                cspec = argv[idx + 1] if idx + 1 < len(argv) and not argv[idx + 1].startswith("-") else None
                create_cis(path, gpus, _ids(gi), cspec)
            if _take(argv, "-dci", "--destroy-compute-instance", value=False):
                destroy(path, gpus, "ci", _ids(gi), _ids(ci))
            if _take(argv, "-dgi", "--destroy-gpu-instance", value=False):
                destroy(path, gpus, "gi", _ids(gi), [])
            raise SmiExit(2, "Invalid combination of input arguments. Please run 'nvidia-smi mig -h' for help.\n")
        if _take(argv, "-L", "--list-gpus", value=False):
            return 0, list_gpus(state)
        fields = _take(argv, "--query-gpu")
        if fields is not None:
            fmt = _take(argv, "--format")
            if fmt is None:
                raise SmiExit(2, "--format is required with --query-gpu\n")
            return 0, query_gpu(state, gpus, fields, fmt)
        mig = _take(argv, "-mig", "--multi-instance-gpu")
        if mig is not None:
            if mig not in ("0", "1"):
                raise SmiExit(2, f"Invalid MIG mode {mig!r}: use 0 or 1\n")
            set_mig(path, gpus, int(mig))
        if _take(argv, "-r", "--gpu-reset", value=False):
            if ident is None:
                raise SmiExit(2, "GPU reset requires a target: use -i to select the GPU.\n")
            reset(path, gpus)
        pm = _take(argv, "-pm", "--persistence-mode")
        if pm is not None:
            set_simple(path, gpus, "pm", pm)
        cm = _take(argv, "-c", "--compute-mode")
        if cm is not None:
            set_simple(path, gpus, "c", cm)
        if _take(argv, "-q", "--query", value=False) or not argv:
            return 0, query(state, gpus)
        raise SmiExit(2, f"Invalid combination of input arguments: {' '.join(argv)}\n"
                         "Please run 'nvidia-smi -h' for help.\n")
    except SmiExit as exc:
        return exc.code, exc.message


def main(argv=None) -> int:
    code, text = run(sys.argv[1:] if argv is None else argv)
    sys.stdout.write(text)  # the real tool prints its errors on stdout too
    return code
