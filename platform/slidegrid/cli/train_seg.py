"""`slidegrid train-seg`: its flags and the call into the library."""

from __future__ import annotations

import argparse

from .options import (
    ConfigOptions,
    add_placement,
    add_storage,
    comma_list,
)


def _train_seg(args: argparse.Namespace) -> int:
    from ..train.segmentation.fit import summary, train_segmentation

    cfg = args.options.build(args)
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
    o = ConfigOptions(p, "slidegrid.train.segmentation.config:SegTrainConfig")
    o.add("--cohort", required=True, help="cohort table with slide_id, uri, fold and `annotation`")
    o.add("--out", required=True, help="output folder (checkpoints, ensemble.pt, MLflow store)")
    o.add("--model", help=" | ".join(SEG_MODELS))
    o.add("--members", convert=comma_list, help="ensemble members, comma-separated (default: the paper's "
          "unet-densenet121,unet-inceptionresnetv2,deeplabv3plus-xception), one fold each")
    o.add("--epochs", type=int)
    # Unset recipe flags take each member's paper recipe (seg_config.SEG_RECIPES); given ones are recorded.
    o.add("--loss", choices=LOSSES, help="hybrid: DigiPathAI's CE + Dice; bce: binary cross-entropy on the "
          f"tumour channel (recipes: {recipe_defaults('loss')})")
    o.add("--lr", type=float, help=f"Adam learning rate (recipes: {recipe_defaults('lr')})")
    o.add("--l2", type=float, help="lambda of the L2 penalty on convolution kernels (recipes: "
          f"{recipe_defaults('l2')})")
    o.add("--lr-step", type=int, help=f"epochs between LR decays, 0: none (recipes: {recipe_defaults('lr_step')})")
    o.add("--lr-gamma", type=float)
    o.add("--freeze-epochs", type=int, help="epochs a pretrained encoder stays frozen; a randomly initialised one "
          f"never is (recipes: {recipe_defaults('freeze_epochs')})")
    o.add("--patience", type=int, help="early stopping patience on val loss (0: off)")
    o.add("--batch-size", type=int, help=f"recipes: {recipe_defaults('batch_size')}")
    o.add("--patch-size", type=int, help=f"training patch side in px (recipes: {recipe_defaults('patch_size')}; "
          f"--tiny at most {TINY_PATCH})")
    o.add("--mpp", type=float, help="patch resolution in µm/px (default %(default)s)")
    o.add("--mpps", convert=lambda text: tuple(float(m) for m in comma_list(text)),
          help="MRN resolutions, comma-separated (default mpp x 1,2,4,8)")
    o.add("--patches-per-slide", type=int, help="training patches per slide and epoch")
    o.add("--val-patches-per-slide", type=int)
    o.add("--encoder", help="encoder override for U-Net/DeepLab members (smp/timm name)")
    o.add("--encoder-depth", type=int, help="encoder stages, 3..5")
    o.add("--encoder-weights", help="ImageNet encoder weights: auto (default: the local Hugging Face / torch-hub "
          "cache, never downloaded; else random init and a warning), random, FILE (.safetensors/.pth state dict), "
          "or MEMBER=FILE,... per ensemble member")
    o.add("--tiny", action="store_true", help="small members for CPU smoke runs and tests")
    o.add("--no-augment", field="augment", action="store_false", help="no flips/rotations/blur/colour jitter")
    o.add("--val-fold", type=int, help="single member: fold held out (default lowest)")
    o.add("--storage", help="Ray Train checkpoint storage (default OUT/checkpoints)")
    o.add("--name", help="run name; the same name and storage resume a run")
    o.add("--tracking-uri", help="MLflow tracking URI (default: SQLite under --out)")
    o.add("--register-as", help="MLflow registered model name")
    o.add("--seed", type=int)
    add_storage(o)
    add_placement(o, train=True, concurrent=True)
    p.set_defaults(func=_train_seg)
