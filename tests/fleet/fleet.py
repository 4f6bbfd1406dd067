"""Fleet test hosts: booted Debian machines with real systemd and sshd, each with simulated GPUs.

    fleet.py up [--hosts N]   build the image once (cached), boot the hosts, write the inventory
    fleet.py down             stop every host this harness started (by PID), remove its namespaces
    fleet.py reboot HOST...   `gpusim reboot` on the host's state and a real restart of the machine
    fleet.py test             up, site.yml twice (second run changed=0), fleet checks, reboot, checks, down
    fleet.py status           what runs

How a host is made (needs root, systemd-nspawn and debootstrap; `make fleet-up` installs both):
* The image is a debootstrap'd Debian bookworm rootfs with systemd, dbus, python3, openssh-server and
  iproute2, built once and cached under .cache/fleet/ (git-ignored). Into it go the real
  nvidia-ml-py from the project's virtualenv (/usr/lib/python3/dist-packages/pynvml.py, where a
  distribution package would put it) and, ahead of it on sys.path, gpusim's pynvml shim
  (/usr/local/lib/python3.11/dist-packages), so that on the host `import pynvml` is the real
  binding over the simulated driver. gpusim's CLIs sit where NVIDIA's tools live (/usr/bin/nvidia-smi,
  nvidia-cuda-mps-control, nvidia-gridd) and unit files from simulator/systemd/ in /lib/systemd/system,
  as the driver packages would install them. The checkout is bind-mounted read-only at
  /opt/gpuops (/opt/gpusim links to its simulator/, whose catalogue is the collection's
  plugins/module_utils/_catalogue.py), so a change to it needs no rebuild.
* Each host boots from an overlay over the image (its own writable upper layer, kept across its
  reboots like a disk) with `systemd-nspawn --register=no --keep-unit -b`: systemd is PID 1.
* Network: one network namespace and one veth pair per host, a /30 out of FLEET_SUBNET
  (default 10.213.0.0/24) that exists only on this machine; nothing outside it is contacted
  once the image is built. Ansible reaches the host over SSH as root with a generated key.
* GPU state: the host's /var/lib/gpusim is a directory of the run, bind-mounted, so tests can
  inspect it and inject processes and faults from outside; on the host gpusim finds it at its
  default path, with no variable from the playbook.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import importlib.machinery
import ipaddress
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import yaml

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
HERE = os.path.join(ROOT, "tests", "fleet")
SIMULATOR = os.path.join(ROOT, "simulator")
CACHE = os.environ.get("FLEET_CACHE") or os.path.join(ROOT, ".cache", "fleet")
RUN = os.path.join(CACHE, "run")
HOSTS_FILE = os.path.join(HERE, "hosts.yml")
SUBNET = ipaddress.ip_network(os.environ.get("FLEET_SUBNET", "10.213.0.0/24"))
MIRROR = os.environ.get("FLEET_MIRROR", "http://deb.debian.org/debian")
SUITE = "bookworm"
PACKAGES = ["systemd", "systemd-sysv", "dbus", "python3", "python3-yaml", "openssh-server", "iproute2",
            "fuse3", "mdevctl"]   # vGPU hosts: gpusim's FUSE sysfs and the real mdevctl
# the real containerd of k8s_gpu_nodes hosts (Debian's package; not started at boot, see customise_image)
PACKAGES += ["containerd"]
NETNS_PREFIX = "gpuops-fleet-"
LINK_PREFIX = "gfl"
BOOT_TIMEOUT = 120
# the interpreter version of the image's python3 (bookworm): where the shim goes
IMAGE_PYTHON = "python3.11"
SSH_OPTS = ["-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null", "-o", "LogLevel=ERROR",
            "-o", "BatchMode=yes", "-o", "ConnectTimeout=5"]


class FleetError(Exception):
    pass


def log(msg: str) -> None:
    print(f"fleet: {msg}", flush=True)


def run(cmd: list[str], check: bool = True, **kwargs) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, check=False, text=True, capture_output=True, **kwargs)
    if check and proc.returncode:
        raise FleetError(f"{' '.join(cmd)} failed ({proc.returncode}): {(proc.stderr or proc.stdout).strip()[-2000:]}")
    return proc


# ------------------------------------------------------------------ preconditions and image

def preflight() -> None:
    """Fail with a message that says what to do when this machine cannot boot the fleet."""
    if os.geteuid() != 0:
        raise FleetError("the fleet test hosts need root (systemd-nspawn, network namespaces, overlay mounts). "
                         "Run `make test` as root, or `make test-quick` to leave the fleet out.")
    missing = [pkg for pkg, tool in (("systemd-container", "systemd-nspawn"), ("debootstrap", "debootstrap"))
               if not shutil.which(tool)]
    if missing:
        if not shutil.which("apt-get"):
            raise FleetError(f"install {' '.join(missing)} (no apt-get here), or run `make test-quick`")
        log(f"apt-get install {' '.join(missing)}")
        run(["apt-get", "update", "-qq"])
        run(["apt-get", "install", "-y", "-qq", *missing], env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"})
    for route in json.loads(run(["ip", "-j", "route", "show"]).stdout or "[]"):
        dst, dev = route.get("dst", "default"), str(route.get("dev", ""))
        if dst == "default" or dev.startswith(LINK_PREFIX):
            continue
        with contextlib.suppress(ValueError):
            if ipaddress.ip_network(dst, strict=False).overlaps(SUBNET):
                raise FleetError(f"FLEET_SUBNET {SUBNET} overlaps this machine's route {dst} (dev {dev}); "
                                 "set FLEET_SUBNET to a free private range")


def real_binding() -> str:
    """The real nvidia-ml-py of the project's virtualenv (the one the lock file pins)."""
    # past gpusim's shim, which PYTHONPATH=simulator (make bench) puts first
    search = [p for p in sys.path if os.path.abspath(p or os.curdir) != SIMULATOR]
    spec = importlib.machinery.PathFinder.find_spec("pynvml", search)
    if spec is None or spec.origin is None:
        raise FleetError("run the harness with the project's virtualenv python (it needs the real nvidia-ml-py)")
    return spec.origin


