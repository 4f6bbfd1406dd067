"""The fake nvidia-smi against real nvidia-smi output, byte for byte (issue 14, item 8).

Each fixture under fixtures/smi/ is a real output pasted in a public issue or NVIDIA's MIG
guide: a header (``# source:`` URL, command, the state it was taken in, how much of it the
reachable copy has), ``---``, then the text exactly as printed.  The test builds that state and
compares what the fake prints.  Where a copy is cut (the search corpora serve excerpts), the
fake's output must start with the sample, and the cut falls on a line boundary of it.
"""

from __future__ import annotations

import json
import os
import re

import pytest

from gpusim import state as st

FIXTURES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures", "smi")


def sample(name: str) -> tuple[dict, str]:
    with open(os.path.join(FIXTURES, name), encoding="utf-8") as fh:
        text = fh.read()
    head, body = text.split("---\n", 1)
    meta = {}
    for line in head.splitlines():
        if line.startswith("# ") and ":" in line:
            key, _sep, value = line[2:].partition(":")
            meta[key.strip()] = value.strip()
    assert meta["source"].startswith("https://"), name
    return meta, body


def set_instances(host, gpus: dict[int, list[tuple[int, int, int, int]]], ci_uuids: dict | None = None) -> None:
    """Put GPU instances (id, profile id, start, size), each with its full CI, into the state."""
    data = st.load(host.path)
    for index, gis in gpus.items():
        gpu = data["gpus"][index]
        gpu["gpu_instances"] = []
        for gi_id, pid, start, size in gis:
            prof = next(p for p in __import__("gpusim.device", fromlist=["x"]).gi_profiles(gpu) if p["id"] == pid)
            ci_prof = next(c for c in prof["compute_instance_profiles"] if c["default"])
            uuid = (ci_uuids or {}).get((index, gi_id), f"MIG-{index}-{gi_id}")
            gpu["gpu_instances"].append({"id": gi_id, "profile_id": pid, "start": start, "size": size,
                                         "compute_instances": [{"id": 0, "profile_id": ci_prof["id"], "start": 0,
                                                                "size": ci_prof["slices"], "uuid": uuid}]})
        gpu["gpu_instances"].sort(key=lambda g: g["id"])
    st.save(data, host.path)


# The two older -lgip pastes name no driver; both predate R580 (released 2025-08), whose Name
# column is two wider, so they run under a pre-R580 driver version.
@pytest.mark.parametrize("name,model,driver", [
    ("lgip_b200_mig-parted-pr187.txt", "B200-180GB", "570.124.06"),
    ("lgip_h100nvl_gpu-operator-pr900.txt", "H100-NVL-94GB", "550.90.07"),
])
def test_lgip(host, name, model, driver):
    meta, expected = sample(name)
    host.init(model, 1, "--mig-enabled", "--driver-version", driver)
    out = host.smi("mig", "-lgip").stdout
    assert out.startswith(expected), f"{meta['source']}\n--- real\n{expected}--- fake\n{out[:len(expected) + 200]}"


def test_lgi_rows_grouped_by_profile(host):
    meta, expected = sample("lgi_dcgm-issue138.txt")
    host.init("H100-SXM5-80GB", 2, "--mig-enabled", "--driver-version", "535.129.03")  # a 2023-12 paste
    layout = [(9, 19, 2, 1), (10, 19, 3, 1), (3, 14, 0, 2), (2, 9, 4, 4)]
    set_instances(host, {0: layout, 1: [(13, 19, 2, 1), (14, 19, 3, 1), (5, 14, 0, 2), (1, 9, 4, 4)]})
    out = host.smi("mig", "-lgi").stdout
    assert out == expected, f"{meta['source']}\n--- real\n{expected}--- fake\n{out}"


