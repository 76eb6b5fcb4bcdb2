"""Labelled patch datasets as inputs (PatchCamelyon and the like): a folder of class folders, optionally under
split folders, or a CSV table, each patch with a label, a split and the pixel size the user gives.

Layouts (local paths; the first that fits):

    ROOT/<split>/<class>/*.png|jpg|jpeg|tif|tiff   split folders of class folders (PCam: train/ valid/ test/ × 0/ 1/)
    ROOT/<class>/*.png|...                          class folders, no splits
    TABLE.csv                                       columns `path,label[,split]`, paths relative to the table's folder

Labels: when every class name is an integer ("0", "1", "7"), the label is that integer; otherwise the names
sorted as text map to 0, 1, ... (`normal`, `tumour` → 0, 1), the same over every split. Files starting with a
dot (`.DS_Store`) are ignored; any other file of a class folder that is not an image is refused, as is an
empty class folder.

Duplicates: a table with a `duplicate_of` column (ROOT/index.csv beside the folders, or the CSV given) marks
exact copies; those rows are dropped so no image is counted twice or sits in two splits (PCam's index marks
155). Patches carry no pixel size: `mpp` (µm/px) is the user's and travels with the set.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from ..errors import ConfigError

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff")
INDEX_NAME = "index.csv"  # a folder's own table (PCam): its `duplicate_of` column marks exact copies
MPP_RANGE = (0.05, 20.0)  # the plausible pixel sizes slides are held to (README: Inputs)


@dataclass(frozen=True)
class PatchSet:
    """A labelled patch dataset: one entry per patch, in listing order (split, class, file name).

    `paths`: absolute file paths; `labels`: (N,) int64; `splits`: (N,) split name of each patch ("" when the
    layout has none); `classes`: label → class name; `mpp`: µm/px as given; `layout`: "split-folders",
    "class-folders" or "table"; `duplicates_dropped`: rows of a `duplicate_of` column left out, and
    `duplicates_by_split` the same count per split name ("" without splits).
    """

    root: str
    paths: tuple[str, ...]
    labels: np.ndarray
    splits: np.ndarray
    classes: dict[int, str]
    mpp: float
    layout: str
    duplicates_dropped: int = 0
    duplicates_by_split: dict[str, int] = field(default_factory=dict)  # of `duplicates_dropped`, per split

    def split_names(self) -> list[str]:
        """The splits present, sorted ([] for a layout without splits)."""
        return sorted({s for s in self.splits.tolist() if s})

    def split(self, name: str, flag: str = "--split") -> np.ndarray:
        """Indices of the patches of split `name`; ConfigError naming the splits there are when it has none."""
        if not self.split_names():
            raise ConfigError(self.root, f"has no splits ({self.layout}): {flag} needs split folders "
                                         "(ROOT/<split>/<class>/) or a `split` column in the table")
        idx = np.flatnonzero(self.splits == name)
        if not len(idx):
            raise ConfigError(flag, f"no split {name!r} in {self.root}; it has {', '.join(self.split_names())}")
        return idx

    def counts(self) -> dict[str, dict[int, int]]:
        """Patches per split and label ({"": {...}} for a layout without splits)."""
        out: dict[str, dict[int, int]] = {}
        for s, y in zip(self.splits.tolist(), self.labels.tolist()):
            out.setdefault(s, {}).setdefault(int(y), 0)
            out[s][int(y)] += 1
        return {s: dict(sorted(c.items())) for s, c in sorted(out.items())}


def check_mpp(mpp: float | None) -> float:
    """The pixel size of a patch set, which no patch file carries; ConfigError when missing or implausible."""
    if mpp is None:
        raise ConfigError("--mpp", "patch sets carry no pixel size: pass --mpp, the µm/px of the patches "
                                   "(PatchCamelyon: 0.97)")
    if not MPP_RANGE[0] <= float(mpp) <= MPP_RANGE[1]:
        raise ConfigError("--mpp", f"{mpp} µm/px is outside {MPP_RANGE[0]}-{MPP_RANGE[1]}; give the patches' pixel "
                                   "size in µm/px (PatchCamelyon: 0.97)")
    return float(mpp)


def _visible(folder: str) -> list[str]:
    return sorted(n for n in os.listdir(folder) if not n.startswith("."))


def _class_labels(names: Sequence[str]) -> dict[str, int]:
    """Class name → label: the integer itself when every name is one, else the sorted names numbered 0, 1, ..."""
    unique = sorted(set(names))
    try:
        return {n: int(n) for n in unique}
    except ValueError:
        return {n: i for i, n in enumerate(unique)}


def _class_files(folder: str) -> list[str]:
    """The image files of one class folder; ConfigError for anything else in it, or for no image at all."""
    files = []
    names = _visible(folder)
    inner = [n for n in names if os.path.isdir(os.path.join(folder, n))]
    if inner:  # a class folder never holds folders: most often ROOT was given one level too high
        raise ConfigError(folder, f"read as a class folder, but it holds folders ({', '.join(inner[:3])}); if it is "
                                  "a patch set itself, pass it as the root (not its parent folder)")
    for name in names:
        path = os.path.join(folder, name)
        if not name.lower().endswith(IMAGE_SUFFIXES):
            raise ConfigError(path, f"not an image ({', '.join(IMAGE_SUFFIXES)}): a class folder holds only its "
                                    "patches; move it out")
        files.append(path)
    if not files:
        raise ConfigError(folder, f"empty class folder: no {'/'.join(IMAGE_SUFFIXES)} patch in it; add patches or "
                                  "remove the folder")
    return files


def _folder_entries(root: str) -> tuple[list[tuple[str, str, str]], str]:
    """(path, class name, split) per patch of a folder layout, and the layout's name."""
    dirs = [n for n in _visible(root) if os.path.isdir(os.path.join(root, n))]
    if not dirs:
        raise ConfigError(root, "no class or split folders: expected ROOT/<split>/<class>/*.png|jpg, "
                                "ROOT/<class>/*.png|jpg, or a CSV table with columns path,label[,split]")
    # Split folders hold only folders (their classes); class folders hold images.
    nested = [all(os.path.isdir(os.path.join(root, d, n)) for n in _visible(os.path.join(root, d)))
              and _visible(os.path.join(root, d)) for d in dirs]
    if all(nested):
        return [(f, c, s) for s in dirs for c in _visible(os.path.join(root, s))
                for f in _class_files(os.path.join(root, s, c))], "split-folders"
    if any(nested):
        odd = next(d for d, n in zip(dirs, nested) if n)
        raise ConfigError(os.path.join(root, odd), "mixes layouts: some folders of ROOT hold folders (splits), "
                                                   "others hold images (classes); use one layout")
    return [(f, c, "") for c in dirs for f in _class_files(os.path.join(root, c))], "class-folders"