def fuse_binding() -> str:
    """mfusepy of the project's virtualenv (requirements/main.txt): gpusim's FUSE sysfs on vGPU hosts."""
    spec = importlib.machinery.PathFinder.find_spec("mfusepy", sys.path)
    if spec is None or spec.origin is None:
        raise FleetError("run the harness with the project's virtualenv python (it needs mfusepy)")
    return spec.origin


def image_key() -> str:
    digests = []
    for path in (real_binding(), fuse_binding()):
        with open(path, "rb") as fh:
            digests.append(hashlib.sha256(fh.read()).hexdigest())
    return hashlib.sha256(json.dumps([SUITE, PACKAGES, digests, IMAGE_PYTHON, 4]).encode()).hexdigest()[:12]


def build_image() -> str:
    """The cached rootfs, built by debootstrap the first time (about a minute)."""
    key = image_key()
    image = os.path.join(CACHE, f"image-{key}")
    if os.path.exists(os.path.join(image, ".complete")):
        return image
    for old in os.listdir(CACHE) if os.path.isdir(CACHE) else []:
        if old.startswith("image-"):
            shutil.rmtree(os.path.join(CACHE, old), ignore_errors=True)
    partial = image + ".partial"
    shutil.rmtree(partial, ignore_errors=True)
    os.makedirs(CACHE, exist_ok=True)
    log(f"building the host image with debootstrap ({SUITE}, {MIRROR}); cached in {os.path.relpath(image, ROOT)}")
    started = time.monotonic()
    proc = run(["debootstrap", "--variant=minbase", f"--include={','.join(PACKAGES)}", SUITE, partial, MIRROR],
               check=False)
    if proc.returncode:
        raise FleetError(f"debootstrap failed: {proc.stdout[-1500:]}{proc.stderr[-1500:]}")
    customise_image(partial)
    os.rename(partial, image)
    with open(os.path.join(image, ".complete"), "w") as fh:
        fh.write(key + "\n")
    log(f"image built in {time.monotonic() - started:.0f}s")
    return image


