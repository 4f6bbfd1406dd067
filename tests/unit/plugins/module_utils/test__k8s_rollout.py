"""The cluster_bootstrap playbook's decisions: configs per name, objects sent, drain, health gate."""

from __future__ import annotations

import pytest

from ansible_collections.gpuops.sharing.plugins.module_utils import _k8s_rollout as rollout

TS = {"replicas": 4, "rename_by_default": True}


def node(allocatable=None, ready="True", unschedulable=None, labels=None):
    obj = {"metadata": {"name": "n1", "labels": labels or {}}, "spec": {},
           "status": {"allocatable": allocatable or {}, "conditions": [{"type": "Ready", "status": ready}]}}
    if unschedulable is not None:
        obj["spec"]["unschedulable"] = unschedulable
    return obj


def pod(name, resources=None, phase="Running", init=False, ns="default"):
    container = {"name": "c", "resources": resources or {}}
    spec = {"initContainers" if init else "containers": [container]}
    return {"metadata": {"name": name, "namespace": ns}, "spec": spec, "status": {"phase": phase}}


# ------------------------------------------------------------------ configs per name
def test_specs_group_hosts_by_name_and_apply_role_defaults():
    hostvars = {
        "a": {"k8s_gpu_node_config_name": "ts", "k8s_gpu_node_time_slicing": TS},
        "b": {"k8s_gpu_node_config_name": "ts", "k8s_gpu_node_time_slicing": TS},
        "c": {},
        "d": {"k8s_gpu_node_config_name": "raw", "k8s_gpu_node_config": {"version": "v1"},
              "k8s_gpu_node_mig_strategy": "mixed"},
    }
    specs = rollout.device_plugin_specs(["a", "b", "c", "d"], hostvars)
    assert specs == {
        "ts": {"spec": {"mig_strategy": "none", "time_slicing": TS}, "hosts": ["a", "b"]},
        "default": {"spec": {"mig_strategy": "none"}, "hosts": ["c"]},
        "raw": {"spec": {"config": {"version": "v1"}}, "hosts": ["d"]},
    }


def test_specs_refuse_one_name_with_two_configs():
    hostvars = {"a": {"k8s_gpu_node_config_name": "ts", "k8s_gpu_node_time_slicing": TS},
                "b": {"k8s_gpu_node_config_name": "ts", "k8s_gpu_node_time_slicing": {"replicas": 2}}}
    with pytest.raises(rollout.RolloutError, match=r"^b: the device plugin config 'ts' differs from the one a gives"):
        rollout.device_plugin_specs(["a", "b"], hostvars)


@pytest.mark.parametrize("name", ["", "-x", "a b", "x" * 64, 3])
def test_specs_refuse_names_that_are_no_label_value(name):
    with pytest.raises(rollout.RolloutError, match=r"^a: k8s_gpu_node_config_name must be a Kubernetes label value"):
        rollout.device_plugin_specs(["a"], {"a": {"k8s_gpu_node_config_name": name}})


# ------------------------------------------------------------------ objects sent
def test_configmap_has_one_sorted_key_per_name():
    cm = rollout.device_plugin_configmap({"b": "version: v1\n", "a": "x\n"}, "nvdp", "ns", {"app": "x"})
    assert cm == {"apiVersion": "v1", "kind": "ConfigMap",
                  "metadata": {"name": "nvdp", "namespace": "ns", "labels": {"app": "x"}},
                  "data": {"a": "x\n", "b": "version: v1\n"}}
    assert list(cm["data"]) == ["a", "b"]


def test_configmap_refuses_nothing_to_hold():
    with pytest.raises(rollout.RolloutError, match="no device plugin config"):
        rollout.device_plugin_configmap({}, "nvdp", "ns")


def test_node_labels():
    assert rollout.node_labels("n1", "ts") == {
        "apiVersion": "v1", "kind": "Node",
        "metadata": {"name": "n1", "labels": {"nvidia.com/device-plugin.config": "ts"}}}
    assert rollout.node_labels("n1", None, "all-1g.10gb")["metadata"]["labels"] == {
        "nvidia.com/mig.config": "all-1g.10gb"}
    assert rollout.node_labels("n1", "ts", "all-1g.10gb")["metadata"]["labels"] == {
        "nvidia.com/device-plugin.config": "ts", "nvidia.com/mig.config": "all-1g.10gb"}
    with pytest.raises(rollout.RolloutError, match="n1: nvidia.com/mig.config='a b' is not a Kubernetes label value"):
        rollout.node_labels("n1", "ts", "a b")
    with pytest.raises(rollout.RolloutError, match="n1: no label to set"):
        rollout.node_labels("n1", None, "")


# ------------------------------------------------------------------ disruption and drain
def gpu(index=0, destroyed=0, operations=(), reboot=False):
    return {"index": index, "destroyed": destroyed, "operations": list(operations), "reboot_required": reboot}


