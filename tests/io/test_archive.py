"""Listing archives: folders, globs, cohort tables; ids safe as file names and unique."""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

import pandas as pd
import pytest

from slidegrid.errors import ConfigError
from slidegrid.io.archive import list_archive, read_cohort, safe_slide_id, scan_archive


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
        recs = read_cohort(str(tmp_path / table))
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
        a, b = read_cohort(str(tmp_path / table))
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
        read_cohort(str(tmp_path / "c.csv"))
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
        read_cohort(str(tmp_path / "c.csv"))
    assert "row 3" in str(err.value) and "../evil" in str(err.value)


def test_cohort_without_required_columns(tmp_path):
    pd.DataFrame({"path": ["a.svs"]}).to_csv(tmp_path / "c.csv", index=False)
    with pytest.raises(ConfigError, match="slide_id"):
        read_cohort(str(tmp_path / "c.csv"))


def test_cohort_duplicate_ids(tmp_path):
    pd.DataFrame({"slide_id": ["a", "a"], "uri": ["a.svs", "b.svs"]}).to_csv(tmp_path / "c.csv", index=False)
    with pytest.raises(ConfigError, match="duplicate"):
        read_cohort(str(tmp_path / "c.csv"))


# -- cohort tables as people make them (../shared/data/realworld/cases/14-cohort-table-defects) ---------------

CASES = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "realworld" / "cases" / "14-cohort-table-defects"


@pytest.fixture
def cases() -> Path:
    if not CASES.is_dir():
        pytest.skip(f"no cohort-table cases in {CASES}")
    return CASES


def test_case_ids_are_text_na_and_00123_kept(cases):
    recs = list_archive(str(cases / "cohort_pandas_coercion.csv"))
    assert [(r.slide_id, r.label, r.patient_id, r.fold) for r in recs] == [
        ("00123", "1", "None", 0), ("NA", "1.0", "P9", None), ("S01", "0", "P1", 1)]
    assert [r.uri for r in recs] == [str(cases / "slides" / f"{i}.tiff") for i in ("00123", "NA", "S01")]


def test_case_semicolon_table_with_decimal_commas(cases):
    recs = list_archive(str(cases / "cohort_semicolon.csv"))
    assert [(r.slide_id, r.target, r.patient_id) for r in recs] == [("S01", 0.75, "P1"), ("S02", 1.5, "P2")]
    assert all(type(r.target) is float for r in recs)


def test_case_excel_bom_and_crlf_with_padded_cells(cases):
    recs = list_archive(str(cases / "cohort_excel_bom_crlf.csv"))
    assert [(r.slide_id, r.label, r.fold) for r in recs] == [("S01", "1", 0), ("S02", "0", 1), ("S03", "1", 0)]
    assert recs[1].uri == str(cases / "slides" / "S02.tiff")  # "slides/S02.tiff " stripped


def test_case_duplicates_every_problem_at_once_with_rows(cases, caplog):
    table = str(cases / "cohort_duplicates.csv")
    with caplog.at_level(logging.WARNING, logger="slidegrid.io.archive"), pytest.raises(ConfigError) as err:
        list_archive(table)
    assert err.value.input == table
    first, *problems = err.value.reason.splitlines()
    assert first.startswith("3 problems") and len(problems) == 3
    s03, s04, s05 = (p.strip() for p in problems)
    assert s03.startswith("rows 4, 5: slide_id 'S03'") and "label '1' (row 4), '0' (row 5)" in s03
    assert s04.startswith("rows 6, 7: slide_id 'S04' is in two patients") and "'P4' (row 6), 'P5' (row 7)" in s04
    assert s05.startswith("rows 8, 9: file slides/S05.tiff is listed under two slide ids in two patients")
    assert "'S05' (row 8, patient 'P6')" in s05 and "'S05b' (row 9, patient 'P7')" in s05
    # The exact repeat of S02 (rows 2, 3) is no error: one is kept, with a warning.
    assert any("rows 2, 3" in m and "'S02'" in m and "identical" in m for m in caplog.messages)


