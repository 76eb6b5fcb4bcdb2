"""Logging to a real MLflow tracking server on 127.0.0.1 (not the embedded SQLite store)."""

from __future__ import annotations

import sys

import pytest

from _servers import free_port, serving
from slidegrid.encode import EncodeConfig, run_encode
from slidegrid.geometry.tiling import GridSpec
from slidegrid.synth.slides import SyntheticSpec, write_synthetic_slide


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory):
    root = tmp_path_factory.mktemp("mlflow")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with serving([sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port),
                  "--backend-store-uri", f"sqlite:///{root}/server.db",
                  "--artifacts-destination", str(root / "artifacts"), "--workers", "1"], url + "/health"):
        yield url


def test_encode_run_lands_on_the_server(tmp_path, mlflow_server, ray_local):
    from mlflow.tracking import MlflowClient

    archive = tmp_path / "a"
    archive.mkdir()
    write_synthetic_slide(str(archive / "m.tiff"), SyntheticSpec(width=1024, height=1024, seed=8))
    report = run_encode(EncodeConfig(input=str(archive), out=str(tmp_path / "g"), progress=False,
                                     tracking_uri=mlflow_server,
                                     storage_options={"key": "AKIASECRETKEY", "secret": "do-not-log-me"},
                                     grid=GridSpec(tile_size=128)))
    client = MlflowClient(tracking_uri=mlflow_server)
    run = client.get_run(report.mlflow_run_id)
    assert run.data.metrics["slides_ok"] == 1 and run.data.metrics["tiles"] > 0
    assert "do-not-log-me" not in str(run.data.params) and "AKIASECRETKEY" not in str(run.data.params)
    assert [a.path for a in client.list_artifacts(run.info.run_id)] == ["manifest.parquet"]
