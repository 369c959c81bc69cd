"""Prediction in ORIGINAL pixels from PNGs or DICOMs: batches, TTA, WBF ensembles, then postprocess.

``cxrdet predict --weights W.pt [W2.pt ...] --source DIR [--meta META] [--tta] [--conf 0.001]
[--classifier C.pt --low 0.08 --high 0.95] [--imgsz 512] [--onnx] [--scheduler local|tcp://host:port]
--out preds.csv [key=value ...]``

A box's way through this module::

    PNG (or DICOM converted in memory at config size/keep_ratio)  uint8 (H, W) in the "PNG frame"
      -> ultralytics predict (list of arrays per batch)            xyxy in the PNG frame
      -> TTA flip view: boxes un-flipped (x -> png_w - x)          xyxy in the PNG frame
      -> boxes.from_frame(Frame(png_h/h, png_w/w), clip to (h, w)) xyxy in ORIGINAL pixels
      -> several views/models: ensemble-boxes WBF on boxes normalised by (h, w)
      -> detection.competition.postprocess.apply: class probabilities, scaling, thresholds, top-k,
         2-class filter (all keys of configs/default.yaml)        the box table (data_prep.core.boxes)

Original sizes: PNG folders read them from ``--meta`` (convert's ``meta.csv``: image_id, height,
width[, png_height, png_width], or ``image_id,dim0,dim1``); without ``--meta`` a ``meta.csv`` in
the source folder or its parent (prep's layout) is used; without any, the PNG is taken as the
original (logged). DICOM folders take sizes from the header.

The WBF and the post-processing steps are :mod:`detection.competition.postprocess`'s functions (one code
path with ``cxrdet postprocess``); the images are listed and read by :mod:`detection.engine.sources`,
the models loaded by :mod:`detection.engine.predict_models`, each batch run by
:mod:`detection.engine.predict_batch`, all tuned by one :class:`detection.engine.settings.PredictSettings`. On a
Dask cluster (``--scheduler``, :mod:`detection.engine.predict_cluster`): the local path's batches become
tasks; each worker process loads the models once and returns only box rows, p(abnormal), original
sizes and error lines; the post-processing runs here. CPU workers can take ``--onnx`` (exported
once by the client); GPU workers: one worker process per GPU (see the README).

2-class filter, with ``p = p(abnormal)`` from an ultralytics classify model whose classes are
``abnormal``/``normal`` (``cxrdet train-cls``):

* ``p < low``: the image is called normal: its boxes are dropped and one row of the dataset's
  normal class N ("No finding") ``N 1.0 0 0 1 1`` is written;
* ``low <= p < high``: boxes kept, plus a normal row scored ``1 - p`` (= p(normal), the
  confidence that the image is normal: what the top VinBigData solutions submitted);
* ``p >= high``: boxes only.

The normal rows are written only for datasets that have a normal class (the dataset
description's ``normal``; VinBigData); for the others (RSNA: normal = empty prediction) the
filter only drops the boxes of images called normal.
"""
from __future__ import annotations

import argparse
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import pandas as pd
from tqdm import tqdm

from data_prep.core.boxes import empty_boxes
from detection.competition import postprocess as post_mod
from detection.competition.postprocess import View, fuse_views, two_class_filter  # noqa: F401  (predict's steps live there)
from detection.models import safe_load
from detection.engine.predict_batch import (predict_loaded, predict_rows, to_original, unflip_x,  # noqa: F401  (predict's API)
                                            view_from_result)
from detection.engine.predict_models import Loaded, load_models
from detection.engine.settings import PredictSettings
from detection.engine.sources import PNG_SUFFIXES, list_source, load_image, read_meta  # noqa: F401  (predict's API)

log = logging.getLogger(__name__)


