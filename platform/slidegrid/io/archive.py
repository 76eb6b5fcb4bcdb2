"""Listing a slide archive (directory, glob, s3:// prefix or cohort table) as records with safe, unique ids.

A listed folder or prefix yields its slides plus the files that are not slides (reported, so the manifest can
say why they were skipped). A cohort table is checked whole before any work: every problem is reported at
once with its row number (the file's line number, header = row 1).
"""

from __future__ import annotations

import csv
import hashlib
import io
import logging
import math
import os
import re
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import pandas as pd

from ..errors import ConfigError
from .storage import describe_storage_error, filesystem, is_remote, normalize_uri

log = logging.getLogger(__name__)

# Slides whose URI is one file (for MRXS and VMS/VMU that file is the entry point of a multi-file slide).
SLIDE_EXTENSIONS = (".svs", ".tif", ".tiff", ".ndpi", ".scn", ".bif", ".qptiff", ".btf", ".mrxs", ".vms", ".vmu",
                    ".svslide")
# A DICOM WSI is a folder of .dcm files (one per pyramid level / frame group): the folder is the slide.
DICOM_EXTENSION = ".dcm"
TABLE_EXTENSIONS = (".csv", ".parquet", ".pq")
# Optional cohort columns and their types; anything else is kept verbatim in `extra`.
OPTIONAL_COLUMNS = {"label": str, "target": float, "fold": int, "annotation": str, "patient_id": str,
                    "node": str, "mpp": float, "split": str}
# Files operating systems leave in folders; never part of an archive (dot-files are ignored too).
_OS_FILES = frozenset({"thumbs.db", "desktop.ini"})
# Keys of a Hamamatsu .vms/.vmu file that name its companion files (as OpenSlide reads them).
_VMS_KEYS = ("ImageFile", "MapFile", "OptimisationFile", "MacroImage")
_SEPARATORS = {",": "','", ";": "';'", "\t": "tab"}
_SAFE = re.compile(r"[^A-Za-z0-9._-]+")
_VALID_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,199}$")
_DECIMAL_COMMA = re.compile(r"^[+-]?\d*,\d+$")


@dataclass(frozen=True)
class SlideRecord:
    """One slide of an archive: where it is, its file-name-safe id and what the cohort says about it."""

    slide_id: str
    uri: str
    label: str | None = None
    target: float | None = None
    fold: int | None = None
    annotation: str | None = None
    patient_id: str | None = None
    node: str | None = None
    mpp: float | None = None
    split: str | None = None  # train | val | test: a fixed split for training (train/aggregator/data.py)
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """Plain dict (for Ray Data rows and tables)."""
        return asdict(self)


@dataclass(frozen=True)
class SkippedFile:
    """A file of a listed folder or prefix that is not a slide, and why it was left out."""

    uri: str
    name: str  # its path relative to the listed root: the manifest's key for it (distinct from every slide id)
    reason: str


@dataclass(frozen=True)
class ArchiveListing:
    """What an archive holds: its slides (sorted by URI) and the files skipped as not slides."""

    records: list[SlideRecord]
    skipped: list[SkippedFile] = field(default_factory=list)


def safe_slide_id(name: str) -> str:
    """A file-name-safe id from a file name: extension dropped, anything but [A-Za-z0-9._-] replaced by '_'."""
    stem = os.path.basename(str(name).rstrip("/"))
    for ext in SLIDE_EXTENSIONS:
        if stem.lower().endswith(ext):
            stem = stem[: -len(ext)]
            break
    stem = _SAFE.sub("_", stem).strip("._-")
    return stem[:200] or "slide"


def _id_problem(slide_id: str) -> str | None:
    if not _VALID_ID.match(slide_id) or ".." in slide_id:
        return (f"slide_id {slide_id!r} is not safe as a file name (no '/', '..', spaces or control characters; "
                "start with a letter or digit, at most 200 characters)")
    return None