def test_list_with_mig_devices(host):
    meta, expected = sample("L_mig_container-toolkit-issue203.txt")
    host.init("A100-SXM4-80GB", 1, "--mig-enabled")
    real = expected.splitlines(keepends=True)
    uuids = {(0, 1): real[1].split("UUID: ")[1].rstrip(")\n"), (0, 2): real[2].split("UUID: ")[1].rstrip(")\n")}
    set_instances(host, {0: [(1, 9, 0, 4), (2, 9, 4, 4)]}, uuids)
    data = st.load(host.path)
    data["gpus"][0]["uuid"] = real[0].split("UUID: ")[1].rstrip(")\n")
    st.save(data, host.path)
    out = host.smi("-L").stdout.splitlines(keepends=True)
    assert out[1:] == real[1:], meta["source"]
    assert out[0] == real[0].replace("NVIDIA A100 80GB PCIe", "NVIDIA A100-SXM4-80GB")


def test_cgi_failure_lines(host):
    meta, expected = sample("cgi_failure_mig-guide.txt")
    host.init("A100-SXM4-40GB", 1, "--mig-enabled")
    done = host.smi("mig", "-cgi", "19,19,14,9")
    assert done.stdout == expected, f"{meta['source']}\n--- real\n{expected}--- fake\n{done.stdout}"
    assert done.returncode != 0


def test_lcip_header(host):
    meta, expected = sample("lcip_header_gpu-operator-issue622.txt")
    host.init("H100-SXM5-80GB", 1, "--mig-enabled")
    assert host.smi("mig", "-cgi", "0").returncode == 0
    out = host.smi("mig", "-lcip", "-gi", "0").stdout
    assert out.startswith(expected), f"{meta['source']}\n--- real\n{expected}\n--- fake\n{out}"


def test_lcip_rows_mark_the_default_and_list_both_1g_profiles(host):
    host.init("H100-SXM5-80GB", 1, "--mig-enabled")
    assert host.smi("mig", "-cgi", "15,9").returncode == 0
    out = host.smi("mig", "-lcip").stdout
    rows = [line for line in out.splitlines() if "MIG " in line]
    assert [r.split()[5:8] for r in rows if "1g.20gb" in r] == [["0", "1/1", "26"], ["7*", "1/1", "26"]]
    assert [r.split()[4:8] for r in rows if "3g.40gb" in r] == [
        ["1c.3g.40gb", "0", "3/3", "16"], ["2c.3g.40gb", "1", "1/1", "32"], ["3g.40gb", "2*", "1/1", "60"]]
    assert {len(line) for line in out.splitlines()} == {88}


def test_i_selects_by_index_uuid_and_bus_id_only(host):
    host.init("A100-SXM4-40GB", 8)   # bus ids 07, 17, ... 77: several end in 0 or 7
    data = st.load(host.path)
    rows = host.smi("-i", "0", "--query-gpu=index", "--format=csv,noheader").stdout.split()
    assert rows == ["0"]
    gpu3 = data["gpus"][3]
    for ident in (gpu3["uuid"], gpu3["pci_bus_id"], gpu3["pci_bus_id"][4:], gpu3["pci_bus_id"][9:].lower()):
        assert host.smi("-i", ident, "--query-gpu=index", "--format=csv,noheader").stdout.split() == ["3"], ident
    assert host.smi("-i", "2,5", "--query-gpu=index", "--format=csv,noheader").stdout.split() == ["2", "5"]
    assert host.smi("-i", "9", "-q").returncode == 6


def test_q_colons_stand_at_column_42(host):
    host.init("H200-141GB", 1)
    out = host.smi("-q").stdout
    keyed = [line for line in out.splitlines() if " : " in line or line.endswith(" :")]
    assert keyed and {line.index(":") for line in keyed} == {42}
    assert "    Product Name                          : NVIDIA H200" in out


# ---------------------------------------------------------------------- the state of a real sample

def edit(host, change) -> None:
    data = st.load(host.path)
    change(data)
    st.save(data, host.path)


def compare(meta: dict, expected: str, out: str, strip: bool = False) -> None:
    if strip:   # a copy whose editor dropped trailing blanks
        out = "".join(line.rstrip() + "\n" for line in out.splitlines())
    assert out == expected, f"{meta['source']}\n--- real\n{expected}--- fake\n{out}"


