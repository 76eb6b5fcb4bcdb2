"""`slidegrid pn-stage` and `slidegrid burden` on segment-shaped outputs (papers/digipathai-ensemble-segmentation-
framework.txt, "pN-staging pipeline", Tables 2, 3, 5; "Tumour burden estimation for PAIP dataset"): Table 3
staging of whole cohorts, the RF ensemble out-of-fold against the majority class on a cohort whose answer is
known, both commands end to end into real MLflow stores, and bad input."""

from __future__ import annotations

import csv
import re
from pathlib import Path

import mlflow
import numpy as np
import pytest
import tifffile

from slidegrid.analysis.heatmap_features import TABLE5_FEATURES
from slidegrid.analysis.pn_stage import (
    METASTASIS_TYPES,
    RFEnsembleConfig,
    _balanced,
    patient_stages,
    vote_winner,
)
from slidegrid.analysis.pn_stage_run import out_of_fold
from slidegrid.cli import main
from slidegrid.errors import ConfigError
from slidegrid.io.manifest import ManifestWriter, SlideResult
from slidegrid.segment import write_pyramid_tiff

# log10 of the largest lesion's major axis (µm) per node type, on Table 2's scale (ITC <= 0.2 mm < micro <= 2 mm
# < macro), and the spread that makes neighbouring types overlap.
LOG_AXIS = {"negative": 1.5, "itc": 2.0, "micro": 2.7, "macro": 3.5}
NOISE = 0.2
TYPE_P = (0.55, 0.12, 0.15, 0.18)


def synthetic_nodes(n_patients: int, seed: int = 0, nodes: int = 5) -> list[dict]:
    """Rows (slide_id, patient_id, metastasis, features) where the node type is a noisy function of the largest
    lesion: the Table 5 size features follow it, every other feature is noise."""
    rng = np.random.default_rng(seed)
    rows = []
    for p in range(n_patients):
        for k in range(nodes):
            kind = METASTASIS_TYPES[rng.choice(4, p=TYPE_P)]
            axis = 10 ** (LOG_AXIS[kind] + rng.normal(0, NOISE))
            feats = dict(zip(TABLE5_FEATURES, rng.normal(0, 1, len(TABLE5_FEATURES))))
            feats.update({"p0.9_largest_major_axis": axis, "p0.5_largest_major_axis": axis * rng.uniform(1, 1.3),
                          "p0.5_largest_area": axis**2 * rng.uniform(0.5, 0.8)})
            rows.append({"slide_id": f"patient_{p:03d}_node_{k}", "patient_id": f"patient_{p:03d}",
                         "metastasis": kind, **feats})
    return rows


def _write_csv(path: Path, rows: list[dict], columns: list[str]) -> str:
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=columns, extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)
    return str(path)


def _cohort_files(tmp_path: Path, rows: list[dict], name: str = "cohort.csv") -> tuple[str, str]:
    """features.csv as segment writes it, and a cohort with node types and the patients' Table 3 stages."""
    features = _write_csv(tmp_path / "features.csv", rows, ["slide_id", *TABLE5_FEATURES])
    stages = patient_stages([r["patient_id"] for r in rows], [r["metastasis"] for r in rows])
    cohort_rows = [{**r, "pn_stage": stages[r["patient_id"]]} for r in rows]
    return features, _write_csv(tmp_path / name, cohort_rows, ["slide_id", "patient_id", "metastasis", "pn_stage"])


# -- Table 3 ----------------------------------------------------------------------------------------------

TABLE3_CASES = {  # patient: (node types, Table 3 stage)
    "all-negative": (["negative"] * 5, "pN0"),
    "itc-only": (["itc", "negative", "itc", "negative", "negative"], "pN0(i+)"),
    "micro-only": (["micro", "negative", "negative", "negative", "negative"], "pN1mi"),
    "micro-and-itc": (["micro", "micro", "micro", "micro", "itc"], "pN1mi"),  # 4 micro, no macro: still pN1mi
    "one-macro": (["macro", "negative", "negative", "negative", "negative"], "pN1"),
    "3-metastatic": (["macro", "micro", "micro", "itc", "itc"], "pN1"),  # ITCs do not count as metastatic
    "4-metastatic": (["macro", "micro", "micro", "micro", "negative"], "pN2"),
    "9-metastatic": (["macro"] * 9, "pN2"),
}


