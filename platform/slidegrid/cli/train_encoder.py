"""`slidegrid train-encoder`: its flags and the call into the library."""

from __future__ import annotations

import argparse

from .options import (
    ConfigOptions,
    add_placement,
    add_storage,
)


def _train_encoder(args: argparse.Namespace) -> int:
    from ..train.encoder.fit import run_train_encoder

    cfg = args.options.build(args)
    result = run_train_encoder(cfg)
    first, last = result.history[0], result.history[-1]
    print(f"trained the {cfg.method} encoder (C={cfg.code_size}) for {len(result.history)} epochs: loss "
          f"{first['train_loss']:.4g} -> {last['train_loss']:.4g}, {last['tiles_per_s']:.1f} tiles/s")
    if "val_loss" in last:
        kept = (f"epoch {result.best_epoch + 1} (lowest validation loss "
                f"{result.history[result.best_epoch]['val_loss']:.4g})" if result.best_epoch is not None
                else "the last epoch")
        print(f"validation on split {cfg.val_split!r}: loss {first['val_loss']:.4g} -> {last['val_loss']:.4g}; "
              f"kept {kept}")
    print(f"encoder: {result.encoder_file}" + (f"  model: {result.model_uri}" if result.model_uri else ""))
    print(f"encode with: slidegrid encode INPUT --out GRIDS --encoder {cfg.method} --weights "
          f"{result.model_uri or result.encoder_file} --tile-size {cfg.tile_size} --mpp {cfg.mpp:g}")
    return 0


def _lr_help() -> str:
    """--lr's help from the methods' cards (read for --help only: the cards import torch)."""
    from ..encoders.learned import METHODS, method_class

    rates = ", ".join(f"{m} {method_class(m).default_lr:g}" for m in METHODS)
    return f"Adam step (default: the method's own: {rates})"


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train-encoder", help="learn a tile encoder from the archive (VAE, contrastive, BiGAN, "
                       "supervised; Ray Train, MLflow)",
                       description="NIC's unsupervised encoders (VAE, contrastive Siamese, BiGAN) or RAN's "
                       "supervised tile classifier, trained with Ray Train on tiles streamed from the slides by "
                       "Ray Data; writes OUT/encoder-METHOD.pt and registers it in MLflow. Use it with "
                       "`slidegrid encode --encoder METHOD --weights FILE|models:/NAME/VERSION`.")
    o = ConfigOptions(p, "slidegrid.train.encoder.config:EncoderTrainConfig")
    o.add("--input", required=True, help="archive: folder, glob, s3:// prefix or cohort table (supervised: a "
          "cohort with an `annotation` column); or, with --train-split, a labelled patch set: "
          "ROOT/<split>/<class>/*.png|jpg or a path,label,split CSV (needs --mpp)")
    from ..encoders.learned import METHODS

    o.add("--method", required=True, choices=METHODS)
    o.add("--out", required=True, help="output folder (encoder file, checkpoints, MLflow store)")
    o.add("--code-size", type=int, help="embedding size C (NIC: 128)")
    o.add("--tile-size", field="grid.tile_size", type=int, help="tile side in pixels at --mpp (default: NIC's 128 on an archive, the "
          "patches' side on a patch set)")
    o.add("--mpp", field="grid.mpp", type=float, help="µm/px of the tiles (default 0.5 on an archive); a patch set's pixel size, "
          "required there (PatchCamelyon: 0.97)")
    o.add("--train-split", help="patch set input: the split to train on (PCam: train); self-supervised methods "
          "ignore its labels, supervised uses them")
    o.add("--val-split", help="patch set input: the split scored every epoch (PCam: valid; never the test "
          "split); the epoch of lowest validation loss is kept (BiGAN: the last)")
    o.add("--val-tiles", type=int, help="validation patches (contrastive: pairs) per epoch")
    o.add("--crop-min", type=int, help="contrastive on patches: crops of a pair have sides drawn from [CROP_MIN, "
          "tile size] px (default 2/3 of the tile size: 64 of 96)")
    o.add("--width", type=int, help="channels of the first conv layer (doubling per layer)")
    o.add("--depth", type=int, help="stride-2 conv layers (tile size must divide by 2^depth)")
    o.add("--epochs", type=int)
    o.add("--tiles", type=int, help="training tiles (contrastive: pairs) per epoch")
    o.add("--batch-size", type=int)
    o.add("--lr", type=float, help=_lr_help)
    o.add("--gamma", type=float, help="VAE: weight of the KL term (NIC Eq. 3)")
    o.add("--no-augment", field="augment", action="store_false", help="no augmentation of single tiles "
          "(contrastive pairs are always augmented)")
    o.add("--min-tissue", field="grid.min_tissue", type=float, help="min tissue fraction of a training tile")
    o.add("--tissue-mpp", field="tissue.mpp", type=float, help="resolution of the tissue mask (µm/px)")
    o.add("--storage", help="checkpoint storage (default OUT/checkpoints)")
    o.add("--name", help="run name; the same name and storage resume a run")
    o.add("--tracking-uri", help="MLflow tracking URI (default: SQLite under --out)")
    o.add("--register-as", help="MLflow registered model name (default slidegrid-encoder-METHOD)")
    o.add("--no-mlflow", field="mlflow", action="store_false", help="do not track or register the run")
    o.add("--seed", type=int)
    add_storage(o)
    add_placement(o, train=True)
    p.set_defaults(func=_train_encoder)
