"""gpusim's vGPU host: the driver's answers (vgpu.py) and the live sysfs over FUSE (sysfs.py), with mdevctl."""

from __future__ import annotations

import errno
import os
import shutil
import subprocess
import sys
import time

import pytest

from gpusim import catalogue, device, vgpu
from gpusim import state as st

U1 = "4b20d080-1b54-4048-85b3-a6a62d165c01"
U2 = "4b20d080-1b54-4048-85b3-a6a62d165c02"


def types(gpu):
    return {t["name"]: t for t in vgpu.model(gpu)["types"]}


def kernel_error(code, fn, *args):
    with pytest.raises(vgpu.KernelError) as info:
        fn(*args)
    assert info.value.errno == code, info.value


def test_mdev_on_the_pf_equal_size(host):
    data = host.init("T4").state()
    gpu = data["gpus"][0]
    t = types(gpu)
    assert vgpu.parents(data, gpu) == ["0000:07:00.0"]
    assert vgpu.available_on(data, gpu, "0000:07:00.0", t["T4-4Q"]) == 4
    vgpu.create(data, gpu, "0000:07:00.0", t["T4-4Q"]["type_id"], U1 + "\n")
    assert vgpu.available_on(data, gpu, "0000:07:00.0", t["T4-4Q"]) == 3
    # equal-size mode: every other type has no instance left once one vGPU exists
    assert vgpu.available_on(data, gpu, "0000:07:00.0", t["T4-2Q"]) == 0
    kernel_error(errno.ENOSPC, vgpu.create, data, gpu, "0000:07:00.0", t["T4-2Q"]["type_id"], U2)
    kernel_error(errno.EEXIST, vgpu.create, data, gpu, "0000:07:00.0", t["T4-4Q"]["type_id"], U1.upper())
    kernel_error(errno.EINVAL, vgpu.create, data, gpu, "0000:07:00.0", t["T4-4Q"]["type_id"], "not-a-uuid")
    vgpu.section(gpu)["mixed_size"] = True
    assert vgpu.available_on(data, gpu, "0000:07:00.0", t["T4-2Q"]) == 6


def test_sriov_one_vgpu_per_vf(host):
    data = host.init("A100-SXM4-40GB").state()
    gpu = data["gpus"][0]
    t = types(gpu)["A100X-4C"]
    assert vgpu.parents(data, gpu) == []
    kernel_error(errno.ERANGE, vgpu.set_numvfs, data, gpu, "11")
    vgpu.set_numvfs(data, gpu, "10\n")
    kernel_error(errno.EBUSY, vgpu.set_numvfs, data, gpu, "4")
    vfs = vgpu.parents(data, gpu)
    assert vfs[:5] == ["0000:07:00.4", "0000:07:00.5", "0000:07:00.6", "0000:07:00.7", "0000:07:01.0"]
    vgpu.create(data, gpu, vfs[0], t["type_id"], U1)
    assert vgpu.available_on(data, gpu, vfs[0], t) == 0
    assert vgpu.available_on(data, gpu, vfs[1], t) == 1
    kernel_error(errno.ENOSPC, vgpu.create, data, gpu, vfs[0], t["type_id"], U2)
    kernel_error(errno.EBUSY, vgpu.set_numvfs, data, gpu, "0")
    vgpu.section(gpu)["vgpus"][0]["open"] = True
    kernel_error(errno.EBUSY, vgpu.remove, gpu, vgpu.section(gpu)["vgpus"][0])


def test_mig_backed_types_need_free_gpu_instances(host):
    data = host.init("A100-SXM4-40GB", 1, "--mig-enabled").state()
    gpu = data["gpus"][0]
    vgpu.set_numvfs(data, gpu, "10")
    t = types(gpu)
    vfs = vgpu.parents(data, gpu)
    assert vgpu.available_on(data, gpu, vfs[0], t["A100X-1-5C"]) == 0
    assert vgpu.available_on(data, gpu, vfs[0], t["A100X-4C"]) == 0       # time-sliced: MIG mode off only
    prof = next(p for p in catalogue.gi_profiles(catalogue.find_model(gpu["model"])) if p["name"] == "1g.5gb")
    device.create_gi(data, 0, prof["id"])
    assert vgpu.available_on(data, gpu, vfs[0], t["A100X-1-5C"]) == 1
    vgpu.create(data, gpu, vfs[0], t["A100X-1-5C"]["type_id"], U1)
    assert vgpu.available_on(data, gpu, vfs[1], t["A100X-1-5C"]) == 0      # the one GI is taken
    kernel_error(errno.ENOSPC, vgpu.create, data, gpu, vfs[1], t["A100X-1-5C"]["type_id"], U2)


