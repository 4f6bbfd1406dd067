# Copyright (c) gpuops.sharing contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""mig-parted's v1 configuration format. Private to this collection: not a public API.

The format (NVIDIA/mig-parted, api/spec/v1): a file is ``version: v1`` and
``mig-configs: {name: [entry, ...]}``; an entry has ``devices`` (``all`` or a
list of GPU indices; we also accept GPU UUIDs), optional ``device-filter`` (PCI
device id(s) such as ``0x20B010DE``, optionally ``:subsystem``; we also accept
model names), ``mig-enabled`` and ``mig-devices`` (MIG device name -> count,
required when ``mig-enabled`` is true; ``{}`` means none).  Entries are applied
in order, so when several select a GPU the last one wins, as with mig-parted.

Files are read as mig-parted reads them (YAML 1.1, anchors and merge keys), and
also as Kubernetes ConfigMaps holding such a file under ``data`` (the GPU
Operator's ``default-mig-parted-config``, mig-manager's example manifests).
Everything is validated before any GPU is touched; each error names the file
(and line, for YAML errors), the configuration and entry, the value, why it is
wrong and what would be valid.  No I/O except reading the file in ``load_file``.
"""

from __future__ import annotations

import difflib
import re
import traceback

from ansible_collections.gpuops.sharing.plugins.module_utils import _catalogue, _host, _mig

try:
    import yaml
except ImportError:
    yaml = None
    YAML_IMPORT_ERROR = traceback.format_exc()
else:
    YAML_IMPORT_ERROR = None

HAS_YAML = yaml is not None

ENTRY_KEYS = ("devices", "device-filter", "mig-enabled", "mig-devices")
TOP_KEYS = ("version", "mig-configs")
VERSION = "v1"
# The most MIG devices any GPU holds (nvmlDeviceGetMaxMigDeviceCount: 7 on A100/H100/H200/B200, 4 on
# A30); counts above this are refused before any layout search, so work stays bounded on any input.
MAX_MIG_DEVICES = 8
# config_file is read only when it is a regular file of at most this size (NVIDIA's whole default
# config-default.yaml is about 20 KiB): /dev/zero or a FIFO must fail at once, not exhaust memory or hang.
MAX_FILE_BYTES = 4 * 1024 * 1024


class ConfigError(Exception):
    """The configuration is malformed; the message says where and why."""


def _did_you_mean(word, choices, n: int = 1) -> str:
    close = difflib.get_close_matches(str(word), [str(c) for c in choices], n=n)
    return (" (did you mean " + " or ".join(f"'{c}'" for c in close) + "?)") if close else ""


def _kind(value) -> str:
    """How a YAML value reads to a person: 'a list', 'the string "2"', 'the number 1.5'."""
    if value is None:
        return "nothing (null)"
    if isinstance(value, bool):
        return f"the boolean {str(value).lower()}"
    if isinstance(value, str):
        return f"the string {value!r}"
    if isinstance(value, (int, float)):
        return f"the number {value!r}"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    return type(value).__name__


# --------------------------------------------------------------------------- YAML

if yaml is not None:
    class _Loader(yaml.SafeLoader):
        """PyYAML's safe loader, refusing duplicate keys (PyYAML would silently keep the last)."""

        def construct_mapping(self, node, deep=False):
            if isinstance(node, yaml.MappingNode):
                seen: dict = {}
                for key_node, _value in node.value:
                    if key_node.tag == "tag:yaml.org,2002:merge":
                        continue
                    key = self.construct_object(key_node, deep=True)
                    try:
                        first = seen.get(key)
                    except TypeError:
                        continue
                    if first is not None:
                        raise yaml.constructor.ConstructorError(
                            None, None, f"duplicate key '{key}' (first given on line {first}); each key may "
                            "appear only once in a mapping, the second would silently replace the first",
                            key_node.start_mark)
                    seen[key] = key_node.start_mark.line + 1 + self.line_offset
            return super().construct_mapping(node, deep=deep)

    class _Map(dict):
        """A decoded YAML mapping that knows its line in the file (for messages)."""
        line = None

    class _Seq(list):
        """A decoded YAML sequence that knows its line in the file."""
        line = None

    def _construct_map(loader, node):
        data = _Map()
        data.line = node.start_mark.line + 1 + loader.line_offset
        yield data
        data.update(loader.construct_mapping(node))

    def _construct_seq(loader, node):
        data = _Seq()
        data.line = node.start_mark.line + 1 + loader.line_offset
        yield data
        data.extend(loader.construct_sequence(node))

    _Loader.line_offset = 0
    _Loader.add_constructor("tag:yaml.org,2002:map", _construct_map)
    _Loader.add_constructor("tag:yaml.org,2002:seq", _construct_seq)


