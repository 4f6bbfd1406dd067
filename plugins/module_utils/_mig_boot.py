# Copyright (c) gpuops.sharing contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""The MIG boot unit and the layout file it applies. Private to this collection: not a public API.

MIG mode survives a reboot, GPU and compute instances do not.  With ``boot_unit`` the ``mig``
module writes, besides the boot code (``_boot``), the layout it applied as a mig-parted v1 file and
a systemd oneshot unit that re-applies it at boot with the installed ``gpuops-mig-apply``.  Pure:
texts and validation; the module writes them through ``_host``.

The unit's ordering follows NVIDIA's own mig-manager unit (nvidia-mig-manager.service in
NVIDIA/mig-parted, deployments/systemd): after nvidia-persistenced and nvidia-fabricmanager, before
the services that open GPUs.
"""

from __future__ import annotations

import re

from ansible_collections.gpuops.sharing.plugins.module_utils import _boot, _mig

MARK = "# Managed by gpuops.sharing.mig: written at every run, do not edit (change the layout in Ansible)."
CONFIG_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
CONFIG_FILE = "config.yaml"


def validate(cfg: dict, boot_dir: str | None, config_file: str | None = None) -> None:
    """``boot_unit``'s values reach a unit's command line: plain names and absolute paths only."""
    if not boot_dir:
        raise _mig.MigError("boot_unit needs boot_dir: the unit runs the boot code the module installs there")
    problem = _boot.unit_name_problem(cfg, "gpuops-mig")
    if problem:
        raise _mig.MigError(problem)
    if not CONFIG_NAME.match(cfg["config_name"]):
        raise _mig.MigError(f"boot_unit.config_name={cfg['config_name']!r} is not valid; give letters, digits and "
                            f"'._-', starting with a letter or digit (default gpuops)")
    problem = next(filter(None, (_boot.path_problem(key, value) for key, value in (
        ("boot_unit.unit_dir", cfg["unit_dir"]), ("boot_unit.python", cfg["python"]),
        ("boot_unit.config_dir", cfg["config_dir"]), ("boot_dir", boot_dir), ("config_file", config_file))
        if value is not None)), None)
    if problem:
        raise _mig.MigError(problem)


unit_name = _boot.unit_name
unit_path = _boot.unit_path


def config_path(cfg: dict) -> str:
    return f"{cfg['config_dir'].rstrip('/')}/{CONFIG_FILE}"


def unit_text(cfg: dict, entry_point: str, config_file: str, config_name: str | None, reset: str) -> str:
    """The oneshot unit; ``config_name`` None: the file's only configuration (as mig-parted takes it)."""
    name = f' --config-name "{config_name}"' if config_name else ""
    return f"""{MARK}
# Restores the MIG layout at boot: the driver keeps MIG mode across reboots, not GPU or
# compute instances. Ordering follows NVIDIA's mig-manager unit (after nvidia-persistenced
# and nvidia-fabricmanager) and runs before the services that open GPUs.
[Unit]
Description=Restore the MIG layout of the NVIDIA GPUs (gpuops.sharing)
After=local-fs.target systemd-modules-load.service nvidia-persistenced.service nvidia-fabricmanager.service
Before=nvidia-dcgm.service dcgm-exporter.service nvsm.service containerd.service docker.service kubelet.service
ConditionPathExists={config_file}

[Service]
Type=oneshot
RemainAfterExit=yes
TimeoutStartSec=480
ExecStart="{cfg['python']}" "{entry_point}" --config-file "{config_file}"{name} --reset {reset}

[Install]
WantedBy=multi-user.target
"""


def config_text(config_name: str, entries: list, dump) -> str:
    """The layout the module applied, as a mig-parted v1 file (``dump``: yaml.safe_dump)."""
    body = dump({"version": "v1", "mig-configs": {config_name: entries}}, sort_keys=False, default_flow_style=False,
                indent=2)
    return (f"{MARK}\n# mig-parted v1 configuration; the boot unit applies '{config_name}'.\n{body}")
