# Copyright (c) gpuops.sharing contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""CDI specs on one host: nvidia-ctk, the spec file, systemd units. Private to this collection.

The side effects of ``gpuops.sharing.cdi_spec``, as a host object for ``_runner.run``; the decisions are in
``_cdi``.  No ansible imports: the module passes ``atomic_move`` and the command seam in.
"""

from __future__ import annotations

import json
import os

from ansible_collections.gpuops.sharing.plugins.module_utils import _cdi, _host
from ansible_collections.gpuops.sharing.plugins.module_utils._runner import Op, RunError

try:
    import yaml
    HAS_YAML = True
except ImportError:  # pragma: no cover - PyYAML comes with ansible-core
    HAS_YAML = False

MAX_SPEC_BYTES = 4 * 1024 * 1024


def systemd_booted(marker: str = "/run/systemd/system") -> bool:
    """Whether systemd is the running service manager (the test of sd_booted(3))."""
    return os.path.isdir(marker)


class CdiHost:
    errors = (_cdi.CdiError, _host.HostFileError, OSError)

    def __init__(self, request: dict, atomic_move, run_command, nvidia_ctk: str | None, systemctl: str | None):
        self.request = request
        self.atomic_move = atomic_move
        self.run_command = run_command
        self.nvidia_ctk = nvidia_ctk
        self.systemctl = systemctl
        self.warnings: list[str] = []
        self.method = "nvidia-ctk"

    def _generate(self) -> str:
        r = self.request
        argv = _cdi.generate_argv(self.nvidia_ctk, r["output"], r["device_name_strategy"])
        rc, out, err = self.run_command(argv)
        if rc != 0:
            raise _cdi.CdiError(f"{' '.join(argv)} failed (rc={rc}): {(err or out).strip()}")
        return out

    def observe(self) -> dict:
        r = self.request
        systemd = systemd_booted()
        refresh_loaded = False
        if systemd and self.systemctl and r["method"] in ("auto", "refresh-service"):
            rc, out, _err = self.run_command([self.systemctl, "show", "--property=LoadState", r["refresh_service"]])
            refresh_loaded = rc == 0 and out.strip() == "LoadState=loaded"
        state = {"systemd": systemd, "refresh_loaded": refresh_loaded,
                 "current": _host.read_managed(r["output"], MAX_SPEC_BYTES), "generated": None, "devices": []}
        if r["state"] == "present":
            if not self.nvidia_ctk:
                raise _cdi.CdiError("nvidia-ctk was not found on PATH: install the NVIDIA Container Toolkit "
                                    "(package nvidia-container-toolkit) or give nvidia_ctk")
            state["generated"] = self._generate()
            spec = json.loads(state["generated"]) if r["output"].endswith(".json") else \
                yaml.safe_load(state["generated"])
            state["devices"] = _cdi.device_names(spec)
        return state

    def plan(self, state: dict) -> list[Op]:
        r = self.request
        ops = []
        if r["state"] == "absent":
            if state["current"] is not None:
                ops.append(Op("remove_file", r["output"], f"remove {r['output']}"))
            return ops
        self.method = _cdi.choose_method(r["method"], r["output"], state["refresh_loaded"])
        if state["current"] == state["generated"]:
            return []
        why = "new file" if state["current"] is None else "the devices changed"
        if self.method == "refresh-service":
            unit = r["refresh_service"]
            ops.append(Op("restart_unit", unit, f"regenerate {r['output']} ({why}) with systemctl restart {unit}",
                          {"verb": "restart"}))
        else:
            ops.append(Op("write_file", r["output"], f"write {r['output']} ({why}) from nvidia-ctk cdi generate",
                          {"text": state["generated"]}))
        if state["systemd"]:
            for unit in r["restart_units"] or []:
                ops.append(Op("restart_unit", unit, f"restart {unit} if it runs, for the new devices",
                              {"verb": "try-restart"}))
        return ops

    def check(self, state: dict, ops: list[Op]) -> list[str]:
        r = self.request
        problems = _cdi.refusals(self.method, r["output"], state["refresh_loaded"], state["systemd"],
                                 r["refresh_service"]) if r["state"] == "present" else []
        if any(op.kind == "restart_unit" for op in ops) and not self.systemctl:
            problems.append("systemd runs but systemctl was not found; cannot restart units")
        return problems

    def apply(self, op: Op, state: dict) -> None:
        if op.kind == "write_file":
            _host.write_file(op.target, op.data["text"], 0o644, self.atomic_move)
        elif op.kind == "remove_file":
            _host.remove_file(op.target)
        else:
            rc, out, err = self.run_command([self.systemctl, op.data["verb"], op.target])
            if rc != 0:
                raise RunError(f"systemctl {op.data['verb']} {op.target} failed (rc={rc}): {(err or out).strip()}; "
                               f"see journalctl -u {op.target}")

    def verify(self, state: dict, ops: list[Op]) -> list[str]:
        r = self.request
        if not ops:
            return []
        now = _host.read_managed(r["output"], MAX_SPEC_BYTES)
        if r["state"] == "absent":
            return [f"{r['output']} is still there"] if now is not None else []
        if now != self._generate():
            return [f"{r['output']} does not hold the spec nvidia-ctk cdi generate prints after the run"]
        return []

    def result(self, state: dict, ops: list[Op], check_mode: bool) -> dict:
        self.before = state["current"]
        self.after = state["generated"] if self.request["state"] == "present" else None
        return {"output": self.request["output"], "devices": state["devices"],
                "method": self.method if self.request["state"] == "present" else None,
                "restarted": [op.target for op in ops if op.kind == "restart_unit" and op.data["verb"] == "try-restart"]}

    def diff(self, result: dict) -> dict:
        path = self.request["output"]
        return {"before_header": path, "after_header": path, "before": self.before or "", "after": self.after or ""}
