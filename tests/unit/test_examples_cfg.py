"""examples/ansible.cfg (docs/scaling.md) is read by ansible-core as the settings it documents."""

from __future__ import annotations

import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_example_ansible_cfg_sets_what_the_scaling_guide_says():
    cfg = os.path.join(ROOT, "examples", "ansible.cfg")
    tool = os.path.join(os.path.dirname(sys.executable), "ansible-config")
    env = {k: v for k, v in os.environ.items() if not k.startswith("ANSIBLE_")}
    env["ANSIBLE_CONFIG"] = cfg
    done = subprocess.run([tool, "dump", "--only-changed", "-t", "all"], capture_output=True, text=True,
                          env=env, check=False)
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert "DEFAULT_FORKS" in out and "= 50" in out.split("DEFAULT_FORKS", 1)[1].splitlines()[0]
    assert "DEFAULT_GATHERING" in out and "explicit" in out.split("DEFAULT_GATHERING", 1)[1].splitlines()[0]
    with open(os.path.join(ROOT, "docs", "scaling.md")) as fh, open(cfg) as example:
        assert example.read() in fh.read(), "docs/scaling.md shows examples/ansible.cfg as it is"
