# Copyright (c) gpuops.sharing contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""``gpuops-mps-exec``: start the MPS control daemon of one target. Private to this collection: not a public API.

Every ``nvidia-mps@<target>`` unit (the ``mps`` module's generic template unit) runs::

    python3 gpuops-mps-exec -- /usr/bin/nvidia-cuda-mps-control -f

with the target in its EnvironmentFile: for a whole GPU, ``CUDA_VISIBLE_DEVICES``; for a MIG
device, its placements, ``GPUOPS_MPS_GPU`` (the GPU's UUID), ``GPUOPS_MPS_GPU_INSTANCE_START``
and ``GPUOPS_MPS_COMPUTE_INSTANCE_START`` (or the same as ``--gpu``, ``--gpu-instance-start``,
``--compute-instance-start``).  MIG device UUIDs change whenever the instances are re-created (at
every boot); the GPU's UUID and the placements do not.  So this looks the device up through NVML,
puts its UUID in ``CUDA_VISIBLE_DEVICES`` and replaces itself with the command, so that systemd
watches the daemon itself.  A whole GPU needs no lookup, and no NVML.

The ``mps`` module installs this file's import closure with the entry script (``_boot``), so the
code that runs at boot is the code of the collection version that last ran.
"""

from __future__ import annotations

import os

ENTRY = "gpuops-mps-exec"
PLACEMENT_ENV = ("GPUOPS_MPS_GPU", "GPUOPS_MPS_GPU_INSTANCE_START", "GPUOPS_MPS_COMPUTE_INSTANCE_START")
OPTIONS = ("--gpu", "--gpu-instance-start", "--compute-instance-start")
USAGE = (f"usage: {ENTRY} [--gpu GPU-UUID --gpu-instance-start G --compute-instance-start C] -- COMMAND [ARG...] "
         f"(or the placements in {', '.join(PLACEMENT_ENV)})")
# bounds on what is read from the command line: a unit passes a handful of words
MAX_ARGS = 64


class UsageError(ValueError):
    """The command line or the environment does not name a target; the message says what is missing."""


def parse(argv: list[str], environ) -> tuple[list[str], tuple | None]:
    """(the command to run, the MIG placement (GPU UUID, GI start, CI start) or None for a whole GPU)."""
    if len(argv) > MAX_ARGS:
        raise UsageError(f"{len(argv)} arguments, more than the {MAX_ARGS} a unit passes")
    values = dict(zip(OPTIONS, (environ.get(name) or None for name in PLACEMENT_ENV)))
    rest = list(argv)
    while rest and rest[0] != "--":
        option = rest.pop(0)
        name, sep, value = option.partition("=")
        if name not in OPTIONS:
            raise UsageError(f"unknown option {option!r}; {USAGE}")
        if not sep:
            if not rest:
                raise UsageError(f"{name} needs a value; {USAGE}")
            value = rest.pop(0)
        values[name] = value
    command = rest[1:]
    if not command:
        raise UsageError(f"give the command to run after --; {USAGE}")
    given = [values[name] for name in OPTIONS]
    if all(v is None for v in given):
        return command, None
    if any(v is None for v in given):
        raise UsageError("give the GPU and both placements (--gpu, --gpu-instance-start, --compute-instance-start or "
                         f"{', '.join(PLACEMENT_ENV)})")
    starts = []
    for name, text in zip(OPTIONS[1:], given[1:]):
        if not str(text).isdigit() or not str(text).isascii() or int(text) > 255:
            raise UsageError(f"{name}={text!r} is not a placement start; give a whole number from 0 to 255")
        starts.append(int(text))
    return command, (given[0], starts[0], starts[1])


def find(nv, gpu_uuid: str, gi_start: int, ci_start: int) -> str:
    """The UUID of the MIG device at that placement of that GPU; LookupError naming what there is."""
    for gpu in nv.gpus():
        if gpu.uuid != gpu_uuid:
            continue
        devices = nv.mig_devices(gpu)
        for dev in devices:
            if dev["gpu_instance_start"] == gi_start and dev["compute_instance_start"] == ci_start:
                return dev["uuid"]
        have = ", ".join(f"{d['gpu_instance_start']}.{d['compute_instance_start']}" for d in devices) or "none"
        raise LookupError(f"GPU {gpu.index} ({gpu_uuid}) has no MIG device at placement {gi_start}.{ci_start} "
                          f"(MIG devices at: {have}); has the MIG layout been applied?")
    raise LookupError(f"no GPU {gpu_uuid} on this host")


def exec_main(argv: list[str], run, out, execute, environ=None, nvml=None) -> int:
    """The entry point: look the device up and ``execute(command, env)``, which does not return.

    ``run`` (unused: nothing runs before the command) keeps the entry scripts' one signature;
    ``out`` writes a line to the journal; ``nvml`` is the NVML session factory (tests).
    """
    environ = os.environ if environ is None else environ
    try:
        command, placement = parse(argv, environ)
    except UsageError as exc:
        out(f"{ENTRY}: {exc}")
        return 2
    if placement is None:
        return execute(command, {})       # a whole GPU: CUDA_VISIBLE_DEVICES is set already
    try:
        if nvml is None:
            from ansible_collections.gpuops.sharing.plugins.module_utils._nvml import Nvml as nvml
        with nvml() as nv:
            uuid = find(nv, *placement)
    except Exception as exc:   # LookupError, NvmlError, ImportError (no nvidia-ml-py): one line for the journal
        out(f"{ENTRY}: {getattr(exc, 'message', exc)}")
        return 1
    out(f"{ENTRY}: MIG device {placement[1]}.{placement[2]} of {placement[0]} is {uuid}")
    return execute(command, {"CUDA_VISIBLE_DEVICES": uuid})
