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
* FeatureType.  The template comment says 0 = "unlicensed state", 1 = NVIDIA vGPU
  ("Optional, autodetected as per vGPU type"), 2 = NVIDIA RTX Virtual Workstation, 4 = NVIDIA
  Virtual Compute Server, "All other values reserved".  Older templates (GRID 7 to 11) name the
  same values "GRID vGPU" and "Quadro Virtual Datacenter Workstation" (retired product names).
  What the template comment leaves out, and the NLS User Guide's "Configuring a Licensed Client
  on Linux" says: the value depends on the GPU.  On an NVIDIA vGPU use 1; the driver licenses the
  product of the vGPU type (Q-series: vWS, B-series: vPC, A-series: vApps, C-series: vCS).  On a
  physical GPU (pass-through, bare metal) 2 and 4 select vWS and vCS, and 0 is listed as NVIDIA
  Virtual Applications, which the client guide's enforcement table licenses by EULA only (no
  license is leased): so 0 is "unlicensed" on a vGPU but vApps on a physical GPU.  From vGPU
  software 16 the client licensing guide lists only vWS, vPC and vApps as licensed products (vCS
  went to NVIDIA AI Enterprise); the template still lists 4, so it stays valid here.
* Values in the file.  The template and the guides write ``Key=value``; NVIDIA's guides also
  show quoted values (``ClientConfigTokenPath="<path>"``, ``FeatureType="<value>"``) and the
  template's format lines read ``"<address>"``, so one pair of double quotes around a value is
  read as the value.  Booleans are ``TRUE`` or ``FALSE`` (template: "Possible values: TRUE or
  FALSE"); ``yes``, ``on`` or ``1`` in the file are not documented and count as invalid.  A
  line ends at ``\\n`` (nvidia-gridd is a Linux daemon); a ``\\r`` before it (a file edited on
  Windows) is kept, and so is a UTF-8 byte order mark at the start of the file (Notepad),
  which is not read as part of the first key.  NVIDIA does not document spaces around ``=``, comments after a value,
  keys in other letter cases or repeated keys; the editor reads them leniently (``Key = value``
  is the key, the first active line of a repeated key wins, ``value # text`` is an invalid
  value) and rewrites such a line only when that key is managed.
"""

from __future__ import annotations

import ipaddress
import re

from ansible_collections.gpuops.sharing.plugins.module_utils._runner import Op

DEFAULT_PATH = "/etc/nvidia/gridd.conf"
DEFAULT_TOKEN_DIR = "/etc/nvidia/ClientConfigToken"
# The name NVIDIA's GPU Operator expects ("The file must be named client_configuration_token.tok").
DEFAULT_TOKEN_NAME = "client_configuration_token.tok"
# NLS User Guide: "the owner can read, write, and execute the token, and the group and others
# only to read the token" -> chmod 744.
TOKEN_MODE = 0o744
TOKEN_MAX_BYTES = 64 * 1024

# FeatureType values NVIDIA documents (gridd.conf.template, "All other values reserved"; what each
# selects per the NLS User Guide, see the module docstring).
FEATURE_TYPES = {
    0: "unlicensed state on a vGPU; NVIDIA Virtual Applications on a physical GPU",
    1: "NVIDIA vGPU: the license is chosen from the vGPU type (use this on a vGPU)",
    2: "NVIDIA RTX Virtual Workstation (physical GPU: pass-through or bare metal)",
    4: "NVIDIA Virtual Compute Server (physical GPU: pass-through)",
}
FEATURE_NAMES = {"unlicensed": 0, "vapps": 0, "vgpu": 1, "rtx_vws": 2, "vws": 2, "vcs": 4}
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

BOM = "\ufeff"
HOST_EXAMPLES = "for example license.example.com, 10.0.0.5 or fd00::5"
_LABEL_CHARS = re.compile(r"^[A-Za-z0-9-]+$")
_HOST_PORT = re.compile(r"^(\[[^]]*\]|[^:]+):([0-9]+)$")
_ASSIGN = re.compile(r"^\s*([A-Za-z][A-Za-z0-9_]*)\s*=\s*(.*?)\s*$")
_COMMENTED = re.compile(r"^\s*#\s*([A-Za-z][A-Za-z0-9_]*)\s*=")
_TOKEN_CHARS = re.compile(r"^[A-Za-z0-9._-]+$")
TOKEN_NAME_MAX = 255   # NAME_MAX of Linux file systems, in bytes


class GriddError(ValueError):
    """A value cannot go into gridd.conf, or the file cannot be understood."""


# --------------------------------------------------------------------------- validation

_FORBIDDEN = (("\n", "a newline"), ("\r", "a carriage return"), ("\x00", "a NUL byte"), ("=", "'='"),
              ("#", "'#' (a comment would start there)"), ('"', "a double quote"), ("'", "a single quote"))


def _single_line(option: str, value: str) -> str:
    for char, name in _FORBIDDEN:
        if char in value:
            raise GriddError(f"{option}={value!r} contains {name}; gridd.conf holds one Key=value per line, "
                             f"so a value cannot contain newlines, '=', '#' or quotes")
    bad = next((c for c in value if ord(c) < 32 or ord(c) == 127 or 0xD800 <= ord(c) <= 0xDFFF), None)
    if bad is not None:
        raise GriddError(f"{option}={value!r} contains the control character {bad!r}; give printable text")
    if value == "":
        raise GriddError(f"{option} is empty; to take the key out of gridd.conf list it in remove "
                         f"(remove: [{option}]) instead")
    if value != value.strip():
        raise GriddError(f"{option}={value!r} has leading or trailing white space; give the value without it")
    return value


def validate_host(option: str, value) -> str:
    """A host name (RFC 1123), an IPv4 address or an IPv6 address, as nvidia-gridd is to be given it."""
    if not isinstance(value, str):
        raise GriddError(f"{option}={value!r} is not a host name or IP address; {HOST_EXAMPLES}")
    _single_line(option, value)
    if any(c.isspace() for c in value):
        raise GriddError(f"{option}={value!r} contains white space; a host name or IP address has none "
                         f"({HOST_EXAMPLES})")
    if "://" in value:
        raise GriddError(f"{option}={value!r} is a URL; give only the host name or IP address, without the scheme, "
                         f"port or path (the port has its own option); {HOST_EXAMPLES}")
    if "/" in value or "\\" in value:
        raise GriddError(f"{option}={value!r} contains a path ('/' or '\\'); give only the host name or IP address; "
                         f"{HOST_EXAMPLES}")
    if "%" in value:
        raise GriddError(f"{option}={value!r} is a scoped IPv6 address ('%' and a zone); give an address without "
                         f"a zone, or a host name")
    port = _HOST_PORT.match(value)
    if port:
        raise GriddError(f"{option}={value!r} includes a port; give the host {port.group(1)!r} here and the "
                         f"port {port.group(2)} in the port option ({option.replace('address', 'port')})")
    bracketed = value.startswith("[") and value.endswith("]")
    candidate = value[1:-1] if bracketed else value
    if ":" in candidate:
        try:
            return str(ipaddress.IPv6Address(candidate))
        except ValueError:
            raise GriddError(f"{option}={value!r} is not a valid IPv6 address; {HOST_EXAMPLES}") from None
    if bracketed or "[" in value or "]" in value:
        raise GriddError(f"{option}={value!r}: brackets are only for an IPv6 address; {HOST_EXAMPLES}")
    labels = (value[:-1] if value.endswith(".") else value).split(".")
    if all(label.isdigit() for label in labels if label) and labels[-1].isdigit():
        try:
            return str(ipaddress.IPv4Address(value))
        except ValueError:
            raise GriddError(f"{option}={value!r} is not a valid IPv4 address (four numbers 0 to 255, without "
                             f"leading zeros, for example 10.0.0.5)") from None
    name = value[:-1] if value.endswith(".") else value
    if len(name) > 253:
        raise GriddError(f"{option}={value[:40]!r}... is {len(name)} characters long; a host name has at most 253")
    for label in labels:
        if label == "":
            raise GriddError(f"{option}={value!r} has an empty label ('..' or a leading dot); {HOST_EXAMPLES}")
        if len(label) > 63:
            raise GriddError(f"{option}={value!r}: the label {label[:20]!r}... has {len(label)} characters; each "
                             f"dot-separated label of a host name has 1 to 63")
        if not _LABEL_CHARS.match(label):
            bad = sorted({c for c in label if not (c.isascii() and (c.isalnum() or c == "-"))})
            what = "an underscore" if bad == ["_"] else "the characters " + " ".join(map(repr, bad))
            raise GriddError(f"{option}={value!r} contains {what}; host names (RFC 1123) have only letters, digits "
                             f"and '-' in dot-separated labels; {HOST_EXAMPLES}")
        if label.startswith("-") or label.endswith("-"):
            raise GriddError(f"{option}={value!r}: the label {label!r} starts or ends with '-', which host names do "
                             f"not allow; {HOST_EXAMPLES}")
    if labels[-1].isdigit():
        raise GriddError(f"{option}={value!r} is neither an IPv4 address nor a host name (the last label is a "
                         f"number); {HOST_EXAMPLES}")
    return value.lower()


def validate_int(option: str, value, low: int, high: int, what: str = "") -> int:
    valid = f"a whole number from {low} to {high}{what}"
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise GriddError(f"{option}={value!r} is not {valid}")
    text = str(value).strip()
    if not text.isascii() or not text.isdigit():
        raise GriddError(f"{option}={value!r} is not {valid}")
    number = int(text)
    if not low <= number <= high:
        raise GriddError(f"{option}={number} is out of range: it must be {valid}")
    return number


def validate_port(option: str, value) -> int:
    return validate_int(option, value, 1, 65535, " (a TCP port)")


def validate_feature_type(value, option: str = "feature_type") -> int:
    valid = "; ".join(f"{code} ({text})" for code, text in FEATURE_TYPES.items())
    names = ", ".join(sorted(FEATURE_NAMES))
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise GriddError(f"{option}={value!r} is not a FeatureType; valid values: {valid} (or the names {names})")
    text = str(value).strip()
    if text.lower() in FEATURE_NAMES:
        return FEATURE_NAMES[text.lower()]
    if not text.isascii() or not text.lstrip("-").isdigit():
        raise GriddError(f"{option}={value!r} is not a FeatureType; valid values: {valid} (or the names {names})")
    code = int(text)
    if code not in FEATURE_TYPES:
        raise GriddError(f"{option}={code} is not a FeatureType NVIDIA documents (gridd.conf.template: 'All other "
                         f"values reserved'); valid values: {valid}")
    return code


def validate_bool(option: str, value) -> bool:
    """A boolean option.  Strings: only true and false (any case), what gridd.conf writes TRUE/FALSE."""
    if isinstance(value, bool):
        return value
    text = value.strip().lower() if isinstance(value, str) else None
    if text == "true":
        return True
    if text == "false":
        return False
    key = KEYS.get(option, (option,))[0]
    raise GriddError(f"{option}={value!r} is not a boolean gridd.conf takes: give true or false (written "
                     f"{key}=TRUE or {key}=FALSE, the only values NVIDIA's template lists)")


def validate_abspath(option: str, value) -> str:
    if not isinstance(value, str):
        raise GriddError(f"{option}={value!r} is not a path")
    _single_line(option, value)
    if not value.startswith("/"):
        raise GriddError(f"{option}={value!r} is not an absolute path (it must start with '/')")
    if any(c.isspace() for c in value):
        raise GriddError(f"{option}={value!r} contains white space; give a path without spaces")
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


def file_value(option: str, value: str):
    """A value as the file holds it (quotes already removed), normalised; GriddError when invalid.

    As an option's, except that FeatureType must be a number: the names such as ``vgpu`` are this
    module's, nvidia-gridd does not know them.  (Booleans are TRUE or FALSE in any letter case for
    both: :func:`validate_bool` takes no yes/on/1.)
    """
    if KEYS[option][1] == "feature" and not value.strip().isdigit():
        raise GriddError(f"{KEYS[option][0]}={value} is not a number")
    return validate_option(option, value)


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
    """A file name for the token folder: a plain name ending in .tok, as NVIDIA's guides name tokens."""
    valid = (f"give a plain file name of letters, digits, '.', '_' and '-' that ends in .tok, for example "
             f"{DEFAULT_TOKEN_NAME}")
    if not isinstance(name, str) or name == "":
        raise GriddError(f"token_name={name!r} is empty or not text; {valid}")
    if "/" in name or "\\" in name:
        raise GriddError(f"token_name={name!r} contains a path separator ('/' or '\\'); the token goes into the "
                         f"token folder (client_config_token_path), so {valid}")
    if name in (".", "..") or ".." in name:
        raise GriddError(f"token_name={name!r} contains '..'; {valid}")
    if name.startswith("."):
        raise GriddError(f"token_name={name!r} starts with '.' (a hidden file); {valid}")
    if not _TOKEN_CHARS.match(name):
        bad = sorted({c for c in name if not (c.isascii() and (c.isalnum() or c in "._-"))})
        raise GriddError(f"token_name={name!r} contains {' '.join(map(repr, bad))}; {valid}")
    if not name.endswith(".tok") or name == ".tok":
        raise GriddError(f"token_name={name!r} does not end in .tok (lower case), the extension of a client "
                         f"configuration token; {valid}")
    if len(name.encode()) > TOKEN_NAME_MAX:
        raise GriddError(f"token_name is {len(name)} characters long; a file name has at most {TOKEN_NAME_MAX}")
    return name


