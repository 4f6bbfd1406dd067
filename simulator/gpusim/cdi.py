"""gpusim's ``nvidia-ctk cdi generate`` and ``nvidia-ctk cdi list``, from the simulated GPUs.

Shaped from NVIDIA/nvidia-container-toolkit at commit d34b3046758cb1a5db606b2a39519c731bbf9f56:

- ``cmd/nvidia-ctk/cdi/generate/generate.go``: the flags (``--output``, ``NVIDIA_CTK_CDI_OUTPUT_FILE_PATH``;
  ``--format`` yaml|json, yaml by default; ``--device-name-strategy`` index|uuid|type-index, repeatable,
  ``index`` and ``uuid`` by default; ``--vendor``/``--class``, kind ``nvidia.com/gpu``), the spec on stdout
  without ``--output``;
- ``cmd/nvidia-ctk/cdi/generate/generate_test.go`` ("default"): the spec's layout (``cdiVersion: 0.5.0``,
  ``kind``, ``devices`` each with ``name`` and ``containerEdits.deviceNodes``, ``all`` with every device's
  nodes, the common ``containerEdits`` with ``NVIDIA_VISIBLE_DEVICES=void``, ``/dev/nvidiactl``, the
  ``nvidia-cdi-hook`` hooks and the driver's libraries mounted ``ro, nosuid, nodev, rbind, rprivate``);
- ``pkg/nvcdi/namer.go``: names ``<index>``, ``<gpu index>:<mig index>``, the UUID, and with type-index
  ``gpu<index>`` / ``mig<gpu>:<mig>``; each device gets one entry per strategy, in strategy order;
- ``internal/nvcaps/nvcaps.go``: a MIG device's nodes are its parent's ``/dev/nvidia<minor>`` and the
  ``/dev/nvidia-caps/nvidia-cap<minor>`` of ``gpu<g>/gi<gi>/access`` and ``gpu<g>/gi<gi>/ci<ci>/access``, with
  the minors of the driver's ``/proc/driver/nvidia-caps/mig-minors`` (``config`` 1, ``monitor`` 2, then per
  GPU 15 GPU instances of one ``access`` line and 8 compute instances each; the MIG user guide's listing);
- ``cmd/nvidia-ctk/cdi/list/list.go``: every device of the specs in ``--spec-dir`` (``/etc/cdi`` and
  ``/var/run/cdi``) as ``kind=name``, sorted, on stdout; "Found N CDI devices" is logged on stderr.
"""

from __future__ import annotations

import json
import os
import re
import sys

from . import device

CDI_VERSION = "0.5.0"
LIB_DIR = "/usr/lib/x86_64-linux-gnu"
HOOK = "/usr/bin/nvidia-cdi-hook"
MOUNT_OPTIONS = ["ro", "nosuid", "nodev", "rbind", "rprivate"]
STRATEGIES = ("index", "uuid", "type-index")
DEFAULT_SPEC_DIRS = ("/etc/cdi", "/var/run/cdi")
GIS_PER_GPU, CIS_PER_GI = 15, 8


def cap_minor(gpu: int, gi: int, ci: int | None = None) -> int:
    """The minor of /dev/nvidia-caps/nvidia-cap<N> for a GPU instance's (or compute instance's) access."""
    base = 3 + gpu * GIS_PER_GPU * (CIS_PER_GI + 1) + gi * (CIS_PER_GI + 1)
    return base if ci is None else base + 1 + ci


def _node(path: str) -> dict:
    return {"path": path, "hostPath": path}


def _names(strategies, index: int, uuid: str, mig: int | None = None) -> list[str]:
    names = []
    for strategy in strategies:
        if strategy == "index":
            names.append(f"{index}" if mig is None else f"{index}:{mig}")
        elif strategy == "uuid":
            names.append(uuid)
        else:
            names.append(f"gpu{index}" if mig is None else f"mig{index}:{mig}")
    return names


