"""playbooks/cluster_bootstrap.yml against the recorded-API stub (apistub.py) and simulated GPU nodes (gpusim).

Proves the roll-out's control flow: one ConfigMap before any node, batches one after another, a drain only
before a disruptive MIG change on a node with GPU pods, the wait for allocatable resources, the uncordon of
what this run cordoned, and the stop at the first node that fails its health gate. Every object sent is
checked against the API schemas of the Kubernetes versions the collection declares (kubernetes-validate).
What the stub cannot prove is in docs/testing.md.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys

import pytest
import yaml

from ..conftest import COLLECTIONS, ROOT, SIMULATOR
from .apistub import ApiStub, make_node, make_pod

kubernetes_validate = pytest.importorskip("kubernetes_validate")
pytest.importorskip("kubernetes")
KUBERNETES_CORE = importlib.util.find_spec("ansible_collections.kubernetes.core")
if KUBERNETES_CORE is None:
    pytest.skip("kubernetes.core is not installed (the ansible package of requirements/main.txt)",
                allow_module_level=True)
# ansible_collections/ above kubernetes/core, to put on ANSIBLE_COLLECTIONS_PATH
K8S_COLLECTIONS = os.path.dirname(os.path.dirname(os.path.dirname(list(KUBERNETES_CORE.submodule_search_locations)[0])))

# the Kubernetes versions the collection declares (docs/kubernetes.md, "The cluster_bootstrap playbook")
KUBERNETES_VERSIONS = ["1.30.0", "1.31.0", "1.32.0", "1.33.0", "1.34.0", "1.35.0", "1.36.0", "1.37.0"]
BIN = os.path.dirname(sys.executable)
PLAYBOOK = os.path.join(ROOT, "playbooks", "cluster_bootstrap.yml")
GPU = {"nvidia.com/gpu": "1"}  # the API writes quantities as strings
LAYOUT = [{"devices": "all", "mig-enabled": True, "mig-devices": {"1g.10gb": 7}}]
HOSTS = {"node-ts": ("L40S", "k8s_timesliced"), "node-mig-a": ("A100-SXM4-80GB", "k8s_mig"),
         "node-mig-b": ("A100-SXM4-80GB", "k8s_mig")}


def fleet(tmp_path, stub: ApiStub, **extra) -> str:
    """gpusim hosts (each a local connection with its own state) in an inventory that points at the stub."""
    timesliced = {"k8s_gpu_node_config_name": "timesliced",
                  "k8s_gpu_node_time_slicing": {"replicas": 4, "rename_by_default": True}}
    mig = {"k8s_gpu_node_config_name": "mig-mixed", "k8s_gpu_node_mig_strategy": "mixed", "mig_config": LAYOUT,
           "mig_boot_service_enabled": False}
    groups: dict = {"k8s_timesliced": {"hosts": {}, "vars": timesliced}, "k8s_mig": {"hosts": {}, "vars": mig}}
    for name, (model, group) in HOSTS.items():
        hostdir = tmp_path / name
        hostdir.mkdir()
        state = hostdir / "gpusim.json"
        subprocess.run([sys.executable, "-m", "gpusim", "--state", str(state), "init", "--model", model, "--gpus", "1",
                        "--host", name], check=True, stdout=subprocess.DEVNULL,
                       env={**os.environ, "PYTHONPATH": SIMULATOR})
        wrapper = hostdir / "python"
        wrapper.write_text(f"#!/bin/sh\nexport GPUSIM_STATE='{state}'\nexport PYTHONPATH='{SIMULATOR}'\n"
                           f"export PATH='{SIMULATOR}/bin':\"$PATH\"\nexec '{sys.executable}' \"$@\"\n")
        wrapper.chmod(0o755)
        groups[group]["hosts"][name] = {"ansible_connection": "local", "ansible_python_interpreter": str(wrapper),
                                        "mig_config_dir": str(hostdir / "etc"), "mig_install_dir": str(hostdir / "lib"),
                                        "mig_python": str(wrapper)}
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(yaml.safe_dump(stub.kubeconfig()))
    inventory = tmp_path / "inventory.yml"
    inventory.write_text(yaml.safe_dump({"all": {
        "vars": {"ansible_become": False, "cluster_bootstrap_kubeconfig": str(kubeconfig),
                 "cluster_bootstrap_allocatable_retries": 4, "cluster_bootstrap_allocatable_delay": 1, **extra},
        "children": {"k8s_gpu_nodes": {"children": groups}}}}, sort_keys=False))
    return str(inventory)


def play(tmp_path, inventory: str, *args) -> tuple:
    env = {**os.environ, "ANSIBLE_COLLECTIONS_PATH": os.pathsep.join([COLLECTIONS, K8S_COLLECTIONS]),
           "ANSIBLE_HOME": str(tmp_path / "home"), "ANSIBLE_PIPELINING": "1", "ANSIBLE_LOCALHOST_WARNING": "false", "ANSIBLE_NOCOLOR": "1",
           "ANSIBLE_INVENTORY_UNPARSED_WARNING": "false", "ANSIBLE_PYTHON_INTERPRETER": sys.executable,
           # kubernetes.core's discovery cache, kept per test
           "TMPDIR": str(tmp_path), "K8S_AUTH_KUBECONFIG": "/nonexistent",
           "PATH": BIN + os.pathsep + os.environ.get("PATH", "")}
    done = subprocess.run([os.path.join(BIN, "ansible-playbook"), "-i", inventory, PLAYBOOK, *args],
                          capture_output=True, text=True, env=env, check=False, timeout=300)
    return done.returncode, done.stdout + done.stderr


def first(stub: ApiStub, predicate) -> int:
    return next(i for i, call in enumerate(stub.log) if predicate(call))


def last(stub: ApiStub, predicate) -> int:
    return max(i for i, call in enumerate(stub.log) if predicate(call))


def touches(node):
    return lambda call: call["path"].endswith(f"/nodes/{node}") or call["query"].get("fieldSelector", "").endswith(
        f"={node}")


def sent_objects(stub: ApiStub) -> list:
    """Every object the playbook's tasks sent: ConfigMaps, label patches, evictions, cordon patches."""
    sent = []
    for call in stub.calls():
        body = call["body"]
        if call["method"] not in ("POST", "PUT", "PATCH") or not isinstance(body, dict):
            continue
        if "/nodes/" in call["path"]:
            body = {"apiVersion": "v1", "kind": "Node", **body}  # a patch names neither
        elif call["path"].endswith("/eviction"):
            body = {"apiVersion": "policy/v1", "kind": "Eviction", **body}  # the client leaves them out
        sent.append(body)
    return sent


