"""Patient-level splits (train/splits.py): a patient's slides never sit on two sides of a split, in the
aggregator trainer's fold, `split`-column and 80/20 splits and in each `train-seg` member's."""

from __future__ import annotations

import numpy as np
import pytest

from slidegrid.errors import ConfigError
from slidegrid.io.archive import SlideRecord
from slidegrid.train.aggregator.data import CohortExamples, Example
from slidegrid.train.segmentation.config import SegTrainConfig
from slidegrid.train.segmentation.fit import member_plan


def _examples(rows: list[tuple[str, int | None, str | None]], split: list[str] | None = None) -> CohortExamples:
    ex = tuple(Example(slide_id=s, grid=f"{s}.parquet", fold=f, label=i % 2, patient_id=p,
                       split=split[i] if split else None) for i, (s, f, p) in enumerate(rows))
    return CohortExamples(ex, ("normal", "tumor"), 8)


def test_a_patient_in_two_folds_is_refused_where_they_meet():
    # p1's slides are in folds 0 and 1: test fold 0 / validation fold 1 puts one on each side.
    data = _examples([("a", 0, "p0"), ("b", 0, "p1"), ("c", 1, "p1"), ("d", 1, "p2"), ("e", 2, "p3"),
                      ("f", 2, "p4"), ("g", 3, "p5")])
    with pytest.raises(ConfigError, match=r"patient 'p1' has slides in validation \(c\) and in test \(b\)"):
        data.split(test_fold=0)
    with pytest.raises(ConfigError, match="patient 'p1'"):
        data.split(val_fold=0)
    # Where both of p1's folds train, the split is sound and goes ahead.
    sp = data.split(test_fold=2, val_fold=3)
    assert {e.slide_id for e in sp.train} == {"a", "b", "c", "d"}
    # The same cohort with p1 in one fold trains on either side.
    fixed = _examples([("a", 0, "p0"), ("b", 0, "p1"), ("c", 0, "p1"), ("d", 1, "p2"), ("e", 2, "p3"),
                       ("f", 2, "p4"), ("g", 3, "p5")])
    assert {e.slide_id for e in fixed.split(test_fold=0).test} == {"a", "b", "c"}


def test_a_split_column_that_separates_a_patient_is_refused():
    rows = [("a", None, "p0"), ("b", None, "p0"), ("c", None, "p1"), ("d", None, "p2")]
    with pytest.raises(ConfigError, match=r"patient 'p0' has slides in train \(a\) and in test \(b\)"):
        _examples(rows, ["train", "test", "val", "train"]).split()
    assert len(_examples(rows, ["train", "train", "val", "test"]).split().test) == 1


def test_the_80_20_split_draws_whole_patients_and_keeps_the_slide_draw_without_ids():
    # 20 patients of 3 slides each: validation is 4 whole patients.
    rows = [(f"s{p}_{k}", None, f"p{p}") for p in range(20) for k in range(3)]
    sp = _examples(rows).split()
    val_patients = {e.patient_id for e in sp.val}
    assert len(val_patients) == 4 and len(sp.val) == 12 and sp.how == "80/20 by patient, no test set"
    assert not val_patients & {e.patient_id for e in sp.train}
    # Without patient ids every slide is its own patient: the slide-level draw of before (seeded permutation, a
    # fifth of the slides) is unchanged, so cohorts without the column keep their splits.
    ids = [(f"s{i}", None, None) for i in range(23)]
    idx = np.random.default_rng(0).permutation(23)
    assert {e.slide_id for e in _examples(ids).split().val} == {f"s{int(i)}" for i in idx[:4]}


def test_each_segmentation_member_keeps_a_patient_on_one_side(tmp_path):
    cfg = SegTrainConfig(cohort=str(tmp_path / "c.csv"), out=str(tmp_path / "out"), model="ensemble",
                         members=("unet-densenet121", "unet-densenet121"))
    records = [SlideRecord("a", "a.tiff", fold=0, patient_id="p0"), SlideRecord("b", "b.tiff", fold=1, patient_id="p0"),
               SlideRecord("c", "c.tiff", fold=1, patient_id="p1"), SlideRecord("d", "d.tiff", fold=2)]
    with pytest.raises(ConfigError, match=r"patient 'p0' has slides in train \(b\) and in validation \(a\) under "
                                          "validation fold 0"):
        member_plan(cfg, records)
    records[1] = SlideRecord("b", "b.tiff", fold=0, patient_id="p0")
    assert member_plan(cfg, records) == [("unet-densenet121", 0), ("unet-densenet121", 1)]