def generate(state: dict, strategies=("index", "uuid"), kind: str = "nvidia.com/gpu") -> dict:
    """The CDI spec nvidia-ctk writes for this host's GPUs and MIG devices."""
    devices, every = [], []
    gpus = [g for g in state["gpus"] if not g.get("lost")]
    for gpu in gpus:
        nodes = [_node(f"/dev/nvidia{gpu['minor_number']}")]
        for name in _names(strategies, gpu["index"], gpu["uuid"]):
            devices.append({"name": name, "containerEdits": {"deviceNodes": list(nodes)}})
        every.extend(n for n in nodes if n not in every)
    for gpu in gpus:
        if not gpu.get("mig_current"):
            continue
        for j, (gi, ci) in enumerate(device.mig_devices(gpu)):
            nodes = [_node(f"/dev/nvidia{gpu['minor_number']}"),
                     _node(f"/dev/nvidia-caps/nvidia-cap{cap_minor(gpu['minor_number'], gi['id'])}"),
                     _node(f"/dev/nvidia-caps/nvidia-cap{cap_minor(gpu['minor_number'], gi['id'], ci['id'])}")]
            for name in _names(strategies, gpu["index"], ci["uuid"], j):
                devices.append({"name": name, "containerEdits": {"deviceNodes": list(nodes)}})
            every.extend(n for n in nodes if n not in every)
    if not devices:
        raise CdiError("failed to create CDI spec: no NVIDIA devices found")
    devices.append({"name": "all", "containerEdits": {"deviceNodes": every}})
    version = state.get("driver_version", "580.95.05")
    libs = [f"libcuda.so.{version}", f"libnvidia-ml.so.{version}", f"libnvidia-ptxjitcompiler.so.{version}",
            f"libnvidia-nvvm.so.{version}"]
    hook_env = ["NVIDIA_CTK_DEBUG=false"]
    common = {
        "env": [f"NVIDIA_CTK_LIBCUDA_DIR={LIB_DIR}", "NVIDIA_VISIBLE_DEVICES=void"],
        "deviceNodes": [_node("/dev/nvidiactl"), _node("/dev/nvidia-uvm"), _node("/dev/nvidia-uvm-tools")],
        "hooks": [
            {"hookName": "createContainer", "path": HOOK, "args": ["nvidia-cdi-hook", "create-symlinks", "--link",
                                                                   f"libcuda.so.1::{LIB_DIR}/libcuda.so"],
             "env": hook_env},
            {"hookName": "createContainer", "path": HOOK,
             "args": ["nvidia-cdi-hook", "enable-cuda-compat", f"--host-driver-version={version}"], "env": hook_env},
            {"hookName": "createContainer", "path": HOOK,
             "args": ["nvidia-cdi-hook", "update-ldcache", "--folder", LIB_DIR], "env": hook_env},
            {"hookName": "createContainer", "path": HOOK, "args": ["nvidia-cdi-hook", "disable-device-node-modification"],
             "env": hook_env},
        ],
        "mounts": [{"hostPath": f"{LIB_DIR}/{lib}", "containerPath": f"{LIB_DIR}/{lib}", "options": MOUNT_OPTIONS}
                   for lib in libs] + [
            {"hostPath": "/usr/bin/nvidia-smi", "containerPath": "/usr/bin/nvidia-smi", "options": MOUNT_OPTIONS}],
    }
    return {"cdiVersion": CDI_VERSION, "kind": kind, "devices": devices, "containerEdits": common}


class CdiError(Exception):
    pass


# ------------------------------------------------------------------ go-yaml's layout

_PLAIN = re.compile(r"^(-(?=[A-Za-z-])|[A-Za-z0-9/_.])[A-Za-z0-9/_.=:,+-]*$")
_NUMBER_LIKE = re.compile(r"^([-+]?(\d[\d_]*)?(\.\d*)?([eE][-+]?\d+)?|[\d_.]*:[\d:_.]*)$")