def customise_image(rootfs: str) -> None:
    def path(p: str) -> str:
        return os.path.join(rootfs, p.lstrip("/"))

    # the real binding where a distribution package puts it; gpusim's shim ahead of it
    shutil.copy2(real_binding(), path("/usr/lib/python3/dist-packages/pynvml.py"))
    shutil.copy2(fuse_binding(), path("/usr/lib/python3/dist-packages/mfusepy.py"))
    # NVIDIA's vGPU manager tools where the manager package puts them (gpusim's sriov-manage)
    os.makedirs(path("/usr/lib/nvidia"), exist_ok=True)
    os.symlink("/opt/gpusim/bin/sriov-manage", path("/usr/lib/nvidia/sriov-manage"))
    site = path(f"/usr/local/lib/{IMAGE_PYTHON}/dist-packages")
    os.makedirs(site, exist_ok=True)
    os.symlink("/opt/gpusim/pynvml.py", os.path.join(site, "pynvml.py"))
    os.symlink("/opt/gpusim/gpusim", os.path.join(site, "gpusim"))
    # the checkout is bound read-only at /opt/gpuops; gpusim finds the collection's catalogue
    # (plugins/module_utils/_catalogue.py) beside it there, as it does in a checkout
    os.symlink("/opt/gpuops/simulator", path("/opt/gpusim"))
    os.makedirs(path("/var/lib/gpusim"), exist_ok=True)
    for tool in ("nvidia-smi", "nvidia-cuda-mps-control", "nvidia-gridd"):
        os.symlink(f"/opt/gpusim/bin/{tool}", path(f"/usr/bin/{tool}"))
    # k8s_gpu_nodes: gpusim's nvidia-ctk where the Container Toolkit puts it; containerd only where a check starts it
    os.symlink("/opt/gpusim/bin/nvidia-ctk", path("/usr/bin/nvidia-ctk"))
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path("/etc/systemd/system/multi-user.target.wants/containerd.service"))
    with open(path("/usr/local/bin/gpusim"), "w") as fh:
        fh.write("#!/bin/sh\nexec python3 -m gpusim \"$@\"\n")
    os.chmod(path("/usr/local/bin/gpusim"), 0o755)
    # a quiet, quick boot: no getty on the console, no time sync daemon fighting the host's clock
    for unit in ("console-getty.service", "getty@tty1.service"):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path(f"/etc/systemd/system/getty.target.wants/{unit}"))
    os.makedirs(path("/root/.ssh"), mode=0o700, exist_ok=True)
    with open(path("/etc/ssh/sshd_config.d/fleet.conf"), "w") as fh:
        fh.write("PermitRootLogin prohibit-password\nPasswordAuthentication no\nUseDNS no\n")


# ------------------------------------------------------------------ hosts

def load_hosts(count: int | None = None, like: str | None = None) -> dict[str, dict]:
    """The hosts of tests/fleet/hosts.yml; with count, the first count of them, cycling through the
    list again (names suffixed -2, -3, ...; not rebooted) when count is larger (benchmarks).
    With like, count copies of that one listed host instead (a uniform fleet, for scaling)."""
    with open(HOSTS_FILE) as fh:
        listed = list(yaml.safe_load(fh)["hosts"].items())
    if like is not None:
        specs = dict(listed)
        if like not in specs:
            raise FleetError(f"no host {like!r} in {HOSTS_FILE}; listed: {', '.join(specs)}")
        listed = [(like, specs[like])]
    if count is None:
        return dict(listed)
    hosts = {}
    for n in range(count):
        name, spec = listed[n % len(listed)]
        rnd = n // len(listed)
        hosts[name if rnd == 0 else f"{name}-{rnd + 1}"] = spec if rnd == 0 else {**spec, "reboot": False}
    return hosts


def host_dir(name: str) -> str:
    return os.path.join(RUN, "hosts", name)


def addresses(index: int) -> tuple[str, str]:
    """(this machine's end, the host's end) of host number index's /30."""
    net = list(SUBNET.subnets(new_prefix=30))[index]
    first, second = list(net.hosts())
    return str(first), str(second)


def gpusim(state: str, *args: str) -> str:
    return run([sys.executable, "-m", "gpusim", "--state", state, *args],
               env={**os.environ, "PYTHONPATH": SIMULATOR}).stdout


