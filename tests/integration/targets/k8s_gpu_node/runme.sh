#!/usr/bin/env bash
# Runs the role against a simulated node (see ../setup_gpusim/gpusim-env.sh); the inventory puts the
# host in mps_inference for the refusal case.
set -eux
source ../setup_gpusim/gpusim-env.sh
ANSIBLE_ROLES_PATH=../../../../roles ansible-playbook -i inventory.ini \
  -e "ansible_python_interpreter=${ANSIBLE_TEST_PYTHON_INTERPRETER}" runme.yml "$@"
