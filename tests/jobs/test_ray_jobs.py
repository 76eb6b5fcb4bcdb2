"""jobs/encode.py submitted through the Ray Jobs API to a real Ray head started with `ray start --head`."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from _cases import synthetic_archive
from _servers import free_port
from slidegrid.io.grids import MANIFEST_NAME, grid_uri, read_grid
from slidegrid.io.manifest import read_manifest

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def ray_head(tmp_path_factory):
    """A Ray head in its own process group on 127.0.0.1; stopped by signalling that group (never `ray stop`)."""
    from ray.job_submission import JobSubmissionClient

    tmp = tmp_path_factory.mktemp("head")
    gcs, dash = free_port(), free_port()
    # Every port the head opens is a free one: the session's embedded Ray (other tests) already holds the
    # defaults (e.g. the dashboard agent's 52365), and a head whose agent cannot bind never accepts jobs.
    agent_ports = [f"--{name}={free_port()}" for name in (
        "dashboard-agent-listen-port", "dashboard-agent-grpc-port", "runtime-env-agent-port",
        "metrics-export-port", "ray-client-server-port", "node-manager-port", "object-manager-port")]
    # The head (and the job drivers it spawns) run this environment's Python, as a cluster's image would.
    venv_bin = str(Path(sys.executable).parent)
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", "PATH": venv_bin + os.pathsep + os.environ.get("PATH", "")}
    env.pop("RAY_ADDRESS", None)
    ray_bin = str(Path(venv_bin) / "ray")
    head = subprocess.Popen([ray_bin, "start", "--head", "--block", f"--port={gcs}", "--node-ip-address=127.0.0.1",
                             "--dashboard-host=127.0.0.1", f"--dashboard-port={dash}", "--num-cpus=2",
                             "--include-dashboard=true", f"--temp-dir={tmp}/ray", *agent_ports],
                            env=env, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{dash}"
    client = None
    for _ in range(120):
        try:
            client = JobSubmissionClient(url)
            client.list_jobs()
            break
        except Exception:
            client = None
            time.sleep(1)
    if client is None:
        os.killpg(head.pid, signal.SIGKILL)
        pytest.fail("the Ray head's Jobs API did not come up")
    yield client
    os.killpg(head.pid, signal.SIGTERM)
    try:
        # `ray start --block` spends ~30 s in an orderly shutdown on SIGTERM; the test's head keeps nothing.
        head.wait(timeout=5)
    except subprocess.TimeoutExpired:
        os.killpg(head.pid, signal.SIGKILL)
        head.wait()


def _submit(client, entrypoint: str, within: float = 120) -> str:
    """Submit, retrying while the head's job agent is still starting (the HTTP API answers before it)."""
    deadline = time.time() + within
    while True:
        try:
            return client.submit_job(entrypoint=entrypoint, runtime_env=RUNTIME_ENV)
        except RuntimeError as exc:
            if "No available agent" not in str(exc) or time.time() > deadline:
                raise
            time.sleep(1)


def _wait(client, job_id: str, timeout: float = 300):
    from ray.job_submission import JobStatus

    deadline = time.time() + timeout
    while time.time() < deadline:
        status = client.get_job_status(job_id)
        if status in (JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.STOPPED):
            return status
        time.sleep(1)
    raise TimeoutError(f"job {job_id} still running")


RUNTIME_ENV = {"working_dir": str(REPO), "excludes": [".venv", ".git", "tests", "*.egg-info", "__pycache__"],
               "env_vars": {"RAY_AUTH_MODE": "disabled"}}


@pytest.mark.slow
def test_encode_job_submitted_to_a_ray_head(ray_head, tmp_path):
    from ray.job_submission import JobStatus

    archive = synthetic_archive(tmp_path / "archive", "j", 2, 1024, seed=70)
    out = tmp_path / "grids"
    job = _submit(ray_head, f"python jobs/encode.py {archive} --out {out} --tile-size 128 --no-mlflow --no-progress")
    status = _wait(ray_head, job)
    logs = ray_head.get_job_logs(job)
    assert status == JobStatus.SUCCEEDED, logs[-3000:]
    assert "2 ok" in logs and f"grids: {out}" in logs
    manifest = read_manifest(str(out / MANIFEST_NAME))
    assert {k: v["status"] for k, v in manifest.items()} == {"j0": "ok", "j1": "ok"}
    for sid in ("j0", "j1"):
        grid = read_grid(grid_uri(str(out), sid))
        assert len(grid.row) == manifest[sid]["tiles"] > 0


@pytest.mark.slow
def test_bad_archive_fails_with_the_error_in_the_job_logs(ray_head, tmp_path):
    from ray.job_submission import JobStatus

    missing = tmp_path / "no-such-archive"
    job = _submit(ray_head, f"python jobs/encode.py {missing} --out {tmp_path / 'g'} --no-mlflow")
    assert _wait(ray_head, job) == JobStatus.FAILED
    logs = ray_head.get_job_logs(job)
    assert f"error: {missing}: no such directory" in logs
