"""Lymph-node metastasis typing and patient pN-stage (CAMELYON17; papers/digipathai-ensemble-segmentation-
framework.txt, "pN-staging pipeline", Tables 2-3, "Performance evaluation on CAMELYON17 challenge").

- `MetastasisClassifier`: an ensemble of Random Forests, each trained on a different random subset of the
  nodes, balanced by SMOTETomek (SMOTE oversampling, then Tomek-link cleaning); majority vote, a tie going
  to the higher metastasis category.
- `pn_stage`: Table 3's rules from a patient's node types. Only micro- and macro-metastases count as
  metastatic nodes (ITCs alone give pN0(i+)).
- `stage_kappa`: quadratic-weighted Cohen's kappa on pN-stages, the challenge's score.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from sklearn.ensemble import RandomForestClassifier

from ..errors import ConfigError
from ..metrics import quadratic_kappa
from .heatmap_features import TABLE5_FEATURES

METASTASIS_TYPES = ("negative", "itc", "micro", "macro")
NEGATIVE, ITC, MICRO, MACRO = range(4)
PN_STAGES = ("pN0", "pN0(i+)", "pN1mi", "pN1", "pN2")


def metastasis_code(kind: str | int) -> int:
    """Ordinal code 0..3 of a metastasis type given by name (case-insensitive) or code."""
    if isinstance(kind, (int, np.integer)) and 0 <= kind < len(METASTASIS_TYPES):
        return int(kind)
    name = str(kind).strip().lower()
    if name not in METASTASIS_TYPES:
        raise ConfigError("metastasis type", f"{kind!r} is not one of {', '.join(METASTASIS_TYPES)}")
    return METASTASIS_TYPES.index(name)


def pn_stage(node_types: Iterable[str | int]) -> str:
    """A patient's pN-stage from the metastasis types of its lymph nodes (Table 3)."""
    codes = [metastasis_code(t) for t in node_types]
    if not codes:
        raise ConfigError("pN-stage", "a patient needs at least one lymph node")
    metastatic = sum(c >= MICRO for c in codes)
    if MACRO in codes:
        if metastatic <= 3:
            return "pN1"
        if metastatic <= 9:
            return "pN2"
        raise ConfigError("pN-stage", f"{metastatic} metastatic nodes: Table 3 stops at 9 (pN2); TNM's pN3 "
                          "is outside the CAMELYON17 rules")
    if MICRO in codes:
        return "pN1mi"
    return "pN0(i+)" if ITC in codes else "pN0"


def patient_stages(patients: Sequence[Hashable], node_types: Sequence[str | int]) -> dict[Hashable, str]:
    """pN-stage per patient from one (patient, node type) pair per lymph-node slide."""
    if len(patients) != len(node_types):
        raise ConfigError("pN-stage", "needs one patient id per node")
    nodes: dict[Hashable, list[str | int]] = defaultdict(list)
    for patient, kind in zip(patients, node_types):
        nodes[patient].append(kind)
    return {patient: pn_stage(kinds) for patient, kinds in nodes.items()}


def stage_kappa(truth: Sequence[str], predicted: Sequence[str]) -> float:
    """Quadratic-weighted Cohen's kappa between two lists of pN-stages."""
    for stage in (*truth, *predicted):
        if stage not in PN_STAGES:
            raise ConfigError("pN-stage", f"{stage!r} is not one of {', '.join(PN_STAGES)}")
    return quadratic_kappa([PN_STAGES.index(s) for s in truth], [PN_STAGES.index(s) for s in predicted])


def feature_matrix(features: Sequence[Mapping[str, float]], names: Sequence[str] = TABLE5_FEATURES) -> np.ndarray:
    """(n, len(names)) matrix from per-slide feature dicts (`heatmap_features`)."""
    missing = [n for n in names if any(n not in f for f in features)]
    if missing:
        raise ConfigError("features", f"missing {', '.join(missing[:5])}; compute them with heatmap_features")
    return np.array([[f[n] for n in names] for f in features], float).reshape(len(features), len(names))


