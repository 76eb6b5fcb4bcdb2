"""Logging to a real MLflow tracking server on 127.0.0.1 (not the embedded SQLite store)."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
import urllib.request

import pytest

from slidegrid.encode import EncodeConfig, run_encode
from slidegrid.synthetic import SyntheticSpec, write_synthetic_slide


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory):
    root = tmp_path_factory.mktemp("mlflow")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port),
                             "--backend-store-uri", f"sqlite:///{root}/server.db",
                             "--artifacts-destination", str(root / "artifacts"), "--workers", "1"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    for _ in range(120):
        try:
            urllib.request.urlopen(url + "/health", timeout=1)
            break
        except Exception:
            time.sleep(0.5)
    else:
        proc.kill()
        pytest.fail("mlflow server did not become healthy")
    yield url
    proc.terminate()
    proc.wait(timeout=30)


def test_encode_run_lands_on_the_server(tmp_path, mlflow_server, ray_local):
    from mlflow.tracking import MlflowClient

    archive = tmp_path / "a"
    archive.mkdir()
    write_synthetic_slide(str(archive / "m.tiff"), SyntheticSpec(width=1024, height=1024, seed=8))
    report = run_encode(EncodeConfig(input=str(archive), out=str(tmp_path / "g"), tile_size=128, progress=False,
                                     tracking_uri=mlflow_server,
                                     storage_options={"key": "AKIASECRETKEY", "secret": "do-not-log-me"}))
    client = MlflowClient(tracking_uri=mlflow_server)
    run = client.get_run(report.mlflow_run_id)
    assert run.data.metrics["slides_ok"] == 1 and run.data.metrics["tiles"] > 0
    assert "do-not-log-me" not in str(run.data.params) and "AKIASECRETKEY" not in str(run.data.params)
    assert [a.path for a in client.list_artifacts(run.info.run_id)] == ["manifest.parquet"]