def test_cohort_staging_follows_table_3():
    patients = [p for p, (nodes, _) in TABLE3_CASES.items() for _ in nodes]
    types = [t for nodes, _ in TABLE3_CASES.values() for t in nodes]
    assert patient_stages(patients, types) == {p: stage for p, (_, stage) in TABLE3_CASES.items()}
    with pytest.raises(ConfigError, match="Table 3 stops at 9"):
        patient_stages(["a"] * 10, ["macro"] * 10)


# -- RF ensemble --------------------------------------------------------------------------------------------

def test_smotetomek_balances_every_class():
    rng = np.random.default_rng(0)
    y = np.repeat([0, 1, 2, 3], [60, 6, 10, 14])
    x = rng.normal(y[:, None] * 3.0, 1.0, (len(y), 4))  # separated classes: Tomek links remove next to nothing
    xb, yb = _balanced(x, y, k=5, seed=0)
    counts = np.bincount(yb)
    assert counts.min() >= 0.95 * 60 and counts.max() <= 60 and len(xb) == len(yb)


def test_ensemble_vote_ties_go_to_the_higher_category():
    votes = np.array([[2, 0, 2, 0], [1, 1, 1, 1], [0, 3, 1, 0], [0, 0, 0, 4]])
    assert vote_winner(votes).tolist() == [2, 3, 1, 3]


def test_rf_ensemble_beats_the_majority_class_out_of_fold():
    rows = synthetic_nodes(40, seed=1)
    x = np.array([[r[f] for f in TABLE5_FEATURES] for r in rows])
    types = [METASTASIS_TYPES.index(r["metastasis"]) for r in rows]
    patients = [r["patient_id"] for r in rows]
    predicted, votes, folds = out_of_fold(x, types, patients, 5, RFEnsembleConfig(trees=30))
    accuracy = np.mean(predicted == np.array(types))
    majority = np.bincount(types).max() / len(types)
    assert accuracy >= majority + 0.2, (accuracy, majority)
    assert votes.sum(axis=1).tolist() == [4] * len(rows)  # every node voted on by the 4 members
    by_patient = {}
    for p, k in zip(patients, folds):
        by_patient.setdefault(p, set()).add(int(k))
    assert all(len(ks) == 1 for ks in by_patient.values())  # no patient in two folds
    assert set(folds.tolist()) == set(range(5))


# -- pn-stage end to end ------------------------------------------------------------------------------------

