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
    from ..train.segmentation.fit import run_train_seg, summary

    cfg = args.options.build(args)
    report = run_train_seg(cfg)
    for row in summary(report):
        print(f"member {row['member']} (validated on fold {row['val_fold']}): best epoch {row['epoch']}, "
              f"val_loss {row['val_loss']:.4f}, val_dice {row['val_dice']:.4f}; encoder weights "
              f"{row['encoder_weights']}")
    print(f"ensemble: {report.checkpoint}")
    print(f"model: {report.model_uri}")
    return 0


# The members' recipes live with the segmentation models (torch): read for --help only.
def _config():
    from ..train.segmentation import config

    return config


def _recipes(name: str) -> str:
    return _config().recipe_defaults(name)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train-seg", help="train tumour segmentation members / an ensemble on annotated slides",
                       description="Patches streamed from slides + annotations (Ray Data), one Ray Train run per "
                       "member, ensemble members on different folds in parallel (Ray Tune), tracked and "
                       "registered in MLflow. Writes OUT/ensemble.pt.")
    o = ConfigOptions(p, "slidegrid.train.segmentation.config:SegTrainConfig")
    o.add("--cohort", required=True, help="cohort table with slide_id, uri, fold and `annotation`")
    o.add("--out", required=True, help="output folder (checkpoints, ensemble.pt, MLflow store)")
    o.add("--model", help=lambda: " | ".join(_config().SEG_MODELS))
    o.add("--members", convert=comma_list, help="ensemble members, comma-separated (default: the paper's "
          "unet-densenet121,unet-inceptionresnetv2,deeplabv3plus-xception), one fold each")
    o.add("--epochs", type=int)
    # Unset recipe flags take each member's paper recipe (seg_config.SEG_RECIPES); given ones are recorded.
    o.add("--loss", help=lambda: "hybrid: DigiPathAI's CE + Dice; bce: binary "
          f"cross-entropy on the tumour channel (recipes: {_recipes('loss')})")
    o.add("--lr", type=float, help=lambda: f"Adam learning rate (recipes: {_recipes('lr')})")
    o.add("--l2", type=float, help=lambda: f"lambda of the L2 penalty on convolution kernels (recipes: "
          f"{_recipes('l2')})")
    o.add("--lr-step", type=int, help=lambda: f"epochs between LR decays, 0: none (recipes: {_recipes('lr_step')})")
    o.add("--lr-gamma", type=float, help=lambda: f"factor of each LR decay (recipes: {_recipes('lr_gamma')})")
    o.add("--freeze-epochs", type=int, help=lambda: "epochs a pretrained encoder stays frozen; a randomly "
          f"initialised one never is (recipes: {_recipes('freeze_epochs')})")
    o.add("--patience", type=int, help="early stopping patience on val loss (0: off)")
    o.add("--batch-size", type=int, help=lambda: f"recipes: {_recipes('batch_size')}")
    o.add("--patch-size", type=int, help=lambda: f"training patch side in px (recipes: {_recipes('patch_size')}; "
          f"--tiny at most {_config().TINY_PATCH})")
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