def test_vendor_vfio_creatable_types_shrink(host):
    data = host.init("L40S").state()
    gpu = data["gpus"][0]
    vgpu.set_numvfs(data, gpu, "32")
    vfs = vgpu.vfs(gpu)
    assert vgpu.parents(data, gpu) == []
    text = vgpu.creatable_text(vgpu.creatable(data, gpu, vfs[0]))
    assert text.splitlines()[:2] == ["ID    : vGPU Name", "1147  : NVIDIA L40S-1Q"]
    t = types(gpu)["L40S-24Q"]
    vgpu.set_current_type(data, gpu, vfs[0], f"{t['type_id']}\n")
    assert [x["name"] for x in vgpu.creatable(data, gpu, vfs[1])] == ["L40S-24Q"]
    assert vgpu.creatable(data, gpu, vfs[0]) == []
    kernel_error(errno.EBUSY, vgpu.set_current_type, data, gpu, vfs[0], str(t["type_id"]))
    kernel_error(errno.EINVAL, vgpu.set_current_type, data, gpu, vfs[1], str(types(gpu)["L40S-1Q"]["type_id"]))
    vgpu.set_current_type(data, gpu, vfs[1], str(t["type_id"]))
    assert vgpu.creatable_text(vgpu.creatable(data, gpu, vfs[2])) == "ID    : vGPU Name\n"   # framebuffer used up
    vgpu.set_current_type(data, gpu, vfs[1], "0")
    assert len(vgpu.section(gpu)["vgpus"]) == 1


def test_reboot_forgets_vfs_and_vgpus(host):
    data = host.init("A100-SXM4-40GB").state()
    gpu = data["gpus"][0]
    vgpu.set_numvfs(data, gpu, "10")
    vgpu.create(data, gpu, vgpu.vfs(gpu)[0], types(gpu)["A100X-4C"]["type_id"], U1)
    device.reboot(data)
    assert vgpu.section(gpu) == {"numvfs": 0, "vgpus": [], "mixed_size": False}


# --------------------------------------------------------------------------- over FUSE

def _fuse_usable() -> str:
    try:
        import mfusepy  # noqa: F401
    except (ImportError, OSError) as exc:
        return f"mfusepy unusable: {exc}"
    if os.geteuid() != 0 or not os.path.exists("/dev/fuse") or not shutil.which("fusermount3"):
        return "needs root, /dev/fuse and fusermount3 (Debian fuse3)"
    return ""


@pytest.fixture
def mounted(host, tmp_path):
    why = _fuse_usable()
    if why:
        pytest.skip(why)
    root = tmp_path / "sys"
    root.mkdir()

    def start(model, *extra):
        host.init(model, 1, *extra)
        proc = subprocess.Popen([sys.executable, "-m", "gpusim", "sysfs", "mount", str(root)],
                                env={**os.environ, "PYTHONPATH": os.path.dirname(os.path.dirname(vgpu.__file__))},
                                stderr=subprocess.PIPE)
        for _attempt in range(100):
            if os.path.ismount(root):
                break
            time.sleep(0.05)
        else:
            proc.kill()
            pytest.fail(f"sysfs did not mount: {proc.stderr.read().decode()}")
        started.append(proc)
        return root

    started = []
    yield start
    for proc in started:
        subprocess.run(["fusermount3", "-u", str(root)], check=False)
        proc.wait(timeout=10)


def write(path, text):
    with open(path, "w") as fh:
        fh.write(text)


def read(path):
    with open(path) as fh:
        return fh.read()


