"""Weighted boxes fusion of every (image, class) group at once, bit-identical to ensemble-boxes.

The kernel :func:`data_prep.labels.fusion.fuse` runs for ``method="wbf"``; the box table's preparation
(normalised boxes, groups, models, weights), the other methods and the ``fuse`` stage are in
:mod:`data_prep.labels.fusion`.

Why by hand (bit-identical, tested): calling ensemble-boxes once per image costs ~10 s on the
real train.csv, almost all of it per-call and per-box Python overhead, and the library does not
return which boxes formed each fused box. So :func:`fuse_wbf_groups` runs ensemble-boxes 1.0.9's WBF
algorithm on every (image, class) group at once, step j taking the j-th box (in the library's
own ``prefilter_boxes`` order, :func:`_processing_order`) of every group together
(:func:`_wbf_steps`), with the library's exact arithmetic (float64 IoU, float32
``get_weighted_box`` accumulation, its score rescaling per ``conf_type``).
``tests/test_fusion.py`` compares it bit for bit with ``ensemble_boxes.weighted_boxes_fusion``
(real rows, random cases, every conf_type) and ``bench/fuse.py`` on the full real file; a
different installed ensemble-boxes version is logged as a warning (:func:`check_version`).

Input: the prepared table of :func:`data_prep.labels.fusion._prepare` (columns ``g`` group, ``t``
model, ``M`` models of the image, ``wt`` model weight, ``score``, ``_img`` and the normalised
box :data:`NCOLS`), groups contiguous.
"""
from __future__ import annotations

import logging

import numpy as np
import pandas as pd

from data_prep.core.boxes import iou as box_iou

log = logging.getLogger("data_prep.labels.fusion")   # the fuse stage's logger: its lines read as fuse's

NCOLS = ["nx1", "ny1", "nx2", "ny2"]          # the normalised box columns of the prepared table


def model_weights(b: pd.DataFrame, models: pd.DataFrame) -> np.ndarray:
    """``(G, T)`` float64: per (image, class) group, its image's model weights by model index
    ``t`` (0 beyond the image's ``M`` models)."""
    T = int(models["M"].max())
    # not mutated: extra rows of per_image are never read
    per_image = np.zeros((int(b["_img"].max()) + 1, T))  # pragma: no mutate
    code = b.drop_duplicates("_img").set_index("image_id")["_img"]
    mi = code.loc[models["image_id"]].to_numpy()   # models lists only images with boxes (fusion._prepare)
    per_image[mi, models["t"].to_numpy()] = models["wt"].to_numpy()
    starts = np.flatnonzero(np.r_[True, np.diff(b["g"].to_numpy()) != 0])
    return per_image[b["_img"].to_numpy()[starts]]


def _processing_order(s: np.ndarray, starts: np.ndarray, size: np.ndarray) -> np.ndarray:
    """Per group, the order ensemble-boxes' ``prefilter_boxes`` gives its boxes:
    ``scores.argsort()[::-1]`` on the group (numpy's argsort, ties included). Returns global
    row indices, groups contiguous. A group of equal scores depends only on its size (cached)."""
    out = np.empty(len(s), dtype="int64")
    # not mutated (lo, hi, perm): never called without boxes; argsort of a group of equal scores depends on
    # its size only, so the cache and the group's own argsort are the same permutation
    lo = np.minimum.reduceat(s, starts) if len(s) else s  # pragma: no mutate
    hi = np.maximum.reduceat(s, starts) if len(s) else s  # pragma: no mutate
    cache: dict[int, np.ndarray] = {}
    for k in np.unique(size):
        cache[int(k)] = np.ones(int(k)).argsort()[::-1]
    for gi in range(len(starts)):
        a, k = int(starts[gi]), int(size[gi])
        perm = cache[k] if lo[gi] == hi[gi] else s[a:a + k].argsort()[::-1]  # pragma: no mutate
        out[a:a + k] = a + perm
    return out


