"""Listing archives: folders, globs, cohort tables; ids safe as file names and unique."""

from __future__ import annotations

import pandas as pd
import pytest

from slidegrid.archive import list_archive, safe_slide_id
from slidegrid.errors import ConfigError


def _touch(p):
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_bytes(b"x")
    return p


def test_directory_and_glob(tmp_path):
    _touch(tmp_path / "a" / "one.svs")
    _touch(tmp_path / "a" / "two.tiff")
    _touch(tmp_path / "a" / "notes.txt")
    _touch(tmp_path / "a" / ".hidden.svs")
    assert [r.slide_id for r in list_archive(str(tmp_path / "a"))] == ["one", "two"]
    assert [r.slide_id for r in list_archive(str(tmp_path / "a" / "*.svs"))] == ["one"]


def test_same_name_in_two_folders_gets_unique_ids(tmp_path):
    _touch(tmp_path / "x" / "case 1.svs")
    _touch(tmp_path / "y" / "case 1.svs")
    ids = [r.slide_id for r in list_archive(str(tmp_path))]
    assert len(set(ids)) == 2 and all(i.startswith("case_1-") for i in ids)


@pytest.mark.parametrize("name", ["../../etc/passwd.svs", "a/b\\c.svs", "x\x00y.svs", "..svs", "ü ñ.tif"])
def test_derived_ids_are_safe_file_names(name):
    sid = safe_slide_id(name)
    assert sid and "/" not in sid and "\\" not in sid and ".." not in sid and sid.isascii()
    assert all(c.isalnum() or c in "._-" for c in sid)


def test_cohort_csv_and_parquet_with_typed_columns(tmp_path):
    df = pd.DataFrame({"slide_id": ["s1", "s2"], "uri": ["slides/s1.svs", "/abs/s2.svs"], "label": ["tumor", "normal"],
                       "target": [1.5, None], "fold": [0, 1], "patient_id": ["p1", "p1"], "site": ["A", "B"]})
    df.to_csv(tmp_path / "cohort.csv", index=False)
    df.to_parquet(tmp_path / "cohort.parquet")
    for table in ("cohort.csv", "cohort.parquet"):
        recs = list_archive(str(tmp_path / table))
        assert [r.slide_id for r in recs] == ["s1", "s2"]
        assert recs[0].uri == str(tmp_path / "slides" / "s1.svs")  # relative to the table
        assert recs[0].fold == 0 and type(recs[0].fold) is int and recs[1].fold == 1
        assert recs[0].target == 1.5 and type(recs[0].target) is float and recs[1].target is None
        assert recs[0].label == "tumor" and recs[0].patient_id == "p1" and recs[0].annotation is None
        assert recs[0].extra == {"site": "A"}


def test_cohort_cells_keep_their_spelling(tmp_path):
    """Numeric-looking ids and labels stay text; a Parquet column with gaps stores 1 as 1.0, which must not leak."""
    (tmp_path / "c.csv").write_text("slide_id,uri,label,fold,patient_id\n007,a.svs,1,2,0042\n008,b.svs,,,0043\n")
    pd.DataFrame({"slide_id": ["007", "008"], "uri": ["a.svs", "b.svs"], "label": [1.0, None],
                  "fold": [2.0, None], "patient_id": ["0042", "0043"]}).to_parquet(tmp_path / "c.parquet")
    for table in ("c.csv", "c.parquet"):
        a, b = list_archive(str(tmp_path / table))
        assert (a.slide_id, a.label, a.fold, a.patient_id) == ("007", "1", 2, "0042")
        assert b.label is None and b.fold is None


@pytest.mark.parametrize(("column", "value", "reason"), [("fold", "1.5", "not a valid int"),
                                                         ("target", "high", "not a valid float"),
                                                         ("slide_id", "", "empty slide_id"),
                                                         ("uri", "", "empty uri")])
def test_bad_cohort_cell_names_the_row(tmp_path, column, value, reason):
    df = pd.DataFrame({"slide_id": ["a", "b"], "uri": ["a.svs", "b.svs"], "fold": ["0", "1"], "target": ["1", "2"]})
    df.loc[1, column] = value
    df.to_csv(tmp_path / "c.csv", index=False)
    with pytest.raises(ConfigError, match=reason) as err:
        list_archive(str(tmp_path / "c.csv"))
    assert err.value.input == f"{tmp_path / 'c.csv'} row 3"


def test_single_slide_is_an_archive_of_one(tmp_path):
    (rec,) = list_archive(str(_touch(tmp_path / "only one.svs")))
    assert rec.slide_id == "only_one" and rec.uri == str(tmp_path / "only one.svs")


def test_missing_cohort_table(tmp_path):
    with pytest.raises(ConfigError, match="file not found") as err:
        list_archive(str(tmp_path / "cohort.csv"))
    assert err.value.input == str(tmp_path / "cohort.csv")


def test_empty_archive(tmp_path):
    with pytest.raises(ConfigError, match="no slides found"):
        list_archive(str(tmp_path))


def test_missing_archive(tmp_path):
    with pytest.raises(ConfigError, match="no such"):
        list_archive(str(tmp_path / "nowhere"))


def test_cohort_slide_id_with_dotdot_is_refused_naming_the_row(tmp_path):
    pd.DataFrame({"slide_id": ["ok", "../evil"], "uri": ["a.svs", "b.svs"]}).to_csv(tmp_path / "c.csv", index=False)
    with pytest.raises(ConfigError) as err:
        list_archive(str(tmp_path / "c.csv"))
    assert "row 3" in str(err.value) and "../evil" in str(err.value)


def test_cohort_without_required_columns(tmp_path):
    pd.DataFrame({"path": ["a.svs"]}).to_csv(tmp_path / "c.csv", index=False)
    with pytest.raises(ConfigError, match="slide_id"):
        list_archive(str(tmp_path / "c.csv"))


def test_cohort_duplicate_ids(tmp_path):
    pd.DataFrame({"slide_id": ["a", "a"], "uri": ["a.svs", "b.svs"]}).to_csv(tmp_path / "c.csv", index=False)
    with pytest.raises(ConfigError, match="duplicate"):
        list_archive(str(tmp_path / "c.csv"))
