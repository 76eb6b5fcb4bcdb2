"""Patient-level splits: every slide of a patient lies in one part (train, validation or test).

Slides of one patient share tissue, staining and scanner; a model selected or scored on a patient it was trained
on is measured too well, and nothing in the numbers shows it. Folds are drawn by patient in the tools of the field
(CLAM's `create_splits` by case_id, scikit-learn's GroupKFold; here `analysis.pn_stage_run.out_of_fold` and
`synth`). A slide without a `patient_id` is its own patient.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from ..errors import ConfigError


def patient_key(slide_id: str, patient_id: str | None) -> str:
    """The patient a slide belongs to: its `patient_id`, else the slide itself."""
    return patient_id if patient_id else f"slide {slide_id}"


def holdout_patients(patients: Sequence[str], one_in: int = 5, seed: int = 0) -> set[str]:
    """A reproducible draw of one in `one_in` of the distinct patients (at least one) to hold out.

    `patients`: one key per slide (patient_key), in cohort order; the draw permutes the distinct keys in their
    order of first appearance, so a cohort without patient ids keeps the slide-level draw it always had.
    """
    distinct = list(dict.fromkeys(patients))
    idx = np.random.default_rng(seed).permutation(len(distinct))
    return {distinct[int(i)] for i in idx[: max(1, len(distinct) // one_in)]}


def check_patients_apart(parts: Mapping[str, Sequence[tuple[str, str | None]]], how: str) -> None:
    """ConfigError unless each patient's slides lie in one part.

    `parts`: part name (train, val, test) -> (slide_id, patient_id) of its slides; `how`: the split, for the
    message (e.g. "test fold 3, validation fold 0").
    """
    seen: dict[str, tuple[str, str]] = {}
    for part, slides in parts.items():
        for slide_id, patient_id in slides:
            key = patient_key(slide_id, patient_id)
            first = seen.setdefault(key, (part, slide_id))
            if first[0] != part:
                raise ConfigError("patient_id", f"patient {patient_id!r} has slides in {first[0]} ({first[1]}) and "
                                                f"in {part} ({slide_id}) under {how}: a model would be selected or "
                                                "scored on a patient it trained on. Give every slide of a patient "
                                                "the same fold (or `split` value)")
