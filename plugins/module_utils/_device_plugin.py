# Copyright (c) gpuops.sharing contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""NVIDIA k8s-device-plugin config files: validate, normalise, predict. Private to this collection: not a public API.

Pure functions, no I/O, no ansible imports.  The node's GPUs come in as plain dicts (see
``_device_plugin_host.inventory``) or as ``None`` where the host has no NVML.

The rules and error texts are the plugin's own, read from its source at
github.com/NVIDIA/k8s-device-plugin commit 1b826acc6af3079d8923bac395c3124b8861a9a6 (tag v0.20.0):

* ``api/config/v1/config.go``: ``parseConfigFrom`` (empty version -> ``v1``, else ``unknown version: <v>``),
  ``NewConfig`` (MPS ``failRequestsGreaterThanOne`` defaults to true when unset),
  ``DisableResourceNamingInConfig`` (``resources`` and per-resource ``rename``/``devices`` are ignored with
  a warning).
* ``api/config/v1/replicas.go``: ``ReplicatedResources``/``ReplicatedResource``/``ReplicatedDevices``
  ``UnmarshalJSON`` (``no resources specified``, ``no resource name specified``, ``no replicas specified``,
  ``number of replicas must be >= 2``, the ``devices`` forms) and ``ReplicatedDeviceRef`` (GPU index,
  MIG index ``<gpu>:<mig>``, GPU/MIG UUID).