def _at(where: str, value) -> str:
    """``where``, with the line the value starts on when it was read from a file."""
    line = getattr(value, "line", None)
    return f"{where} (line {line})" if line else where


def _yaml_error(exc, source: str, line_offset: int = 0, column_offset: int = 0) -> ConfigError:
    mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
    where = (f"{source}, line {mark.line + 1 + line_offset}, column {mark.column + 1 + column_offset}"
             if mark else source)
    problem = getattr(exc, "problem", None) or str(exc)
    context = getattr(exc, "context", None)
    text = f"{problem} ({context})" if context and context not in problem else problem
    hint = ""
    if "'\\t'" in text or "\\t" in text:
        hint = "; YAML indents with spaces, never tabs"
    elif "mapping values are not allowed" in text:
        hint = "; usually a line indented deeper than its siblings, or 'key:value' without a space after ':'"
    elif "expected <block end>" in text or "did not find expected" in text:
        hint = "; check the indentation of this line against the lines above it"
    return ConfigError(f"{where}: not valid YAML: {text}{hint}")


def _untab_flow(text: str) -> str:
    """``text`` with each tab outside quoted strings turned into a space.

    A JSON document indented with tabs is valid JSON, and mig-parted reads it (sigs.k8s.io/yaml;
    its own api/spec/v1/spec_test.go cases are tab-indented JSON), but PyYAML refuses a tab
    wherever a token may start.  Outside quotes a tab in such a document is only whitespace
    between tokens, so a space means the same; inside quotes (JSON escapes its tabs, YAML may
    not) it is kept.  Lines and columns are unchanged, so messages still point into the file.
    """
    out, quote, i = [], None, 0
    while i < len(text):
        ch = text[i]
        if quote == '"' and ch == "\\":
            out.append(text[i:i + 2])
            i += 2
            continue
        if quote and ch == quote:
            quote = None
        elif quote is None and ch in "\"'":
            quote = ch
        out.append(" " if ch == "\t" and quote is None else ch)
        i += 1
    return "".join(out)


def _documents(text: str, source: str, line_offset: int = 0, column_offset: int = 0) -> list[tuple]:
    """[(node, data)] for each YAML document of ``text``; ConfigError with file and line on bad YAML.

    A document in JSON's flow style (``{`` first) that is indented with tabs is read as the
    same document indented with spaces (see ``_untab_flow``).
    """
    try:
        return _load_documents(text, line_offset)
    except yaml.YAMLError as exc:
        if "\t" in text and text.lstrip(" \t\r\n").startswith(("{", "[")):
            try:
                return _load_documents(_untab_flow(text), line_offset)
            except yaml.YAMLError:
                pass
        raise _yaml_error(exc, source, line_offset, column_offset) from None


def _load_documents(text: str, line_offset: int) -> list[tuple]:
    loader = _Loader(text)
    loader.line_offset = line_offset
    docs = []
    try:
        while loader.check_node():
            node = loader.get_node()
            docs.append((node, loader.construct_document(node)))
    finally:
        loader.dispose()
    return docs


def _configmap_values(node) -> dict:
    """``data`` key -> its scalar node, in a ConfigMap document's node."""
    for key, value in getattr(node, "value", []):
        if getattr(key, "value", None) == "data" and isinstance(value, yaml.MappingNode):
            return {k.value: v for k, v in value.value if isinstance(k, yaml.ScalarNode)}
    return {}