def fuse_wbf_groups(b: pd.DataFrame, iou_thr: float, conf_type: str, mw: np.ndarray):
    """Weighted boxes fusion of every (image, class) group at once, bit-identical to
    ``ensemble_boxes.weighted_boxes_fusion`` 1.0.9 (``weights`` = the raters' weights,
    ``allows_overflow=False``).

    ``mw``: ``(G, T)`` model weights per group (:func:`model_weights`). Boxes are taken in
    ensemble-boxes' order (by descending score * weight), step ``j`` handling the j-th box of
    every group together: match it to the group's current fused box of highest IoU (first on
    ties; a match needs IoU > ``iou_thr``) or open a new cluster. A cluster of >= 2 boxes holds
    ensemble-boxes' float32 arithmetic (``get_weighted_box``): coordinates accumulated in float32
    as score * weight * box, divided by the summed score * weight; a one-box cluster keeps the
    float64 box. The confidence is then rescaled by the weights as the library does (sum of all
    model weights, of the cluster's, of its distinct models', of the absent models', the largest
    weight; sums in model order, as numpy's for fewer than 8 models). Returns ``(group (K,),
    nxyxy (K, 4), score (K,), n_raters (K,))``."""
    g = b["g"].to_numpy()
    nb = b[NCOLS].to_numpy()
    # not mutated (dtype= of wt, s, M, bucket): the prepared columns are float64 / int64 already
    wt = b["wt"].to_numpy(dtype="float64")  # pragma: no mutate
    s = b["score"].to_numpy(dtype="float64") * wt  # pragma: no mutate (ensemble-boxes' float(score) * weights[t])
    t = b["t"].to_numpy()
    G = int(g[-1]) + 1
    starts = np.searchsorted(g, np.arange(G))
    size = np.diff(np.append(starts, len(g)))
    M = b["M"].to_numpy()[starts].astype("float64")  # pragma: no mutate
    order = _processing_order(s, starts, size)
    # groups of similar size together (sizes within 2x) so the padded state stays <= 2x the boxes
    bucket = np.frexp(size.astype("float64"))[1]  # pragma: no mutate
    parts = []
    for k in np.unique(bucket):
        sel = np.flatnonzero(bucket == k)
        gi, xyxy, score, nm = _wbf_steps(nb, s, wt, t, order, starts[sel], size[sel], M[sel], mw[sel],
                                         iou_thr, conf_type)
        parts.append((sel[gi], xyxy, score, nm))
    log.debug("fuse wbf: %d groups, up to %d boxes per group", G, int(size.max()))
    return tuple(np.concatenate(x) for x in zip(*parts))


