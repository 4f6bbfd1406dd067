"""A small Kubernetes API stand-in for the cluster_bootstrap playbook's tests (plain HTTP on 127.0.0.1).

It serves only what the playbook's kubernetes.core tasks call (kubernetes.core 6.6.0 with the kubernetes
37.0.2 client), in the API's own shapes (Kubernetes API reference: APIResourceList, Status, Node, Pod,
ConfigMap, policy/v1 Eviction):

* discovery: ``/version``, ``/api``, ``/api/v1``, ``/apis`` (no API groups besides the core one);
* nodes: get, list, patch (merge semantics, which strategic merge has for the maps patched here);
* pods: list by ``fieldSelector=spec.nodeName=...`` and ``labelSelector`` (equality terms ``k=v,k2=v2``; all
  namespaces or one), get, delete, and the
  ``eviction`` subresource, which deletes the pod at once (no PodDisruptionBudget, no grace period);
* configmaps: get, create, patch, replace.

A scripted "device plugin" stands for the kubelet and the plugin: once a node is labelled
``nvidia.com/device-plugin.config=<key>`` and a ConfigMap has that key, the node's next reads (after
``after_reads`` of them) show the allocatable resources the test scripted for it. Every request is recorded
(``ApiStub.log``) with its decoded body, for the tests to check the order of calls and the objects sent.

What it does not do (see docs/testing.md): authentication, admission, schema validation (the tests run
kubernetes-validate on the recorded bodies), resourceVersion conflicts, watches, real draining semantics
(PodDisruptionBudgets, grace periods, DaemonSet pods coming back), or anything a real kubelet and device
plugin do.
"""

from __future__ import annotations

import copy
import http.server
import json
import threading
import urllib.parse

CORE_RESOURCES = [
    {"name": "nodes", "singularName": "node", "namespaced": False, "kind": "Node", "shortNames": ["no"],
     "verbs": ["create", "delete", "get", "list", "patch", "update", "watch"]},
    {"name": "nodes/status", "singularName": "", "namespaced": False, "kind": "Node", "verbs": ["get", "patch"]},
    {"name": "pods", "singularName": "pod", "namespaced": True, "kind": "Pod", "shortNames": ["po"],
     "verbs": ["create", "delete", "get", "list", "patch", "update", "watch"]},
    {"name": "pods/eviction", "singularName": "", "namespaced": True, "group": "policy", "version": "v1",
     "kind": "Eviction", "verbs": ["create"]},
    {"name": "configmaps", "singularName": "configmap", "namespaced": True, "kind": "ConfigMap", "shortNames": ["cm"],
     "verbs": ["create", "delete", "get", "list", "patch", "update", "watch"]},
    {"name": "namespaces", "singularName": "namespace", "namespaced": False, "kind": "Namespace",
     "shortNames": ["ns"], "verbs": ["create", "delete", "get", "list", "patch", "update", "watch"]},
]
DEVICE_PLUGIN_LABEL = "nvidia.com/device-plugin.config"


def _merge(target: dict, patch: dict) -> dict:
    """JSON merge patch (RFC 7386): null deletes, maps merge, anything else replaces."""
    for key, value in patch.items():
        if value is None:
            target.pop(key, None)
        elif isinstance(value, dict) and isinstance(target.get(key), dict):
            _merge(target[key], value)
        else:
            target[key] = copy.deepcopy(value)
    return target


def make_node(name: str, allocatable: dict | None = None, labels: dict | None = None,
              unschedulable: bool = False) -> dict:
    node = {"apiVersion": "v1", "kind": "Node",
            "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name, **(labels or {})}},
            "spec": {},
            "status": {"allocatable": {"cpu": "16", "memory": "131072Mi", "pods": "110", **(allocatable or {})},
                       "capacity": {"cpu": "16", "memory": "131072Mi", "pods": "110", **(allocatable or {})},
                       "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady"}]}}
    if unschedulable:
        node["spec"]["unschedulable"] = True
    return node


