# Copyright (c) gpuops.sharing contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""The boot-time code a module installs on its host. Private to this collection: not a public API.

A layout must come back at boot, when Ansible is not there: a unit runs the module's own code
with the host's python3.  That code is installed by the module itself, from the *import closure*
of the entry point (every ``module_utils`` file it imports, followed through their imports), read
from the module's own payload.  So a new import can never be forgotten by a hand-kept file list,
and the boot code is always the code of the collection version that last ran, which the
``VERSION`` stamp beside it names.

Pure: the closure and the file contents are computed from sources handed in; writing them is the
concern host's job (through ``_host.write_file``).
"""

from __future__ import annotations

import ast
import hashlib
import importlib
import re

from ansible_collections.gpuops.sharing.plugins.module_utils._runner import Op

PACKAGE = "ansible_collections.gpuops.sharing.plugins.module_utils"
LIB_SUBDIR = "ansible_collections/gpuops/sharing/plugins/module_utils"

# The largest number of files the closure may hold: work is bounded whatever the sources say.
MAX_FILES = 64
# The collection's version, as galaxy.yml says (a unit test holds the two together); the VERSION
# stamp of installed boot code names it.
COLLECTION_VERSION = "0.1.0"

# What a boot unit's values may be: they reach its command line and file names unquoted.
UNIT_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]*$")
SAFE_PATH = re.compile(r"^/[A-Za-z0-9._/-]*$")
SAFE_CHARS = "letters, digits, '.', '_', '-' and '/'"


def unit_name(cfg: dict) -> str:
    """``boot_unit.name`` with its ``.service`` suffix."""
    name = cfg["name"]
    return name if name.endswith(".service") else name + ".service"


def unit_path(cfg: dict) -> str:
    return f"{cfg['unit_dir'].rstrip('/')}/{unit_name(cfg)}"


def unit_name_problem(cfg: dict, default: str) -> str | None:
    """Why ``boot_unit.name`` cannot be a unit name, or None."""
    name = cfg["name"]
    if name.endswith(".service"):
        name = name[:-len(".service")]
    if UNIT_NAME.match(name):
        return None
    return (f"boot_unit.name={cfg['name']!r} is not a unit name; give letters, digits, '_', '.', ':' or '-' "
            f"(default {default})")


def path_problem(key: str, value) -> str | None:
    """Why ``value`` cannot be written into a unit as a path, or None."""
    value = str(value)
    if SAFE_PATH.match(value) and ".." not in value.split("/"):
        return None
    return f"{key}={value!r} is not valid: give an absolute path of {SAFE_CHARS} (the boot unit names it)"


def payload_source(name: str) -> str:
    """The source of ``PACKAGE.name`` as the running module has it (its AnsiballZ payload, or a checkout)."""
    module = importlib.import_module(f"{PACKAGE}.{name}")
    loader = getattr(module, "__loader__", None)
    source = loader.get_source(module.__name__) if loader is not None and hasattr(loader, "get_source") else None
    if source is None:
        raise ValueError(f"the source of {PACKAGE}.{name} is not available to install as boot code")
    return source


def _statements(body: list):
    """Every statement of a module, nested ones too (in functions, classes, if/try/with/for/match): an import is a
    statement, so the expressions, nine tenths of the tree, are not walked (every run of a module computes this)."""
    stack = list(body)
    while stack:
        node = stack.pop()
        yield node
        for field in ("body", "orelse", "finalbody", "handlers", "cases"):
            stack.extend(getattr(node, field, None) or ())


def imported_utils(source: str) -> set[str]:
    """The collection's module_utils (short names such as ``_mig``) a source imports."""
    found = set()
    for node in _statements(ast.parse(source).body):
        if isinstance(node, ast.ImportFrom) and node.module:
            if node.module == PACKAGE:
                found.update(alias.name for alias in node.names)
            elif node.module.startswith(PACKAGE + "."):
                found.add(node.module[len(PACKAGE) + 1:].split(".")[0])
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith(PACKAGE + "."):
                    found.add(alias.name[len(PACKAGE) + 1:].split(".")[0])
    return found


