"""Fuse the radiologists' boxes into one set per image (ensemble-boxes: WBF, NMS, Soft-NMS, NMW).

:func:`fuse` works per image and class; each radiologist of an image is one ensemble-boxes
"model" (weight 1). Model order is the image's sorted rater ids (the image table's ``raters``
column, plus any rater seen in its boxes); inside a model, boxes keep their box-table order.
Boxes go in normalised by the image size (:func:`data_prep.core.boxes.normalize_xyxy`, clipped to
[0, 1]) and come back denormalised, so the result equals calling ensemble-boxes directly,
image by image, with those lists (``bench/fuse.py`` and ``tests/test_fusion.py`` check it).
Inputs scored below ``skip_box_thr`` and zero-area boxes are left out, as ensemble-boxes does
(counted in ``fused.attrs["dropped"]``).

WBF runs :mod:`data_prep.labels.wbf`'s kernel (every group at once, bit-identical to ensemble-boxes
1.0.9's ``weighted_boxes_fusion``; tested); ``nms``/``soft_nms``/``nmw`` call ensemble-boxes
directly, per image. ``soft_nms`` is the library's default Gaussian soft-NMS (sigma 0.5): it
reads no IoU threshold (``iou_thr`` changes only its ``n_raters``), drops a box only when its
decayed score falls below 0.001, and returns the kept boxes' input scores (ensemble-boxes 1.0.9).

``n_raters`` (int64): the number of distinct radiologists a fused box stands for.
* ``wbf``: distinct models among the members of its cluster (exact).
* ``nms``, ``soft_nms``, ``nmw``: ensemble-boxes returns no membership; a kept box counts the
  distinct raters having a box of the same image and class with IoU > ``iou_thr`` to it
  (itself included, so at least 1).
* ``none``: the raw boxes, ``n_raters`` 1.
Output: a box table (``rater`` ""; ``score`` = fused confidence) sorted by image (box-table
order), class_id, then descending score.
"""
from __future__ import annotations

import argparse
import logging
from pathlib import Path

import numpy as np
import pandas as pd
from ensemble_boxes import nms, non_maximum_weighted, soft_nms

from data_prep.core.atomic import write_csv
from data_prep.core.boxes import BOX_COLUMNS, COORDS, as_box_table, denormalize_xyxy, empty_boxes, make_boxes, normalize_xyxy
from data_prep.core.boxes import iou as box_iou
from data_prep.labels.wbf import NCOLS, check_version, fuse_wbf_groups, model_weights

log = logging.getLogger(__name__)

METHODS = ("wbf", "nms", "soft_nms", "nmw", "none")
CONF_TYPES = ("avg", "max", "box_and_model_avg", "absent_model_aware_avg")
COMPETITION_COLUMNS = ["image_id", "class_name", "class_id", "rad_id", "x_min", "y_min", "x_max", "y_max", "n_raters"]