def make_pod(name: str, node: str, limits: dict | None = None, namespace: str = "default",
             owner: str | None = "ReplicaSet", labels: dict | None = None) -> dict:
    meta = {"name": name, "namespace": namespace, "labels": dict(labels or {})}
    if owner:
        meta["ownerReferences"] = [{"apiVersion": "apps/v1", "kind": owner, "name": f"{name}-owner",
                                    "uid": f"uid-{name}-owner", "controller": True}]
    return {"apiVersion": "v1", "kind": "Pod", "metadata": meta,
            "spec": {"nodeName": node, "containers": [{"name": "main", "image": "registry.example/app:1",
                                                       "resources": {"limits": limits or {}}}]},
            "status": {"phase": "Running"}}


class ApiStub:
    """The cluster's state, the scripted device plugin, and the request log."""

    def __init__(self, nodes: list, pods: list | None = None, plugin: dict | None = None):
        self.nodes = {n["metadata"]["name"]: n for n in copy.deepcopy(nodes)}
        self.pods = {(p["metadata"]["namespace"], p["metadata"]["name"]): p for p in copy.deepcopy(pods or [])}
        self.configmaps: dict = {}
        # node -> {"after_reads": n, "allocatable": {...}}: what the node advertises once its config is there
        self.plugin = copy.deepcopy(plugin or {})
        self.reads: dict = {}
        self.log: list = []
        self.lock = threading.Lock()
        self.version = 1
        self._server = None
        self.url = ""

    # ------------------------------------------------------------------ lifecycle
    def __enter__(self):
        stub = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args):  # quiet
                pass

            def _serve(self):
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                body = json.loads(raw) if raw else None
                url = urllib.parse.urlsplit(self.path)
                query = dict(urllib.parse.parse_qsl(url.query))
                with stub.lock:
                    stub.log.append({"method": self.command, "path": url.path, "query": query, "body": body,
                                     "content_type": self.headers.get("Content-Type", "")})
                    code, reply = stub.handle(self.command, url.path, query, body)
                data = json.dumps(reply).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_PATCH = do_PUT = do_DELETE = _serve

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc):
        self._server.shutdown()
        self._server.server_close()

    def kubeconfig(self) -> dict:
        return {"apiVersion": "v1", "kind": "Config", "current-context": "stub",
                "clusters": [{"name": "stub", "cluster": {"server": self.url}}],
                "users": [{"name": "stub", "user": {}}],
                "contexts": [{"name": "stub", "context": {"cluster": "stub", "user": "stub"}}]}

    # ------------------------------------------------------------------ the API
    def _stamp(self, obj: dict) -> dict:
        self.version += 1
        meta = obj.setdefault("metadata", {})
        meta["resourceVersion"] = str(self.version)
        meta.setdefault("uid", f"uid-{meta.get('namespace', '')}-{meta.get('name', '')}")
        meta.setdefault("creationTimestamp", "2026-01-01T00:00:00Z")
        return obj

    @staticmethod
    def _status(code: int, reason: str, message: str) -> tuple:
        return code, {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                      "message": message, "reason": reason, "code": code}

    def _not_found(self, kind: str, name: str) -> tuple:
        return self._status(404, "NotFound", f'{kind} "{name}" not found')

    def _advertise(self, name: str) -> None:
        node, script = self.nodes[name], self.plugin.get(name)
        config = node["metadata"].get("labels", {}).get(DEVICE_PLUGIN_LABEL)
        if not script or config is None or not any(config in (cm.get("data") or {}) for cm in self.configmaps.values()):
            return
        self.reads[name] = self.reads.get(name, 0) + 1
        if self.reads[name] > script.get("after_reads", 0):
            for key in ("allocatable", "capacity"):
                node["status"][key].update(script["allocatable"])

    def handle(self, method: str, path: str, query: dict, body):
        parts = [p for p in path.split("/") if p]
        if path == "/version":
            return 200, {"major": "1", "minor": "37", "gitVersion": "v1.37.0", "platform": "linux/amd64"}
        if path == "/api":
            return 200, {"kind": "APIVersions", "versions": ["v1"],
                         "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": "127.0.0.1"}]}
        if path == "/apis":
            return 200, {"kind": "APIGroupList", "apiVersion": "v1", "groups": []}
        if path == "/api/v1":
            return 200, {"kind": "APIResourceList", "groupVersion": "v1", "resources": CORE_RESOURCES}
        if parts[:2] != ["api", "v1"]:
            return self._status(404, "NotFound", f"the server could not find the requested resource ({path})")
        rest = parts[2:]
        namespace = None
        if rest[:1] == ["namespaces"] and len(rest) >= 3:
            namespace, rest = rest[1], rest[2:]
        kind, name, sub = (rest + [None, None, None])[:3]
        if kind == "nodes":
            return self._nodes(method, name, body)
        if kind == "pods":
            return self._pods(method, namespace, name, sub, query)
        if kind == "configmaps":
            return self._configmaps(method, namespace, name, body)
        return self._status(404, "NotFound", f"the server could not find the requested resource ({path})")

    def _nodes(self, method, name, body):
        if name is None and method == "GET":
            for node in self.nodes:
                self._advertise(node)
            return 200, {"kind": "NodeList", "apiVersion": "v1", "metadata": {"resourceVersion": str(self.version)},
                         "items": list(self.nodes.values())}
        if name not in self.nodes:
            return self._not_found("nodes", name)
        if method == "GET":
            self._advertise(name)
            return 200, self.nodes[name]
        if method == "PATCH" and isinstance(body, dict):
            _merge(self.nodes[name], body)
            return 200, self._stamp(self.nodes[name])
        return self._status(405, "MethodNotAllowed", f"{method} on nodes/{name} is not served by the stub")

    def _pods(self, method, namespace, name, sub, query):
        if name is None:
            selector = query.get("fieldSelector", "")
            wanted = selector.split("=", 1)[1] if selector.startswith("spec.nodeName=") else None
            terms = [t.split("=", 1) for t in query.get("labelSelector", "").split(",") if t]
            if any(len(t) != 2 or t[0].endswith("!") for t in terms):
                return self._status(400, "BadRequest", "the stub serves only equality label selectors (k=v)")
            items = [p for (ns, _name), p in sorted(self.pods.items())
                     if (namespace is None or ns == namespace) and (wanted is None or p["spec"]["nodeName"] == wanted)
                     and all(p["metadata"].get("labels", {}).get(k) == v for k, v in terms)]
            return 200, {"kind": "PodList", "apiVersion": "v1", "metadata": {"resourceVersion": str(self.version)},
                         "items": items}
        key = (namespace, name)
        if key not in self.pods:
            return self._not_found("pods", name)
        if method == "GET" and sub is None:
            return 200, self.pods[key]
        if (method == "POST" and sub == "eviction") or (method == "DELETE" and sub is None):
            self.pods.pop(key)
            if sub == "eviction":
                return 201, {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 201}
            return 200, {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 200}
        return self._status(405, "MethodNotAllowed", f"{method} on pods/{name}/{sub} is not served by the stub")

    def _configmaps(self, method, namespace, name, body):
        if name is None and method == "POST":
            key = (namespace, body["metadata"]["name"])
            if key in self.configmaps:
                return self._status(409, "AlreadyExists", f'configmaps "{key[1]}" already exists')
            obj = copy.deepcopy(body)
            obj["metadata"]["namespace"] = namespace
            self.configmaps[key] = self._stamp(obj)
            return 201, self.configmaps[key]
        key = (namespace, name)
        if key not in self.configmaps:
            return self._not_found("configmaps", name)
        if method == "GET":
            return 200, self.configmaps[key]
        if method == "PATCH" and isinstance(body, dict):
            return 200, self._stamp(_merge(self.configmaps[key], body))
        if method == "PUT":
            self.configmaps[key] = self._stamp(copy.deepcopy(body))
            return 200, self.configmaps[key]
        return self._status(405, "MethodNotAllowed", f"{method} on configmaps/{name} is not served by the stub")

    # ------------------------------------------------------------------ for the tests
    def calls(self, method: str | None = None, prefix: str = "") -> list:
        return [c for c in self.log if (method is None or c["method"] == method) and c["path"].startswith(prefix)]