def validate_slide_id(slide_id: str, where: str) -> str:
    """Check an explicit slide id is safe as a file name; raise a ConfigError naming `where` otherwise."""
    problem = _id_problem(slide_id)
    if problem:
        raise ConfigError(where, problem)
    return slide_id


def _unique_ids(names: list[tuple[str, str]]) -> list[str]:
    """Ids from file names, given as (name, path relative to the listed root).

    Names that collide, also after case-folding (S01 and s01 are one file on macOS and Windows disks), get a
    short hash of the RELATIVE path appended: the ids stay the same when the archive is moved or mounted
    elsewhere, so grids already written are found again.
    """
    ids = [safe_slide_id(n) for n, _ in names]
    counts: dict[str, int] = defaultdict(int)
    for i in ids:
        counts[i.casefold()] += 1
    out = [i if counts[i.casefold()] == 1 else f"{i}-{hashlib.sha1(rel.encode()).hexdigest()[:8]}"
           for i, (_, rel) in zip(ids, names)]
    if len({i.casefold() for i in out}) != len(out):  # a file literally named like another's suffixed id
        clash = sorted(i for i in out if sum(j.casefold() == i.casefold() for j in out) > 1)
        raise ConfigError(clash[0], "two slides of the archive get this id; rename one of the files")
    return out


def _storage_config_error(source: str, exc: Exception) -> ConfigError:
    reason = describe_storage_error(exc) or f"cannot read it ({type(exc).__name__}: {str(exc)[:200]})"
    return ConfigError(source, reason)


def _ignored(rel: str) -> bool:
    """Hidden files and folders (.DS_Store, ._x resource forks, .Trash) and OS litter are not archive content."""
    parts = rel.split("/")
    return any(p.startswith(".") for p in parts) or parts[-1].lower() in _OS_FILES


def _vms_companions(fs: Any, path: str) -> set[str]:
    """The files a Hamamatsu .vms/.vmu names (JPEG tiles, map, optimisation, macro), as paths beside it."""
    try:
        with fs.open(path, "rb") as f:
            text = f.read(1 << 20).decode("utf-8", "replace")
    except Exception:  # unreadable: its companions are then reported as non-slides, which is visible
        return set()
    folder = path.rsplit("/", 1)[0]
    names = set()
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep and key.strip().split("(")[0] in _VMS_KEYS and value.strip():
            names.add(f"{folder}/{value.strip()}")
    return names


def _find(fs: Any, source: str, path: str) -> tuple[str, list[str]]:
    """The listed root and every file under it (a glob's matched folders are listed whole)."""
    try:
        if any(c in path for c in "*?["):
            root = path[: min(path.index(c) for c in "*?[" if c in path)].rsplit("/", 1)[0]
            found: list[str] = []
            for p in fs.glob(path):
                found.extend(fs.find(p) if fs.isdir(p) else [p])
            return root, found
        if fs.isdir(path):
            return path.rstrip("/"), fs.find(path)
        if fs.exists(path):
            return path.rsplit("/", 1)[0], [path]
    except Exception as exc:  # OSError, botocore and fsspec errors alike
        raise _storage_config_error(source, exc) from exc
    raise ConfigError(source, "no such directory, file or prefix; check the path (and the bucket for s3://)")


