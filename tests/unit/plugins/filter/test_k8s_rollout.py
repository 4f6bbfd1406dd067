"""The k8s_* filters: each documented, refusals as AnsibleFilterError with the message kept."""

from __future__ import annotations

import os

import pytest
import yaml
from ansible.errors import AnsibleFilterError

from ansible_collections.gpuops.sharing.plugins.filter.k8s_rollout import FilterModule

FILTERS = FilterModule().filters()
HERE = os.path.join(os.path.dirname(__file__), "..", "..", "..", "..", "plugins", "filter")


@pytest.mark.parametrize("name", sorted(FILTERS))
def test_every_filter_has_its_documentation_file(name):
    with open(os.path.join(HERE, f"{name}.yml")) as fh:
        doc = yaml.safe_load(fh)
    assert doc["DOCUMENTATION"]["name"] == name
    assert f"gpuops.sharing.{name}" in doc["EXAMPLES"]


def test_refusals_become_filter_errors_with_the_message():
    with pytest.raises(AnsibleFilterError, match="n1: nvidia.com/mig.config='a b' is not a Kubernetes label value"):
        FILTERS["k8s_node_labels"]("n1", "ts", "a b")
    with pytest.raises(AnsibleFilterError, match=r"^k8s_missing_allocatable: unexpected input: KeyError\('name'\)"):
        FILTERS["k8s_missing_allocatable"]({"status": {}}, [{"count": 1}])


def test_a_filter_returns_its_functions_value():
    assert FILTERS["k8s_gpu_pods"]([{"metadata": {"name": "p", "namespace": "ns"}, "status": {"phase": "Running"},
                                     "spec": {"containers": [{"resources": {"limits": {"nvidia.com/gpu": "1"}}}]}}]) == [
        "ns/p"]
