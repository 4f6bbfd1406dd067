#!/usr/bin/env bash
# Runs against simulated hosts (see ../setup_gpusim/gpusim-env.sh). The daemons' pipe directories
# live in a short directory of their own: a Unix socket path has at most 107 bytes, and
# ansible-test's OUTPUT_DIR is longer than that allows (which the target also checks).
set -eux
source ../setup_gpusim/gpusim-env.sh
MPS_DIR="$(mktemp -d /tmp/gpuops-mps.XXXXXX)"
export MPS_DIR
stop_daemons() {
  # every fake daemon this target started: their pid files are under MPS_DIR
  "${ANSIBLE_TEST_PYTHON_INTERPRETER}" -c 'import sys; from gpusim import mps; mps.stop_daemons(sys.argv[1])' "${MPS_DIR}"
  rm -rf "${MPS_DIR}"
}
trap stop_daemons EXIT
ansible-playbook -i localhost, -c local -e "ansible_python_interpreter=${ANSIBLE_TEST_PYTHON_INTERPRETER}" \
  runme.yml "$@"
