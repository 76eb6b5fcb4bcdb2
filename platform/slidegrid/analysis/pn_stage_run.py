"""`slidegrid pn-stage`: lymph-node metastasis types and patient pN-stages from `slidegrid segment`'s
features.csv (papers/digipathai-ensemble-segmentation-framework.txt, "pN-staging pipeline", Tables 2, 3 and 5,
"Performance evaluation on CAMELYON17 challenge").

The cohort is a CSV: `slide_id`, `patient_id` (or `patient`), and a node's `metastasis` type (negative, itc,
micro, macro) and/or the patient's `pn_stage` (pN0, pN0(i+), pN1mi, pN1, pN2; on any of its rows, or on a row
with an empty slide_id, CAMELYON17's layout). Node types come from the RF ensemble (`MetastasisClassifier`) on
the 32 Table 5 features, either

- out-of-fold (the cohort has `metastasis`): K folds of whole patients, so no node is scored by a forest that
  saw it or another node of its patient; or
- fitted on another cohort (`fit_cohort`, which needs `metastasis`) and applied to this one; a slide or patient
  in both is refused.

Patients are staged with Table 3 and scored with quadratic-weighted Cohen's kappa (the CAMELYON17 score) against
`pn_stage`, or, without that column, against Table 3 applied to the true node types (how CAMELYON17 defines it).
"""

from __future__ import annotations

import math
import os
import warnings
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from ..errors import ConfigError
from ..io.storage import normalize_uri
from ..io.tables import csv_text, read_csv_rows, write_tables
from ..tracking import log_analysis_run
from .heatmap_features import TABLE5_FEATURES
from .pn_stage import (
    METASTASIS_TYPES,
    PN_STAGES,
    MetastasisClassifier,
    RFEnsembleConfig,
    patient_stages,
    stage_kappa,
    vote_winner,
)

PATIENT_COLUMNS = ("patient_id", "patient")


@dataclass(frozen=True)
class PnStageConfig:
    """Everything `slidegrid pn-stage` takes. `out` defaults to `pn-stage/` beside the features table;
    `fit_features` (features of the fit cohort's slides) defaults to `features`."""

    features: str
    cohort: str
    out: str | None = None
    folds: int = 5
    fit_cohort: str | None = None
    fit_features: str | None = None
    ensemble: RFEnsembleConfig = field(default_factory=RFEnsembleConfig)
    tracking_uri: str | None = None
    storage_options: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.folds < 2:
            raise ConfigError("--folds", f"{self.folds}: out-of-fold typing needs at least 2 folds")
        if self.fit_features and not self.fit_cohort:
            raise ConfigError("--fit-features", "only used with --fit-cohort (the features of its slides)")

    @property
    def output(self) -> str:
        """The output folder or prefix."""
        return self.out or normalize_uri(self.features).rsplit("/", 1)[0] + "/pn-stage"


@dataclass
class NodeCohort:
    """One entry per lymph-node slide (`types`: codes 0..3, None without a `metastasis` column) and the
    patients' given pN-stages."""

    slides: list[str]
    patients: list[str]
    types: list[int] | None
    stages: dict[str, str]


def _stage_name(value: str) -> str | None:
    return next((s for s in PN_STAGES if s.lower() == value.lower().replace(" ", "")), None)


def read_node_cohort(uri: str, storage_options: Mapping[str, Any] | None = None) -> NodeCohort:
    """Parse and check a node cohort CSV (module docstring); every problem is listed in one ConfigError."""
    header, rows = read_csv_rows(uri, ("slide_id",), storage_options)
    patient_col = next((c for c in PATIENT_COLUMNS if c in header), None)
    if patient_col is None:
        raise ConfigError(uri, f"lacks a patient_id (or patient) column; header: {header}")
    has_types, has_stages = "metastasis" in header, "pn_stage" in header
    if not (has_types or has_stages):
        raise ConfigError(uri, "needs a `metastasis` column (node type: " + ", ".join(METASTASIS_TYPES)
                          + ") and/or a `pn_stage` column (" + ", ".join(PN_STAGES) + ")")
    problems: list[str] = []
    slides: list[str] = []
    patients: list[str] = []
    types: list[int] = []
    stages: dict[str, str] = {}
    seen: dict[str, int] = {}
    for n, row in rows:
        sid, patient = row["slide_id"], row[patient_col]
        if not patient:
            problems.append(f"row {n}: empty {patient_col}; every row names its patient")
            continue
        stage = row.get("pn_stage", "")
        if stage:
            name = _stage_name(stage)
            if name is None:
                problems.append(f"row {n}: pn_stage {stage!r} is not one of {', '.join(PN_STAGES)}")
            elif stages.setdefault(patient, name) != name:
                problems.append(f"row {n}: pn_stage {name} of patient {patient!r} contradicts "
                                f"{stages[patient]} given on an earlier row")
        if not sid:
            if not stage:
                problems.append(f"row {n}: empty slide_id; a patient-level row needs a pn_stage")
            continue
        if sid in seen:
            problems.append(f"row {n}: slide {sid!r} is listed again (first on row {seen[sid]})")
            continue
        seen[sid] = n
        kind = row.get("metastasis", "").lower()
        if has_types and kind not in METASTASIS_TYPES:
            problems.append(f"row {n}: metastasis {row['metastasis']!r} is not one of {', '.join(METASTASIS_TYPES)}"
                            + (" (every node needs one)" if not kind else ""))
            continue
        slides.append(sid)
        patients.append(patient)
        types.append(METASTASIS_TYPES.index(kind) if has_types else -1)
    problems += [f"patient {p!r} has a pn_stage but no node slide" for p in stages if p not in set(patients)]
    if len(problems) == 1:
        raise ConfigError(uri, problems[0])
    if problems:
        raise ConfigError(uri, f"{len(problems)} problems in the cohort table; fix them all and re-run:\n"
                          + "\n".join(f"  {p}" for p in problems))
    return NodeCohort(slides, patients, types if has_types else None, stages)


