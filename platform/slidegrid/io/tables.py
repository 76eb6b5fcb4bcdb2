"""Tables in and out of the commands (`slidegrid pn-stage`, `burden`, `probe`, patch-set CSVs): CSV reading with
row numbers for error messages, CSV writing to local folders or object stores."""

from __future__ import annotations

import csv
import io
from collections.abc import Mapping, Sequence
from typing import Any

from ..errors import ConfigError
from .storage import atomic_write, filesystem, join


def read_csv_rows(uri: str, required: Sequence[str], storage_options: Mapping[str, Any] | None = None
                  ) -> tuple[list[str], list[tuple[int, dict[str, str]]]]:
    """Header and (line number, cells) per data row of a CSV, every cell text with whitespace stripped.

    The separator (',', ';' or tab) is the one whose header holds every `required` column; blank lines are
    skipped. Raises ConfigError naming `uri` when it cannot be read, lacks a required column, or has no rows.
    """
    fs, path = filesystem(uri, storage_options)
    try:
        with fs.open(path, "rb") as f:
            text = f.read().decode("utf-8-sig")  # Excel's "CSV UTF-8" starts with a byte-order mark
    except FileNotFoundError:
        raise ConfigError(uri, "file not found; check the path") from None
    except UnicodeDecodeError:
        raise ConfigError(uri, "not UTF-8 text; save it as 'CSV UTF-8'") from None
    first = next((line for line in text.splitlines() if line.strip(" \t,;")), "")
    seps = [s for s in (",", ";", "\t") if set(required) <= {c.strip() for c in next(csv.reader([first], delimiter=s))}]
    if not seps:
        found = [c.strip() for c in next(csv.reader([first]), [])]
        missing = [c for c in required if c not in found]
        raise ConfigError(uri, f"lacks column(s) {missing}; it needs {', '.join(required)} (header: {found})")
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=seps[0])
    header: list[str] = []
    rows: list[tuple[int, dict[str, str]]] = []
    for cells in reader:
        cells = [c.strip() for c in cells]
        if not any(cells):
            continue
        if not header:
            header = cells
        elif len(cells) != len(header):
            raise ConfigError(f"{uri} row {reader.line_num}", f"{len(cells)} cells but the header has "
                                                              f"{len(header)} (a separator inside a cell needs quotes)")
        else:
            rows.append((reader.line_num, dict(zip(header, cells))))
    if not rows:
        raise ConfigError(uri, "no rows under the header")
    return header, rows


def csv_text(rows: Sequence[Mapping[str, Any]], columns: Sequence[str] | None = None) -> str:
    """Rows as CSV text (columns: the first row's keys unless given); floats keep full precision."""
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=list(columns or (rows[0] if rows else [])), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue()


def write_tables(out: str, tables: Mapping[str, str], storage_options: Mapping[str, Any] | None = None
                 ) -> dict[str, str]:
    """Write {file name: text} under `out` (a folder or object-store prefix); returns {name: URI}."""
    uris = {}
    for name, text in tables.items():
        uris[name] = join(out, name)
        with atomic_write(uris[name], storage_options) as f:
            f.write(text.encode())
    return uris
