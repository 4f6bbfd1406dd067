"""Check the built collection artifact: what it ships, what it leaves out, and that it installs and documents.

    python hacking/check_artifact.py .build/dist/gpuops-sharing-X.Y.Z.tar.gz
"""

from __future__ import annotations

import os
import subprocess
import sys
import tarfile
import tempfile

MUST = ["MANIFEST.json", "FILES.json", "meta/runtime.yml", "LICENSE", "README.md",
        "plugins/modules/gpu_info.py", "plugins/modules/mig.py", "plugins/module_utils/_nvml.py",
        "roles/mig/tasks/main.yml", "roles/mig/meta/argument_specs.yml", "docs/mig.md", "playbooks/site.yml"]
MUST_NOT = ["simulator/", "hacking/", "tests/fleet/", ".venv", "Makefile", "requirements/", "bench/", ".build/", "demo/"]


def main(path: str) -> int:
    with tarfile.open(path) as tar:
        names = tar.getnames()
    problems = [f"missing {m}" for m in MUST if m not in names]
    problems += [f"should not ship {n}" for n in names for bad in MUST_NOT if n.startswith(bad) or n == bad.rstrip("/")]
    bin_dir = os.path.dirname(sys.executable)
    with tempfile.TemporaryDirectory() as tmp:
        env = {**os.environ, "ANSIBLE_COLLECTIONS_PATH": tmp, "PATH": bin_dir + os.pathsep + os.environ["PATH"]}
        done = subprocess.run(["ansible-galaxy", "collection", "install", "-p", tmp, path], env=env,
                              capture_output=True, text=True, check=False)
        if done.returncode:
            problems.append(f"does not install: {done.stderr.strip()}")
        else:
            modules = sorted(n[len("plugins/modules/"):-3] for n in names
                             if n.startswith("plugins/modules/") and n.endswith(".py") and "/_" not in n)
            for module in modules:
                doc = subprocess.run(["ansible-doc", f"gpuops.sharing.{module}"], env=env, capture_output=True,
                                     text=True, check=False)
                if doc.returncode or "EXAMPLES" not in doc.stdout:
                    problems.append(f"ansible-doc gpuops.sharing.{module} fails from the installed artifact")
    for problem in problems:
        print(f"{path}: {problem}", file=sys.stderr)
    if not problems:
        print(f"{path}: {len(names)} entries, installs, every module documents")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
