"""The fake ``nvidia-smi``: the subset people and our docs use, shaped like the real tool.

Supported: no arguments (or only ``-i ID``): the summary table; ``-L``; ``-q [-i ID]`` (``-i`` takes
an index, a UUID or a PCI bus id); ``--query-gpu=FIELDS --format=csv[,noheader][,nounits]``;
``-mig 0|1 [-i ID]``; ``-r|--gpu-reset -i ID``; ``-pm 0|1``, ``-c MODE`` (with ``-i``);
``mig -lgip|-lgipp|-lgi|-lci|-lcip [-gi ID] [-i ID]``; ``mig -cgi LIST [-C]``, ``mig -cci [LIST] -gi ID``,
``mig -dci [-gi ID] [-ci ID]``, ``mig -dgi [-gi ID]``.
The tables are shaped after real outputs (simulator/tests/fixtures/smi/, with their URLs): their
widths live in ``layout()`` (what differs between drivers) and ``ROWS`` (each row's cells); each
format has one renderer.
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


# ---------------------------------------------------------------------- widths (every table's, in one place)
#
# Each width below was measured on a real output; docs/simulator.md ("nvidia-smi output formats")
# lists the samples, and simulator/tests/fixtures/smi/ holds them with their URLs.  Where the
# drivers differ, the switch is the driver version in the state ("driver_version").

def driver_major(state: dict) -> int:
    try:
        return int(str(state.get("driver_version", "0")).split(".", 1)[0])
    except ValueError:
        return 0


def layout(state: dict) -> dict:
    major = driver_major(state)
    return {
        # mig -lgip / -lgi: the Name column is 13 wide up to R570 (mig-parted PR #187, gpu-operator
        # PR #900, NVIDIA/DCGM#138) and 15 from R580 (an A100 on 580.126.09 in ssup2/blog-software,
        # bigstack-oss/cubecos#312), which makes the frames 79 -> 81 and 55 -> 57 columns; a longer
        # name widens it further.
        "mig_name": 15 if major >= 580 else 13,
        "lgip_inner": 77, "lgi_inner": 55,          # inner widths with a 13-wide Name column
        "lci_inner": 68, "lcip_inner": 86,          # -lci / -lcip: the same on every sampled driver
        # the summary table (bare nvidia-smi), the R550+ layout: 89 columns inside the frame
        "summary_inner": 89,
        "gpu_cols": (41, 24, 22),                   # GPU/Name | Bus-Id | ECC columns
        "mig_cols": (18, 34, 11, 23),               # MIG devices: ids | memory | SM/ECC | engines
        # the rule under the version line: "|---+---+" up to R570, "+---+---+" from R580
        "version_rule_left": "+" if major >= 580 else "|",
        # the line after the GPU rows: 89 blanks up to R565 (thamada/nvidia-smi), empty from R570
        "after_gpus": "" if major >= 570 else " " * 89,
        "after_mig": " " * 89,                      # R570 (ztouchnetworks/k8s-dra-driver-gpu)
        # the MIG-device memory header ("Shared ..." from R580) and the BAR1 line's used field
        "mig_memory_titles": ("Shared Memory-Usage", "Shared BAR1-Usage") if major >= 580
        else ("Memory-Usage", "BAR1-Usage"),
        "mig_bar1_used": 16 if major >= 580 else 18,
        # Processes: the PID column is 17 wide from R570, 11 before; the name takes the rest
        "pid": 17 if major >= 570 else 11,
        "process_name": 36 if major >= 570 else 42,
    }


# The rows of every table, as str.format templates: the widths of each cell in one place (the
# driver-dependent ones come from layout()).  A table's frame and headers are the real text.
ROWS = {
    # the summary's GPU rows: three cells each (GPU/Name, Bus-Id, ECC columns)
    "gpu_1": ("{index:>4}  {name:<27}    {pm:<3} ", "   {bus} {disp:>3} ", "{ecc:>21} "),
    "gpu_2": (" {fan:>3}{temp:>5}C{perf:>6}{draw:>15}W / {limit:>5} ", "{used:>8}MiB / {total:>6}MiB ",
              "{util:>8}{mode:>13} "),
    "gpu_3": "{mig:>21} ",
    # the summary's MIG devices: ids | memory | SM, ECC | engines; then the BAR1 line
    "mig_1": ("{gpu:>3}{gi:>5}{ci:>4}{dev:>4}  ", "{used:>16}MiB / {total:>5}MiB", " {sm:<3}{ecc:>6} ",
              "{ce:>3}{enc:>4}{dec:>5}{ofa:>5}{jpg:>5} "),
    "mig_2": "{used:>{used_w}}MiB / {total:>5}MiB",
    "process": "{gpu:>5}{gi:>5}{ci:>5}{pid:>{pid_w}}{type:>7}   {name:<{name_w}}{mem:>10} ",
    # mig -lgip: two lines per profile (the SM count starts where a 2-digit one does:
    # "No     16     1", "No     132    7")
    "lgip_1": "|{gpu:>4}  MIG {name:<{name_w}}{id:>3}{free:>6}/{total:<3}      {mem:<11}{p2p:<3}    {sm:<3}"
              "{dec:>5}{enc:>6}   |",
    "lgip_2": "|{blank:{pad}}{ce:>6}{jpeg:>6}{ofa:>6}   |",
    "lgi": "|{gpu:>4}  MIG {name:<{name_w}}{profile:>5}{id:>9}{blank:10}{placement:<8}|",
    "lci": "|{gpu:>4}{gi:>7}       MIG {name:<13}{profile:>5}{id:>10}{blank:10}{placement:<8}|",
    "lcip_1": "|{gpu:>4}{gi:>7}       MIG {name:<17}{profile:<7}{instances:<6}{sm:>10}{dec:>9}{enc:>6}{ofa:>6}   |",
    "lcip_2": "|{blank:62}{ce:>9}{jpeg:>6}{blank:9}|",
}


def _cells(key: str, **fields) -> list[str]:
    return [cell.format(**fields) for cell in ROWS[key]]


def _now() -> str:
    """The date as nvidia-smi prints it, C's asctime, the day padded with a blank: "Thu Jul  9
    12:19:17 2020" (a summary in tensorflow/docs#1616), "Thu Aug  8 10:16:40 2019" (a -q in
    NVIDIA/nvidia-docker#1042)."""
    return time.asctime()


