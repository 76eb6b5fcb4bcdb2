"""Real servers for tests (moto, MLflow): a free port on 127.0.0.1 and a process that is up before use."""

from __future__ import annotations

import contextlib
import socket
import subprocess
import time
import urllib.request
from collections.abc import Iterator, Mapping

import pytest


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def serving(cmd: list[str], health_url: str, env: Mapping[str, str] | None = None,
            within: float = 60) -> Iterator[subprocess.Popen]:
    """Run a server until the block ends; fail the test if `health_url` does not answer `within` seconds."""
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + within
    while True:
        try:
            urllib.request.urlopen(health_url, timeout=1)
            break
        except OSError:
            if proc.poll() is not None or time.time() > deadline:
                proc.kill()
                pytest.fail(f"{cmd[:3]} did not serve {health_url}")
            time.sleep(0.2)
    try:
        yield proc
    finally:
        proc.terminate()
        proc.wait(timeout=30)
