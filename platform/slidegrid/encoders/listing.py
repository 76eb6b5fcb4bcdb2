"""What `slidegrid encoders` shows: every preset with its facts and whether its weights are on this machine
(in the Hugging Face cache; nothing is downloaded or built), then the other kinds of encoder."""

from __future__ import annotations

from typing import Any

from .hub import HF_HUB_PREFIX, cache_dir, cached_file
from .learned import METHODS
from .preset import all_presets


def catalogue() -> dict[str, Any]:
    """{"hf_cache": folder, "presets": [one dict per preset], "others": [mean-rgb, timm:ARCH, learned]}."""
    cache = cache_dir()
    presets = [{
        "name": p.name, "family": p.family, "dim": p.dim, "params_m": p.params_m, "tile_size": p.tile_size,
        "mpp": p.mpp, "input_size": p.input_size, "output": p.output, "licence": p.licence, "gated": p.gated,
        "hf_repo": p.hf_repo, "version": p.version,
        "weights": cached_file(p.hf_repo, p.weight_files, cache) if p.hf_repo else None,
    } for p in all_presets()]
    others = [
        {"name": "mean-rgb", "dim": 3, "tile": "any", "weights": "none (each tile's mean RGB)"},
        {"name": "timm:ARCH", "dim": "the architecture's num_features", "tile": "224 @ 0.5 (default)",
         "weights": "--weights FILE | models:/NAME/VERSION | random"},
        {"name": " | ".join(METHODS), "dim": "its --code-size", "tile": "as trained",
         "weights": "--weights FILE (slidegrid train-encoder) | models:/NAME/VERSION | random"},
    ]
    return {"hf_cache": cache, "presets": presets, "others": others}


def _params(m: float) -> str:
    return f"{m / 1000:.2g}B" if m >= 1000 else f"{m:.3g}M"


def table(cat: dict[str, Any]) -> list[str]:
    """The catalogue as aligned text lines."""
    rows = [("name", "dim", "params", "tile @ mpp", "licence", "gated", "weights (local)")]
    for p in cat["presets"]:
        where = p["weights"] or (f"not found (--weights {HF_HUB_PREFIX}{p['hf_repo']} downloads it)" if p["hf_repo"]
                                 else "not found (--weights FILE)")
        rows.append((p["name"], str(p["dim"]), _params(p["params_m"]), f"{p['tile_size']} @ {p['mpp']:g}",
                     p["licence"], "yes" if p["gated"] else "no", where))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)) + "  " + r[-1] for r in rows]
    lines.append("")
    for o in cat["others"]:
        lines.append(f"{o['name']}: dim {o['dim']}, tiles {o['tile']}, weights {o['weights']}")
    lines.append(f"Hugging Face cache: {cat['hf_cache']} (HF_HOME / HF_HUB_CACHE)")
    return [line.rstrip() for line in lines]