def prepare_host(image: str, index: int, name: str, spec: dict, pubkey: str) -> dict:
    hdir = host_dir(name)
    upper, work, merged, state_dir = (os.path.join(hdir, d) for d in ("upper", "work", "root", "gpusim"))
    for d in (upper, work, merged, state_dir):
        os.makedirs(d, exist_ok=True)
    run(["mount", "-t", "overlay", "overlay", "-o", f"lowerdir={image},upperdir={upper},workdir={work}", merged])
    init = ["init", "--model", spec["model"], "--gpus", str(spec.get("gpus", 1)), "--host", name]
    if spec.get("vgpu_guest"):
        init += ["--vgpu-guest", spec["vgpu_guest"]]
    for flag in ("passthrough_vm", "mig_enabled"):
        if spec.get(flag):
            init.append("--" + flag.replace("_", "-"))
    gpusim(os.path.join(state_dir, "state.json"), *init)

    def write(p: str, content: str, mode: int = 0o644) -> None:
        target = os.path.join(merged, p.lstrip("/"))
        os.makedirs(os.path.dirname(target), exist_ok=True)
        with open(target, "w") as fh:
            fh.write(content)
        os.chmod(target, mode)

    write("/etc/hostname", name + "\n")
    write("/etc/hosts", f"127.0.0.1 localhost\n127.0.1.1 {name}\n")
    write("/root/.ssh/authorized_keys", pubkey, 0o600)
    # unit files NVIDIA's driver packages install (simulated daemons behind them)
    units = os.path.join(SIMULATOR, "systemd")
    for unit in sorted(os.listdir(units)) if os.path.isdir(units) else []:
        with open(os.path.join(units, unit)) as fh:
            write(f"/lib/systemd/system/{unit}", fh.read())
    if spec.get("vgpu_host"):
        vgpu_host_files(write, merged)
    mine, theirs = addresses(index)
    netns, link = f"{NETNS_PREFIX}{index}", f"{LINK_PREFIX}{index}"
    run(["ip", "netns", "add", netns])
    run(["ip", "link", "add", f"{link}h", "type", "veth", "peer", "name", f"{link}c"])
    run(["ip", "link", "set", f"{link}c", "netns", netns])
    run(["ip", "addr", "add", f"{mine}/30", "dev", f"{link}h"])
    run(["ip", "link", "set", f"{link}h", "up"])
    run(["ip", "-n", netns, "link", "set", f"{link}c", "name", "eth0"])
    run(["ip", "-n", netns, "addr", "add", f"{theirs}/30", "dev", "eth0"])
    run(["ip", "-n", netns, "link", "set", "eth0", "up"])
    run(["ip", "-n", netns, "link", "set", "lo", "up"])
    info = {"name": name, "index": index, "address": theirs, "netns": netns, "root": merged,
            "vgpu_host": bool(spec.get("vgpu_host")),
            "state": os.path.join(state_dir, "state.json"), "state_dir": state_dir}
    with open(os.path.join(hdir, "host.json"), "w") as fh:
        json.dump(info, fh)
    return info


# A vGPU host's kernel interfaces: gpusim serves its sysfs through FUSE (simulator/gpusim/sysfs.py) at
# /run/gpusim-sys, and the unit binds the parts the vGPU manager's kernel side would create over the
# container's /sys (the machine's sysfs, read-only, as systemd-nspawn mounts it): /sys/bus and /sys/class
# (mdev_bus and bus/mdev do not exist without the mdev module), the PCI devices they link to, the IOMMU
# groups, and /sys/module (the nvidia module, loaded, which the vGPU role's preflight looks for). Before the
# vGPU manager's stand-in and every unit that opens them (gpuops-vgpu, libvirt).
GPUSIM_SYSFS_UNIT = """# gpusim's live /sys of a simulated vGPU hypervisor (tests/fleet/fleet.py); not on real hosts.
[Unit]
Description=gpusim sysfs of the simulated vGPU host (FUSE), bound over /sys
After=local-fs.target
Before=nvidia-vgpu-mgr.service gpuops-vgpu.service libvirtd.service

[Service]
Type=simple
ExecStartPre=/bin/mkdir -p /run/gpusim-sys
ExecStart=/usr/bin/python3 -m gpusim sysfs mount /run/gpusim-sys
ExecStartPost=/usr/local/sbin/gpusim-sysfs-bind

[Install]
WantedBy=multi-user.target
"""
GPUSIM_SYSFS_BIND = """#!/bin/sh
# Bind gpusim's FUSE sysfs over the vGPU paths of /sys (gpusim-sysfs.service, ExecStartPost).
set -eu
i=0
until mountpoint -q /run/gpusim-sys; do
  i=$((i + 1)); [ "$i" -lt 200 ] || { echo "gpusim sysfs did not mount /run/gpusim-sys" >&2; exit 1; }
  sleep 0.1
done
for part in bus class devices/pci0000:00 kernel/iommu_groups module; do
  [ -d "/sys/$part" ] || { echo "/sys/$part is missing: nothing to bind gpusim's $part over" >&2; exit 1; }
  mount --bind "/run/gpusim-sys/$part" "/sys/$part"
done
"""
# The vGPU manager's stand-in: the unit NVIDIA's vGPU manager package installs (nvidia-vgpu-mgr.service)
# and its daemon's path, which the vgpu_host role's preflight looks for; the daemon does nothing here.
VGPU_MGR_UNIT = """# Stand-in for NVIDIA's nvidia-vgpu-mgr.service on the fleet's simulated vGPU hosts (tests/fleet/fleet.py).
[Unit]
Description=NVIDIA vGPU Manager Daemon (gpusim stand-in)
After=gpusim-sysfs.service
Requires=gpusim-sysfs.service

[Service]
Type=simple
ExecStart=/usr/bin/nvidia-vgpu-mgr

[Install]
WantedBy=multi-user.target
"""