def _rule(*widths: int, ends: str = "+", fill: str = "-") -> str:
    return ends + "+".join(fill * w for w in widths) + ends


def _row(*cells: str) -> str:
    return "|" + "|".join(cells) + "|"


# ---------------------------------------------------------------------- bare nvidia-smi: the summary

SUMMARY_GPU_HEADER = (
    "| GPU  Name                 Persistence-M | Bus-Id          Disp.A | Volatile Uncorr. ECC |",
    "| Fan  Temp   Perf          Pwr:Usage/Cap |           Memory-Usage | GPU-Util  Compute M. |",
    "|                                         |                        |               MIG M. |",
)
# the Compute M. column's words (nvidia-smi(1): "E. Process" is EXCLUSIVE_PROCESS)
SUMMARY_COMPUTE_MODES = {0: "Default", 1: "E. Thread", 2: "Prohibited", 3: "E. Process"}
# Board power limits (W) where no state sets one: NVIDIA's product briefs / datasheets; the
# A100 SXM4 and H100 SXM5 figures also stand in the real samples (400 W, 700 W).
POWER_LIMIT_W = {"A30-24GB": 165, "A100-SXM4-40GB": 400, "A100-SXM4-80GB": 400, "H100-SXM5-80GB": 700,
                 "H100-NVL-94GB": 400, "H200-141GB": 700, "B200-180GB": 1000, "T4": 70, "V100": 300,
                 "A10": 150, "L40S": 350}
# What the state does not say (a fresh gpusim host): an idle, cool GPU.  A GPU's "telemetry" dict
# overrides any of these; tests set them to the values a real sample shows.
TELEMETRY = {"fan": "N/A", "temperature_c": 30, "perf_state": "P0", "power_draw_w": 70, "power_limit_w": None,
             "display_active": "Off", "display_mode": "Enabled", "utilization_pct": 0, "memory_used_mib": None,
             "memory_reserved_mib": 0, "bar1_total_mib": 131072, "ecc": True,
             "clocks_mhz": None}


