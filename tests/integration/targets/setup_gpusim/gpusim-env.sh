# shellcheck shell=bash
# Sourced by the runme.sh of targets that run on simulated hosts: puts gpusim's pynvml
# (the real nvidia-ml-py over a simulated driver) first on the module's PYTHONPATH and its
# nvidia-smi first on PATH, and gives the target a directory for its hosts' states.
# Nothing in the modules knows about it.
collection="${ANSIBLE_COLLECTIONS_PATH%%:*}/ansible_collections/gpuops/sharing"
export PYTHONPATH="${collection}/simulator${PYTHONPATH:+:${PYTHONPATH}}"
export PATH="${collection}/simulator/bin:${PATH}"
export GPUSIM_DIR="${OUTPUT_DIR}/gpusim"
mkdir -p "${GPUSIM_DIR}"