def vgpu_host_files(write, root: str) -> None:
    write("/etc/systemd/system/gpusim-sysfs.service", GPUSIM_SYSFS_UNIT)
    write("/usr/local/sbin/gpusim-sysfs-bind", GPUSIM_SYSFS_BIND, 0o755)
    write("/etc/systemd/system/nvidia-vgpu-mgr.service", VGPU_MGR_UNIT)
    write("/usr/bin/nvidia-vgpu-mgr", "#!/bin/sh\n# gpusim stand-in for NVIDIA's vGPU manager daemon\nexec sleep infinity\n",
          0o755)
    wants = os.path.join(root, "etc/systemd/system/multi-user.target.wants")
    os.makedirs(wants, exist_ok=True)
    for unit in ("gpusim-sysfs.service", "nvidia-vgpu-mgr.service"):
        with contextlib.suppress(FileExistsError):
            os.symlink(f"/etc/systemd/system/{unit}", os.path.join(wants, unit))


def boot(info: dict) -> None:
    """Start systemd-nspawn for the host (detached) and wait until systemd is running and sshd answers."""
    hdir = host_dir(info["name"])
    # each machine in a cgroup of its own: with --keep-unit they would otherwise share this process's
    # cgroup, and every container's systemd would create and remove the same /system.slice/... below it
    enter = "".join(f'echo $$ > "{d}/cgroup.procs" && ' for d in cgroup_dirs(info["name"], create=True))
    with open(os.path.join(hdir, "boot.log"), "a") as out:
        proc = subprocess.Popen(
            ["sh", "-c", enter + 'exec "$@"', "sh", "systemd-nspawn", "--register=no", "--keep-unit", "-b", "-D", info["root"], "-M", info["name"],
             f"--network-namespace-path=/run/netns/{info['netns']}", "--console=read-only",
             f"--bind-ro={ROOT}:/opt/gpuops", f"--bind={info['state_dir']}:/var/lib/gpusim",
             *(["--bind=/dev/fuse"] if info.get("vgpu_host") else [])],
            stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    with open(os.path.join(hdir, "nspawn.pid"), "w") as fh:
        fh.write(f"{proc.pid}\n")
    wait_running(info, proc)


def cgroup_dirs(name: str, create: bool = False) -> list[str]:
    """This process's cgroup in the systemd (v1 named) and unified hierarchies, plus one level for the host."""
    dirs = []
    with open("/proc/self/cgroup") as fh:
        for line in fh:
            hierarchy, controllers, path = line.rstrip("\n").split(":", 2)
            if controllers == "name=systemd":
                base = "/sys/fs/cgroup/systemd"
            elif hierarchy == "0" and not controllers:
                base = "/sys/fs/cgroup/unified" if os.path.isdir("/sys/fs/cgroup/unified") else "/sys/fs/cgroup"
            else:
                continue
            if os.path.isdir(base):
                dirs.append(os.path.join(base + path.rstrip("/"), f"{NETNS_PREFIX}{name}"))
    if create:
        for d in dirs:
            os.makedirs(d, exist_ok=True)
    return dirs


def remove_cgroups(name: str) -> None:
    for top in cgroup_dirs(name):
        for dirpath, _dirs, _files in os.walk(top, topdown=False):
            with contextlib.suppress(OSError):
                os.rmdir(dirpath)


def leader_pid(nspawn_pid: int) -> int | None:
    """The container's PID 1 as this machine sees it: nspawn's child."""
    try:
        with open(f"/proc/{nspawn_pid}/task/{nspawn_pid}/children") as fh:
            children = fh.read().split()
    except OSError:
        return None
    return int(children[0]) if children else None


def in_host(info: dict, *cmd: str, check: bool = False) -> subprocess.CompletedProcess:
    leader = leader_pid(read_pid(info["name"]) or 0)
    if leader is None:
        raise FleetError(f"{info['name']} does not run")
    return run(["nsenter", "-t", str(leader), "-m", "-u", "-i", "-n", "-p", *cmd], check=check)


def wait_running(info: dict, proc: subprocess.Popen) -> None:
    deadline = time.monotonic() + BOOT_TIMEOUT
    status = ""
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            with open(os.path.join(host_dir(info["name"]), "boot.log")) as fh:
                tail = fh.read()[-1500:]
            raise FleetError(f"{info['name']}: systemd-nspawn exited ({proc.returncode}):\n{tail}")
        if leader_pid(proc.pid):
            status = in_host(info, "systemctl", "is-system-running").stdout.strip()
            if status in ("running", "degraded"):
                break
        time.sleep(0.5)
    if status != "running":
        failed = ""
        if status:
            failed = (in_host(info, "systemctl", "--failed", "--no-legend").stdout.strip() + "\n" +
                      in_host(info, "journalctl", "-b", "-p", "err", "--no-pager", "-n", "20").stdout.strip())
        raise FleetError(f"{info['name']}: systemd is {status or 'not up'} after {BOOT_TIMEOUT}s. {failed}")
    while time.monotonic() < deadline:
        if run(["ssh", *ssh_args(info), "true"], check=False).returncode == 0:
            return
        time.sleep(0.5)
    raise FleetError(f"{info['name']}: sshd does not answer on {info['address']}")


def ssh_args(info: dict) -> list[str]:
    return [*SSH_OPTS, "-i", os.path.join(RUN, "id_ed25519"), f"root@{info['address']}"]


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            return b"systemd-nspawn" in fh.read()
    except OSError:
        return False


def read_pid(name: str) -> int | None:
    try:
        with open(os.path.join(host_dir(name), "nspawn.pid")) as fh:
            return int(fh.read().strip())
    except (OSError, ValueError):
        return None


def write_inventory(infos: list[dict], specs: dict[str, dict]) -> str:
    groups: dict[str, dict] = {"fleet_rebooted": {"hosts": {}}}
    hostvars = {}
    for info in infos:
        hostvars[info["name"]] = {
            "ansible_host": info["address"], "ansible_user": "root",
            "ansible_ssh_private_key_file": os.path.join(RUN, "id_ed25519"),
            "ansible_ssh_common_args": " ".join(SSH_OPTS[:6]),
            "ansible_python_interpreter": "/usr/bin/python3"}
        spec = specs[info["name"]]
        for group in spec["groups"]:
            groups.setdefault(group, {"hosts": {}})["hosts"][info["name"]] = None
        if spec.get("reboot"):
            groups["fleet_rebooted"]["hosts"][info["name"]] = None
    inventory = {"all": {"vars": {"ansible_become": False}, "hosts": hostvars, "children": groups}}
    path = os.path.join(RUN, "inventory.yml")
    with open(path, "w") as fh:
        fh.write("# written by tests/fleet/fleet.py; group variables: demo/group_vars (the demo's)\n")
        yaml.safe_dump(inventory, fh, sort_keys=False)
    link = os.path.join(RUN, "group_vars")
    if not os.path.islink(link):
        os.symlink(os.path.join(ROOT, "demo", "group_vars"), link)
    return path


# ------------------------------------------------------------------ up / down / reboot

def up(count: int | None = None, like: str | None = None, specs: dict[str, dict] | None = None) -> list[dict]:
    """Boot the hosts of hosts.yml (see load_hosts), or the hosts of ``specs`` (name -> spec, benchmarks)."""
    preflight()
    down(quiet=True)  # leftovers of a crashed run first
    image = build_image()
    specs = specs if specs is not None else load_hosts(count, like)
    if len(specs) > len(list(SUBNET.subnets(new_prefix=30))):
        raise FleetError(f"FLEET_SUBNET {SUBNET} has room for fewer hosts than {len(specs)}")
    os.makedirs(RUN, exist_ok=True)
    key = os.path.join(RUN, "id_ed25519")
    run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "gpuops-fleet", "-f", key])
    with open(key + ".pub") as fh:
        pubkey = fh.read()
    started = time.monotonic()
    infos = [prepare_host(image, i, name, spec, pubkey) for i, (name, spec) in enumerate(specs.items())]
    with ThreadPoolExecutor(max_workers=len(infos)) as pool:
        list(pool.map(boot, infos))
    inventory = write_inventory(infos, specs)
    log(f"{len(infos)} hosts running systemd and sshd in {time.monotonic() - started:.0f}s; "
        f"inventory {inventory}")
    return infos