def telemetry(gpu: dict) -> dict:
    values = dict(TELEMETRY)
    values.update(gpu.get("telemetry") or {})
    if values["power_limit_w"] is None:
        values["power_limit_w"] = POWER_LIMIT_W.get(gpu["model"])
    return values


def _gpu_used_mib(gpu: dict) -> int:
    used = telemetry(gpu)["memory_used_mib"]
    return sum(p.get("used_memory_mib", 0) for p in dev.live_processes(gpu)) if used is None else used


def _short(text: str, width: int, tail: bool = False) -> str:
    """A name cut to the column: "NVIDIA RTX PRO 6000 Blac..." (bigstack-oss/cubecos#312)."""
    if len(text) <= width:
        return text
    return "..." + text[-(width - 3):] if tail else text[:width - 3] + "..."


def _summary_gpu_rows(state: dict, gpu: dict, lay: dict) -> list[str]:
    model = dev.model_of(gpu)
    tel = telemetry(gpu)
    mig_capable = bool(model.get("mig"))
    mig_on = mig_capable and gpu["mig_current"]
    pm = "On" if gpu["persistence_mode"] else "Off"
    disp = tel["display_active"]
    if mig_on:      # the ECC column shows the ECC mode on a MIG-enabled GPU, the count otherwise
        ecc = "On" if tel["ecc"] else "Off"
    else:
        ecc = "0" if tel["ecc"] else "Off"
    limit = f"{tel['power_limit_w']}W" if tel["power_limit_w"] else "N/A"
    util = "N/A" if mig_on else f"{tel['utilization_pct']}%"
    mig = ("Enabled" if gpu["mig_current"] else "Disabled") if mig_capable else "N/A"
    return [
        # "On" and "Off" start in one column: "...HBM3          On  |", "...RTX 4070        Off |"
        # (an R550 summary in Frogging-Family/nvidia-all#212), as do "Off" and " On" under Disp.A
        _row(*_cells("gpu_1", index=gpu["index"], name=_short(model["name"], 27), pm=pm, bus=gpu["pci_bus_id"],
                     disp=disp, ecc=ecc)),
        _row(*_cells("gpu_2", fan=tel["fan"], temp=tel["temperature_c"], perf=tel["perf_state"],
                     draw=tel["power_draw_w"], limit=limit, used=_gpu_used_mib(gpu), total=model["memory_total_mib"],
                     util=util, mode=SUMMARY_COMPUTE_MODES[gpu["compute_mode"]])),
        _row(" " * lay["gpu_cols"][0], " " * lay["gpu_cols"][1], ROWS["gpu_3"].format(mig=mig)),
        _rule(*lay["gpu_cols"]),
    ]


def _gi_memory(gpu: dict, gi: dict, tel: dict) -> tuple[int, int, int, int]:
    """(used, total, BAR1 used, BAR1 total) MiB of a GPU instance, which its MIG devices share.

    Used memory without processes: 35.5 MiB per compute slice (36, 71, 107, 142 MiB for 1g-4g in
    both real samples, R570 A100 80GB and R580 A100 40GB: a fit, not a documented figure), plus the
    processes'; a GI's "memory_used_mib" overrides.  BAR1: the GPU's BAR1 shared by memory slices,
    less one MiB (131072 MiB over 8 slices gives 65535/32767/16383 as R570 prints)."""
    prof = dev.gi_profile(gpu, gi["profile_id"])
    procs = sum(p.get("used_memory_mib", 0) for p in dev.live_processes(gpu) if p.get("gi_id") == gi["id"])
    used = gi.get("memory_used_mib", int(35.5 * prof["slices"] + 0.5) + procs)
    slices = max(start + size for p in dev.gi_profiles(gpu) for start, size in p["placements"])
    bar1_total = tel["bar1_total_mib"] * gi["size"] // slices - 1
    return used, prof["memory_mib"], gi.get("bar1_used_mib", 0), bar1_total


