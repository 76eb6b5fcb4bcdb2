"""The slide-stream skeleton (stream/): the model stage's workers write, the driver only coordinates; every
slide committed once, whatever fails."""

from __future__ import annotations

import glob
import os
import warnings

import numpy as np
import pytest

from _cases import synthetic_archive
from slidegrid.encode import EncodeConfig, run_encode
from slidegrid.errors import SlidegridError
from slidegrid.geometry.tiling import GridSpec
from slidegrid.io.grids import MANIFEST_NAME, grid_uri, read_grid, read_grid_meta
from slidegrid.io.manifest import read_manifest
from slidegrid.stream import done_slides
from slidegrid.stream.pipeline import RECORD_COLUMNS, write_parts
from slidegrid.stream.staging import STAGING, part_uri, read_parts

TILE = 128


@pytest.fixture(scope="module")
def archive(tmp_path_factory):
    return synthetic_archive(tmp_path_factory.mktemp("stream"), "s", 3, 1536, seed=70)


def _config(archive, out, **kw):
    return EncodeConfig(input=str(archive), out=str(out), dtype="float32", mlflow=False, progress=False, **kw,
                        grid=GridSpec(tile_size=TILE))


def test_driver_receives_only_records(archive, tmp_path, ray_local):
    from ray.util.annotations import RayDeprecationWarning

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        report = run_encode(_config(archive, tmp_path / "g"))
    # No Ray API the pinned version deprecates (ray_remote_args_fn, **ray_remote_args: removed in Ray 2.64).
    assert not [w for w in caught if issubclass(w.category, RayDeprecationWarning)]
    assert [r.status for r in report.results] == ["ok"] * 3
    stream = report.stream
    # What reached the driver: one record per (batch, slide): ids, outcome, part name, tile indices. No embedding.
    assert stream.driver_columns == set(RECORD_COLUMNS)
    assert "embedding" not in stream.driver_columns and "image" not in stream.driver_columns
    assert stream.tiles == report.tiles == sum(r.tiles for r in report.results) > 0
    assert not os.path.exists(tmp_path / "g" / STAGING), "a successful run leaves no staging"
    for r in report.results:  # the grids the commit tasks wrote: whole, ordered by tile index, right count
        g = read_grid(grid_uri(str(tmp_path / "g"), r.slide_id))
        assert len(g.row) == r.tiles == g.meta["n_tiles"] and g.code_size == 3
        assert "plan_started" not in g.meta


def test_a_failing_commit_fails_its_slide_only(archive, tmp_path, ray_local):
    out = tmp_path / "g"
    (out / "s1.parquet").mkdir(parents=True)  # the grid's final name is taken by a folder: its commit fails
    results = {r.slide_id: r for r in run_encode(_config(archive, out)).results}
    assert results["s1"].status == "failed" and "IsADirectoryError" in results["s1"].error
    assert results["s0"].status == results["s2"].status == "ok"
    assert read_manifest(str(out / MANIFEST_NAME))["s1"]["status"] == "failed"
    assert not os.path.exists(out / STAGING)


