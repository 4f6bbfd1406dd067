# Copyright (c) gpuops.sharing contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""What NVML calls share: the error type, a GPU's identity, text helpers. Private to this collection.

No pynvml here (``_nvml.py`` is the only file that imports it); ``_nvml`` and ``_nvml_mig`` both
build on these.
"""

from __future__ import annotations

MIB = 1024 * 1024
NO_ID = 0xFFFFFFFF


class NvmlError(Exception):
    """An NVML call failed. ``code`` is the NVML return-code name, e.g. ``IN_USE``."""

    def __init__(self, message: str, code: str | None = None, gpu: int | None = None):
        super().__init__(message)
        self.message = message
        self.code = code
        self.gpu = gpu


def text(value) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def strip_mig_prefix(name: str) -> str:
    return name[4:] if name.startswith("MIG ") else name


class Gpu:
    """A physical GPU: index, NVML handle and identity used in every message."""

    def __init__(self, index: int, handle, uuid: str, name: str):
        self.index = index
        self.handle = handle
        self.uuid = uuid
        self.name = name

    def label(self) -> str:
        return f"GPU {self.index} ({self.name}, {self.uuid})"