def _specs_in(text: str, source: str) -> list[tuple[str, object]]:
    """Every mig-parted configuration in a file: [(where, decoded data)]."""
    docs = [(node, data) for node, data in _documents(text, source) if data is not None]
    if not docs:
        raise ConfigError(f"{source} is empty; a mig-parted configuration file starts with 'version: v1' "
                          "and names its configurations under 'mig-configs:'")
    found, configmaps = [], []
    for number, (node, data) in enumerate(docs):
        if isinstance(data, dict) and data.get("kind") == "ConfigMap":
            metadata = data.get("metadata") if isinstance(data.get("metadata"), dict) else {}
            name = metadata.get("name", "?")
            values = data.get("data") if isinstance(data.get("data"), dict) else {}
            configmaps.append(f"{name} (data keys: {', '.join(map(str, values)) or 'none'})")
            found.extend(_configmap_specs(text, source, name, node, values))
        elif isinstance(data, dict) and "mig-configs" in data:
            found.append((source if len(docs) == 1 else f"{source} (YAML document {number + 1})", data))
    if found:
        return found
    if configmaps:
        raise ConfigError(f"{source}: no mig-parted configuration in ConfigMap " + "; ".join(configmaps)
                          + "; mig-manager reads data.config.yaml, a mig-parted file (version: v1, mig-configs)")
    if len(docs) == 1:
        return [(source, docs[0][1])]
    raise ConfigError(f"{source} holds {len(docs)} YAML documents and none is a mig-parted configuration "
                      "(version: v1 with mig-configs) or a ConfigMap with one under data")


def _configmap_specs(text: str, source: str, name: str, node, values: dict) -> list[tuple[str, object]]:
    """The mig-parted configurations under a ConfigMap's data: config.yaml, and any value with mig-configs."""
    scalars = _configmap_values(node)
    found = []
    for key, value in values.items():
        if not isinstance(value, str) or key != "config.yaml" and "mig-configs" not in value:
            continue
        where = f"{source} (ConfigMap {name}, data.{key})"
        scalar = scalars.get(key)
        if scalar is not None and scalar.style in ("|", ">"):
            # a block scalar's text starts on the next line, indented: lines and columns point into the file
            line = scalar.start_mark.line + 1
            lines = text.splitlines()
            first = lines[line] if line < len(lines) else ""
            column = len(first) - len(first.lstrip(" "))
            docs = _documents(value, f"{source} (in ConfigMap {name}, data.{key})", line, column)
        else:
            # a quoted string (kubectl sometimes writes one): lines are counted within the value
            where = f"{source} (ConfigMap {name}, data.{key}; lines counted within that value)"
            docs = _documents(value, where)
        found.extend((where, data) for _node, data in docs if data is not None)
    return found


def load_text(text: str, source: str) -> dict:
    """The configurations of a mig-parted file's text: {name: [entry, ...]}.

    ``text`` may also be a Kubernetes ConfigMap (or a manifest of several documents) with
    the file under ``data`` (mig-manager reads ``data.config.yaml``).
    """
    if yaml is None:
        raise ConfigError(f"reading {source} needs PyYAML (python3-yaml), which is not installed")
    specs = _specs_in(text, source)
    if len(specs) > 1:
        raise ConfigError(f"{source} holds {len(specs)} mig-parted configurations ("
                          + "; ".join(where for where, _data in specs) + "); give a file with one")
    where, data = specs[0]
    return parse_spec(data, where)


def load_file(path: str, name: str | None) -> list[dict]:
    """The entries of configuration ``name`` in the mig-parted file ``path`` (needs PyYAML).

    ``name`` may be None when the file has exactly one configuration, as with mig-parted.
    """
    if yaml is None:
        raise ConfigError(f"reading {path} needs PyYAML (python3-yaml), which is not installed")
    try:
        text = read_bounded(path, "config_file")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"config_file {path} is not UTF-8 text (byte {exc.start}): is it a YAML file?") from None
    return select_config(load_text(text, path), name, path)