@dataclass
class Inference:
    """What inference leaves (:func:`infer`): ``raw`` box table (what ``--raw`` writes), ``probs``
    (the classifiers' probabilities table or None; ``--probs``), ``sizes`` (image_id-indexed
    original height, width), and the post-processing keys and normal class to apply."""
    raw: pd.DataFrame
    probs: pd.DataFrame | None
    sizes: pd.DataFrame | None
    post: dict
    normal: tuple[int, str] | None

    def postprocessed(self) -> pd.DataFrame:
        """The raw table through :func:`detection.competition.postprocess.apply` (``attrs["cls_probs"]``: the probabilities)."""
        out = post_mod.apply(self.raw, self.probs, self.post, self.normal, self.sizes)
        if self.probs is not None:
            out.attrs["cls_probs"] = self.probs
        return out


def infer(weights: str | os.PathLike | Sequence[str | os.PathLike], source: str | os.PathLike,
          meta: str | os.PathLike | None = None, settings: PredictSettings | dict | None = None, *,
          classifier: str | os.PathLike | Sequence[str | os.PathLike] | None = None, onnx: bool = False,
          errors: list[str] | None = None, **changes) -> "Inference":
    """Predict every image of ``source`` (PNG or DICOM folder, or a ``.txt`` list of PNG paths)
    -> :class:`Inference`: the raw box table in ORIGINAL pixels (inference only: every box at or
    above ``conf`` of each model, TTA views and several models fused by WBF with the ``ens_*``
    keys; nothing else), the classifiers' probabilities and the image sizes.

    ``settings``: a :class:`PredictSettings`, or a merged config dict (its keys), or None (the
    defaults); keyword ``changes`` override single fields (``tta=True``, ``conf=0.1``, ...).
    ``weights``: one or several local ``.pt``/``.onnx`` (several, or ``tta``, are fused by WBF
    with ``ens_iou``/``ens_skip``); a training run folder stands for its kept epochs
    (:mod:`detection.models.checkpoints`: a checkpoint ensemble, the ``ckpt_ensemble`` best). ``size``/``keep_ratio``/``voi`` convert DICOMs the way prep
    made the PNGs. ``classifier``: one or several classify weights for the 2-class filter (several:
    the mean p(abnormal) is the image's probability). Unreadable images are skipped and described
    in ``errors`` (if given) and the log. ``settings.post``: the post-processing keys
    (:mod:`detection.competition.postprocess`; missing = defaults, which change nothing but the 2-class
    filter); ``ens_iou``, ``ens_skip``, ``cls_low``, ``cls_high`` win over it.
    Inference ends here: :meth:`Inference.postprocessed` (what :func:`predict` returns) runs
    :func:`detection.competition.postprocess.apply`, the one post-processing code path.
    ``classifier`` may also be multi-label checkpoints / their ONNX (``train-cls
    cls_task=multilabel``): the probabilities table is then ``image_id`` + labels + ``abnormal``
    (p(abnormal) drives the 2-class filter, the label columns ``cls_fusion: multiply``); the table
    is returned as ``attrs["cls_probs"]``.

    ``settings.scheduler`` ``local``/``tcp://host:port``: the batches run on a Dask cluster
    (``settings.workers`` LocalCluster processes, see :func:`detection.engine.predict_cluster.predict_dask`); the same table."""
    s = PredictSettings.of(settings, **changes)
    from data_prep.core.cluster import check_scheduler
    from detection.models.devices import resolve_device

    device, scheduler = str(resolve_device(s.device)), check_scheduler(s.scheduler)
    post = s.post
    pc = post_mod.post_config({**(post or {}), "ens_iou": s.ens_iou, "ens_skip": s.ens_skip, "cls_low": s.cls_low,
                               "cls_high": s.cls_high})
    wlist = [weights] if isinstance(weights, (str, os.PathLike)) else list(weights)
    from detection.models.checkpoints import check_k, expand

    wlist = expand(wlist, check_k((post or {}).get("ckpt_ensemble", 0) or 0, "ckpt_ensemble"))  # RUN_DIR: its kept epochs
    if not wlist:
        raise ValueError("predict: no weights given")
    if pc["ens_weights"] is not None and len(pc["ens_weights"]) != len(wlist):
        raise ValueError(f"ens_weights {pc['ens_weights']}: {len(pc['ens_weights'])} weight(s) for "
                         f"{len(wlist)} model(s)")
    clist = [] if not classifier else [classifier] if isinstance(classifier, (str, os.PathLike)) else list(classifier)
    ws, cs = tuple(str(w) for w in wlist), tuple(str(c) for c in clist)
    # what a batch reads: the device resolved, the checked post keys (ens_conf_type, ens_weights)
    run = s.replace(device=device, scheduler=scheduler, post=pc,
                    imgsz=None if s.imgsz is None else int(s.imgsz), batch=int(s.batch),
                    ens_iou=float(pc["ens_iou"]), ens_skip=float(pc["ens_skip"]))
    if run.scheduler is None:
        models, names, clfs = load_models(ws, cs, run, bool(onnx))
        ml = [c for c in clfs if not isinstance(c, Loaded)]
        labels = list(ml[0].labels) if ml else None
        chunk = min([run.batch] + [m.batch for m in models])
    rows = list_source(source, meta)
    errs: list[str] = [] if errors is None else errors
    tables, p_abn, sizes = [], {}, {}
    t0 = time.perf_counter()
    if run.scheduler is not None:
        from detection.engine.predict_cluster import predict_dask

        labels = predict_dask(ws, cs, run, bool(onnx), rows, tables, p_abn, errs, sizes)
    else:
        with tqdm(total=len(rows), desc="predict", unit="img") as bar:
            for start in range(0, len(rows), chunk):
                t, p, e, z = predict_rows(models, names, clfs, rows.iloc[start:start + chunk], run)
                tables += t
                p_abn.update(p)
                errs += e
                sizes.update(z)
                bar.update(len(rows.iloc[start:start + chunk]))
    raw = pd.concat(tables, ignore_index=True) if tables else empty_boxes()
    probs = pd.DataFrame({"image_id": list(p_abn), "abnormal": list(p_abn.values())}) if clist else None
    if labels:  # multi-label: image_id + its labels + abnormal (averaged over the classifiers)
        probs = pd.DataFrame([{"image_id": i, **dict(zip(labels, map(float, p)))} for i, p in p_abn.items()],
                             columns=["image_id", *labels])
        probs = probs[["image_id", "abnormal", *[c for c in labels if c != "abnormal"]]] if "abnormal" in labels else probs
    hw = pd.DataFrame(list(sizes.values()), index=list(sizes), columns=["height", "width"]) if sizes else None
    n = len(rows) - len(errs)
    dt = time.perf_counter() - t0
    log.info("predicted %d image(s) in %.1f s (%.1f img/s): %d raw box(es)", n, dt, n / max(dt, 1e-9), len(raw))
    if errs:
        log.warning("%d image(s) failed and were skipped (listed below; the others are in the table):\n  %s",
                    len(errs), "\n  ".join(errs))
    return Inference(raw, probs, hw, pc, s.normal)