def test_summary_h100_host_without_mig(host):
    meta, expected = sample("summary_h100x8_565_thamada.txt")
    host.init("H100-SXM5-80GB", 8, "--driver-version", "565.57.01")
    buses = ["18", "2A", "3A", "5D", "9A", "AB", "BA", "DB"]
    temps = [30, 30, 31, 30, 28, 30, 29, 29]
    power = [100, 82, 85, 85, 84, 85, 86, 75]

    def real(data):
        data["cuda_driver_version"] = 12070
        for gpu, bus, temp, watts in zip(data["gpus"], buses, temps, power):
            gpu.update(pci_bus_id=f"00000000:{bus}:00.0", persistence_mode=1,
                       telemetry={"temperature_c": temp, "power_draw_w": watts, "memory_used_mib": 1})
    edit(host, real)
    out = host.smi().stdout
    assert out.split("\n", 1)[1] == expected, meta["source"]   # the copy has no date line
    assert out.split("\n", 1)[0].endswith("       ")


def _ztouch_state(host, clock: str, temperature: int, watts: int, used: int) -> None:
    host.init("A100-SXM4-80GB", 1, "--mig-enabled", "--driver-version", "570.148.08")
    set_instances(host, {0: [(1, 9, 4, 4), (5, 14, 0, 2), (13, 19, 2, 1), (14, 19, 3, 1)]})

    def real(data):
        data.update(cuda_driver_version=12080, clock=clock)
        data["gpus"][0].update(pci_bus_id="00000000:B6:00.0", persistence_mode=1,
                               telemetry={"temperature_c": temperature, "power_draw_w": watts,
                                          "power_limit_w": 300, "memory_used_mib": used})
    edit(host, real)


def test_summary_mig_devices_r570(host):
    meta, expected = sample("summary_a100-80gb_mig_570_ztouch.txt")
    _ztouch_state(host, "Wed Jun 18 19:22:47 2025", 54, 90, 249)
    # the MIG devices' memory (107/71/36/36 MiB) and BAR1 (65535/32767/16383) come from the rules
    out = host.smi().stdout.replace("NVIDIA A100-SXM4-80GB", "NVIDIA A100 80GB PCIe")
    compare(meta, expected, out)


def test_summary_processes_on_mig_devices_r570(host):
    meta, expected = sample("summary_a100-80gb_mig_procs_570_ztouch.txt")
    _ztouch_state(host, "Mon Jun 23 15:43:26 2025", 57, 223, 5728)
    rows = [line.strip("|").split() for line in expected.splitlines() if line.startswith("|    0 ")]
    for index, gi, ci, pid, kind, name, mem in reversed(rows):     # the table sorts them, not the order added
        assert host.gpusim("process", "add", "--gpu", index, "--gi", gi, "--ci", ci, "--pid", pid, "--type", kind,
                           "--name", name, "--memory", mem.removesuffix("MiB")) == 0

    def real(data):
        for gi, (used, bar1) in zip(data["gpus"][0]["gpu_instances"], [(1442, 6), (1513, 4), (1376, 4), (1398, 6)]):
            gi.update(memory_used_mib=used, bar1_used_mib=bar1)
    edit(host, real)
    out = host.smi().stdout.replace("NVIDIA A100-SXM4-80GB", "NVIDIA A100 80GB PCIe")
    compare(meta, expected, out)


# One session on an A100 40GB under R580 (ssup2/blog-software): every command's output in turn.
# The driver numbered the GPU instances 2, 3 and 9; gpusim's ids for the same placements differ
# (CATALOGUE_SOURCES.md, "Default placement"), so the test renumbers them before the listings.
SSUP2_IDS = {5: 2, 14: 3, 19: 9}     # profile id -> the GI id the real driver gave