def _wbf_steps(nb, s, wt, t, order, starts, size, M, mw, iou_thr, conf_type):
    """:func:`fuse_wbf_groups` on the groups starting at rows ``starts`` (sizes ``size``, models
    ``M``, model weights ``mw`` (G, T)); returns (local group index, nxyxy, score, n_raters)
    per fused box."""
    G, K = len(starts), int(size.max())
    T = mw.shape[1]
    C = np.zeros((G, K, 4))                        # current fused boxes (what a new box is matched to)
    # not mutated (dtypes of acc, cnt, models): every store into acc is rounded to float32 explicitly, counts
    # and model flags give the same sums and masks as float (np.where reads non-zero as True)
    acc = np.zeros((G, K, 4), dtype=np.float32)  # pragma: no mutate (float32 sum of score * weight * box)
    conf = np.zeros((G, K))                        # summed score * weight
    vmax = np.zeros((G, K))                        # max score * weight (conf_type max)
    first = np.zeros((G, K))                       # score * weight of the cluster's first box
    wsum = np.zeros((G, K))                        # summed weight of the members
    wfirst = np.zeros((G, K))                      # weight of the cluster's first box
    cnt = np.zeros((G, K), dtype="int64")  # pragma: no mutate
    models = np.zeros((G, K, T), dtype=bool)  # pragma: no mutate
    ncl = np.zeros(G, dtype="int64")
    for j in range(K):
        a = np.flatnonzero(size > j)
        p = order[starts[a] + j]
        B, sj, tj, wj = nb[p], s[p], t[p], wt[p]
        k_act = int(ncl[a].max()) if len(a) else 0  # pragma: no mutate (j < max size: a is never empty)
        if k_act:
            c = C[a, :k_act]
            iou = box_iou(c, B[:, None, :])     # zero-area boxes were left out: the union is > 0
            # not mutated: the slot at ncl is still all zeros (IoU 0, never above a real cluster's on argmax
            # ties, never > iou_thr >= 0), and any negative fill keeps padding out
            iou[np.arange(k_act)[None, :] >= ncl[a][:, None]] = -2.0  # pragma: no mutate
            best = np.argmax(iou, 1)
            best_iou = iou[np.arange(len(a)), best]
            match = ~(best_iou <= iou_thr)
        else:
            best = np.zeros(len(a), dtype="int64")
            match = np.zeros(len(a), dtype=bool)
        # new clusters
        na, k = a[~match], ncl[a[~match]]
        C[na, k] = B[~match]
        acc[na, k] = (sj[~match, None] * B[~match]).astype(np.float32)  # pragma: no mutate (acc is float32)
        conf[na, k] = sj[~match]
        vmax[na, k] = sj[~match]
        first[na, k] = sj[~match]
        wsum[na, k] = wj[~match]
        wfirst[na, k] = wj[~match]
        cnt[na, k] = 1
        models[na, k, tj[~match]] = True
        ncl[na] += 1
        # matched clusters: ensemble-boxes' get_weighted_box on the grown member list
        ma, k = a[match], best[match]
        # not mutated: float32 -> float64 is exact (astype(None) is float64 too) and acc stores float32
        acc[ma, k] = (acc[ma, k].astype(np.float64) + sj[match, None] * B[match]).astype(np.float32)  # pragma: no mutate
        conf[ma, k] = conf[ma, k] + sj[match]
        vmax[ma, k] = np.maximum(vmax[ma, k], sj[match])
        wsum[ma, k] = wsum[ma, k] + wj[match]
        cnt[ma, k] += 1
        models[ma, k, tj[match]] = True
        with np.errstate(invalid="ignore", divide="ignore"):  # all-zero scores: NaN, as ensemble-boxes
            C[ma, k] = (acc[ma, k].astype(np.float64) / conf[ma, k][:, None]).astype(np.float32)  # pragma: no mutate

    valid = np.arange(K)[None, :] < ncl[:, None]
    gi, ki = np.nonzero(valid)
    n = cnt[gi, ki]
    multi = n > 1
    # >= 2 members: ensemble-boxes' float32 value (np.where gives it back as float64); one: the float64 one
    if conf_type == "max":
        v = np.where(multi, vmax[gi, ki].astype(np.float32), first[gi, ki])
    else:
        v = np.where(multi, (conf[gi, ki] / n).astype(np.float32), first[gi, ki])
    # the weighted box's weight field: float32 sum for >= 2 members, the box's own weight for one
    wcol = np.where(multi, wsum[gi, ki].astype(np.float32), wfirst[gi, ki])
    present = models[gi, ki]
    nm = present.sum(1)
    Mg = M[gi]
    w_all = mw[gi].sum(1)                          # weights.sum()
    if conf_type == "box_and_model_avg":
        score = v * n / wcol
        score = score * np.where(present, mw[gi], 0.0).sum(1) / w_all
    elif conf_type == "absent_model_aware_avg":
        score = v * n / (wcol + np.where(present, 0.0, mw[gi]).sum(1))
    elif conf_type == "max":
        score = v / mw[gi].max(1)
    else:
        score = v * np.minimum(Mg, n) / w_all
    return gi, C[gi, ki], score, nm.astype("int64")  # pragma: no mutate (fuse casts n_raters to int64)


TESTED_ENSEMBLE_BOXES = "1.0.9"
_version_checked = False


def check_version() -> None:  # pragma: no mutate block, a log warning
    global _version_checked
    if not _version_checked:
        from importlib.metadata import PackageNotFoundError, version
        try:
            v = version("ensemble-boxes")
        except PackageNotFoundError:
            v = "unknown"
        if v != TESTED_ENSEMBLE_BOXES:
            log.warning("ensemble-boxes %s installed; fuse's WBF is tested bit-identical against %s "
                        "(run tests/test_fusion.py)", v, TESTED_ENSEMBLE_BOXES)
        _version_checked = True