def stop_host(name: str, timeout: float = 30) -> None:
    pid = read_pid(name)
    if pid is None or not alive(pid):
        return
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)  # nspawn asks the container's systemd to power off
    deadline = time.monotonic() + timeout
    while alive(pid) and time.monotonic() < deadline:
        time.sleep(0.2)
    if alive(pid):
        leader = leader_pid(pid)
        for victim in (leader, pid):
            if victim:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(victim, signal.SIGKILL)
        while alive(pid):
            time.sleep(0.1)


def down(quiet: bool = False) -> None:
    hosts_root = os.path.join(RUN, "hosts")
    names = sorted(os.listdir(hosts_root)) if os.path.isdir(hosts_root) else []
    with ThreadPoolExecutor(max_workers=max(1, len(names))) as pool:
        list(pool.map(stop_host, names))
    for name in names:
        remove_cgroups(name)
        root = os.path.join(hosts_root, name, "root")
        if os.path.ismount(root):
            run(["umount", root], check=False)
            if os.path.ismount(root):
                run(["umount", "-l", root], check=False)
    for netns in run(["ip", "netns", "list"]).stdout.split("\n"):
        netns = netns.split(" ")[0]
        if netns.startswith(NETNS_PREFIX):
            run(["ip", "netns", "delete", netns], check=False)
    for line in run(["ip", "-o", "link", "show"]).stdout.splitlines():
        match = re.match(rf"^\d+: ({LINK_PREFIX}\d+h)@", line)
        if match:
            run(["ip", "link", "delete", match.group(1)], check=False)
    if os.path.isdir(RUN):
        shutil.rmtree(RUN, ignore_errors=True)
    if names and not quiet:
        log(f"{len(names)} hosts stopped, namespaces and overlays removed")


