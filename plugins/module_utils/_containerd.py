# Copyright (c) gpuops.sharing contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""containerd's NVIDIA runtime and CDI settings in config.toml: pure planner. Private to this collection.

What is set follows ``nvidia-ctk runtime configure --runtime=containerd`` (NVIDIA/nvidia-container-toolkit,
``pkg/config/engine/containerd/config.go`` and ``containerd.go`` at commit
d34b3046758cb1a5db606b2a39519c731bbf9f56):

- the CRI plugin is ``io.containerd.grpc.v1.cri`` in a ``version = 2`` file and
  ``io.containerd.cri.v1.runtime`` in a ``version = 3`` file (containerd 2.x); a file without ``version``
  is a version 1 file (plugin ``cri``), which this module refuses (``containerd config migrate`` converts it);
- the runtime is ``plugins.<cri>.containerd.runtimes.<name>``; a new one starts as a copy of the default
  runtime's settings (unless that is an ``nvidia*`` runtime), else runc's, else crun's, else
  ``runtime_type = "io.containerd.runc.v2"`` (``GetDefaultRuntimeOptions``), and gets
  ``options.BinaryName`` (``AddRuntimeWithOptions``);
- ``--set-as-default`` sets ``plugins.<cri>.containerd.default_runtime_name``; without it, a default naming
  this runtime is removed;
- ``--cdi.enabled`` sets ``plugins.<cri>.enable_cdi = true`` (``EnableCDI``); ``cdi_spec_dirs`` (containerd's
  CRI option, default ``["/etc/cdi", "/var/run/cdi"]``) sits beside it.

