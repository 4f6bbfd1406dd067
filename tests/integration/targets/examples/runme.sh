#!/usr/bin/env bash
# Runs every EXAMPLES block and role README example (run_examples.py, scenarios.yml) against
# simulated hosts (see ../setup_gpusim/gpusim-env.sh). gpusim's nvidia-gridd reads its gridd.conf
# from this run's folder; only the daemon this target started is stopped afterwards.
set -eux
source ../setup_gpusim/gpusim-env.sh
export GPUOPS_COLLECTION="${ANSIBLE_COLLECTIONS_PATH%%:*}/ansible_collections/gpuops/sharing"
EXAMPLES_DIR="$(mktemp -d /tmp/gpuops-examples.XXXXXX)"
export GPUSIM_GRIDD_CONF="${EXAMPLES_DIR}/etc/nvidia/gridd.conf" GPUSIM_GRIDD_RUNDIR="${EXAMPLES_DIR}/run/nvidia-gridd"
export GPUSIM_GRIDD_RETRY=0.5
mkdir -p "${EXAMPLES_DIR}/etc/nvidia/ClientConfigToken"
stop_daemons() {
  # only the daemons this target started: their pid files are under EXAMPLES_DIR
  "${ANSIBLE_TEST_PYTHON_INTERPRETER}" fresh_host.py "${EXAMPLES_DIR}" || true
  rm -rf "${EXAMPLES_DIR}"
}
trap stop_daemons EXIT
"${ANSIBLE_TEST_PYTHON_INTERPRETER}" run_examples.py "${EXAMPLES_DIR}"