def test_parts_are_named_by_their_tiles_and_merged_once(tmp_path):
    out = str(tmp_path)
    batch = {"slide_id": np.array(["a", "a", "b", "c"]), "status": np.array(["ok", "ok", "ok", "failed"]),
             "error": np.array(["", "", "", "bad tile"]), "n_tiles": np.array([4, 4, 2, 0]),
             "meta": np.array(['{"k": 1}', "", "", ""], dtype=object), "index": np.array([0, 1, 1, -1]),
             "embedding": np.arange(8, dtype=np.float32).reshape(4, 2)}
    recs = write_parts(batch, out, ("embedding",))
    assert list(recs["slide_id"]) == ["a", "b", "c"] and list(recs["status"]) == ["ok", "ok", "failed"]
    assert recs["part"][2] == "" and recs["error"][2] == "bad tile" and recs["meta"][0] == '{"k": 1}'
    np.testing.assert_array_equal(np.frombuffer(recs["indices"][0], np.int32), [0, 1])
    assert recs["part"][0] == part_uri(out, "a", np.array([0, 1]))  # the same rows, the same name
    # A retry that batched differently wrote an overlapping part: each tile is kept once, in tile order.
    again = write_parts({**batch, "slide_id": np.array(["a", "a", "a", "a"]), "status": np.array(["ok"] * 4),
                         "n_tiles": np.array([4] * 4), "index": np.array([3, 1, 2, 0])}, out, ("embedding",))
    cols = read_parts([recs["part"][0], again["part"][0]], 4)
    np.testing.assert_array_equal(cols["index"], [0, 1, 2, 3])
    np.testing.assert_array_equal(cols["embedding"][:, 0], [0, 2, 4, 0])  # first part wins
    with pytest.raises(SlidegridError, match="2 of 4 tiles"):  # a part lost after the driver counted it
        read_parts([recs["part"][0]], 4)


def test_resume_reads_footers_only_where_manifest_and_listing_disagree(archive, tmp_path, ray_local):
    from slidegrid.io.archive import list_archive
    from slidegrid.io.manifest import SlideResult

    out = tmp_path / "g"
    first = run_encode(_config(archive, out))
    shash = read_grid_meta(grid_uri(str(out), "s0"))["settings_hash"]
    records = list_archive(str(archive))
    previous = read_manifest(str(out / MANIFEST_NAME))
    looked: list[str] = []

    def verify(rec):
        looked.append(rec.slide_id)
        return SlideResult(rec.slide_id, rec.uri, "ok", 1, 0.0, "", shash, reused=True)

    present = {f"s{i}.parquet" for i in range(3)}
    name = lambda sid: f"{sid}.parquet"  # noqa: E731
    assert set(done_slides(records, shash, previous, present, name, verify)) == {"s0", "s1", "s2"}
    assert looked == []  # manifest and listing agree: no file opened
    del previous["s1"]  # a driver killed before its manifest flush: the file is there, the row is not
    assert set(done_slides(records, shash, previous, present, name, verify)) == {"s0", "s1", "s2"}
    assert looked == ["s1"]
    # An ok row whose grid is gone is redone; a different settings hash is redone.
    assert set(done_slides(records, shash, previous, present - {"s2.parquet"}, name, None)) == {"s0"}
    assert done_slides(records, "other", read_manifest(str(out / MANIFEST_NAME)), present, name, None) == {}
    # The re-run through run_encode: all reused, nothing streamed.
    again = run_encode(_config(archive, out))
    assert again.stream is None and all(r.reused for r in again.results)
    # Slides end in any order (results follow them); compare slide by slide.
    assert {r.slide_id: r.tiles for r in again.results} == {r.slide_id: r.tiles for r in first.results}
    assert not glob.glob(str(out / ".*.tmp"))


def test_staging_removal_outlasts_a_worker_still_writing_its_last_parts(tmp_path):
    """A re-run clears the staging a killed run left while that run's orphaned workers may still write a part or
    two: files that appear while the folder is being removed are removed on the next pass, not an error."""
    import threading
    import time

    from slidegrid.stream.staging import remove

    slide = tmp_path / STAGING / "s0"
    slide.mkdir(parents=True)
    for i in range(3000):  # enough that removal takes a while: the writer lands inside it
        (slide / f"p{i}.npz").write_bytes(b"x")
    first = slide / "p0.npz"

    def orphan() -> None:  # writes two last parts once removal has begun, then stops (its driver is gone)
        deadline = time.time() + 30
        while first.exists() and time.time() < deadline:
            pass
        for name in ("late0.npz", "late1.npz"):
            try:
                (slide / name).write_bytes(b"x")
            except FileNotFoundError:
                return

    t = threading.Thread(target=orphan)
    t.start()
    remove(str(tmp_path / STAGING))
    t.join()
    assert not (tmp_path / STAGING).exists()
