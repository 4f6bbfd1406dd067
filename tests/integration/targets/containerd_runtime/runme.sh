#!/usr/bin/env bash
# Runs against a config file of this run's folder (no containerd on this machine; no systemd, so no restart).
set -eux
source ../setup_gpusim/gpusim-env.sh
ansible-playbook -i localhost, -c local -e "ansible_python_interpreter=${ANSIBLE_TEST_PYTHON_INTERPRETER}" \
  runme.yml "$@"
