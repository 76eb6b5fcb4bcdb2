"""The real inputs of ../shared/data/realworld/cases as an archive: symlinks, never copies."""

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
