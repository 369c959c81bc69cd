"""ensemble-boxes' ``weighted_boxes_fusion`` for many images at once, compiled with numba.

:func:`detection.competition.postprocess.ensemble` fuses prediction tables image by image through
ensemble-boxes; at competition scale (3 models x 15,000 images x 100 boxes, 4.5 million boxes)
that is minutes per call, and ``cxrdet tune`` calls it once per set of ``ens_*`` keys it tries.
:func:`wbf_tables` gives the same boxes, scores and labels (ensemble-boxes 1.0.9's algorithm step
for step: the prefilter's skip/clip/zero-area rules, numpy's own argsort for the per-label and
final orders where scores tie, the float32 arithmetic of ``get_weighted_box``, every
``conf_type``; tests/test_wbf.py compares it with ensemble-boxes on tied, clipped and weighted
inputs) with the clustering loop compiled: a second or two for those 4.5 million boxes.

Only the clustering runs in numba; the orders are numpy's (``argsort()[::-1]`` of the same arrays
ensemble-boxes sorts), so ties come out as ensemble-boxes gives them.
"""
from __future__ import annotations

import functools

import numpy as np

CONF_TYPES = ("avg", "max", "box_and_model_avg", "absent_model_aware_avg")


@functools.lru_cache(maxsize=1)
def _kernel():
    """The numba-compiled clustering (compiled on first use, a few seconds)."""
    import numba

    @numba.njit(cache=True, error_model="numpy")   # compiled once per machine (numba's cache)
    def cluster(rows, starts, iou_thr, conf_type, weights, out, counts):
        """Every label group ``rows[starts[g]:starts[g + 1]]`` (sorted as ensemble-boxes sorts it:
        [label, score * weight, weight, model, x1, y1, x2, y2]) clustered; the fused rows are
        written to ``out`` group after group, ``counts[g]`` = group g's number of fused rows;
        returns the number of rows written."""
        n_out = 0
        wsum = 0.0
        wmax = weights[0]
        for t in range(len(weights)):
            wsum += weights[t]
            if weights[t] > wmax:
                wmax = weights[t]
        n_models = len(weights)
        member = np.empty(rows.shape[0], np.int64)   # cluster of each row of the group
        for g in range(len(starts) - 1):
            a, b = starts[g], starts[g + 1]
            m = 0                                     # clusters so far: out[n_out:n_out + m]
            for j in range(a, b):
                best, best_iou = -1, iou_thr
                bi, bv = -1, -np.inf
                for c in range(m):
                    wb = out[n_out + c]
                    xa = max(wb[4], rows[j, 4])
                    ya = max(wb[5], rows[j, 5])
                    xb = min(wb[6], rows[j, 6])
                    yb = min(wb[7], rows[j, 7])
                    inter = max(xb - xa, 0.0) * max(yb - ya, 0.0)
                    area_a = (wb[6] - wb[4]) * (wb[7] - wb[5])
                    area_b = (rows[j, 6] - rows[j, 4]) * (rows[j, 7] - rows[j, 5])
                    v = inter / (area_a + area_b - inter)
                    if np.isnan(v):                   # numpy's argmax: the first NaN wins
                        bi, bv = c, v
                        break
                    if v > bv:
                        bi, bv = c, v
                if bi >= 0 and not (bv <= iou_thr):
                    best, best_iou = bi, bv
                if best == -1:
                    out[n_out + m] = rows[j]
                    member[j] = m
                    m += 1
                else:
                    member[j] = best
                    # get_weighted_box over the cluster's rows, in their order (float32 box)
                    box = np.zeros(8, np.float32)
                    conf = 0.0
                    cmax = -np.inf
                    cnt = 0
                    w = 0.0
                    first = -1
                    for i in range(a, j + 1):
                        if member[i] != best:
                            continue
                        if first < 0:
                            first = i
                        for k in range(4, 8):
                            box[k] = np.float32(np.float64(box[k]) + rows[i, 1] * rows[i, k])
                        conf += rows[i, 1]
                        if rows[i, 1] > cmax:
                            cmax = rows[i, 1]
                        cnt += 1
                        w += rows[i, 2]
                    box[0] = np.float32(rows[first, 0])
                    if conf_type == 1:
                        box[1] = np.float32(cmax)
                    else:
                        box[1] = np.float32(conf / cnt)
                    box[2] = np.float32(w)
                    box[3] = np.float32(-1.0)
                    for k in range(4, 8):
                        box[k] = np.float32(np.float64(box[k]) / conf)
                    for k in range(8):
                        out[n_out + best, k] = np.float64(box[k])
            # rescale the confidences by the number of models and boxes
            for c in range(m):
                cnt = 0
                for i in range(a, b):
                    if member[i] == c:
                        cnt += 1
                r = out[n_out + c]
                if conf_type == 2:    # box_and_model_avg
                    r[1] = r[1] * cnt / r[2]
                    seen = np.zeros(n_models, np.bool_)
                    wu = np.zeros(n_models, np.float64)
                    for i in range(a, b):
                        if member[i] == c:
                            t = int(rows[i, 3])
                            if not seen[t]:
                                seen[t] = True
                                wu[t] = rows[i, 2]
                    s = 0.0
                    for t in range(n_models):     # np.unique order: model index ascending
                        if seen[t]:
                            s += wu[t]
                    r[1] = r[1] * s / wsum
                elif conf_type == 3:  # absent_model_aware_avg
                    seen = np.zeros(n_models, np.bool_)
                    for i in range(a, b):
                        if member[i] == c:
                            seen[int(rows[i, 3])] = True
                    s = 0.0
                    for t in range(n_models):
                        if not seen[t]:
                            s += weights[t]
                    r[1] = r[1] * cnt / (r[2] + s)
                elif conf_type == 1:  # max
                    r[1] = r[1] / wmax
                else:                 # avg, no overflow
                    r[1] = r[1] * min(n_models, cnt) / wsum
            counts[g] = m
            n_out += m
        return n_out

    return cluster