* ``api/config/v1/resources.go``: ``NewResourceName`` (``nvidia.com/`` prefix added, 63 characters at most,
  the part after the prefix a DNS-1123 subdomain as k8s.io/apimachinery's ``IsDNS1123Subdomain`` says).
* ``api/config/v1/sharing.go``: MPS is the sharing strategy when ``sharing.mps`` is present (and
  replicated); otherwise time-slicing.  Both present: MPS wins silently.
* ``cmd/nvidia-device-plugin/main.go`` ``validateFlags`` (MIG strategy, device list/ID strategies,
  allocation policy, discovery strategy, ``mixed`` refused with MPS, ``--mps-root`` required with MPS,
  IMEX channel IDs) and the CLI defaults (``migStrategy`` none, ``deviceIDStrategy`` uuid, ...).
* ``internal/rm/rm.go`` ``AddDefaultResourcesToConfig`` and ``internal/rm/device_map.go``: which resource
  names a node advertises (``nvidia.com/gpu``; ``mixed``: ``nvidia.com/mig-<profile>`` with ``+`` written
  ``.``, only for profiles whose compute instance spans its GPU instance; ``single``: MIG devices as
  ``nvidia.com/gpu``, uniform) and their errors.
* ``internal/plugin/mps.go`` (``sharing using MPS is not supported for MIG devices``) and
  ``cmd/mps-control-daemon/mps/device.go`` (at most 48 MPS clients on compute capability 7.5 and later,
  16 before), ``daemon.go`` (each client's pinned memory limit is the GPU's memory / replicas, in whole
  MiB; the active thread percentage 100 / replicas).

The plugin reads the file with sigs.k8s.io/yaml (YAML -> JSON -> encoding/json, not strict), so it
ignores unknown keys silently and matches the keys of its plain structs (``version``, ``flags``,
``sharing``, ``timeSlicing``, ``mps``, ...) case-insensitively, but the keys inside ``sharing.*``
exactly.  Numbers and booleans given where it wants a string are turned into that string first (so
``version: 1`` fails as ``unknown version: 1``).  This module does the same, and on top of it:
unknown keys are warnings, both sharing methods at once are refused, and MPS replicas are checked
against the node's GPUs when NVML can tell.
"""

from __future__ import annotations

import difflib
import json
import math
import re
import struct

PLUGIN_COMMIT = "1b826acc6af3079d8923bac395c3124b8861a9a6"
PLUGIN_SOURCE = f"NVIDIA/k8s-device-plugin@{PLUGIN_COMMIT[:12]} (v0.20.0)"

VERSION = "v1"
RESOURCE_PREFIX = "nvidia.com"
SHARED_SUFFIX = ".shared"
MAX_RESOURCE_NAME = 63
DNS1123_SUBDOMAIN_MAX = 253
MIG_STRATEGIES = ("none", "single", "mixed")
DEVICE_LIST_STRATEGIES = ("envvar", "volume-mounts", "cdi-annotations", "cdi-cri")
DEVICE_ID_STRATEGIES = ("uuid", "index")
ALLOCATION_POLICIES = ("distributed", "packed")
DISCOVERY_STRATEGIES = ("auto", "nvml", "tegra")
MPS_MAX_CLIENTS = 48          # compute capability >= 7.5 (device.go maxClients)
MPS_MAX_CLIENTS_OLD = 16      # before 7.5
MPS_DEFAULT_ROOT = "/run/nvidia/mps"   # the Helm chart's mps.root
MAX_RESOURCES = 64            # a bound on the work done on any input (the plugin has none)

_DNS1123_LABEL = "[a-z0-9]([-a-z0-9]*[a-z0-9])?"
_DNS1123_SUBDOMAIN = _DNS1123_LABEL + "(\\." + _DNS1123_LABEL + ")*"
_DNS1123_RE = re.compile("^" + _DNS1123_SUBDOMAIN + "$")
# k8s.io/apimachinery/pkg/util/validation/validation.go (vendored at the commit above)
_DNS1123_MSG = ("a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', "
                "and must start and end with an alphanumeric character (e.g. 'example.com', regex used for "
                "validation is '" + _DNS1123_SUBDOMAIN + "')")

# The plugin's struct fields (json tags), for unknown-key warnings and case-insensitive matching.
TOP_KEYS = ("version", "flags", "resources", "sharing", "imex")
FLAG_KEYS = {"migStrategy": "str", "failOnInitError": "bool", "mpsRoot": "str", "nvidiaDriverRoot": "str",
             "nvidiaDevRoot": "str", "gdrcopyEnabled": "bool", "gdsEnabled": "bool", "mofedEnabled": "bool",
             "useNodeFeatureAPI": "bool", "deviceDiscoveryStrategy": "str", "plugin": "dict", "gfd": "dict"}
PLUGIN_FLAG_KEYS = {"passDeviceSpecs": "bool", "deviceListStrategy": "strlist", "deviceIDStrategy": "str",
                    "cdiAnnotationPrefix": "str", "nvidiaCTKPath": "str", "containerDriverRoot": "str",
                    "sharedDevicesAllocationPolicy": "str"}
GFD_FLAG_KEYS = {"oneshot": "bool", "noTimestamp": "bool", "sleepInterval": "str", "outputFile": "str",
                 "machineTypeFile": "str"}
SHARING_KEYS = ("timeSlicing", "mps")
REPLICATED_KEYS = ("renameByDefault", "failRequestsGreaterThanOne", "resources")
RESOURCE_KEYS = ("name", "rename", "devices", "replicas")
IMEX_KEYS = ("channelIDs", "required")
SHARING_LABEL = {"timeSlicing": "time-slicing", "mps": "MPS"}


class ConfigError(Exception):
    """A config the device plugin would refuse, or one this collection refuses; found before any write."""


MISSING = object()


def _plugin_error(where: str, value, plugin_text: str, valid: str) -> ConfigError:
    if value is MISSING:
        head = f"{where} is missing"
    else:
        head = f"{where}=" + (repr(value) if isinstance(value, str) else _compact_or_repr(value))
    return ConfigError(f"{head}: the device plugin refuses it ({plugin_text!r}, {PLUGIN_SOURCE}); {valid}")


def _compact_or_repr(value) -> str:
    try:
        return json.dumps(value, separators=(", ", ": "))
    except (TypeError, ValueError):
        return repr(value)


# --------------------------------------------------------------------------- JSON-ish types

def _json_type(value) -> str:
    """The JSON kind encoding/json names in its type errors."""
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, (list, tuple)):
        return "array"
    if isinstance(value, dict):
        return "object"
    return "null" if value is None else type(value).__name__


def _type_error(value, go_type: str) -> str:
    return f"json: cannot unmarshal {_json_type(value)} into Go value of type {go_type}"


def _field_error(value, struct: str, path: str, go_type: str) -> str:
    """encoding/json's UnmarshalTypeError inside a struct: the struct's type and the JSON path from the root."""
    return f"json: cannot unmarshal {_json_type(value)} into Go struct field {struct}.{path} of type {go_type}"


def _compact(value) -> str:
    return json.dumps(value, separators=(",", ":"))


def _as_go_string(value):
    """What sigs.k8s.io/yaml makes of a scalar given where the plugin wants a string (convertToJSONableObject)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return _format_float32(value)
    return value


def _format_float32(value: float) -> str:
    # strconv.FormatFloat(v, 'g', -1, 32): the shortest text that reads back as the same float32
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if math.isnan(value):
        return "NaN"
    text = f"{value:.9g}"
    for digits in range(1, 10):
        candidate = f"{value:.{digits}g}"
        if _f32(float(candidate)) == _f32(value):
            text = candidate
            break
    if "e" in text:
        mantissa, exponent = text.split("e")
        text = f"{mantissa}e{exponent[0]}{int(exponent[1:]):02d}"
    return text


def _f32(value: float) -> float:
    return struct.unpack("f", struct.pack("f", value))[0]


def _as_int(value, go_type: str = "int"):
    """An integer as encoding/json takes it; a float with no fraction counts (YAML 2.0 becomes JSON 2)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(_type_error(value, go_type))
    if isinstance(value, float):
        if not value.is_integer():
            raise ValueError(f"json: cannot unmarshal number {_format_float64(value)} into Go value of type {go_type}")
        value = int(value)
    if go_type == "uint64" and value < 0:
        raise ValueError(f"json: cannot unmarshal number {value} into Go value of type {go_type}")
    if not -(2 ** 63) <= value < 2 ** 63:
        raise ValueError(f"json: cannot unmarshal number {value} into Go value of type {go_type}")
    return value


def _format_float64(value: float) -> str:
    return repr(value)


def _match_keys(data: dict, known, where: str, warnings: list[str]) -> dict:
    """Map each key to the plugin's field name as encoding/json does (exact first, then case-insensitive)."""
    out: dict = {}
    for key, value in data.items():
        if not isinstance(key, str):
            key = str(key)
        if key in known:
            out[key] = value
            continue
        folded = [k for k in known if k.lower() == key.lower()]
        if folded:
            if folded[0] in data:
                warnings.append(f"{where}{key}: also given as {folded[0]}; the device plugin would use one of them "
                                f"and ignore the other, so {key} is dropped")
                continue
            warnings.append(f"{where}{key}: the device plugin matches this key case-insensitively to "
                            f"{folded[0]}; written as {folded[0]}")
            out[folded[0]] = value
            continue
        warnings.append(f"{where}{key}: unknown key, which the device plugin ignores silently{_hint(key, known)}; "
                        "dropped")
    return out


def _exact_keys(data: dict, known, where: str, warnings: list[str]) -> dict:
    """Keys read by the plugin's own UnmarshalJSON through a map: exact names only."""
    out = {}
    for key, value in data.items():
        key = str(key)
        if key in known:
            out[key] = value
            continue
        folded = [k for k in known if k.lower() == key.lower()]
        hint = f" (did you mean {folded[0]}? the plugin matches these keys exactly)" if folded else _hint(key, known)
        warnings.append(f"{where}{key}: unknown key, which the device plugin ignores silently{hint}; dropped")
    return out


def _hint(key: str, known) -> str:
    close = difflib.get_close_matches(key, list(known), n=1, cutoff=0.75)
    if close:
        return f" (did you mean {close[0]}?)"
    return f" (known here: {', '.join(known)})"


# --------------------------------------------------------------------------- names and devices

def resource_name(raw, where: str) -> str:
    """``gpu`` -> ``nvidia.com/gpu``, validated as NewResourceName does."""
    if not isinstance(raw, str):
        raise _plugin_error(where, raw, _type_error(raw, "string"),
                            "give a resource name such as nvidia.com/gpu")
    name = raw if raw.startswith(RESOURCE_PREFIX + "/") else f"{RESOURCE_PREFIX}/{raw}"
    if len(name) > MAX_RESOURCE_NAME:
        raise _plugin_error(where, raw, f"fully-qualified resource name must be {MAX_RESOURCE_NAME} characters or "
                                        f"less: {name}",
                            f"use at most {MAX_RESOURCE_NAME - len(RESOURCE_PREFIX) - 1} characters after "
                            f"{RESOURCE_PREFIX}/")
    short = name.split("/", 1)[1]
    problems = []
    if len(short) > DNS1123_SUBDOMAIN_MAX:
        problems.append(f"must be no more than {DNS1123_SUBDOMAIN_MAX} characters")
    if not _DNS1123_RE.match(short):
        problems.append(_DNS1123_MSG)
    if problems:
        raise _plugin_error(where, raw, f"incorrect format for resource name '{name}': [{' '.join(problems)}]",
                            "use lower-case letters, digits, '-' and '.' after nvidia.com/ (e.g. nvidia.com/gpu); "
                            "the prefix is always nvidia.com")
    return name


def is_gpu_index(ref: str) -> bool:
    return bool(re.fullmatch(r"\+?[0-9]+", ref)) and int(ref) < 2 ** 64   # strconv.ParseUint(s, 10, 0)


def is_mig_index(ref: str) -> bool:
    parts = ref.split(":", 1)
    return len(parts) == 2 and all(is_gpu_index(p) for p in parts)


def _is_uuid(text: str) -> bool:
    # github.com/google/uuid Parse: 36 chars with dashes, 32 hex, urn:uuid: or {...} forms
    candidate = text
    if len(text) == 45 and text.lower().startswith("urn:uuid:"):
        candidate = text[9:]
    elif len(text) == 38 and text.startswith("{") and text.endswith("}"):
        candidate = text[1:-1]
    if len(candidate) == 36:
        if any(candidate[i] != "-" for i in (8, 13, 18, 23)):
            return False
        return bool(re.fullmatch(r"[0-9a-fA-F-]{36}", candidate))
    if len(candidate) == 32:
        return bool(re.fullmatch(r"[0-9a-fA-F]{32}", candidate))
    return False


def is_gpu_uuid(ref: str) -> bool:
    return ref.startswith("GPU-") and _is_uuid(ref[4:])


def is_mig_uuid(ref: str) -> bool:
    if not ref.startswith("MIG-"):
        return False
    suffix = ref[4:]
    if _is_uuid(suffix):
        return True
    parts = suffix.split("/", 2)
    return len(parts) == 3 and is_gpu_uuid(parts[0]) and all(is_gpu_index(p) for p in parts[1:])


def parse_devices(value, where: str):
    """``all``, a count > 0, or a list of GPU indexes, MIG indexes and UUIDs (ReplicatedDevices.UnmarshalJSON)."""
    valid = ("give devices: all, a count of devices (> 0), or a list of GPU indexes (0), MIG indexes (0:1) and "
             "GPU or MIG UUIDs")
    if isinstance(value, str):
        if value != "all":
            raise _plugin_error(where, value, f"devices set as '{value}' but the only valid string input is 'all'",
                                valid)
        return "all"
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        try:
            count = _as_int(value)
        except ValueError:
            count = None
        if count is not None:
            if count <= 0:
                raise _plugin_error(where, value, f"devices set as '{count}' but a count of devices must be > 0", valid)
            return count
    if isinstance(value, (list, tuple)):
        if len(value) > MAX_RESOURCES * 8:
            raise ConfigError(f"{where}: {len(value)} devices; at most {MAX_RESOURCES * 8} are taken")
        refs = []
        for i, item in enumerate(value):
            if item is None:      # json null leaves the uint64 at 0
                refs.append("0")
                continue
            if isinstance(item, (int, float)) and not isinstance(item, bool):
                try:
                    refs.append(str(_as_int(item, "uint64")))
                    continue
                except ValueError:
                    pass
            text = item if isinstance(item, str) else ""   # the plugin prints the failed string read: ""
            if isinstance(item, str) and (is_gpu_index(item) or is_mig_index(item) or is_gpu_uuid(item)
                                          or is_mig_uuid(item)):
                refs.append(item)
                continue
            raise _plugin_error(f"{where}[{i}]", item, f"unsupported type for device in devices list: {text}, string",
                                valid)
        return refs
    if value is None:     # json null leaves the string empty
        raise _plugin_error(where, value, "devices set as '' but the only valid string input is 'all'", valid)
    raise _plugin_error(where, value, f"unrecognized type for devices spec: {_compact(value)}", valid)


# --------------------------------------------------------------------------- the config

def _bool(value, where: str, struct: str | None = None) -> bool:
    if not isinstance(value, bool):
        text = _field_error(value, struct, where, "bool") if struct else _type_error(value, "bool")
        raise _plugin_error(where, value, text, "give true or false")
    return value


def _flags(raw, warnings: list[str]) -> dict:
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise _plugin_error("flags", raw, _field_error(raw, "Config", "flags", "v1.Flags"),
                            "give flags as a mapping, e.g. {migStrategy: mixed}")
    flags = _match_keys(raw, FLAG_KEYS, "flags.", warnings)
    out: dict = {}
    for key, value in flags.items():
        kind = FLAG_KEYS[key]
        if value is None:
            continue
        if kind == "dict":
            known = PLUGIN_FLAG_KEYS if key == "plugin" else GFD_FLAG_KEYS
            if not isinstance(value, dict):
                go = "v1.PluginCommandLineFlags" if key == "plugin" else "v1.GFDCommandLineFlags"
                raise _plugin_error(f"flags.{key}", value, _field_error(value, "Flags", f"flags.{key}", go),
                                    "give a mapping")
            struct = "PluginCommandLineFlags" if key == "plugin" else "GFDCommandLineFlags"
            sub = {}
            for k, v in _match_keys(value, known, f"flags.{key}.", warnings).items():
                if v is not None:
                    sub[k] = _flag_value(v, known[k], f"flags.{key}.{k}", struct)
            out[key] = sub
        else:
            out[key] = _flag_value(value, kind, f"flags.{key}", "Flags")
    return out


def _flag_value(value, kind: str, where: str, struct: str):
    # Unlike version, flags get no number-to-string conversion from sigs.k8s.io/yaml: Flags embeds
    # CommandLineFlags, and convertToJSONableObject looks the keys up one struct too high.
    if kind == "bool":
        return _bool(value, where, struct)
    if kind == "strlist":
        if isinstance(value, (list, tuple)):
            if not all(isinstance(v, str) for v in value):
                raise _plugin_error(where, value, f"invalid deviceListStrategy: {_compact(value)}",
                                    "give a string or a list of strings")
            return list(value)
        if not isinstance(value, str):
            raise _plugin_error(where, value, f"invalid deviceListStrategy: {_compact(value)}",
                                "give a string or a list of strings")
        return value
    if not isinstance(value, str):
        raise _plugin_error(where, value, _field_error(value, struct, where, "string"), "give a string")
    return value


def _check_flags(flags: dict) -> None:
    """validateFlags (cmd/nvidia-device-plugin/main.go), on what the file sets."""
    plugin = flags.get("plugin", {})
    strategies = plugin.get("deviceListStrategy")
    if strategies is not None:
        for s in [strategies] if isinstance(strategies, str) else strategies:
            if s not in DEVICE_LIST_STRATEGIES:
                raise _plugin_error("flags.plugin.deviceListStrategy", strategies,
                                    f"invalid --device-list-strategy option: invalid strategy: {s}",
                                    f"use {', '.join(DEVICE_LIST_STRATEGIES)} (or a list of them)")
    checks = (("deviceIDStrategy", plugin, DEVICE_ID_STRATEGIES, "invalid --device-id-strategy option: {}"),
              ("sharedDevicesAllocationPolicy", plugin, ALLOCATION_POLICIES,
               "invalid --shared-devices-allocation-policy option: {}"),
              ("deviceDiscoveryStrategy", flags, DISCOVERY_STRATEGIES, "invalid --device-discovery-strategy option {}"),
              ("migStrategy", flags, MIG_STRATEGIES, "unknown MIG strategy: {}"))
    for key, where, choices, text in checks:
        value = where.get(key)
        if value is not None and value not in choices:
            prefix = "flags.plugin." if where is plugin else "flags."
            raise _plugin_error(prefix + key, value, text.format(value), f"use one of {', '.join(choices)}")


def _replicated(raw, label: str, warnings: list[str]) -> dict:
    where = f"sharing.{label}"
    if raw is None:
        raise _plugin_error(where, raw, "no resources specified",
                            "give resources: [{name: nvidia.com/gpu, replicas: N}] or leave the key out")
    if not isinstance(raw, dict):
        raise _plugin_error(where, raw, _type_error(raw, "map[string]json.RawMessage"),
                            "give a mapping with renameByDefault, failRequestsGreaterThanOne and resources")
    data = _exact_keys(raw, REPLICATED_KEYS, where + ".", warnings)
    out = {"renameByDefault": False if data.get("renameByDefault") is None
           else _bool(data["renameByDefault"], where + ".renameByDefault")}
    if data.get("failRequestsGreaterThanOne") is not None:
        out["failRequestsGreaterThanOne"] = _bool(data["failRequestsGreaterThanOne"],
                                                  where + ".failRequestsGreaterThanOne")
    if "resources" not in data:
        raise _plugin_error(where + ".resources", MISSING, "no resources specified",
                            "list at least one resource, e.g. [{name: nvidia.com/gpu, replicas: 4}]")
    resources = data["resources"]
    if resources is None:
        resources = []
    if not isinstance(resources, (list, tuple)):
        raise _plugin_error(where + ".resources", resources, _type_error(resources, "[]v1.ReplicatedResource"),
                            "give a list of {name, replicas} mappings")
    if not resources:
        raise _plugin_error(where + ".resources", resources, "no resources specified",
                            "list at least one resource, e.g. [{name: nvidia.com/gpu, replicas: 4}]")
    if len(resources) > MAX_RESOURCES:
        raise ConfigError(f"{where}.resources: {len(resources)} resources; at most {MAX_RESOURCES} are taken")
    out["resources"] = [_resource(r, f"{where}.resources[{i}]", out["renameByDefault"], label, warnings)
                        for i, r in enumerate(resources)]
    seen: dict[str, int] = {}
    for i, r in enumerate(out["resources"]):
        if r["name"] in seen:
            raise ConfigError(f"{where}.resources[{i}].name={r['name']!r}: already given in "
                              f"{where}.resources[{seen[r['name']]}]; the device plugin would replicate the same "
                              f"devices twice under one name. Give each resource once")
        seen[r["name"]] = i
    return out


def _resource(raw, where: str, rename_by_default: bool, label: str, warnings: list[str]) -> dict:
    if not isinstance(raw, dict):
        raise _plugin_error(where, raw, _type_error(raw, "map[string]json.RawMessage"),
                            "give a mapping with name and replicas")
    data = _exact_keys(raw, RESOURCE_KEYS, where + ".", warnings)
    if "name" not in data:
        raise _plugin_error(where + ".name", MISSING, "no resource name specified", "give name: nvidia.com/gpu")
    out = {"name": resource_name(data["name"], where + ".name")}
    devices = "all" if "devices" not in data else parse_devices(data["devices"], where + ".devices")
    if "replicas" not in data:
        raise _plugin_error(where + ".replicas", MISSING, "no replicas specified", "give replicas: an integer >= 2")
    replicas = data["replicas"]
    if replicas is None:
        replicas = 0          # json null leaves the int at 0
    try:
        replicas = _as_int(replicas)
    except ValueError as exc:
        raise _plugin_error(where + ".replicas", data["replicas"], str(exc), "give an integer >= 2") from None
    if replicas < 2:
        raise _plugin_error(where + ".replicas", data["replicas"], "number of replicas must be >= 2",
                            "give an integer >= 2 (one replica is the GPU unshared: leave the resource out)")
    out["replicas"] = replicas
    rename = None
    if data.get("rename") is not None:
        rename = resource_name(data["rename"], where + ".rename")
    # DisableResourceNamingInConfig (config.go / replicas.go): rename and devices are forced back
    default_rename = out["name"] + SHARED_SUFFIX
    if rename is not None and rename != (default_rename if rename_by_default else None):
        warnings.append(f"{where}.rename: the device plugin ignores it (\"Setting the 'rename' field in "
                        f"sharing.{label}.resources is not yet supported in the config. Ignoring...\"); "
                        f"use renameByDefault for the {SHARED_SUFFIX} suffix")
    if devices != "all":
        warnings.append(f"{where}.devices: the device plugin ignores it and shares all devices of the resource "
                        f"(\"Customizing the 'devices' field in sharing.{label}.resources is not yet supported in the "
                        f"config. Ignoring...\")")
    if "devices" in data:
        out["devices"] = devices
    if rename is not None:
        out["rename"] = rename
    return out


def _resources_section(raw, warnings: list[str]) -> dict | None:
    if raw is None:
        return None
    if not isinstance(raw, dict):
        raise _plugin_error("resources", raw, _field_error(raw, "Config", "resources", "v1.Resources"), "give {gpus: [...], mig: [...]}")
    data = _match_keys(raw, ("gpus", "mig"), "resources.", warnings)
    out = {}
    for key, items in data.items():
        if items is None:
            continue
        if not isinstance(items, (list, tuple)):
            raise _plugin_error(f"resources.{key}", items, _field_error(items, "Resources", f"resources.{key}", "[]v1.Resource"),
                                "give a list of {pattern, name}")
        parsed = []
        for i, item in enumerate(items[:MAX_RESOURCES]):
            where = f"resources.{key}[{i}]"
            if not isinstance(item, dict):
                raise _plugin_error(where, item, _type_error(item, "map[string]json.RawMessage"),
                                    "give {pattern, name}")
            if "pattern" not in item:
                raise _plugin_error(where, item, "resources must have a 'pattern' field set", "give pattern and name")
            if "name" not in item:
                raise _plugin_error(where, item, "resources must have a 'name' field set", "give pattern and name")
            parsed.append({"pattern": str(item["pattern"]), "name": resource_name(item["name"], where + ".name")})
        out[key] = parsed
    if any(out.values()):
        warnings.append("resources: the device plugin ignores it (\"Customizing the 'resources' field is not yet "
                        "supported in the config. Ignoring...\")")
    return out


def _imex(raw, warnings: list[str]) -> dict | None:
    if raw is None:
        return None
    if not isinstance(raw, dict):
        raise _plugin_error("imex", raw, _field_error(raw, "Config", "imex", "v1.Imex"), "give {channelIDs: [0], required: true}")
    data = _match_keys(raw, IMEX_KEYS, "imex.", warnings)
    out = {}
    if data.get("channelIDs") is not None:
        ids = data["channelIDs"]
        if not isinstance(ids, (list, tuple)):
            raise _plugin_error("imex.channelIDs", ids, _field_error(ids, "Imex", "imex.channelIDs", "[]int"), "give [] or [0]")
        parsed = []
        for item in ids[:MAX_RESOURCES]:
            try:
                parsed.append(_as_int(item))
            except ValueError:
                raise _plugin_error("imex.channelIDs", data["channelIDs"],
                                    _field_error(item, "Imex", "imex.channelIDs", "int"), "give [] or [0]") from None
        ids = parsed
        if ids not in ([], [0]):
            shown = "[" + " ".join(str(i) for i in ids) + "]"
            raise _plugin_error("imex.channelIDs", ids, "invalid IMEX channel IDs: invalid IMEX config: channelIDs "
                                                        f"must be [] or [0]; found {shown}", "give [] or [0]")
        out["channelIDs"] = ids
    if data.get("required") is not None:
        out["required"] = _bool(data["required"], "imex.required", "Imex")
    return out


def validate(config) -> tuple[dict, list[str]]:
    """The config as the device plugin would read it, normalised, and the warnings; raises ConfigError.

    Normalised: canonical key names, unknown keys dropped, resource names with their ``nvidia.com/``
    prefix, ``version``, ``flags.migStrategy``, ``renameByDefault`` and ``failRequestsGreaterThanOne``
    written out with the values the plugin would use.
    """
    warnings: list[str] = []
    if not isinstance(config, dict):
        raise ConfigError(f"config={json.dumps(config) if config is None else repr(config)}: the device plugin's "
                          f"config is a mapping (version, flags, sharing, ...)")
    data = _match_keys(config, TOP_KEYS, "", warnings)
    version = _as_go_string(data.get("version"))
    if version is None or version == "":
        version = VERSION
    if not isinstance(version, str):
        raise _plugin_error("version", version, "json: cannot unmarshal " + _json_type(version) +
                            " into Go struct field Config.version of type string", "give version: v1")
    if version != VERSION:
        raise _plugin_error("version", data.get("version"), f"unknown version: {version}", "give version: v1")
    out: dict = {"version": VERSION}
    flags = _flags(data.get("flags"), warnings)
    _check_flags(flags)
    flags.setdefault("migStrategy", "none")
    out["flags"] = flags
    resources = _resources_section(data.get("resources"), warnings)
    if resources:
        out["resources"] = resources
    sharing_raw = data.get("sharing")
    sharing: dict = {}
    if sharing_raw is not None:
        if not isinstance(sharing_raw, dict):
            raise _plugin_error("sharing", sharing_raw, _field_error(sharing_raw, "Config", "sharing", "v1.Sharing"),
                                "give {timeSlicing: {...}} or {mps: {...}}")
        present = _match_keys(sharing_raw, SHARING_KEYS, "sharing.", warnings)
        if "timeSlicing" in present:
            sharing["timeSlicing"] = _replicated(present["timeSlicing"], "timeSlicing", warnings)
        if present.get("mps") is not None:       # mps is a pointer: null is no MPS
            sharing["mps"] = _replicated(present["mps"], "mps", warnings)
            # NewConfig: "Preserve the historical MPS behavior unless the config explicitly relaxes it."
            sharing["mps"].setdefault("failRequestsGreaterThanOne", True)
        if "timeSlicing" in sharing:
            sharing["timeSlicing"].setdefault("failRequestsGreaterThanOne", False)
    if len(sharing) == 2:
        raise ConfigError("sharing: both timeSlicing and mps are given. The device plugin would use MPS and ignore "
                          "timeSlicing without a word (sharing.go ReplicatedResources), and its README says "
                          "\"Time-slicing and MPS are mutually exclusive\" and apply to all GPUs of a node: keep one "
                          "of them (use another config name, label nvidia.com/device-plugin.config, for other nodes)")
    if sharing:
        out["sharing"] = sharing
    imex = _imex(data.get("imex"), warnings)
    if imex:
        out["imex"] = imex
    out = _canonical(out)
    if "mps" in sharing:
        _check_mps_static(out, warnings)
    for i, r in enumerate(sharing.get("timeSlicing", {}).get("resources", [])):
        if r["name"] != f"{RESOURCE_PREFIX}/gpu" and not r["name"].startswith(f"{RESOURCE_PREFIX}/mig-"):
            warnings.append(f"sharing.timeSlicing.resources[{i}].name={r['name']!r}: the device plugin's README says "
                            "\"the only supported resource available for time-slicing are nvidia.com/gpu as well as "
                            "any of the resource types that emerge from configuring a node with the mixed MIG "
                            "strategy\"")
    return out, warnings


def _ordered(data: dict, order) -> dict:
    return {k: data[k] for k in order if k in data}


def _canonical(config: dict) -> dict:
    """The same config always in the same key order, whatever order it was given in: the file is compared as text."""
    out = _ordered(config, TOP_KEYS)
    flags = _ordered(out["flags"], FLAG_KEYS)
    for key, known in (("plugin", PLUGIN_FLAG_KEYS), ("gfd", GFD_FLAG_KEYS)):
        if key in flags:
            flags[key] = _ordered(flags[key], known)
    out["flags"] = flags
    if "sharing" in out:
        out["sharing"] = {key: {**_ordered(section, REPLICATED_KEYS),
                                "resources": [_ordered(r, ("name", "replicas", "devices", "rename"))
                                              for r in section["resources"]]}
                          for key, section in _ordered(out["sharing"], SHARING_KEYS).items()}
    if "resources" in out:
        out["resources"] = _ordered(out["resources"], ("gpus", "mig"))
    if "imex" in out:
        out["imex"] = _ordered(out["imex"], IMEX_KEYS)
    return out


def strategy(config: dict) -> str:
    """The plugin's SharingStrategy() of a normalised config: mps, time-slicing or none."""
    sharing = config.get("sharing", {})
    if "mps" in sharing:
        return "mps"
    return "time-slicing" if "timeSlicing" in sharing else "none"


def _check_mps_static(config: dict, warnings: list[str]) -> None:
    flags = config["flags"]
    if flags.get("migStrategy") == "mixed":
        raise _plugin_error("flags.migStrategy", "mixed", "using --mig-strategy=mixed is not supported with MPS",
                            "use migStrategy none (MPS on whole GPUs) or time-slicing with mixed")
    if not flags.get("mpsRoot"):
        warnings.append("sharing.mps: the device plugin refuses MPS without an MPS root (\"using MPS requires "
                        "--mps-root to be specified\"); NVIDIA's Helm chart passes one (mps.root, default "
                        f"{MPS_DEFAULT_ROOT}); a plugin started another way needs flags.mpsRoot")
    for i, r in enumerate(config["sharing"]["mps"]["resources"]):
        if r["replicas"] > MPS_MAX_CLIENTS:
            raise _plugin_error(f"sharing.mps.resources[{i}].replicas", r["replicas"],
                                f"invalid MPS configuration: invalid device maximum allowed replicas exceeded: "
                                f"{r['replicas']} > {MPS_MAX_CLIENTS}",
                                f"give at most {MPS_MAX_CLIENTS} replicas ({MPS_MAX_CLIENTS_OLD} on GPUs before "
                                f"compute capability 7.5)")
        if r["name"] != f"{RESOURCE_PREFIX}/gpu":
            warnings.append(f"sharing.mps.resources[{i}].name={r['name']!r}: the device plugin's README says \"the "
                            "only supported resource available for MPS are nvidia.com/gpu resources and only with "
                            "full GPUs\"")


# --------------------------------------------------------------------------- shortcuts

def from_shortcuts(mig_strategy: str | None, time_slicing: dict | None, mps: dict | None) -> dict:
    """The plugin's format from the module's snake_case options."""
    config: dict = {"version": VERSION, "flags": {"migStrategy": mig_strategy or "none"}}
    sharing = {}
    for key, given in (("timeSlicing", time_slicing), ("mps", mps)):
        if given is None:
            continue
        resources = given.get("resources")
        if not resources:
            resources = [{"name": f"{RESOURCE_PREFIX}/gpu", "replicas": given.get("replicas")}]
        elif given.get("replicas") is not None:
            resources = [{**r, "replicas": r.get("replicas") if r.get("replicas") is not None else given["replicas"]}
                         for r in resources]
        section: dict = {"resources": [{k: v for k, v in r.items() if v is not None} for r in resources]}
        if given.get("rename_by_default") is not None:
            section["renameByDefault"] = given["rename_by_default"]
        if given.get("fail_requests_greater_than_one") is not None:
            section["failRequestsGreaterThanOne"] = given["fail_requests_greater_than_one"]
        sharing[key] = section
    if sharing:
        config["sharing"] = sharing
    return config


# --------------------------------------------------------------------------- the node

def mig_resource(profile: str) -> str:
    """``1g.10gb+me`` -> ``nvidia.com/mig-1g.10gb.me`` (rm.go: ``strings.ReplaceAll("mig-"+p, "+", ".")``)."""
    return f"{RESOURCE_PREFIX}/mig-" + profile.replace("+", ".")


def _spans_gi(profile: str) -> bool:
    # go-nvlib names a compute instance that uses part of its GPU instance <c>c.<g>g...; rm.go skips those
    return not re.match(r"^\d+c\.", profile)


def base_resources(config: dict, gpus: list[dict]) -> tuple[dict[str, list[dict]], list[str]]:
    """resource name -> the devices behind it before sharing, as device_map.go builds them; and warnings.

    Raises ConfigError for what the plugin refuses at start on these GPUs.
    """
    strategy_ = config["flags"].get("migStrategy", "none")
    warnings: list[str] = []
    found: dict[str, list[dict]] = {}
    gpu_name = f"{RESOURCE_PREFIX}/gpu"
    mig_enabled = [g for g in gpus if g.get("mig_enabled")]
    for g in gpus:
        if g.get("mig_enabled") and strategy_ != "none":
            if not g.get("mig_devices"):
                text = f"device {g['index']} has no MIG devices configured"
                if strategy_ == "single":
                    raise _plugin_error("flags.migStrategy", strategy_, "invalid MIG configuration: at least one device "
                                        f"with migEnabled=true was not configured correctly: {text}",
                                        f"create MIG devices on GPU {g['index']} (gpuops.sharing.mig) or disable MIG "
                                        "there")
                warnings.append(f"GPU {g['index']}: MIG is enabled but has no MIG devices, so it advertises nothing "
                                f"(the device plugin logs \"{text}\")")
            continue
        found.setdefault(gpu_name, []).append({"kind": "gpu", "gpu": g})
    if strategy_ == "single" and mig_enabled and len(mig_enabled) != len(gpus):
        raise _plugin_error("flags.migStrategy", "single", "invalid MIG configuration: all devices on the node must "
                            "be configured with the same migEnabled value",
                            "enable MIG on every GPU of the node, or use migStrategy mixed")
    profiles = set()
    for g in mig_enabled:
        if strategy_ == "none":
            continue
        for m in g.get("mig_devices", []):
            profiles.add(m["profile"])
            if strategy_ == "single":
                name = gpu_name
            else:
                if not _spans_gi(m["profile"]):
                    raise _plugin_error("flags.migStrategy", "mixed", "error building device map from "
                                        "config.resources: error building MIG device map: MIG profile "
                                        f"'{m['profile']}' does not match any resource patterns",
                                        f"GPU {g['index']} has a compute instance that uses part of its GPU "
                                        "instance; give each GPU instance one compute instance of its full size")
                name = mig_resource(m["profile"])
            found.setdefault(name, []).append({"kind": "mig", "gpu": g, "mig": m})
    if strategy_ == "single" and len(profiles) > 1:
        raise _plugin_error("flags.migStrategy", "single", "invalid MIG configuration: more than one MIG device type "
                            "present on node", f"the node has {', '.join(sorted(profiles))}: give every GPU the same "
                            "MIG devices, or use migStrategy mixed")
    return found, warnings


def advertised(config: dict, gpus: list[dict] | None) -> tuple[list[dict], list[str]]:
    """The extended resources the node will advertise: [{name, count, replicas, shares}], and warnings.

    Without GPUs (``None``: no NVML on this host) the names follow from the config alone and counts are None.
    """
    warnings: list[str] = []
    sharing_key = {"mps": "mps", "time-slicing": "timeSlicing"}.get(strategy(config))
    shared = config["sharing"][sharing_key] if sharing_key else None
    if gpus is None:
        names = {f"{RESOURCE_PREFIX}/gpu": None}
        if config["flags"].get("migStrategy") == "mixed":
            warnings.append("no GPUs visible (no NVML on this host): the nvidia.com/mig-<profile> resources of the "
                            "mixed strategy depend on the node's MIG devices and are not listed")
        devices = {n: None for n in names}
    else:
        found, warnings = base_resources(config, gpus)
        devices = {n: len(d) for n, d in found.items()}
    result = {n: {"name": n, "count": c, "replicas": 1, "shares": None} for n, c in devices.items()}
    if shared:
        for i, r in enumerate(shared["resources"]):
            if r["name"] not in devices:
                if gpus is not None or r["name"].startswith(f"{RESOURCE_PREFIX}/mig-"):
                    have = ", ".join(sorted(devices)) or "none"
                    warnings.append(f"sharing.{sharing_key}.resources[{i}].name={r['name']!r}: the node has no such "
                                    f"resource (it has: {have}); the device plugin skips it without a word")
                continue
            base = result.pop(r["name"])
            name = r["name"] + SHARED_SUFFIX if shared["renameByDefault"] else r["name"]
            count = None if base["count"] is None else base["count"] * r["replicas"]
            result[name] = {"name": name, "count": count, "replicas": r["replicas"], "shares": r["name"]}
    return sorted(result.values(), key=lambda x: x["name"]), warnings


def mps_max_clients(compute_capability: str | None) -> int:
    """device.go: 48 from compute capability 7.5 (semver compare of v<cc> with v7.5), 16 before."""
    if not compute_capability:
        return MPS_MAX_CLIENTS
    major, _dot, minor = compute_capability.lstrip("v").partition(".")
    try:
        cc = (int(major), int(minor or 0))
    except ValueError:
        return MPS_MAX_CLIENTS
    return MPS_MAX_CLIENTS if cc >= (7, 5) else MPS_MAX_CLIENTS_OLD


def check_mps_node(config: dict, gpus: list[dict], min_replica_memory_mib: int) -> list[str]:
    """The MPS rules on the node's GPUs: no MIG devices, client limits, each client's memory share."""
    if strategy(config) != "mps":
        return []
    warnings: list[str] = []
    found = base_resources(config, gpus)[0]
    shared = config["sharing"]["mps"]
    for i, r in enumerate(shared["resources"]):
        where = f"sharing.mps.resources[{i}]"
        for dev in found.get(r["name"], []):
            g = dev["gpu"]
            if dev["kind"] == "mig":
                raise _plugin_error(where + ".name", r["name"], "sharing using MPS is not supported for MIG devices",
                                    f"GPU {g['index']} ({g['name']}) is in MIG mode and migStrategy is "
                                    f"{config['flags']['migStrategy']}: share MIG devices with time-slicing, or "
                                    "disable MIG on MPS nodes")
            limit = mps_max_clients(g.get("cuda_compute_capability"))
            if r["replicas"] > limit:
                raise _plugin_error(where + ".replicas", r["replicas"],
                                    "invalid MPS configuration: invalid device maximum allowed replicas exceeded: "
                                    f"{r['replicas']} > {limit}",
                                    f"GPU {g['index']} ({g['name']}, compute capability "
                                    f"{g.get('cuda_compute_capability')}) takes at most {limit} MPS clients")
            total = g.get("memory_total_mib")
            if total:
                share = total // r["replicas"]        # daemon.go: totalMemory / replicas / 1024 / 1024 (MiB)
                if share < min_replica_memory_mib:
                    raise ConfigError(
                        f"{where}.replicas={r['replicas']}: each MPS client on GPU {g['index']} ({g['name']}, "
                        f"{total} MiB) would be limited to {share} MiB (the device plugin sets "
                        f"set_default_device_pinned_mem_limit to the GPU's memory / replicas), below "
                        f"min_replica_memory ({min_replica_memory_mib} MiB); give at most "
                        f"{max(1, total // max(min_replica_memory_mib, 1))} replicas, or lower min_replica_memory")
                used = g.get("memory_used_mib") or 0
                if used and used > total - share * r["replicas"] + share // 2:
                    warnings.append(f"GPU {g['index']}: {used} MiB of its memory is in use now; the MPS memory split "
                                    f"gives each of the {r['replicas']} clients {share} MiB of the whole {total} MiB, "
                                    "so not every client can get its share while that memory stays in use")
    return warnings


# --------------------------------------------------------------------------- the file

def render(config: dict) -> str:
    """YAML the plugin reads (sigs.k8s.io/yaml); strings double-quoted (valid YAML and JSON escapes)."""
    lines = ["# Managed by gpuops.sharing.device_plugin_config: NVIDIA k8s-device-plugin config (api/config/v1)"]
    _emit(config, 0, lines)
    return "\n".join(lines) + "\n"


def _scalar(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if value is None:
        return "null"
    return json.dumps(str(value))


def _emit(value, indent: int, lines: list[str]) -> None:
    pad = " " * indent
    if isinstance(value, dict):
        for key, item in value.items():
            if isinstance(item, (dict, list)) and item:
                lines.append(f"{pad}{key}:")
                _emit(item, indent + 2, lines)
            else:
                lines.append(f"{pad}{key}: {_empty(item) if isinstance(item, (dict, list)) else _scalar(item)}")
    else:
        for item in value:
            if isinstance(item, dict) and item:
                sub: list[str] = []
                _emit(item, indent + 2, sub)
                sub[0] = f"{pad}- " + sub[0][indent + 2:]
                lines.extend(sub)
            elif isinstance(item, (dict, list)):
                lines.append(f"{pad}- {_empty(item)}")
            else:
                lines.append(f"{pad}- {_scalar(item)}")


def _empty(value) -> str:
    return "{}" if isinstance(value, dict) else "[]"


# --------------------------------------------------------------------------- the whole plan

def prepare(given, gpus: list[dict] | None, why_no_gpus: str | None, min_replica_memory_mib: int) -> dict:
    """Everything the module decides: the normalised config, its text, what the node advertises, warnings.

    ``gpus`` is None where the host has no NVML (``why_no_gpus`` says why); the node checks are then skipped.
    Raises ConfigError for anything the plugin (or this collection) refuses.
    """
    config, warnings = validate(given)
    if gpus is None:
        warnings.append(f"the config was not checked against this host's GPUs ({why_no_gpus}): MPS client limits, "
                        "MIG devices and memory shares are unchecked")
    else:
        warnings.extend(check_mps_node(config, gpus, min_replica_memory_mib))
    resources, more = advertised(config, gpus)
    warnings.extend(more)
    return {"config": config, "content": render(config), "strategy": strategy(config), "resources": resources,
            "resource_names": [r["name"] for r in resources], "gpus_checked": gpus is not None,
            "warnings": warnings}
