"""`slidegrid train-encoder`: its flags and the call into the library."""

from __future__ import annotations

import argparse

from ..io.storage import parse_storage_options
from .options import (
    add_placement,
    add_storage,
    given,
)


def _train_encoder(args: argparse.Namespace) -> int:
    from ..train.encoder.config import EncoderTrainConfig
    from ..train.encoder.fit import fit_encoder

    cfg = EncoderTrainConfig(
        input=args.input, out=args.out, method=args.method, code_size=args.code_size, tile_size=args.tile_size,
        mpp=args.mpp, width=args.width, depth=args.depth, epochs=args.epochs, tiles=args.tiles,
        batch_size=args.batch_size, lr=args.lr, gamma=args.gamma, augment=not args.no_augment,
        min_tissue=args.min_tissue, tissue_mpp=args.tissue_mpp, cpus_per_worker=args.cpus_per_worker,
        storage=args.storage,
        **given(args, "workers", "gpus_per_worker", "data_cpus", "start_timeout_s"),
        name=args.name, tracking_uri=args.tracking_uri, register_as=args.register_as, mlflow=not args.no_mlflow,
        seed=args.seed, storage_options=parse_storage_options(args.storage_options) or {},
        train_split=args.train_split, val_split=args.val_split, val_tiles=args.val_tiles, crop_min=args.crop_min)
    result = fit_encoder(cfg)
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


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train-encoder", help="learn a tile encoder from the archive (VAE, contrastive, BiGAN, "
                       "supervised; Ray Train, MLflow)",
                       description="NIC's unsupervised encoders (VAE, contrastive Siamese, BiGAN) or RAN's "
                       "supervised tile classifier, trained with Ray Train on tiles streamed from the slides by "
                       "Ray Data; writes OUT/encoder-METHOD.pt and registers it in MLflow. Use it with "
                       "`slidegrid encode --encoder METHOD --weights FILE|models:/NAME/VERSION`.")
    p.add_argument("--input", required=True, help="archive: folder, glob, s3:// prefix or cohort table "
                   "(supervised: a cohort with an `annotation` column); or, with --train-split, a labelled patch "
                   "set: ROOT/<split>/<class>/*.png|jpg or a path,label,split CSV (needs --mpp)")
    from ..encoders.learned import METHODS

    p.add_argument("--method", required=True, choices=METHODS)
    p.add_argument("--out", required=True, help="output folder (encoder file, checkpoints, MLflow store)")
    p.add_argument("--code-size", type=int, default=128, help="embedding size C (NIC: 128)")
    p.add_argument("--tile-size", type=int, default=None, help="tile side in pixels at --mpp (default: NIC's 128 "
                   "on an archive, the patches' side on a patch set)")
    p.add_argument("--mpp", type=float, default=None, help="µm/px of the tiles (default 0.5 on an archive); a "
                   "patch set's pixel size, required there (PatchCamelyon: 0.97)")
    p.add_argument("--train-split", default=None, help="patch set input: the split to train on (PCam: train); "
                   "self-supervised methods ignore its labels, supervised uses them")
    p.add_argument("--val-split", default=None, help="patch set input: the split scored every epoch (PCam: "
                   "valid; never the test split); the epoch of lowest validation loss is kept (BiGAN: the last)")
    p.add_argument("--val-tiles", type=int, default=1024, help="validation patches (contrastive: pairs) per epoch")
    p.add_argument("--crop-min", type=int, default=None, help="contrastive on patches: crops of a pair have "
                   "sides drawn from [CROP_MIN, tile size] px (default 2/3 of the tile size: 64 of 96)")
    p.add_argument("--width", type=int, default=32, help="channels of the first conv layer (doubling per layer)")
    p.add_argument("--depth", type=int, default=4, help="stride-2 conv layers (tile size must divide by 2^depth)")
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--tiles", type=int, default=4096, help="training tiles (contrastive: pairs) per epoch")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=None, help="Adam step (default 1e-3; BiGAN 2e-4)")
    p.add_argument("--gamma", type=float, default=1.0, help="VAE: weight of the KL term (NIC Eq. 3)")
    p.add_argument("--no-augment", action="store_true", help="no augmentation of single tiles (contrastive "
                   "pairs are always augmented)")
    p.add_argument("--min-tissue", type=float, default=0.5, help="min tissue fraction of a training tile")
    p.add_argument("--tissue-mpp", type=float, default=8.0, help="resolution of the tissue mask (µm/px)")
    p.add_argument("--storage", default=None, help="checkpoint storage (default OUT/checkpoints)")
    p.add_argument("--name", default=None, help="run name; the same name and storage resume a run")
    p.add_argument("--tracking-uri", default=None, help="MLflow tracking URI (default: SQLite under --out)")
    p.add_argument("--register-as", default=None, help="MLflow registered model name "
                   "(default slidegrid-encoder-METHOD)")
    p.add_argument("--no-mlflow", action="store_true", help="do not track or register the run")
    p.add_argument("--seed", type=int, default=0)
    add_storage(p)
    add_placement(p, train=True)
    p.set_defaults(func=_train_encoder)