def test_pn_stage_command_writes_tables_and_one_mlflow_run(tmp_path, capsys):
    rows = synthetic_nodes(40, seed=2)
    features, cohort = _cohort_files(tmp_path, rows)
    store = f"sqlite:///{tmp_path}/mlflow.db"
    out = tmp_path / "pn"
    assert main(["pn-stage", "--features", features, "--cohort", cohort, "--out", str(out),
                 "--tracking-uri", store]) == 0
    printed = capsys.readouterr().out
    kappa = float(re.search(r"quadratic kappa (\S+),", printed).group(1))
    accuracy = float(re.search(r"node accuracy (\S+) on 200 nodes", printed).group(1))
    assert kappa > 0.6 and accuracy > 0.75

    mlflow.set_tracking_uri(store)
    runs = mlflow.search_runs(experiment_names=["slidegrid-pn-stage"], output_format="list")
    assert len(runs) == 1
    run = runs[0]
    assert round(run.data.metrics["kappa"], 4) == kappa
    assert round(run.data.metrics["node_accuracy"], 4) == accuracy
    assert run.data.params["folds"] == "5" and run.data.params["truth"] == "pn_stage"
    artifacts = {a.path for a in mlflow.artifacts.list_artifacts(run_id=run.info.run_id)}
    assert artifacts == {"nodes.csv", "patients.csv", "confusion.csv"}

    with open(out / "nodes.csv") as f:
        nodes = list(csv.DictReader(f))
    assert [n["slide_id"] for n in nodes] == [r["slide_id"] for r in rows]
    assert np.mean([n["predicted"] == n["metastasis"] for n in nodes]) == pytest.approx(accuracy, abs=1e-4)
    with open(out / "patients.csv") as f:
        patients = list(csv.DictReader(f))
    assert len(patients) == 40
    # Each patient's predicted stage is Table 3 of its predicted node types.
    staged = patient_stages([n["patient"] for n in nodes], [n["predicted"] for n in nodes])
    assert {p["patient"]: p["predicted"] for p in patients} == staged
    with open(out / "confusion.csv") as f:
        confusion = np.array([[int(r[t]) for t in METASTASIS_TYPES] for r in csv.DictReader(f)])
    assert confusion.sum() == 200 and np.trace(confusion) / 200 == pytest.approx(accuracy, abs=1e-4)

    # Fit on 30 patients, stage 10 others whose cohort gives only pN-stages (CAMELYON17's test layout).
    fit_rows, apply_rows = rows[:150], rows[150:]
    _write_csv(tmp_path / "fit.csv", fit_rows, ["slide_id", "patient_id", "metastasis"])
    stages = patient_stages([r["patient_id"] for r in apply_rows], [r["metastasis"] for r in apply_rows])
    test_rows = [{"slide_id": "", "patient_id": p, "pn_stage": s} for p, s in stages.items()]
    test_rows += [{"slide_id": r["slide_id"], "patient_id": r["patient_id"]} for r in apply_rows]
    test = _write_csv(tmp_path / "test.csv", test_rows, ["slide_id", "patient_id", "pn_stage"])
    assert main(["pn-stage", "--features", features, "--cohort", test, "--fit-cohort", str(tmp_path / "fit.csv"),
                 "--out", str(tmp_path / "pn-test"), "--tracking-uri", store]) == 0
    printed = capsys.readouterr().out
    assert "node accuracy" not in printed  # no node types given: nodes are not scored
    assert re.search(r"quadratic kappa \S+, exact stage \S+ on 10 patients \(truth: pn_stage\)", printed)
    # The fitted cohort overlapping the scored one is refused.
    assert main(["pn-stage", "--features", features, "--cohort", cohort, "--fit-cohort", str(tmp_path / "fit.csv"),
                 "--tracking-uri", store]) == 2
    assert "error: --fit-cohort: 150 slide(s) or patient(s) are in both cohorts" in capsys.readouterr().err


def test_pn_stage_bad_input_exits_2(tmp_path, capsys):
    rows = synthetic_nodes(4, seed=3)
    features, cohort = _cohort_files(tmp_path, rows)

    def error(cohort_text: str, *extra: str) -> str:
        path = tmp_path / "bad.csv"
        path.write_text(cohort_text)
        assert main(["pn-stage", "--features", features, "--cohort", str(path), "--out", str(tmp_path / "o"),
                     *extra]) == 2
        return capsys.readouterr().err

    sid = rows[0]["slide_id"]
    assert f"error: {tmp_path / 'bad.csv'}: lacks a patient_id (or patient) column" in error(f"slide_id,metastasis\n"
                                                                                             f"{sid},macro\n")
    err = error(f"slide_id,patient,metastasis\n{sid},p0,big\n{rows[1]['slide_id']},p0,\n")
    assert "2 problems in the cohort table" in err
    assert "row 2: metastasis 'big' is not one of negative, itc, micro, macro" in err
    assert "row 3: metastasis '' is not one of negative, itc, micro, macro (every node needs one)" in err
    assert "no features for 1 slide(s) of the cohort (ghost)" in error("slide_id,patient,metastasis\nghost,p0,itc\n")
    assert "pn_stage 'pN3' is not one of" in error(f"slide_id,patient,pn_stage\n{sid},p0,pN3\n")
    assert "error: --folds: 5 folds need at least 5 patients; the cohort has 4" in error(Path(cohort).read_text())
    assert "error: --folds: 1: out-of-fold typing needs at least 2 folds" in error(Path(cohort).read_text(),
                                                                                 "--folds", "1")
    assert not (tmp_path / "o").exists()  # nothing written on bad input


# -- burden -------------------------------------------------------------------------------------------------

SLIDE_MPP, HEATMAP_MPP = 2.0, 8.0  # 4 slide px per heatmap px


