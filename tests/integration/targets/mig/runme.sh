#!/usr/bin/env bash
# mig against simulated hosts: gpusim's pynvml (the real nvidia-ml-py over a
# simulated driver) is put first on the module's PYTHONPATH; nothing in the
# module knows about it.
set -eux
collection="${ANSIBLE_COLLECTIONS_PATH%%:*}/ansible_collections/gpuops/sharing"
export PYTHONPATH="${collection}/simulator${PYTHONPATH:+:${PYTHONPATH}}"
export GPUSIM_DIR="${OUTPUT_DIR}/gpusim"
mkdir -p "${GPUSIM_DIR}"
ansible-playbook -i localhost, -c local -e "ansible_python_interpreter=${ANSIBLE_TEST_PYTHON_INTERPRETER}" \
  runme.yml "$@"
