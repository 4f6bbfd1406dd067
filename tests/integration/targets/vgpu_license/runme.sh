#!/usr/bin/env bash
# Runs against a simulated vGPU guest (see ../setup_gpusim/gpusim-env.sh). No systemd runs here, so
# the module restarts nvidia-gridd itself (SIGTERM to the pid of its pid file, then gpusim's nvidia-gridd,
# which forks into the background); gridd.conf, the token folder and the daemon's pid file live in a
# directory of this run, named to the fake daemon by GPUSIM_GRIDD_CONF and GPUSIM_GRIDD_RUNDIR.
set -eux
source ../setup_gpusim/gpusim-env.sh
GRIDD_DIR="$(mktemp -d /tmp/gpuops-gridd.XXXXXX)"
export GRIDD_DIR GPUSIM_GRIDD_CONF="${GRIDD_DIR}/etc/nvidia/gridd.conf" GPUSIM_GRIDD_RUNDIR="${GRIDD_DIR}/run"
export GPUSIM_GRIDD_RETRY=0.5
stop_daemon() {
  # only the daemon this target started: its pid file is under GRIDD_DIR
  pid="$(cat "${GPUSIM_GRIDD_RUNDIR}/nvidia-gridd.pid" 2>/dev/null || true)"
  if [ -n "${pid}" ] && grep -qx nvidia-gridd "/proc/${pid}/comm" 2>/dev/null; then kill "${pid}" || true; fi
  rm -rf "${GRIDD_DIR}"
}
trap stop_daemon EXIT
ansible-playbook -i localhost, -c local -e "ansible_python_interpreter=${ANSIBLE_TEST_PYTHON_INTERPRETER}" \
  runme.yml "$@"