def assert_valid(objects: list) -> None:
    assert objects
    for obj in objects:
        for version in KUBERNETES_VERSIONS:
            kubernetes_validate.validate(obj, version, strict=True)


def test_rollout_batches_drains_only_when_needed_and_waits_for_allocatable(tmp_path):
    nodes = [make_node("node-ts", {"nvidia.com/gpu": "1"}), make_node("node-mig-a", {"nvidia.com/gpu": "1"}),
             make_node("node-mig-b", {"nvidia.com/gpu": "1"})]
    pods = [make_pod("notebook", "node-ts", GPU),                         # GPU pod, no MIG change: stays
            make_pod("trainer", "node-mig-a", GPU, namespace="ml"),       # GPU pod, MIG enabled: drained
            make_pod("web", "node-mig-b", {"cpu": "1"}),                  # no GPU pod: no drain despite MIG
            # the device plugin's DaemonSet pods: restarted where the MIG layout changed, left alone elsewhere
            *(make_pod(f"plugin-{n}", n, namespace="nvidia-device-plugin", owner="DaemonSet",
                       labels={"app.kubernetes.io/name": "nvidia-device-plugin"}) for n in HOSTS)]
    plugin = {"node-ts": {"after_reads": 2, "allocatable": {"nvidia.com/gpu.shared": "4", "nvidia.com/gpu": "0"}},
              "node-mig-a": {"after_reads": 1, "allocatable": {"nvidia.com/mig-1g.10gb": "7", "nvidia.com/gpu": "0"}},
              "node-mig-b": {"allocatable": {"nvidia.com/mig-1g.10gb": "7", "nvidia.com/gpu": "0"}}}
    with ApiStub(nodes, pods, plugin) as stub:
        rc, out = play(tmp_path, fleet(tmp_path, stub))
        assert rc == 0, out

        # one ConfigMap, one key per config name, before any node is touched
        (created,) = stub.calls("POST", "/api/v1/namespaces/nvidia-device-plugin/configmaps")
        assert created["body"]["metadata"]["name"] == "nvidia-plugin-configs"
        assert sorted(created["body"]["data"]) == ["mig-mixed", "timesliced"]
        assert yaml.safe_load(created["body"]["data"]["timesliced"])["sharing"]["timeSlicing"]["resources"] == [
            {"name": "nvidia.com/gpu", "replicas": 4}]
        assert stub.log.index(created) < first(stub, lambda c: "/nodes/" in c["path"])

        # batches of one, in inventory order: a node is touched only after the one before passed its gate
        order = ["node-ts", "node-mig-a", "node-mig-b"]
        for before, after in zip(order, order[1:]):
            assert last(stub, touches(before)) < first(stub, touches(after)), (before, after)
        assert len(stub.calls("GET", "/api/v1/nodes/node-ts")) >= 4  # the gate waited: 2 reads + pass

        # drained only node-mig-a, and uncordoned it at the end
        evictions = stub.calls("POST", "/api/v1/namespaces/")
        evictions = [c["path"] for c in evictions if c["path"].endswith("/eviction")]
        assert evictions == ["/api/v1/namespaces/ml/pods/trainer/eviction"]
        cordons = [(c["path"].rsplit("/", 1)[1], c["body"]["spec"]["unschedulable"])
                   for c in stub.calls("PATCH", "/api/v1/nodes/") if "spec" in (c["body"] or {})]
        assert cordons == [("node-mig-a", True), ("node-mig-a", False)]
        assert ("default", "notebook") in stub.pods and ("default", "web") in stub.pods
        assert last(stub, lambda c: c["path"].endswith("/eviction")) < first(
            stub, lambda c: c["method"] == "PATCH" and "labels" in (c["body"] or {}).get("metadata", {})
            and c["path"].endswith("/node-mig-a"))

        # after each MIG change (node-mig-a, node-mig-b), the plugin's pod on that node was deleted, after the
        # layout and before the health gate; node-ts (no MIG change) kept its pod
        deleted = [c["path"] for c in stub.calls("DELETE", "/api/v1/namespaces/nvidia-device-plugin/pods/")]
        assert deleted == ["/api/v1/namespaces/nvidia-device-plugin/pods/plugin-node-mig-a",
                           "/api/v1/namespaces/nvidia-device-plugin/pods/plugin-node-mig-b"]
        assert ("nvidia-device-plugin", "plugin-node-ts") in stub.pods
        assert first(stub, lambda c: c["method"] == "DELETE" and c["path"].endswith("/plugin-node-mig-a")) < last(
            stub, lambda c: c["method"] == "GET" and c["path"] == "/api/v1/nodes/node-mig-a")

        # labels and final state
        for name, config in (("node-ts", "timesliced"), ("node-mig-a", "mig-mixed"), ("node-mig-b", "mig-mixed")):
            node = stub.nodes[name]
            assert node["metadata"]["labels"]["nvidia.com/device-plugin.config"] == config
            assert "nvidia.com/mig.config" not in node["metadata"]["labels"]
            assert not node["spec"].get("unschedulable")
        assert "node-mig-b: no drain: the change is disruptive (GPU 0: enable MIG mode) but no pod uses a GPU" in out
        assert "node-mig-a: drain: GPU 0: enable MIG mode; GPU pods ml/trainer" in out
        assert_valid(sent_objects(stub))