def _list_folder(source: str, storage_options: Mapping[str, Any] | None) -> ArchiveListing:
    fs, path = filesystem(source, storage_options)
    protocol = source.split("://", 1)[0] + "://" if is_remote(source) else ""
    root, found = _find(fs, source, path)

    def rel(p: str) -> str:
        return p[len(root) + 1:] if p.startswith(root + "/") else os.path.basename(p)

    files = sorted({p for p in found if not _ignored(rel(p))})
    present = set(files)
    lower = {p: p.lower() for p in files}
    # Multi-file formats: the files that belong to a slide are not slides, nor non-slides.
    mrxs_dirs = {p[: -len(".mrxs")] + "/" for p in files if lower[p].endswith(".mrxs")}
    dicom_dirs = {p.rsplit("/", 1)[0] for p in files if lower[p].endswith(DICOM_EXTENSION)}
    companions = set()
    for p in files:
        if lower[p].endswith((".vms", ".vmu")):
            companions |= _vms_companions(fs, p)
    slides: list[tuple[str, str, str]] = []  # (uri, name for the id, relative path for the id's suffix)
    skipped: list[tuple[str, str, str]] = []  # (uri, relative path, reason)
    for p in files:
        folder = p.rsplit("/", 1)[0]
        if lower[p].endswith(SLIDE_EXTENSIONS):
            slides.append((protocol + p, os.path.basename(p), rel(p)))
        elif folder in dicom_dirs or p in companions or folder + "/" in mrxs_dirs:  # MRXS folders are flat
            continue
        elif f"{folder}/Slidedat.ini" in present:
            skipped.append((protocol + p, rel(p), f"part of an MRXS slide, but {os.path.basename(folder)}.mrxs "
                                                   "is missing beside its folder; copy the .mrxs file too"))
        else:
            ext = os.path.splitext(p)[1] or "no extension"
            skipped.append((protocol + p, rel(p), f"not a slide: {ext!r} is not a slide format "
                                                   f"({', '.join(SLIDE_EXTENSIONS)}, or a folder of .dcm files)"))
    for d in sorted(dicom_dirs):
        slides.append((protocol + d, os.path.basename(d) or d, rel(d)))
    slides.sort()
    ids = _unique_ids([(name, r) for _, name, r in slides])
    records = [SlideRecord(slide_id=i, uri=u) for i, (u, _, _) in zip(ids, slides)]
    taken = {i.casefold() for i in ids}
    # A non-slide keyed exactly like a slide id (file `S01` beside `S01.svs`) must not replace its manifest row.
    out = [SkippedFile(u, r if r.casefold() not in taken else f"{r} (not a slide)", why) for u, r, why in skipped]
    return ArchiveListing(records, out)


# -- cohort tables ------------------------------------------------------------------------------------------


def _resolve(uri: str, table_uri: str) -> str:
    """Cohort URIs may be relative to the table's own location."""
    if "://" in uri or os.path.isabs(uri):
        return normalize_uri(uri)
    base = table_uri.rsplit("/", 1)[0] if "/" in table_uri else "."
    return normalize_uri(f"{base}/{uri}") if is_remote(table_uri) else normalize_uri(
        os.path.join(os.path.dirname(table_uri), uri))


def _blank(value: Any) -> bool:
    if isinstance(value, str):
        return not value.strip()
    return value is None or (pd.api.types.is_scalar(value) and bool(pd.isna(value)))


def _typed(value: Any, typ: type, decimal_comma: bool = False) -> Any:
    """A cohort cell as its column's type.

    Parquet float columns with gaps hold whole numbers as 1.0 (an id or fold 1, not "1.0"); tables separated by
    ';' or tabs come from locales that write 0.75 as "0,75". NaN and infinities are refused, never kept.
    """
    if isinstance(value, str):
        value = value.strip()
        if typ is str:
            return value
        if decimal_comma and _DECIMAL_COMMA.match(value):
            value = value.replace(",", ".")
    if typ is str and isinstance(value, float) and value.is_integer():
        return str(int(value))
    if typ is str:
        return str(value)
    f = float(value)
    if not math.isfinite(f):
        raise ValueError(value)
    if typ is int:
        if not f.is_integer():
            raise ValueError(value)
        return int(f)
    return f


def _decode(data: bytes, table: str) -> str:
    try:
        return data.decode("utf-8-sig")  # Excel's "CSV UTF-8" starts with a byte-order mark
    except UnicodeDecodeError as exc:
        raise ConfigError(table, f"not UTF-8 text (byte {data[exc.start]:#04x} at offset {exc.start}); save it "
                                 "as 'CSV UTF-8' in Excel or re-encode it to UTF-8") from None


def _header_cells(line: str, sep: str) -> list[str]:
    return [c.strip() for c in next(csv.reader([line], delimiter=sep), [])]