def test_case_missing_files_are_all_listed(cases):
    table = str(cases / "cohort_missing_files.csv")
    with pytest.raises(ConfigError) as err:
        list_archive(table)
    lines = err.value.reason.splitlines()
    assert lines[0].startswith("2 problems") and len(lines) == 3
    assert lines[1].strip() == f"row 3: file not found: {cases / 'slides' / 'S06.tiff'}"
    assert lines[2].strip().startswith(f"row 4: file not found: {cases / 'slides' / 'S02.TIFF'}")
    assert "S02.tiff exists there" in lines[2]
    # Training on grids reads the table without the slides: no file check there.
    assert [r.slide_id for r in read_cohort(table)] == ["S01", "S06", "S02"]


# -- cohort tables: other inputs of the same kinds ---------------------------------------------------------------


def test_tab_separated_table_with_decimal_comma_and_quoted_cells(tmp_path):
    (tmp_path / "c.tsv.csv").write_text('slide_id\turi\ttarget\tlabel\n NA \t a b.svs\t0,5\t"x\ty"\n'
                                        '00456\tb.svs\t-2\t\n')
    a, b = read_cohort(str(tmp_path / "c.tsv.csv"))
    assert (a.slide_id, a.uri, a.target, a.label) == ("NA", str(tmp_path / "a b.svs"), 0.5, "x\ty")
    assert (b.slide_id, b.target, b.label) == ("00456", -2.0, None)


def test_decimal_comma_is_not_guessed_in_a_comma_table(tmp_path):
    """In a ','-separated table "1,500" may be a thousands separator: refused, not read as 1.5."""
    (tmp_path / "c.csv").write_text('slide_id,uri,target\na,a.svs,"1,500"\n')
    with pytest.raises(ConfigError, match="not a valid float") as err:
        read_cohort(str(tmp_path / "c.csv"))
    assert err.value.input == f"{tmp_path / 'c.csv'} row 2"


def test_not_finite_numbers_are_refused(tmp_path):
    (tmp_path / "c.csv").write_text("slide_id,uri,target,mpp\na,a.svs,nan,0.5\nb,b.svs,1,inf\n")
    with pytest.raises(ConfigError) as err:
        read_cohort(str(tmp_path / "c.csv"))
    assert "row 2: column 'target' value 'nan'" in str(err.value)
    assert "row 3: column 'mpp' value 'inf'" in str(err.value)


def test_every_row_problem_is_listed_with_its_file_line(tmp_path):
    """A blank line and a quoted cell spanning two lines move the rows: numbers are the file's lines."""
    (tmp_path / "c.csv").write_text('slide_id,uri,fold,label\n,a.svs,0,x\n\nb,b.svs,one,"two\nlines"\n'
                                    "c d,c.svs,1,y\ne,,2,z\nf,f.svs,3,w,extra\ng,g.svs,4,v\n")
    with pytest.raises(ConfigError) as err:
        read_cohort(str(tmp_path / "c.csv"))
    lines = [s.strip() for s in err.value.reason.splitlines()]
    assert lines[0].startswith("5 problems")
    assert [s.split(":")[0] for s in lines[1:]] == ["row 2", "row 5", "row 6", "row 7", "row 8"]
    assert "empty slide_id" in lines[1] and "'fold' value 'one'" in lines[2] and "'c d'" in lines[3]
    assert "empty uri" in lines[4] and "5 cells but the header has 4" in lines[5]


def test_ids_differing_only_in_case_are_refused(tmp_path):
    (tmp_path / "c.csv").write_text("slide_id,uri\nS01,a.svs\nS02,b.svs\ns01,c.svs\n")
    with pytest.raises(ConfigError, match="'S01' and 's01' differ only in case") as err:
        read_cohort(str(tmp_path / "c.csv"))
    assert err.value.input == f"{tmp_path / 'c.csv'} rows 2, 4"


def test_conflicting_uri_is_refused_and_identical_rows_kept_once(tmp_path, caplog):
    (tmp_path / "c.csv").write_text("slide_id,uri,label\na,a.svs,1\na,a.svs,1\nb,b.svs,0\nb,other.svs,0\n")
    with pytest.raises(ConfigError, match=r"duplicate|more than once") as err:
        read_cohort(str(tmp_path / "c.csv"))
    assert err.value.input.endswith("rows 4, 5") and "'b.svs'" not in err.value.reason  # uris shown resolved
    assert f"uri '{tmp_path / 'b.svs'}' (row 4), '{tmp_path / 'other.svs'}' (row 5)" in err.value.reason
    (tmp_path / "ok.csv").write_text("slide_id,uri,label\na,a.svs,1\n a ,a.svs , 1\nb,b.svs,0\n")
    with caplog.at_level(logging.WARNING, logger="slidegrid.io.archive"):
        assert [(r.slide_id, r.label) for r in read_cohort(str(tmp_path / "ok.csv"))] == [("a", "1"), ("b", "0")]
    assert any("rows 2, 3" in m and "identical" in m for m in caplog.messages)