def _summary_mig_rows(gpus: list[dict], lay: dict) -> list[str]:
    cols = lay["mig_cols"]
    inner = lay["summary_inner"]
    mem_title, bar1_title = lay["mig_memory_titles"]
    out = ["+" + "-" * inner + "+", _row(" MIG devices:".ljust(inner)), _rule(*cols),
           _row(" GPU  GI  CI  MIG ", f"{mem_title} ".rjust(cols[1]), "        Vol", "        Shared         "),
           _row("      ID  ID  Dev ", f"{bar1_title} ".rjust(cols[1]), " SM     Unc", " CE ENC  DEC  OFA  JPG "),
           _row(" " * cols[0], " " * cols[1], "        ECC", " " * cols[3]),
           _rule(*cols, ends="|", fill="=")]
    for gpu in gpus:
        tel = telemetry(gpu)
        for dev_index, (gi, ci) in enumerate(dev.mig_devices(gpu)):
            gi_prof = dev.gi_profile(gpu, gi["profile_id"])
            ci_prof = dev.ci_profile(gi_prof, ci["profile_id"])
            used, total, bar1_used, bar1_total = _gi_memory(gpu, gi, tel)
            ids, memory, sm, engines = _cells(
                "mig_1", gpu=gpu["index"], gi=gi["id"], ci=ci["id"], dev=dev_index, used=used, total=total,
                sm=ci_prof.get("multiprocessor_count") or 0, ecc=0, ce=gi_prof.get("copy_engines") or 0,
                enc=gi_prof.get("encoders") or 0, dec=gi_prof.get("decoders") or 0, ofa=gi_prof.get("ofas") or 0,
                jpg=gi_prof.get("jpegs") or 0)
            bar1 = ROWS["mig_2"].format(used=bar1_used, used_w=lay["mig_bar1_used"], total=bar1_total)
            out += [_row(ids, memory.ljust(cols[1]), sm, engines),
                    _row(" " * cols[0], bar1.ljust(cols[1]), " " * cols[2], " " * cols[3]),
                    _rule(*cols)]
    return out


def _summary_process_rows(gpus: list[dict], lay: dict) -> list[str]:
    inner = lay["summary_inner"]
    pid_w, name_w = lay["pid"], lay["process_name"]
    out = ["+" + "-" * inner + "+", _row(" Processes:".ljust(inner)),
           _row(f"  GPU   GI   CI{'PID':>{pid_w}}   Type   {'Process name':<{name_w}}GPU Memory "),
           _row(f"        ID   ID{'':{inner - 26}}Usage      "),
           "|" + "=" * inner + "|"]
    rows = []
    for gpu in gpus:
        procs = sorted(dev.live_processes(gpu), key=lambda p: (p.get("gi_id") if p.get("gi_id") is not None else -1,
                                                               p.get("ci_id") if p.get("ci_id") is not None else -1,
                                                               p["pid"]))
        for proc in procs:
            gi = "N/A" if proc.get("gi_id") is None else proc["gi_id"]
            ci = "N/A" if proc.get("ci_id") is None else proc["ci_id"]
            rows.append(_row(ROWS["process"].format(
                gpu=gpu["index"], gi=gi, ci=ci, pid=proc["pid"], pid_w=pid_w, type=proc.get("type", "C"),
                name=_short(proc["name"], name_w, tail=True), name_w=name_w,
                mem=f"{proc.get('used_memory_mib', 0)}MiB")))
    out += rows or [_row("  No running processes found".ljust(inner))]
    out.append("+" + "-" * inner + "+")
    return out


