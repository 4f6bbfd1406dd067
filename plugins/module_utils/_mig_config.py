# Copyright (c) gpuops.sharing contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""mig-parted's v1 configuration format. Private to this collection: not a public API.

The format (NVIDIA/mig-parted, api/spec/v1): a file is ``version: v1`` and
``mig-configs: {name: [entry, ...]}``; an entry has ``devices`` (``all`` or a
list of GPU indices; we also accept GPU UUIDs), optional ``device-filter`` (PCI
device id(s) such as ``0x20B010DE``, optionally ``:subsystem``; we also accept
model names), ``mig-enabled`` and ``mig-devices`` (MIG device name -> count).
Entries are applied in order, so when several select a GPU the last one wins,
as with mig-parted.  Pure logic, no I/O.
"""

from __future__ import annotations

import difflib
import traceback

try:
    import yaml
except ImportError:
    yaml = None
    YAML_IMPORT_ERROR = traceback.format_exc()
else:
    YAML_IMPORT_ERROR = None

HAS_YAML = yaml is not None

ENTRY_KEYS = ("devices", "device-filter", "mig-enabled", "mig-devices")


class ConfigError(Exception):
    """The configuration is malformed; the message says where and why."""


def _did_you_mean(word: str, choices) -> str:
    close = difflib.get_close_matches(str(word), list(choices), n=1)
    return f" (did you mean '{close[0]}'?)" if close else ""


def parse_spec(data, source: str) -> dict:
    """A whole mig-parted file (already YAML-decoded) -> {config name: [entry, ...]}."""
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: a mig-parted config must be a mapping with 'version' and 'mig-configs'")
    if "version" not in data:
        raise ConfigError(f"{source}: missing 'version' field (mig-parted configs start with 'version: v1')")
    if data["version"] != "v1":
        raise ConfigError(f"{source}: unknown version {data['version']!r}; this module reads version v1")
    for key in data:
        if key not in ("version", "mig-configs"):
            raise ConfigError(f"{source}: unexpected field '{key}'" + _did_you_mean(key, ["mig-configs"]))
    configs = data.get("mig-configs")
    if not isinstance(configs, dict) or not configs:
        raise ConfigError(f"{source}: 'mig-configs' needs at least one named configuration")
    return {str(name): normalize_entries(entries, f"{source}: mig-configs.{name}") for name, entries in configs.items()}


def load_file(path: str, name: str) -> list[dict]:
    """The entries of configuration ``name`` in the mig-parted file ``path`` (needs PyYAML)."""
    if yaml is None:
        raise ConfigError(f"reading {path} needs PyYAML (python3-yaml), which is not installed")
    try:
        with open(path) as fh:
            data = yaml.safe_load(fh)
    except OSError as exc:
        raise ConfigError(f"cannot read config_file {path}: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"config_file {path} is not valid YAML: {exc}") from None
    return select_config(parse_spec(data, path), name, path)


def select_config(spec: dict, name: str, source: str) -> list[dict]:
    if name not in spec:
        raise ConfigError(f"{source} has no configuration '{name}'{_did_you_mean(name, spec)}; "
                          f"it has: {', '.join(sorted(spec))}")
    return spec[name]


def normalize_entries(entries, where: str) -> list[dict]:
    if not isinstance(entries, list) or not entries:
        raise ConfigError(f"{where}: needs a list of at least one entry")
    return [normalize_entry(entry, f"{where}[{i}]") for i, entry in enumerate(entries)]


def normalize_entry(entry, where: str) -> dict:
    if not isinstance(entry, dict):
        raise ConfigError(f"{where}: an entry must be a mapping with 'devices' and 'mig-enabled'")
    for key in entry:
        if key not in ENTRY_KEYS:
            raise ConfigError(f"{where}: unexpected field '{key}'{_did_you_mean(key, ENTRY_KEYS)}; "
                              f"an entry has {', '.join(ENTRY_KEYS)}")
    for key in ("devices", "mig-enabled"):
        if key not in entry:
            raise ConfigError(f"{where}: missing required field '{key}'")
    devices = entry["devices"]
    if isinstance(devices, str):
        if devices != "all":
            raise ConfigError(f"{where}: devices must be 'all' or a list of GPU indices or UUIDs, not {devices!r}")
    elif isinstance(devices, list) and devices:
        for dev in devices:
            if isinstance(dev, bool) or not (isinstance(dev, int) and dev >= 0 or
                                             isinstance(dev, str) and dev.startswith("GPU-")):
                raise ConfigError(f"{where}: devices entry {dev!r} is neither a GPU index nor a GPU UUID (GPU-...)")
    else:
        raise ConfigError(f"{where}: devices must be 'all' or a non-empty list of GPU indices or UUIDs")
    if not isinstance(entry["mig-enabled"], bool):
        raise ConfigError(f"{where}: mig-enabled must be true or false, not {entry['mig-enabled']!r}")
    filters = entry.get("device-filter") or []
    if isinstance(filters, str):
        filters = [filters]
    if not isinstance(filters, list) or not all(isinstance(f, str) and f.strip() for f in filters):
        raise ConfigError(f"{where}: device-filter must be a PCI device id (0x20B010DE), a model name, or a list of them")
    for filt in filters:
        _parse_filter(filt, where)
    mig_devices = entry.get("mig-devices") or {}
    if not isinstance(mig_devices, dict):
        raise ConfigError(f"{where}: mig-devices must map MIG device names to counts, e.g. {{'3g.40gb': 2}}")
    if mig_devices and not entry["mig-enabled"]:
        raise ConfigError(f"{where}: mig-devices given with mig-enabled: false")
    for name, count in mig_devices.items():
        if isinstance(count, bool) or not isinstance(count, int) or count < 0:
            raise ConfigError(f"{where}: mig-devices count for '{name}' must be a whole number >= 0, not {count!r}")
    return {"devices": devices, "device_filter": [f.strip() for f in filters],
            "mig_enabled": entry["mig-enabled"], "mig_devices": {str(k): v for k, v in mig_devices.items() if v}}


def _parse_filter(text: str, where: str):
    """('pci', device_id, subsystem or None) or ('name', lowercase name)."""
    parts = text.strip().split(":")
    if parts[0].lower().startswith("0x"):
        try:
            values = [int(p, 16) for p in parts]
        except ValueError:
            raise ConfigError(f"{where}: device-filter {text!r} is not a PCI id like 0x20B010DE[:0x134F10DE]") from None
        if len(values) > 2:
            raise ConfigError(f"{where}: device-filter {text!r}: expected <devicevendor> or <devicevendor>:<subsystem>")
        return ("pci", values[0], values[1] if len(values) == 2 else None)
    return ("name", text.strip().lower())


def _normalize_name(name: str) -> str:
    name = name.lower().strip()
    return name[len("nvidia "):] if name.startswith("nvidia ") else name


def filter_matches(text: str, gpu: dict) -> bool:
    kind, *rest = _parse_filter(text, "device-filter")
    if kind == "pci":
        device, subsystem = rest
        if int(gpu["pci_device_id"], 16) != device:
            return False
        return subsystem is None or int(gpu.get("pci_subsystem_id") or "0", 16) == subsystem
    return _normalize_name(rest[0]) == _normalize_name(gpu["name"])


def entry_selects(entry: dict, gpu: dict) -> bool:
    if entry["device_filter"] and not any(filter_matches(f, gpu) for f in entry["device_filter"]):
        return False
    if entry["devices"] == "all":
        return True
    return gpu["index"] in entry["devices"] or gpu["uuid"] in entry["devices"]


def select(entries: list[dict], gpus: list[dict]) -> dict[int, tuple[int, dict]]:
    """GPU index -> (entry number, entry); the last entry that selects a GPU wins."""
    chosen = {}
    for number, entry in enumerate(entries):
        for gpu in gpus:
            if entry_selects(entry, gpu):
                chosen[gpu["index"]] = (number, entry)
    return chosen


def unknown_devices(entries: list[dict], gpus: list[dict]) -> list[str]:
    """Explicit device indices/UUIDs that name no GPU on the host."""
    known = {g["index"] for g in gpus} | {g["uuid"] for g in gpus}
    return [str(d) for e in entries if e["devices"] != "all" for d in e["devices"] if d not in known]