def test_one_file_under_two_ids_is_warned_naming_both(tmp_path, caplog):
    (tmp_path / "c.csv").write_text("slide_id,uri,patient_id\nS05,s/S05.svs,P6\nS05b,s/../s/S05.svs,P6\n")
    with caplog.at_level(logging.WARNING, logger="slidegrid.io.archive"):
        recs = read_cohort(str(tmp_path / "c.csv"))
    assert [r.slide_id for r in recs] == ["S05", "S05b"] and recs[0].uri == recs[1].uri
    (msg,) = [m for m in caplog.messages if "several slide ids" in m]
    assert "rows 2, 3" in msg and "'S05' (row 2" in msg and "'S05b' (row 3" in msg


def test_header_without_the_columns_names_the_separators_tried(tmp_path):
    (tmp_path / "pipe.csv").write_text("slide_id|uri\na|a.svs\n")
    with pytest.raises(ConfigError, match=r"tried the separators ',', ';' and tab.*\['slide_id\|uri'\]"):
        read_cohort(str(tmp_path / "pipe.csv"))
    (tmp_path / "typo.csv").write_text("slideid;uri;label\na;a.svs;1\n")
    with pytest.raises(ConfigError, match=r"lacks column\(s\) \['slide_id'\].*split by ';'.*"
                                          r"\['slideid', 'uri', 'label'\]"):
        read_cohort(str(tmp_path / "typo.csv"))


def test_a_table_not_in_utf8_is_refused_with_the_fix(tmp_path):
    (tmp_path / "c.csv").write_bytes("slide_id,uri,label\nb1,b.svs,Lésion\n".encode("cp1252"))
    with pytest.raises(ConfigError, match="not UTF-8.*CSV UTF-8"):
        read_cohort(str(tmp_path / "c.csv"))


def test_parquet_tables_get_the_same_checks(tmp_path):
    pd.DataFrame({"slide_id": ["NA", " 001 ", "001", "x"], "uri": ["a.svs", "b.svs", "b.svs", "c.svs"],
                  "patient_id": ["p1", "p2", "p3", "p4"]}).to_parquet(tmp_path / "c.parquet")
    with pytest.raises(ConfigError, match="'001' is in two patients") as err:
        read_cohort(str(tmp_path / "c.parquet"))
    assert err.value.input.endswith("rows 3, 4")


# -- listed folders: non-slides, multi-file formats, ids --------------------------------------------------------


def test_non_slide_files_are_reported_hidden_ones_ignored(tmp_path):
    for name in ("one.svs", "notes.txt", "sub/readme", "sub/two.ndpi", ".DS_Store", "._one.svs", ".git/config",
                 "sub/Thumbs.db"):
        _touch(tmp_path / name)
    listing = scan_archive(str(tmp_path))
    assert [(r.slide_id, r.uri) for r in listing.records] == [("one", str(tmp_path / "one.svs")),
                                                              ("two", str(tmp_path / "sub" / "two.ndpi"))]
    assert [(s.name, s.uri) for s in listing.skipped] == [("notes.txt", str(tmp_path / "notes.txt")),
                                                          ("sub/readme", str(tmp_path / "sub" / "readme"))]
    assert listing.skipped[0].reason.startswith("not a slide: '.txt' is not a slide format")
    assert "'no extension'" in listing.skipped[1].reason


def test_a_non_slide_never_takes_a_slides_manifest_key(tmp_path):
    _touch(tmp_path / "S01.svs")
    _touch(tmp_path / "S01")
    listing = scan_archive(str(tmp_path))
    assert [r.slide_id for r in listing.records] == ["S01"]
    assert [s.name for s in listing.skipped] == ["S01 (not a slide)"]