def summary(state: dict, gpus: list[dict]) -> str:
    """Bare ``nvidia-smi`` (or ``nvidia-smi -i ID``): the date, the version line, a GPU table, the
    MIG devices of the GPUs in MIG mode, the processes -- the R550+ layout, column for column as
    the real samples in fixtures/smi/summary_*.txt.  The date is the state's "clock" if it has one
    (tests), else now; like the real tool the line ends in seven blanks."""
    lay = layout(state)
    for gpu in gpus:
        _live(gpu)
    cuda = state.get("cuda_driver_version", 13000)
    driver = state["driver_version"]
    when = state.get("clock") or _now()
    cols = lay["gpu_cols"]
    out = [when + " " * 7, "+" + "-" * lay["summary_inner"] + "+",
           f"| NVIDIA-SMI {driver:<23}Driver Version: {driver:<15}CUDA Version: "
           f"{f'{cuda // 1000}.{(cuda % 1000) // 10}':<9}|",
           lay["version_rule_left"] + _rule(*cols)[1:], *SUMMARY_GPU_HEADER, _rule(*cols, ends="|", fill="=")]
    for gpu in gpus:
        out += _summary_gpu_rows(state, gpu, lay)
    mig_gpus = [g for g in gpus if dev.model_of(g).get("mig") and g["mig_current"]]
    if mig_gpus:
        out += [lay["after_gpus"]] + _summary_mig_rows(mig_gpus, lay) + [lay["after_mig"]]
    else:
        out.append(lay["after_gpus"])
    out += _summary_process_rows(gpus, lay)
    return "\n".join(out) + "\n"

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


# Clock figures (MHz) where the state gives none: an H100 80GB HBM3's -q (thamada/nvidia-smi,
# gls/H100SXMx8_smi.py, driver 565.57.01); an A100 SXM4's maxima as NVML reports them (SM 1410,
# memory 1215: DataDog/datadog-agent#36477).  Anything else prints "N/A".
CLOCKS_MHZ = {
    "H100-SXM5-80GB": {"graphics": 345, "sm": 345, "memory": 2619, "video": 765,
                       "max_graphics": 1980, "max_memory": 2619, "max_video": 1545},
    "A100-SXM4-40GB": {"max_graphics": 1410, "max_memory": 1215},
    "A100-SXM4-80GB": {"max_graphics": 1410, "max_memory": 1215},
}
ECC_ERROR_KEYS = ("SRAM Correctable", "SRAM Uncorrectable Parity", "SRAM Uncorrectable SEC-DED",
                  "DRAM Correctable", "DRAM Uncorrectable")
ECC_SRAM_SOURCES = ("SRAM L2", "SRAM SM", "SRAM Microcontroller", "SRAM PCIE", "SRAM Other")


def _kv(key, value, ind=4) -> str:
    # "    Product Name                          : NVIDIA H200": every key, top level or nested, is
    # padded so that its colon stands at index 42, as every line of a real -q has it
    return f"{' ' * ind}{key:<{42 - ind}}: {value}"


def _query_utilization(gpu: dict, tel: dict) -> list[str]:
    """The Utilization section; "N/A" while the GPU is in MIG mode, as the summary's GPU-Util."""
    mig_on = dev.model_of(gpu).get("mig") and gpu["mig_current"]
    values = [("Gpu", tel["utilization_pct"]), ("Memory", 0), ("Encoder", 0), ("Decoder", 0), ("JPEG", 0), ("OFA", 0)]
    return ["    Utilization"] + [_kv(k, "N/A" if mig_on else f"{v} %", 8) for k, v in values]


def _query_ecc(tel: dict) -> list[str]:
    """ECC Mode and ECC Errors, the keys of a Hopper's -q on R565 (volatile and aggregate
    counters, the aggregate uncorrectable SRAM sources)."""
    mode = "Enabled" if tel["ecc"] else "Disabled"
    count = "0" if tel["ecc"] else "N/A"
    return (["    ECC Mode", _kv("Current", mode, 8), _kv("Pending", mode, 8), "    ECC Errors", "        Volatile"]
            + [_kv(k, count, 12) for k in ECC_ERROR_KEYS] + ["        Aggregate"]
            + [_kv(k, count, 12) for k in ECC_ERROR_KEYS] + [_kv("SRAM Threshold Exceeded", "No" if tel["ecc"]
                                                                    else "N/A", 12),
                                                                "        Aggregate Uncorrectable SRAM Sources"]
            + [_kv(k, count, 12) for k in ECC_SRAM_SOURCES])


