"""Stratified, patient-grouped k-folds: ``make_folds(images, boxes) -> DataFrame image_id, fold``.

Each image is described by the SET of classes it has boxes of; an image with no boxes (normal)
gets one extra label, "normal". Folds are made by iterative multilabel stratification
(Sechidis et al. 2011) from the maintained ``iterative-stratification`` package
(:class:`iterstrat.ml_stratifiers.MultilabelStratifiedKFold`), so every class, rare ones
included, is spread over the folds in about its global proportion.

Grouping: where a dataset knows patients (NIH ``Patient ID``, RSNA ``patientId``), all images of
one patient must fall in one fold, else a model is validated on the patient it trained on. The
split is therefore made over PATIENTS: a patient's label row is the union of its images' label
sets (and "normal" when any of its images is normal), the patients are split, and each image
takes its patient's fold. VinBigData has no patient ids (``patient_id`` = ``image_id``), so its
groups are single images and this is plain multilabel stratification.

Reproducible: the same tables, ``k`` and ``seed`` give the same folds (the tables are sorted by
id before splitting, so row order does not matter).
"""
from __future__ import annotations

import logging

import numpy as np
import pandas as pd

log = logging.getLogger(__name__)

NORMAL_LABEL = "normal"


def label_matrix(images: pd.DataFrame, boxes: pd.DataFrame) -> tuple[pd.DataFrame, list]:
    """Per-image multi-hot labels: ``(DataFrame bool, index image_id, one column per class_id
    present + "normal")``, rows in the order of ``images``. Returns the frame and its column list."""
    ids = images["image_id"].astype(str)
    unknown = ~boxes["image_id"].astype(str).isin(set(ids))
    if unknown.any():
        i = boxes.index[unknown.to_numpy()][0]
        raise ValueError(f"folds: box row {i}: image_id {boxes.loc[i, 'image_id']!r} is not in the image table")
    pairs = pd.DataFrame({"image_id": boxes["image_id"].astype(str), "class_id": boxes["class_id"].astype("int64")})
    hot = pd.crosstab(pairs["image_id"], pairs["class_id"]).astype(bool)
    hot = hot.reindex(ids.to_numpy(), fill_value=False)
    hot[NORMAL_LABEL] = ~hot.any(axis=1)
    hot.index.name = "image_id"
    return hot, list(hot.columns)


def make_folds(images: pd.DataFrame, boxes: pd.DataFrame, k: int = 5, seed: int = 42,
               group_col: str = "patient_id") -> pd.DataFrame:
    """Assign each image of ``images`` to one of ``k`` folds.

    images: image table (``image_id``; ``group_col`` optional: missing or empty values mean the
    image is its own group). boxes: box table (``image_id``, ``class_id``) of those images.
    Returns ``DataFrame image_id (str), fold (int64 in [0, k))`` sorted by image_id, one row per
    image. Raises ``ValueError`` when ``k < 2``, when there are fewer groups than folds, when an
    image_id repeats, or when a box names an image not in ``images``.
    """
    k = int(k)
    if k < 2:
        raise ValueError(f"folds: k = {k}; expected at least 2 folds")
    images = images.copy()
    images["image_id"] = images["image_id"].astype(str)
    dup = images["image_id"].duplicated()
    if dup.any():
        raise ValueError(f"folds: image table row {images.index[dup.to_numpy()][0]}: image_id "
                         f"{images.loc[dup, 'image_id'].iloc[0]!r} appears twice; expected one row per image")
    images = images.sort_values("image_id")      # ids unique (checked): no tie; rows are used by position
    if group_col in images:
        groups = images[group_col].fillna("").astype(str)
        groups = groups.where(groups != "", images["image_id"])
    else:
        groups = images["image_id"]
    hot, cols = label_matrix(images, boxes)

    # patient-level labels: union over the patient's images
    by_group = hot.groupby(groups.to_numpy()).any()             # groups sorted (groupby's default)
    n_groups = len(by_group)
    if n_groups < k:
        raise ValueError(f"folds: {n_groups} {'patients' if group_col in images else 'images'} "
                         f"for k = {k} folds; expected at least {k}")
    y = by_group.to_numpy()
    y = y[:, y.any(axis=0)]                       # drop labels no group has
    # iterstrat wants a multilabel-indicator (>= 2 columns). Not mutated: iterstrat gives the same folds
    # with any number (and dtype) of all-zero columns (tests/test_folds.py checks the folds against it)
    if y.shape[1] < 2:  # pragma: no mutate
        y = np.concatenate([y, np.zeros((len(y), 2 - y.shape[1]), dtype=bool)], axis=1)  # pragma: no mutate

    from iterstrat.ml_stratifiers import MultilabelStratifiedKFold

    mskf = MultilabelStratifiedKFold(n_splits=k, shuffle=True, random_state=int(seed))
    # not mutated: every group is in exactly one test fold (the fill is overwritten); X is ignored
    group_fold = np.full(n_groups, -1, dtype="int64")  # pragma: no mutate
    for fold, (_, test_idx) in enumerate(mskf.split(np.zeros((n_groups, 1)), y)):  # pragma: no mutate
        group_fold[test_idx] = fold
    assert (group_fold >= 0).all()
    fold_of = pd.Series(group_fold, index=by_group.index)
    out = pd.DataFrame({"image_id": images["image_id"].to_numpy(),
                        "fold": fold_of.loc[groups.to_numpy()].to_numpy()})
    # a guard only: iterstrat gave no empty fold for >= k groups in 3000 random cases, so not mutated
    empty = sorted(set(range(k)) - set(out["fold"]))  # pragma: no mutate
    if empty:
        raise ValueError(f"folds: fold(s) {empty} came out empty for {n_groups} groups and k = {k}")
    log.info("folds: %d images, %d groups, k=%d, seed=%d, images per fold %s", len(out), n_groups, k, seed,
             out["fold"].value_counts().sort_index().tolist())
    return out


def fold_summary(folds: pd.DataFrame, images: pd.DataFrame, boxes: pd.DataFrame,
                 class_names: dict | None = None) -> pd.DataFrame:
    """Images per fold and, per label, the share of each fold's images having it.

    Returns ``DataFrame`` indexed by fold (int) with ``n_images`` and one float column per label
    (class name where ``class_names`` maps class_id -> name, else the id; plus "normal"), and a last
    row ``all`` with the global shares."""
    hot, cols = label_matrix(images, boxes)
    f = folds.set_index("image_id")["fold"].reindex(hot.index)
    share = hot.groupby(f.to_numpy()).mean()
    share.loc["all"] = hot.mean()
    share.insert(0, "n_images", list(f.value_counts().sort_index()) + [len(hot)])
    if class_names:
        share = share.rename(columns={c: class_names.get(c, c) for c in cols})
    return share
