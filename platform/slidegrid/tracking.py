"""MLflow tracking: the embedded SQLite store by default, a server when given; never any credential."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import asdict
from typing import TYPE_CHECKING, Any

from .io.storage import is_remote, redact

if TYPE_CHECKING:
    from .encode import EncodeConfig
    from .io.manifest import SlideResult

log = logging.getLogger(__name__)
DEFAULT_DIRNAME = "mlflow"
# The user's setting, read before anything here calls mlflow.set_tracking_uri (which writes the same variable,
# and would otherwise leak one run's store into the next run of the same process).
_USER_TRACKING_URI = os.environ.get("MLFLOW_TRACKING_URI")


def resolve_tracking_uri(explicit: str | None, out: str) -> str:
    """--tracking-uri, else MLFLOW_TRACKING_URI, else SQLite under the output dir (./slidegrid-mlflow if remote)."""
    if explicit:
        return explicit
    if _USER_TRACKING_URI:
        return _USER_TRACKING_URI
    base = os.path.abspath("slidegrid-mlflow") if is_remote(out) else os.path.join(os.path.abspath(out),
                                                                                      DEFAULT_DIRNAME)
    os.makedirs(base, exist_ok=True)
    return f"sqlite:///{os.path.join(base, 'mlflow.db')}"


def use_experiment(name: str, tracking_uri: str) -> None:
    """Point MLflow at a store and experiment; a local SQLite store keeps its artifacts beside the database
    (MLflow's default would be ./mlruns under whatever folder the command runs in)."""
    import mlflow

    mlflow.set_tracking_uri(tracking_uri)
    if mlflow.get_experiment_by_name(name) is None and tracking_uri.startswith("sqlite:///"):
        db = tracking_uri[len("sqlite:///"):]
        mlflow.create_experiment(name, artifact_location=os.path.join(os.path.dirname(db), "artifacts"))
    mlflow.set_experiment(name)


def safe_params(params: Mapping[str, Any]) -> dict[str, str]:
    """Flatten params for MLflow with secrets redacted and values cut to MLflow's length limit."""
    flat: dict[str, str] = {}
    for k, v in redact(params).items():
        if isinstance(v, Mapping):
            for kk, vv in v.items():
                flat[f"{k}.{kk}"] = str(vv)[:6000]
        else:
            flat[k] = str(v)[:6000]
    return flat


def log_history(history: list[Mapping[str, Any]]) -> None:
    """Every epoch's numeric metrics to the active MLflow run, at step = epoch (NaN/inf skipped)."""
    import math

    import mlflow

    for row in history:
        mlflow.log_metrics({k: float(v) for k, v in row.items()
                            if isinstance(v, (int, float)) and not isinstance(v, bool) and k != "epoch"
                            and math.isfinite(v)}, step=int(row.get("epoch", 0)))


@contextmanager
def tracked_run(experiment: str, run_name: str, out: str, tracking_uri: str | None, params: Mapping[str, Any],
                tags: Mapping[str, str] | None = None, parent_run_id: str | None = None) -> Iterator[Any]:
    """The one way every job opens its MLflow run: the store (resolve_tracking_uri), the experiment, the run
    (nested under `parent_run_id` when given), its params (safe_params) and tags; yields the active run.
    What a job logs inside is its own (metrics, artifacts, a registered model)."""
    import mlflow

    use_experiment(experiment, resolve_tracking_uri(tracking_uri, out))
    with mlflow.start_run(run_name=run_name, nested=parent_run_id is not None, parent_run_id=parent_run_id) as run:
        mlflow.log_params(safe_params(params))
        if tags:
            mlflow.set_tags(dict(tags))
        yield run


def log_encode_run(config: EncodeConfig, results: list[SlideResult], tiles: int, seconds: float,
                   manifest_uri: str) -> str | None:
    """One MLflow run per encode: settings, throughput, outcome counts and the manifest as an artifact."""
    import tempfile

    import mlflow

    from .io.manifest import read_manifest, summarize

    counts = summarize(results)
    params = {k: v for k, v in asdict(config).items() if k not in ("progress",)}
    with tracked_run("slidegrid-encode", f"encode-{config.encoder}", config.out, config.tracking_uri, params) as run:
        mlflow.log_metrics({"tiles": tiles, "seconds": seconds, "tiles_per_s": tiles / seconds if seconds else 0.0,
                            **{f"slides_{k}": v for k, v in counts.items() if k != "tiles"}})
        rows = read_manifest(manifest_uri, config.storage_options)
        with tempfile.TemporaryDirectory() as d:
            import pyarrow as pa
            import pyarrow.parquet as pq

            path = os.path.join(d, "manifest.parquet")
            pq.write_table(pa.Table.from_pylist(list(rows.values())), path)
            mlflow.log_artifact(path)
    print(f"mlflow: run {run.info.run_id} in {mlflow.get_tracking_uri()}")
    return run.info.run_id


def log_registered_model(model: Any, name: str, signature: Any = None) -> str:
    """Log a torch model to the active MLflow run, register it under `name`, and return its URI.

    Pickled, not MLflow's default pt2 export: an exported graph is traced at one input size, while grids and
    slides come in every size. Loading needs slidegrid importable, where the model classes live.
    """
    import mlflow
    import torch

    info = mlflow.pytorch.log_model(model, name="model", signature=signature, registered_model_name=name,
                                    serialization_format="pickle",
                                    pip_requirements=[f"torch=={torch.__version__.split('+')[0]}", "slidegrid"])
    version = getattr(info, "registered_model_version", None)
    return f"models:/{name}/{version}" if version else info.model_uri


def log_analysis_run(experiment: str, run_name: str, out: str, tracking_uri: str | None,
                     params: Mapping[str, Any], metrics: Mapping[str, float], tables: Mapping[str, str]
                     ) -> tuple[str, str]:
    """One MLflow run: params, metrics and the tables as artifacts; returns (run id, tracking URI).

    The store is --tracking-uri, else MLFLOW_TRACKING_URI, else SQLite under `out` (resolve_tracking_uri).
    """
    import mlflow

    with tracked_run(experiment, run_name, out, tracking_uri, params) as run:
        mlflow.log_metrics(dict(metrics))
        for name, text in tables.items():
            mlflow.log_text(text, name)
    return run.info.run_id, mlflow.get_tracking_uri()
