#!/usr/bin/env bash
# One simulated hypervisor, inside its own mount namespace (run by runme.sh under unshare -m).
set -eux
host=$1; shift
py="${ANSIBLE_TEST_PYTHON_INTERPRETER}"
dir="${GPUSIM_DIR}/${host}"
mkdir -p "$dir/sys" "$dir/etc-upper" "$dir/etc-work"
export GPUSIM_STATE="$dir/state.json"
case "$host" in
  a100|role) "$py" -m gpusim init --force --model A100-SXM4-40GB --gpus 2 ;;
  l40s) "$py" -m gpusim init --force --model L40S --gpus 1 ;;
  t4) "$py" -m gpusim init --force --model T4 --gpus 1 ;;
esac
mount --make-rprivate /
"$py" -m gpusim sysfs mount "$dir/sys" 2>"$dir/sysfs.log" &
fuse=$!
trap 'umount /sys 2>/dev/null || true; fusermount3 -u "$dir/sys" 2>/dev/null || true; wait "$fuse" || true' EXIT
for _ in $(seq 100); do mountpoint -q "$dir/sys" && break; sleep 0.1; done
mountpoint -q "$dir/sys"
mount --bind "$dir/sys" /sys
# A private /etc (overlay): mdevctl's definitions and the example config file stay in this namespace.
mount -t overlay overlay -o "lowerdir=/etc,upperdir=$dir/etc-upper,workdir=$dir/etc-work" /etc
mkdir -p /etc/mdevctl.d/scripts.d/callouts /etc/mdevctl.d/scripts.d/notifiers
# NVIDIA's vGPU manager where the module's preflight looks for it by default: a stand-in in a private /usr/bin
mkdir -p "$dir/bin-upper" "$dir/bin-work"
mount -t overlay overlay -o "lowerdir=/usr/bin,upperdir=$dir/bin-upper,workdir=$dir/bin-work" /usr/bin
printf '#!/bin/sh\n# gpusim stand-in for NVIDIA vGPU manager daemon\nexit 0\n' > /usr/bin/nvidia-vgpu-mgr
chmod 0755 /usr/bin/nvidia-vgpu-mgr
# A private /dev with an empty /dev/vfio, where a simulated VM holds its vGPU's VFIO group open (a regular
# file named after the group): the module finds it in /proc/*/fd as it finds QEMU's on a real host.
mkdir -p "$dir/olddev"
mount --rbind /dev "$dir/olddev"
mount -t tmpfs tmpfs /dev
for node in null zero full random urandom tty fuse; do
  touch "/dev/$node"
  mount --bind "$dir/olddev/$node" "/dev/$node"
done
mkdir /dev/pts /dev/shm /dev/vfio
mount --rbind "$dir/olddev/pts" /dev/pts
mount --rbind "$dir/olddev/shm" /dev/shm
ln -s /proc/self/fd /dev/fd
ansible-playbook -i localhost, -c local -e "ansible_python_interpreter=${py}" -e "gpusim_host=${host}" \
  "runme_${host}.yml" "$@"