def _separator(text: str, table: str) -> str:
    """The separator whose header has slide_id and uri; otherwise an error naming what was tried and found."""
    header = next((line for line in text.splitlines() if line.strip(" \t,;")), "")  # as _csv_rows skips blank rows
    for sep in _SEPARATORS:
        if {"slide_id", "uri"} <= set(_header_cells(header, sep)):
            return sep
    try:
        guess = csv.Sniffer().sniff(header, delimiters="".join(_SEPARATORS)).delimiter
    except csv.Error:
        guess = ","
    found = [c for c in _header_cells(header, guess) if c]
    missing = sorted({"slide_id", "uri"} - set(found))
    raise ConfigError(table, f"cohort table lacks column(s) {missing}; it needs at least slide_id, uri (tried the "
                             f"separators ',', ';' and tab; split by {_SEPARATORS[guess]} the header has columns "
                             f"{found})")


def _csv_rows(text: str, table: str) -> tuple[list[str], list[tuple[int, dict[str, Any]]], str, list]:
    """Header, (line number, cells) per data row, the separator, and row-shape problems. Every cell stays text:
    no NA/None/number guessing, so ids like `NA` and `00123` keep their spelling."""
    sep = _separator(text, table)
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=sep)
    header: list[str] | None = None
    rows: list[tuple[int, dict[str, Any]]] = []
    problems: list[tuple[tuple[int, ...], str]] = []
    for cells in reader:
        cells = [c.strip() for c in cells]
        if not any(cells):  # blank lines, or Excel's trailing ",,,," rows
            continue
        if header is None:
            header = cells
            continue
        n = reader.line_num
        if len(cells) != len(header):
            problems.append(((n,), f"{len(cells)} cells but the header has {len(header)} (a {_SEPARATORS[sep]} "
                                   "inside a cell needs quotes)"))
            continue
        rows.append((n, dict(zip(header, cells))))
    return header or [], rows, sep, problems


def _parquet_rows(data: bytes, table: str) -> tuple[list[str], list[tuple[int, dict[str, Any]]]]:
    try:
        df = pd.read_parquet(io.BytesIO(data))
    except Exception as exc:
        raise ConfigError(table, f"cannot parse the cohort table ({type(exc).__name__}: {exc})") from None
    header = [str(c).strip() for c in df.columns]
    records = df.to_dict("records")
    rows = [(n, {h: (v.strip() if isinstance(v, str) else v) for h, v in zip(header, r.values())})
            for n, r in enumerate(records, start=2)]
    return header, rows


def _rows_text(rows: Iterable[int]) -> str:
    rows = sorted(set(rows))
    return f"row {rows[0]}" if len(rows) == 1 else "rows " + ", ".join(map(str, rows))


def _missing_file(uri: str, listings: dict[str, set[str]]) -> str | None:
    """Why a local slide URI points nowhere (with the case-insensitive near miss, if any), or None."""
    if is_remote(uri) or os.path.exists(uri):
        return None  # object stores are not checked key by key: a listing of a big prefix costs more than it saves
    folder, name = os.path.split(uri)
    if folder not in listings:
        listings[folder] = set(os.listdir(folder)) if os.path.isdir(folder) else set()
    near = [n for n in listings[folder] if n.casefold() == name.casefold()]
    hint = f" ({near[0]} exists there: names are case-sensitive)" if near else ""
    return f"file not found: {uri}{hint}"