def read_bounded(path: str, what: str, limit: int = MAX_FILE_BYTES) -> str:
    """The text of a regular file of at most ``limit`` bytes (``_host.read_bounded``); anything else is a
    ConfigError."""
    try:
        data = _host.read_bounded(path, limit)
    except _host.NotReadable as exc:
        if exc.reason != "too_big":
            kind = {"directory": "a directory", "fifo": "a FIFO"}.get(exc.reason, "a device or socket")
            raise ConfigError(f"{what} {path} is {kind}, not a regular file") from None
        raise ConfigError(f"{what} {path} is {exc.size} bytes; a MIG configuration file is at most "
                          f"{limit // (1024 * 1024)} MiB") from None
    except OSError as exc:
        raise ConfigError(f"cannot read {what} {path}: {exc.strerror}") from None
    return data.decode("utf-8")


# --------------------------------------------------------------------------- the spec

def parse_spec(data, source: str) -> dict:
    """A whole mig-parted file (already YAML-decoded) -> {config name: [entry, ...]}."""
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: a mig-parted config must be a mapping with 'version: v1' and 'mig-configs', "
                          f"not {_kind(data)}")
    if "hooks" in data and "mig-configs" not in data:
        raise ConfigError(f"{source} is a mig-parted hooks file (hooks:), not a MIG configuration; config_file "
                          "needs the file with 'mig-configs' (mig-manager's config.yaml). The role's "
                          "mig_client_services does what the hooks do")
    if "version" not in data:
        raise ConfigError(f"{source}: missing 'version' field (mig-parted configs start with 'version: v1')")
    if data["version"] != VERSION:
        hint = " (write it as the string v1)" if str(data["version"]).strip().lower() in ("v1", "1", "1.0") else ""
        raise ConfigError(f"{source}: unknown version {data['version']!r}{hint}; mig-parted and this module read "
                          "configuration files with 'version: v1'")
    for key in data:
        if key not in TOP_KEYS:
            raise ConfigError(f"{source}: unexpected field '{key}'{_did_you_mean(key, TOP_KEYS)}; a mig-parted "
                              "file has only 'version' and 'mig-configs'")
    if "mig-configs" not in data:
        raise ConfigError(f"{source}: missing 'mig-configs', the mapping of configuration names to entries")
    configs = data["mig-configs"]
    if isinstance(configs, list):
        raise ConfigError(f"{source}: 'mig-configs' must map configuration names to lists of entries, not be a list "
                          "(write 'all-disabled:' under it, not '- all-disabled:')")
    if not isinstance(configs, dict) or not configs:
        raise ConfigError(f"{source}: 'mig-configs' needs at least one named configuration, not {_kind(configs)}")
    return {str(name): normalize_entries(entries, f"{source}: mig-configs.{name}") for name, entries in configs.items()}


def select_config(spec: dict, name: str | None, source: str) -> list[dict]:
    if name is None:
        if len(spec) == 1:
            return next(iter(spec.values()))
        raise ConfigError(f"{source} has {len(spec)} configurations; say which one with config_name: "
                          + ", ".join(sorted(spec)))
    if name not in spec:
        raise ConfigError(f"{source} has no configuration '{name}'{_did_you_mean(name, spec, n=3)}; "
                          f"it has: {', '.join(sorted(spec))}")
    return spec[name]


def normalize_entries(entries, where: str) -> list[dict]:
    located = _at(where, entries)
    if isinstance(entries, dict) and entries:
        raise ConfigError(f"{located}: must be a list of entries, not a single mapping: put '- ' before its first "
                          "field ('- devices: all')")
    if not isinstance(entries, list) or not entries:
        raise ConfigError(f"{located}: needs a list of at least one entry (each with 'devices' and 'mig-enabled'), "
                          f"not {_kind(entries) if entries != [] else 'an empty list'}")
    return [normalize_entry(entry, _at(f"{where}[{i}]", entry)) for i, entry in enumerate(entries)]


