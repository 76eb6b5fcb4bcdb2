"""Archives for the tests: the real inputs of ../shared/data/realworld/cases linked (never copied), or synthetic
slides written."""

from __future__ import annotations

import glob
import os
from pathlib import Path

import pytest


def case_archive(root: Path, links: dict[str, str], cases: Path) -> Path:
    """A folder `root/archive` of symlinks `<id><ext>` to the case inputs named in `links` (found anywhere under
    `cases`); skips the test, saying where it looked, when one is missing."""
    archive = root / "archive"
    archive.mkdir()
    for sid, name in links.items():
        found = glob.glob(str(cases / "**" / name), recursive=True)
        if not found:
            pytest.skip(f"case input {name} not in {cases}")
        os.symlink(found[0], archive / f"{sid}{os.path.splitext(name)[1]}")
    return archive


def synthetic_archive(root: Path, prefix: str, n: int, side: int, seed: int, height: int | None = None) -> Path:
    """`root` (made if missing) holding n synthetic slides `<prefix><i>.tiff`, `side` px wide and `height` (default
    `side`) px high, seeds seed .. seed + n - 1."""
    from slidegrid.synth.slides import SyntheticSpec, write_synthetic_slide

    root.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        write_synthetic_slide(str(root / f"{prefix}{i}.tiff"),
                              SyntheticSpec(width=side, height=height or side, seed=seed + i))
    return root
