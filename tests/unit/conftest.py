"""Unit-test harness: the checkout as ansible_collections.gpuops.sharing, gpusim as pynvml.

Module tests run a module's real main() with injected arguments against a
simulated host (one gpusim state per test), the way community.hashi_vault's
tests run theirs against a mocked client.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SIMULATOR = os.path.join(ROOT, "simulator")
COLLECTIONS = os.path.join(ROOT, ".build", "collections")


def _link_collection() -> None:
    link = os.path.join(COLLECTIONS, "ansible_collections", "gpuops", "sharing")
    if not os.path.islink(link):
        os.makedirs(os.path.dirname(link), exist_ok=True)
        with contextlib.suppress(FileExistsError):
            os.symlink(ROOT, link)


_link_collection()
for path in (SIMULATOR, COLLECTIONS):
    if path not in sys.path:
        sys.path.insert(0, path)

import pynvml  # noqa: E402  gpusim's shim over the real nvidia-ml-py
from ansible.module_utils import basic  # noqa: E402

from gpusim import cli as gpusim_cli  # noqa: E402
from gpusim import mps as gpusim_mps  # noqa: E402
from gpusim import state as gpusim_state  # noqa: E402


class ModuleExit(Exception):
    def __init__(self, result: dict, failed: bool):
        super().__init__(result.get("msg", ""))
        self.result = result
        self.failed = failed


@contextlib.contextmanager
def module_args(args: dict):
    try:
        from ansible.module_utils.testing import patch_module_args
    except ImportError:  # ansible-core < 2.19
        payload = json.dumps({"ANSIBLE_MODULE_ARGS": args}).encode()
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(basic, "_ANSIBLE_ARGS", payload)
            yield
        return
    with patch_module_args(args):
        yield


def run_module(main, args: dict) -> tuple[dict, bool]:
    """Run a module's main(); returns (result, failed), with the task's ``warnings`` as Ansible shows them."""
    from ansible.module_utils.common import warnings as module_warnings

    module_warnings._global_warnings.clear()

    def warnings() -> list[str]:
        return [str(getattr(w, "msg", w)) for w in module_warnings.get_warning_messages()]

    def exit_json(self, **kwargs):
        kwargs.setdefault("changed", False)
        kwargs.setdefault("warnings", warnings())
        raise ModuleExit(kwargs, False)

    def fail_json(self, msg, **kwargs):
        kwargs["msg"] = msg
        kwargs["failed"] = True
        kwargs.setdefault("warnings", warnings())
        raise ModuleExit(kwargs, True)

    with pytest.MonkeyPatch.context() as mp, module_args(args):
        mp.setattr(basic.AnsibleModule, "exit_json", exit_json)
        mp.setattr(basic.AnsibleModule, "fail_json", fail_json)
        try:
            main()
        except ModuleExit as done:
            return done.result, done.failed
    raise AssertionError("module returned without exit_json/fail_json")


class SimHost:
    def __init__(self, path: str):
        self.path = path

    def gpusim(self, *args: str) -> None:
        assert gpusim_cli.main(list(args)) == 0

    def init(self, model: str, gpus: int = 1, *extra: str) -> SimHost:
        self.gpusim("init", "--model", model, "--gpus", str(gpus), "--force", *extra)
        return self

    def state(self) -> dict:
        return gpusim_state.load(self.path)


@pytest.fixture
def sim(tmp_path, monkeypatch):
    path = str(tmp_path / "gpusim.json")
    monkeypatch.setenv("GPUSIM_STATE", path)
    monkeypatch.setenv("PATH", os.path.join(SIMULATOR, "bin") + os.pathsep + os.environ.get("PATH", ""))
    pynvml.nvmlLib = None
    pynvml._nvmlGetFunctionPointer_cache.clear()
    yield SimHost(path)
    pynvml.nvmlLib = None
    pynvml._nvmlGetFunctionPointer_cache.clear()


def driver_profiles(model: str) -> list[dict]:
    """GI profiles of a model exactly as the collection reads them from the (simulated) driver."""
    import tempfile

    from ansible_collections.gpuops.sharing.plugins.module_utils._nvml import Nvml

    with tempfile.TemporaryDirectory() as tmp, pytest.MonkeyPatch.context() as mp:
        path = os.path.join(tmp, "profiles.json")
        mp.setenv("GPUSIM_STATE", path)
        SimHost(path).init(model, 1, "--mig-enabled")
        pynvml.nvmlLib = None
        pynvml._nvmlGetFunctionPointer_cache.clear()
        with Nvml() as nv:
            return nv.gi_profiles(nv.gpu(0), with_capacity=False)


# ---- MPS (tests of gpuops.sharing.mps): fake control daemons in the test's tmp directory --------
class MpsDaemons:
    """Starts gpusim's nvidia-cuda-mps-control -d in a pipe directory under tmp_path; stops every
    daemon whose pid file is under tmp_path at teardown (also those a module under test started)."""

    def __init__(self, root: str):
        self.root = root

    def env(self, pipe: str, **extra: str) -> dict:
        return {**os.environ, "CUDA_MPS_PIPE_DIRECTORY": pipe,
                "CUDA_MPS_LOG_DIRECTORY": os.path.join(os.path.dirname(pipe), "log"), **extra}

    def start(self, pipe: str, **extra: str) -> None:
        import subprocess
        control = os.path.join(SIMULATOR, "bin", "nvidia-cuda-mps-control")
        subprocess.run([sys.executable, control, "-d"], env=self.env(pipe, **extra), check=True, capture_output=True)

    def ctl(self, pipe: str, *commands: str) -> str:
        import subprocess
        control = os.path.join(SIMULATOR, "bin", "nvidia-cuda-mps-control")
        return subprocess.run([sys.executable, control], input="".join(c + "\n" for c in commands),
                              env=self.env(pipe), capture_output=True, text=True, check=False).stdout

    def client(self, pipe: str, pid: int) -> None:
        assert gpusim_cli.main(["mps", "client", "add", "--pid", str(pid), "--pipe-directory", pipe]) == 0

    def stop_all(self) -> None:
        gpusim_mps.stop_daemons(self.root)


@pytest.fixture
def mps_daemons(tmp_path, sim):
    daemons = MpsDaemons(str(tmp_path))
    yield daemons
    daemons.stop_all()