def _desc_order(group: np.ndarray, score: np.ndarray) -> np.ndarray:
    """Per group (``group`` ascending, contiguous), the order ``score[group].argsort()[::-1]``
    gives, as positions into the arrays: groups without tied scores by one lexsort, the others by
    numpy's own argsort of that group's scores (its tie order)."""
    n = len(score)
    if n == 0:
        return np.zeros(0, np.int64)
    o = np.argsort(-score, kind="stable")           # descending score within group (ties: any order)
    o = o[np.argsort(group[o], kind="stable")]      # (two stable passes: radix sorts for the integers)
    gs, ss = group[o], score[o]
    tie = np.zeros(n, bool)
    same = (gs[1:] == gs[:-1]) & (ss[1:] == ss[:-1])
    tie[1:] |= same
    tie[:-1] |= same
    tied_groups = np.unique(gs[tie])
    if len(tied_groups):
        starts = np.searchsorted(group, tied_groups, "left")
        ends = np.searchsorted(group, tied_groups, "right")
        bounds = np.searchsorted(gs, tied_groups, "left")
        for a, b, s in zip(starts, ends, bounds):
            o[s:s + (b - a)] = a + np.argsort(score[a:b])[::-1]
    return o


def wbf_tables(img: np.ndarray, model: np.ndarray, boxes: np.ndarray, scores: np.ndarray, labels: np.ndarray,
               n_models: int, weights=None, iou_thr: float = 0.55, skip_box_thr: float = 0.0,
               conf_type: str = "avg") -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``weighted_boxes_fusion`` of every image at once.

    Input rows (any order within an image is kept as each model's box order): ``img`` (N,) int64
    image codes (ascending: rows grouped by image, each image's rows model by model, as the
    per-image call would list them), ``model`` (N,) int64 model index, ``boxes`` (N, 4) normalised
    xyxy, ``scores`` (N,), ``labels`` (N,) int64. Returns ``(img, boxes, scores, labels)`` of the
    fused rows, per image in ensemble-boxes' output order, images ascending."""
    return fuse(prefilter(img, model, boxes, scores, labels, n_models, weights, skip_box_thr), iou_thr, conf_type)


def prefilter(img: np.ndarray, model: np.ndarray, boxes: np.ndarray, scores: np.ndarray, labels: np.ndarray,
              n_models: int, weights=None, skip_box_thr: float = 0.0) -> dict:
    """ensemble-boxes' ``prefilter_boxes`` for every image (arguments as :func:`wbf_tables`): the
    label groups' rows [label, score x weight, weight, model, x1, y1, x2, y2] in the order the
    clustering takes them. Depends on the weights and the skip threshold only, so ``cxrdet tune``
    keeps it while it tries IoU thresholds and confidence types (:func:`fuse`)."""
    w = np.ones(n_models) if weights is None else np.asarray(weights, "float64")
    if len(w) != n_models:
        raise ValueError(f"{len(w)} weight(s) for {n_models} models")
    if len(img) and np.any(np.diff(img) < 0):
        raise ValueError("wbf_tables: rows must be grouped by image (ascending codes)")
    # prefilter: skip low scores; swap, clip to [0, 1]; skip zero areas (ensemble-boxes' rules)
    s = np.asarray(scores, "float64")
    keep = ~(s < skip_box_thr)
    b = np.asarray(boxes, "float64")
    x1, x2 = np.minimum(b[:, 0], b[:, 2]), np.maximum(b[:, 0], b[:, 2])
    y1, y2 = np.minimum(b[:, 1], b[:, 3]), np.maximum(b[:, 1], b[:, 3])
    b = np.clip(np.stack([x1, y1, x2, y2], 1), 0.0, 1.0)
    keep &= (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1]) != 0.0
    img, model, b, s, lab = img[keep], model[keep], b[keep], s[keep], np.asarray(labels, "int64")[keep]
    pre = {"w": w, "rows": np.zeros((0, 8)), "starts": np.zeros(1, np.int64), "g_img": np.zeros(0, np.int64)}
    if not len(img):
        return pre
    # label groups in order of first appearance within each image (the prefilter's dict order)
    n = len(img)
    lab_min = int(lab.min())
    span = int(lab.max()) - lab_min + 1
    key = img * span + (lab - lab_min)               # one integer per (image, label)
    uk, first_idx, inv = np.unique(key, return_index=True, return_inverse=True)
    inv = inv.reshape(-1)
    g_img = uk // span
    g_order = np.lexsort((first_idx, g_img))         # groups by image, then first appearance
    g_rank = np.empty(len(uk), np.int64)
    g_rank[g_order] = np.arange(len(uk))
    grp = g_rank[inv]                                # group number, ascending = image, then dict order
    o = np.argsort(grp, kind="stable")               # rows by group, in input (model, box) order
    grp_o, ws = grp[o], s[o] * w[model[o]]
    rows = np.empty((n, 8))
    rows[:, 0] = lab[o]
    rows[:, 1] = ws
    rows[:, 2] = w[model[o]]
    rows[:, 3] = model[o]
    rows[:, 4:] = b[o]
    d = _desc_order(grp_o, ws)                       # within each group: argsort(score)[::-1]
    rows, grp_o = rows[d], grp_o[d]
    return {"w": w, "rows": rows, "starts": np.searchsorted(grp_o, np.arange(len(uk) + 1), "left").astype(np.int64),
            "g_img": g_img[g_order]}


def fuse(pre: dict, iou_thr: float = 0.55, conf_type: str = "avg"
         ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The clustering, confidences and final order of ``weighted_boxes_fusion`` on a
    :func:`prefilter` result -> ``(img, boxes, scores, labels)`` as :func:`wbf_tables`."""
    if conf_type not in CONF_TYPES:
        raise ValueError(f"conf_type {conf_type!r}; expected one of {list(CONF_TYPES)}")
    rows, starts = pre["rows"], pre["starts"]
    if not len(rows):
        return np.zeros(0, np.int64), np.zeros((0, 4)), np.zeros(0), np.zeros(0, np.int64)
    out = np.empty((len(rows), 8))
    counts = np.zeros(len(starts) - 1, np.int64)
    m = _kernel()(rows, starts, float(iou_thr), CONF_TYPES.index(conf_type), pre["w"], out, counts)
    out = out[:m]
    out_img = np.repeat(pre["g_img"], counts)       # each fused row's image (groups in order)
    # final order per image: overall argsort(score)[::-1] of the image's groups concatenated
    f = _desc_order(out_img, out[:, 1])
    out = out[f]
    return out_img[f], out[:, 4:], out[:, 1], out[:, 0].astype(np.int64)
