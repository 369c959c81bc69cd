"""One batch of source rows through detectors already loaded: the boxes of each view mapped to
original pixels (:func:`view_from_result`, TTA views un-flipped), the views of several models fused
by WBF (:func:`detection.competition.postprocess.fuse_views`), the classifiers' p(abnormal)
(:func:`predict_rows`); :func:`predict_loaded` runs a whole source of detectors in memory (the
per-epoch score). What :func:`detection.engine.predict.infer` and the Dask path
(:mod:`detection.engine.predict_cluster`) both call; inference only, nothing else happens to the boxes."""
from __future__ import annotations

import logging

import numpy as np
import pandas as pd

from data_prep.core.boxes import Frame, empty_boxes, from_frame, make_boxes
from detection.competition import postprocess as post_mod
from detection.competition.postprocess import View, fuse_views
from detection.engine.predict_models import Loaded, class_names, classifier_probs
from detection.engine.settings import PredictSettings
from detection.engine.sources import load_image

log = logging.getLogger("detection.engine.predict")   # the stage's logger: its lines read as predict's


# ----------------------------------------------------------------------------- pure box steps
def unflip_x(xyxy, width: float) -> np.ndarray:
    """Boxes predicted on a horizontally flipped image of ``width`` px -> boxes on the original."""
    b = np.asarray(xyxy, dtype="float64").reshape(-1, 4)
    return np.stack([width - b[:, 2], b[:, 1], width - b[:, 0], b[:, 3]], 1)


def to_original(xyxy_png, frame: Frame, hw: tuple[int, int]) -> np.ndarray:
    """``(N, 4)`` xyxy in the PNG frame -> original pixels, clipped to ``hw = (height, width)``."""
    return from_frame(xyxy_png, frame, clip_hw=hw)


def view_from_result(result, frame: Frame, hw: tuple[int, int], flipped: bool = False) -> View:
    """An ultralytics detect ``Results`` (boxes in the PNG frame it was given) -> :class:`View` in
    original pixels. ``flipped``: the input was the horizontally flipped PNG (``frame.frame_w`` wide)."""
    b = result.boxes
    xyxy = b.xyxy.cpu().numpy().astype("float64").reshape(-1, 4)
    if flipped:
        xyxy = unflip_x(xyxy, frame.frame_w)
    return View(to_original(xyxy, frame, hw), b.conf.cpu().numpy().astype("float64").reshape(-1),
                b.cls.cpu().numpy().astype("int64").reshape(-1))


# ----------------------------------------------------------------------------- a batch
def _reason(path, e: Exception, what: str = "") -> str:
    """``path: message`` for one failed image (the exception type when it is not a plain ValueError)."""
    msg = " ".join(str(e).split()) or type(e).__name__
    if not isinstance(e, ValueError):
        msg = f"{type(e).__name__}: {msg}"
    if what:
        msg = f"{what}: {msg}"
    return msg if msg.startswith(str(path)) else f"{path}: {msg}"


def _predict_chunk(loaded, models, clfs, tta, conf, nms_iou, max_det, device, fuse) -> list:
    """``[(image_id, (height, width), fused View, p(abnormal) or None)]`` for a chunk of loaded
    images; ``fuse(views, hw)`` fuses one image's views (TTA x models); p(abnormal) is the mean
    over the classifiers ``clfs``."""
    imgs = [x[1] for x in loaded]
    per_image: list[list[View]] = [[] for _ in loaded]
    flips = (False, True) if tta else (False,)
    for m in models:
        for flip in flips:
            batch_imgs = [np.ascontiguousarray(im[:, ::-1]) for im in imgs] if flip else imgs
            res = m.model.predict(batch_imgs, imgsz=m.imgsz, conf=conf, iou=nms_iou, max_det=max_det,
                                  device=device, verbose=False)
            for i, (r, (_, _, frame, hw)) in enumerate(zip(res, loaded)):
                per_image[i].append(view_from_result(r, frame, hw, flip))
    probs = np.mean([classifier_probs(c, imgs, device) for c in clfs], axis=0) if clfs else [None] * len(loaded)
    return [(iid, hw, fuse(views, hw), p) for (iid, _, _, hw), views, p in zip(loaded, per_image, probs)]


