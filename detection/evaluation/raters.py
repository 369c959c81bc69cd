"""``cxrdet evaluate --per-rater``: a model scored against each radiologist's own boxes.

For each radiologist R of a raw per-radiologist labels file (VinBigData ``train.csv``):

* images: the images R read (any labels row of R), restricted to ``--fold K`` of ``--folds``;
* truth: R's boxes as drawn (no fusion); where R wrote "No finding" the image is normal truth
  (the dataset's normal class ``0 0 1 1``, as the metric adds for images without truth boxes);
* predictions: the model's rows on those images;
* metric: the evaluate metric (vinbigdata mAP@0.4 by default) -> ``mAP``, ``per_class``;
* ``baseline``: R scored against the WBF fusion of the OTHER radiologists on the same images
  (:func:`detection.evaluation.evaluate.rater_baseline`, unchanged, given the labels of those images).

A radiologist who read fewer than ``min_images`` of the evaluated images is listed with the
count (``unscored``), not scored: an AP over a handful of images says nothing. Scoring is one
metric call per radiologist on the images he read (17 calls on the real train.csv).
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import numpy as np
import pandas as pd

from data_prep.core.config import StageSettings
from data_prep.datasets import DEFAULT_DATASET
from data_prep.labels.raters import rater_order, readers

log = logging.getLogger(__name__)

FUSION_IOU = 0.4  # = data_prep.core.tables.FUSION_IOU: the competitions' truth, WBF at IoU 0.4


def _dataset_normal(dataset: str) -> tuple[int | None, list[str]]:
    """(normal class id or None, class names by id incl. the normal one) of ``dataset``."""
    from data_prep.labels.raters import dataset_classes

    normal, names = dataset_classes(dataset)
    return (None if normal is None else int(normal[0])), names


def _readers(images: pd.DataFrame) -> pd.DataFrame:
    """Long table ``image_id, rater``: who read each image (the image table's ``raters``)."""
    if "raters" not in images.columns:
        raise ValueError("per-rater scoring needs per-radiologist labels (a raw train.csv with rad_id); "
                         "these labels have no radiologists")
    return readers(images)


@dataclass(frozen=True)
class PerRaterSettings(StageSettings):
    """What :func:`per_rater` is tuned by: ``dataset``, ``metric``, ``iou_thr`` are the config
    keys; ``min_images`` (``--min-images``): a radiologist who read fewer of the evaluated images
    is listed, not scored; ``baseline``: also score each radiologist against the others' fusion."""
    dataset: str = DEFAULT_DATASET
    metric: str = "vinbigdata"
    iou_thr: float = 0.4
    min_images: int = 500
    baseline: bool = True


def per_rater(images: pd.DataFrame, boxes: pd.DataFrame, pred: pd.DataFrame,
              settings: PerRaterSettings | dict | None = None, *, keep=None, labels=None, meta=None,
              **changes) -> dict:
    """Score ``pred`` against each radiologist (module docstring).

    ``images``/``boxes``: the dataset loader's per-radiologist tables (``images.raters``,
    ``boxes.rater``); ``pred``: predictions box table; ``settings``: a :class:`PerRaterSettings`,
    a merged config dict or None (the defaults), keyword ``changes`` override single fields;
    ``keep``: image ids to evaluate (a fold), None = all. ``labels``/``meta``: the raw labels
    (path or DataFrame) and sizes the baseline re-reads (needed with ``baseline``). Returns
    ``{"per_rater": {rater: {"mAP", "n_images", "per_class", "baseline", "n_truth"}},
    "unscored": {rater: n_images}, ...}``, radiologists in id order (R2 before R10)."""
    from detection.evaluation.scoring import evaluate

    s = PerRaterSettings.of(settings, **changes)
    dataset, metric, iou_thr, min_images, baseline = s.dataset, s.metric, s.iou_thr, s.min_images, s.baseline
    normal, names = _dataset_normal(dataset)
    if keep is not None:
        keep = set(map(str, keep))
        images = images[images["image_id"].astype(str).isin(keep)]
    ids = set(images["image_id"].astype(str))
    read = _readers(images)
    counts = read["rater"].value_counts()
    scored = rater_order(r for r in counts.index if counts[r] >= min_images)
    unscored = {r: int(counts[r]) for r in rater_order(counts.index) if counts[r] < min_images}
    pred = pred[pred["image_id"].isin(ids)]
    boxes = boxes[boxes["image_id"].isin(ids)]
    base = {}
    if baseline and scored:
        base = _baseline(labels, meta, ids, min_images, iou_thr)
    out = {}
    for r in scored:
        rid = read.loc[read["rater"] == r, "image_id"].tolist()
        on = set(rid)
        truth = boxes[(boxes["rater"] == r) & boxes["image_id"].isin(on)]
        res = evaluate(truth, pred[pred["image_id"].isin(on)], rid, metric, iou_thr, normal, names)
        out[r] = {"mAP": float(res["mAP"]), "n_images": len(rid), "per_class": res["per_class"],
                  "baseline": base.get(r), "n_truth": int(len(truth))}
        log.info("rater %s: %d images, %d boxes; model mAP %.4f, radiologist's baseline %s", r, len(rid), len(truth),
                 res["mAP"], "-" if base.get(r) is None else f"{base[r]:.4f}")
    return {"metric": metric, "iou_thr": iou_thr, "min_images": min_images, "n_images": len(ids),
            "per_rater": out, "unscored": unscored}


def _baseline(labels, meta, ids: set, min_images: int, iou_thr: float) -> dict:
    """``{rater: mAP}`` of :func:`detection.evaluation.evaluate.rater_baseline` on the labels rows of ``ids``."""

    if labels is None or meta is None:
        raise ValueError("per-rater baseline: needs the raw labels and --meta (image sizes for the fusion)")
    df = labels if isinstance(labels, pd.DataFrame) else pd.read_csv(
        labels, dtype={"image_id": str, "class_name": str, "rad_id": str})
    df = df[df["image_id"].astype(str).isin(ids)]
    t = time.perf_counter()
    b = rater_baseline(df, meta, min_images, iou_thr)
    log.info("per-rater baseline (each radiologist vs the others' fusion): %d radiologists in %.1f s",
             len(b), time.perf_counter() - t)
    return dict(zip(b["rater"], b["mAP"].astype(float)))


def format_per_rater(res: dict) -> str:
    """The printed table: one line per radiologist, model mAP beside his baseline."""
    from detection.evaluation.metrics import metric_named

    what = metric_named(res["metric"]).head(res["iou_thr"])
    lines = [f"{'radiologist':<12} {'images':>7} {'boxes':>7} {'model ' + what:>14} {'baseline':>9} {'model-base':>10}"]
    for r, d in res["per_rater"].items():
        b = d["baseline"]
        base = "-" if b is None else f"{b:.4f}"
        diff = "-" if b is None else f"{d['mAP'] - b:+.4f}"
        lines.append(f"{r:<12} {d['n_images']:>7} {d['n_truth']:>7} {d['mAP']:>14.4f} {base:>9} {diff:>10}")
    if res["unscored"]:
        lines.append(f"not scored (fewer than {res['min_images']} images): "
                     + ", ".join(f"{r} ({n})" for r, n in res["unscored"].items()))
    if res["per_rater"]:
        m = np.mean([d["mAP"] for d in res["per_rater"].values()])
        bs = [d["baseline"] for d in res["per_rater"].values() if d["baseline"] is not None]
        lines.append(f"mean over {len(res['per_rater'])} radiologists: model {m:.4f}"
                     + (f", baseline {np.mean(bs):.4f}" if bs else ""))
    return "\n".join(lines)


# ----------------------------------------------------------------------------- radiologists' baseline
def rater_baseline(labels, meta, min_images: int = 500, iou_thr: float = 0.4,
                   fusion_iou: float = FUSION_IOU, dataset=DEFAULT_DATASET, folds=None, fold=None) -> pd.DataFrame:
    """Score each radiologist who read >= ``min_images`` images as a model (confidence 1).

    ``dataset``: one with raters and a normal class (VinBigData). For radiologist R: images =
    those R read (any labels row); predictions = R's boxes, or the normal class ``p=1 0 0 1 1``
    where R found nothing; truth = WBF (``fusion_iou``) of the OTHER radiologists' boxes on those
    images, the normal class ``0 0 1 1`` where they found nothing;
    metric vinbigdata mAP@``iou_thr``. All scores tie at 1, so the ranking is the file's row
    order (stable sort), which the AP depends on; ``mAP_point`` is the order-free figure: mean
    over classes with truth of precision x recall, the all-point AP of R's one operating point.
    ``precision``/``recall``: over all classes. Returns a DataFrame rater, n_images, n_pred, mAP,
    mAP_point, precision, recall (radiologists by id). ``folds`` (folds.csv or table) and ``fold``
    (an int, a list or None = every fold): only those images (:func:`data_prep.core.tables.images_of_folds`)."""
    from data_prep.core.boxes import BOX_COLUMNS, make_boxes
    from data_prep.datasets import describe
    from data_prep.labels.fusion import fuse
    from detection.evaluation import metrics as M

    ds = describe(dataset)
    if not ds.has_raters or ds.normal is None:
        raise ValueError(f"rater baseline: dataset {ds.name!r} has no per-radiologist labels with a normal class")
    images, boxes = ds.load(labels, meta)
    if folds is not None:   # --folds [--fold K]: the images of those folds, as every stage reads them
        from data_prep.core.tables import images_of_folds

        keep = set(images_of_folds(images["image_id"], folds, fold, "images of the labels")["image_id"])
        images = images[images["image_id"].astype(str).isin(keep)].reset_index(drop=True)
        boxes = boxes[boxes["image_id"].astype(str).isin(keep)].reset_index(drop=True)
    readers = images["raters"].astype(str).str.split("|")
    counts = readers.explode().value_counts()
    rows = []
    for r in sorted(counts.index[counts >= min_images], key=lambda x: (len(x), x)):
        mine = readers.map(lambda rs: r in rs).to_numpy()
        im = images[mine].copy()
        im["raters"] = readers[mine].map(lambda rs: "|".join(x for x in rs if x != r))
        ids = set(im["image_id"])
        on = boxes["image_id"].isin(ids).to_numpy()
        own = boxes["rater"].to_numpy() == r
        truth = fuse(boxes[on & ~own], im, "wbf", iou_thr=fusion_iou)
        pred = boxes[on & own].copy()
        normal = sorted(ids - set(pred["image_id"]))
        pred = pd.concat([pred[BOX_COLUMNS], make_boxes(normal, ds.normal_id, ds.normal_name,
                          np.tile(M.NORMAL_BOX, (len(normal), 1)), 1.0, r)], ignore_index=True)
        res = M.vinbigdata_map(truth, pred, im["image_id"], iou_thr, normal_class=ds.normal_id)
        enc = M.encode(truth, pred, im["image_id"], ds.normal_id)
        pt, _ = M.match_vinbigdata(enc, iou_thr)
        tp = int((pt >= 0).sum())
        point = [float(((pt >= 0) & (enc.p_cls == c)).sum() ** 2 / max((enc.p_cls == c).sum(), 1)
                       / (enc.t_cls == c).sum()) for c in np.unique(enc.t_cls)]  # P_c * R_c
        rows.append({"rater": r, "n_images": int(mine.sum()), "n_pred": int(len(pred)), "mAP": res["mAP"],
                     "mAP_point": float(np.mean(point)), "precision": tp / max(len(pt), 1),
                     "recall": tp / max(len(enc.t_cls), 1)})
        log.info("rater %s: %d images, mAP@%.1f %.4f", r, mine.sum(), iou_thr, res["mAP"])
    return pd.DataFrame(rows, columns=["rater", "n_images", "n_pred", "mAP", "mAP_point", "precision", "recall"])


def run_per_rater(args, cfg: dict, metric: str, iou: float) -> int:
    """``cxrdet evaluate --per-rater`` (called by :func:`detection.evaluation.evaluate.run_evaluate`)."""
    from data_prep.datasets import load
    from data_prep.core.tables import images_of_folds
    from detection.evaluation.evaluate_out import write_json
    from detection.competition.submission import read_predictions

    if not args.pred:
        raise ValueError("--per-rater needs --pred (the model's predictions)")
    if args.meta is None:
        raise ValueError("--per-rater needs --meta (image sizes: the boxes' frame and the baseline's fusion)")
    if (args.folds is None) != (args.fold is None):
        raise ValueError("--folds and --fold go together")
    t = time.perf_counter()
    raw = pd.read_csv(args.truth, dtype={"image_id": str, "class_name": str, "rad_id": str})
    if "rad_id" not in raw.columns or raw["rad_id"].fillna("").eq("").all():
        raise ValueError(f"{args.truth}: no radiologists (rad_id column missing or empty); --per-rater needs the "
                         "raw per-radiologist labels (train.csv), not a fused file")
    images, boxes = load(cfg["dataset"], raw, meta=args.meta)
    keep = (images_of_folds(images["image_id"], args.folds, args.fold, "images of the labels")["image_id"].tolist()
            if args.folds else None)
    settings = PerRaterSettings.from_config(cfg, metric=metric, iou_thr=iou, min_images=args.min_images)
    res = per_rater(images, boxes, read_predictions(args.pred, cfg["dataset"]), settings, keep=keep, labels=raw,
                    meta=args.meta)
    res.update({"truth": str(args.truth), "pred": str(args.pred), "fold": args.fold,
                "seconds": round(time.perf_counter() - t, 2)})
    print(format_per_rater(res))
    if not res["per_rater"]:
        log.warning("no radiologist read at least %d of the %d evaluated images (--min-images)",
                    args.min_images, res["n_images"])
    if args.json:
        log.info("wrote %s", write_json(res, args.json))
    return 0


# ----------------------------------------------------------------------------- the pictures' radiologist layers
def rater_boxes(labels, dataset, meta=None, raters=None, arg: str = "--rater-labels",
                on_missing_meta: str = "error") -> pd.DataFrame:
    """The raw per-radiologist boxes of the labels file ``labels`` (one row per radiologist, the
    dataset's own columns, no ``n_raters``; ``arg`` names it in errors), of the radiologists
    ``raters`` (config ``raters``: a list or ``"R8,R10"``; None or ``all``: every one)."""
    from data_prep.datasets import describe
    from data_prep.labels.fusion import parse_raters, select_raters
    from data_prep.core.tables import columns

    chosen = parse_raters(raters)
    odd = [r for r in chosen or [] if r.lower().endswith(".csv") or "/" in r]
    if odd:
        raise ValueError(f"--raters {','.join(odd)}: expected radiologist ids (R8,R10); the raw labels file is "
                         "given as --rater-labels")
    ds = describe(dataset)
    cols = set(columns(labels))
    if not ds.has_raters or not set(ds.label_columns) <= cols or "n_raters" in cols:
        raise ValueError(f"{arg} {labels}: not a raw {ds.title} labels file (columns {sorted(cols)}); expected one "
                         f"row per radiologist with {','.join(ds.label_columns)} and no n_raters")
    images, boxes = ds.load(labels, meta, on_missing_meta=on_missing_meta)
    if chosen:
        try:
            images, boxes, _ = select_raters(images, boxes, chosen)
        except ValueError as e:
            raise ValueError(f"--raters {','.join(chosen)} with {arg} {labels}: {e}") from None
    return boxes


def rater_layer(cfg: dict, rater_labels, truth, dataset, meta=None, on_missing_meta: str = "error"):
    """The radiologists' own boxes ``cxrdet show`` and ``cxrdet explore`` draw (one set per
    radiologist), or None. Drawn when ``rater_labels`` (``--rater-labels``) is given or
    ``raters`` is set on the command line (``--raters``, ``raters=...``); read from
    ``rater_labels``, else from the ``truth`` file (then a raw labels file); the radiologists of
    the config's ``raters`` (None or ``all``: every one)."""
    from data_prep.core.config import from_command_line

    if not rater_labels and not (from_command_line(cfg, "raters") and cfg["raters"] is not None):
        return None
    if not rater_labels and not truth:
        raise ValueError("--raters needs --rater-labels (or --truth): the raw per-radiologist labels "
                         "(VinBigData train.csv)")
    path, arg = (rater_labels, "--rater-labels") if rater_labels else (truth, "--truth")
    return rater_boxes(path, dataset, meta, cfg["raters"], arg, on_missing_meta)


# ----------------------------------------------------------------------------- the HTML report's section
def raters_html(labels, meta, dataset: str, tmp_dir, img_tag, iou_thr: float = 0.4, per_rater_json=None) -> str:
    """HTML of the radiologists' section of ``cxrdet report-eval``: the per-rater table (from the
    JSON of ``cxrdet evaluate --per-rater --json``), the pairwise agreement matrix (heatmap with
    the images both read) and the box-size ratios (data_prep/labels/raters.py), from the raw
    per-radiologist ``labels``. ``img_tag(path, cls, alt)`` embeds a PNG."""
    import html
    import json
    from pathlib import Path

    from data_prep.labels import raters as R
    from data_prep.datasets import load

    parts = ["<h2>Radiologists</h2>"]
    if per_rater_json:
        d = json.loads(Path(per_rater_json).read_text())
        rows = "".join(
            f"<tr><td>{html.escape(r)}</td><td>{v['n_images']}</td><td>{v['mAP']:.4f}</td><td>"
            f"{'—' if v.get('baseline') is None else format(v['baseline'], '.4f')}</td></tr>"
            for r, v in d.get("per_rater", {}).items())
        un = ", ".join(f"{html.escape(r)} ({n})" for r, n in d.get("unscored", {}).items())
        parts.append(f"<p class='sub'>The model against each radiologist's own boxes on the images he read, beside "
                     f"that radiologist scored against the others' fusion (mAP@{d.get('iou_thr', 0.4):g}).</p>"
                     "<table><tr><th>radiologist</th><th>images</th><th>model</th><th>radiologist's baseline</th></tr>"
                     f"{rows}</table>" + (f"<p class='sub'>Not scored (too few images): {un}</p>" if un else ""))
    if labels is not None:
        if meta is None:
            raise ValueError("report-eval --rater-labels needs --meta (image sizes of the raw labels)")
        images, boxes = load(dataset, labels, meta=meta)
        names = dict(zip(boxes["class_id"], boxes["class_name"]))
        pw = R.pairwise_agreement(images, boxes, iou_thr, R.dataset_normal(dataset), names)
        tmp_dir = Path(tmp_dir)
        parts.append(f"<p class='sub'>Each radiologist (row) scored against each other (column) on the images both "
                     f"read: single-point mAP@{iou_thr:g} (P x R per class, confidence 1); each cell also gives "
                     "the number of images both read.</p>")
        parts.append(img_tag(R.plot_pairwise(pw["score"], pw["shared"], tmp_dir / "rater_pairs.png", iou_thr),
                             "wide", "pairwise agreement matrix"))
        ratio = R.box_size_ratios(images, boxes, class_names=names)
        if len(ratio) and ratio.notna().to_numpy().any():
            parts.append("<p class='sub'>Box size: per class, each radiologist's median box area over all "
                         "radiologists' median (&gt; 1: larger boxes).</p>")
            parts.append(img_tag(R.plot_size_ratios(ratio, tmp_dir / "rater_box_size.png"), "wide", "box size ratios"))
    return "".join(parts) if len(parts) > 1 else ""