def load_info(name: str) -> dict:
    try:
        with open(os.path.join(host_dir(name), "host.json")) as fh:
            return json.load(fh)
    except OSError:
        raise FleetError(f"no fleet host {name} (make fleet-up first)") from None


def reboot(name: str) -> float:
    """A real restart: systemd reboots the machine (nspawn exits 133), the GPUs lose their state as on
    a real reboot (`gpusim reboot`), the machine boots again from its disk (its overlay)."""
    info = load_info(name)
    pid = read_pid(name)
    started = time.monotonic()
    in_host(info, "systemctl", "reboot", check=True)
    while alive(pid):
        if time.monotonic() - started > BOOT_TIMEOUT:
            raise FleetError(f"{name} did not go down within {BOOT_TIMEOUT}s")
        time.sleep(0.2)
    gpusim(info["state"], "reboot")
    boot(info)
    seconds = time.monotonic() - started
    log(f"{name} rebooted, systemd running again after {seconds:.1f}s")
    return seconds


# ------------------------------------------------------------------ the test

def ansible_env() -> dict:
    return {**os.environ, "ANSIBLE_NOCOLOR": "1", "ANSIBLE_FORCE_COLOR": "0", "ANSIBLE_HOST_KEY_CHECKING": "false",
            "ANSIBLE_FORKS": "10", "ANSIBLE_DISPLAY_SKIPPED_HOSTS": "false", "ANSIBLE_CALLBACK_RESULT_FORMAT": "yaml",
            "ANSIBLE_PIPELINING": "true", "ANSIBLE_INVENTORY_UNPARSED_WARNING": "false"}