def normalize_entry(entry, where: str) -> dict:
    if not isinstance(entry, dict):
        raise ConfigError(f"{where}: an entry must be a mapping with 'devices' and 'mig-enabled', not {_kind(entry)}")
    for key in entry:
        if key not in ENTRY_KEYS:
            raise ConfigError(f"{where}: unexpected field '{key}'{_did_you_mean(key, ENTRY_KEYS)}; "
                              f"an entry has {', '.join(ENTRY_KEYS)}")
    for key in ("devices", "mig-enabled"):
        if key not in entry:
            raise ConfigError(f"{where}: missing required field '{key}'")
    devices = _devices(entry["devices"], where)
    enabled = entry["mig-enabled"]
    if not isinstance(enabled, bool):
        raise ConfigError(f"{where}: mig-enabled must be true or false, not {_kind(enabled)}")
    filters = _filters(entry.get("device-filter"), where)
    mig_devices = _mig_devices(entry.get("mig-devices"), enabled, where)
    return {"devices": devices, "device_filter": filters, "mig_enabled": enabled,
            "mig_devices": {k: v for k, v in mig_devices.items() if v}}


def _devices(devices, where: str):
    if isinstance(devices, str):
        if devices == "all":
            return devices
        hint = " (write it in lower case: all)" if devices.strip().lower() == "all" else ""
        if re.fullmatch(r"\s*\d+(\s*,\s*\d+)*\s*", devices):
            hint = f" (a list is written [{', '.join(d.strip() for d in devices.split(','))}])"
        raise ConfigError(f"{where}: devices must be 'all' or a list of GPU indices or UUIDs, "
                          f"not {_kind(devices)}{hint}")
    if isinstance(devices, int) and not isinstance(devices, bool):
        raise ConfigError(f"{where}: devices must be 'all' or a list of GPU indices or UUIDs, not the number "
                          f"{devices} (write [{devices}])")
    if not isinstance(devices, list):
        raise ConfigError(f"{where}: devices must be 'all' or a list of GPU indices or UUIDs, not {_kind(devices)}")
    for dev in devices:
        if isinstance(dev, bool) or not (isinstance(dev, int) and dev >= 0 or
                                         isinstance(dev, str) and dev.startswith(("GPU-", "MIG-"))):
            raise ConfigError(f"{where}: devices entry {dev!r} is neither a GPU index (0, 1, ...) nor a GPU UUID "
                              "(GPU-...)")
        if isinstance(dev, str) and dev.startswith("MIG-"):
            raise ConfigError(f"{where}: devices entry {dev!r} is a MIG device UUID; devices selects whole GPUs: "
                              "give the GPU's index or its GPU-... UUID")
    return list(devices)


def _filters(value, where: str) -> list:
    if value is None or value == "" or value == []:
        return []
    items = value if isinstance(value, list) else [value]
    for item in items:
        if isinstance(item, bool) or not isinstance(item, (str, int)) or isinstance(item, str) and not item.strip():
            raise ConfigError(f"{where}: device-filter must be a PCI device id (\"0x20B010DE\"), a model name, or a "
                              f"list of them, not {_kind(item)}")
        _parse_filter(item, where)
    return [item.strip() if isinstance(item, str) else item for item in items]


