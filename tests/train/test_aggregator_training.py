"""Whole-slide learning end to end: Ray Train (2 workers), resume after a killed worker, MLflow, predict, Tune."""

from __future__ import annotations

import contextlib
import csv
import json
import os
import threading
import time

import mlflow
import numpy as np
import pandas as pd
import pytest
import torch

from _grids import grids_with_a_known_target
from slidegrid.cli import main
from slidegrid.encode import EncodeConfig, run_encode
from slidegrid.geometry.tiling import GridSpec
from slidegrid.io.annotations import Annotation, write_geojson
from slidegrid.synth.slides import SyntheticSpec, write_synthetic_slide
from slidegrid.train.aggregator.config import build_train_config
from slidegrid.train.aggregator.fit import run_train


@pytest.fixture(scope="module")
def cohort(tmp_path_factory, ray_local):
    """16 labelled synthetic slides (half with tumour), encoded with mean-rgb on 64-px tiles."""
    root = tmp_path_factory.mktemp("train")
    rows = []
    for i in range(16):
        tumour = i % 2
        truth = write_synthetic_slide(str(root / f"t{i}.tiff"), SyntheticSpec(
            width=2048, height=1536, seed=100 + i, n_tumours=tumour, tumour_radius_um=(150, 250), n_tissue_blobs=2))
        ann = ""
        if tumour:
            ann = str(root / f"t{i}.geojson")
            write_geojson([Annotation(p, [], "Tumor") for p in truth.tumour_polygons], ann)
        rows.append({"slide_id": f"t{i}", "uri": str(root / f"t{i}.tiff"), "label": "tumor" if tumour else "normal",
                     "target": truth.tumour_area_um2 / 1e4, "fold": (i // 2) % 4, "annotation": ann})
    with open(root / "cohort.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    run_encode(EncodeConfig(input=str(root / "cohort.csv"), out=str(root / "grids"), dtype="float32",
                            mlflow=False, progress=False, grid=GridSpec(tile_size=64)))
    return root


def _cfg(root, out, **kw):
    # Generic settings sized for these tiny grids (tests/train/test_aggregator_recipes.py covers the papers' recipes).
    base = {"grids": str(root / "grids"), "cohort": str(root / "cohort.csv"), "out": str(out), "val_fold": 0,
            "recipe": "none", "optimizer": "adam", "lr": 0.01, "patience": 0, "epochs": 12,
            "model_kwargs": {"maps": 4}}
    base.update(kw)
    return build_train_config(base)


@pytest.mark.slow
def test_attention_learns_with_two_workers_and_is_tracked(cohort, tmp_path, capsys):
    result = run_train(_cfg(cohort, tmp_path / "run", workers=2, test_fold=3))
    assert len(result.history) == 12
    # The test fold (4 slides nobody trained or selected on), scored once: chance is 0.5.
    assert result.test["test_auc"] > 0.9
    assert result.test["test_auc_ci_low"] <= result.test["test_auc"] <= result.test["test_auc_ci_high"]
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path}/run/mlflow/mlflow.db")
    run = mlflow.get_run(result.run_id)
    assert run.data.params["model"] == "attention" and run.data.params["workers"] == "2"
    assert run.data.params["test_fold"] == "3" and run.data.tags["slidegrid.split"] == "test fold 3, validation fold 0"
    assert "val_auc" in run.data.metrics and run.data.metrics["test_auc"] == result.test["test_auc"]
    history = mlflow.tracking.MlflowClient().get_metric_history(result.run_id, "train_loss")
    assert len(history) == 12 and history[-1].value < history[0].value
    files = {a.path for a in mlflow.artifacts.list_artifacts(run_id=result.run_id, artifact_path="evaluation")}
    assert "evaluation/roc.png" in files and any(f.endswith("_heatmap.png") for f in files)
    assert result.model_uri == "models:/slidegrid-attention-classification/1"
    # predict with the registered model, as a user would
    code = main(["predict", "--grids", str(cohort / "grids"), "--model", result.model_uri, "--tracking-uri",
                 f"sqlite:///{tmp_path}/run/mlflow/mlflow.db", "--out", str(tmp_path / "pred"),
                 "--cohort", str(cohort / "cohort.csv")])
    assert code == 0
    scored = json.loads((tmp_path / "pred" / "metrics.json").read_text())
    assert scored["slides"] == 16 and scored["auc_ci_low"] <= scored["auc"] <= scored["auc_ci_high"]
    assert "scored against" in capsys.readouterr().out
    pred = pd.read_csv(tmp_path / "pred" / "predictions.csv")
    truth = pd.read_csv(cohort / "cohort.csv").set_index("slide_id")["label"]
    predicted = pred.set_index("slide_id")["prediction"].reindex(truth.index)
    assert (predicted == truth).mean() > 0.85
    assert len(os.listdir(tmp_path / "pred" / "heatmaps")) == 16


def _kill_a_train_worker_after_first_checkpoint(storage: str, done: threading.Event, killed: list) -> None:
    import psutil

    while not done.is_set():
        # a few epochs in, so that at least one checkpoint is fully registered with Ray Train
        if sum(d.startswith("checkpoint_") for _, dirs, _ in os.walk(storage) for d in dirs) >= 3:
            # Only this session's Ray (a descendant of pytest): never another run's workers on the machine.
            for p in psutil.Process(os.getpid()).children(recursive=True):
                cmdline = ""
                with contextlib.suppress(psutil.Error):
                    cmdline = " ".join(p.cmdline())
                if cmdline.startswith("ray::RayTrainWorker"):
                    p.kill()
                    killed.append(p.pid)
                    return
        time.sleep(0.05)


@pytest.mark.slow
def test_killed_worker_resumes_from_last_checkpoint(cohort, tmp_path):
    cfg = _cfg(cohort, tmp_path / "r", epochs=30, max_failures=3, model="nic-cnn", crop=16, test_crops=2,
               model_kwargs={"width": 16, "depth": 4})
    done, killed = threading.Event(), []
    killer = threading.Thread(target=_kill_a_train_worker_after_first_checkpoint,
                              args=(str(tmp_path / "r" / "checkpoints"), done, killed))
    killer.start()
    try:
        result = run_train(cfg, log_to_mlflow=False)
    finally:
        done.set()
        killer.join()
    assert killed, "no Ray Train worker was killed: the test proved nothing"
    assert [h["epoch"] for h in result.history] == list(range(30))  # every epoch once, none repeated
    assert result.history[-1]["resumed_from"] > 0, "the run restarted from scratch instead of the checkpoint"


def test_regression_and_segmentation_learn_what_the_data_says(cohort, tmp_path):
    """Held-out slides, scored once by `fit` (test_* metrics), against a known answer.

    Regression (attention): the target is a noisy mean of one embedding channel (_grids.py); Spearman on the 10
    test slides measured 0.99 (chance 0). Segmentation (RAN-CNN): the fixture's annotated tumours, which the
    mean-RGB embeddings show; on the test fold (2 tumour, 2 normal slides; 4.5% of tissue cells tumour), pooled
    per-cell F1 measured 0.81 against 0.09 for the trivial all-tumour answer (all-normal: 0), and per-slide Dice
    0.91 against 0.5 for all-normal (its normal slides score 1, its tumour ones 0). One Ray Train report per run
    (report_every = epochs): these epochs take milliseconds, a report up to 2 s.
    """
    from slidegrid.io.grids import grid_uri, read_grid
    from slidegrid.train.aggregator.data import cell_labels

    known = grids_with_a_known_target(tmp_path)
    reg = run_train(_cfg(tmp_path, tmp_path / "g", grids=str(tmp_path / "grids"), cohort=known, val_fold=None,
                   task="regression", recipe="none", epochs=15, report_every=15), log_to_mlflow=False)
    assert reg.test["test_spearman"] > 0.8, reg.test

    seg = run_train(_cfg(cohort, tmp_path / "s", model="ran-cnn", task="segmentation", recipe="none", test_fold=3,
                   epochs=40, report_every=40, subgrid=8, batch_size=4, model_kwargs={"width": 16}),
              log_to_mlflow=False)
    labels = []
    test_slides = pd.read_csv(cohort / "cohort.csv").query("fold == 3").fillna({"annotation": ""})
    for r in test_slides.itertuples():
        grid = read_grid(grid_uri(str(cohort / "grids"), r.slide_id))
        labels.append(cell_labels(grid, r.annotation)[grid.dense()[1]])
    tumour = np.concatenate(labels).mean()  # tumour share of the test slides' tissue cells
    all_tumour_f1 = 2 * tumour / (1 + tumour)
    assert 0 < tumour < 0.2 and sorted(test_slides["label"]) == ["normal", "normal", "tumor", "tumor"]
    assert seg.test["test_f1"] > all_tumour_f1 + 0.3, (seg.test, all_tumour_f1)
    assert seg.test["test_dice"] > 0.5 + 0.2, seg.test


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_asha_stopped_trials_free_their_workers_for_the_next(cohort, tmp_path):
    """3 trials one at a time, 2 Train workers each, ASHA grace 1 epoch: the two that cannot learn (lr 1e-7)
    are stopped at the first rung, and each next trial gets the workers of the one stopped before it
    (they used to stay held, and the third trial waited for ever)."""
    space = tmp_path / "space.yaml"
    space.write_text("metric: val_loss\nmode: min\nparams:\n  lr: {grid: [0.01, 1.0e-7, 1.0e-7]}\n")
    code = main(["tune", "--grids", str(cohort / "grids"), "--cohort", str(cohort / "cohort.csv"), "--out",
                 str(tmp_path / "t"), "--space", str(space), "--trials", "1", "--epochs", "4", "--val-fold", "0",
                 "--workers", "2", "--max-concurrent", "1", "--grace-epochs", "1", "--config",
                 str(_adam(tmp_path))])
    assert code == 0
    import yaml

    best = yaml.safe_load((tmp_path / "t" / "best.yaml").read_text())
    assert best["trials"] == 3 and best["best_params"]["lr"] == 0.01
    assert best["stopped_early"] >= 1, best  # ASHA stopped trials: the test proved something
    assert os.path.isdir(best["best_checkpoint"])
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path}/t/mlflow/mlflow.db")
    runs = mlflow.search_runs(experiment_names=["slidegrid-tune"], output_format="list")
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parents[0].info.run_id]
    assert len(parents) == 1 and len(children) == 3


