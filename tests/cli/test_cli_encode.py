"""`slidegrid encode` and `slidegrid show` as a user runs them."""

from __future__ import annotations

import cv2

from slidegrid.cli import main
from slidegrid.io.manifest import read_manifest
from slidegrid.synth.slides import SyntheticSpec, write_synthetic_slide


def test_encode_exit_code_counts_failures_and_show_renders(tmp_path, capsys, ray_local):
    archive = tmp_path / "a"
    archive.mkdir()
    for i in range(2):
        write_synthetic_slide(str(archive / f"c{i}.tiff"), SyntheticSpec(width=1024, height=1024, seed=60 + i))
    (archive / "broken.svs").write_text("not a slide")
    (archive / "notes.txt").write_text("scanner notes")  # not a slide: a manifest row says so
    (archive / ".DS_Store").write_bytes(b"\0")  # hidden: not archive content at all
    code = main(["encode", str(archive), "--out", str(tmp_path / "g"), "--tile-size", "128", "--no-mlflow",
                 "--no-progress"])
    out, err = capsys.readouterr()
    assert code == 3  # "some slides failed": distinct from 2, a configuration error
    assert "2 ok" in out and "1 failed" in out and "1 skipped (not slides)" in out and "tiles/s" in out
    assert "failed: broken:" in err and "not a readable" in err
    rows = {line.split()[0]: line.split()[1] for line in out.splitlines() if line.startswith(("c0 ", "c1 ", "broken "))}
    assert rows == {"c0": "ok", "c1": "ok", "broken": "failed"}  # the per-slide summary table
    manifest = read_manifest(str(tmp_path / "g" / "_manifest.parquet"))
    assert sorted(manifest) == ["broken", "c0", "c1", "notes.txt"]
    assert manifest["notes.txt"]["status"] == "skipped_not_a_slide" and manifest["notes.txt"]["tiles"] == 0
    assert "'.txt' is not a slide format" in manifest["notes.txt"]["error"]
    assert manifest["notes.txt"]["uri"] == str(archive / "notes.txt")
    png = tmp_path / "show.png"
    assert main(["show", str(tmp_path / "g" / "c0.parquet"), "--out", str(png), "--height", "200"]) == 0
    img = cv2.imread(str(png))
    assert img.shape[0] == 200 and img.shape[1] > 200  # thumbnail + gap + PCA grid side by side
    assert img[:, img.shape[1] // 2 + 10:].std() > 0  # the PCA half is not blank


def test_encode_bad_option_is_one_error_line(tmp_path, capsys):
    code = main(["encode", str(tmp_path), "--out", str(tmp_path / "g"), "--batch-size", "0"])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error: --batch-size:") and "Traceback" not in err


def test_encode_lists_every_cohort_table_problem_before_any_work(tmp_path, capsys):
    """All problems of a table in one error (exit 2), before the grid store is even created."""
    (tmp_path / "c.csv").write_text("slide_id,uri,label,patient_id\nS01,S01.svs,1,P1\nS01,S01.svs,0,P1\n"
                                    "S02,S02.svs,0,P2\nS02b,S02.svs,0,P3\nNA,NA.svs,1,P4\n")
    for name in ("S02.svs", "NA.svs"):  # S01.svs is missing
        (tmp_path / name).write_bytes(b"stub")
    code = main(["encode", str(tmp_path / "c.csv"), "--out", str(tmp_path / "g"), "--no-mlflow", "--no-progress"])
    err = capsys.readouterr().err.splitlines()
    assert code == 2
    assert err[0] == f"error: {tmp_path / 'c.csv'}: 4 problems in the cohort table; fix them all and re-run:"
    assert [line.split(":")[0].strip() for line in err[1:]] == ["row 2", "rows 2, 3", "row 3", "rows 4, 5"]
    assert "file not found" in err[1] and "label '1' (row 2), '0' (row 3)" in err[2] and "file not found" in err[3]
    assert "'S02' (row 4, patient 'P2'), 'S02b' (row 5, patient 'P3')" in err[4]
    assert not (tmp_path / "g").exists()
