"""The integration targets' aliases name only what ansible-test itself reads: no groups of a retired
CI service (``shippable/posix/group1``, Shippable's, which this project never ran on)."""

from __future__ import annotations

import os

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TARGETS = os.path.join(ROOT, "tests", "integration", "targets")
# ansible-test's own aliases (its "Integration tests" docs: context/, needs/, skip/, destructive, ...)
KNOWN = ("context/", "needs/", "skip/", "setup/", "cloud/", "hidden", "destructive", "disabled",
         "unsupported", "unstable", "slow", "non_local", "gather_facts/", "time=")


@pytest.mark.parametrize("target", sorted(os.listdir(TARGETS)))
def test_aliases_are_ansible_tests_own(target):
    with open(os.path.join(TARGETS, target, "aliases")) as fh:
        aliases = [line.strip() for line in fh if line.strip() and not line.lstrip().startswith("#")]
    assert aliases, f"{target}: empty aliases"
    unknown = [a for a in aliases if not a.startswith(KNOWN)]
    assert not unknown, f"{target}/aliases: {unknown} are not ansible-test aliases"
