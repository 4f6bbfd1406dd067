# Copyright (c) gpuops.sharing contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""CDI specs of NVIDIA devices: what to write, what to restart. Private to this collection.

The spec is what ``nvidia-ctk cdi generate`` prints for the host as it is now (NVIDIA/nvidia-container-toolkit,
``cmd/nvidia-ctk/cdi/generate``, commit d34b3046758cb1a5db606b2a39519c731bbf9f56): its device names are the
GPU index (``nvidia.com/gpu=0``), the MIG device ``<gpu>:<mig index>`` (``nvidia.com/gpu=0:1``), the UUID, and
``all``.  A MIG change changes the devices, so a spec that differs from the file is the sign that the file is
stale: then it is written (by this module, or by NVIDIA's ``nvidia-cdi-refresh.service``, which runs
``nvidia-ctk cdi generate`` with ``NVIDIA_CTK_CDI_OUTPUT_FILE_PATH=/var/run/cdi/nvidia.yaml``,
``deployments/systemd/nvidia-cdi-refresh.service``), and the units that hand devices to containers (the device
plugin, GPU feature discovery) are restarted, as mig-parted's hooks restart them after a MIG change.
No I/O, no ansible imports.
"""

from __future__ import annotations

import re

DEFAULT_OUTPUT = "/etc/cdi/nvidia.yaml"
REFRESH_SERVICE = "nvidia-cdi-refresh.service"
REFRESH_OUTPUT = "/var/run/cdi/nvidia.yaml"
STRATEGIES = ("index", "uuid", "type-index")
UNIT_RE = re.compile(r"^[A-Za-z0-9:_.@-]{1,200}\.service$")
OUTPUT_RE = re.compile(r"^/[A-Za-z0-9._/-]+\.(yaml|yml|json)$")


class CdiError(Exception):
    """A bad request or a spec that cannot be used; the message names the value and what would be valid."""

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


def check_request(output: str, strategies, units, refresh_service: str) -> None:
    if not OUTPUT_RE.match(output or "") or "/../" in output or "/./" in output:
        raise CdiError(f"output={output!r}: give an absolute path ending in .yaml or .json in a CDI spec directory, "
                       f"e.g. {DEFAULT_OUTPUT} (containerd and CRI-O read /etc/cdi and /var/run/cdi)")
    for strategy in strategies or []:
        if strategy not in STRATEGIES:
            raise CdiError(f"device_name_strategy: {strategy!r} is not one of nvidia-ctk's strategies "
                           f"({', '.join(STRATEGIES)})")
    for unit in list(units or []) + [refresh_service]:
        if not UNIT_RE.match(unit or ""):
            raise CdiError(f"{unit!r} is not a systemd service name such as nvidia-device-plugin.service (letters, "
                           "digits, ':', '_', '.', '@', '-', ending in .service)")


def generate_argv(nvidia_ctk: str, output: str, strategies) -> list[str]:
    """``nvidia-ctk cdi generate`` printing the spec for ``output`` on stdout (the format follows the name)."""
    argv = [nvidia_ctk, "cdi", "generate", "--format=" + ("json" if output.endswith(".json") else "yaml")]
    argv += [f"--device-name-strategy={s}" for s in strategies or []]
    return argv


def device_names(spec) -> list[str]:
    """``kind=name`` of each device, sorted, as ``nvidia-ctk cdi list`` prints them."""
    if not isinstance(spec, dict) or not isinstance(spec.get("kind"), str) or \
            not isinstance(spec.get("devices"), list):
        raise CdiError("nvidia-ctk cdi generate printed no CDI spec (no kind and devices): is the NVIDIA driver "
                       "loaded and nvidia-ctk the Container Toolkit's?")
    names = set()
    for entry in spec["devices"]:
        if not isinstance(entry, dict) or not isinstance(entry.get("name"), str):
            raise CdiError("nvidia-ctk cdi generate printed a device without a name")
        names.add(f"{spec['kind']}={entry['name']}")
    return sorted(names)


def choose_method(method: str, output: str, refresh_loaded: bool) -> str:
    """``nvidia-ctk`` (the module writes) or ``refresh-service`` (NVIDIA's unit writes)."""
    if method == "auto":
        return "refresh-service" if refresh_loaded and output == REFRESH_OUTPUT else "nvidia-ctk"
    return method


def refusals(method: str, output: str, refresh_loaded: bool, systemd: bool, refresh_service: str) -> list[str]:
    problems = []
    if method == "refresh-service":
        if not systemd:
            problems.append(f"method=refresh-service needs systemd to run {refresh_service}; use method=nvidia-ctk")
        elif not refresh_loaded:
            problems.append(f"method=refresh-service: {refresh_service} is not installed (it comes with NVIDIA "
                            "Container Toolkit 1.18 and later); use method=nvidia-ctk or method=auto")
        if output != REFRESH_OUTPUT:
            problems.append(f"method=refresh-service writes {REFRESH_OUTPUT} (NVIDIA_CTK_CDI_OUTPUT_FILE_PATH in the "
                            f"unit); set output={REFRESH_OUTPUT}, not {output}")
    return problems
