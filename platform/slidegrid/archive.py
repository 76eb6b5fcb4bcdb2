"""Listing a slide archive (directory, glob, s3:// prefix or cohort table) as records with safe, unique ids."""

from __future__ import annotations

import hashlib
import io
import os
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import pandas as pd

from .errors import ConfigError
from .storage import describe_storage_error, filesystem, is_remote, normalize_uri

SLIDE_EXTENSIONS = (".svs", ".tif", ".tiff", ".ndpi", ".scn", ".bif", ".qptiff", ".btf")
TABLE_EXTENSIONS = (".csv", ".parquet", ".pq")
# Optional cohort columns and their types; anything else is kept verbatim in `extra`.
OPTIONAL_COLUMNS = {"label": str, "target": float, "fold": int, "annotation": str, "patient_id": str,
                    "node": str, "mpp": float}
# Read as text so ids like "007" and labels like "1" keep their spelling.
_TEXT_COLUMNS = ("slide_id", "uri", *(c for c, t in OPTIONAL_COLUMNS.items() if t is str))
_SAFE = re.compile(r"[^A-Za-z0-9._-]+")
_VALID_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,199}$")


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
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """Plain dict (for Ray Data rows and tables)."""
        return asdict(self)


def safe_slide_id(name: str) -> str:
    """A file-name-safe id from a file name: extension dropped, anything but [A-Za-z0-9._-] replaced by '_'."""
    stem = os.path.basename(str(name).rstrip("/"))
    for ext in SLIDE_EXTENSIONS:
        if stem.lower().endswith(ext):
            stem = stem[: -len(ext)]
            break
    stem = _SAFE.sub("_", stem).strip("._-")
    return stem[:200] or "slide"


def validate_slide_id(slide_id: str, where: str) -> str:
    """Check an explicit slide id is safe as a file name; raise a ConfigError naming `where` otherwise."""
    if not _VALID_ID.match(slide_id) or ".." in slide_id:
        raise ConfigError(where, f"slide_id {slide_id!r} is not safe as a file name (no '/', '..', spaces or "
                                 "control characters; start with a letter or digit, at most 200 characters)")
    return slide_id


def _unique_ids(uris: list[str]) -> list[str]:
    """Ids from file names; names that collide get a short hash of their URI appended."""
    ids = [safe_slide_id(u) for u in uris]
    counts: dict[str, int] = {}
    for i in ids:
        counts[i] = counts.get(i, 0) + 1
    return [i if counts[i] == 1 else f"{i}-{hashlib.sha1(u.encode()).hexdigest()[:8]}" for i, u in zip(ids, uris)]


def _is_slide(path: str) -> bool:
    return path.lower().endswith(SLIDE_EXTENSIONS) and not os.path.basename(path).startswith(".")


def _storage_config_error(source: str, exc: Exception) -> ConfigError:
    reason = describe_storage_error(exc) or f"cannot read it ({type(exc).__name__}: {str(exc)[:200]})"
    return ConfigError(source, reason)


def _list_files(source: str, storage_options: Mapping[str, Any] | None) -> list[str]:
    fs, path = filesystem(source, storage_options)
    protocol = source.split("://", 1)[0] + "://" if is_remote(source) else ""
    try:
        if any(c in path for c in "*?["):
            found = fs.glob(path)
        elif fs.isdir(path):
            found = fs.find(path)
        elif fs.exists(path):
            found = [path]
        else:
            raise ConfigError(source, "no such directory, file or prefix; check the path (and the bucket for s3://)")
    except ConfigError:
        raise
    except Exception as exc:  # OSError, botocore and fsspec errors alike
        raise _storage_config_error(source, exc) from exc
    return sorted(protocol + f for f in found if _is_slide(f))