Unlike nvidia-ctk, which re-encodes the whole file, this planner edits the text: every byte it does not
manage (comments, order, the admin's other settings) stays.  The edit is proven by parsing the result and
comparing it with the parsed original plus the managed changes; anything else is refused.  No I/O, no
ansible imports; ``loads`` is tomllib's (Python 3.11+) or tomli's, passed in.
"""

from __future__ import annotations

import copy
import re

DEFAULT_PATH = "/etc/containerd/config.toml"
DEFAULT_BINARY = "/usr/bin/nvidia-container-runtime"
DEFAULT_RUNTIME_TYPE = "io.containerd.runc.v2"
CRI_PLUGIN = {2: "io.containerd.grpc.v1.cri", 3: "io.containerd.cri.v1.runtime"}
RUNTIME_NAME_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
SPEC_DIR_RE = re.compile(r"^/[A-Za-z0-9._/-]*$")
BARE_KEY_RE = re.compile(r"^[A-Za-z0-9_-]+$")


class ContainerdConfigError(Exception):
    """The request or the file cannot be handled; the message names the value and what would be valid."""

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


# ------------------------------------------------------------------ the request

def check_request(runtime_name: str, binary_name: str, cdi_spec_dirs, config_version: int) -> None:
    """Refuse bad options before reading anything."""
    if not RUNTIME_NAME_RE.match(runtime_name or ""):
        raise ContainerdConfigError(f"runtime_name={runtime_name!r}: use 1 to 64 letters, digits, '-' or '_' "
                                    "(containerd's runtime names are TOML keys; NVIDIA's is nvidia)")
    if not binary_name or not binary_name.startswith("/") or re.search(r"[\x00-\x1f\"\\]", binary_name):
        raise ContainerdConfigError(f"binary_name={binary_name!r}: give the absolute path of the runtime, e.g. "
                                    f"{DEFAULT_BINARY}, without quotes, backslashes or control characters")
    if cdi_spec_dirs is not None:
        if not cdi_spec_dirs:
            raise ContainerdConfigError("cdi_spec_dirs=[]: containerd would find no CDI spec; give at least one "
                                        "directory, e.g. [/etc/cdi, /var/run/cdi], or leave it unset")
        for d in cdi_spec_dirs:
            if not isinstance(d, str) or not SPEC_DIR_RE.match(d):
                raise ContainerdConfigError(f"cdi_spec_dirs: {d!r} is not an absolute directory path of letters, "
                                            "digits, '.', '_', '-' and '/'")
    if config_version not in CRI_PLUGIN:
        raise ContainerdConfigError(f"config_version={config_version!r}: containerd config version 2 (containerd "
                                    "1.x) or 3 (containerd 2.x) is supported")


UNIT_RE = re.compile(r"^[A-Za-z0-9:_.@-]{1,200}\.service$")


def check_unit(unit: str) -> None:
    """A systemd unit name that reaches systemctl's argv: letters, digits, ``:_.@-``, ending in .service."""
    if not UNIT_RE.match(unit or ""):
        raise ContainerdConfigError(f"{unit!r} is not a systemd unit name such as containerd.service (letters, "
                                    "digits, ':', '_', '.', '@', '-', ending in .service)")


# ------------------------------------------------------------------ TOML text

def render_key(key: str) -> str:
    return key if BARE_KEY_RE.match(key) else '"' + key.replace("\\", "\\\\").replace('"', '\\"') + '"'


def render_value(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, list):
        return "[" + ", ".join(render_value(v) for v in value) + "]"
    raise ContainerdConfigError(f"cannot write the value {value!r} (only strings, integers, booleans and lists "
                                "of them are copied)")


def split_key(text: str) -> list[str] | None:
    """A dotted TOML key (``plugins."io.containerd.grpc.v1.cri".containerd``) as its parts; None if unparsable."""
    parts, i, n = [], 0, len(text)
    while True:
        while i < n and text[i] in " \t":
            i += 1
        if i < n and text[i] == '"':
            j, buf = i + 1, []
            while j < n and text[j] != '"':
                if text[j] == "\\" and j + 1 < n:
                    esc = text[j + 1]
                    buf.append({"n": "\n", "t": "\t", '"': '"', "\\": "\\"}.get(esc, "\\" + esc))
                    j += 2
                    continue
                buf.append(text[j])
                j += 1
            if j >= n:
                return None
            parts.append("".join(buf))
            i = j + 1
        elif i < n and text[i] == "'":
            j = text.find("'", i + 1)
            if j < 0:
                return None
            parts.append(text[i + 1:j])
            i = j + 1
        else:
            m = re.match(r"[A-Za-z0-9_-]+", text[i:])
            if not m:
                return None
            parts.append(m.group(0))
            i += m.end()
        while i < n and text[i] in " \t":
            i += 1
        if i == n:
            return parts
        if text[i] != ".":
            return None
        i += 1


HEADER_RE = re.compile(r"^(?P<indent>[ \t]*)\[(?P<array>\[)?(?P<key>[^\[\]#]*?)\](?(array)\])[ \t]*(#.*)?$")
KEYVAL_RE = re.compile(r"^(?P<indent>[ \t]*)(?P<key>(\"[^\"]*\"|'[^']*'|[A-Za-z0-9_-]+)([ \t]*\.[ \t]*(\"[^\"]*\"|'[^']*'|"
                       r"[A-Za-z0-9_-]+))*)[ \t]*=")


class Doc:
    """The lines of a TOML file with its table headers located (outside multi-line strings)."""

    def __init__(self, text: str):
        self.lines = text.splitlines(keepends=True)
        self.headers: list[tuple[int, list[str], bool]] = []    # (line, key parts, array of tables)
        in_string = None
        for number, line in enumerate(self.lines):
            if in_string is None:
                m = HEADER_RE.match(line.rstrip("\r\n"))
                if m:
                    parts = split_key(m.group("key"))
                    if parts is not None:
                        self.headers.append((number, parts, bool(m.group("array"))))
                    continue
            for quote in ('"""', "'''"):
                if in_string in (None, quote) and line.count(quote) % 2 == 1:
                    in_string = quote if in_string is None else None

    def text(self) -> str:
        return "".join(self.lines)

    def section(self, table: list[str]) -> tuple[int, int] | None:
        """(first line after the header, end line) of ``[table]``; None when it has no header.

        The root table (``[]``) runs from the first line to the first header."""
        if not table:
            return 0, self.headers[0][0] if self.headers else len(self.lines)
        for pos, (number, parts, array) in enumerate(self.headers):
            if parts == table and not array:
                end = self.headers[pos + 1][0] if pos + 1 < len(self.headers) else len(self.lines)
                return number + 1, end
        return None

    def find_key(self, table: list[str], key: str) -> tuple[int, int] | None:
        """(first, end) lines of ``key = ...`` directly in ``[table]``'s section."""
        bounds = self.section(table)
        if bounds is None:
            return None
        for number in range(*bounds):
            m = KEYVAL_RE.match(self.lines[number])
            if m and split_key(m.group("key")) == [key]:
                return number, number + value_lines(self.lines, number, m.end())
        return None

    def set_key(self, table: list[str], key: str, value) -> None:
        line = f"{render_key(key)} = {render_value(value)}"
        found = self.find_key(table, key)
        if found is not None:
            first, end = found
            indent = KEYVAL_RE.match(self.lines[first]).group("indent")
            self.lines[first:end] = [indent + line + "\n"]
            self.__init__(self.text())
            return
        bounds = self.section(table)
        if bounds is None:
            self.append_table(table, [line])
            return
        start, end = bounds
        last, indent = start - 1, None
        for number in range(start, end):
            m = KEYVAL_RE.match(self.lines[number])
            if m:
                last, indent = number + value_lines(self.lines, number, m.end()) - 1, m.group("indent")
        if indent is None and not table:
            indent = ""
        elif indent is None:
            header_indent = HEADER_RE.match(self.lines[start - 1].rstrip("\r\n")).group("indent")
            indent = header_indent + "  " if header_indent or len(table) > 1 else ""
        self._ensure_newline(last)
        self.lines.insert(last + 1, indent + line + "\n")
        self.__init__(self.text())

    def delete_key(self, table: list[str], key: str) -> None:
        found = self.find_key(table, key)
        if found is not None:
            del self.lines[found[0]:found[1]]
            self.__init__(self.text())

    def delete_table(self, table: list[str]) -> None:
        """Remove ``[table]`` and every ``[table.sub]`` section."""
        for pos in range(len(self.headers) - 1, -1, -1):
            number, parts, _array = self.headers[pos]
            if parts[:len(table)] == table:
                end = self.headers[pos + 1][0] if pos + 1 < len(self.headers) else len(self.lines)
                del self.lines[number:end]
                if end == len(self.lines) + (end - number):    # it was the last section: no blank tail left
                    while self.lines and not self.lines[-1].strip():
                        self.lines.pop()
                self.__init__(self.text())

    def append_table(self, table: list[str], lines: list[str]) -> None:
        if self.lines:
            self._ensure_newline(len(self.lines) - 1)
            if self.lines[-1].strip():
                self.lines.append("\n")
        self.lines.append("[" + ".".join(render_key(p) for p in table) + "]\n")
        self.lines.extend("  " + line + "\n" for line in lines)
        self.__init__(self.text())

    def _ensure_newline(self, number: int) -> None:
        if 0 <= number < len(self.lines) and not self.lines[number].endswith("\n"):
            self.lines[number] += "\n"


def value_lines(lines: list[str], first: int, offset: int) -> int:
    """How many lines the value starting at ``lines[first][offset:]`` spans (arrays and strings may span more)."""
    depth, quote, count = 0, None, 0
    number, pos = first, offset
    while number < len(lines):
        line = lines[number]
        while pos < len(line):
            ch = line[pos]
            if quote:
                if line.startswith(quote, pos):
                    pos += len(quote)
                    quote = None
                    continue
                if ch == "\\" and quote[0] == '"':
                    pos += 2
                    continue
            elif ch in "\"'":
                quote = ch * 3 if line.startswith(ch * 3, pos) else ch
                pos += len(quote)
                continue
            elif ch == "#":
                break
            elif ch in "[{":
                depth += 1
            elif ch in "]}":
                depth -= 1
            pos += 1
        count += 1
        if depth <= 0 and (quote is None or len(quote) == 1):
            return count
        number, pos = number + 1, 0
    return count


# ------------------------------------------------------------------ the parsed config

def get_path(tree: dict, path: list[str]):
    node = tree
    for part in path:
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


def set_path(tree: dict, path: list[str], value) -> None:
    node = tree
    for part in path[:-1]:
        node = node.setdefault(part, {})
    node[path[-1]] = value


def del_path(tree: dict, path: list[str]) -> None:
    node = get_path(tree, path[:-1])
    if isinstance(node, dict):
        node.pop(path[-1], None)


def config_version(tree: dict, path: str) -> int:
    version = tree.get("version")
    if version is None:
        raise ContainerdConfigError(f"{path} has no 'version' key, so containerd reads it as a version 1 config "
                                    "(CRI plugin 'cri'), which this module does not edit: convert it with "
                                    "'containerd config migrate' (containerd 2.x) or add version = 2 and move the "
                                    "settings under plugins.\"io.containerd.grpc.v1.cri\" (containerd 1.x)")
    if isinstance(version, bool) or version not in CRI_PLUGIN:
        raise ContainerdConfigError(f"{path}: version = {version!r} is not a containerd config version this module "
                                    "edits (2 for containerd 1.x, 3 for containerd 2.x)")
    return version


def _scalars(table) -> dict:
    if not isinstance(table, dict):
        return {}
    return {k: v for k, v in table.items() if not isinstance(v, dict) and _copyable(v)}


def _copyable(value) -> bool:
    if isinstance(value, (bool, int, str)):
        return True
    return isinstance(value, list) and all(isinstance(v, (bool, int, str)) for v in value)


def plan(text: str | None, loads, path: str, state: str, runtime_name: str, binary_name: str,
         set_as_default: bool, enable_cdi: bool, cdi_spec_dirs, new_version: int) -> dict:
    """What to write: ``{"text", "before", "after", "version", "plugin", "changes"}``.

    ``text`` is the file's content (None: no file); ``changes`` are sentences, empty when nothing is to
    change (then ``text`` is the file unchanged).  ``before``/``after`` are the managed settings.
    """
    original = text or ""
    try:
        tree = loads(original)
    except ValueError as exc:   # tomllib.TOMLDecodeError is a ValueError
        raise ContainerdConfigError(f"{path} is not valid TOML ({exc}); containerd refuses it too: fix the file "
                                    "first (containerd config dump shows what containerd reads)") from None
    if original.strip() and tree:
        version = config_version(tree, path)
    else:
        version = new_version
    plugin = ["plugins", CRI_PLUGIN[version]]
    containerd = plugin + ["containerd"]
    runtime = containerd + ["runtimes", runtime_name]
    options = runtime + ["options"]
    if get_path(tree, plugin) is not None and not isinstance(get_path(tree, plugin), dict):
        raise ContainerdConfigError(f"{path}: {'.'.join(plugin)} is not a table")

    expected = copy.deepcopy(tree)
    doc = Doc(original)
    changes: list[str] = []

    def want(table: list[str], key: str, value, sentence: str) -> None:
        if get_path(expected, table + [key]) == value and type(get_path(expected, table + [key])) is type(value):
            return
        set_path(expected, table + [key], value)
        doc.set_key(table, key, value)
        changes.append(sentence)

    def drop(table: list[str], key: str, sentence: str) -> None:
        if get_path(expected, table + [key]) is None:
            return
        del_path(expected, table + [key])
        doc.delete_key(table, key)
        changes.append(sentence)

    if not tree and state == "present":
        want([], "version", version, f"version = {version}")

    default_name = get_path(tree, containerd + ["default_runtime_name"])
    if state == "present":
        existing = get_path(tree, runtime)
        if existing is None:
            source = None
            for name in ([default_name] if isinstance(default_name, str) and default_name
                         and not default_name.startswith("nvidia") else []) + ["runc", "crun"]:
                source = get_path(tree, containerd + ["runtimes", name])
                if isinstance(source, dict):
                    break
                source = None
            base = _scalars(source) if source else {}
            base.setdefault("runtime_type", DEFAULT_RUNTIME_TYPE)
            opts = _scalars(source.get("options")) if source else {}
            opts["BinaryName"] = binary_name
            set_path(expected, runtime, dict(base, options=opts))
            if doc.section(runtime) is not None or doc.section(options) is not None:
                raise ContainerdConfigError(f"{path}: cannot tell where {'.'.join(runtime)} is defined; set it by hand")
            doc.append_table(runtime, [f"{render_key(k)} = {render_value(v)}" for k, v in base.items()])
            doc.append_table(options, [f"{render_key(k)} = {render_value(v)}" for k, v in opts.items()])
            copied = f" (settings copied from runtime {name})" if source else ""
            changes.append(f"add runtime {runtime_name} with BinaryName {binary_name}{copied}")
        else:
            if not isinstance(existing, dict):
                raise ContainerdConfigError(f"{path}: {'.'.join(runtime)} is not a table")
            if not get_path(tree, runtime + ["runtime_type"]):
                want(runtime, "runtime_type", DEFAULT_RUNTIME_TYPE, f"runtime {runtime_name}: runtime_type = "
                     f"{DEFAULT_RUNTIME_TYPE}")
            want(options, "BinaryName", binary_name, f"runtime {runtime_name}: BinaryName = {binary_name}")
        if set_as_default:
            want(containerd, "default_runtime_name", runtime_name, f"default_runtime_name = {runtime_name}")
        elif default_name == runtime_name:
            drop(containerd, "default_runtime_name", f"remove default_runtime_name = {runtime_name}")
        if enable_cdi:
            want(plugin, "enable_cdi", True, "enable_cdi = true")
        if cdi_spec_dirs is not None:
            want(plugin, "cdi_spec_dirs", list(cdi_spec_dirs), f"cdi_spec_dirs = {list(cdi_spec_dirs)}")
    else:
        if default_name == runtime_name:
            drop(containerd, "default_runtime_name", f"remove default_runtime_name = {runtime_name}")
        if get_path(tree, runtime) is not None:
            del_path(expected, runtime)
            doc.delete_table(runtime)
            changes.append(f"remove runtime {runtime_name}")

    new_text = doc.text() if changes else original
    if changes:
        try:
            reparsed = loads(new_text)
        except ValueError as exc:
            raise ContainerdConfigError(f"{path}: the edit would not parse ({exc}); the file defines the settings "
                                        f"in a way this module does not edit (dotted keys or inline tables): make "
                                        f"these changes by hand: {'; '.join(changes)}") from None
        if prune(reparsed) != prune(expected):
            raise ContainerdConfigError(f"{path}: the edit would change more than the managed settings (the file "
                                        f"defines them with dotted keys or inline tables): make these changes by "
                                        f"hand: {'; '.join(changes)}")
    return {"text": new_text, "changes": changes, "version": version, "plugin": CRI_PLUGIN[version],
            "before": managed(tree, version, runtime_name), "after": managed(expected, version, runtime_name)}


def prune(tree):
    """The tree without empty tables (a removed runtime may leave ``runtimes = {}`` in one and not the other)."""
    if isinstance(tree, dict):
        out = {k: prune(v) for k, v in tree.items()}
        return {k: v for k, v in out.items() if v != {}}
    return tree


def managed(tree: dict, version: int, runtime_name: str) -> dict:
    """The settings this module manages, as they are in ``tree``."""
    plugin = ["plugins", CRI_PLUGIN[version]]
    runtime = get_path(tree, plugin + ["containerd", "runtimes", runtime_name])
    return {
        "runtime": copy.deepcopy(runtime) if isinstance(runtime, dict) else None,
        "default_runtime_name": get_path(tree, plugin + ["containerd", "default_runtime_name"]),
        "enable_cdi": bool(get_path(tree, plugin + ["enable_cdi"])),
        "cdi_spec_dirs": get_path(tree, plugin + ["cdi_spec_dirs"]),
    }


VERSION_RE = re.compile(r"\s(?:v)?(\d+)\.(\d+)(?:\.(\d+))?")


def parse_version(text: str) -> tuple[int, int, int] | None:
    """containerd's version from ``containerd --version`` (``containerd github.com/containerd/containerd
    1.6.20~ds1 1.6.20~ds1-1+b1`` on Debian, ``containerd containerd.io v1.7.24 88bf19b...`` from Docker's packages)."""
    match = VERSION_RE.search(" " + (text or "").strip().split("\n")[0].split(" ", 2)[-1])
    if not match:
        return None
    return int(match.group(1)), int(match.group(2)), int(match.group(3) or 0)


def version_problems(version: tuple[int, int, int] | None, file_version: int, enable_cdi: bool,
                     state: str) -> tuple[list[str], list[str]]:
    """(refusals, warnings) for the installed containerd.

    CDI in the CRI plugin (``enable_cdi``, ``cdi_spec_dirs``) came with containerd 1.7.0 (containerd/containerd
    PR 6654; the CDI project's README says 1.7.0 or later); containerd 1.x reads config versions 1 and 2 only,
    containerd 2.x reads 3 (and migrates older ones).
    """
    if version is None or state != "present":
        return [], []
    refusals, warnings = [], []
    shown = ".".join(map(str, version))
    if file_version == 3 and version[0] < 2:
        refusals.append(f"the config is version 3, which containerd {shown} cannot load (version 3 is "
                        "containerd 2.x's); set config_version: 2 or upgrade containerd")
    if enable_cdi and version < (1, 7, 0):
        warnings.append(f"containerd {shown} has no CDI support (it came with containerd 1.7.0): it ignores "
                        "enable_cdi, so pods get devices only through the nvidia runtime; upgrade containerd to "
                        "use CDI")
    return refusals, warnings