def test_r580_session_a100_40gb(host):
    host.init("A100-SXM4-40GB", 1, "--mig-enabled", "--driver-version", "580.126.09")

    def check(name, *args, strip=False):
        meta, expected = sample(name)
        compare(meta, expected, host.smi("mig", "-i", "0", *args).stdout if args[0] != "-L"
                else host.smi(*args).stdout, strip)

    check("lgip_a100-40gb_580_ssup2_empty.txt", "-lgip")
    creations = []
    for profile in ("4g.20gb", "2g.10gb", "1g.5gb"):
        done = host.smi("mig", "-i", "0", "-cgi", profile)
        assert done.returncode == 0, done.stdout
        creations.append(done.stdout)
        if profile == "4g.20gb":
            check("lgip_a100-40gb_580_ssup2_4g.txt", "-lgip")
    check("lgip_a100-40gb_580_ssup2_full.txt", "-lgip")
    # the default placements are the real ones (0:4, 4:2, 6:1); only the ids differ
    assert [line.split(" on GPU")[1] for line in creations] == [
        "  0 using profile MIG 4g.20gb (ID  5)\n", "  0 using profile MIG 2g.10gb (ID 14)\n",
        "  0 using profile MIG 1g.5gb (ID 19)\n"]
    edit(host, lambda data: [gi.update(id=SSUP2_IDS[gi["profile_id"]]) for gi in data["gpus"][0]["gpu_instances"]])
    check("lgi_a100-40gb_580_ssup2.txt", "-lgi")
    check("lcip_a100-40gb_580_ssup2_gi2.txt", "-gi", "2", "-lcip")
    done = host.smi("mig", "-i", "0", "-gi", "2", "-cci", "4g.20gb")
    assert done.stdout == ("Successfully created compute instance ID  0 on GPU  0 GPU instance ID  2 using profile "
                           "MIG 4g.20gb (ID  3)\n")
    check("lcip_a100-40gb_580_ssup2_gi2_used.txt", "-gi", "2", "-lcip")
    check("lcip_a100-40gb_580_ssup2_gi3.txt", "-gi", "3", "-lcip")
    for _ in range(2):
        assert host.smi("mig", "-i", "0", "-gi", "3", "-cci", "1c.2g.10gb").returncode == 0
    check("lcip_a100-40gb_580_ssup2_gi9.txt", "-gi", "9", "-lcip")
    assert host.smi("mig", "-i", "0", "-gi", "9", "-cci", "1g.5gb").returncode == 0
    check("lci_a100-40gb_580_ssup2.txt", "-lci")

    meta, expected = sample("L_a100-40gb_mig_580_ssup2.txt")
    real = expected.splitlines()
    uuids = [line.split("UUID: ")[1].rstrip(")") for line in real]

    def identity(data):
        data["clock"] = "Tue Feb 17 16:58:38 2026"
        gpu = data["gpus"][0]
        gpu.update(uuid=uuids[0], pci_bus_id="00000000:10:1C.0", persistence_mode=1,
                   telemetry={"temperature_c": 40, "power_draw_w": 43, "memory_used_mib": 249,
                              "bar1_total_mib": 24424})
        cis = [ci for gi in sorted(gpu["gpu_instances"], key=lambda g: g["id"])
               for ci in sorted(gi["compute_instances"], key=lambda c: c["id"])]
        for ci, uuid in zip(cis, uuids[1:]):
            ci["uuid"] = uuid
    edit(host, identity)
    compare(meta, expected, host.smi("-L").stdout)
    meta, expected = sample("summary_a100-40gb_mig_580_ssup2.txt")
    compare(meta, expected, host.smi("-i", "0").stdout, strip=True)


def _sections(text: str) -> list[tuple[str, list[str]]]:
    """A -q block as (top-level line, the lines nested under it), in order."""
    out = []
    for line in text.splitlines():
        if line.startswith("    ") and not line.startswith("     "):
            out.append((line.split(":")[0].strip(), [line]))
        elif line.startswith("     ") and out:
            out[-1][1].append(line)
    return out


