"""The encoding job end to end on a real local Ray: grids, manifest, resume, faults, encoders."""

from __future__ import annotations

import os
import shutil

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import tiffslide

from slidegrid.encode import EncodeConfig, run_encode, settings_hash
from slidegrid.errors import ConfigError
from slidegrid.geometry.tiling import GridSpec
from slidegrid.io.grids import MANIFEST_NAME, grid_uri, read_grid
from slidegrid.io.manifest import read_manifest
from slidegrid.synth.slides import SyntheticSpec, write_synthetic_slide


def _archive(root, n=3, size=1536, seed=0, corrupt=True, blank=True):
    slides = root / "archive"
    slides.mkdir()
    for i in range(n):
        write_synthetic_slide(str(slides / f"s{i}.tiff"),
                              SyntheticSpec(width=size, height=size, seed=seed + i, n_tumours=i % 2))
    if corrupt:
        good = (slides / "s0.tiff").read_bytes()
        (slides / "corrupt.tiff").write_bytes(good[: len(good) // 2])
    if blank:
        write_synthetic_slide(str(slides / "glass.tiff"), SyntheticSpec(width=1024, height=1024, blank=True))
    return slides


@pytest.fixture(scope="module")
def archive(tmp_path_factory):
    return _archive(tmp_path_factory.mktemp("enc"))


def _config(archive, out, **kw):
    base = dict(input=str(archive), out=str(out), encoder="mean-rgb", grid=GridSpec(mpp=0.5, tile_size=128),
                dtype="float32", progress=False, mlflow=False)
    base.update(kw)
    return EncodeConfig(**base)


@pytest.fixture(scope="module")
def encoded(archive, tmp_path_factory, ray_local):
    out = tmp_path_factory.mktemp("grids")
    results = run_encode(_config(archive, out, mlflow=True)).results
    return out, results


def test_every_slide_has_an_outcome(encoded, archive):
    out, results = encoded
    by_id = {r.slide_id: r for r in results}
    assert {by_id[f"s{i}"].status for i in range(3)} == {"ok"}
    assert by_id["corrupt"].status == "failed" and by_id["corrupt"].error
    assert by_id["glass"].status == "skipped_no_tissue"
    manifest = read_manifest(os.path.join(out, MANIFEST_NAME))
    assert set(manifest) == {"s0", "s1", "s2", "corrupt", "glass"}
    assert manifest["corrupt"]["status"] == "failed"
    assert all(manifest[f"s{i}"]["tiles"] > 0 for i in range(3))
    assert not os.path.exists(grid_uri(str(out), "corrupt"))
    assert read_manifest(str(out)) == manifest  # the grid store's folder names its manifest too


def test_mean_rgb_is_numpy_float64_mean_bit_for_bit():
    from slidegrid.encoders.mean_rgb import MeanRGBEncoder

    tiles = np.random.default_rng(0).integers(0, 256, (5, 37, 53, 3), dtype=np.uint8)
    tiles[0] = 255  # the largest sums
    expected = (tiles.reshape(5, -1, 3).mean(axis=1, dtype=np.float64) / 255.0).astype(np.float32)
    np.testing.assert_array_equal(MeanRGBEncoder().encode(tiles), expected)


def test_mean_rgb_equals_independent_tile_means(encoded, archive):
    out, _ = encoded
    for i in range(3):
        grid = read_grid(grid_uri(str(out), f"s{i}"))
        assert grid.code_size == 3 and len(grid.row) == grid.meta["n_tiles"]
        ts = tiffslide.TiffSlide(str(archive / f"s{i}.tiff"))
        rng = np.random.default_rng(i)
        for k in rng.choice(len(grid.row), size=min(20, len(grid.row)), replace=False):
            tile = ts.read_region((int(grid.x[k]), int(grid.y[k])), 0, (128, 128), as_array=True)[..., :3]
            np.testing.assert_allclose(grid.embedding[k], tile.reshape(-1, 3).mean(0) / 255.0, atol=1e-6)
        # grid index <-> level-0 coordinates (slide mpp 0.5 = target: one tile = 128 level-0 px)
        np.testing.assert_array_equal(grid.x, grid.col.astype(np.int64) * 128)
        np.testing.assert_array_equal(grid.y, grid.row.astype(np.int64) * 128)
        dense, mask = grid.dense()
        assert dense.shape == (3, *grid.shape) and mask.sum() == len(grid.row)
        assert (grid.tissue >= 0.25).all()


def test_grid_file_contract(encoded):
    out, _ = encoded
    f = pq.ParquetFile(grid_uri(str(out), "s0"))
    schema = f.schema_arrow
    assert [schema.field(c).type for c in ("row", "col", "x", "y", "tissue")] == [
        "int32", "int32", "int64", "int64", "float"]
    emb = schema.field("embedding").type
    assert pa.types.is_fixed_size_list(emb) and emb.list_size == 3 and emb.value_type == pa.float32()
    meta = read_grid(grid_uri(str(out), "s0")).meta
    for key in ("slide_id", "source_uri", "slide_mpp", "target_mpp", "tile_size", "stride", "grid_shape",
                "encoder", "weights_digest", "settings_hash", "slidegrid_version"):
        assert key in meta, key


def test_rerun_skips_overwrite_redoes_and_settings_change_the_hash(encoded, archive):
    out, _ = encoded
    path = grid_uri(str(out), "s1")
    before = os.stat(path).st_mtime_ns
    again = {r.slide_id: r for r in run_encode(_config(archive, out)).results}
    assert again["s1"].reused and again["glass"].reused and not again["corrupt"].reused
    assert os.stat(path).st_mtime_ns == before
    redo = {r.slide_id: r for r in run_encode(_config(archive, out, overwrite=True)).results}
    assert not redo["s1"].reused and os.stat(path).st_mtime_ns != before
    smaller = _config(archive, out, grid=GridSpec(mpp=0.5, tile_size=64))
    assert settings_hash(_config(archive, out), "none") != settings_hash(smaller, "none")
    assert settings_hash(_config(archive, out), "none") != settings_hash(_config(archive, out), "other-weights")


def test_encode_is_logged_to_mlflow(encoded):
    import mlflow

    out, _ = encoded
    mlflow.set_tracking_uri(f"sqlite:///{out}/mlflow/mlflow.db")
    runs = mlflow.search_runs(experiment_names=["slidegrid-encode"], output_format="list")
    assert runs and runs[0].data.metrics["slides_failed"] == 1
    assert runs[0].data.params["encoder"] == "mean-rgb"
    artifacts = mlflow.artifacts.list_artifacts(run_id=runs[0].info.run_id)
    assert any(a.path == "manifest.parquet" for a in artifacts)


def test_timm_random_weights_end_to_end(tmp_path, ray_local):
    archive = tmp_path / "a"
    archive.mkdir()
    write_synthetic_slide(str(archive / "t.tiff"), SyntheticSpec(width=1024, height=1024, seed=3))
    results = run_encode(_config(archive, tmp_path / "g", encoder="timm:resnet18", weights="random",
                                 grid=GridSpec(mpp=0.5, tile_size=64), dtype="float16")).results
    assert [r.status for r in results] == ["ok"]
    grid = read_grid(grid_uri(str(tmp_path / "g"), "t"))
    assert grid.code_size == 512 and grid.embedding.dtype == np.float16
    assert np.isfinite(grid.embedding.astype(np.float32)).all() and grid.embedding.std() > 0


def test_timm_without_weights_is_a_clear_error(tmp_path):
    with pytest.raises(ConfigError, match="--weights"):
        run_encode(_config(tmp_path, tmp_path / "g", encoder="timm:resnet18"))


def test_missing_weight_file_is_a_clear_error(tmp_path, archive):
    with pytest.raises(ConfigError, match="not found"):
        run_encode(_config(archive, tmp_path / "g", encoder="timm:resnet18", weights=str(tmp_path / "no.pt")))


def test_local_weights_change_the_embedding_and_hash(tmp_path, ray_local):
    import timm
    import torch

    archive = tmp_path / "a"
    archive.mkdir()
    write_synthetic_slide(str(archive / "w.tiff"), SyntheticSpec(width=768, height=768, seed=5))
    model = timm.create_model("resnet18", pretrained=False, num_classes=0)
    torch.save(model.state_dict(), tmp_path / "w.pt")
    r = run_encode(_config(archive, tmp_path / "g", encoder="timm:resnet18", weights=str(tmp_path / "w.pt"),
                           grid=GridSpec(mpp=0.5, tile_size=64))).results
    assert r[0].status == "ok"
    meta = read_grid(grid_uri(str(tmp_path / "g"), "w")).meta
    assert meta["weights_digest"] not in ("random", "none")


def test_unknown_encoder_lists_choices(tmp_path):
    # Refused by the config itself, before any run (nothing built, no Ray).
    for name in ("nope", "timm:", "nope:resnet18"):
        with pytest.raises(ConfigError, match="unknown encoder .*mean-rgb"):
            _config(tmp_path, tmp_path / "g", encoder=name)
    assert _config(tmp_path, tmp_path / "g", encoder="timm:resnet18").encoder == "timm:resnet18"


def test_s3_archive_to_s3_grids(tmp_path, ray_local, s3_bucket):
    import boto3
    import s3fs

    archive = _archive(tmp_path, n=2, size=1024, corrupt=False, blank=False)
    fs = s3fs.S3FileSystem()
    for f in archive.iterdir():
        fs.put(str(f), f"{s3_bucket}/slides/{f.name}")
    client = boto3.client("s3")
    client.put_bucket_versioning(Bucket=s3_bucket, VersioningConfiguration={"Status": "Enabled"})
    out = f"s3://{s3_bucket}/grids"
    results = run_encode(_config(f"s3://{s3_bucket}/slides", out)).results
    assert sorted(r.status for r in results) == ["ok", "ok"], [r.error for r in results]
    # Each grid was written once, by one single-part PUT (a multipart upload's ETag ends in -N); the staging
    # parts the workers wrote are gone and no upload was left open.
    versions = client.list_object_versions(Bucket=s3_bucket, Prefix="grids/")
    grids = [v for v in versions["Versions"] if v["Key"].endswith(".parquet") and "/.staging/" not in v["Key"]]
    assert sorted(v["Key"] for v in grids if v["Key"] != f"grids/{MANIFEST_NAME}") == ["grids/s0.parquet",
                                                                                     "grids/s1.parquet"]
    assert all("-" not in v["ETag"] for v in grids)
    staged = [v["Key"] for v in versions["Versions"] if "/.staging/" in v["Key"]]
    assert staged, "the workers staged no parts on S3"
    left = client.list_objects_v2(Bucket=s3_bucket, Prefix="grids/.staging/").get("Contents")
    assert not left, f"staging objects were left on S3: {left}"
    assert not client.list_multipart_uploads(Bucket=s3_bucket).get("Uploads")
    local = run_encode(_config(archive, tmp_path / "local")).results
    for r in local:
        a, b = read_grid(grid_uri(out, r.slide_id)), read_grid(grid_uri(str(tmp_path / "local"), r.slide_id))
        np.testing.assert_array_equal(a.embedding, b.embedding)
    assert {r.slide_id for r in run_encode(_config(f"s3://{s3_bucket}/slides", out)).results if r.reused} == {"s0", "s1"}
    shutil.rmtree(tmp_path / "local")