@dataclass(frozen=True)
class RFEnsembleConfig:
    """Members (the paper used four), each on `subset` of every class's nodes, and their forests."""

    members: int = 4
    subset: float = 0.8
    trees: int = 100
    smote_neighbors: int = 5
    seed: int = 0
    n_jobs: int = 1

    def __post_init__(self) -> None:
        if self.members < 1 or self.trees < 1 or self.smote_neighbors < 1:
            raise ConfigError("rf-ensemble", "members, trees and smote_neighbors must be >= 1")
        if not 0 < self.subset <= 1:
            raise ConfigError("rf-ensemble", f"subset {self.subset} is not within (0, 1]")


def _balanced(x: np.ndarray, y: np.ndarray, k: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """SMOTETomek with SMOTE's neighbours capped by the smallest class (SMOTE needs k < its size); a class of
    one node cannot be interpolated, so such subsets stay unbalanced."""
    from imblearn.combine import SMOTETomek
    from imblearn.over_sampling import SMOTE

    counts = np.bincount(y)
    smallest = counts[counts > 0].min()
    if len(counts[counts > 0]) < 2 or smallest < 2:
        return x, y
    smote = SMOTE(k_neighbors=min(k, smallest - 1), random_state=seed)
    return SMOTETomek(smote=smote, random_state=seed).fit_resample(x, y)


def vote_winner(votes: np.ndarray) -> np.ndarray:
    """(n,) codes 0..3 from (n, 4) member votes: the majority, a tie going to the higher metastasis category
    ("Performance evaluation on CAMELYON17 challenge")."""
    # argmax returns the first maximum: search the reversed columns so the highest category wins ties.
    return votes.shape[1] - 1 - np.argmax(votes[:, ::-1], axis=1)


class MetastasisClassifier:
    """Random-Forest ensemble typing a lymph node as negative / ITC / micro / macro from heatmap features."""

    def __init__(self, config: RFEnsembleConfig = RFEnsembleConfig()) -> None:
        self.config = config
        self.members: list[RandomForestClassifier] = []

    def _subset(self, y: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """A random `subset` of each class (at least one node of each), so no member loses a rare class."""
        picks = [rng.choice(idx, max(1, round(self.config.subset * len(idx))), replace=False)
                 for idx in (np.flatnonzero(y == c) for c in np.unique(y))]
        return np.sort(np.concatenate(picks))

    def fit(self, features: np.ndarray, types: Sequence[str | int]) -> MetastasisClassifier:
        """Train every member on its own subset of (features (n, F), metastasis types)."""
        x = np.asarray(features, float)
        y = np.array([metastasis_code(t) for t in types])
        if x.ndim != 2 or len(x) != len(y) or len(y) == 0:
            raise ConfigError("features", f"need an (n, F) matrix and n types, got {x.shape} and {len(y)}")
        rng = np.random.default_rng(self.config.seed)
        self.members = []
        for i in range(self.config.members):
            idx = self._subset(y, rng)
            xb, yb = _balanced(x[idx], y[idx], self.config.smote_neighbors, self.config.seed + i)
            forest = RandomForestClassifier(n_estimators=self.config.trees, random_state=self.config.seed + i,
                                            n_jobs=self.config.n_jobs)
            self.members.append(forest.fit(xb, yb))
        return self

    def votes(self, features: np.ndarray) -> np.ndarray:
        """(n, 4) member votes per metastasis type."""
        if not self.members:
            raise ConfigError("MetastasisClassifier", "call fit() before predicting")
        x = np.asarray(features, float)
        out = np.zeros((len(x), len(METASTASIS_TYPES)), int)
        for forest in self.members:
            np.add.at(out, (np.arange(len(x)), forest.predict(x).astype(int)), 1)
        return out

    def predict(self, features: np.ndarray) -> np.ndarray:
        """Codes 0..3 by majority vote; ties go to the higher category."""
        return vote_winner(self.votes(features))

    def predict_types(self, features: np.ndarray) -> list[str]:
        """Metastasis type names by majority vote."""
        return [METASTASIS_TYPES[c] for c in self.predict(features)]