def validate_token_content(content) -> bytes:
    """The token as bytes.  Messages never contain the token itself."""
    if not isinstance(content, str):
        raise GriddError("token_content is not text (a client configuration token is a text file)")
    data = content.encode("utf-8", "surrogateescape")
    if not data.strip():
        raise GriddError("token_content is empty; give the content of the client configuration token (.tok) "
                         "downloaded from the NVIDIA Licensing Portal or your DLS instance")
    if len(data) > TOKEN_MAX_BYTES:
        raise GriddError(f"token_content is {len(data)} bytes; a client configuration token is a few KiB "
                         f"(at most {TOKEN_MAX_BYTES} bytes accepted): check that the right file was given")
    if b"\x00" in data:
        raise GriddError("token_content contains NUL bytes; a client configuration token is a text file")
    return data


def shown(text: str) -> str:
    """Text that is safe in a result: bytes that were not UTF-8 (kept as surrogates) become U+FFFD."""
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


# --------------------------------------------------------------------------- the file

class Line:
    """One line of gridd.conf, kept byte for byte (``raw`` includes its line ending)."""

    __slots__ = ("key", "number", "raw", "value")

    def __init__(self, raw: str, number: int = 0):
        self.raw = raw
        self.number = number
        self.key = None
        self.value = None
        body = raw[:len(raw) - len(self.ending)]
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
        """``\\r\\n``, ``\\n`` or nothing (the last line of a file without a final newline)."""
        if self.raw.endswith("\r\n"):
            return "\r\n"
        return "\n" if self.raw.endswith("\n") else ""

    def commented_key(self):
        match = _COMMENTED.match(self.raw)
        return match.group(1) if match else None


