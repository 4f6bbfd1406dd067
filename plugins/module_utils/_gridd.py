# Copyright (c) gpuops.sharing contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""vGPU guest licensing: gridd.conf and client configuration tokens. Private to this collection: not a public API.

Pure logic, no I/O: validate the options, parse ``/etc/nvidia/gridd.conf`` into
lines, plan the edits that make the managed keys equal to what was asked
(every other byte of the file stays as it is), render the file when it does not
exist yet, check token file names, and turn license readings (NVML or
``nvidia-smi -q``) into one result.

Sources (NVIDIA):

* ``/etc/nvidia/gridd.conf.template`` shipped with the vGPU guest driver: the
  keys ``ServerAddress``, ``ServerPort`` (default 7070), ``BackupServerAddress``,
  ``BackupServerPort``, ``FeatureType``, ``EnableUI`` (``TRUE``/``FALSE``),
  ``LicenseInterval`` (10 to 10080 minutes, default 1440) and ``LingerInterval``
  (0 to 10080 minutes, default 0), one ``Key=value`` per line, ``#`` comments.
* Virtual GPU Client Licensing User Guide and NVIDIA License System (NLS) User
  Guide, "Configuring a Licensed Client on Linux": the client configuration
  token goes into ``/etc/nvidia/ClientConfigToken`` (or the folder named by
  ``ClientConfigTokenPath``) with mode 744, then ``nvidia-gridd`` is restarted;
  behind a proxy, ``ProxyServerAddress``, ``ProxyServerPort``, ``ProxyUserName``
  and ``ProxyCredentialsFilePath``.
