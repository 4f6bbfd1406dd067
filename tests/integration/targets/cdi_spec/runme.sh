#!/usr/bin/env bash
# Runs on a simulated node (gpusim, its nvidia-ctk on PATH); the spec goes to this run's folder.
set -eux
source ../setup_gpusim/gpusim-env.sh
ansible-playbook -i localhost, -c local -e "ansible_python_interpreter=${ANSIBLE_TEST_PYTHON_INTERPRETER}" \
  runme.yml "$@"