def _adam(tmp_path):
    path = tmp_path / "adam.yaml"
    path.write_text("recipe: none\noptimizer: adam\npatience: 0\nmodel_kwargs: {maps: 4}\n")
    return path


def test_config_errors_name_the_option(tmp_path):
    from slidegrid.errors import ConfigError

    with pytest.raises(ConfigError, match="--model"):
        build_train_config({"grids": "g", "cohort": "c", "out": "o", "model": "ran-cnn", "task": "classification"})
    bad = tmp_path / "c.yaml"
    bad.write_text("epochz: 3\n")
    with pytest.raises(ConfigError, match="epochz"):
        build_train_config({"grids": "g", "cohort": "c", "out": "o"}, str(bad))


def test_shipped_sweep_space_is_valid_and_applies_to_a_config():
    from slidegrid.train.aggregator.sweep import apply_trial, load_space

    space = load_space(os.path.join(os.path.dirname(__file__), "..", "..", "jobs", "configs", "attention-sweep.yaml"))
    assert space.metric == "val_loss" and "model_kwargs.maps" in space.params
    base = build_train_config({"grids": "g", "cohort": "c", "out": "o"})
    trial = apply_trial(base, {"lr": 0.005, "optimizer": "adam", "weight_decay": 1e-5, "model_kwargs.maps": 16}, "t0")
    assert (trial.lr, trial.optimizer, trial.model_kwargs["maps"]) == (0.005, "adam", 16)