def _scalar(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    text = str(value)
    if _PLAIN.match(text) and not _NUMBER_LIKE.match(text) and text not in ("true", "false", "null", "yes", "no", "on", "off") \
            and not re.search(r":(\s|$)", text):
        return text
    return json.dumps(text)


def to_yaml(spec: dict) -> str:
    """The spec as go-yaml v3 writes it for nvidia-ctk: ``---``, 4-space indents, list items indented."""
    out = ["---"]

    def emit(value, indent: int) -> None:
        pad = " " * indent
        if isinstance(value, dict):
            for key, item in value.items():
                if isinstance(item, (dict, list)) and item:
                    out.append(f"{pad}{key}:")
                    emit(item, indent + 4)
                else:
                    out.append(f"{pad}{key}: {_scalar(item) if not isinstance(item, (dict, list)) else '[]'}")
        else:
            for item in value:
                if isinstance(item, dict):
                    first = True
                    for key, sub in item.items():
                        lead = f"{pad}- " if first else f"{pad}  "
                        first = False
                        if isinstance(sub, (dict, list)) and sub:
                            out.append(f"{lead}{key}:")
                            emit(sub, indent + 4)
                        else:
                            out.append(f"{lead}{key}: {_scalar(sub)}")
                else:
                    out.append(f"{pad}- {_scalar(item)}")

    emit(spec, 0)
    return "\n".join(out) + "\n"


def render(spec: dict, fmt: str) -> str:
    if fmt == "json":
        return json.dumps(spec, indent=2) + "\n"
    return to_yaml(spec)


def list_devices(spec_dirs) -> tuple[list[str], list[str]]:
    """(``kind=name`` of every device in the specs of ``spec_dirs``, sorted; errors per file)."""
    import yaml
    names, errors = set(), []
    for directory in spec_dirs:
        try:
            entries = sorted(os.listdir(directory))
        except FileNotFoundError:
            continue
        for entry in entries:
            if not entry.endswith((".yaml", ".yml", ".json")):
                continue
            path = os.path.join(directory, entry)
            try:
                with open(path, encoding="utf-8") as fh:
                    spec = yaml.safe_load(fh)
                kind = spec["kind"]
                for dev in spec["devices"]:
                    names.add(f"{kind}={dev['name']}")
            except (OSError, ValueError, KeyError, TypeError, yaml.YAMLError) as exc:
                errors.append(f"{path}: {exc}")
    return sorted(names), errors


# ------------------------------------------------------------------ the CLI

def _log(level: str, message: str) -> None:
    import time
    stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    quoted = message.replace("\\", "\\\\").replace('"', '\\"')      # logrus' text formatter quotes msg
    print(f'time="{stamp}" level={level} msg="{quoted}"', file=sys.stderr)


def _option(argv: list[str], name: str, many: bool = False):
    """``--name=value`` / ``--name value`` flags as urfave/cli takes them."""
    values, rest, i = [], [], 0
    while i < len(argv):
        arg = argv[i]
        if arg == f"--{name}" and i + 1 < len(argv):
            values.append(argv[i + 1])
            i += 2
            continue
        if arg.startswith(f"--{name}="):
            values.append(arg.split("=", 1)[1])
        else:
            rest.append(arg)
        i += 1
    argv[:] = rest
    if many:
        return [v for value in values for v in value.split(",") if v]
    return values[-1] if values else None


def main(argv: list[str] | None = None) -> int:
    from . import state as gpusim_state
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:2] == ["cdi", "generate"]:
        args = argv[2:]
        output = _option(args, "output")
        output = os.environ.get("NVIDIA_CTK_CDI_OUTPUT_FILE_PATH", "") if output is None else output
        fmt = _option(args, "format") or os.environ.get("NVIDIA_CTK_CDI_GENERATE_OUTPUT_FORMAT") or \
            ("json" if output.endswith(".json") else "yaml")
        strategies = _option(args, "device-name-strategy", many=True) or ["index", "uuid"]
        vendor = _option(args, "vendor") or "nvidia.com"
        klass = _option(args, "class") or "gpu"
        _option(args, "mode")
        if args:
            print(f"Incorrect Usage: flag provided but not defined: {args[0]}", file=sys.stderr)
            return 1
        if fmt not in ("yaml", "json"):
            _log("error", f'invalid output format: "{fmt}"')
            return 1
        for strategy in strategies:
            if strategy not in STRATEGIES:
                _log("error", f"invalid device name strategy: {strategy}")
                return 1
        try:
            spec = generate(gpusim_state.load(), strategies, f"{vendor}/{klass}")
        except (CdiError, gpusim_state.StateError) as exc:
            _log("error", str(exc))
            return 1
        text = render(spec, fmt)
        if not output:
            sys.stdout.write(text)
            return 0
        directory = os.path.dirname(os.path.abspath(output))
        os.makedirs(directory, exist_ok=True)
        tmp = os.path.join(directory, f".{os.path.basename(output)}.tmp")
        with open(tmp, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.chmod(tmp, 0o644)
        os.replace(tmp, output)
        _log("info", f"Generated CDI spec with version {spec['cdiVersion']}")
        return 0
    if argv[:2] == ["cdi", "list"]:
        args = argv[2:]
        dirs = _option(args, "spec-dir", many=True) or \
            [d for d in os.environ.get("NVIDIA_CTK_CDI_SPEC_DIRS", "").split(",") if d] or list(DEFAULT_SPEC_DIRS)
        names, errors = list_devices(dirs)
        if errors:
            _log("warning", "The following registry errors were reported:")
            for error in errors:
                _log("warning", error)
        _log("info", f"Found {len(names)} CDI devices")
        for name in names:
            print(name)
        return 0
    print("gpusim's nvidia-ctk implements: cdi generate, cdi list", file=sys.stderr)
    return 1