def test_rollout_stops_at_the_first_node_that_fails_its_health_gate(tmp_path):
    nodes = [make_node(n, {"nvidia.com/gpu": "1"}) for n in HOSTS]
    pods = [make_pod("trainer", "node-mig-a", GPU)]
    # node-mig-a's plugin advertises fewer MIG devices than the layout makes
    plugin = {"node-mig-a": {"allocatable": {"nvidia.com/mig-1g.10gb": "3"}},
              "node-mig-b": {"allocatable": {"nvidia.com/mig-1g.10gb": "7"}}}
    with ApiStub(nodes, pods, plugin) as stub:
        rc, out = play(tmp_path, fleet(tmp_path, stub, cluster_bootstrap_allocatable_retries=2),
                       "-e", "cluster_bootstrap_group=k8s_mig")
        assert rc != 0, out
        assert ("node-mig-a failed its health gate after 2 x 1 s: nvidia.com/mig-1g.10gb: 3 advertised, 7 expected. "
                "The roll-out stops here; the node stays cordoned.") in " ".join(out.split())
        # the next batch never started: node-mig-b was not read, drained or labelled, and node-ts is not in the group
        assert not [c for c in stub.log if touches("node-mig-b")(c) or touches("node-ts")(c)]
        assert stub.nodes["node-mig-a"]["spec"]["unschedulable"] is True
        assert "nvidia.com/device-plugin.config" not in stub.nodes["node-mig-b"]["metadata"]["labels"]
        (created,) = stub.calls("POST", "/api/v1/namespaces/nvidia-device-plugin/configmaps")
        assert sorted(created["body"]["data"]) == ["mig-mixed"]
        assert_valid(sent_objects(stub))


@pytest.mark.parametrize("bad", [
    {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x"}, "data": {"a": 1}},
    {"apiVersion": "v1", "kind": "Node", "metadata": {"name": "x", "labels": {"a": 1}}},
    {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x"}, "dta": {}},
])
def test_the_schema_check_refuses_what_the_api_would(bad):
    with pytest.raises(kubernetes_validate.ValidationError):
        assert_valid([bad])


def test_the_filters_objects_are_valid_for_every_declared_version():
    from ansible_collections.gpuops.sharing.plugins.module_utils import _k8s_rollout as rollout

    assert_valid([rollout.device_plugin_configmap({"timesliced": "version: v1\n"}, "nvidia-plugin-configs",
                                                  "nvidia-device-plugin", {"app.kubernetes.io/managed-by": "gpuops"}),
                  rollout.node_labels("gpu-01", "mig-mixed", "all-1g.10gb")])


def test_kubeconfig_in_the_stub_is_what_the_client_reads(tmp_path):
    # the stub's kubeconfig is loaded by the kubernetes client as a real one would be
    from kubernetes import config as kconfig

    with ApiStub([make_node("n")]) as stub:
        path = tmp_path / "kc"
        path.write_text(json.dumps(stub.kubeconfig()))
        client = kconfig.new_client_from_config(str(path))
        assert client.configuration.host == stub.url
