"""Dry-run the next release's notes and check them, on a copy of the checkout (nothing here changes).

    python hacking/check_release_notes.py

Runs `antsibull-changelog release` for galaxy.yml's version on a copy and reads the CHANGELOG.rst it
writes. The notes must announce every public module under "New Modules" and every role under
"New Roles" (from their version_added) when they are new in that version, must not announce them again
under "Minor Changes", and must have no "Bugfixes" while nothing has been released (there is no
released code to fix).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile

import yaml

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def sections(rst: str) -> dict[str, list[str]]:
    """The sections of the first release of an antsibull-changelog CHANGELOG.rst, with their bullets."""
    found: dict[str, list[str]] = {}
    current = None
    lines = rst.splitlines()
    for i, line in enumerate(lines):
        if i + 1 < len(lines) and re.fullmatch(r"-{3,}", lines[i + 1]) and line.strip():
            current = line.strip()
            found[current] = []
        elif current and line.startswith("- "):
            found[current].append(line[2:])
    return found


def main() -> int:
    with open(os.path.join(ROOT, "galaxy.yml")) as fh:
        version = str(yaml.safe_load(fh)["version"])
    with open(os.path.join(ROOT, "changelogs", "changelog.yaml")) as fh:
        released = (yaml.safe_load(fh) or {}).get("releases") or {}
    files = subprocess.run(["git", "-C", ROOT, "ls-files", "-z", "-co", "--exclude-standard"], capture_output=True,
                           check=True).stdout.decode().split("\0")
    problems = []
    with tempfile.TemporaryDirectory() as tmp:
        tree = os.path.join(tmp, "ansible_collections", "gpuops", "sharing")
        for name in files:
            if name and not name.startswith(".venv") and os.path.isfile(os.path.join(ROOT, name)):
                os.makedirs(os.path.dirname(os.path.join(tree, name)), exist_ok=True)
                shutil.copy2(os.path.join(ROOT, name), os.path.join(tree, name))
        bindir = os.path.dirname(sys.executable)
        env = {**os.environ, "ANSIBLE_COLLECTIONS_PATH": tmp, "ANSIBLE_COLLECTIONS_SCAN_SYS_PATH": "false",
               "PATH": bindir + os.pathsep + os.environ.get("PATH", "")}
        done = subprocess.run([os.path.join(bindir, "antsibull-changelog"), "release",
                               "--version", version, "--date", "2000-01-01"], cwd=tree, env=env,
                              capture_output=True, text=True, check=False)
        if done.returncode:
            print(f"antsibull-changelog release failed: {done.stdout}{done.stderr}", file=sys.stderr)
            return 1
        with open(os.path.join(tree, "CHANGELOG.rst")) as fh:
            rst = fh.read()
        modules = sorted(n[:-3] for n in os.listdir(os.path.join(tree, "plugins", "modules"))
                         if n.endswith(".py") and not n.startswith("_"))
        roles = sorted(os.listdir(os.path.join(tree, "roles")))

        def version_added(path: str) -> str | None:
            with open(path) as fh:
                text = fh.read()
            found = re.search(r"^\s*version_added:\s*['\"]?([0-9.]+)", text, re.M)
            return found.group(1) if found else None

        def later(a: str, b: str) -> bool:
            return tuple(int(x) for x in a.split(".")) > tuple(int(x) for x in b.split("."))

        for kind, path in ([("module", os.path.join(tree, "plugins", "modules", m + ".py")) for m in modules]
                           + [("role", os.path.join(tree, "roles", r, "meta", "argument_specs.yml")) for r in roles]):
            added = version_added(path)
            if added is None or later(added, version):
                problems.append(f"{os.path.relpath(path, tree)}: version_added is {added}; a {kind} needs one, "
                                f"and none later than {version}")
        new_modules = [m for m in modules if version_added(os.path.join(tree, "plugins", "modules", m + ".py")) == version]
        new_roles = [r for r in roles if version_added(os.path.join(tree, "roles", r, "meta", "argument_specs.yml"))
                     == version]
    found = sections(rst)
    for kind, names, title in (("module", new_modules, "New Modules"), ("role", new_roles, "New Roles")):
        listed = {b.split(" - ", 1)[0] for b in found.get(title, [])}
        problems += [f"{title} does not list gpuops.sharing.{n}" for n in names if f"gpuops.sharing.{n}" not in listed]
        for bullet in found.get("Minor Changes", []):
            for n in names:
                if bullet.startswith(f"{n} - new {kind}"):
                    problems.append(f"Minor Changes announces the new {kind} {n} again: {bullet[:80]}")
    if not released and "Bugfixes" in found:
        problems.append(f"Bugfixes in the first release (nothing was released to fix): {found['Bugfixes'][0][:80]}")
    for problem in problems:
        print(f"release notes of {version}: {problem}", file=sys.stderr)
    if not problems:
        print(f"release notes of {version}: {len(new_modules)} new modules, {len(new_roles)} new roles, "
              f"sections {', '.join(found)}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