def _check_duplicates(found: list[tuple[int, str, SlideRecord]], table: str,
                      problems: list[tuple[tuple[int, ...], str]]) -> list[SlideRecord]:
    """One record per slide. Exact repeats are dropped with a warning (tables concatenated or re-exported
    twice: nothing is ambiguous, as CLAM's drop_duplicates does); conflicting repeats, one slide in two
    patients and ids equal after case-folding are problems; one file under two ids is warned about."""
    by_id: dict[str, list[tuple[int, str, SlideRecord]]] = defaultdict(list)
    for item in found:
        by_id[item[2].slide_id].append(item)
    kept: list[tuple[int, str, SlideRecord]] = []
    for sid, group in by_id.items():
        rows = [n for n, _, _ in group]
        first = group[0][2]
        # Compared by repr: a Parquet NaN in an extra column is not equal to itself.
        if all(repr(r) == repr(first) for _, _, r in group):
            if len(group) > 1:
                log.warning("%s %s: identical rows for slide_id %r; keeping one", table, _rows_text(rows), sid)
            kept.append(group[0])
            continue
        fields = [k for k in first.to_dict() if len({repr(getattr(r, k)) for _, _, r in group}) > 1]
        fields.sort(key=lambda k: k != "patient_id")  # the graver conflict first
        diffs = "; ".join(f"{k} " + ", ".join(f"{getattr(r, k)!r} (row {n})" for n, _, r in group) for k in fields)
        if "patient_id" in fields:
            problems.append((tuple(rows), f"slide_id {sid!r} is in two patients: {diffs}; a slide belongs to one "
                                          "patient: keep one row for it"))
        else:
            problems.append((tuple(rows), f"slide_id {sid!r} is listed more than once with conflicting values: "
                                          f"{diffs}; keep one row per slide"))
    by_fold: dict[str, list[tuple[int, str, SlideRecord]]] = defaultdict(list)
    for item in kept:
        by_fold[item[2].slide_id.casefold()].append(item)
    for group in by_fold.values():
        if len(group) > 1:
            ids = " and ".join(repr(r.slide_id) for _, _, r in group)
            problems.append((tuple(n for n, _, _ in group), f"slide ids {ids} differ only in case; their grids "
                             "would be one file on macOS and Windows disks: rename one"))
    by_uri: dict[str, list[tuple[int, str, SlideRecord]]] = defaultdict(list)
    for item in kept:
        by_uri[item[2].uri].append(item)
    for group in by_uri.values():
        if len(group) < 2:
            continue
        rows = [n for n, _, _ in group]
        raw = group[0][1]
        named = ", ".join(f"{r.slide_id!r} (row {n}{f', patient {r.patient_id!r}' if r.patient_id else ''})"
                          for n, _, r in group)
        if len({r.patient_id for _, _, r in group if r.patient_id}) > 1:
            problems.append((tuple(rows), f"file {raw} is listed under two slide ids in two patients: {named}; "
                                          "a slide belongs to one patient: keep one row for it"))
        else:
            log.warning("%s %s: one file %s is listed under several slide ids: %s; it is encoded once per id",
                        table, _rows_text(rows), raw, named)
    return [r for _, _, r in sorted(kept)]


