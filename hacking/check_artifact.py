"""Check the built collection artifact.

    python hacking/check_artifact.py .build/dist/gpuops-sharing-X.Y.Z.tar.gz
        what it ships and what it leaves out (the build_ignore list of galaxy.yml, read the other way round)
    python hacking/check_artifact.py --importer .build/dist/gpuops-sharing-X.Y.Z.tar.gz
        Galaxy's galaxy-importer with its default configuration (run with the importer's own
        virtualenv, ansible-doc and ansible-lint on PATH); any WARNING or ERROR it logs fails

What galaxy-importer checks is not repeated here: MANIFEST.json/FILES.json and galaxy.yml metadata,
meta/runtime.yml's requires_ansible, README, the changelog, every plugin's documentation through
ansible-doc, role and playbook loading, and ansible-lint. `make artifact-check` then installs the
tarball and runs ansible-test sanity on the installed tree.
"""

from __future__ import annotations

import os
import sys
import tarfile
import tempfile

MUST = ["LICENSE", "docs/architecture.md", "docs/getting-started.md", "docs/docsite/extra-docs.yml",
        "docs/docsite/links.yml", "docs/docsite/rst/getting-started.rst", "examples/inventory/hosts.yml",
        "tests/config.yml", "docs/awx.md", "docs/fleet-report.md",
        # ansible-builder reads these from the installed collection (hacking/check_ee.py checks what it finds)
        "meta/execution-environment.yml", "meta/ee-requirements.txt", "meta/ee-bindep.txt",
        "examples/execution-environment/execution-environment.yml", "examples/execution-environment/requirements.yml"]
MUST_NOT = ["simulator/", "hacking/", "tests/fleet/", "tests/unit/", "tests/integration/", "tests/sanity/ignore-",
            ".venv", "Makefile", "requirements/", "bench/", ".build/", "demo/"]


def contents(path: str) -> int:
    with tarfile.open(path) as tar:
        names = tar.getnames()
    problems = [f"missing {m}" for m in MUST if m not in names]
    problems += [f"should not ship {n}" for n in names for bad in MUST_NOT if n.startswith(bad) or n == bad.rstrip("/")]
    for problem in problems:
        print(f"{path}: {problem}", file=sys.stderr)
    if not problems:
        print(f"{path}: {len(names)} entries, ships what it must and nothing of the test tooling")
    return 1 if problems else 0


def importer(path: str) -> int:
    import logging

    from galaxy_importer import main as importer_main

    seen: list[str] = []

    class Watch(logging.Handler):
        def emit(self, record):
            if record.levelno >= logging.WARNING:
                seen.append(f"{record.levelname}: {record.getMessage()}")

    # the default configuration: no /etc/galaxy-importer file, no GALAXY_IMPORTER_* overrides
    for key in [k for k in os.environ if k.startswith("GALAXY_IMPORTER_")]:
        del os.environ[key]
    with tempfile.TemporaryDirectory() as tmp:
        empty = os.path.join(tmp, "galaxy-importer.cfg")
        open(empty, "w").close()
        os.environ["GALAXY_IMPORTER_CONFIG"] = empty
        logging.getLogger().addHandler(Watch())
        code = importer_main.main([path, "--output-path", tmp])
    for line in seen:
        print(f"{path}: galaxy-importer {line}", file=sys.stderr)
    if code or seen:
        print(f"{path}: galaxy-importer failed (exit {code}, {len(seen)} warnings/errors)", file=sys.stderr)
        return 1
    print(f"{path}: galaxy-importer passed with no warnings")
    return 0


if __name__ == "__main__":
    if sys.argv[1:2] == ["--importer"]:
        sys.exit(importer(sys.argv[2]))
    sys.exit(contents(sys.argv[1]))
