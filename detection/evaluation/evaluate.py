"""``cxrdet evaluate``: competition metrics on a held-out fold, image-level AUC/F1, the radiologists' baseline.

The dataset (``dataset`` of ``--config``/``key=value``, see :mod:`data_prep.core.config`) says how to read
the files and score them (:func:`data_prep.datasets.describe`). Truth (``--truth``), read by
:func:`data_prep.core.tables.read_truth`:

* the dataset's source labels (VinBigData ``train.csv``, RSNA ``stage_2_train_labels.csv``); a raw
  per-radiologist file is FUSED first (WBF, IoU 0.4, :func:`data_prep.labels.fusion.fuse`; needs
  ``--meta`` for the image sizes), as the competition's own truth was; a log line says so;
* a VinBigData ``fused.csv`` (train.csv columns + ``n_raters``): used as it is;
* our box table CSV (``image_id,class_id,...,x_min,...``): the evaluated images are those of
  ``--meta`` when given (normal images included), else the images with truth boxes (warned).

Predictions (``--pred``): a submission (``image_id|patientId,PredictionString``, parsed by
:func:`detection.competition.submission.parse_submission`) or our box table CSV.

The evaluated image set is every image of the truth (normal ones included), restricted to the
images of ``--folds`` when given (to ``--fold K`` or ``--fold 0,2`` of it when that is given too,
or the config key ``fold=K`` on the command line; a ``fold`` in a config file does not restrict it;
truth and predictions alike). With ``--folds`` the score is also printed per fold, beside the
pooled score over all those images (out-of-fold predictions: ``cxrdet cv``'s oof.csv). A dataset
with a normal class (VinBigData's "no finding") adds a normal truth ``0 0 1 1`` for images
without findings.
"""
from __future__ import annotations

import argparse
import logging

import pandas as pd

from data_prep.core.config import add_config_arguments, from_command_line, held_out_fold, stage_config
from data_prep.datasets import DEFAULT_DATASET, Dataset, describe
from data_prep.core.errors import InputError, check_output
from data_prep.core.tables import FUSION_IOU, read_truth, select_images
from detection.evaluation.evaluate_out import format_folds, format_image_level, format_table, plot_pr, write_json
from detection.evaluation.raters import rater_baseline
from detection.evaluation.scoring import METRICS, evaluate  # noqa: F401 (the function others call; re-exported)

log = logging.getLogger(__name__)

# ----------------------------------------------------------------------------- reading files
def read_inputs(truth_path, pred_path, dataset: Dataset | str, meta=None, folds=None, fold=None
                ) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame, Dataset]:
    """Read truth and predictions for ``dataset`` and restrict both to the evaluated images.

    Returns ``(images, truth, pred, dataset)``: ``images`` is the image table of the evaluated
    images (every image of the truth file, normals included, restricted to the images of ``folds``
    (to ``fold``, an int or a list, when given), with their ``fold`` column); ``truth``/``pred``
    are box tables limited to those images (:func:`data_prep.core.tables.select_images`); ``dataset``
    is the description used (the configured one, unless the truth file is another dataset's labels)."""
    from detection.competition.submission import read_predictions

    if fold is not None and folds is None:
        raise ValueError("--fold needs --folds (folds.csv)")
    images, truth, ds = read_truth(truth_path, describe(dataset), meta)
    pred = read_predictions(pred_path, ds)
    images, truth, kept = select_images(images, truth, pred, folds, fold)
    warn_coverage(pred, images["image_id"].astype(str).tolist(), pred_path, fold if fold is not None else folds)
    return images, truth, kept, ds


def metric_for(ds: Dataset, configured: Dataset | str, metric: str | None) -> str:
    """The metric to score a truth read as ``ds`` with: ``metric`` when given (None: not asked for),
    else the dataset's own. A truth file of another dataset than ``configured`` (RSNA labels read
    with the default vinbigdata) is scored with its own dataset's metric (logged); asked for
    another metric, it is refused: the number would answer no question."""
    name = configured if isinstance(configured, str) else configured.name
    if ds.name == name:
        return metric or ds.metric
    if metric is not None and metric != ds.metric:
        raise InputError(f"metric={metric}", f"the truth is {ds.title} labels (scored with the {ds.metric} metric), "
                         f"not {name}; expected dataset={ds.name} (metric {ds.metric}) or {name}'s labels")
    log.info("truth read as %s: scored with its metric, %s", ds.name, ds.metric)
    return ds.metric