def closure(roots: list[str], source_of) -> dict[str, str]:
    """Short name -> source of every module_utils file the ``roots`` need, transitively.

    ``source_of(name)`` returns the source text of ``PACKAGE.name`` (from the module's payload).
    """
    sources: dict[str, str] = {}
    todo = list(roots)
    while todo:
        name = todo.pop()
        if name in sources:
            continue
        if len(sources) >= MAX_FILES:
            raise ValueError(f"the boot code would need more than {MAX_FILES} files")
        sources[name] = source_of(name)
        todo.extend(sorted(imported_utils(sources[name]) - set(sources)))
    return dict(sorted(sources.items()))


def version_stamp(collection_version: str, sources: dict[str, str]) -> str:
    """What the ``VERSION`` file says: the collection version and a digest of the installed sources."""
    digest = hashlib.sha256()
    for name, text in sorted(sources.items()):
        digest.update(name.encode() + b"\0" + text.encode() + b"\0")
    return (f"gpuops.sharing {collection_version}\n"
            f"sha256 {digest.hexdigest()}\n"
            f"files {' '.join(name + '.py' for name in sorted(sources))}\n")


def entry_point(description: str, module: str, call: str, execute: bool = False) -> str:
    """A boot entry script: the installed code first on sys.path, then ``module.call(argv, run, out)``.

    The script holds the things module_utils may not do (run a subprocess, print, replace the
    process): ``run`` is the command seam AnsibleModule.run_command is for the module, in the C
    locale; ``out`` writes a line to the journal.  With ``execute``, the call also gets
    ``execute(argv, env)``, which replaces the process with ``argv`` and the environment updated by
    ``env`` (an entry that starts a daemon systemd then watches: ``gpuops-mps-exec``).
    """
    seam = ""
    args = "sys.argv[1:], run, lambda text: print(text, flush=True)"
    if execute:
        seam = ("def execute(argv, env):\n"
                "    sys.stdout.flush()\n"
                "    os.execve(argv[0], argv, dict(os.environ, **env))\n\n\n")
        args += ", execute"
    return (
        "#!/usr/bin/python3\n"
        f"# {description}\n"
        "# Installed by gpuops.sharing together with the code it runs (see VERSION beside it); do not edit.\n"
        "import os\n"
        "import subprocess\n"
        "import sys\n\n"
        "sys.dont_write_bytecode = True  # nothing written beside the installed code: it is removed whole\n"
        "sys.path.insert(0, os.environ.get('GPUOPS_SHARING_LIB') or os.path.dirname(os.path.realpath(__file__)))\n\n"
        f"from {PACKAGE} import _host, {module}  # noqa: E402\n\n\n"
        "def run(argv, data=None, env=None):\n"
        "    environ = dict(os.environ, **_host.C_LOCALE, **(env or {}))\n"
        "    done = subprocess.run(argv, input=data, capture_output=True, text=True, check=False, env=environ)\n"
        "    return done.returncode, done.stdout, done.stderr\n\n\n"
        f"{seam}"
        "if __name__ == '__main__':\n"
        f"    sys.exit({module}.{call}({args}))\n"
    )


def plan_files(current: dict, wanted: dict[str, str], mode: int = 0o644):
    """Operations that make the files at ``wanted`` hold their text and remove the others.

    ``current``: path -> text (None when absent) for every wanted path and every file now in the
    installed package directory (which the boot code owns whole: the others are stale).
    """
    ops = []
    for path, text in sorted(wanted.items()):
        if current.get(path) != text:
            verb = "update" if current.get(path) is not None else "install"
            ops.append(Op("write_file", path, f"{verb} the boot code file {path}",
                          {"path": path, "text": text, "mode": 0o755 if text.startswith("#!") else mode}))
    for path in sorted(set(current) - set(wanted)):
        if current[path] is not None:
            ops.append(Op("remove_file", path, f"remove the stale boot code file {path}", {"path": path}))
    return ops


def files(lib_dir: str, sources: dict[str, str], collection_version: str, entry_name: str,
          entry_text: str) -> dict[str, str]:
    """Path -> content of everything the boot code is made of under ``lib_dir``."""
    out = {f"{lib_dir}/{LIB_SUBDIR}/{name}.py": text for name, text in sources.items()}
    out[f"{lib_dir}/VERSION"] = version_stamp(collection_version, sources)
    out[f"{lib_dir}/{entry_name}"] = entry_text
    return out