def _mig_devices(value, enabled: bool, where: str) -> dict:
    if value is None:
        if enabled:
            raise ConfigError(f"{where}: mig-enabled is true but mig-devices is missing; list the MIG devices to "
                              "create (mig-devices: {\"1g.10gb\": 7}), or give mig-devices: {} to enable MIG "
                              "with none (mig-parted requires the field too)")
        return {}
    if isinstance(value, list):
        example = ", ".join(f'"{k}": {v}' for item in value if isinstance(item, dict) for k, v in item.items())
        example = example or '"3g.40gb": 2'
        raise ConfigError(f"{where}: mig-devices must map MIG device names to counts, not be a list: write "
                          f"mig-devices: {{{example}}} (no '- ' before the names)")
    if not isinstance(value, dict):
        raise ConfigError(f"{where}: mig-devices must map MIG device names to counts, e.g. {{\"3g.40gb\": 2}}, "
                          f"not {_kind(value)}")
    if value and not enabled:
        listed = ", ".join(f"{k}: {v}" for k, v in value.items())
        raise ConfigError(f"{where}: mig-enabled is false but mig-devices lists {listed}; set mig-enabled: true "
                          "to create them, or remove mig-devices (mig-devices: {} is allowed)")
    seen: dict = {}
    for name, count in value.items():
        text = str(name)
        try:
            parsed = _mig.parse_profile(text)
        except _mig.MigError as exc:
            raise ConfigError(f"{where}: mig-devices: {exc}") from None
        key = (parsed["c"], parsed["g"], parsed["gb"], _mig.attr_key(parsed["attrs"]))
        if key in seen:
            raise ConfigError(f"{where}: mig-devices names '{seen[key]}' and '{text}', the same MIG device; "
                              "give it once with the total count")
        seen[key] = text
        if count is None:
            raise ConfigError(f"{where}: mig-devices '{text}' has no count; give how many, e.g. '{text}': 1")
        if isinstance(count, bool) or not isinstance(count, int) or count < 0:
            hint = ""
            if isinstance(count, str) and count.strip().isdigit():
                hint = f" (write {count.strip()} without quotes)"
            elif isinstance(count, float) and count.is_integer() and count >= 0:
                hint = f" (write {int(count)})"
            raise ConfigError(f"{where}: mig-devices count for '{text}' must be a whole number >= 0, "
                              f"not {count!r}{hint}")
        if count > MAX_MIG_DEVICES:
            raise ConfigError(f"{where}: mig-devices count for '{text}' is {count}; no GPU holds more than "
                              f"{MAX_MIG_DEVICES} MIG devices (the count is per GPU, not per host)")
    if value and not any(value.values()):
        # mig-parted refuses it (pkg/types/mig_config.go, MigConfig.AssertValidFormat, at bd7160f4):
        # "all counts for all MigProfiles are 0"; an empty layout is written mig-devices: {}
        raise ConfigError(f"{where}: mig-devices: all counts for all MigProfiles are 0 (mig-parted refuses this "
                          "too); write mig-devices: {} for MIG mode with no MIG devices, or give a count")
    return {str(k): v for k, v in value.items()}


# --------------------------------------------------------------------------- device filters

def _parse_filter(value, where: str):
    """('pci', device_id, subsystem or None) or ('name', lowercase name)."""
    if isinstance(value, int) and not isinstance(value, bool):
        # an unquoted 0x20B010DE in YAML is read as a number; it is the same id
        if not 0 < value <= 0xFFFFFFFF:
            raise ConfigError(f"{where}: device-filter {value!r} is not a 32-bit PCI id like 0x20B010DE")
        return ("pci", value, None)
    text = value.strip()
    parts = [p.strip() for p in text.split(":")]
    if parts[0].lower().startswith("0x") or parts[0].isdigit():
        if len(parts) > 2:
            # mig-parted silently matches nothing here (api/spec/v1/helpers_test.go, "malformed
            # filters with extra separators do not match"); a file with it is refused instead.
            raise ConfigError(f"{where}: device-filter {text!r}: expected <devicevendor> or "
                              "<devicevendor>:<subsystem>, e.g. 0x20B010DE:0x134F10DE (mig-parted would skip "
                              "the entry)")
        try:
            values = [int(p, 16) if p.lower().startswith("0x") else int(p, 10) for p in parts]
        except ValueError:
            raise ConfigError(f"{where}: device-filter {text!r} is not a PCI id: expected "
                              "0x<device><vendor>[:0x<subsystem device><subsystem vendor>], e.g. 0x20B010DE or "
                              "0x20B010DE:0x134F10DE") from None
        # mig-parted (pkg/types/device.go NewDeviceIDFromString) takes any 32-bit value; a zero
        # subsystem (0x25B610DE:0x00000000) is its way to match boards that report none.  A zero
        # primary id names no GPU, so it stays refused here.
        if not 0 < values[0] <= 0xFFFFFFFF or any(not 0 <= v <= 0xFFFFFFFF for v in values[1:]):
            raise ConfigError(f"{where}: device-filter {text!r}: each part must be a 32-bit id like 0x20B010DE "
                              "(the device id non-zero; a subsystem of 0x00000000 matches boards without one)")
        return ("pci", values[0], values[1] if len(values) == 2 else None)
    if re.fullmatch(r"[0-9A-Fa-f]{8}(:[0-9A-Fa-f]{8})?", text):
        raise ConfigError(f"{where}: device-filter {text!r} looks like a PCI id without its 0x; write "
                          + ":".join("0x" + p for p in parts))
    return ("name", text.lower())