def playbook(path: str, *extra: str, quiet: bool = False) -> str:
    cmd = ["ansible-playbook", "-i", os.path.join(RUN, "inventory.yml"), path, *extra]
    log(" ".join(os.path.relpath(c, ROOT) if c.startswith(ROOT) else c for c in cmd[1:]))
    proc = subprocess.Popen(cmd, cwd=ROOT, env=ansible_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)
    lines = []
    for line in proc.stdout:
        lines.append(line)
        if not quiet:
            sys.stdout.write(line)
    if proc.wait():
        if quiet:
            sys.stdout.write("".join(lines))
        raise FleetError(f"{os.path.relpath(path, ROOT)} failed (rc {proc.returncode})")
    return "".join(lines)


def recap(output: str) -> dict[str, dict[str, int]]:
    counts = {}
    for line in output.rsplit("PLAY RECAP", 1)[-1].splitlines():
        match = re.match(r"^(\S+)\s+:\s+(.*)$", line)
        if match:
            counts[match.group(1)] = {k: int(v) for k, v in re.findall(r"(\w+)=(\d+)", match.group(2))}
    return counts


def checks(phase: str) -> list[str]:
    folder = os.path.join(ROOT, "tests", "fleet_checks")
    names = sorted(n for n in os.listdir(folder) if n.endswith(".yml"))
    if phase == "after_apply":
        names = [n for n in names if not re.search(r"_(before|after)_reboot\.yml$", n)]
    else:
        names = [n for n in names if n.endswith(f"_{phase}.yml")]
    only = [f for f in os.environ.get("FLEET_CHECKS", "").split(",") if f]  # e.g. FLEET_CHECKS=mig,mps
    if only:
        names = [n for n in names if re.sub(r"_(before|after)_reboot$", "", n[:-4]) in only]
    return [os.path.join(folder, n) for n in names]


def fleet_test() -> int:
    started = time.monotonic()
    try:
        infos = up()
        site = os.path.join(ROOT, "playbooks", "site.yml")
        playbook(site)
        second = recap(playbook(site))
        changed = {host: c.get("changed", 0) for host, c in second.items() if c.get("changed", 0)}
        if changed or len(second) != len(infos):
            raise FleetError(f"second site.yml run: changed on {changed}, hosts in recap {sorted(second)}")
        log(f"second site.yml run: changed=0 on all {len(second)} hosts")
        extra = ["-e", f"fleet_run_dir={RUN}"]
        for check in checks("after_apply"):
            playbook(check, *extra)
        for check in checks("before_reboot"):
            playbook(check, *extra)
        specs = load_hosts()
        rebooted = [name for name, spec in specs.items() if spec.get("reboot")]
        with ThreadPoolExecutor(max_workers=max(1, len(rebooted))) as pool:
            list(pool.map(reboot, rebooted))
        for check in checks("after_reboot"):
            playbook(check, *extra)
        log(f"fleet test passed in {time.monotonic() - started:.0f}s")
        return 0
    except FleetError as exc:
        print(f"fleet: FAILED: {exc}", file=sys.stderr)
        return 1
    finally:
        down()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", maxsplit=1)[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("up")
    p.add_argument("--hosts", type=int, help="only the first N hosts of tests/fleet/hosts.yml")
    p.add_argument("--like", help="N copies of this one host of tests/fleet/hosts.yml (with --hosts)")
    sub.add_parser("down")
    p = sub.add_parser("reboot")
    p.add_argument("names", nargs="+")
    sub.add_parser("test")
    sub.add_parser("status")
    args = parser.parse_args(argv)
    try:
        if args.cmd == "up":
            up(args.hosts, args.like)
        elif args.cmd == "down":
            down()
        elif args.cmd == "reboot":
            for name in args.names:
                reboot(name)
        elif args.cmd == "test":
            return fleet_test()
        elif args.cmd == "status":
            hosts_root = os.path.join(RUN, "hosts")
            for name in sorted(os.listdir(hosts_root)) if os.path.isdir(hosts_root) else []:
                pid = read_pid(name)
                print(f"{name}: {'running' if pid and alive(pid) else 'stopped'} {load_info(name)['address']}")
    except FleetError as exc:
        print(f"fleet: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        if args.cmd == "up":
            down()
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