# ----------------------------------------------------------------------------- preparation
def _prepare(boxes: pd.DataFrame, images: pd.DataFrame, skip_box_thr: float, weights: dict | None = None):
    """Sorted, normalised inputs: ``(b, dropped, models)``. ``b`` is the box table (canonical
    columns) sorted by (image in first-appearance order ``_img``, class_id, model ``t``, input
    row) with ``g`` (group id per image and class, contiguous), ``t`` (model index in the image's
    sorted raters), ``M`` (models of the image), ``wt`` (its model's weight, ``weights.get(rater,
    1)``), ``h``, ``w`` and ``nx1..ny2`` (normalised float64). ``models``: ``image_id, rater, t,
    M, wt``, one row per model of each image with boxes."""
    b = as_box_table(boxes)[BOX_COLUMNS].copy()
    b.attrs = {}  # pandas deep-copies attrs on every operation
    im = images.drop_duplicates("image_id")
    im_ids = pd.Index(im["image_id"].astype(str))
    pos = im_ids.get_indexer(b["image_id"])
    if (pos < 0).any():
        i = int(np.flatnonzero(pos < 0)[0])
        raise ValueError(f"fuse: box row {i} image_id {b['image_id'].iloc[i]!r} is not in the image table")
    hw = im[["height", "width"]].to_numpy(dtype="float64")[pos]
    if len(hw) and (hw <= 0).any():
        i = int(np.flatnonzero((hw <= 0).any(1))[0])
        raise ValueError(f"fuse: image {b['image_id'].iloc[i]!r} has height x width {int(hw[i, 0])} x "
                         f"{int(hw[i, 1])}; expected its size (load the labels with a meta table)")
    b["h"], b["w"] = hw[:, 0], hw[:, 1]
    b["_img"] = pd.factorize(b["image_id"])[0]
    b["_row"] = np.arange(len(b))
    low = (b["score"] < skip_box_thr).to_numpy()
    dropped = {"below_skip_box_thr": int(low.sum())}
    b = b[~low]
    n = normalize_xyxy(b[COORDS].to_numpy(), b["h"].to_numpy(), b["w"].to_numpy())
    zero = (n[:, 2] - n[:, 0]) * (n[:, 3] - n[:, 1]) == 0.0
    dropped["zero_area"] = int(zero.sum())
    if zero.any():
        log.warning("fuse: %d zero-area box(es) left out (ensemble-boxes skips them), e.g. image %r",
                    int(zero.sum()), b["image_id"].iloc[int(np.flatnonzero(zero)[0])])
    b = b[~zero].copy()
    b[NCOLS] = n[~zero]

    # models: the image's sorted raters (image table's `raters` + raters seen in its boxes)
    pairs = [b[["image_id", "rater"]]]
    if "raters" in im.columns:
        listed = im.loc[im["image_id"].astype(str).isin(b["image_id"]), ["image_id", "raters"]]
        listed = listed.assign(rater=listed["raters"].fillna("").astype(str).str.split("|")).explode("rater")
        pairs.append(listed.loc[listed["rater"] != "", ["image_id", "rater"]].astype(str))
    m = pd.concat(pairs, ignore_index=True).drop_duplicates().sort_values(["image_id", "rater"])
    # not mutated: m is sorted by image_id just above, so groupby's sort= gives the same t and M
    m["t"] = m.groupby("image_id", sort=False).cumcount()  # pragma: no mutate
    m["M"] = m.groupby("image_id", sort=False)["t"].transform("size")  # pragma: no mutate
    key = pd.MultiIndex.from_frame(m[["image_id", "rater"]])
    at = key.get_indexer(pd.MultiIndex.from_frame(b[["image_id", "rater"]]))
    m["wt"] = m["rater"].map(lambda r: float((weights or {}).get(r, 1.0))).astype("float64")
    b["t"] = m["t"].to_numpy()[at]
    b["M"] = m["M"].to_numpy()[at]
    b["wt"] = m["wt"].to_numpy()[at]
    order = np.lexsort((b["_row"].to_numpy(), b["t"].to_numpy(), b["class_id"].to_numpy(), b["_img"].to_numpy()))
    # not mutated: an extra "index" column is never read (columns are taken by name)
    b = b.iloc[order].reset_index(drop=True)  # pragma: no mutate
    key2 = b[["_img", "class_id"]].to_numpy()
    new = np.ones(len(b), bool)  # pragma: no mutate (float ones give the same cumsum group ids)
    new[1:] = (key2[1:] != key2[:-1]).any(1)
    b["g"] = np.cumsum(new) - 1
    return b, dropped, m.reset_index(drop=True)  # pragma: no mutate (callers read models' columns by name)


# ----------------------------------------------------------------------------- NMS family
def _fuse_other(b: pd.DataFrame, method: str, iou_thr: float, skip_box_thr: float, mw_img=None):
    """nms / soft_nms / nmw through ensemble-boxes, one call per image (models = raters;
    ``mw_img``: image_id -> list of model weights, passed as ``weights=``, or None)."""
    n = b[NCOLS].to_numpy()
    out_g, out_n, out_s, out_r = [], [], [], []
    img = b["_img"].to_numpy()
    cuts = np.flatnonzero(np.diff(img)) + 1
    for sl in np.split(np.arange(len(b)), cuts):
        if not len(sl):
            continue
        t = b["t"].to_numpy()[sl]
        M = int(b["M"].iloc[sl[0]])
        lab = b["class_id"].to_numpy()[sl]
        sc = b["score"].to_numpy()[sl]
        bl = [n[sl][t == k] for k in range(M)]
        sl_ = [sc[t == k] for k in range(M)]
        ll = [lab[t == k] for k in range(M)]
        w = None if mw_img is None else mw_img[b["image_id"].iloc[sl[0]]]
        if method == "nms":
            fb, fs, fl = nms(bl, sl_, ll, iou_thr=iou_thr, weights=w)
        elif method == "soft_nms":
            # not mutated: ensemble-boxes' soft_nms defaults to Gaussian decay (method 2, sigma 0.5), which
            # reads no iou_thr; passed anyway as the library's own callers do (n_raters still uses it)
            fb, fs, fl = soft_nms(bl, sl_, ll, iou_thr=iou_thr, weights=w)  # pragma: no mutate
        else:
            fb, fs, fl = non_maximum_weighted(bl, sl_, ll, weights=w, iou_thr=iou_thr, skip_box_thr=skip_box_thr)
        fl = np.asarray(fl).astype("int64")
        gid = dict(zip(lab, b["g"].to_numpy()[sl]))
        # not mutated: group ids only order and index rows (any numeric dtype), ensemble-boxes returns
        # float64 arrays, and denormalize_xyxy reshapes any box array to (N, 4) float64
        out_g.append(np.array([gid[k] for k in fl], dtype="int64"))  # pragma: no mutate
        out_n.append(np.asarray(fb, dtype="float64").reshape(-1, 4))  # pragma: no mutate
        out_s.append(np.asarray(fs, dtype="float64"))  # pragma: no mutate
        out_r.append(_n_raters_by_overlap(np.asarray(fb).reshape(-1, 4), fl, n[sl], lab, t, iou_thr))
    if not out_g:
        return np.zeros(0, "int64"), np.zeros((0, 4)), np.zeros(0), np.zeros(0, "int64")
    return (np.concatenate(out_g), np.concatenate(out_n), np.concatenate(out_s), np.concatenate(out_r))