def asked_for(cfg: dict, key: str) -> bool:
    """True when the user set ``key`` (a flag, key=value or their --config file), not a default or
    the dataset's config."""
    src = cfg.get("_sources", {}).get(key)
    return src in ("flag", "key=value") or (src is not None and src == cfg.get("_config"))


def predicted_folds(images: pd.DataFrame, pred: pd.DataFrame) -> tuple[list[int], list[int]]:
    """(folds of ``images`` with at least one predicted image, folds without any) for an image
    table with a ``fold`` column (a submission's listed empty images count as predicted)."""
    seen = set(pred["image_id"].astype(str)) | set(map(str, pred.attrs.get("image_ids", [])))
    has = images.assign(p=images["image_id"].astype(str).isin(seen)).groupby("fold")["p"].any()
    return [int(k) for k in has.index[has]], [int(k) for k in has.index[~has]]


def warn_coverage(pred: pd.DataFrame, ids: list[str], pred_path, fold) -> None:
    """The prediction table's contract with the evaluated images: none covered is an error (a
    number would answer no question: another split's table), part a warning with the counts; a
    table without a single box is a warning (it names no image, so it contradicts none)."""
    covered = set(pred["image_id"]) & set(ids)
    listed = set(pred.attrs.get("image_ids", [])) & set(ids)   # a submission also lists its empty images
    n = len(covered | listed)
    if ids and not len(pred) and not pred.attrs.get("image_ids"):
        # no box at all (a model that found nothing at its threshold, a 1-epoch cv fold): the table
        # cannot say which images it was run on; it is not another split's table, so a warning
        log.warning("%s: the prediction table holds no box at all; all %d evaluated image(s) count as "
                    "predicted empty", pred_path, len(ids))
    elif ids and n == 0:
        raise InputError(pred_path, f"no prediction matches any of the {len(ids)} evaluated truth image(s) "
                                    f"(e.g. {ids[0]!r}); expected predictions for this truth file"
                                    + (f" and fold(s) {fold}" if isinstance(fold, (int, list)) else ""))
    elif n < len(ids):
        hint = "" if fold is not None else "; scoring one held-out fold? pass --folds folds.csv --fold K"
        log.warning("%s: predictions cover %d of the %d evaluated truth images; the other %d count as predicted "
                    "empty%s", pred_path, n, len(ids), len(ids) - n, hint)


def evaluate_files(truth_path, pred_path, meta=None, folds=None, fold=None, metric: str | None = "vinbigdata",
                   iou_thr: float = 0.4, image_level: bool = False, dataset: Dataset | str = DEFAULT_DATASET) -> dict:
    """:func:`read_inputs` + :func:`evaluate`: what ``cxrdet evaluate`` prints and writes.
    ``metric`` None: the truth's dataset's own (:func:`metric_for`).

    With ``folds``, ``res["folds"]`` lists ``{"fold", "n_images", "score"}`` per fold (the same
    metric on each fold's images alone) beside the pooled score ``res["mAP"]``."""
    images, truth, pred, ds = read_inputs(truth_path, pred_path, dataset, meta, folds, fold)
    metric = metric_for(ds, describe(dataset), metric)
    ids = images["image_id"].astype(str).tolist()
    res = evaluate(truth, pred, ids, metric, iou_thr, image_level=image_level, dataset=ds)
    if "fold" in images:
        res["folds"] = []
        for k, part in images.groupby("fold", sort=True):
            r = evaluate(truth, pred, part["image_id"].astype(str).tolist(), metric, iou_thr, dataset=ds)
            res["folds"].append({"fold": int(k), "n_images": int(len(part)), "score": r["mAP"]})
    return res