* FeatureType.  The template comment says 0 = unlicensed state, 1 = NVIDIA vGPU
  ("Optional, autodetected as per vGPU type"), 2 = NVIDIA RTX Virtual
  Workstation, 4 = NVIDIA Virtual Compute Server, all other values reserved.
  The commonly copied older comment ("1 => for GRID vGPU, 2 => for Quadro
  Virtual Datacenter Workstation") uses product names NVIDIA retired.  The
  licensing guide says which value fits which deployment: on an NVIDIA vGPU use
  1 and the driver picks the license from the vGPU type (Q-series: vWS,
  B-series: vPC, A-series: vApps, C-series: vCS); 2 and 4 are for physical GPUs
  (pass-through, bare metal).  From vGPU software 16 the client licensing guide
  (docs.nvidia.com/vgpu/16.0/grid-licensing-user-guide) lists only vWS, vPC and
  vApps as licensed products (vCS went to NVIDIA AI Enterprise); the template
  still lists FeatureType 4, so it stays valid here.
"""

from __future__ import annotations

import ipaddress
import re

DEFAULT_PATH = "/etc/nvidia/gridd.conf"
DEFAULT_TOKEN_DIR = "/etc/nvidia/ClientConfigToken"
# The name NVIDIA's GPU Operator expects ("The file must be named client_configuration_token.tok").
DEFAULT_TOKEN_NAME = "client_configuration_token.tok"
# NLS User Guide: "the owner can read, write, and execute the token, and the group and others
# only to read the token" -> chmod 744.
TOKEN_MODE = 0o744
TOKEN_MAX_BYTES = 64 * 1024

# FeatureType values NVIDIA documents (gridd.conf.template, "All other values reserved").
FEATURE_TYPES = {
    0: "unlicensed state",
    1: "NVIDIA vGPU: the license is chosen from the vGPU type (use this on a vGPU)",
    2: "NVIDIA RTX Virtual Workstation (physical GPU: pass-through or bare metal)",
    4: "NVIDIA Virtual Compute Server (physical GPU: pass-through)",
}
FEATURE_NAMES = {"unlicensed": 0, "vgpu": 1, "rtx_vws": 2, "vws": 2, "vcs": 4}
VGPU_FEATURE_TYPE = 1
PHYSICAL_ONLY_FEATURE_TYPES = (2, 4)

# option name -> (gridd.conf key, kind).  Order = order of the template, then NLS extras.
KEYS = {
    "server_address": ("ServerAddress", "host"),
    "server_port": ("ServerPort", "port"),
    "backup_server_address": ("BackupServerAddress", "host"),
    "backup_server_port": ("BackupServerPort", "port"),
    "feature_type": ("FeatureType", "feature"),
    "enable_ui": ("EnableUI", "bool"),
    "license_interval": ("LicenseInterval", "license_interval"),
    "linger_interval": ("LingerInterval", "linger_interval"),
    "client_config_token_path": ("ClientConfigTokenPath", "abspath"),
    "proxy_server_address": ("ProxyServerAddress", "host"),
    "proxy_server_port": ("ProxyServerPort", "port"),
    "proxy_user_name": ("ProxyUserName", "text"),
    "proxy_credentials_file_path": ("ProxyCredentialsFilePath", "abspath"),
}
OPTION_BY_KEY = {key.lower(): option for option, (key, _kind) in KEYS.items()}
RANGES = {"license_interval": (10, 10080), "linger_interval": (0, 10080)}

_LABEL = re.compile(r"^(?!-)[A-Za-z0-9-]{1,63}(?<!-)$")
_ASSIGN = re.compile(r"^\s*([A-Za-z][A-Za-z0-9_]*)\s*=\s*(.*?)\s*$")
_COMMENTED = re.compile(r"^\s*#\s*([A-Za-z][A-Za-z0-9_]*)\s*=")
_TOKEN_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,250}\.tok$")


class GriddError(ValueError):
    """A value cannot go into gridd.conf, or the file cannot be understood."""


# --------------------------------------------------------------------------- validation

def _single_line(option: str, value: str) -> str:
    bad = {"\n": "a newline", "\r": "a carriage return", "\x00": "a NUL byte", "=": "'='", "#": "'#'",
           '"': "a double quote"}
    for char, name in bad.items():
        if char in value:
            raise GriddError(f"{option}={value!r} contains {name}; gridd.conf holds one 'Key=value' per line, "
                             f"so the value cannot contain newlines, '=', '#' or quotes")
    if any(ord(c) < 32 or ord(c) == 127 for c in value):
        raise GriddError(f"{option}={value!r} contains a control character; give printable text")
    if value != value.strip():
        raise GriddError(f"{option}={value!r} has leading or trailing spaces; nvidia-gridd would not strip them")
    if value == "":
        raise GriddError(f"{option} is empty; to take the key out of gridd.conf list it in remove "
                         f"(remove: [{option}]) instead")
    return value


def validate_host(option: str, value) -> str:
    if not isinstance(value, str):
        raise GriddError(f"{option}={value!r} is not a host name or IP address")
    _single_line(option, value)
    candidate = value[1:-1] if value.startswith("[") and value.endswith("]") else value
    try:
        return str(ipaddress.ip_address(candidate))
    except ValueError:
        pass
    if "://" in value or "/" in value or ":" in value:
        raise GriddError(f"{option}={value!r} is not a host name or IP address (no scheme, port or path: "
                         f"the port has its own option); for example license.example.com, 10.0.0.5 or fd00::5")
    name = value[:-1] if value.endswith(".") else value
    labels = name.split(".")
    if len(name) > 253 or not all(_LABEL.match(label) for label in labels) or labels[-1].isdigit():
        raise GriddError(f"{option}={value!r} is not a valid host name or IP address: host names are dot-separated "
                         f"labels of letters, digits and '-' (1 to 63 characters each, 253 in all); for example "
                         f"license.example.com, 10.0.0.5 or fd00::5")
    return value.lower()


def validate_int(option: str, value, low: int, high: int, what: str = "") -> int:
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise GriddError(f"{option}={value!r} is not a whole number between {low} and {high}{what}")
    text = str(value).strip()
    if not re.match(r"^[0-9]+$", text):
        raise GriddError(f"{option}={value!r} is not a whole number between {low} and {high}{what}")
    number = int(text)
    if not low <= number <= high:
        raise GriddError(f"{option}={number} is out of range: it must be between {low} and {high}{what}")
    return number


def validate_port(option: str, value) -> int:
    return validate_int(option, value, 1, 65535, " (a TCP port)")


def validate_feature_type(value, option: str = "feature_type") -> int:
    valid = "; ".join(f"{code} ({text})" for code, text in FEATURE_TYPES.items())
    names = ", ".join(sorted(FEATURE_NAMES))
    if isinstance(value, bool):
        raise GriddError(f"{option}={value!r} is not a FeatureType; valid values: {valid}")
    if isinstance(value, str) and value.strip().lower() in FEATURE_NAMES:
        return FEATURE_NAMES[value.strip().lower()]
    try:
        code = int(str(value).strip())
    except ValueError:
        raise GriddError(f"{option}={value!r} is not a FeatureType; valid values: {valid} "
                         f"(or the names {names})") from None
    if code not in FEATURE_TYPES:
        raise GriddError(f"{option}={code} is reserved by NVIDIA (gridd.conf.template: 'All other values "
                         f"reserved'); valid values: {valid}")
    return code


def validate_bool(option: str, value) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("true", "yes", "on", "1"):
        return True
    if text in ("false", "no", "off", "0"):
        return False
    raise GriddError(f"{option}={value!r} is not a boolean (true or false)")


def validate_abspath(option: str, value) -> str:
    if not isinstance(value, str):
        raise GriddError(f"{option}={value!r} is not a path")
    _single_line(option, value)
    if not value.startswith("/"):
        raise GriddError(f"{option}={value!r} is not an absolute path (it must start with '/')")
    if any(c.isspace() for c in value):
        raise GriddError(f"{option}={value!r} contains white space; nvidia-gridd reads the value up to the "
                         f"end of the line, use a path without spaces")
    return value.rstrip("/") or "/"


def validate_text(option: str, value) -> str:
    if not isinstance(value, str):
        raise GriddError(f"{option}={value!r} is not text")
    return _single_line(option, value)


def validate_option(option: str, value):
    """The normalised value of one managed option (what the file will hold)."""
    kind = KEYS[option][1]
    if kind == "host":
        return validate_host(option, value)
    if kind == "port":
        return validate_port(option, value)
    if kind == "feature":
        return validate_feature_type(value, option)
    if kind == "bool":
        return validate_bool(option, value)
    if kind in RANGES:
        low, high = RANGES[kind]
        return validate_int(option, value, low, high, " minutes")
    if kind == "abspath":
        return validate_abspath(option, value)
    return validate_text(option, value)


def render_value(option: str, value) -> str:
    if KEYS[option][1] == "bool":
        return "TRUE" if value else "FALSE"
    return str(value)


def desired_from_params(params: dict) -> tuple[dict, list]:
    """(``{option: normalised value}`` for the options given, sorted options to remove)."""
    remove = list(params.get("remove") or [])
    unknown = [name for name in remove if name not in KEYS]
    if unknown:
        raise GriddError(f"remove lists {', '.join(map(repr, unknown))}, which gridd.conf has no managed key for; "
                         f"valid names: {', '.join(KEYS)}")
    desired = {}
    for option in KEYS:
        value = params.get(option)
        if value is None:
            continue
        if option in remove:
            raise GriddError(f"{option} is both set (to {value!r}) and listed in remove; do one or the other")
        desired[option] = validate_option(option, value)
    for a, b in (("server_port", "server_address"), ("backup_server_port", "backup_server_address"),
                 ("proxy_server_port", "proxy_server_address")):
        if b in remove and a in desired:
            raise GriddError(f"{a} is set but {b} is listed in remove; a port without its address has no effect")
    return desired, sorted(set(remove), key=list(KEYS).index)


def validate_token_name(name) -> str:
    if not isinstance(name, str) or not _TOKEN_NAME.match(name) or ".." in name:
        raise GriddError(f"token_name={name!r} must be a plain file name ending in .tok: letters, digits, '.', '_' "
                         f"and '-', no '/' or '\\\\', not starting with '.'; for example {DEFAULT_TOKEN_NAME}")
    return name


def validate_token_content(content) -> bytes:
    """The token as bytes.  Messages never contain the token itself."""
    if not isinstance(content, str):
        raise GriddError("token_content is not text (a client configuration token is a text file)")
    data = content.encode("utf-8")
    if not data.strip():
        raise GriddError("token_content is empty; give the content of the client configuration token (.tok) "
                         "downloaded from the NVIDIA Licensing Portal or your DLS instance")
    if len(data) > TOKEN_MAX_BYTES:
        raise GriddError(f"token_content is {len(data)} bytes; a client configuration token is a few KiB "
                         f"(at most {TOKEN_MAX_BYTES} bytes accepted): check that the right file was given")
    if b"\x00" in data:
        raise GriddError("token_content contains NUL bytes; a client configuration token is a text file")
    return data


# --------------------------------------------------------------------------- the file

class Line:
    """One line of gridd.conf, kept byte for byte (``raw`` includes its line ending)."""

    __slots__ = ("key", "raw", "value")

    def __init__(self, raw: str):
        self.raw = raw
        self.key = None
        self.value = None
        body = raw.rstrip("\r\n")
        if body.lstrip().startswith("#"):
            return
        match = _ASSIGN.match(body)
        if match:
            self.key = match.group(1)
            value = match.group(2)
            if len(value) >= 2 and value[0] == value[-1] == '"':
                value = value[1:-1]
            self.value = value

    @property
    def ending(self) -> str:
        body = self.raw.rstrip("\r\n")
        return self.raw[len(body):]

    def commented_key(self):
        match = _COMMENTED.match(self.raw)
        return match.group(1) if match else None


def parse(text: str) -> list[Line]:
    return [Line(raw) for raw in text.splitlines(keepends=True)]


def _normal(option: str, value: str):
    """A file value in comparable form; None when empty (nvidia-gridd treats ``Key=`` as unset)."""
    if value is None or value.strip() == "":
        return None
    try:
        return validate_option(option, value)
    except GriddError:
        return ("invalid", value)


def current_values(lines: list[Line]) -> dict:
    """Managed options as the file sets them (first active line wins), in comparable form."""
    found = {}
    for line in lines:
        if line.key is None:
            continue
        option = OPTION_BY_KEY.get(line.key.lower())
        if option is not None and option not in found:
            found[option] = _normal(option, line.value)
    return {option: value for option, value in found.items() if value is not None}


def describe(option: str, value) -> str:
    if isinstance(value, tuple):
        return f"{KEYS[option][0]}={value[1]} (invalid)"
    return f"{KEYS[option][0]}={render_value(option, value)}"


def plan(text: str | None, desired: dict, remove: list) -> tuple[str, list]:
    """The new file text and the changes, each ``(option, before, after)`` (None = not set).

    Lines of keys that are not managed, comments, blank lines and line endings are kept as they
    are.  A managed key is rewritten in place on its first active line, further active lines of
    the same key are dropped (nvidia-gridd would see two values), a new key goes right after the
    template's commented example line (``#BackupServerAddress=``) or else at the end, and a
    removed key loses its active lines (its comments stay).
    """
    lines = parse(render_template() if text is None else text)
    before = current_values(lines)
    changes = []
    out = []
    seen = set()
    placed = set()
    for line in lines:
        option = OPTION_BY_KEY.get(line.key.lower()) if line.key is not None else None
        if option is None:
            out.append(line.raw)
            continue
        if option in remove:
            if _normal(option, line.value) is not None or option in seen:
                seen.add(option)
                continue
            out.append(line.raw)   # "Key=" (unset): leave the template's empty line alone
            seen.add(option)
            continue
        if option not in desired:
            out.append(line.raw)
            continue
        if option in seen:
            continue               # duplicate active line of a managed key
        seen.add(option)
        placed.add(option)
        wanted = desired[option]
        if _normal(option, line.value) == wanted and line.key == KEYS[option][0]:
            out.append(line.raw)
        else:
            out.append(f"{KEYS[option][0]}={render_value(option, wanted)}{line.ending or _eol(lines)}")
    missing = [o for o in desired if o not in placed]
    for option in missing:
        anchor = _anchor(out, KEYS[option][0])
        new = f"{KEYS[option][0]}={render_value(option, desired[option])}{_eol(lines)}"
        if anchor is None:
            if out and not out[-1].endswith(("\n", "\r")):
                out[-1] += _eol(lines)
            out.append(new)
        else:
            out.insert(anchor + 1, new)
    new_text = "".join(out)
    after = current_values(parse(new_text))
    for option in KEYS:
        if before.get(option) != after.get(option):
            changes.append((option, before.get(option), after.get(option)))
    if new_text != (text if text is not None else "") and not changes:
        changes.append((None, None, None))   # only layout: duplicates dropped or the file created
    return new_text, changes


def _eol(lines: list[Line]) -> str:
    for line in lines:
        if line.ending:
            return line.ending
    return "\n"


def _anchor(out: list[str], key: str):
    for i, raw in enumerate(out):
        match = _COMMENTED.match(raw)
        if match and match.group(1).lower() == key.lower():
            return i
    return None


def render_template() -> str:
    """A new gridd.conf with the layout of NVIDIA's gridd.conf.template (short comments of our own)."""
    blocks = [
        "# /etc/nvidia/gridd.conf - configuration of nvidia-gridd, the vGPU licensing daemon",
        "# Layout of NVIDIA's /etc/nvidia/gridd.conf.template; see nvidia-gridd(1) and the",
        "# Virtual GPU Client Licensing User Guide. Written by gpuops.sharing.vgpu_license.",
        "",
        "# Legacy license server address (NLS clients take the server from the client",
        "# configuration token instead). Data type: string",
        "ServerAddress=",
        "",
        "# Legacy license server port. Data type: integer, default 7070",
        "ServerPort=",
        "",
        "# Backup legacy license server address. Data type: string",
        "#BackupServerAddress=",
        "",
        "# Backup legacy license server port. Data type: integer, default 7070",
        "#BackupServerPort=",
        "",
        "# Feature to license. Data type: integer",
        "#    0 => unlicensed state",
        "#    1 => NVIDIA vGPU (chosen from the vGPU type)",
        "#    2 => NVIDIA RTX Virtual Workstation",
        "#    4 => NVIDIA Virtual Compute Server",
        "# All other values reserved",
        "FeatureType=0",
        "",
        "# License tab in nvidia-settings. Data type: boolean, TRUE or FALSE, default FALSE",
        "#EnableUI=TRUE",
        "",
        "# License borrow period in minutes. Data type: integer, 10 to 10080, default 1440",
        "#LicenseInterval=1440",
        "",
        "# License linger period in minutes. Data type: integer, 0 to 10080, default 0",
        "#LingerInterval=10",
        "",
        "# Folder of the client configuration token, default /etc/nvidia/ClientConfigToken",
        "#ClientConfigTokenPath=",
        "",
        "# Proxy between this client and the license service (NLS)",
        "#ProxyServerAddress=",
        "#ProxyServerPort=",
        "#ProxyUserName=",
        "#ProxyCredentialsFilePath=",
    ]
    return "\n".join(blocks) + "\n"


def config_view(text: str | None) -> dict:
    """Managed options as the file sets them, with option names and plain values (for the result)."""
    if text is None:
        return {}
    view = {}
    for option, value in current_values(parse(text)).items():
        view[option] = value[1] if isinstance(value, tuple) else value
    return view


def diff_lines(values: dict) -> list[str]:
    return [describe(option, values[option]) for option in KEYS if option in values]


def token_dir(desired: dict, remove: list, current: dict) -> str:
    """Where nvidia-gridd looks for the token after this run."""
    if "client_config_token_path" in desired:
        return desired["client_config_token_path"]
    if "client_config_token_path" in remove:
        return DEFAULT_TOKEN_DIR
    value = current.get("client_config_token_path")
    return value if isinstance(value, str) else DEFAULT_TOKEN_DIR


def feature_type_warnings(feature_type, modes: list) -> list[str]:
    """NVIDIA's guide: FeatureType 1 on an NVIDIA vGPU, 2 or 4 on physical GPUs."""
    warnings = []
    if feature_type in PHYSICAL_ONLY_FEATURE_TYPES and "vgpu" in modes:
        warnings.append(f"feature_type={feature_type} ({FEATURE_TYPES[feature_type]}) is documented for physical "
                        f"GPUs; on an NVIDIA vGPU NVIDIA documents 1, which licenses the product of the vGPU type")
    if feature_type == VGPU_FEATURE_TYPE and modes and "vgpu" not in modes:
        warnings.append("feature_type=1 (NVIDIA vGPU) is set but no GPU of this host is a vGPU; on a physical "
                        "GPU use 2 (RTX Virtual Workstation) or 4 (Virtual Compute Server)")
    if feature_type == 0 and "vgpu" in modes:
        warnings.append("feature_type=0 (unlicensed state) on a vGPU: nvidia-gridd requests no license; "
                        "use 1 (NVIDIA vGPU)")
    return warnings


# --------------------------------------------------------------------------- license state

def expiry_text(expiry: dict | None):
    """``nvmlGridLicenseExpiry_t`` as ISO 8601 UTC, ``permanent``, or None."""
    if not expiry:
        return None
    status = expiry.get("status")
    if status == 4:   # NVML_GRID_LICENSE_EXPIRY_PERMANENT
        return "permanent"
    if status != 2:   # only NVML_GRID_LICENSE_EXPIRY_VALID carries a date
        return None
    return "%04d-%02d-%02dT%02d:%02d:%02dZ" % (expiry["year"], expiry["month"], expiry["day"],
                                               expiry["hour"], expiry["min"], expiry["sec"])


SMI_VIRTUALIZATION = {"VGPU": "vgpu", "None": "none", "Pass-Through": "passthrough",
                      "Host VGPU": "host_vgpu", "Host VSGA": "host_vsga"}
_SMI_EXPIRY = re.compile(r"Expiry:\s*(\d{4})-(\d{1,2})-(\d{1,2})\s+(\d{1,2}):(\d{1,2}):(\d{1,2})\s*GMT")


def parse_smi_query(text: str) -> list[dict]:
    """The license part of ``nvidia-smi -q``, one dict per GPU (fallback when NVML lacks the call).

    Reads, per ``GPU <bus id>`` block, "Product Name", "Virtualization Mode" and the "vGPU Software
    Licensed Product" section ("Product Name", "License Status: Licensed (Expiry: 2022-5-27 0:8:28 GMT)").
    """
    gpus = []
    current = None
    section = None
    for raw in text.splitlines():
        if raw.startswith("GPU "):
            current = {"index": len(gpus), "name": None, "uuid": None, "virtualization_mode": None,
                       "license_supported": False, "licensed": False, "feature": None, "feature_code": None,
                       "expiry": None}
            gpus.append(current)
            section = None
            continue
        stripped = raw.strip()
        if current is None or not stripped:
            continue
        indent = len(raw) - len(raw.lstrip())
        if ":" not in stripped:
            section = stripped if indent <= 4 else section
            continue
        if indent <= 4:
            section = None
        key, value = (part.strip() for part in stripped.split(":", 1))
        if key == "Product Name" and section == "vGPU Software Licensed Product":
            current["feature"] = value
            current["license_supported"] = True
        elif key == "Product Name" and section is None:
            current["name"] = value
        elif key == "GPU UUID" and section is None:
            current["uuid"] = value
        elif key == "Virtualization Mode":
            current["virtualization_mode"] = SMI_VIRTUALIZATION.get(value, value.lower())
        elif key == "License Status" and section == "vGPU Software Licensed Product":
            current["license_supported"] = True
            current["licensed"] = value.startswith("Licensed")
            match = _SMI_EXPIRY.search(value)
            if match:
                current["expiry"] = "%04d-%02d-%02dT%02d:%02d:%02dZ" % tuple(int(g) for g in match.groups())
    return gpus


def summarize(gpus: list[dict], source: str | None) -> dict:
    """One license result for the VM: licensed when every GPU that supports licensing is licensed."""
    licensable = [g for g in gpus if g.get("license_supported")]
    if not licensable:
        state = "unknown"
    elif all(g.get("licensed") for g in licensable):
        state = "licensed"
    else:
        state = "unlicensed"
    first = next((g for g in licensable if g.get("licensed")), licensable[0] if licensable else {})
    return {
        "state": state,
        "feature": first.get("feature"),
        "feature_code": first.get("feature_code"),
        "expiry": first.get("expiry"),
        "source": source,
        "gpus": gpus,
    }


def empty_license(source=None) -> dict:
    return summarize([], source)


def unlicensed_reason(license_result: dict) -> str:
    parts = []
    for gpu in license_result.get("gpus", []):
        if gpu.get("license_supported") and not gpu.get("licensed"):
            parts.append(f"GPU {gpu['index']} ({gpu.get('name')}) is unlicensed"
                         + (f" ({gpu['feature']})" if gpu.get("feature") else ""))
    if not parts and license_result.get("state") == "unknown":
        parts.append("no GPU reports vGPU software licensing (is the vGPU guest driver installed and nvidia-gridd "
                     "present?)")
    return "; ".join(parts)
