"""Shared fixtures: real sample slides, a real moto S3 server on 127.0.0.1, one local Ray per session."""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import pytest

from _servers import free_port
from slidegrid.runtime import local_ray_env

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
SAMPLE_DIR = SHARED_DATA / "slides"
EDGE_DIR = SHARED_DATA / "edge"
NO_SAMPLES = f"no sample slides in {SAMPLE_DIR} (see {SHARED_DATA / 'README.md'})"

# Tests run Ray without token auth (RAY-NOTES: on by default for local ray.init since 2.59).
os.environ.setdefault("RAY_AUTH_MODE", "disabled")
local_ray_env()  # every Ray the tests start (ray_local, Cluster nodes, subprocesses) polls as init_ray's does


def _sample_files() -> list[Path]:
    if not SAMPLE_DIR.is_dir():
        return []
    return sorted(p for p in SAMPLE_DIR.iterdir() if p.is_file() and not p.name.startswith(".")
                  and p.suffix.lower() != ".md")


def pytest_generate_tests(metafunc):
    """Tests taking `sample_slide` run once per file of ../shared/data/slides, so new samples need no code."""
    if "sample_slide" in metafunc.fixturenames:
        params = [pytest.param(p, id=p.name) for p in _sample_files()] or [
            pytest.param(None, id="no-samples", marks=pytest.mark.skip(reason=NO_SAMPLES))]
        metafunc.parametrize("sample_slide", params)


@pytest.fixture(scope="session")
def sample_slides() -> list[Path]:
    """All real sample slides at once (skips, saying where it looked, when there are none)."""
    files = _sample_files()
    if not files:
        pytest.skip(NO_SAMPLES)
    return files


_AWS_ENV = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION", "AWS_ENDPOINT_URL")


@pytest.fixture(scope="session")
def s3_server():
    """moto's S3 server on 127.0.0.1 with dummy credentials in the standard AWS environment variables."""
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    saved = {k: os.environ.get(k) for k in (*_AWS_ENV, "AWS_PROFILE", "AWS_SESSION_TOKEN")}
    # A developer's own profile or session token must not leak into (or break) requests to moto.
    os.environ.pop("AWS_PROFILE", None)
    os.environ.pop("AWS_SESSION_TOKEN", None)
    os.environ.update({"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                       "AWS_DEFAULT_REGION": "us-east-1", "AWS_ENDPOINT_URL": endpoint})
    yield endpoint
    server.stop()
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


@pytest.fixture
def s3_bucket(s3_server):
    """A fresh, empty bucket on the moto server."""
    import s3fs

    name = f"b-{uuid.uuid4().hex[:12]}"
    s3fs.S3FileSystem().mkdir(name)
    return name


@pytest.fixture
def s3_upload(s3_server):
    """`s3_upload(local_path, "bucket/key") -> "s3://bucket/key"`: put a file on the moto server with s3fs."""
    import s3fs

    fs = s3fs.S3FileSystem()

    def upload(local: str | Path, key: str) -> str:
        fs.put(str(local), key)
        return f"s3://{key}"

    return upload


@pytest.fixture(scope="session")
def ray_local(s3_server):
    """One local Ray for the session, with more logical CPUs than cores (RAY-NOTES: avoids starvation).

    It starts after the S3 fixture so its workers inherit the endpoint and credentials from the environment,
    as a user's workers do.
    """
    import ray

    if not ray.is_initialized():
        # address="local": our own Ray, never a cluster (or stale address) another process left on the machine.
        ray.init(address="local", num_cpus=4, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="session")
def edge_dir() -> Path:
    """The vendor edge-case files of ../shared/data/edge (skip when absent)."""
    if not EDGE_DIR.is_dir():
        pytest.skip(f"no edge-case files in {EDGE_DIR}")
    return EDGE_DIR