def _tissue_slide(path: Path) -> str:
    """A 1600 x 1600 px slide at 2 µm/px: glass with an H&E-pink tissue square (heatmap px 50..350) cut by a
    glass gap (heatmap columns 150..170)."""
    rng = np.random.default_rng(0)
    img = np.full((1600, 1600, 3), 242, np.uint8)
    tissue = np.zeros((1600, 1600), bool)
    tissue[200:1400, 200:1400] = True
    tissue[:, 600:680] = False
    pink = np.array([205, 120, 180]) + rng.normal(0, 8, (int(tissue.sum()), 3))
    img[tissue] = np.clip(pink, 0, 255).astype(np.uint8)
    tifffile.imwrite(path, img, tile=(256, 256), compression="zlib", resolution=(1e4 / SLIDE_MPP,) * 2,
                     resolutionunit="CENTIMETER")
    return str(path)


def test_burden_command_on_a_known_layout(tmp_path, capsys):
    seg = tmp_path / "seg"
    slide = _tissue_slide(tmp_path / "liver.tiff")
    heat = np.zeros((400, 400), np.float32)
    heat[100:120, 100:120] = 0.9  # two viable blocks, 20 x 20 heatmap px each ...
    heat[100:120, 200:220] = 0.9  # ... whose convex hull (20 x 120) crosses the 20 px glass gap: whole = 2000 px
    heat[300, 300] = 0.95  # a lone false positive the clean-up drops
    write_pyramid_tiff((heat * 255 + 0.5).astype(np.uint8), str(seg / "liver" / "heatmap.tif"), HEATMAP_MPP)
    writer = ManifestWriter(str(seg))
    writer.add(SlideResult("liver", slide, "ok", 4, 1.0, "", "h"))
    writer.add(SlideResult("gone", str(tmp_path / "gone.tiff"), "ok", 4, 1.0, "", "h"))  # its outputs are lost
    writer.add(SlideResult("broken", str(tmp_path / "broken.tiff"), "failed", 0, 0.0, "bad tile", "h"))
    writer.flush()

    assert main(["burden", "--segment-out", str(seg)]) == 3  # one slide failed
    captured = capsys.readouterr()
    assert "slides: 1 ok, 1 failed, 1 not segmented" in captured.out
    assert "failed: gone: " in captured.err
    with open(seg / "burden.csv") as f:
        rows = {r["slide_id"]: r for r in csv.DictReader(f)}
    assert set(rows) == {"liver", "gone"} and rows["gone"]["status"] == "failed"
    px_mm2 = HEATMAP_MPP**2 / 1e6
    liver = {k: float(rows["liver"][k]) for k in ("viable_mm2", "whole_mm2", "tissue_mm2", "burden")}
    # Viable: 800 px less the 4 corners of each block the 3 x 3 opening rounds off.
    assert liver["viable_mm2"] == pytest.approx(792 * px_mm2, rel=1e-6)
    assert liver["whole_mm2"] == pytest.approx(2000 * px_mm2, rel=0.03)
    assert liver["tissue_mm2"] == pytest.approx((300 * 300 - 20 * 300) * px_mm2, rel=0.03)
    assert liver["burden"] == pytest.approx(792 / 2000, rel=0.03)
    assert f"{liver['burden']:7.3f}" in captured.out

    mlflow.set_tracking_uri(f"sqlite:///{seg}/mlflow/mlflow.db")
    run, = mlflow.search_runs(experiment_names=["slidegrid-burden"], output_format="list")
    assert run.data.metrics["mean_burden"] == pytest.approx(liver["burden"])
    assert run.data.metrics["failed"] == 1 and run.data.metrics["not_segmented"] == 1
    assert {a.path for a in mlflow.artifacts.list_artifacts(run_id=run.info.run_id)} == {"burden.csv"}


def test_burden_bad_input_exits_2(tmp_path, capsys):
    assert main(["burden", "--segment-out", str(tmp_path)]) == 2
    assert f"error: {tmp_path}: no _manifest.parquet: not a `slidegrid segment` output folder" in \
        capsys.readouterr().err
    assert main(["burden", "--segment-out", str(tmp_path), "--threshold", "1.5"]) == 2
    assert "error: --threshold: 1.5 is not within (0, 1)" in capsys.readouterr().err