def _n_raters_by_overlap(fb, fl, nb, lab, t, iou_thr) -> np.ndarray:
    """For each kept box: distinct raters with a same-class input box of IoU > iou_thr (>= 1)."""
    out = np.ones(len(fb), dtype="int64")
    for k in range(len(fb)):
        m = lab == fl[k]
        iou = box_iou(nb[m], fb[k])
        out[k] = max(1, len(np.unique(t[m][iou > iou_thr])))
    return out


# ----------------------------------------------------------------------------- public
def fuse(boxes: pd.DataFrame, images: pd.DataFrame, method: str = "wbf", iou_thr: float = 0.4,
         skip_box_thr: float = 0.0, conf_type: str = "avg", weights: dict | None = None) -> pd.DataFrame:
    """Fuse a per-rater box table into one box set per image and class.

    ``boxes``: box table (absolute xyxy, original pixels; ``rater`` = radiologist id).
    ``images``: image table with ``height``/``width`` (> 0 for every image with boxes) and,
    optionally, ``raters`` (the image's readers: models with no box still count in WBF's M).
    ``weights``: ``{rater: weight}`` (> 0; unlisted raters 1), ensemble-boxes' model ``weights``
    (WBF: a box counts score * weight in the fused coordinates and confidence).
    Returns a box table with ``n_raters`` (int64), ``rater`` "" and ``score`` = fused confidence;
    ``attrs["dropped"]`` counts inputs left out (below ``skip_box_thr``, zero area)."""
    if method not in METHODS:
        raise ValueError(f"fusion method {method!r}; expected one of {list(METHODS)}")
    if conf_type not in CONF_TYPES:
        raise ValueError(f"fusion conf_type {conf_type!r}; expected one of {list(CONF_TYPES)}")
    if not 0.0 <= iou_thr <= 1.0:
        raise ValueError(f"fusion iou_thr {iou_thr}; expected a number in [0, 1]")
    weights = check_weights(weights)
    if method == "wbf":
        check_version()
    if len(boxes) == 0:
        out = empty_boxes()
        out["n_raters"] = pd.Series(dtype="int64")
        out.attrs["dropped"] = {"below_skip_box_thr": 0, "zero_area": 0}
        return out
    b, dropped, models = _prepare(boxes, images, skip_box_thr, weights)
    if method == "none":
        g, sc, nr = b["g"].to_numpy(), b["score"].to_numpy(), np.ones(len(b), "int64")
        xyxy = b[COORDS].to_numpy()
        first = np.arange(len(b))
    else:
        if not len(b):
            g, nx, sc, nr = np.zeros(0, "int64"), np.zeros((0, 4)), np.zeros(0), np.zeros(0, "int64")
        elif method == "wbf":
            g, nx, sc, nr = fuse_wbf_groups(b, iou_thr, conf_type, model_weights(b, models))
        else:
            # not mutated: a dict by image_id, whatever groupby's sort (each list keeps the models' order)
            mw_img = None if not weights else (  # pragma: no mutate
                models.groupby("image_id", sort=False)["wt"].agg(list).to_dict())  # pragma: no mutate
            g, nx, sc, nr = _fuse_other(b, method, iou_thr, skip_box_thr, mw_img)
        first = np.searchsorted(b["g"].to_numpy(), g)  # a row of the box's group
        xyxy = denormalize_xyxy(nx, b["h"].to_numpy()[first], b["w"].to_numpy()[first])
    order = np.lexsort((-sc, g))
    out = make_boxes(b["image_id"].to_numpy()[first][order], b["class_id"].to_numpy()[first][order],
                     b["class_name"].to_numpy()[first][order], xyxy[order], sc[order], "",
                     n_raters=nr[order].astype("int64"))
    out.attrs["dropped"] = dropped
    log.info("fuse %s (iou %.2f): %d boxes -> %d on %d images", method, iou_thr, len(b), len(out),
             out["image_id"].nunique())
    return out


