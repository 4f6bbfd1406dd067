#!/usr/bin/python
# Copyright (c) gpuops.sharing contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
module: mps
short_description: Manage NVIDIA MPS control daemons and their limits, per GPU or per MIG device
version_added: 0.1.0
description:
  - Manages one NVIDIA CUDA Multi-Process Service (MPS) control daemon per target, a whole GPU or one MIG device,
    each with its own pipe and log directory and C(CUDA_VISIBLE_DEVICES) set to the target's UUID.
  - Reads the live settings of each daemon through its control interface (C(nvidia-cuda-mps-control) with commands
    on stdin) and changes only those that differ from the requested ones. Percentages come back from the daemon as
    floats (C(25.0)) and memory limits in the daemon's own units, limits of 1 GiB and more in whole GiB rounded down
    (C(5120M) reads back as C(5G), C(1536M) as C(1G)); both are compared at that precision, so a second run reports
    no change.
  - Settings that are not requested are reported as the daemon has them, or as V(null) where the daemon does not know
    the command (drivers before CUDA 11.5 have no memory limit; client priorities came later).
  - Daemon defaults apply to MPS servers started later. A server that is already running with other limits is
    reported in RV(restart_required) and left alone unless O(restart_servers=true).
  - Sets the compute mode of whole-GPU targets to C(EXCLUSIVE_PROCESS) (NVIDIA's recommendation for MPS); compute mode
    does not survive a reboot. The driver refuses C(EXCLUSIVE_PROCESS) on a MIG-enabled GPU (C(nvidia-smi -c) reports
    Not Supported and moves on), and a MIG device has no compute mode of its own, so MIG targets have none.
  - "Who runs the daemons: with O(systemd) the module manages their systemd units (C(nvidia-mps@<target>.service)),
    as the P(gpuops.sharing.mps#role) role does in one call per host. With O(manage_daemon=true) it starts missing
    daemons itself (C(nvidia-cuda-mps-control -d) with the limits in the environment), for hosts without systemd;
    such daemons are not restarted after a crash or a reboot. With neither, it expects them running and manages
    their settings only."
  - "Runs in the order observe, plan, check, apply, verify: every target's daemon is read first (a daemon that cannot
    be read is an error), every refusal of every target is reported before anything changes, and check mode stops
    after the check, so its verdict is the real run's."
  - O(state=absent) stops the daemons with the C(quit) command, which waits until the servers' clients have finished;
    so it is refused while clients are connected, unless O(force=true), which sends C(quit -t <timeout>) instead;
    servers still running after O(timeout) seconds are then shut down and their clients fail.
extends_documentation_fragment:
  - gpuops.sharing._attributes
  - gpuops.sharing._attributes.NVML
attributes:
  check_mode:
    support: full
  diff_mode:
    support: full
    details:
      - The diff shows, per target, whether the daemon runs, its default limits, its servers' limits and the GPU's
        compute mode, before and after.
  idempotent:
    support: full
options:
  targets:
    description:
      - What gets a daemon. V(all) is every GPU without MIG and every MIG device of the GPUs in MIG mode.
      - Otherwise GPU indexes (V(0)) or UUIDs (V(GPU-...)), MIG device UUIDs (V(MIG-...)), or target names as
        returned in RV(targets[].name) (V(gpu0), V(gpu0-mig3.0)).
      - A GPU in MIG mode cannot be a target itself, since an MPS daemon serves one MIG device.
    type: list
    elements: str
    default: [all]
  state:
    description:
      - V(present) makes sure each target's daemon runs with the requested settings.
      - V(absent) stops each target's daemon.
    type: str
    choices: [present, absent]
    default: present
  pipe_directory:
    description:
      - The daemon's C(CUDA_MPS_PIPE_DIRECTORY), where its control socket C(control) is; clients use the same one.
      - C({name}) and C({uuid}) are replaced with the target's name and UUID; with more than one target it must
        contain one of them. No other format fields (no attributes, indexes, conversions or format specs).
      - An absolute path of letters, digits, C(.), C(_), C(-) and C(/) only, without C(..); it reaches the daemon's
        environment, the role's unit and environment files and the shells of clients that source them, so blanks,
        quotes, C($), backquotes, newlines and other characters are refused.
      - The daemon's sockets C(<pipe_directory>/control) and C(<pipe_directory>/control_privileged) must fit a Unix
        socket path (at most 107 bytes, 108 with the terminating NUL), so the directory can have at most 88 bytes.
    type: str
    default: /run/nvidia-mps/{name}
  log_directory:
    description:
      - The daemon's C(CUDA_MPS_LOG_DIRECTORY), where it writes C(control.log) and its servers C(server.log).
      - Placeholders and characters as in O(pipe_directory).
    type: str
    default: /var/log/nvidia-mps/{name}
  default_active_thread_percentage:
    description:
      - The share of each device's threads one MPS client may use, from V(1) to V(100)
        (C(set_default_active_thread_percentage)). It limits, it does not reserve.
      - Not managed when not given.
    type: int
  default_device_pinned_mem_limit:
    description:
      - The device memory each MPS client may allocate on the target (C(set_default_device_pinned_mem_limit)), for
        example V(4G), V(4GiB) or V(4096M), a whole number with a unit M, MB, MiB, G, GB, GiB (or T, TB, TiB); units are
        binary (G = 1024 M), as the daemon's. V(0), negative sizes, fractions such as V(4.5G) (give V(4608M)) and sizes
        without a unit are refused, and so is more than the target's memory.
      - The daemon reports limits of 1 GiB and more in whole GiB, so a limit such as V(1536M) is set as given but can
        only be checked to the GiB later (the module warns); whole GiB are checked exactly.
      - Not managed when not given.
    type: str
  default_client_priority:
    description:
      - Priority of new clients' work, V(0) (normal) or V(1) (below normal) (C(set_default_client_priority)); a hint
        to the driver, not a guarantee.
      - Not managed when not given.
    type: int
    choices: [0, 1]
  compute_mode:
    description:
      - Compute mode of whole-GPU targets. V(exclusive_process) makes the MPS server the only process on the GPU.
      - V(unchanged) leaves it as it is.
      - With O(state=absent), only V(default) acts (the GPU is put back to C(DEFAULT) after its daemon stopped).
      - MIG targets have no compute mode of their own; this does not apply to them.
    type: str
    choices: [exclusive_process, default, unchanged]
    default: exclusive_process
  manage_daemon:
    description:
      - Start a target's daemon when none runs (V(true)), or fail saying how to start it (V(false)).
      - Leave V(false) where systemd runs the daemons (O(systemd)).
    type: bool
    default: false
  restart_servers:
    description:
      - Bring MPS servers that run with other limits up to date, with the per-server commands
        C(set_active_thread_percentage) and C(set_device_pinned_mem_limit) (NVIDIA documents no command to restart
        one server; those commands give every client that connects afterwards the new limits, as a restarted server
        would).
      - Refused for a server with connected clients unless O(force=true); those clients keep the limits they started
        with until they reconnect, and RV(restart_required) stays V(true).
    type: bool
    default: false
  force:
    description:
      - Allow O(restart_servers) on servers with connected clients, and O(state=absent) on daemons with connected
        clients; the daemon is then stopped with C(quit -t <timeout>), so servers whose clients have not finished after
        O(timeout) seconds are shut down and those clients fail.
    type: bool
    default: false
  timeout:
    description:
      - Seconds to wait for each answer of a control daemon. A daemon that accepts connections but does not answer
        (stopped with C(SIGSTOP), or hung) fails the module after this time with a message naming it; it is never
        taken for a missing daemon.
      - Seconds to wait for a daemon to stop after C(quit).
      - With O(force=true) and O(state=absent), also the time connected clients get to finish before their servers are
        shut down (C(quit -t), whole seconds, rounded up).
    type: float
    default: 10.0
  systemd:
    description:
      - Run each target's daemon as an instance C(<unit_name>@<target>.service) of one generic template unit, which
        the module writes to O(systemd.unit_dir), with one EnvironmentFile per target, C(<config_dir>/<target>.conf)
        (the device, or for a MIG device its placements; the directories; the limits; the compute mode). There are no
        drop-ins (those the role wrote before are removed).
      - Missing or stopped daemons are enabled and started in one C(systemctl enable --now) call; with O(state=absent)
        they are stopped and disabled in one C(systemctl disable --now) call and their files removed.
      - Files are written to a temporary file in the same directory and moved into place; symlinks and files the
        module did not write are refused, never followed or overwritten.
      - The daemons of MIG devices start after O(systemd.after) (the P(gpuops.sharing.mig#role) role's boot unit,
        which re-creates the MIG devices with new UUIDs) and find their device by its placements with
        C(gpuops-mps-exec), which the module installs in O(systemd.install_dir) and which needs nvidia-ml-py in
        O(systemd.python); the module checks that before it changes anything.
      - Leave out on hosts without systemd.
    type: dict
    suboptions:
      unit_name:
        description: Name of the template unit, without C(@.service).
        type: str
        default: nvidia-mps
      unit_dir:
        description: Where the template unit is written.
        type: str
        default: /etc/systemd/system
      python:
        description: The host's Python that runs C(gpuops-mps-exec) at every start (Python 3.9 or newer).
        type: str
        default: /usr/bin/python3
      install_dir:
        description:
          - Where the module installs C(gpuops-mps-exec), the entry point every unit starts, together with every
            C(module_utils) file it imports (followed through their imports, from this module's own code, so nothing
            is left out when the collection changes) and a C(VERSION) stamp naming the collection version and a
            digest of the files. Files there that the code no longer needs are removed.
          - The directory belongs to this module alone; give each module's boot code its own (the
            P(gpuops.sharing.mig#role) role uses C(/usr/local/lib/gpuops-sharing/mig)).
          - With O(state=absent) and O(prune), everything in it the module installed is removed, and the
            directories where empty.
        type: str
        default: /usr/local/lib/gpuops-sharing/mps
      control_binary:
        description: The C(nvidia-cuda-mps-control) the units run.
        type: str
        default: /usr/bin/nvidia-cuda-mps-control
      smi_binary:
        description: The C(nvidia-smi) that sets the compute mode of whole GPUs before every start.
        type: str
        default: /usr/bin/nvidia-smi
      after:
        description: Units the daemons start after.
        type: list
        elements: str
        default: [gpuops-mig.service]
      stop_timeout:
        description: Stopping a unit sends C(quit -t <stop_timeout>); systemd's own stop timeout is 15 s more.
        type: int
        default: 20
  config_dir:
    description:
      - Where the clients' environment files C(<target>.env) are written, and with O(systemd) the units' environment
        files C(<target>.conf). Clients use C(set -a; . <config_dir>/<target>.env; set +a); values are quoted
        (C(shlex.quote)), so sourcing a file runs nothing.
      - With O(systemd) it defaults to C(/etc/nvidia-mps); without, no files are written unless it is given.
    type: str
  prune:
    description:
      - Also stop, disable and remove the units and files of targets that no longer exist (a MIG re-layout that
        removed a device) in the same run; with O(state=absent), also the template unit, so that nothing the module
        installed remains. Needs O(systemd) or O(config_dir).
      - Leave V(false) when several calls manage different targets of one host.
    type: bool
    default: false
notes:
  - Each daemon sees exactly one device, so limits are set for device ordinal C(0), as NVIDIA's own Kubernetes
    device plugin does.
  - Target names of MIG devices are made of the placements of their GPU and compute instance, which stay the same
    when a layout is re-created (as P(gpuops.sharing.mig#module) does); MIG device UUIDs change.
seealso:
  - module: gpuops.sharing.mig
  - name: NVIDIA Multi-Process Service documentation
    description: Control commands, environment variables, limits, error containment.
    link: https://docs.nvidia.com/deploy/mps/
author:
  - gpuops.sharing maintainers (@gpuops)
"""

EXAMPLES = r"""
- name: One MPS daemon per MIG device, 4 GiB and a quarter of the threads per client
  gpuops.sharing.mps:
    targets: [all]
    default_active_thread_percentage: 25
    default_device_pinned_mem_limit: 4G
    manage_daemon: true   # or systemd: {} (below), or daemons you start yourself
  become: true

- name: Two GPUs, daemons started by the module (host without systemd)
  gpuops.sharing.mps:
    targets: ["0", "1"]
    manage_daemon: true
    default_client_priority: 1
  become: true

- name: Raise the thread share; running servers and their clients keep the old limits
  gpuops.sharing.mps:
    targets: [all]
    default_active_thread_percentage: 50
  register: mps
  become: true

- name: Tell which clients still run with the old limits
  ansible.builtin.debug:
    msg: >-
      client PIDs {{ mps.targets | map(attribute='servers') | flatten | selectattr('stale')
      | map(attribute='clients') | flatten | list }} get the new limits when they reconnect
  when: mps.restart_required

- name: Update running servers too (refused while clients are connected, unless force)
  gpuops.sharing.mps:
    targets: [all]
    default_active_thread_percentage: 50
    restart_servers: true
  become: true

- name: Every daemon as a systemd unit, stale ones of removed MIG devices pruned, in one call
  gpuops.sharing.mps:
    targets: [all]
    default_active_thread_percentage: 25
    systemd: {}
    prune: true
  become: true

- name: Stop the daemon of GPU 1 and put the GPU back to the DEFAULT compute mode
  gpuops.sharing.mps:
    targets: ["1"]
    state: absent
    compute_mode: default
  become: true
"""

RETURN = r"""
summary:
  description:
    - One line per target, in the order of RV(targets), for people to read. It says whether the target's daemon
      runs, the limits its clients get, and how clients reach it. Empty with O(state=absent).
  returned: always
  type: list
  elements: str
  sample: ["gpu0-mig1.0 (MIG-8f3c...): running, threads 25.0%, memory 4G per client; clients: set -a; . /etc/nvidia-mps/gpu0-mig1.0.env; set +a"]
boot:
  description: The code the units start, installed in O(systemd.install_dir) (V(null) without O(systemd), and with
    O(state=absent)).
  returned: always
  type: dict
  contains:
    dir:
      description: O(systemd.install_dir).
      type: str
    entry_point:
      description: The script every unit starts, C(<install_dir>/gpuops-mps-exec).
      type: str
    version:
      description: The first line of the C(VERSION) stamp, such as V(gpuops.sharing 0.1.0).
      type: str
    files:
      description: Every file the boot code is made of.
      type: list
      elements: str
restart_required:
  description: Whether a running MPS server, or clients connected to one, still have limits other than the requested
    ones (they get them when the server is restarted, or the clients reconnect).
  returned: always
  type: bool
  sample: false
operations:
  description: The plan, one line per operation, in the order it runs; on a refusal, the plan that was refused.
  returned: always
  type: list
  elements: str
  sample: ["gpu0: default active thread percentage 100 -> 25"]
done:
  description: The operations carried out, in order; empty in check mode and when the run was refused. When the
    module fails after a change, it lists what was completed before the failure (and C(changed) is V(true)); the
    next run continues from there.
  returned: always
  type: list
  elements: str
  sample: ["gpu0: default active thread percentage 100 -> 25"]
targets:
  description: One entry per target, in GPU order.
  returned: always
  type: list
  elements: dict
  contains:
    name:
      description: Target name, stable across reboots; used in the default directories and the role's unit names.
      type: str
      sample: gpu0-mig3.0
    kind:
      description: V(gpu) or V(mig).
      type: str
    uuid:
      description: UUID of the GPU or MIG device (the daemon's C(CUDA_VISIBLE_DEVICES)).
      type: str
    gpu_index:
      description: NVML index of the (parent) GPU.
      type: int
    gpu_uuid:
      description: UUID of the (parent) GPU.
      type: str
    mig:
      description: For MIG devices, C(gpu_instance_start), C(compute_instance_start), C(gpu_instance_id) and
        C(compute_instance_id); V(null) for GPUs.
      type: dict
    memory_total_mib:
      description: Memory of the GPU or MIG device.
      type: int
    pipe_directory:
      description: The daemon's pipe directory.
      type: str
    log_directory:
      description: The daemon's log directory.
      type: str
    control_socket:
      description: The daemon's control socket.
      type: str
    running:
      description: Whether the daemon runs (after the change; predicted in check mode).
      type: bool
    settings:
      description: The daemon's defaults C(active_thread_percentage), C(device_pinned_mem_limit) (as the daemon reports
        it, such as V(4G), or V(null) for none) and C(client_priority); V(null) values when it does not run, or for a
        setting that was not requested and that the daemon does not know.
      type: dict
    servers:
      description: Running MPS servers with C(pid), C(active_thread_percentage), C(device_pinned_mem_limit),
        C(clients) (PIDs) and C(stale) (limits differ from the requested ones).
      type: list
      elements: dict
    compute_mode:
      description: Compute mode of the GPU; V(null) for MIG devices.
      type: str
    restart_required:
      description: Whether this target's servers or their clients still run with other limits.
      type: bool
    operations:
      description: This target's operations.
      type: list
      elements: str
    unit:
      description: The daemon's systemd unit with O(systemd); V(null) without.
      type: str
      sample: nvidia-mps@gpu0-mig3.0.service
    daemon_environment:
      description: The environment the daemon is (to be) started with.
      type: dict
      sample:
        CUDA_VISIBLE_DEVICES: MIG-2d9e0b9c-8f0a-5b8e-9c55-0d2c1a7d1f3e
        CUDA_MPS_PIPE_DIRECTORY: /run/nvidia-mps/gpu0-mig0.0
        CUDA_MPS_LOG_DIRECTORY: /var/log/nvidia-mps/gpu0-mig0.0
        CUDA_MPS_ACTIVE_THREAD_PERCENTAGE: "25"
        CUDA_MPS_PINNED_DEVICE_MEM_LIMIT: 0=4G
    client_environment:
      description: What clients set to use this daemon (C(CUDA_MPS_PIPE_DIRECTORY), C(CUDA_MPS_LOG_DIRECTORY)); clients
        must not set C(CUDA_VISIBLE_DEVICES).
      type: dict
"""

from ansible.module_utils.basic import AnsibleModule, missing_required_lib

from ansible_collections.gpuops.sharing.plugins.module_utils import _boot, _host, _mps, _mps_exec, _mps_host
from ansible_collections.gpuops.sharing.plugins.module_utils._nvml import (
    HAS_PYNVML,
    PYNVML_IMPORT_ERROR,
    Nvml,
    NvmlError,
)
from ansible_collections.gpuops.sharing.plugins.module_utils._runner import run_module

EMPTY = {"changed": False, "restart_required": False, "operations": [], "done": [], "targets": [], "boot": None,
         "summary": []}


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "targets": {"type": "list", "elements": "str", "default": ["all"]},
            "state": {"type": "str", "choices": ["present", "absent"], "default": "present"},
            "pipe_directory": {"type": "str", "default": _mps.DEFAULT_PIPE_DIRECTORY},
            "log_directory": {"type": "str", "default": _mps.DEFAULT_LOG_DIRECTORY},
            "default_active_thread_percentage": {"type": "int"},
            "default_device_pinned_mem_limit": {"type": "str"},
            "default_client_priority": {"type": "int", "choices": [0, 1]},
            "compute_mode": {"type": "str", "choices": list(_mps.COMPUTE_MODES), "default": "exclusive_process"},
            "manage_daemon": {"type": "bool", "default": False},
            "restart_servers": {"type": "bool", "default": False},
            "force": {"type": "bool", "default": False},
            "timeout": {"type": "float", "default": 10.0},
            "systemd": {"type": "dict", "options": {
                "unit_name": {"type": "str", "default": "nvidia-mps"},
                "unit_dir": {"type": "str", "default": "/etc/systemd/system"},
                "python": {"type": "str", "default": "/usr/bin/python3"},
                "install_dir": {"type": "str", "default": "/usr/local/lib/gpuops-sharing/mps"},
                "control_binary": {"type": "str", "default": "/usr/bin/nvidia-cuda-mps-control"},
                "smi_binary": {"type": "str", "default": "/usr/bin/nvidia-smi"},
                "after": {"type": "list", "elements": "str", "default": ["gpuops-mig.service"]},
                "stop_timeout": {"type": "int", "default": 20},
            }},
            "config_dir": {"type": "str"},
            "prune": {"type": "bool", "default": False},
        },
        supports_check_mode=True,
    )
    p = module.params
    if not HAS_PYNVML:
        module.fail_json(msg=missing_required_lib("nvidia-ml-py"), exception=PYNVML_IMPORT_ERROR, **EMPTY)
    try:
        if not p["timeout"] > 0:
            raise _mps.MpsError(f"timeout={p['timeout']!r} is not valid; give the seconds to wait for a control "
                                f"daemon, more than 0 (default 10)")
        for key in ("pipe_directory", "log_directory"):
            _mps.validate_directory(p[key], key)
        limit_text = p["default_device_pinned_mem_limit"]
        desired = {"active_thread_percentage": _mps.validate_percentage(p["default_active_thread_percentage"]),
                   "device_pinned_mem_limit_mib": None if limit_text is None else _mps.parse_size(limit_text),
                   "client_priority": _mps.validate_priority(p["default_client_priority"])}
        units = None
        if p["systemd"] is not None and p["manage_daemon"]:
            raise _mps.MpsError("manage_daemon: true and systemd: the daemons run either under their systemd units "
                                "(systemd, started and stopped by the module through systemctl) or started by the "
                                "module in the background (manage_daemon: true, hosts without systemd); give one")
        if p["systemd"] is not None or p["config_dir"] is not None:
            config_dir = p["config_dir"] or _mps.DEFAULT_CONFIG_DIR
            if p["systemd"] is not None:
                _mps.validate_systemd(p["systemd"])
            _mps.validate_config_dir(config_dir)
            # starting a unit waits for its control socket (ExecStartPost, at most 30 s), stopping for quit -t
            stop_timeout = p["systemd"]["stop_timeout"] if p["systemd"] else 0
            units = _mps_host.Units(_host.module_runner(module, max(120.0, stop_timeout + 60.0)),
                                    module.get_bin_path("systemctl"), p["systemd"], config_dir.rstrip("/"),
                                    module.atomic_move)
        elif p["prune"]:
            raise _mps.MpsError("prune: true removes the units and files of targets that no longer exist; it needs "
                                "the systemd option or a config_dir (the files the module manages)")
        # the control client runs under a timeout (run_command has none): a stopped daemon must not hang the module
        with Nvml() as nv:
            # gpuops-mps-exec's code (_mps_exec, imported above so that it is in this module's payload)
            sources = (_boot.closure(["_host", _mps_exec.__name__.rsplit(".", 1)[-1]], _boot.payload_source)
                       if p["systemd"] is not None and p["state"] == "present" else None)
            host = _mps_host.HostMps(nv, _host.module_runner(module, p["timeout"]),
                                     module.get_bin_path("nvidia-cuda-mps-control"), p, desired, units=units,
                                     runner=lambda seconds: _host.module_runner(module, seconds),
                                     boot_sources=sources)
            run_module(module, host, EMPTY)
    except _mps.MpsError as exc:
        module.fail_json(msg=str(exc), **EMPTY)
    except NvmlError as exc:
        module.fail_json(msg=exc.message, **EMPTY)


if __name__ == "__main__":
    main()