def _normalize_name(name: str) -> str:
    name = name.lower().strip()
    return name[len("nvidia "):] if name.startswith("nvidia ") else name


def filter_matches(value, gpu: dict) -> bool:
    kind, *rest = _parse_filter(value, "device-filter")
    if kind == "pci":
        device, subsystem = rest
        if int(gpu["pci_device_id"], 16) != device:
            return False
        return subsystem is None or int(gpu.get("pci_subsystem_id") or "0", 16) == subsystem
    return _normalize_name(rest[0]) == _normalize_name(gpu["name"])


def describe_filter(value) -> str:
    return "0x%08X" % value if isinstance(value, int) else str(value)


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


def mig_parted_warnings(entries: list[dict]) -> list[str]:
    """Warnings for what this module reads differently from mig-parted (docs/mig.md, "Differences").

    A model name as device-filter is our extension: mig-parted parses every filter as a PCI id
    (pkg/types/device.go NewDeviceIDFromString) and matches nothing when that fails, so an
    entry filtered by model name is skipped there.  A file that mig-parted or the GPU Operator's
    mig-manager reads too must use the PCI id, which the warning gives when the model is known.
    """
    warnings: list[str] = []
    for entry in entries:
        for value in entry["device_filter"]:
            kind, *rest = _parse_filter(value, "device-filter")
            if kind != "name":
                continue
            model = _catalogue.find_device(name=value)
            pci = f" (for {model['name']}: \"0x{model['pci_device_id']:08X}\")" if model else ""
            text = (f"device-filter '{value}' is a model name: this module matches it against the GPU's name, but "
                    "mig-parted (and the GPU Operator's mig-manager) match device-filter only as a PCI device id "
                    f"and skip this entry; if the file is read by mig-parted too, write the PCI id{pci}")
            if text not in warnings:
                warnings.append(text)
    return warnings


def filters_select_nothing(entries: list[dict], gpus: list[dict]) -> str | None:
    """Why no entry selects any MIG-capable GPU of the host because of device-filters, or None.

    mig-parted silently does nothing then; a configuration meant for another model (or a
    mistyped PCI id) would look applied, so this is reported before anything changes.
    Hosts without MIG-capable GPUs, and configurations without device-filters, are not
    concerned (``devices: all`` skips GPUs without MIG, as mig-parted does).
    """
    capable = [g for g in gpus if g.get("mig_capable", True)]
    if not capable or not any(e["device_filter"] for e in entries):
        return None
    if any(entry_selects(e, g) for e in entries for g in capable):
        return None
    filters = []
    for entry in entries:
        for value in entry["device_filter"]:
            text = describe_filter(value)
            if text not in filters:
                filters.append(text)
    return ("no entry of the configuration selects any MIG-capable GPU of this host: its device-filter values "
            + ", ".join(filters) + " match none of "
            + ", ".join(f"GPU {g['index']} ({g['name']}, PCI device id {g['pci_device_id']})" for g in capable)
            + "; the configuration may be meant for another GPU model, or a device id is mistyped")