def check_weights(weights) -> dict | None:  # pragma: no mutate block, config check
    """``{rater: weight}`` with every weight a positive finite number (``rater_weights``), or None."""
    if not weights:
        return None
    if not isinstance(weights, dict):
        raise ValueError(f"rater_weights {weights!r}; expected a mapping rater: weight, e.g. {{R8: 2}}")
    out = {}
    for r, w in weights.items():
        ok = isinstance(w, (int, float)) and not isinstance(w, bool) and np.isfinite(w) and w > 0
        if not ok:
            raise ValueError(f"rater_weights: {r} = {w!r}; expected a positive number")
        out[str(r)] = float(w)
    return out


def select_raters(images: pd.DataFrame, boxes: pd.DataFrame, raters, weights=None
                  ) -> tuple[pd.DataFrame, pd.DataFrame, dict]:
    """Keep the labels of the radiologists ``raters`` only (``None``/empty: all, unchanged).

    An image none of them read is left out; on the others ``images.raters`` lists only the chosen
    readers (so an image where a chosen radiologist wrote "No finding" stays normal, whatever
    the others drew). ``weights`` (``rater_weights``) must name known radiologists too.
    Returns ``(images, boxes, info)``, info = ``{"raters", "images_kept", "images_left_out",
    "boxes_kept", "boxes_left_out"}`` (counts also logged). A name no image lists raises
    ``ValueError`` with the radiologists present."""
    has = "raters" in images.columns
    readers = images["raters"].fillna("").astype(str).str.split("|") if has else None
    known = sorted(set(readers.explode()) - {""}, key=lambda x: (len(x), x)) if has else []
    asked = [str(r) for r in (raters or [])] + list(check_weights(weights) or {})
    unknown = [r for r in asked if r not in set(known)]
    if unknown:
        raise ValueError(f"raters {unknown} read no image of these labels; expected radiologists among "
                         f"{known or 'none (the labels have no per-radiologist rows)'}")
    if not raters:
        return images, boxes, {}
    chosen = {str(r) for r in raters}
    kept = readers.map(lambda rs: [r for r in rs if r in chosen])
    keep = (kept.str.len() > 0).to_numpy()
    out_images = images[keep].copy()
    out_images["raters"] = kept[keep].map("|".join).to_numpy()
    out_boxes = boxes[boxes["rater"].astype(str).isin(chosen) & boxes["image_id"].isin(set(out_images["image_id"]))]
    out_boxes.attrs = dict(boxes.attrs)
    info = {"raters": sorted(chosen, key=lambda x: (len(x), x)), "images_kept": int(keep.sum()),
            "images_left_out": int((~keep).sum()), "boxes_kept": len(out_boxes),
            "boxes_left_out": len(boxes) - len(out_boxes)}
    log.info("raters %s: %d images kept, %d read by none of them left out; %d of %d boxes kept",
             ",".join(info["raters"]), info["images_kept"], info["images_left_out"], len(out_boxes), len(boxes))
    return out_images.reset_index(drop=True), out_boxes.reset_index(drop=True), info