def _query_clocks(gpu: dict, tel: dict) -> list[str]:
    clocks = {**CLOCKS_MHZ.get(gpu["model"], {}), **(tel["clocks_mhz"] or {})}

    def mhz(key: str, fallback: str | None = None) -> str:
        value = clocks.get(key, clocks.get(fallback) if fallback else None)
        return "N/A" if value is None else f"{value} MHz"

    return ["    Clocks", _kv("Graphics", mhz("graphics"), 8), _kv("SM", mhz("sm"), 8), _kv("Memory", mhz("memory"), 8),
            _kv("Video", mhz("video"), 8),
            "    Applications Clocks", _kv("Graphics", mhz("app_graphics", "max_graphics"), 8),
            _kv("Memory", mhz("app_memory", "max_memory"), 8),
            "    Default Applications Clocks", _kv("Graphics", mhz("app_graphics", "max_graphics"), 8),
            _kv("Memory", mhz("app_memory", "max_memory"), 8),
            "    Deferred Clocks", _kv("Memory", "N/A", 8),
            "    Max Clocks", _kv("Graphics", mhz("max_graphics"), 8), _kv("SM", mhz("max_sm", "max_graphics"), 8),
            _kv("Memory", mhz("max_memory"), 8), _kv("Video", mhz("max_video"), 8),
            "    Max Customer Boost Clocks", _kv("Graphics", mhz("boost_graphics", "max_graphics"), 8),
            "    Clock Policy", _kv("Auto Boost", "N/A", 8), _kv("Auto Boost Default", "N/A", 8)]


def _query_block(state: dict, gpu: dict) -> list[str]:
    """One GPU of ``nvidia-smi -q``: the sections gpusim has state for, in the order, the key names
    and the indentation of a real -q (an H100 on R565, fixtures/smi/q_h100_565_thamada.txt)."""
    model = dev.model_of(gpu)
    tel = telemetry(gpu)
    total = model["memory_total_mib"]
    used = _gpu_used_mib(gpu)
    domain, bus, rest = gpu["pci_bus_id"].split(":")
    kv = _kv
    enabled = {"On": "Enabled", "Off": "Disabled"}

    lines = [f"GPU {gpu['pci_bus_id']}",
             kv("Product Name", model["name"]),
             kv("Product Brand", "NVIDIA"),
             kv("Product Architecture", model["architecture"].capitalize()),
             kv("Display Mode", tel["display_mode"]),
             kv("Display Active", enabled.get(tel["display_active"], tel["display_active"])),
             kv("Persistence Mode", _onoff(gpu["persistence_mode"]))]
    if model.get("mig"):
        lines += ["    MIG Mode", kv("Current", _onoff(gpu["mig_current"]), 8),
                  kv("Pending", _onoff(gpu["mig_pending"]), 8)]
    else:
        lines += ["    MIG Mode", kv("Current", "N/A", 8), kv("Pending", "N/A", 8)]
    lines += [kv("Serial Number", gpu["serial"]), kv("GPU UUID", gpu["uuid"]),
              kv("Minor Number", gpu["minor_number"])]
    lines += vgpu_license_lines(state, kv)
    lines += ["    PCI", kv("Bus", "0x" + bus, 8), kv("Device", "0x" + rest.split(".")[0], 8),
              kv("Domain", "0x" + domain[-4:], 8), kv("Device Id", "0x%08X" % model["pci_device_id"], 8),
              kv("Bus Id", gpu["pci_bus_id"], 8),
              kv("Sub System Id", "0x%08X" % (model.get("pci_subsystem_id") or 0), 8),
              kv("Fan Speed", tel["fan"]), kv("Performance State", tel["perf_state"]),
              "    FB Memory Usage", kv("Total", f"{total} MiB", 8),
              kv("Reserved", f"{tel['memory_reserved_mib']} MiB", 8),
              kv("Used", f"{used} MiB", 8), kv("Free", f"{total - tel['memory_reserved_mib'] - used} MiB", 8),
              kv("Compute Mode", COMPUTE_MODES[gpu["compute_mode"]])]
    lines += _query_utilization(gpu, tel) + _query_ecc(tel) + _query_clocks(gpu, tel)
    extra = state.get("query_extra", {}).get(str(gpu["index"]))
    if extra:
        lines += extra
    if dev.live_processes(gpu):
        # each process: its ids at 8 blanks, what it is at 12 (NVIDIA/DCGM#232, an A10G on R535)
        lines.append("    Processes")
        for proc in dev.live_processes(gpu):
            lines += [kv("GPU instance ID", "N/A" if proc.get("gi_id") is None else proc["gi_id"], 8),
                      kv("Compute instance ID", "N/A" if proc.get("ci_id") is None else proc["ci_id"], 8),
                      kv("Process ID", proc["pid"], 8), kv("Type", proc.get("type", "C"), 12),
                      kv("Name", proc["name"], 12),
                      kv("Used GPU Memory", f"{proc['used_memory_mib']} MiB", 12)]
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
             f"{'Timestamp':<42}: {state.get('clock') or _now()}",
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


