#!/usr/bin/env bash
# Runs against simulated hosts (see ../setup_gpusim/gpusim-env.sh); the config files go to a
# directory of this run.
set -eux
source ../setup_gpusim/gpusim-env.sh
ansible-playbook -i localhost, -c local -e "ansible_python_interpreter=${ANSIBLE_TEST_PYTHON_INTERPRETER}" \
  runme.yml "$@"
