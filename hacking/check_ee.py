"""The execution environment as ansible-builder sees it, from the installed artifact.

    python hacking/check_ee.py ANSIBLE_BUILDER COLLECTIONS_DIR     (make artifact-check)

COLLECTIONS_DIR holds ansible_collections/gpuops/sharing installed from the built tarball, so what
is checked is what users get. No container is built (no runtime, no network here):

1. ``ansible-builder create`` on the shipped examples/execution-environment/ writes a build
   context: its Containerfile starts from the definition's base image and installs an ansible-core
   within meta/runtime.yml's requires_ansible, and its _build/requirements.yml names the collection.
2. The context's own introspection script (the one the image build runs over the collections it
   installed) reads the installed collection: the Python and system packages it reports for
   gpuops.sharing are exactly those of meta/ee-requirements.txt and meta/ee-bindep.txt, which must
   therefore ship, and nvidia-ml-py, a managed host's package, is not among them.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile

import yaml


def entries(path: str) -> list[str]:
    with open(path) as fh:
        return [line.split("#", 1)[0].strip() for line in fh if line.split("#", 1)[0].strip()]


def check(builder: str, collections: str) -> list[str]:
    builder, collections = os.path.abspath(builder), os.path.abspath(collections)
    root = os.path.join(collections, "ansible_collections", "gpuops", "sharing")
    problems = []
    with open(os.path.join(root, "meta", "execution-environment.yml")) as fh:
        meta = yaml.safe_load(fh)
    deps = meta.get("dependencies") or {}
    for kind in ("python", "system"):
        if not deps.get(kind) or not os.path.isfile(os.path.join(root, deps[kind])):
            problems.append(f"meta/execution-environment.yml: dependencies.{kind} names {deps.get(kind)!r}, "
                            "which the artifact does not hold")
    if problems:
        return problems

    with tempfile.TemporaryDirectory(prefix="gpuops-ee-") as tmp:
        example = os.path.join(tmp, "ee")
        shutil.copytree(os.path.join(root, "examples", "execution-environment"), example)
        done = subprocess.run([builder, "create", "-f", "execution-environment.yml", "-c", "context",
                               "--output-filename", "Containerfile"], cwd=example, capture_output=True,
                              text=True, check=False)
        if done.returncode:
            return [f"ansible-builder create failed: {done.stdout}{done.stderr}"]
        context = os.path.join(example, "context")
        with open(os.path.join(example, "execution-environment.yml")) as fh:
            definition = yaml.safe_load(fh)
        with open(os.path.join(context, "Containerfile")) as fh:
            containerfile = fh.read()
        base = definition["images"]["base_image"]["name"]
        if f'ARG EE_BASE_IMAGE="{base}"' not in containerfile:
            problems.append(f"Containerfile: does not start from the definition's base image {base}")
        with open(os.path.join(root, "meta", "runtime.yml")) as fh:
            floor = re.match(r">=\s*([0-9.]+)", yaml.safe_load(fh)["requires_ansible"]).group(1)
        refs = re.search(r'^ARG ANSIBLE_INSTALL_REFS="(.*)"$', containerfile, re.M)
        if not refs or f"ansible-core>={floor}" not in refs.group(1).split():
            problems.append(f"Containerfile: ANSIBLE_INSTALL_REFS {refs and refs.group(1)!r} does not install "
                            f"ansible-core>={floor} (meta/runtime.yml requires_ansible)")
        with open(os.path.join(context, "_build", "requirements.yml")) as fh:
            names = [c["name"] for c in yaml.safe_load(fh)["collections"]]
        if "gpuops.sharing" not in names:
            problems.append(f"_build/requirements.yml: collections {names} lack gpuops.sharing")

        # what the image build does after installing the collections (Containerfile's builder stage)
        done = subprocess.run([sys.executable, os.path.join(context, "_build", "scripts", "introspect.py"),
                               "introspect", collections], capture_output=True, text=True, check=False)
        if done.returncode:
            return problems + [f"introspect failed: {done.stdout}{done.stderr}"]
        found = yaml.safe_load(done.stdout[done.stdout.index("---"):])
    for kind in ("python", "system"):
        ours = sorted(re.sub(r"\s+# from collection gpuops\.sharing$", "", line) for line in found.get(kind) or []
                      if line.endswith("# from collection gpuops.sharing"))
        want = sorted(entries(os.path.join(root, deps[kind])))
        if ours != want:
            problems.append(f"introspect: {kind} packages of gpuops.sharing are {ours}, {deps[kind]} lists {want}")
    if any("nvidia-ml-py" in line or "pynvml" in line for line in found.get("python") or []):
        problems.append("introspect: nvidia-ml-py is a managed host's package, not the execution environment's")
    return problems


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    problems = check(*argv)
    for problem in problems:
        print("PROBLEM " + problem, file=sys.stderr)
    if not problems:
        print("execution environment: ansible-builder create and the collection's introspection as expected")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
