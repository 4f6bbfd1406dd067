"""The client side of gpusim's ``nvidia-cuda-mps-control`` (see gpusim/mps.py for the daemon).

``nvidia-cuda-mps-control`` without options reads commands from stdin, sends them to the control
daemon listening on ``$CUDA_MPS_PIPE_DIRECTORY/control`` (default ``/tmp/nvidia-mps``) and prints
its replies (waiting as long as the daemon takes: ``quit`` returns when the daemon exits); without a
daemon it prints ``Cannot find MPS control daemon process`` and exits 1
(MPS documentation, https://docs.nvidia.com/deploy/mps/; the text as users report it, e.g.
globus-labs/mof-generation-at-scale#29).  Kept apart from the daemon, with only ``os``, ``socket``
and ``sys``: the real client is a small C program and starts in a few milliseconds.
"""

from __future__ import annotations

import os
import socket
import sys

DEFAULT_PIPE_DIRECTORY = "/tmp/nvidia-mps"
NO_DAEMON = "Cannot find MPS control daemon process"


def _pipe_directory(env=None) -> str:
    env = os.environ if env is None else env
    return env.get("CUDA_MPS_PIPE_DIRECTORY") or DEFAULT_PIPE_DIRECTORY


def request(pipe_directory: str, text: str, timeout: float | None = 30.0) -> str:
    """Send command lines to the daemon listening in ``pipe_directory``; returns its reply text.

    Raises ConnectionError when no daemon listens there.  ``timeout=None`` waits as long as the daemon
    takes (``quit`` is synchronous: it returns when the daemon exits, after the clients have finished).
    """
    path = os.path.join(pipe_directory, "control")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        try:
            sock.connect(path)
        except OSError as exc:
            raise ConnectionError(f"{path}: {exc.strerror or exc}") from None
        sock.sendall(text.encode())
        sock.shutdown(socket.SHUT_WR)
        chunks = []
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                break
            chunks.append(chunk)
        return b"".join(chunks).decode()
    finally:
        sock.close()


def client_main(stdin=None, stdout=None) -> int:
    stdin = sys.stdin if stdin is None else stdin
    stdout = sys.stdout if stdout is None else stdout
    pipe = _pipe_directory()
    interactive = hasattr(stdin, "isatty") and stdin.isatty()
    if not os.path.exists(os.path.join(pipe, "control")):
        print(NO_DAEMON, file=stdout)
        return 1
    try:
        if interactive:
            for line in stdin:
                if line.strip():
                    stdout.write(request(pipe, line, timeout=None))
                    stdout.flush()
            return 0
        text = stdin.read()
        if text.strip():
            stdout.write(request(pipe, text, timeout=None))
    except ConnectionError:
        print(NO_DAEMON, file=stdout)
        return 1
    return 0
