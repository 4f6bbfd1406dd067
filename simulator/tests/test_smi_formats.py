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


@pytest.mark.parametrize("name,model", [
    ("lgip_b200_mig-parted-pr187.txt", "B200-180GB"),
    ("lgip_h100nvl_gpu-operator-pr900.txt", "H100-NVL-94GB"),
])
def test_lgip(host, name, model):
    meta, expected = sample(name)
    host.init(model, 1, "--mig-enabled")
    out = host.smi("mig", "-lgip").stdout
    assert out.startswith(expected), f"{meta['source']}\n--- real\n{expected}--- fake\n{out[:len(expected) + 200]}"


def test_lgi_rows_grouped_by_profile(host):
    meta, expected = sample("lgi_dcgm-issue138.txt")
    host.init("H100-SXM5-80GB", 2, "--mig-enabled")
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


def test_every_fixture_is_tested():
    tested = {"lgip_b200_mig-parted-pr187.txt", "lgip_h100nvl_gpu-operator-pr900.txt", "lgi_dcgm-issue138.txt",
              "L_mig_container-toolkit-issue203.txt", "cgi_failure_mig-guide.txt",
              "lcip_header_gpu-operator-issue622.txt"}
    assert set(os.listdir(FIXTURES)) == tested
    for name in tested:
        sample(name)
    json.dumps(sorted(tested))


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