def predict(weights: str | os.PathLike | Sequence[str | os.PathLike], source: str | os.PathLike,
            meta: str | os.PathLike | None = None, settings: PredictSettings | dict | None = None, *,
            classifier: str | os.PathLike | Sequence[str | os.PathLike] | None = None, onnx: bool = False,
            errors: list[str] | None = None, **changes) -> pd.DataFrame:
    """:func:`infer` then :func:`detection.competition.postprocess.apply` with the settings' post-processing
    keys: the post-processed box table (the probabilities are its ``attrs["cls_probs"]``).
    Arguments as :func:`infer`; use :func:`infer` for the raw table."""
    inf = infer(weights, source, meta, settings, classifier=classifier, onnx=onnx, errors=errors, **changes)
    return inf.postprocessed()


# ----------------------------------------------------------------------------- CLI
def add_arguments_predict(p: argparse.ArgumentParser) -> None:
    from data_prep.core.config import add_config_arguments

    p.add_argument("--weights", action="extend", nargs="+", required=True,
                   help="one or more local .pt/.onnx (several = WBF ensemble; --weights A B or --weights A --weights B), "
                        "or a training run folder: its kept epochs (keep_epochs; ckpt_ensemble: K = the K best) "
                        "fused by WBF, a checkpoint ensemble")
    p.add_argument("--source", required=True, help="folder of PNGs or DICOMs, a .txt list of PNG paths, or dicomweb:URL "
                   "(a DICOMweb server's images, fetched into a temporary folder; credentials from the environment "
                   "variable CXRDET_DICOMWEB_AUTH; image_id = SOP Instance UID)")
    p.add_argument("--study", action="extend", nargs="+", default=None,
                   help="with --source dicomweb:URL: only these Study Instance UIDs (default: every study)")
    p.add_argument("--meta", default=None, help="original sizes for PNGs (convert's meta.csv or image_id,dim0,dim1)")
    p.add_argument("--out", required=True, help="prediction box table CSV (original pixels)")
    p.add_argument("--classifier", default=None, help="normal/abnormal classify weights (the 2-class filter), or a "
                   "multi-label checkpoint (train-cls cls_task=multilabel): its abnormal column drives the filter, "
                   "its label columns cls_fusion")
    p.add_argument("--raw", default=None, help="also write the raw box table here: inference only (every box at or "
                   "above conf of each model, TTA views and several weights fused by WBF with the ens_* keys; no "
                   "filter, threshold, scaling or top-k); `cxrdet postprocess --pred RAW --cls-probs PROBS` gives --out")
    p.add_argument("--probs", default=None, help="also write the classifiers' probabilities table here (image_id, "
                   "abnormal, one column per class of a multi-label classifier; postprocess --cls-probs reads it)")
    p.add_argument("--cls-probs-out", default=None, help=argparse.SUPPRESS)  # replaced by --probs
    p.add_argument("--onnx", action="store_true", help="export .pt weights to ONNX (cached beside them) and run those")
    add_config_arguments(p, ["tta", "conf", "imgsz", "cls_low", "cls_high", "batch", "device", "scheduler"])


