"""Shared fixtures: real servers started as subprocesses on loopback.

A server is `python -m slatewise serve` in its own process, exactly as
operators run it; tests talk to it only over gRPC and HTTP. Servers are
started once per test run (the one with the real vLLM engine takes ~40 s).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class RunningServer:
    process: subprocess.Popen
    grpc_port: int
    metrics_port: int
    log_path: Path

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    @property
    def metrics_url(self) -> str:
        return f"http://127.0.0.1:{self.metrics_port}/metrics"

    def log_tail(self, chars: int = 4000) -> str:
        return self.log_path.read_text(errors="replace")[-chars:]


def start_server(tmp_dir: Path, *args: str, env: dict[str, str] | None = None,
                 wait_for: str = "", timeout: float = 240.0, client_credentials=None) -> RunningServer:
    """Start a server and wait until health of `wait_for` ("" = overall) is SERVING."""
    from slatewise_client import SlateClient

    grpc_port, metrics_port = free_port(), free_port()
    log_path = tmp_dir / f"server-{grpc_port}.log"
    cmd = [sys.executable, "-m", "slatewise", "serve", "--host", "127.0.0.1",
           "--metrics-host", "127.0.0.1", "--grpc-port", str(grpc_port),
           "--metrics-port", str(metrics_port), *args]
    proc = subprocess.Popen(cmd, stdout=log_path.open("w"), stderr=subprocess.STDOUT,
                            env={**os.environ, **(env or {})}, cwd=REPO)
    server = RunningServer(proc, grpc_port, metrics_port, log_path)
    deadline = time.monotonic() + timeout
    with SlateClient(server.target, credentials=client_credentials) as client:
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"server exited with {proc.returncode}:\n{server.log_tail()}")
            try:
                if client.health(wait_for, deadline=2.0) == "SERVING":
                    return server
            except Exception:  # noqa: BLE001 - not up yet
                pass
            time.sleep(0.5)
    stop_server(server)
    raise TimeoutError(f"server not SERVING after {timeout}s:\n{server.log_tail()}")


def stop_server(server: RunningServer, timeout: float = 60.0) -> int:
    if server.process.poll() is None:
        server.process.terminate()
        try:
            server.process.wait(timeout)
        except subprocess.TimeoutExpired:
            server.process.kill()
            server.process.wait()
    return server.process.returncode


@pytest.fixture(scope="session")
def pointwise_server(tmp_path_factory) -> Iterator[RunningServer]:
    """A server without the model path: fast to start, for API tests."""
    server = start_server(tmp_path_factory.mktemp("pointwise"), "--model", "")
    yield server
    stop_server(server)


@pytest.fixture(scope="session")
def model_server(tmp_path_factory) -> Iterator[RunningServer]:
    """A server with the real vLLM engine (CPU build) and the default model."""
    server = start_server(tmp_path_factory.mktemp("model"), "--shadow-rate", "1",
                          wait_for="slatewise.v1.Model", timeout=400)
    yield server
    stop_server(server)
