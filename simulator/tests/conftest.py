"""Fixtures for gpusim's own tests: a fresh host state per test, and a fresh NVML load."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

SIM = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if SIM not in sys.path:
    sys.path.insert(0, SIM)

import pynvml  # noqa: E402  (the simulator's shim: the real binding over gpusim)

from gpusim import cli, state  # noqa: E402


class Host:
    def __init__(self, path: str):
        self.path = path

    def init(self, model: str, gpus: int = 1, *extra: str) -> Host:
        assert cli.main(["init", "--model", model, "--gpus", str(gpus), "--force", *extra]) == 0
        return self

    def gpusim(self, *args: str) -> int:
        return cli.main(list(args))

    def state(self) -> dict:
        return state.load(self.path)

    def smi(self, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, os.path.join(SIM, "libexec", "nvidia-smi.py"), *args],
                              capture_output=True, text=True, env={**os.environ, "GPUSIM_STATE": self.path}, check=False)


@pytest.fixture
def host(tmp_path, monkeypatch):
    path = str(tmp_path / "state.json")
    monkeypatch.setenv("GPUSIM_STATE", path)
    pynvml.nvmlLib = None
    pynvml._nvmlGetFunctionPointer_cache.clear()
    yield Host(path)
    pynvml.nvmlLib = None
    pynvml._nvmlGetFunctionPointer_cache.clear()


@pytest.fixture
def nvml(host):
    """An initialised NVML session (after the test has set up the host)."""
    class Session:
        def __enter__(self):
            pynvml.nvmlInit()
            return pynvml

        def __exit__(self, *exc):
            pynvml.nvmlShutdown()

    return Session()