def read_cohort(table: str, storage_options: Mapping[str, Any] | None = None, *,
                check_files: bool = False) -> list[SlideRecord]:
    """Read a cohort table (CSV or Parquet) with at least `slide_id, uri` columns, checked whole.

    CSV: UTF-8 (with or without Excel's byte-order mark), any line endings, separator ',', ';' or tab (found
    from the header); every cell is text with surrounding whitespace stripped. Every problem of the table is
    collected and raised as one ConfigError: its first line says how many, then one line per problem with its
    row number (the file's line; header = row 1). `check_files` also lists slides whose local file is missing
    (object stores are not checked key by key). Returns one record per slide, in table order.
    """
    table = normalize_uri(table)
    fs, path = filesystem(table, storage_options)
    try:
        with fs.open(path, "rb") as f:
            data = f.read()
    except Exception as exc:
        raise _storage_config_error(table, exc) from exc
    problems: list[tuple[tuple[int, ...], str]] = []
    if table.lower().endswith((".parquet", ".pq")):
        header, rows = _parquet_rows(data, table)
        decimal_comma = False
    else:
        header, rows, sep, problems = _csv_rows(_decode(data, table), table)
        decimal_comma = sep != ","
    missing = {"slide_id", "uri"} - set(header)
    if missing:
        raise ConfigError(table, f"cohort table lacks column(s) {sorted(missing)}; it needs at least slide_id, uri")
    twice = sorted({h for h in header if h and header.count(h) > 1})
    if twice:
        raise ConfigError(table, f"column(s) {twice} appear more than once in the header; keep one of each")
    if not rows and not problems:
        raise ConfigError(table, "cohort table has no rows; add one row per slide (slide_id, uri)")
    found: list[tuple[int, str, SlideRecord]] = []
    listings: dict[str, set[str]] = {}
    for n, row in rows:
        row_problems = [f"empty {c}; every row needs a slide_id and a uri" for c in ("slide_id", "uri")
                        if _blank(row[c])]
        sid = str(_typed(row["slide_id"], str)) if not _blank(row["slide_id"]) else ""
        if sid and _id_problem(sid):
            row_problems.append(str(_id_problem(sid)))
        fields: dict[str, Any] = {}
        for col, typ in OPTIONAL_COLUMNS.items():
            v = row.get(col)
            if _blank(v):
                continue
            try:
                fields[col] = _typed(v, typ, decimal_comma)
            except (TypeError, ValueError):
                kind = {int: "a whole number", float: "a finite number"}.get(typ, typ.__name__)
                row_problems.append(f"column {col!r} value {v!r} is not a valid {typ.__name__} (expected "
                                    f"{kind}; leave the cell empty when there is none)")
        if row_problems:
            problems.extend(((n,), p) for p in row_problems)
            continue
        raw_uri = str(_typed(row["uri"], str))
        uri = _resolve(raw_uri, table)
        if check_files:
            gone = _missing_file(uri, listings)
            if gone:
                problems.append(((n,), gone))
        if "annotation" in fields:
            fields["annotation"] = _resolve(fields["annotation"], table)
        # Unnamed empty columns are Excel's trailing separators, not data.
        extra = {k: (None if _blank(v) else v) for k, v in row.items()
                 if k not in {"slide_id", "uri", *OPTIONAL_COLUMNS} and (k or not _blank(v))}
        found.append((n, raw_uri, SlideRecord(slide_id=sid, uri=uri, extra=extra, **fields)))
    records = _check_duplicates(found, table, problems)
    if len(problems) == 1:
        (rows_, text), = problems
        raise ConfigError(f"{table} {_rows_text(rows_)}", text)
    if problems:
        lines = "\n".join(f"  {_rows_text(r)}: {t}" for r, t in sorted(problems))
        raise ConfigError(table, f"{len(problems)} problems in the cohort table; fix them all and re-run:\n{lines}")
    return records


# -- archives -----------------------------------------------------------------------------------------------


def scan_archive(source: str, storage_options: Mapping[str, Any] | None = None) -> ArchiveListing:
    """Every slide of an archive (a directory, glob, s3:// prefix, single slide or cohort table), sorted by URI
    for listings, plus the files of a listed folder that are not slides.

    Hidden files, OS litter and the companion files of multi-file slides (an MRXS slide's `X/` folder, the
    JPEGs a VMS names) are neither; a folder of .dcm files is one DICOM slide named after the folder. A cohort
    table is read with `check_files=True`: slides it names must exist (locally).
    """
    source = normalize_uri(source)
    if source.lower().endswith(TABLE_EXTENSIONS):
        return ArchiveListing(read_cohort(source, storage_options, check_files=True))
    listing = _list_folder(source, storage_options)
    if not listing.records:
        others = (f"; {len(listing.skipped)} other file(s) skipped, e.g. {listing.skipped[0].name}"
                  if listing.skipped else "")
        raise ConfigError(source, f"no slides found (looked for {', '.join(SLIDE_EXTENSIONS)} and folders of "
                                  f"{DICOM_EXTENSION} files{others}); point at a folder, glob, s3:// prefix or "
                                  "cohort table")
    return listing


def list_archive(source: str, storage_options: Mapping[str, Any] | None = None) -> list[SlideRecord]:
    """Every slide of an archive (see `scan_archive`; the files skipped as not slides are left out)."""
    return scan_archive(source, storage_options).records