def _name_extra(state: dict, names) -> int:
    """How much wider than 13 the Name column of -lgip/-lgi is: 2 from R580, more for a longer name."""
    lay = layout(state)
    return max(lay["mig_name"], max((len(n) + 1 for n in names), default=0)) - 13


def list_gi_profiles(state: dict, gpus: list[dict]) -> str:
    """``nvidia-smi mig -lgip``, column for column as NVIDIA's own pastes (mig-parted PR #187 on B200,
    gpu-operator PR #900 on H100 NVL: 79 columns before R580; an A100 on R580 and
    bigstack-oss/cubecos#312: 81 columns, the Name column two wider)."""
    chosen = _mig_gpus(gpus)
    extra = _name_extra(state, (p["name"] for g in chosen for p in dev.gi_profiles(g)))
    width = layout(state)["lgip_inner"] + extra
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
            out.append(ROWS["lgip_1"].format(
                gpu=gpu["index"], name=prof["name"], name_w=13 + extra, id=prof["id"], free=free,
                total=prof["instance_count"], mem=mem, p2p=p2p, sm=prof.get("multiprocessor_count") or 0,
                dec=prof.get("decoders") or 0, enc=prof.get("encoders") or 0))
            out.append(ROWS["lgip_2"].format(blank="", pad=56 + extra, ce=prof.get("copy_engines") or 0,
                                             jpeg=prof.get("jpegs") or 0, ofa=prof.get("ofas") or 0))
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


def _lgi_order(gpu: dict) -> list[dict]:
    """GPU instances as -lgi and -lci list them: grouped by profile in the order -lgip lists the
    profiles (NVIDIA/DCGM#138; ssup2/blog-software's -lci lists GI 9 (1g), 3 (2g), 2 (4g))."""
    order = {p["id"]: i for i, p in enumerate(dev.gi_profiles(gpu))}
    return sorted(gpu["gpu_instances"], key=lambda g: (order.get(g["profile_id"], 99), g["id"]))


def list_gis(state: dict, gpus: list[dict]) -> str:
    """``nvidia-smi mig -lgi`` as real output prints it (NVIDIA/DCGM#138, 55 columns; 57 from R580):
    per GPU, rows grouped by profile in the order -lgip lists the profiles, each row followed by a rule."""
    chosen = _mig_gpus(gpus)
    extra = _name_extra(state, (dev.gi_profile(g, gi["profile_id"])["name"] for g in chosen
                                for gi in g["gpu_instances"]))
    width = layout(state)["lgi_inner"] + extra
    rule = "+" + "-" * width + "+"
    rows = []
    for gpu in chosen:
        for gi in _lgi_order(gpu):
            prof = dev.gi_profile(gpu, gi["profile_id"])
            rows += [ROWS["lgi"].format(gpu=gpu["index"], name=prof["name"], name_w=13 + extra,
                                        profile=gi["profile_id"], id=gi["id"], blank="",
                                        placement=f"{gi['start']}:{gi['size']}"), rule]
    if not rows:
        raise SmiExit(6, "No GPU instances found: Not Found\n")
    pad = " " * extra
    return "\n".join([rule, "| GPU instances:".ljust(width + 1) + "|",
                      f"| GPU   Name    {pad}         Profile  Instance   Placement  |",
                      f"|             {pad}             ID       ID       Start:Size |",
                      "|" + "=" * width + "|"] + rows) + "\n"