def _table_entries(table: str, rows: list[tuple[int, dict[str, str]]]
                   ) -> tuple[list[tuple[str, str, str]], dict[str, int]]:
    """(path, class name, split) per row of a `path,label[,split]` table (paths relative to its folder), and
    the rows dropped as duplicates (`duplicate_of` non-empty) per split."""
    base = os.path.dirname(os.path.abspath(table))
    entries: list[tuple[str, str, str]] = []
    dropped: dict[str, int] = {}
    for line, row in rows:
        if row.get("duplicate_of"):
            dropped[row.get("split", "")] = dropped.get(row.get("split", ""), 0) + 1
            continue
        path = os.path.join(base, os.path.expanduser(row["path"]))
        where = f"{table} row {line}"
        if not row["label"]:
            raise ConfigError(where, "empty label")
        if not path.lower().endswith(IMAGE_SUFFIXES):
            raise ConfigError(where, f"{row['path']} is not an image ({', '.join(IMAGE_SUFFIXES)})")
        if not os.path.isfile(path):
            raise ConfigError(where, f"{path} not found (paths are relative to the table's folder)")
        entries.append((path, row["label"], row.get("split", "")))
    return entries, dropped


def _duplicates(root: str) -> set[str]:
    """Absolute paths ROOT/index.csv marks as copies of another file (its `duplicate_of` column)."""
    from ..io.tables import read_csv_rows

    index = os.path.join(root, INDEX_NAME)
    if not os.path.isfile(index):
        return set()
    header, rows = read_csv_rows(index, ("path",))
    if "duplicate_of" not in header:
        return set()
    return {os.path.normpath(os.path.join(root, r["path"])) for _, r in rows if r.get("duplicate_of")}