def _resolve(uri: str, table_uri: str) -> str:
    """Cohort URIs may be relative to the table's own location."""
    if "://" in uri or os.path.isabs(uri):
        return normalize_uri(uri)
    base = table_uri.rsplit("/", 1)[0] if "/" in table_uri else "."
    return normalize_uri(f"{base}/{uri}") if is_remote(table_uri) else os.path.join(os.path.dirname(table_uri), uri)


def _blank(value: Any) -> bool:
    if isinstance(value, str):
        return not value.strip()
    return value is None or (pd.api.types.is_scalar(value) and bool(pd.isna(value)))


def _typed(value: Any, typ: type) -> Any:
    """A cohort cell as its column's type; Parquet float columns with gaps hold whole numbers as 1.0."""
    if typ is int or (typ is str and isinstance(value, float)):
        f = float(value)
        if not f.is_integer():
            if typ is int:
                raise ValueError(value)
            return str(value)
        return typ(int(f))
    return typ(value)


def read_cohort(table: str, storage_options: Mapping[str, Any] | None = None) -> list[SlideRecord]:
    """Read a cohort table (CSV or Parquet) with at least `slide_id, uri` columns."""
    table = normalize_uri(table)
    fs, path = filesystem(table, storage_options)
    try:
        with fs.open(path, "rb") as f:
            data = f.read()
    except Exception as exc:
        raise _storage_config_error(table, exc) from exc
    try:
        df = pd.read_parquet(io.BytesIO(data)) if table.lower().endswith((".parquet", ".pq")) \
            else pd.read_csv(io.BytesIO(data), dtype={c: str for c in _TEXT_COLUMNS})
    except Exception as exc:
        raise ConfigError(table, f"cannot parse the cohort table ({type(exc).__name__}: {exc})") from None
    missing = {"slide_id", "uri"} - set(df.columns)
    if missing:
        raise ConfigError(table, f"cohort table lacks column(s) {sorted(missing)}; it needs at least slide_id, uri")
    if df.empty:
        raise ConfigError(table, "cohort table has no rows; add one row per slide (slide_id, uri)")
    records, seen = [], set()
    for n, row in enumerate(df.to_dict("records"), start=2):
        where = f"{table} row {n}"
        for col in ("slide_id", "uri"):
            if _blank(row[col]):
                raise ConfigError(where, f"empty {col}; every row needs a slide_id and a uri")
        sid = validate_slide_id(str(row["slide_id"]), where)
        if sid in seen:
            raise ConfigError(where, f"duplicate slide_id {sid!r}; slide ids must be unique")
        seen.add(sid)
        fields: dict[str, Any] = {}
        for col, typ in OPTIONAL_COLUMNS.items():
            v = row.get(col)
            if _blank(v):
                continue
            try:
                fields[col] = _typed(v, typ)
            except (TypeError, ValueError):
                raise ConfigError(where, f"column {col!r} value {v!r} is not a valid {typ.__name__}") from None
        if "annotation" in fields:
            fields["annotation"] = _resolve(fields["annotation"], table)
        extra = {k: v for k, v in row.items() if k not in {"slide_id", "uri", *OPTIONAL_COLUMNS}}
        records.append(SlideRecord(slide_id=sid, uri=_resolve(str(row["uri"]), table), extra=extra, **fields))
    return records


def list_archive(source: str, storage_options: Mapping[str, Any] | None = None) -> list[SlideRecord]:
    """Every slide of an archive, sorted by URI: a directory, glob, s3:// prefix, single slide or cohort table."""
    source = normalize_uri(source)
    if source.lower().endswith(TABLE_EXTENSIONS):
        return read_cohort(source, storage_options)
    uris = _list_files(source, storage_options)
    if not uris:
        raise ConfigError(source, f"no slides found (looked for {', '.join(SLIDE_EXTENSIONS)}); "
                                  "point at a folder, glob, s3:// prefix or cohort table")
    return [SlideRecord(slide_id=i, uri=u) for i, u in zip(_unique_ids(uris), uris)]