def read_features(uri: str, slides: Sequence[str], storage_options: Mapping[str, Any] | None = None) -> np.ndarray:
    """(len(slides), 32) Table 5 features of the named slides from a features.csv (`slidegrid segment`)."""
    _, rows = read_csv_rows(uri, ("slide_id", *TABLE5_FEATURES), storage_options)
    by_slide = {row["slide_id"]: (n, row) for n, row in rows}
    missing = [s for s in slides if s not in by_slide]
    if missing:
        raise ConfigError(uri, f"no features for {len(missing)} slide(s) of the cohort ({', '.join(missing[:5])}"
                          f"{', ...' if len(missing) > 5 else ''}); segment them first (`slidegrid segment` "
                          "writes OUT/features.csv)")
    x = np.empty((len(slides), len(TABLE5_FEATURES)))
    for i, sid in enumerate(slides):
        n, row = by_slide[sid]
        for j, name in enumerate(TABLE5_FEATURES):
            try:
                x[i, j] = float(row[name])
            except ValueError:
                x[i, j] = math.nan
            if not math.isfinite(x[i, j]):
                raise ConfigError(f"{uri} row {n}", f"{name} = {row[name]!r} is not a finite number")
    return x


def out_of_fold(x: np.ndarray, types: Sequence[int], patients: Sequence[str], folds: int,
                ensemble: RFEnsembleConfig) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Out-of-fold (predicted codes (n,), member votes (n, 4), fold (n,)) over K folds of whole patients,
    stratified by node type so rare types reach every fold where they can."""
    from sklearn.model_selection import StratifiedGroupKFold

    n_patients = len(set(patients))
    if n_patients < folds:
        raise ConfigError("--folds", f"{folds} folds need at least {folds} patients; the cohort has {n_patients}")
    y = np.asarray(types)
    votes = np.zeros((len(y), len(METASTASIS_TYPES)), int)
    fold_of = np.full(len(y), -1)
    split = StratifiedGroupKFold(n_splits=folds, shuffle=True, random_state=ensemble.seed)
    with warnings.catch_warnings():
        # Rare node types (ITC) often have fewer nodes than folds: expected, and sklearn says so per call.
        warnings.filterwarnings("ignore", message="The least populated class", category=UserWarning)
        for k, (fit, held) in enumerate(split.split(x, y, groups=np.asarray(patients))):
            model = MetastasisClassifier(ensemble).fit(x[fit], y[fit])
            votes[held] = model.votes(x[held])
            fold_of[held] = k
    return vote_winner(votes), votes, fold_of


@dataclass
class PnStageReport:
    """Per-node and per-patient tables, scores (None where the cohort gives no truth) and where they went."""

    nodes: list[dict[str, Any]]
    patients: list[dict[str, Any]]
    confusion: list[list[int]] | None
    node_accuracy: float | None
    majority_accuracy: float | None
    kappa: float | None
    stage_accuracy: float | None
    truth: str | None  # what the stages were scored against
    scheme: str  # how node types were predicted
    tables: dict[str, str]
    run_id: str
    tracking_uri: str


def _confusion(truth: Sequence[int], predicted: Sequence[int]) -> list[list[int]]:
    m = np.zeros((len(METASTASIS_TYPES),) * 2, int)
    np.add.at(m, (np.asarray(truth), np.asarray(predicted)), 1)
    return m.tolist()


def _fit_and_apply(config: PnStageConfig, cohort: NodeCohort, x: np.ndarray) -> tuple[np.ndarray, np.ndarray, list[int]]:
    """Fit on the --fit-cohort's nodes, predict this cohort's; (codes, votes, the fit labels)."""
    fit = read_node_cohort(config.fit_cohort, config.storage_options)
    if fit.types is None:
        raise ConfigError(config.fit_cohort, "the cohort the forests are fitted on needs a `metastasis` column")
    shared = sorted(set(fit.slides) & set(cohort.slides)) or sorted(set(fit.patients) & set(cohort.patients))
    if shared:
        raise ConfigError("--fit-cohort", f"{len(shared)} slide(s) or patient(s) are in both cohorts "
                          f"({', '.join(shared[:5])}); scoring nodes the forests were fitted on overstates them: "
                          "drop them from one cohort, or leave out --fit-cohort for out-of-fold typing")
    x_fit = read_features(config.fit_features or config.features, fit.slides, config.storage_options)
    model = MetastasisClassifier(config.ensemble).fit(x_fit, fit.types)
    return model.predict(x), model.votes(x), fit.types


def run_pn_stage(config: PnStageConfig) -> PnStageReport:
    """Type every node, stage every patient (Table 3), score against the cohort, write nodes.csv,
    patients.csv (and confusion.csv with true node types) under `config.output`, and log one MLflow run
    (experiment slidegrid-pn-stage). ConfigError on any bad table or option."""
    cohort = read_node_cohort(config.cohort, config.storage_options)
    x = read_features(config.features, cohort.slides, config.storage_options)
    if config.fit_cohort:
        predicted, votes, fit_types = _fit_and_apply(config, cohort, x)
        folds = np.full(len(predicted), -1)
        scheme = f"fitted on {config.fit_cohort}"
    elif cohort.types is None:
        raise ConfigError(config.cohort, "out-of-fold typing needs node types: add a `metastasis` column, or fit "
                          "on another cohort with --fit-cohort")
    else:
        predicted, votes, folds = out_of_fold(x, cohort.types, cohort.patients, config.folds, config.ensemble)
        fit_types = cohort.types
        scheme = f"{config.folds}-fold out-of-fold by patient"
    names = [METASTASIS_TYPES[c] for c in predicted]
    nodes = [{"slide_id": sid, "patient": p, "fold": int(k),
              "metastasis": METASTASIS_TYPES[cohort.types[i]] if cohort.types else "", "predicted": names[i],
              **{f"votes_{t}": int(v) for t, v in zip(METASTASIS_TYPES, votes[i])}}
             for i, (sid, p, k) in enumerate(zip(cohort.slides, cohort.patients, folds))]
    staged = patient_stages(cohort.patients, names)
    if cohort.stages:
        truth, truth_name = cohort.stages, "pn_stage"
    elif cohort.types is not None:
        truth, truth_name = patient_stages(cohort.patients, cohort.types), "Table 3 of the true node types"
    else:
        truth, truth_name = {}, None
    counts = Counter(cohort.patients)
    patients = [{"patient": p, "nodes": counts[p], "pn_stage": truth.get(p, ""), "predicted": s}
                for p, s in staged.items()]
    scored = [p for p in staged if p in truth]
    metrics: dict[str, float] = {"nodes": len(nodes), "patients": len(patients)}
    confusion = node_accuracy = majority = kappa = stage_accuracy = None
    tables = {"nodes.csv": csv_text(nodes), "patients.csv": csv_text(patients)}
    if cohort.types is not None:
        confusion = _confusion(cohort.types, predicted)
        node_accuracy = float(np.mean(np.asarray(cohort.types) == predicted))
        majority = float(np.mean(np.asarray(cohort.types) == Counter(fit_types).most_common(1)[0][0]))
        metrics.update(node_accuracy=node_accuracy, node_majority_accuracy=majority)
        tables["confusion.csv"] = csv_text([{"metastasis": t, **dict(zip(METASTASIS_TYPES, row))}
                                            for t, row in zip(METASTASIS_TYPES, confusion)])
    if scored:
        kappa = stage_kappa([truth[p] for p in scored], [staged[p] for p in scored])
        stage_accuracy = float(np.mean([truth[p] == staged[p] for p in scored]))
        metrics.update(kappa=kappa, stage_accuracy=stage_accuracy, scored_patients=len(scored))
    uris = write_tables(config.output, tables, config.storage_options)
    params = {"features": config.features, "cohort": config.cohort, "fit_cohort": config.fit_cohort,
              "fit_features": config.fit_features, "folds": None if config.fit_cohort else config.folds,
              "scheme": scheme, "truth": truth_name, "ensemble": asdict(config.ensemble),
              "out": config.output}
    run_id, tracking = log_analysis_run("slidegrid-pn-stage", f"pn-stage-{os.path.basename(config.cohort)}",
                                        config.output, config.tracking_uri, params, metrics, tables)
    return PnStageReport(nodes, patients, confusion, node_accuracy, majority, kappa, stage_accuracy, truth_name,
                         scheme, uris, run_id, tracking)