def split_bom(text: str) -> tuple[str, str]:
    """(the UTF-8 byte order mark or "", the rest): a BOM is kept but is not part of the first key."""
    return (BOM, text[1:]) if text.startswith(BOM) else ("", text)


def split_lines(text: str) -> list[str]:
    """The lines with their endings.  Only ``\\n`` ends a line, as for nvidia-gridd on Linux (not
    ``\\f``, ``\\v`` or the other separators of ``str.splitlines``)."""
    parts = text.split("\n")
    lines = [part + "\n" for part in parts[:-1]]
    if parts[-1]:
        lines.append(parts[-1])
    return lines


def parse(text: str) -> list[Line]:
    return [Line(raw, number) for number, raw in enumerate(split_lines(split_bom(text)[1]), start=1)]


def _normal(option: str, value: str):
    """A file value in comparable form; None when empty (nvidia-gridd treats ``Key=`` as unset)."""
    if value is None or value.strip() == "":
        return None
    try:
        return file_value(option, value)
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


def repeated_keys(text: str | None) -> dict:
    """Keys with more than one active line: ``{key as first written: [(line number, value), ...]}``.

    NVIDIA does not document which line nvidia-gridd uses; the editor reads the first.
    """
    if text is None:
        return {}
    seen = {}
    for line in parse(text):
        if line.key is not None:
            seen.setdefault(line.key.lower(), []).append(line)
    return {lines[0].key: [(line.number, line.value) for line in lines]
            for lines in seen.values() if len(lines) > 1}


