"""`slidegrid tissue`: its flags and the call into the library."""

from __future__ import annotations

import argparse

from .options import (
    ConfigOptions,
    add_keep_ink,
    add_mpp_override,
    add_storage,
    job_argument,
)


def _tissue(args: argparse.Namespace) -> int:
    from ..geometry.tissue import tissue_mask
    from ..io.archive import safe_slide_id
    from ..io.storage import join
    from ..viz import overlay, save_png

    opts = args.slide.value(args, "storage_options")
    with args.slide.build(args) as s:
        mask = tissue_mask(s, args.tissue.build(args))
        thumb = s.thumbnail(max(args.overlay_mpp or mask.mpp, *s.mpp_xy))
    sid = safe_slide_id(args.uri)
    # --out may be a folder or an object-store prefix: save_png writes through storage.atomic_write.
    save_png(mask.mask.astype("uint8") * 255, join(args.out, f"{sid}_tissue_mask.png"), opts)
    shown = overlay(thumb, mask.mask)
    if mask.ink is not None and mask.ink.any():
        shown = overlay(shown, mask.ink, (255, 0, 255), 0.3)
    save_png(shown, join(args.out, f"{sid}_tissue_overlay.png"), opts)
    print(f"tissue fraction: {mask.fraction:.3f}, ink removed: {mask.ink_fraction:.3f} (mask "
          f"{mask.mask.shape[1]}x{mask.mask.shape[0]} at {mask.mpp:g} µm/px) -> {args.out}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("tissue", help="tissue mask of a slide (mask PNG + overlay PNG)",
                       description="Tissue mask of a slide (DigiPathAI's recipe with pen ink removed first): the mask "
                                   "PNG, and an overlay PNG with the tissue in green and the removed ink in magenta.")
    slide = ConfigOptions(p, "slidegrid.io.slides:open_slide", key="slide")
    tissue = ConfigOptions(p, "slidegrid.geometry.tissue:TissueConfig", key="tissue")
    slide.add("uri", help="slide path or URI")
    job_argument(p, "--out", required=True, help="output folder (or object-store prefix)")
    tissue.add("--mpp", type=float, help="mask resolution in µm/px (default %(default)s)")
    job_argument(p, "--overlay-mpp", type=float, default=None, help="overlay resolution in µm/px (default: --mpp)")
    add_keep_ink(tissue)
    add_storage(slide)
    add_mpp_override(slide)
    p.set_defaults(func=_tissue)
