"""`slidegrid encode` and `slidegrid show` as a user runs them."""

from __future__ import annotations

import cv2

from slidegrid.cli import main
from slidegrid.synthetic import SyntheticSpec, write_synthetic_slide


def test_encode_exit_code_counts_failures_and_show_renders(tmp_path, capsys, ray_local):
    archive = tmp_path / "a"
    archive.mkdir()
    for i in range(2):
        write_synthetic_slide(str(archive / f"c{i}.tiff"), SyntheticSpec(width=1024, height=1024, seed=60 + i))
    (archive / "broken.svs").write_text("not a slide")
    code = main(["encode", str(archive), "--out", str(tmp_path / "g"), "--tile-size", "128", "--no-mlflow",
                 "--no-progress"])
    out, err = capsys.readouterr()
    assert code == 1
    assert "2 ok" in out and "1 failed" in out and "tiles/s" in out
    assert "failed: broken:" in err and "not a readable" in err
    rows = {line.split()[0]: line.split()[1] for line in out.splitlines() if line.startswith(("c0 ", "c1 ", "broken "))}
    assert rows == {"c0": "ok", "c1": "ok", "broken": "failed"}  # the per-slide summary table
    png = tmp_path / "show.png"
    assert main(["show", str(tmp_path / "g" / "c0.parquet"), "--out", str(png), "--height", "200"]) == 0
    img = cv2.imread(str(png))
    assert img.shape[0] == 200 and img.shape[1] > 200  # thumbnail + gap + PCA grid side by side
    assert img[:, img.shape[1] // 2 + 10:].std() > 0  # the PCA half is not blank


def test_encode_bad_option_is_one_error_line(tmp_path, capsys):
    code = main(["encode", str(tmp_path), "--out", str(tmp_path / "g"), "--batch-size", "0"])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error: --batch-size:") and "Traceback" not in err
