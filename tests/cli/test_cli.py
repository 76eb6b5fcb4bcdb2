"""The `slidegrid` command as a user meets it: info, synth, tissue, tiles; one-line errors, exit code 2."""

from __future__ import annotations

import json
import subprocess
import sys

import pyarrow.parquet as pq
import pytest

from slidegrid.cli import main
from slidegrid.io.slides import open_slide


def test_info_text_and_json(sample_slide, capsys):
    with open_slide(str(sample_slide)) as s:
        info = s.info
    assert main(["info", str(sample_slide)]) == 0
    out = capsys.readouterr().out
    w, h = info.dimensions
    assert f"dimensions: {w} × {h} px" in out and f"{info.mpp_x:.4f}" in out and "(metadata:aperio)" in out
    assert f"levels:     {info.level_count}" in out and str(sample_slide) in out
    assert main(["info", str(sample_slide), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["dimensions"] == [w, h] and data["level_count"] == info.level_count
    assert data["mpp_x"] == info.mpp_x and data["file_size"] == sample_slide.stat().st_size


def test_info_with_mpp_override(edge_dir, capsys):
    assert main(["info", str(edge_dir / "boxes.tiff"), "--mpp-override", "0.25", "--json"]) == 0
    captured = capsys.readouterr()
    data = json.loads(captured.out)
    assert data["mpp_x"] == 0.25 and data["mpp_source"] == "override" and data["warnings"] == []


def test_info_warns_about_implausible_mpp(edge_dir, capsys):
    assert main(["info", str(edge_dir / "boxes.tiff")]) == 0
    assert "implausible" in capsys.readouterr().err


@pytest.mark.parametrize("make", ["missing", "text"])
def test_errors_are_one_line_with_exit_code_2(tmp_path, capsys, make):
    path = tmp_path / "x.svs"
    if make == "text":
        path.write_text("hello")
    assert main(["info", str(path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"error: {path}:") and "Traceback" not in err[0]


@pytest.mark.parametrize("debug", [False, True])
def test_console_errors_and_debug_traceback(tmp_path, debug):
    """As a user runs it: a clean one-line error on stderr, or with --debug the full traceback."""
    missing = tmp_path / "missing.svs"
    argv = [sys.executable, "-m", "slidegrid.cli", *(["--debug"] if debug else []), "info", str(missing)]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=120)
    if debug:
        assert proc.returncode == 1 and "Traceback (most recent call last)" in proc.stderr
        assert "SlideError" in proc.stderr and str(missing) in proc.stderr
    else:
        assert proc.returncode == 2 and proc.stdout == ""
        assert proc.stderr.strip() == f"error: {missing}: file not found; check the path or URI " \
                                      "(and the bucket/prefix for s3://)"


def test_bad_storage_options_json(sample_slide, capsys):
    assert main(["info", str(sample_slide), "--storage-options", "{not json"]) == 2
    assert capsys.readouterr().err.startswith("error: --storage-options: not valid JSON")


def test_synth_tissue_tiles(tmp_path, capsys):
    assert main(["synth", str(tmp_path / "arch"), "--n", "2", "--size", "1024", "--seed", "3",
                 "--no-progress"]) == 0
    slide = sorted((tmp_path / "arch" / "slides").iterdir())[0]
    assert (tmp_path / "arch" / "cohort.csv").exists()
    assert main(["tissue", str(slide), "--out", str(tmp_path / "t")]) == 0
    out = capsys.readouterr().out
    assert "tissue fraction:" in out
    assert (tmp_path / "t" / f"{slide.stem}_tissue_mask.png").exists()
    assert (tmp_path / "t" / f"{slide.stem}_tissue_overlay.png").exists()
    assert main(["tiles", str(slide), "--mpp", "0.5", "--tile-size", "128", "--stride", "64", "--out",
                 str(tmp_path / "tiles.parquet")]) == 0
    table = pq.read_table(tmp_path / "tiles.parquet")
    assert table.column_names == ["row", "col", "x", "y", "tissue"] and table.num_rows > 0
    meta = json.loads(table.schema.metadata[b"slidegrid"])
    assert meta["stride"] == 64 and meta["tile_size"] == 128


def test_unwritable_output_is_one_error_line(tmp_path, capsys, sample_slide):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    assert main(["tissue", str(sample_slide), "--out", str(blocker / "sub")]) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"error: {blocker / 'sub'}: Not a directory"