# ----------------------------------------------------------------------------- CLI
def add_arguments_evaluate(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--truth", required=True, help="train.csv / fused.csv / stage_2_train_labels.csv / box table CSV")
    parser.add_argument("--pred", help="submission CSV or box table CSV (not needed with --rater-baseline)")
    parser.add_argument("--meta", help="image sizes (image_id,dim0,dim1 or meta.csv); the image list for a box table truth")
    parser.add_argument("--folds", help="folds.csv (image_id,fold)")
    parser.add_argument("--fold", type=_fold_list, help="evaluate only this held-out fold of --folds (or folds: 0,2)")
    parser.add_argument("--json", help="write the numbers to this JSON file")
    parser.add_argument("--plots", help="write PR curves per class (PNG) to this folder")
    parser.add_argument("--image-level", action="store_true", help="also image-level ROC AUC and best F1 per finding")
    parser.add_argument("--rater-baseline", action="store_true",
                        help="score each radiologist of a raw train.csv against the fusion of the others")
    parser.add_argument("--per-rater", action="store_true",
                        help="score --pred against each radiologist's own boxes of a raw train.csv (no fusion), "
                             "beside that radiologist's baseline (detection/evaluation/raters.py)")
    parser.add_argument("--min-images", type=int, default=500,
                        help="rater baseline / per-rater: score radiologists with at least this many images")
    add_config_arguments(parser, ["dataset", "metric", "iou_thr"])


def _fold_list(text: str):
    """``"1"`` -> 1, ``"0,2"`` -> [0, 2] (argparse type of ``--fold``)."""
    try:
        ks = [int(t) for t in str(text).split(",") if t.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: expected a fold number or numbers like 0,2") from None
    if not ks:
        raise argparse.ArgumentTypeError(f"{text!r}: expected a fold number or numbers like 0,2")
    return ks[0] if len(ks) == 1 else ks


def run_evaluate(args: argparse.Namespace) -> int:
    cfg = stage_config(args)
    metric, iou = cfg["metric"], float(cfg["iou_thr"])
    if metric not in METRICS:
        raise ValueError(f"metric {metric!r}; expected one of {list(METRICS)}")
    fold = args.fold   # --fold K and fold=K mean the same in every branch below (--folds needed by both)
    if fold is None and from_command_line(cfg, "fold"):
        fold = held_out_fold(cfg, args.folds)
    if fold is not None and args.folds is None:
        raise ValueError("--folds and --fold go together")
    args.fold = fold
    if args.per_rater:
        from detection.evaluation.raters import run_per_rater
        return run_per_rater(args, cfg, metric, iou)
    if args.rater_baseline:
        if args.meta is None:
            raise ValueError("--rater-baseline needs --meta (image sizes for the fusion of the other radiologists)")
        df = rater_baseline(args.truth, args.meta, args.min_images, iou, dataset=describe(cfg), folds=args.folds,
                            fold=fold)
        if df.empty:
            raise ValueError(f"{args.truth}: no radiologist read at least {args.min_images} images")
        print(df.to_string(index=False, float_format=lambda v: f"{v:.4f}"))
        print(f"mean mAP@{iou:g} over {len(df)} radiologists: {df['mAP'].mean():.4f} "
              f"(single-point mAP {df['mAP_point'].mean():.4f})")
        if args.json:
            write_json({"metric": "vinbigdata", "iou_thr": iou, "rater_baseline": df.to_dict("records"),
                        "mAP": float(df["mAP"].mean()), "n_raters": int(len(df)), "fold": fold}, args.json)
        return 0
    if not args.pred:
        raise ValueError("--pred is required (unless --rater-baseline)")
    if args.json:
        check_output(args.json, arg="--json")
    if args.plots:
        check_output(args.plots, folder=True, arg="--plots")
    res = evaluate_files(args.truth, args.pred, args.meta, args.folds, fold, metric if asked_for(cfg, "metric") else None, iou,
                         args.image_level, dataset=describe(cfg))
    res.update({"truth": str(args.truth), "pred": str(args.pred), "fold": fold})
    print(format_table(res))
    if len(res.get("folds", ())) > 1:
        print(format_folds(res))
    if args.image_level:
        print(format_image_level(res["image_level"]))
    if args.json:
        log.info("wrote %s", write_json(res, args.json))
    if args.plots:
        paths = plot_pr(res, args.plots)
        log.info("wrote %d PR curve(s) to %s", len(paths), args.plots)
    return 0
