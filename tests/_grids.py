"""Synthetic grids with a known regression answer, written straight to a grid store (no slides, no encode)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from slidegrid.io.grids import grid_table, grid_uri, write_grid


def grids_with_a_known_target(root: Path, n: int = 40, seed: int = 0) -> str:
    """n 6x6 grids under root/grids (3 channels, ~80% of cells kept) whose regression `target` is the mean of
    channel 0 over the kept cells plus noise (sd 0.1; the slides' means spread with sd ~0.6), and a `split`
    column: the first 60% train, the next 15% val, the last 25% test. Returns the cohort CSV (root/known.csv)."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        r, c = np.nonzero(rng.random((6, 6)) < 0.8)
        emb = rng.normal(0, 1, (len(r), 3)).astype(np.float32)
        emb[:, 0] += rng.uniform(-1, 1)
        write_grid(grid_uri(str(root / "grids"), f"g{i}"),
                   grid_table(r, c, c * 64, r * 64, np.ones(len(r)), emb, {"code_size": 3, "grid_shape": [6, 6]}))
        rows.append({"slide_id": f"g{i}", "uri": f"none/g{i}.tiff",  # grids only: no slide is read
                     "target": float(emb[:, 0].mean() + rng.normal(0, 0.1)),
                     "split": "train" if i < 0.6 * n else "val" if i < 0.75 * n else "test"})
    pd.DataFrame(rows).to_csv(root / "known.csv", index=False)
    return str(root / "known.csv")