@pytest.mark.parametrize(("preview", "disruptive", "reason"), [
    (None, False, None),
    ({"skipped": True}, False, None),
    ({"changed": False, "gpus": [gpu()]}, False, None),
    ({"changed": True, "gpus": [gpu(operations=["create GPU instance 2g.20gb at 4:2 with 2g.20gb"])]}, False, None),
    ({"changed": True, "gpus": [gpu(1, destroyed=2, operations=["destroy GPU instance 13"])]}, True,
     "GPU 1: 2 instance(s) destroyed"),
    ({"changed": True, "gpus": [gpu(operations=["enable MIG mode"])]}, True, "GPU 0: enable MIG mode"),
    ({"changed": True, "gpus": [gpu(2, operations=["GPU 2: disable MIG mode"])]}, True, "GPU 2: disable MIG mode"),
    ({"changed": True, "gpus": [gpu(operations=["reset the GPU to apply the pending MIG mode"])]}, True,
     "GPU 0: reset the GPU to apply the pending MIG mode"),
    ({"changed": True, "gpus": [gpu(reboot=True)]}, True, "GPU 0: needs a reboot"),
    ({"failed": True, "msg": "GPU 0: cannot enable MIG mode while processes use the GPU: 42"}, True,
     "the MIG plan was refused: GPU 0: cannot enable MIG mode while processes use the GPU: 42"),
])
def test_mig_disruption(preview, disruptive, reason):
    got = rollout.mig_disruption(preview)
    assert got["disruptive"] is disruptive
    assert got["reasons"] == ([reason] if reason else [])


GPU_LIMITS = {"limits": {"nvidia.com/gpu": 1}}


def test_gpu_pods_counts_unfinished_pods_requesting_nvidia_resources():
    pods = [pod("gpu", GPU_LIMITS), pod("shared", {"requests": {"nvidia.com/gpu.shared": "1"}}),
            pod("mig", {"limits": {"nvidia.com/mig-1g.10gb": 1}}, init=True), pod("cpu", {"limits": {"cpu": "1"}}),
            pod("done", GPU_LIMITS, phase="Succeeded"), pod("failed", GPU_LIMITS, phase="Failed"),
            pod("pending", GPU_LIMITS, phase="Pending", ns="ml")]
    assert rollout.gpu_pods(pods) == ["default/gpu", "default/mig", "default/shared", "ml/pending"]


@pytest.mark.parametrize(("disruptive", "pods", "cordoned", "drain", "uncordon"), [
    (True, [pod("p", GPU_LIMITS)], None, True, True),
    (True, [pod("p", GPU_LIMITS)], True, True, False),       # an admin's cordon stays
    (True, [pod("p", {"limits": {"cpu": 1}})], None, False, False),
    (True, [], None, False, False),
    (False, [pod("p", GPU_LIMITS)], None, False, False),
])
def test_drain_decision(disruptive, pods, cordoned, drain, uncordon):
    disruption = {"disruptive": disruptive, "reasons": ["GPU 0: enable MIG mode"] if disruptive else []}
    got = rollout.drain_decision(node(unschedulable=cordoned), disruption, pods)
    assert (got["drain"], got["uncordon"]) == (drain, uncordon)
    assert got["was_cordoned"] is bool(cordoned)
    assert got["reason"].startswith("drain: GPU 0: enable MIG mode; GPU pods default/p" if drain else "no drain")


# ------------------------------------------------------------------ health gate
EXPECTED = [{"name": "nvidia.com/gpu.shared", "count": 8}, {"name": "nvidia.com/mig-1g.10gb", "count": 7}]


@pytest.mark.parametrize(("allocatable", "problems"), [
    ({"nvidia.com/gpu.shared": "8", "nvidia.com/mig-1g.10gb": "7", "cpu": "16"}, []),
    ({"nvidia.com/gpu.shared": "4", "nvidia.com/mig-1g.10gb": "7"},
     ["nvidia.com/gpu.shared: 4 advertised, 8 expected"]),
    ({"nvidia.com/gpu.shared": "8"}, ["nvidia.com/mig-1g.10gb: not advertised (7 expected)"]),
    ({"nvidia.com/gpu.shared": "9", "nvidia.com/mig-1g.10gb": "7"}, ["nvidia.com/gpu.shared: 9 advertised, 8 expected"]),
    ({"nvidia.com/gpu.shared": "8Mi", "nvidia.com/mig-1g.10gb": "7"},
     ["nvidia.com/gpu.shared: '8Mi' advertised, not a whole number"]),
])
def test_missing_allocatable(allocatable, problems):
    assert rollout.missing_allocatable(node(allocatable), EXPECTED) == problems


def test_missing_allocatable_unknown_counts_need_one():
    expected = [{"name": "nvidia.com/gpu", "count": None}]
    assert rollout.missing_allocatable(node({"nvidia.com/gpu": "2"}), expected) == []
    assert rollout.missing_allocatable(node({"nvidia.com/gpu": "0"}), expected) == [
        "nvidia.com/gpu: 0 advertised, at least 1 expected"]
    assert rollout.missing_allocatable(node({}), expected) == ["nvidia.com/gpu: not advertised"]


def test_missing_allocatable_needs_a_ready_node_and_the_mig_managers_success():
    assert rollout.missing_allocatable(None, EXPECTED) == ["the node is not in the cluster"]
    full = {"nvidia.com/gpu.shared": "8", "nvidia.com/mig-1g.10gb": "7"}
    assert rollout.missing_allocatable(node(full, ready="False"), EXPECTED) == ["the node is not Ready"]
    assert rollout.missing_allocatable(node(full), EXPECTED, True) == [
        "nvidia.com/mig.config.state is not set, not success"]
    labels = {"nvidia.com/mig.config.state": "pending"}
    assert rollout.missing_allocatable(node(full, labels=labels), EXPECTED, True) == [
        "nvidia.com/mig.config.state is pending, not success"]
    labels = {"nvidia.com/mig.config.state": "success"}
    assert rollout.missing_allocatable(node(full, labels=labels), EXPECTED, True) == []