@pytest.mark.slow
def test_cross_validation_runs_one_model_per_fold(cohort, tmp_path, capsys):
    df = pd.read_csv(cohort / "cohort.csv")
    df["fold"] = df["fold"] % 3
    df.to_csv(tmp_path / "three_folds.csv", index=False)
    code = main(["train", "--grids", str(cohort / "grids"), "--cohort", str(tmp_path / "three_folds.csv"), "--out",
                 str(tmp_path / "cv"), "--epochs", "2", "--cv", "--recipe", "none", "--register-as", "cv-model"])
    out = capsys.readouterr().out
    assert code == 0 and all(f"test fold {k}: test_accuracy" in out for k in range(3)), out
    assert "3-fold cross-validation, each fold the test set once" in out and "test_auc " in out and " ± " in out
    for k in range(3):
        assert (tmp_path / "cv" / f"fold{k}" / "final-checkpoint").is_dir()


def test_split_keeps_test_slides_apart(cohort):
    from slidegrid.errors import ConfigError
    from slidegrid.train.aggregator.data import load_examples

    data = load_examples(str(cohort / "grids"), str(cohort / "cohort.csv"), "classification")
    sp = data.split(test_fold=3)
    ids = [{e.slide_id for e in part} for part in (sp.train, sp.val, sp.test)]
    assert not (ids[0] & ids[1] or ids[0] & ids[2] or ids[1] & ids[2]) and sum(map(len, ids)) == 16
    assert {e.fold for e in sp.test} == {3} and {e.fold for e in sp.val} == {0}  # validation: the next fold
    assert data.split(val_fold=0).test == []  # no test set unless one is asked for
    with pytest.raises(ConfigError, match="--test-fold"):
        data.split(test_fold=7)
    with pytest.raises(ConfigError, match="--val-fold"):
        data.split(val_fold=3, test_fold=3)
    # A `split` column decides on its own and excludes the fold flags.
    df = pd.read_csv(cohort / "cohort.csv")
    df["split"] = ["train"] * 10 + ["val"] * 3 + ["test"] * 3
    df.to_csv(cohort / "split.csv", index=False)
    marked = load_examples(str(cohort / "grids"), str(cohort / "split.csv"), "classification")
    sp = marked.split()
    assert [len(sp.train), len(sp.val), len(sp.test)] == [10, 3, 3] and sp.how == "the cohort's split column"
    with pytest.raises(ConfigError, match="split"):
        marked.split(test_fold=3)