@pytest.mark.parametrize("ext", [".mrxs", ".vms", ".vmu", ".scn", ".bif", ".svslide", ".ndpi", ".qptiff", ".btf"])
def test_every_slide_format_is_listed(tmp_path, ext):
    _touch(tmp_path / f"case 7{ext}")
    (rec,) = list_archive(str(tmp_path))
    assert (rec.slide_id, rec.uri) == ("case_7", str(tmp_path / f"case 7{ext}"))


def test_mrxs_data_folder_is_part_of_its_slide(tmp_path):
    for name in ("X.mrxs", "X/Slidedat.ini", "X/Index.dat", "X/Data0000.dat", "X/Data0001.dat",
                 "orphan/Slidedat.ini", "orphan/Data0000.dat"):
        _touch(tmp_path / name)
    for source in (tmp_path, tmp_path / "*"):  # a glob's matched folders are listed whole
        listing = scan_archive(str(source))
        assert [(r.slide_id, r.uri) for r in listing.records] == [("X", str(tmp_path / "X.mrxs"))]
        assert [s.name for s in listing.skipped] == ["orphan/Data0000.dat", "orphan/Slidedat.ini"]
        assert all("orphan.mrxs is missing" in s.reason for s in listing.skipped)


def test_a_folder_of_dicom_files_is_one_slide(tmp_path):
    for name in ("case7/level-0.dcm", "case7/level-1.dcm", "case7/DICOMDIR", "other.svs"):
        _touch(tmp_path / "archive" / name)
    listing = scan_archive(str(tmp_path / "archive"))
    assert [(r.slide_id, r.uri) for r in listing.records] == [("case7", str(tmp_path / "archive" / "case7")),
                                                              ("other", str(tmp_path / "archive" / "other.svs"))]
    assert listing.skipped == []
    for source in (tmp_path / "archive" / "case7", tmp_path / "archive" / "case7" / "level-1.dcm"):
        (rec,) = list_archive(str(source))
        assert (rec.slide_id, rec.uri) == ("case7", str(tmp_path / "archive" / "case7"))


def test_vms_companion_files_are_part_of_the_slide(tmp_path):
    (tmp_path / "H1.vms").write_text("[Virtual Microscope Specimen]\nNoLayers=1\nImageFile=H1.jpg\n"
                                     "ImageFile(1,0)=H1_1.jpg\nMapFile=H1_map.jpg\nOptimisationFile=H1.opt\n")
    for name in ("H1.jpg", "H1_1.jpg", "H1_map.jpg", "H1.opt", "stray.jpg"):
        _touch(tmp_path / name)
    listing = scan_archive(str(tmp_path))
    assert [r.slide_id for r in listing.records] == ["H1"]
    assert [s.name for s in listing.skipped] == ["stray.jpg"]


def test_names_differing_only_in_case_get_distinct_ids(tmp_path):
    _touch(tmp_path / "S01.svs")
    _touch(tmp_path / "s01.svs")
    _touch(tmp_path / "S02.svs")
    ids = [r.slide_id for r in list_archive(str(tmp_path))]  # sorted by URI: S01, S02, s01
    assert ids == [f"S01-{hashlib.sha1(b'S01.svs').hexdigest()[:8]}", "S02",
                   f"s01-{hashlib.sha1(b's01.svs').hexdigest()[:8]}"]


def test_collision_suffixes_stay_when_the_archive_moves(tmp_path):
    """The suffix hashes the path relative to the listed root: the same archive elsewhere has the same ids."""
    for root in ("here", "moved/deeper"):
        _touch(tmp_path / root / "x" / "case 1.svs")
        _touch(tmp_path / root / "y" / "case 1.svs")
    here = [r.slide_id for r in list_archive(str(tmp_path / "here"))]
    assert here == [r.slide_id for r in list_archive(str(tmp_path / "moved" / "deeper"))]
    assert here == [f"case_1-{hashlib.sha1(rel.encode()).hexdigest()[:8]}" for rel in ("x/case 1.svs", "y/case 1.svs")]


def test_folder_without_slides_says_what_it_skipped(tmp_path):
    _touch(tmp_path / "notes.txt")
    with pytest.raises(ConfigError, match=r"no slides found .*1 other file\(s\) skipped, e\.g\. notes\.txt"):
        list_archive(str(tmp_path))