def describe(option: str, value) -> str:
    if isinstance(value, tuple):
        return f"{KEYS[option][0]}={shown(value[1])} (invalid)"
    return f"{KEYS[option][0]}={shown(render_value(option, value))}"


def plan(text: str | None, desired: dict, remove: list) -> tuple[str, list]:
    """The new file text and the changes, each ``(option, before, after)`` (None = not set).

    Lines of keys that are not managed, comments, blank lines, line endings and a byte order
    mark are kept as they are.  A managed key is rewritten in place on its first active line,
    further active lines of the same key are dropped (nvidia-gridd would see two values), a new
    key goes right after the template's commented example line (``#BackupServerAddress=``) or
    else at the end, and a removed key loses its active lines (its comments stay).
    """
    source = render_template() if text is None else text
    bom, _rest = split_bom(source)
    lines = parse(source)
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
            if out and not out[-1].endswith("\n"):
                out[-1] += _eol(lines)
            out.append(new)
        else:
            if not out[anchor].endswith("\n"):
                out[anchor] += _eol(lines)
            out.insert(anchor + 1, new)
    new_text = bom + "".join(out)
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
        "#    0 => unlicensed state (a physical GPU: NVIDIA Virtual Applications)",
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
        view[option] = shown(value[1]) if isinstance(value, tuple) else value
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
        warnings.append("feature_type=0 (the unlicensed state on a vGPU; NVIDIA Virtual Applications only on a "
                        "physical GPU): nvidia-gridd requests no license for a vGPU; use 1 (NVIDIA vGPU)")
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