def test_sysfs_mdev_create_and_remove_with_kernel_errors(host, mounted):
    root = mounted("A100-SXM4-40GB")
    pf = root / "bus/pci/devices/0000:07:00.0"
    assert read(pf / "sriov_totalvfs") == "10\n" and read(pf / "sriov_numvfs") == "0\n"
    assert not os.listdir(root / "class/mdev_bus")
    assert os.listdir(root / "module") == ["nvidia"]
    assert read(root / "module/nvidia/version") == host.state()["driver_version"] + "\n"
    write(pf / "sriov_numvfs", "10")
    assert os.readlink(pf / "virtfn0") == "../0000:07:00.4"
    vf = root / "class/mdev_bus/0000:07:00.4"
    t = types(host.state()["gpus"][0])["A100X-4C"]
    tdir = vf / f"mdev_supported_types/nvidia-{t['type_id']}"
    assert read(tdir / "name") == "NVIDIA A100X-4C\n"
    assert read(tdir / "available_instances") == "1\n"
    assert "max_instance=10" in read(tdir / "description")
    write(tdir / "create", U1 + "\n")
    assert read(tdir / "available_instances") == "0\n"
    assert os.listdir(root / "bus/mdev/devices") == [U1]
    assert os.path.realpath(root / "bus/mdev/devices" / U1) == str(root / "devices/pci0000:00/0000:07:00.4" / U1)
    assert os.readlink(root / "bus/mdev/devices" / U1 / "mdev_type") == f"../mdev_supported_types/nvidia-{t['type_id']}"
    with pytest.raises(OSError) as info:
        write(tdir / "create", U2)
    assert info.value.errno == errno.ENOSPC
    with pytest.raises(OSError) as info:
        write(root / "class/mdev_bus/0000:07:00.5" / f"mdev_supported_types/nvidia-{t['type_id']}" / "create", "x")
    assert info.value.errno == errno.EINVAL
    assert host.gpusim("vgpu", "open", U1) == 0
    with pytest.raises(OSError) as info:
        write(root / "bus/mdev/devices" / U1 / "remove", "1")
    assert info.value.errno == errno.EBUSY
    assert host.gpusim("vgpu", "close", U1) == 0
    write(root / "bus/mdev/devices" / U1 / "remove", "1")
    assert os.listdir(root / "bus/mdev/devices") == []
    assert st.load(host.path)["gpus"][0]["vgpu"]["vgpus"] == []


def test_sysfs_answers_a_change_of_the_state_made_by_another_process(host, mounted):
    # the mount keeps the nodes it looked up until the state changes: a change made outside it (here, by this
    # process through the state file) shows in the next read of a file, and in the next listing
    root = mounted("A100-SXM4-40GB")
    pf = root / "bus/pci/devices/0000:07:00.0"
    assert read(pf / "sriov_numvfs") == "0\n" and not os.listdir(root / "class/mdev_bus")
    with st.transaction(host.path) as state:
        vgpu.set_numvfs(state, state["gpus"][0], "10")
    assert read(pf / "sriov_numvfs") == "10\n"
    assert len(os.listdir(root / "class/mdev_bus")) == 10
    with st.transaction(host.path) as state:
        vgpu.set_numvfs(state, state["gpus"][0], "0")
    assert read(pf / "sriov_numvfs") == "0\n" and not os.path.exists(pf / "virtfn0")


def test_sysfs_vendor_vfio(host, mounted):
    root = mounted("L40S")
    pf = root / "bus/pci/devices/0000:07:00.0"
    write(pf / "sriov_numvfs", "32")
    vf = root / "bus/pci/devices/0000:07:00.2/nvidia"
    assert read(vf / "current_vgpu_type") == "0\n"
    lines = read(vf / "creatable_vgpu_types").splitlines()
    assert lines[0] == "ID    : vGPU Name" and len(lines) == 18
    write(vf / "current_vgpu_type", "1147")
    assert read(vf / "current_vgpu_type") == "1147\n"
    assert read(vf / "creatable_vgpu_types") == "ID    : vGPU Name\n"
    write(vf / "current_vgpu_type", "0")
    assert read(vf / "current_vgpu_type") == "0\n"


def test_sriov_manage_and_mdevctl_in_a_mount_namespace(host, mounted, tmp_path):
    if not shutil.which("mdevctl") or not shutil.which("unshare"):
        pytest.skip("needs mdevctl (Debian mdevctl) and unshare")
    root = mounted("A100-SXM4-40GB")
    etc = tmp_path / "mdevctl.d"
    (etc / "scripts.d/callouts").mkdir(parents=True)
    (etc / "scripts.d/notifiers").mkdir(parents=True)
    bindir = os.path.join(os.path.dirname(os.path.dirname(vgpu.__file__)), "bin")
    t = types(host.state()["gpus"][0])["A100X-8C"]
    script = f"""set -e
mount --bind {root} /sys
mount --bind {etc} /etc/mdevctl.d
{bindir}/sriov-manage -e ALL
mdevctl start -u {U1} -p 0000:07:00.5 -t nvidia-{t['type_id']}
mdevctl define --auto -u {U1}
mdevctl list
"""
    out = subprocess.run(["unshare", "-m", "sh", "-c", script], capture_output=True, text=True, check=False)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines() == [
        "Enabling VFs on 0000:07:00.0", f"{U1} 0000:07:00.5 nvidia-{t['type_id']} auto (defined)"]
    assert (etc / "0000:07:00.5" / U1).is_file()
    assert [v["uuid"] for v in host.state()["gpus"][0]["vgpu"]["vgpus"]] == [U1]