def write_competition_csv(fused: pd.DataFrame, images: pd.DataFrame, path) -> Path:
    """Write ``fused`` in train.csv form (+ ``n_raters``), atomically (temp file + rename).

    Columns :data:`COMPETITION_COLUMNS`; ``rad_id`` empty; one "No finding" row (class 14, empty
    box, ``n_raters`` = readers listed in ``images.raters`` or empty) per image of ``images``
    without fused boxes. Finding rows follow the fused table's order, normal rows the image
    table's; coordinates are written with full float precision (round trip exact)."""
    from data_prep.datasets import describe

    NORMAL_ID, NORMAL_NAME = describe("vinbigdata").normal  # the train.csv layout is VinBigData's
    f = as_box_table(fused)
    unknown = ~f["image_id"].isin(images["image_id"].astype(str))
    if unknown.any():
        raise ValueError(f"write_competition_csv: fused box image_id {f['image_id'][unknown].iloc[0]!r} "
                         "is not in the image table")
    nr = f["n_raters"] if "n_raters" in f else pd.Series(1, index=f.index)
    rows = pd.DataFrame({
        "image_id": f["image_id"], "class_name": f["class_name"], "class_id": f["class_id"],
        # not mutated: a missing rad_id / coordinate column is filled with NaN by the concat below, which
        # the CSV writes as the same empty field as "" and NaN (test_competition_csv_text_by_hand)
        "rad_id": "", "x_min": f["x_min"], "y_min": f["y_min"], "x_max": f["x_max"], "y_max": f["y_max"],  # pragma: no mutate
        "n_raters": nr.astype("Int64"),
    })
    ids = images["image_id"].astype(str)
    normal = images[~ids.isin(f["image_id"])]
    if "raters" in normal:
        readers = normal["raters"].fillna("").astype(str).map(lambda s: len(s.split("|")) if s else pd.NA)
    else:
        readers = pd.Series(pd.NA, index=normal.index)
    nrows = pd.DataFrame({
        "image_id": normal["image_id"].astype(str), "class_name": NORMAL_NAME, "class_id": NORMAL_ID,
        "rad_id": "", "x_min": np.nan, "y_min": np.nan, "x_max": np.nan, "y_max": np.nan,  # pragma: no mutate
        "n_raters": readers.astype("Int64"),
    })
    out = pd.concat([rows, nrows], ignore_index=True)[COMPETITION_COLUMNS]  # pragma: no mutate (the index is not written)
    path = write_csv(out, path)
    log.info("wrote %s: %d finding rows, %d normal images", path, len(rows), len(nrows))
    return path


# ----------------------------------------------------------------------------- CLI
def add_arguments_fuse(parser: argparse.ArgumentParser) -> None:  # pragma: no mutate block, CLI
    from data_prep.core.config import add_config_arguments, retired_flag

    parser.add_argument("--labels", required=True, help="annotation file (train.csv, ...)")
    parser.add_argument("--meta", default=None, help="image sizes: image_id,dim0,dim1 or convert's meta.csv")
    parser.add_argument("--out", required=True, help="output CSV in train.csv form + n_raters")
    add_config_arguments(parser, ["dataset", "fusion", "fusion_iou", "fusion_skip", "fusion_conf_type", "raters"],
                         help={"raters": "radiologists whose labels are fused: R8,R10 (images none of them read are "
                                         "left out), or no value = all (rater_weights={R8: 2} weights them)"})
    retired_flag(parser, "--iou", "fusion_iou")


def parse_raters(value) -> list[str] | None:  # pragma: no mutate block, CLI
    """The radiologists the config key ``raters`` names: ``[R8, R10]`` or ``"R8,R10"`` ->
    ``["R8", "R10"]`` (:func:`data_prep.core.config.normalise_raters`, as the merged config holds it);
    None, empty or ``all`` (every radiologist) -> None."""
    from data_prep.core.config import normalise_raters

    chosen = None if value is None else normalise_raters(value)
    return None if chosen == "all" else chosen


def run_fuse(args: argparse.Namespace) -> int:  # pragma: no mutate block, CLI
    from data_prep.core.config import stage_config
    from data_prep.datasets import load

    from data_prep.core.atomic import check_not_input
    from data_prep.core.errors import check_output

    cfg = stage_config(args)
    if cfg["fusion"] not in METHODS:
        raise ValueError(f"fusion {cfg['fusion']!r}; expected one of {list(METHODS)}")
    if cfg["fusion_conf_type"] not in CONF_TYPES:
        raise ValueError(f"fusion_conf_type {cfg['fusion_conf_type']!r}; expected one of {list(CONF_TYPES)}")
    meta = args.meta if args.meta is not None else cfg.get("meta")
    check_output(args.out, arg="--out")
    check_not_input(args.out, [args.labels, meta])
    images, boxes = load(cfg["dataset"], args.labels, meta=meta)
    raters = parse_raters(cfg["raters"])
    images, boxes, info = select_raters(images, boxes, raters, cfg["rater_weights"])
    fused = fuse(boxes, images, method=cfg["fusion"], iou_thr=cfg["fusion_iou"], skip_box_thr=cfg["fusion_skip"],
                 conf_type=cfg["fusion_conf_type"], weights=cfg["rater_weights"])
    write_competition_csv(fused, images, args.out)
    n_normal = int((~images["image_id"].isin(fused["image_id"])).sum())
    if info:
        print(f"raters {','.join(info['raters'])}: {info['images_kept']} images kept, "
              f"{info['images_left_out']} read by none of them left out")
    print(f"{len(boxes)} boxes -> {len(fused)} fused boxes on {len(images)} images "
          f"({n_normal} normal); wrote {args.out}")
    return 0
