"""The same slides through s3:// on a real moto S3 server: equal results, clear errors, no secrets in them."""

from __future__ import annotations

import os
import sys

import numpy as np
import pandas as pd
import pytest

from _servers import free_port, serving
from slidegrid.errors import ConfigError, SlideError
from slidegrid.io.archive import list_archive
from slidegrid.io.slides import open_slide
from slidegrid.synth.slides import SyntheticSpec, write_synthetic_slide


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    path = tmp_path_factory.mktemp("s3synth") / "synth.tiff"
    write_synthetic_slide(str(path), SyntheticSpec(width=2048, height=1536, seed=9))
    return path


def _assert_same_slide(remote_uri: str, local) -> None:
    with open_slide(remote_uri) as remote, open_slide(str(local)) as here:
        assert remote.uri == remote_uri
        r, h = remote.info, here.info
        assert (r.dimensions, r.level_downsamples, r.mpp_x, r.vendor, r.file_size) == \
            (h.dimensions, h.level_downsamples, h.mpp_x, h.vendor, h.file_size)
        for x, y, w, mpp in ((100, 100, 256, 0.5), (0, 0, 128, 2.0), (-50, 300, 64, 1.0)):
            np.testing.assert_array_equal(remote.read_region(x, y, w, w, mpp), here.read_region(x, y, w, w, mpp))
        np.testing.assert_array_equal(remote.thumbnail(16.0), here.thumbnail(16.0))


def test_synthetic_slide_reads_equal_local(synth, s3_bucket, s3_upload):
    _assert_same_slide(s3_upload(synth, f"{s3_bucket}/archive/synth.tiff"), synth)


def test_real_sample_reads_equal_local(sample_slide, s3_bucket, s3_upload):
    _assert_same_slide(s3_upload(sample_slide, f"{s3_bucket}/archive/{sample_slide.name}"), sample_slide)


def test_s3_prefix_lists_the_archive(synth, s3_bucket, s3_upload, tmp_path):
    notes = tmp_path / "notes.txt"
    notes.write_text("not a slide")
    uris = [s3_upload(synth, f"{s3_bucket}/archive/{key}") for key in ("a/case.tiff", "b/case.tiff", "c.svs")]
    s3_upload(notes, f"{s3_bucket}/archive/notes.txt")
    s3_upload(synth, f"{s3_bucket}/elsewhere/d.tiff")
    recs = list_archive(f"s3://{s3_bucket}/archive")
    assert [r.uri for r in recs] == sorted(uris)
    ids = [r.slide_id for r in recs]
    assert len(set(ids)) == 3 and "c" in ids and all(i.startswith("case-") for i in ids if i != "c")
    assert [r.uri for r in list_archive(f"s3://{s3_bucket}/archive/*.svs")] == [f"s3://{s3_bucket}/archive/c.svs"]


def test_cohort_table_on_s3_resolves_relative_uris(synth, s3_bucket, s3_upload, tmp_path):
    s3_upload(synth, f"{s3_bucket}/study/slides/s1.tiff")
    pd.DataFrame({"slide_id": ["s1"], "uri": ["slides/s1.tiff"], "label": ["tumor"]}).to_csv(
        tmp_path / "cohort.csv", index=False)
    table = s3_upload(tmp_path / "cohort.csv", f"{s3_bucket}/study/cohort.csv")
    (rec,) = list_archive(table)
    assert rec.uri == f"s3://{s3_bucket}/study/slides/s1.tiff" and rec.label == "tumor"
    with open_slide(rec.uri) as s:
        assert s.info.dimensions == (2048, 1536)


def test_empty_prefix_is_a_clear_error(s3_bucket):
    with pytest.raises(ConfigError, match="no such directory, file or prefix") as err:
        list_archive(f"s3://{s3_bucket}/nothing-here")
    assert err.value.input == f"s3://{s3_bucket}/nothing-here"


def test_missing_key_and_bucket_are_not_found(s3_bucket):
    with pytest.raises(SlideError, match="file not found") as err:
        open_slide(f"s3://{s3_bucket}/archive/nope.svs")
    assert err.value.input == f"s3://{s3_bucket}/archive/nope.svs"
    with pytest.raises(SlideError, match="no such bucket; check the bucket name"):
        open_slide("s3://no-such-bucket-here/x.svs")


def test_unreachable_endpoint(s3_server):
    port = free_port()  # nothing listens on it
    opts = {"client_kwargs": {"endpoint_url": f"http://127.0.0.1:{port}"},
            "config_kwargs": {"retries": {"max_attempts": 1}, "connect_timeout": 1}}
    with pytest.raises(SlideError, match="storage unreachable; check AWS_ENDPOINT_URL"):
        open_slide("s3://bucket/x.svs", storage_options=opts)


@pytest.fixture(scope="module")
def strict_s3():
    """A second moto server that enforces IAM auth (INITIAL_NO_AUTH_ACTION_COUNT=0): unknown keys are refused."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {**os.environ, "INITIAL_NO_AUTH_ACTION_COUNT": "0"}
    with serving([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)], url + "/moto-api/",
                 env=env):
        yield url


SECRET = "wrong-secret-value-123"


def _bad_credentials(endpoint: str) -> dict:
    return {"key": "AKIAWRONGKEY", "secret": SECRET, "client_kwargs": {"endpoint_url": endpoint}}


def test_wrong_credentials_open_is_access_denied_without_the_secret(strict_s3, caplog):
    with caplog.at_level("DEBUG"), pytest.raises(SlideError) as err:
        open_slide("s3://some-bucket/archive/synth.tiff", storage_options=_bad_credentials(strict_s3))
    assert err.value.input == "s3://some-bucket/archive/synth.tiff"
    assert "access denied; check AWS_ACCESS_KEY_ID" in err.value.reason
    assert SECRET not in str(err.value) and SECRET not in caplog.text


def test_wrong_credentials_listing_is_access_denied_without_the_secret(strict_s3):
    with pytest.raises(ConfigError) as err:
        list_archive("s3://some-bucket/archive", storage_options=_bad_credentials(strict_s3))
    assert "access denied" in err.value.reason and SECRET not in str(err.value)
