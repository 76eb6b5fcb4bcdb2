"""MLflow for trained tile encoders: params, per-epoch metrics, the encoder file, and the embedder (with its
preprocessing) logged and registered so `slidegrid encode --weights models:/NAME/VERSION` can load it."""

from __future__ import annotations

from typing import Any

from ...tracking import log_history, log_registered_model, tracked_run
from .config import EncoderTrainConfig


def log_encoder_run(cfg: EncoderTrainConfig, history: list[dict[str, Any]], method, encoder_file: str
                    ) -> tuple[str, str]:
    """One MLflow run per trained encoder; returns (run id, registered model URI)."""
    import mlflow
    import torch
    from mlflow.models import infer_signature

    from ...encoders.learned import encoder_meta

    name = cfg.register_as or f"slidegrid-encoder-{cfg.method}"
    embedder = method.embedder(encoder_meta(method, cfg.mpp)).eval()
    tags = {"slidegrid.method": cfg.method, "slidegrid.code_size": str(cfg.code_size),
            "slidegrid.tile_size": str(cfg.tile_size), "slidegrid.mpp": str(cfg.mpp)}
    with tracked_run("slidegrid-encoders", f"encoder-{cfg.method}", cfg.out, cfg.tracking_uri, cfg.to_dict(),
                     tags) as run:
        log_history(history)
        mlflow.log_artifact(encoder_file)
        example = torch.zeros((1, 3, cfg.tile_size, cfg.tile_size))
        with torch.no_grad():
            signature = infer_signature(example.numpy(), embedder(example).numpy())
        uri = log_registered_model(embedder, name, signature)
    print(f"mlflow: run {run.info.run_id}, model {uri} ({mlflow.get_tracking_uri()})")
    return run.info.run_id, uri