def list_cis(state: dict, gpus: list[dict]) -> str:
    """``nvidia-smi mig -lci``: 70 columns, a rule after each row, GPU instances in -lgi order and
    their CIs by id (a H100 with seven 1g.10gb GIs, and an A100 40GB on R580 with 1g/2g/4g GIs, in
    fixtures/smi/lci_*.txt)."""
    width = layout(state)["lci_inner"]
    rule = "+" + "-" * width + "+"
    rows = []
    for gpu in _mig_gpus(gpus):
        for gi in _lgi_order(gpu):
            gi_prof = dev.gi_profile(gpu, gi["profile_id"])
            for ci in sorted(gi["compute_instances"], key=lambda c: c["id"]):
                name = dev.ci_profile(gi_prof, ci["profile_id"])["name"]
                rows += [ROWS["lci"].format(gpu=gpu["index"], gi=gi["id"], name=name, profile=ci["profile_id"],
                                            id=ci["id"], blank="", placement=f"{ci['start']}:{ci['size']}"), rule]
    if not rows:
        raise SmiExit(6, "No compute instances found: Not Found\n")
    return "\n".join([rule, "| Compute instances:".ljust(width + 1) + "|",
                      "| GPU     GPU       Name             Profile   Instance   Placement  |",
                      "|       Instance                       ID        ID       Start:Size |",
                      "|         ID                                                         |",
                      "|" + "=" * width + "|"] + rows) + "\n"


def list_ci_profiles(state: dict, gpus: list[dict], gi_ids: list[int]) -> str:
    """``nvidia-smi mig -lcip [-gi ID]``: the frame and header of an H100's ``-lcip -gi 0``
    (NVIDIA/gpu-operator#622), the rows of an A100 40GB's on R580 (ssup2/blog-software, its
    GPU instances 2, 3 and 9, before and after their CIs: fixtures/smi/lcip_*.txt); the default
    profile marked ``*``."""
    width = layout(state)["lcip_inner"]
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
                pid = f"{prof['id']}{'*' if prof.get('default') else ''}"
                out.append(ROWS["lcip_1"].format(
                    gpu=gpu["index"], gi=gi["id"], name=prof["name"], profile=pid,
                    instances=f"{free}/{prof['instance_count']}", sm=prof.get("multiprocessor_count") or 0,
                    dec=gi_prof.get("decoders") or 0, enc=gi_prof.get("encoders") or 0, ofa=gi_prof.get("ofas") or 0))
                out.append(ROWS["lcip_2"].format(blank="", ce=gi_prof.get("copy_engines") or 0,
                                                 jpeg=gi_prof.get("jpegs") or 0))
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
                return 0, list_gi_profiles(state, gpus)
            if _take(argv, "-lgipp", "--list-gpu-instance-possible-placements", value=False):
                return 0, list_gi_placements(gpus)
            if _take(argv, "-lgi", "--list-gpu-instances", value=False):
                return 0, list_gis(state, gpus)
            if _take(argv, "-lcip", "--list-compute-instance-profiles", value=False):
                return 0, list_ci_profiles(state, gpus, _ids(gi))
            if _take(argv, "-lci", "--list-compute-instances", value=False):
                return 0, list_cis(state, gpus)
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
        if _take(argv, "-q", "--query", value=False):
            return 0, query(state, gpus)
        if not argv:
            return 0, summary(state, gpus)
        raise SmiExit(2, f"Invalid combination of input arguments: {' '.join(argv)}\n"
                         "Please run 'nvidia-smi -h' for help.\n")
    except SmiExit as exc:
        return exc.code, exc.message


def main(argv=None) -> int:
    code, text = run(sys.argv[1:] if argv is None else argv)
    sys.stdout.write(text)  # the real tool prints its errors on stdout too
    return code