@pytest.mark.slow
def test_test_labels_never_steer_training(cohort, tmp_path):
    """Leakage: flipping the test fold's labels changes the test AUC, but not one weight of the selected model."""
    df = pd.read_csv(cohort / "cohort.csv")
    flipped = df.copy()
    test = flipped["fold"] == 3
    flipped.loc[test, "label"] = flipped.loc[test, "label"].map({"tumor": "normal", "normal": "tumor"})
    flipped.to_csv(tmp_path / "flipped.csv", index=False)
    kw = dict(test_fold=3, epochs=4, model_kwargs={"maps": 4})
    a = run_train(_cfg(cohort, tmp_path / "a", **kw), log_to_mlflow=False)
    b = run_train(_cfg(cohort, tmp_path / "b", cohort=str(tmp_path / "flipped.csv"), **kw), log_to_mlflow=False)
    from slidegrid.train.checkpoints import read_state

    sa, sb = read_state(a.checkpoint_dir), read_state(b.checkpoint_dir)
    assert sa["best_epoch"] == sb["best_epoch"]
    for k, v in sa["best_model"].items():
        assert torch.equal(v, sb["best_model"][k]), k
    assert a.test["test_auc"] == pytest.approx(1 - b.test["test_auc"])
    assert a.test["test_auc"] != b.test["test_auc"]