def run_predict(args: argparse.Namespace) -> int:
    from data_prep.core.atomic import check_not_input
    from data_prep.core.config import stage_config
    from data_prep.dicom.convert import check_size
    from data_prep.core.errors import check_output
    from data_prep.core.tables import write_boxes

    from data_prep.core.errors import InputError
    from data_prep.core.tables import write_probs

    if args.cls_probs_out:
        raise InputError("--cls-probs-out", "replaced by --probs PATH (the same probabilities table)")
    if args.probs and not args.classifier:
        raise InputError("--probs", "needs --classifier (the probabilities are the classifiers')")
    cfg = stage_config(args)
    safe_load.configure(cfg)   # trust_weights: what a model file may run on load
    errors: list[str] = []
    check_size(cfg["size"], "size")
    outs = [(args.out, "--out"), (args.raw, "--raw"), (args.probs, "--probs")]
    for path, arg in (o for o in outs if o[0]):
        check_output(path, arg=arg)
        check_not_input(path, [args.source, args.meta, *args.weights, args.classifier])
    named = [Path(o[0]).resolve() for o in outs if o[0]]
    if len(set(named)) < len(named):
        raise InputError("--out/--raw/--probs", "two of them are the same file; expected three different paths")
    from detection.pacs.dicomweb import local_source

    with local_source(args.source, args.study) as source:  # dicomweb:URL -> a temporary folder of its images
        inf = infer(args.weights, source, args.meta, PredictSettings.from_config(cfg),
                    classifier=args.classifier, onnx=args.onnx, errors=errors)
    if args.raw:
        print(f"{write_boxes(inf.raw, args.raw)}: {len(inf.raw)} raw box(es) (inference only)")
    if args.probs:
        print(f"{write_probs(inf.probs, args.probs)}: probabilities of {len(inf.probs)} image(s)")
    out = inf.postprocessed()
    dst = write_boxes(out, args.out)
    print(f"{dst}: {len(out)} box(es) on {out['image_id'].nunique()} image(s); {len(errors)} failed")
    for e in errors:
        print(f"  failed: {e}")
    return 1 if errors else 0