# The section's name: "vGPU Software Licensed Product" (vGPU software 10 and later), "GRID Licensed
# Product" (older GRID drivers).
SMI_LICENSE_SECTIONS = ("vGPU Software Licensed Product", "GRID Licensed Product")
SMI_VIRTUALIZATION = {"VGPU": "vgpu", "None": "none", "Pass-Through": "passthrough",
                      "Host VGPU": "host_vgpu", "Host VSGA": "host_vsga"}
_SMI_EXPIRY = re.compile(r"Expiry:\s*(\d{4})-(\d{1,2})-(\d{1,2})\s+(\d{1,2}):(\d{1,2}):(\d{1,2})\s*GMT")


def parse_smi_query(text: str) -> list[dict]:
    """The license part of ``nvidia-smi -q``, one dict per GPU (fallback when NVML lacks the call).

    Reads, per ``GPU <bus id>`` block, "Product Name", "Virtualization Mode" and the "vGPU Software
    Licensed Product" section ("GRID Licensed Product" before vGPU software 10): "Product Name" and
    "License Status", which reads "Licensed (Expiry: 2022-5-27 0:8:28 GMT)" (UTC, fields not
    zero-padded), "Licensed" (drivers that print no expiry), "Unlicensed (Unrestricted)",
    "Unlicensed (Restricted)" or "Unlicensed".
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
        if key == "Product Name" and section in SMI_LICENSE_SECTIONS:
            current["feature"] = value
            current["license_supported"] = True
        elif key == "Product Name" and section is None:
            current["name"] = value
        elif key == "GPU UUID" and section is None:
            current["uuid"] = value
        elif key == "Virtualization Mode":
            current["virtualization_mode"] = SMI_VIRTUALIZATION.get(value, value.lower())
        elif key == "License Status" and section in SMI_LICENSE_SECTIONS:
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


# --------------------------------------------------------------------------- the plan of one run

def change_text(option, before, after) -> str:
    """One line of ``config_changes``."""
    if option is None:
        return "layout: file created or duplicate lines removed"

    def show(value):
        if value is None:
            return "(unset)"
        if isinstance(value, tuple):
            return f"{shown(value[1])} (invalid)"
        return shown(render_value(option, value))

    return f"{KEYS[option][0]}: {show(before)} -> {show(after)}"


def plan_run(facts: dict, request: dict) -> dict:
    """Every operation of one run, in a safe order, and every refusal, from what was observed.

    ``facts`` (what the host layer read; nothing here reads): ``path``, ``write_path`` (the file
    written: the target of a symbolic link), ``link`` (that target, or None), ``dangling``,
    ``text`` (None: no file), ``token_dir``/``token_dir_kind`` and ``token_path``/``token_kind``
    (``missing``, ``dir``, ``file``, ``link`` or ``other``), ``token_content``, ``token_mode``,
    ``tokens`` (the ``.tok`` names in the folder), ``systemd`` (booted), ``daemon`` (``pidfile``,
    ``pid`` of a live nvidia-gridd that file names, ``others``: live processes named nvidia-gridd
    it does not name), ``binaries`` and ``license``/``license_error``.

    The order: token folder, token, other tokens' removal, then gridd.conf (so that a token that
    cannot be written never leaves gridd.conf pointing at a folder without it), then the restart,
    then the wait (which writes nothing).
    """
    path, tdir, tpath = facts["path"], facts["token_dir"], facts["token_path"]
    content = request["content"]
    problems: list[str] = []
    ops: list = []
    new_text, changes = plan(facts["text"], request["desired"], request["remove"])
    absent = request.get("state", "present") == "absent"
    token = {"write": False, "chmod": False, "remove": []}
    if absent and facts["token_kind"] in ("file", "link"):
        token["remove"].append(request["token_name"])     # unlinking a link removes the link, not its target
    if content is not None:
        if facts["token_kind"] == "file":
            token["write"] = facts["token_content"] != content
            token["chmod"] = not token["write"] and facts["token_mode"] != TOKEN_MODE
        else:
            token["write"] = True
    if request["remove_other_tokens"]:
        token["remove"] += [n for n in facts["tokens"] if n != request["token_name"]]
    touches_folder = token["write"] or token["chmod"] or bool(token["remove"])

    if facts["dangling"]:
        problems.append(f"path={path} is a symbolic link to {facts['link']}, which does not exist; this module edits "
                        f"a linked gridd.conf through the link only when its target exists: create the target, or "
                        f"give the real file as path")
    if touches_folder and facts["token_dir_kind"] == "link":
        problems.append(f"the token folder {tdir} is a symbolic link; tokens are not written through links (a "
                        f"link planted there would redirect a root write): give the real folder as "
                        f"client_config_token_path, or replace the link by a folder")
    elif touches_folder and facts["token_dir_kind"] == "other":
        problems.append(f"the token folder {tdir} exists but is not a folder; remove it or give another "
                        f"client_config_token_path")
    if content is not None and facts["token_kind"] in ("link", "other"):
        what = "a symbolic link" if facts["token_kind"] == "link" else "not a regular file"
        problems.append(f"{tpath} is {what}; the token is never written through a link or into a special file: "
                        f"remove it and run again")

    if token["write"] and facts["token_dir_kind"] == "missing":
        ops.append(Op("create_dir", tdir, f"create the token folder {tdir}", {"path": tdir}))
    if token["write"]:
        ops.append(Op("write_token", tpath, f"write the client configuration token {tpath} (mode "
                                            f"{TOKEN_MODE:04o})", {"path": tpath}))
    elif token["chmod"]:
        ops.append(Op("chmod_token", tpath, f"set mode {TOKEN_MODE:04o} on {tpath}", {"path": tpath}))
    for name in token["remove"]:
        other = tdir.rstrip("/") + "/" + name
        ops.append(Op("remove_token", other, f"remove the token {other}", {"path": other}))
    if changes:
        where = f" (through the link to {facts['write_path']})" if facts["link"] else ""
        ops.append(Op("write_conf", facts["write_path"], f"write {path}{where}",
                      {"path": facts["write_path"], "backup": request["backup"] and facts["text"] is not None}))

    writes = bool(ops)
    restart = writes and request["restart"]
    unit = facts.get("unit")
    if request.get("enable") and facts["systemd"] and not absent:
        if unit is None:
            problems.append("systemd runs but systemctl was not found; cannot enable nvidia-gridd.service")
        elif unit["load"] != "loaded":
            problems.append(f"{SERVICE_UNIT} is not installed (systemctl show: LoadState={unit['load']}): install "
                            f"the vGPU guest driver of your NVIDIA vGPU software release, which ships the unit, or "
                            f"set enable: false")
        elif unit["file_state"] == "masked":
            problems.append(f"{SERVICE_UNIT} is masked; unmask it (systemctl unmask nvidia-gridd) or set "
                            f"enable: false")
        else:
            if unit["file_state"] not in UNIT_ENABLED_STATES:
                ops.append(Op("enable_unit", SERVICE_UNIT, f"enable {SERVICE_UNIT} (systemctl enable nvidia-gridd)"))
            if unit["active"] != "active" and not restart:
                ops.append(Op("start_unit", SERVICE_UNIT, f"start {SERVICE_UNIT} (systemctl start nvidia-gridd)"))
    if restart:
        daemon = facts["daemon"]
        if facts["systemd"]:
            if not facts["binaries"].get("systemctl"):
                problems.append("systemd runs but systemctl was not found; cannot restart nvidia-gridd (set "
                                "restart: false to only write the files)")
            text = "restart nvidia-gridd (systemctl restart nvidia-gridd)"
        else:
            if not facts["binaries"].get("nvidia-gridd"):
                problems.append("no service manager runs and nvidia-gridd was not found on PATH: is the vGPU guest "
                                "driver installed? Set restart: false to only write the configuration (for example "
                                "in an image)")
            if daemon["pid"] is None and daemon["others"]:
                problems.append(f"nvidia-gridd runs (pid {', '.join(map(str, daemon['others']))}) but no pid file "
                                f"names it ({daemon['pidfile']}, which NVIDIA's daemon writes); this module signals "
                                f"only the daemon of that file, never processes by name: stop that process (or "
                                f"start nvidia-gridd through its unit) and run again, or set restart: false")
            if daemon["pid"] is not None:
                text = (f"restart nvidia-gridd (SIGTERM to pid {daemon['pid']} of {daemon['pidfile']}, then start "
                        f"nvidia-gridd)")
            else:
                text = "start nvidia-gridd (no nvidia-gridd was running)"
        ops.append(Op("restart", "nvidia-gridd", text, {"pid": daemon.get("pid")}))
    if request["wait"] and not absent:
        if facts["license_error"] is None and facts["license"]["state"] == "unknown":
            modes = ", ".join(g.get("virtualization_mode") or "unknown" for g in facts["license"]["gpus"])
            problems.append("this host has no NVIDIA vGPU (GRID) guest driver: no GPU reports vGPU software "
                            f"licensing (GPUs and their virtualization mode: {modes or 'none found'}). Install the "
                            "guest driver of your NVIDIA vGPU software release (the -grid package or .run file, not "
                            "the datacenter driver) in the VM; on bare metal or with a physical GPU in pass-through "
                            "vGPU licensing does not apply. Set wait: false to only write the configuration")
        ops.append(Op("wait", "license", f"wait up to {request['timeout']} s until the VM is licensed", writes=False))
    return {"ops": ops, "problems": problems, "new_text": new_text, "changes": changes, "token": token,
            "writes": writes}


SERVICE_UNIT = "nvidia-gridd.service"
# systemctl's UnitFileState values under which the unit starts at boot (or needs no enabling)
UNIT_ENABLED_STATES = ("enabled", "enabled-runtime", "static", "alias", "indirect", "generated", "transient")


def parse_unit_show(text: str) -> dict:
    """``systemctl show --property=LoadState,UnitFileState,ActiveState`` as load/file_state/active."""
    values = dict(line.split("=", 1) for line in text.splitlines() if "=" in line)
    return {"load": values.get("LoadState", ""), "file_state": values.get("UnitFileState", ""),
            "active": values.get("ActiveState", "")}


def validate_state(state: str, desired: dict, content) -> None:
    """state=absent removes; it takes nothing to set."""
    if state != "absent":
        return
    given = [option for option in KEYS if option in desired]
    if given or content is not None:
        names = ", ".join(given + (["token_content"] if content is not None else []))
        raise GriddError(f"state=absent removes the token and the keys listed in remove; it takes no values to set "
                         f"({names} given): drop them, or list the keys to take out in remove")
