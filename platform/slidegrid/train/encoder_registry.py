"""MLflow for trained tile encoders: params, per-epoch metrics, the encoder file, and the embedder (with its
preprocessing) logged and registered so `slidegrid encode --weights models:/NAME/VERSION` can load it."""

from __future__ import annotations

from typing import Any

import numpy as np

from .encoder_config import EncoderTrainConfig
from .tracking import resolve_tracking_uri, safe_params, use_experiment


def log_encoder_run(cfg: EncoderTrainConfig, history: list[dict[str, Any]], method, encoder_file: str
                    ) -> tuple[str, str]:
    """One MLflow run per trained encoder; returns (run id, registered model URI)."""
    import mlflow
    import torch
    from mlflow.models import infer_signature

    from ..encoders.learned import encoder_meta

    use_experiment("slidegrid-encoders", resolve_tracking_uri(cfg.tracking_uri, cfg.out))
    name = cfg.register_as or f"slidegrid-encoder-{cfg.method}"
    embedder = method.embedder(encoder_meta(method, cfg.mpp)).eval()
    with mlflow.start_run(run_name=f"encoder-{cfg.method}") as run:
        mlflow.log_params(safe_params(cfg.to_dict()))
        mlflow.set_tags({"slidegrid.method": cfg.method, "slidegrid.code_size": str(cfg.code_size),
                         "slidegrid.tile_size": str(cfg.tile_size), "slidegrid.mpp": str(cfg.mpp)})
        for row in history:
            mlflow.log_metrics({k: float(v) for k, v in row.items() if k != "epoch" and isinstance(v, (int, float))
                                and np.isfinite(v)}, step=int(row["epoch"]))
        mlflow.log_artifact(encoder_file)
        example = torch.zeros((1, 3, cfg.tile_size, cfg.tile_size))
        with torch.no_grad():
            signature = infer_signature(example.numpy(), embedder(example).numpy())
        # pickle (like the aggregators): loading needs slidegrid importable, where the Embedder class lives.
        info = mlflow.pytorch.log_model(embedder, name="model", signature=signature, registered_model_name=name,
                                        serialization_format="pickle",
                                        pip_requirements=[f"torch=={torch.__version__.split('+')[0]}", "slidegrid"])
        version = getattr(info, "registered_model_version", None)
        uri = f"models:/{name}/{version}" if version else info.model_uri
    print(f"mlflow: run {run.info.run_id}, model {uri} ({mlflow.get_tracking_uri()})")
    return run.info.run_id, uri