def predict_rows(models: list[Loaded], names: dict[int, str], clfs: list, rows: pd.DataFrame,
                 settings: PredictSettings) -> tuple[list[pd.DataFrame], dict[str, float], list[str], dict[str, tuple]]:
    """One batch of source rows (:func:`detection.engine.sources.list_source`) -> (box tables,
    {image_id: p(abnormal)}, error lines, {image_id: original (height, width)}). ``settings``: its
    ``device`` resolved, its ``post`` the checked post-processing keys (``ens_conf_type``,
    ``ens_weights``: one per model, or None). A failing image never stops the batch: it is listed."""
    s = settings
    pc = s.post or {}
    loaded, errs, tables, p_abn, sizes, paths = [], [], [], {}, {}, {}
    for r in rows.itertuples():
        paths[r.image_id] = r.path
        try:
            loaded.append((r.image_id, *load_image(r, None if s.size is None else int(s.size), bool(s.keep_ratio), s.voi)))
        except Exception as e:  # one bad image never stops the batch; listed at the end
            errs.append(_reason(r.path, e))
    if not loaded:
        return tables, p_abn, errs, sizes
    flips = (False, True) if s.tta else (False,)
    ens_weights = pc.get("ens_weights")
    vw = None if ens_weights is None else [w for w in ens_weights for _ in flips]
    conf_type = str(pc.get("ens_conf_type", "avg"))

    def fuse(views, hw):
        return fuse_views(views, hw, float(s.ens_iou), float(s.ens_skip), conf_type, vw)

    args = (models, clfs, bool(s.tta), float(s.conf), float(s.nms_iou), int(s.max_det), s.device, fuse)
    try:
        got = _predict_chunk(loaded, *args)
    except Exception:  # find the image(s) at fault: one by one
        got = []
        for one in loaded:
            try:
                got += _predict_chunk([one], *args)
            except Exception as e:
                errs.append(_reason(paths[one[0]], e, "prediction failed"))
    for iid, hw, v, p in got:
        sizes[iid] = hw
        if len(v.xyxy):
            tables.append(make_boxes(iid, v.labels, [names.get(int(c), str(c)) for c in v.labels],
                                     v.xyxy, score=v.scores))
        if p is not None:
            p_abn[iid] = p
    return tables, p_abn, errs, sizes


def predict_loaded(models: list[Loaded], rows: pd.DataFrame, settings: PredictSettings | None = None,
                   errors: list[str] | None = None) -> tuple[pd.DataFrame, dict[str, tuple]]:
    """Inference only with detectors already in memory (:class:`Loaded`; ``.model.predict`` like
    ``YOLO.predict``, e.g. :class:`detection.engine.epoch_score.InMemoryDetector`) on source rows
    (:func:`detection.engine.sources.list_source`) -> (raw box table in original pixels,
    {image_id: (height, width)}). TTA views and several models are fused by WBF (``ens_iou``,
    ``ens_skip``, the post keys' ``ens_conf_type``; equal weights); nothing else happens to the boxes."""
    from detection.models.devices import resolve_device

    s = settings or PredictSettings()
    s = s.replace(device=resolve_device(s.device), post={**post_mod.post_config(s.post), "ens_weights": None})
    names = class_names(models[0])
    tables, sizes, errs = [], {}, [] if errors is None else errors
    step = max(1, min([int(s.batch)] + [m.batch for m in models]))
    for start in range(0, len(rows), step):
        t, _, e, z = predict_rows(models, names, [], rows.iloc[start:start + step], s)
        tables += t
        errs += e
        sizes.update(z)
    return (pd.concat(tables, ignore_index=True) if tables else empty_boxes()), sizes
