#!/usr/bin/env bash
# vgpu_devices on simulated hypervisors.  Each host's sysfs is gpusim's FUSE file system, bind-mounted over
# /sys in a private mount namespace (unshare -m), with a private /etc/mdevctl.d: the module and the real
# mdevctl read and write the real paths, and nothing of this machine's /sys or /etc is touched.
# `role` is the gpuops.sharing.vgpu_host role on an SR-IOV A100 pair: its README's examples, reboot and removal.
set -eux
source ../setup_gpusim/gpusim-env.sh
py="${ANSIBLE_TEST_PYTHON_INTERPRETER}"
for need in unshare fusermount3 mdevctl; do
  command -v "$need" >/dev/null || { echo "vgpu_devices needs $need (Debian util-linux, fuse3, mdevctl)" >&2; exit 1; }
done
"$py" -c 'import mfusepy' || { echo "vgpu_devices needs mfusepy in $py (requirements/main.txt)" >&2; exit 1; }
if [ "$(id -u)" != 0 ] || [ ! -e /dev/fuse ]; then echo "vgpu_devices needs root and /dev/fuse" >&2; exit 1; fi
for host in a100 l40s t4 role; do
  unshare -m bash ./namespace.sh "$host" "$@"
done
