"""`slidegrid train-seg`: its flags and the call into the library."""

from __future__ import annotations

import argparse

from ..io.storage import parse_storage_options
from .options import (
    add_placement,
    add_storage,
    given,
)


def _train_seg(args: argparse.Namespace) -> int:
    from ..train.segmentation.config import SegTrainConfig
    from ..train.segmentation.fit import summary, train_segmentation

    values = given(args, "cohort", "out", "model", "epochs", "loss", "lr", "l2", "lr_step", "lr_gamma",
                    "freeze_epochs", "patience", "batch_size", "patch_size", "mpp", "patches_per_slide",
                    "val_patches_per_slide", "encoder", "encoder_depth", "encoder_weights", "val_fold", "workers",
                    "gpus_per_worker", "storage", "name", "tracking_uri", "register_as", "seed", "cpus_per_worker",
                    "data_cpus", "start_timeout_s", "max_concurrent")
    if args.members:
        values["members"] = tuple(m.strip() for m in args.members.split(",") if m.strip())
    if args.mpps:
        values["mpps"] = tuple(float(m) for m in args.mpps.split(","))
    cfg = SegTrainConfig(**values, tiny=args.tiny, augment=not args.no_augment,
                         storage_options=parse_storage_options(args.storage_options))
    report = train_segmentation(cfg)
    for row in summary(report):
        print(f"member {row['member']} (validated on fold {row['val_fold']}): best epoch {row['epoch']}, "
              f"val_loss {row['val_loss']:.4f}, val_dice {row['val_dice']:.4f}; encoder weights "
              f"{row['encoder_weights']}")
    print(f"ensemble: {report.checkpoint}")
    print(f"model: {report.model_uri}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    from ..train.segmentation.config import LOSSES, SEG_MODELS, TINY_PATCH, recipe_defaults

    p = sub.add_parser("train-seg", help="train tumour segmentation members / an ensemble on annotated slides",
                       description="Patches streamed from slides + annotations (Ray Data), one Ray Train run per "
                       "member, ensemble members on different folds in parallel (Ray Tune), tracked and "
                       "registered in MLflow. Writes OUT/ensemble.pt.")
    p.add_argument("--cohort", required=True, help="cohort table with slide_id, uri, fold and `annotation`")
    p.add_argument("--out", required=True, help="output folder (checkpoints, ensemble.pt, MLflow store)")
    p.add_argument("--model", default="ensemble", help=" | ".join(SEG_MODELS))
    p.add_argument("--members", default=None, help="ensemble members, comma-separated (default: the paper's "
                   "unet-densenet121,unet-inceptionresnetv2,deeplabv3plus-xception), one fold each")
    p.add_argument("--epochs", type=int, default=None)
    # Unset recipe flags take each member's paper recipe (seg_config.SEG_RECIPES); given ones are recorded.
    p.add_argument("--loss", default=None, choices=LOSSES, help="hybrid: DigiPathAI's CE + Dice; bce: "
                   f"binary cross-entropy on the tumour channel (recipes: {recipe_defaults('loss')})")
    p.add_argument("--lr", type=float, default=None, help=f"Adam learning rate (recipes: {recipe_defaults('lr')})")
    p.add_argument("--l2", type=float, default=None, help="lambda of the L2 penalty on convolution kernels "
                   f"(recipes: {recipe_defaults('l2')})")
    p.add_argument("--lr-step", type=int, default=None, help="epochs between LR decays, 0: none (recipes: "
                   f"{recipe_defaults('lr_step')})")
    p.add_argument("--lr-gamma", type=float, default=None)
    p.add_argument("--freeze-epochs", type=int, default=None, help="epochs a pretrained encoder stays frozen; a "
                   f"randomly initialised one never is (recipes: {recipe_defaults('freeze_epochs')})")
    p.add_argument("--patience", type=int, default=None, help="early stopping patience on val loss (0: off)")
    p.add_argument("--batch-size", type=int, default=None, help=f"recipes: {recipe_defaults('batch_size')}")
    p.add_argument("--patch-size", type=int, default=None, help="training patch side in px (recipes: "
                   f"{recipe_defaults('patch_size')}; --tiny at most {TINY_PATCH})")
    p.add_argument("--mpp", type=float, default=None, help="patch resolution in µm/px (default 0.5)")
    p.add_argument("--mpps", default=None, help="MRN resolutions, comma-separated (default mpp x 1,2,4,8)")
    p.add_argument("--patches-per-slide", type=int, default=None, help="training patches per slide and epoch")
    p.add_argument("--val-patches-per-slide", type=int, default=None)
    p.add_argument("--encoder", default=None, help="encoder override for U-Net/DeepLab members (smp/timm name)")
    p.add_argument("--encoder-depth", type=int, default=None, help="encoder stages, 3..5")
    p.add_argument("--encoder-weights", default=None, help="ImageNet encoder weights: auto (default: the local "
                   "Hugging Face / torch-hub cache, never downloaded; else random init and a warning), random, FILE "
                   "(.safetensors/.pth state dict), or MEMBER=FILE,... per ensemble member")
    p.add_argument("--tiny", action="store_true", help="small members for CPU smoke runs and tests")
    p.add_argument("--no-augment", action="store_true", help="no flips/rotations/blur/colour jitter")
    p.add_argument("--val-fold", type=int, default=None, help="single member: fold held out (default lowest)")
    p.add_argument("--storage", default=None, help="Ray Train checkpoint storage (default OUT/checkpoints)")
    p.add_argument("--name", default=None, help="run name; the same name and storage resume a run")
    p.add_argument("--tracking-uri", default=None, help="MLflow tracking URI (default: SQLite under --out)")
    p.add_argument("--register-as", default=None, help="MLflow registered model name")
    p.add_argument("--seed", type=int, default=None)
    add_storage(p)
    add_placement(p, train=True, concurrent=True)
    p.set_defaults(func=_train_seg)