def read_patch_set(source: str, mpp: float | None) -> PatchSet:
    """List a patch dataset (a folder or a CSV table, module docstring) with its labels and splits.

    `mpp`: µm/px of the patches (required: no patch file carries it). Images are not decoded here
    (`decode_patches`). Raises ConfigError naming the folder, file or table row and the fix: missing
    source, missing mpp, an empty class folder, a non-image file, a table row whose file is missing.
    """
    mpp = check_mpp(mpp)
    source = os.path.abspath(os.path.expanduser(source))
    by_split: dict[str, int] = {}
    if os.path.isdir(source):
        entries, layout = _folder_entries(source)
        copies = _duplicates(source)
        for _, _, split in (e for e in entries if os.path.normpath(e[0]) in copies):
            by_split[split] = by_split.get(split, 0) + 1
        entries = [e for e in entries if os.path.normpath(e[0]) not in copies]
    elif os.path.isfile(source) and source.lower().endswith(".csv"):
        from ..io.tables import read_csv_rows

        _, rows = read_csv_rows(source, ("path", "label"))
        entries, by_split = _table_entries(source, rows)
        layout = "table"
    elif os.path.exists(source):
        raise ConfigError(source, "not a patch folder or a .csv table (columns path,label[,split])")
    else:
        raise ConfigError(source, "not found: give a patch folder (ROOT/<split>/<class>/) or a CSV table")
    if not entries:
        raise ConfigError(source, "no patches left (every row is a duplicate)")
    dropped = sum(by_split.values())
    if dropped:
        log.warning("%s: %d patches left out as exact duplicates of others (%s `duplicate_of`)", source, dropped,
                    INDEX_NAME if layout != "table" else "the table's")
    labels = _class_labels([c for _, c, _ in entries])
    return PatchSet(root=source, paths=tuple(p for p, _, _ in entries),
                    labels=np.array([labels[c] for _, c, _ in entries], np.int64),
                    splits=np.array([s for _, _, s in entries], dtype=object).astype(str),
                    classes={v: k for k, v in labels.items()}, mpp=mpp, layout=layout, duplicates_dropped=dropped,
                    duplicates_by_split=dict(sorted(by_split.items())))


def decode_patch(path: str) -> np.ndarray:
    """One patch file as (H, W, 3) RGB uint8 (PIL). Grayscale and palette images become RGB; transparent
    pixels are laid on white, as slides' are. ConfigError naming the file when it is not a readable 8-bit
    image (truncated, another format behind the suffix, 16-bit)."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            im.load()  # a truncated file fails here, not as grey pixels later
            if im.mode not in ("RGB", "RGBA", "L", "LA", "P"):
                raise ConfigError(path, f"{im.mode} image: patches must be 8-bit RGB (or grayscale); convert it")
            if im.mode in ("RGBA", "LA", "P"):
                rgba = im.convert("RGBA")
                out = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
                out.alpha_composite(rgba)
                return np.asarray(out.convert("RGB"))
            return np.asarray(im.convert("RGB"))
    except ConfigError:
        raise
    except (OSError, ValueError, SyntaxError) as exc:  # PIL's UnidentifiedImageError is an OSError
        raise ConfigError(path, f"cannot decode the image ({exc}); replace or remove it") from None


def decode_patches(paths: Sequence[str], size: tuple[int, int] | None = None) -> np.ndarray:
    """(N, H, W, 3) uint8 patches; every patch must have the size `size` (H, W), default the first one's.
    ConfigError naming the first file that cannot be decoded or has another size."""
    images = []
    for path in paths:
        img = decode_patch(path)
        size = size or img.shape[:2]
        if img.shape[:2] != tuple(size):
            raise ConfigError(path, f"{img.shape[1]}×{img.shape[0]} px; the other patches are {size[1]}×{size[0]}: "
                                    "resize the set to one patch size")
        images.append(img)
    return np.stack(images) if images else np.zeros((0, *(size or (0, 0)), 3), np.uint8)