def test_q_sections_as_a_real_h100_prints_them(host):
    meta, expected = sample("q_h100_565_thamada.txt")
    real_gpu = expected.split("\nGPU 00000000:18:00.0\n", 1)[1]
    real = dict(_sections(real_gpu))
    host.init("H100-SXM5-80GB", 8, "--driver-version", "565.57.01")
    field = {key: line.split(": ", 1)[1] for key, (line, *_rest) in real.items() if ": " in line}

    def real_state(data):
        data["cuda_driver_version"] = 12070
        data["gpus"][0].update(pci_bus_id="00000000:18:00.0", persistence_mode=1, serial=field["Serial Number"],
                               uuid=field["GPU UUID"], telemetry={"memory_used_mib": 1})
    edit(host, real_state)
    out = host.smi("-q").stdout
    header_real = [line for line in expected.split("\nGPU ")[0].splitlines() if "Timestamp" not in line]
    header_fake = [line for line in out.split("\nGPU ")[0].splitlines()[1:] if "Timestamp" not in line]
    assert header_fake == header_real, meta["source"]
    fake_gpu = out.split("\nGPU 00000000:18:00.0\n", 1)[1].split("\nGPU ", 1)[0]
    fake = _sections(fake_gpu)
    # sections gpusim prints only in part, or with values it does not model
    partial = {"PCI", "FB Memory Usage"}
    compared = [name for name, _ in fake if name not in partial]
    assert {"Display Mode", "Display Active", "Utilization", "ECC Mode", "ECC Errors", "Clocks",
            "Applications Clocks", "Max Clocks", "Processes"} <= set(compared)
    for name, lines in fake:
        assert name in real, f"-q prints {name!r}, which the real H100 does not"
        if name not in partial:
            assert lines == real[name], f"{meta['source']}: section {name!r}\n--- real\n{real[name]}\n--- fake\n{lines}"
        else:   # the same keys, in the real order (the values are gpusim's)
            keys = [line.split(":")[0].strip() for line in lines]
            real_keys = [line.split(":")[0].strip() for line in real[name]]
            assert keys == [k for k in real_keys if k in keys], name
    order = [name for name in real if name in dict(fake)]
    assert [name for name, _ in fake] == order, "the sections stand in the real tool's order"
    keyed = [line for line in (real_gpu + fake_gpu).splitlines() if ": " in line or line.endswith(" :")]
    assert {line.index(":") for line in keyed} == {42}


def test_every_fixture_is_tested():
    tested = set()
    with open(__file__, encoding="utf-8") as fh:
        here = fh.read()
    for name in os.listdir(FIXTURES):
        meta, _body = sample(name)
        assert name in here, f"fixture {name} has no test"
        assert meta.get("command") and meta.get("state") and meta.get("extent"), name
        tested.add(name)
    assert len(tested) >= 20
    json.dumps(sorted(tested))


def test_q_processes_nest_what_a_process_is_under_its_ids(host):
    meta, expected = sample("q_processes_a10g_dcgm-issue232.txt")
    host.init("A10", 1)
    assert host.gpusim("process", "add", "--gpu", "0", "--pid", "3402470", "--name", "", "--memory", "8716") == 0
    out = host.smi("-q").stdout
    section = out[out.index("    Processes\n"):]
    compare(meta, expected, section.rstrip("\n") + "\n")


def test_summary_persistence_off_and_the_date(host):
    """R550's GPU row with persistence mode off (Frogging-Family/nvidia-all#212: "NVIDIA GeForce
    RTX 4070        Off |   00000000:2D:00.0  On |"): "Off" starts where "On" does.  The date is
    asctime's, the day padded with a blank (tensorflow/docs#1616: "Thu Jul  9 12:19:17 2020")."""
    host.init("H100-SXM5-80GB", 1, "--driver-version", "550.40.07")
    edit(host, lambda data: data["gpus"][0].update(telemetry={"display_active": "On"}))
    out = host.smi().stdout.splitlines()
    assert out[8] == "|   0  NVIDIA H100 80GB HBM3          Off |   00000000:07:00.0  On |                    0 |"
    assert out[3].startswith("|-") and out[3].endswith("-+")
    assert re.fullmatch(r"[A-Z][a-z]{2} [A-Z][a-z]{2} [ 123]\d \d\d:\d\d:\d\d \d{4} {7}", out[0]), out[0]


def test_a_process_type_nvidia_smi_does_not_print_is_refused(host):
    from gpusim import device as dev
    host.init("A10", 1)
    data = st.load(host.path)
    with pytest.raises(dev.DriverError) as err:
        dev.add_process(data, 0, 4242, kind="MPS")
    assert err.value.detail == "process type 'MPS': one of C, G, C+G, M, M+C"
    assert host.gpusim("process", "add", "--gpu", "0", "--pid", "4242", "--type", "M+C") == 0
    assert "|    0  N/A  N/A             4242    M+C   python3" in host.smi().stdout
