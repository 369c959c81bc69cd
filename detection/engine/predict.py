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
path with ``cxrdet postprocess``); the models are loaded by :mod:`detection.engine.predict_models`. On a
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
import dataclasses
import logging
import os
import time
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Sequence

import cv2
import numpy as np
import pandas as pd
from tqdm import tqdm

from data_prep.core.boxes import Frame, empty_boxes, frame_between, from_frame, make_boxes
from data_prep.datasets import DEFAULT_DATASET, describe
from data_prep.datasets.common import read_meta as common_read_meta
from detection.competition import postprocess as post_mod
from detection.competition.postprocess import View, fuse_views, two_class_filter  # noqa: F401  (predict's steps live there)
from detection.models import safe_load
from detection.engine.predict_models import Loaded, _multilabel_runner, _names, classifier_probs, load_model

log = logging.getLogger(__name__)

PNG_SUFFIXES = (".png", ".jpg", ".jpeg")
_DEFAULT_NORMAL = describe(DEFAULT_DATASET).normal  # (class_id, name) of the default dataset's normal class


# ----------------------------------------------------------------------------- sources
def read_meta(path: str | os.PathLike) -> pd.DataFrame:
    """``image_id``-indexed ``height, width`` (+ ``png_height, png_width`` when present) from either
    meta form, validated by :func:`data_prep.datasets.common.read_meta`."""
    df = common_read_meta(path, str(path))
    keep = [c for c in ("image_id", "height", "width", "png_height", "png_width") if c in df]
    return df[keep].set_index("image_id")


def list_source(source: str | os.PathLike, meta: str | os.PathLike | None = None) -> pd.DataFrame:
    """The images to predict: columns ``image_id, path, kind`` (png | dicom), ``height, width``
    (original pixels, NaN when only the PNG knows), ``png_height, png_width`` (NaN if unknown)."""
    from data_prep.dicom.convert import dicom_paths

    src = Path(source)
    if src.is_file() and src.suffix == ".txt":  # a list of PNG paths, one a line (like ultralytics' val.txt)
        pngs = _listed_pngs(src)
        src = src.parent
    elif not src.is_dir():
        raise FileNotFoundError(f"predict: source folder {src} does not exist")
    else:
        pngs = sorted(p for p in src.iterdir() if p.suffix.lower() in PNG_SUFFIXES and not p.name.startswith("."))
    if pngs:
        rows = pd.DataFrame({"image_id": [p.stem for p in pngs], "path": [str(p) for p in pngs], "kind": "png"})
        if meta is None:
            meta = next((m for m in (src / "meta.csv", src.parent / "meta.csv") if m.is_file()), None)
            if meta is not None:
                log.info("original sizes from %s", meta)
            else:
                log.warning("%s: no meta.csv and no --meta: the PNGs are taken as the original images", src)
        if meta is not None:
            m = read_meta(meta)
            rows = rows.join(m, on="image_id")
            unknown = rows["height"].isna()
            if unknown.any():
                raise ValueError(f"{meta}: no height/width for {int(unknown.sum())} image(s) of {src}, "
                                 f"first {rows.loc[unknown, 'image_id'].iloc[0]!r}")
    else:
        dcm = dicom_paths(src)
        if not dcm:
            raise FileNotFoundError(f"predict: no PNG or DICOM files in {src}")
        rows = pd.DataFrame({"image_id": [p.stem for p in dcm], "path": [str(p) for p in dcm], "kind": "dicom"})
    for c in ("height", "width", "png_height", "png_width"):
        if c not in rows:
            rows[c] = np.nan
    dup = rows["image_id"].duplicated()
    if dup.any():
        raise ValueError(f"{src}: image_id {rows.loc[dup, 'image_id'].iloc[0]!r} appears twice")
    return rows.reset_index(drop=True)


def _listed_pngs(path: Path) -> list[Path]:
    """The image paths of a ``.txt`` list (blank lines skipped; relative paths from the list's folder)."""
    out = []
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        p = Path(line.strip())
        p = p if p.is_absolute() else path.parent / p
        if p.suffix.lower() not in PNG_SUFFIXES:
            raise ValueError(f"{path} line {n}: {line.strip()!r} is not a PNG/JPEG path; expected one image path a line")
        out.append(p)
    if not out:
        raise ValueError(f"{path}: no image path listed")
    return out


def load_image(row, size: int = 512, keep_ratio: bool = False,
               voi_options=None) -> tuple[np.ndarray, Frame, tuple[int, int]]:
    """One source row -> (uint8 image (H, W) or (H, W, 3) in the PNG frame, its :class:`Frame`,
    original ``(height, width)``). DICOMs are converted in memory like ``cxrdet convert`` does
    (``voi_options``: :class:`data_prep.dicom.voi.VoiOptions`, default: config defaults)."""
    if row.kind == "dicom":
        from data_prep.dicom.read import read_dicom

        img, hdr = read_dicom(row.path, size=size, keep_ratio=keep_ratio, options=voi_options)
        h, w = int(hdr["height"]), int(hdr["width"])
    else:
        img = cv2.imread(str(row.path), cv2.IMREAD_UNCHANGED)
        if img is None:
            raise ValueError(f"{row.path}: cannot read the image (not a PNG/JPEG or truncated)")
        if img.dtype != np.uint8:
            img = (img >> 8).astype(np.uint8) if img.dtype == np.uint16 else img.astype(np.uint8)
        if img.ndim == 3 and img.shape[2] == 4:
            img = cv2.cvtColor(img, cv2.COLOR_BGRA2BGR)
        ph, pw = img.shape[:2]
        if not pd.isna(row.png_height) and (int(row.png_height), int(row.png_width)) != (ph, pw):
            raise ValueError(f"{row.path}: PNG is {ph}x{pw} but meta says png_height x png_width = "
                             f"{int(row.png_height)}x{int(row.png_width)}")
        h, w = (ph, pw) if pd.isna(row.height) else (int(row.height), int(row.width))
    ph, pw = img.shape[:2]
    return img, frame_between(h, w, ph, pw), (h, w)


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


# ----------------------------------------------------------------------------- prediction
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


@dataclass(frozen=True)
class PredictSettings:
    """What :func:`predict` is tuned by; field names are the config keys (configs/default.yaml).
    ``normal``: (class_id, name) of the dataset's normal class for the 2-class filter, or None."""
    tta: bool = False
    conf: float = 0.001
    nms_iou: float = 0.5
    max_det: int = 300
    imgsz: int | None = None  # None: each checkpoint's training size (logged)
    batch: int = 16
    device: str = "auto"
    ens_iou: float = 0.55
    ens_skip: float = 0.0001
    cls_imgsz: int = 256
    cls_low: float = 0.08
    cls_high: float = 0.95
    size: int = 512
    keep_ratio: bool = False
    normal: tuple[int, str] | None = _DEFAULT_NORMAL
    voi: object = None  # data_prep.dicom.voi.VoiOptions for DICOMs (None: the config defaults)
    post: dict | None = None  # post-processing keys (detection.competition.postprocess), e.g. the merged config
    scheduler: str | None = None  # null | local | tcp://host:port (data_prep.core.cluster)
    workers: int = 2  # LocalCluster processes for scheduler=local

    # the keyword names predict() took before the settings object (kept for one release)
    _OLD = {"low": "cls_low", "high": "cls_high", "normal_class": "normal", "voi_options": "voi"}

    @classmethod
    def from_config(cls, cfg: dict, **changes) -> "PredictSettings":
        """The settings of a merged config (:func:`data_prep.core.config.load_config`); the normal
        class from its dataset's description; ``changes`` override fields."""
        from data_prep.dicom.voi import VoiOptions

        names = [f.name for f in fields(cls) if f.name not in ("normal", "voi", "post", "scheduler", "imgsz")]
        kw = {k: type(getattr(cls, k))(cfg[k]) for k in names if k in cfg}
        if cfg.get("_sources", {}).get("imgsz") not in (None, "dataset config"):  # asked for: else the checkpoint's
            kw["imgsz"] = int(cfg["imgsz"])
        return cls(**kw, normal=describe(cfg).normal, voi=VoiOptions.from_config(cfg), post=dict(cfg),
                   scheduler=cfg.get("scheduler")).replace(**changes)

    def replace(self, **changes) -> "PredictSettings":
        """A copy with ``changes`` (field names, or the old keyword names ``low``/``high``/``normal_class``)."""
        changes = {self._OLD.get(k, k): v for k, v in changes.items()}
        unknown = sorted(set(changes) - {f.name for f in fields(self)})
        if unknown:
            raise TypeError(f"predict: unknown setting(s) {unknown}; expected {[f.name for f in fields(self)]}")
        return dataclasses.replace(self, **changes)


@dataclass(frozen=True)
class _Spec:
    """Everything a batch needs besides its rows: small and picklable (it travels to Dask workers)."""
    weights: tuple[str, ...]
    classifiers: tuple[str, ...]     # several: the mean p(abnormal)
    imgsz: int | None                # None: each checkpoint's training size
    batch: int
    cls_imgsz: int
    onnx: bool
    device: str
    tta: bool
    conf: float
    nms_iou: float
    max_det: int
    ens_iou: float
    ens_skip: float
    size: int | None
    keep_ratio: bool
    voi: object = None      # data_prep.dicom.voi.VoiOptions for DICOM sources (None: its defaults)
    ens_conf_type: str = "avg"
    ens_weights: tuple[float, ...] | None = None   # one per model (postprocess key ens_weights)


def _load_models(spec: _Spec) -> tuple[list[Loaded], dict[int, str], list[Loaded]]:
    models = [load_model(w, spec.imgsz, spec.batch, "detect", spec.onnx) for w in spec.weights]
    names = _names(models[0])
    for m in models[1:]:
        if _names(m) != names:
            raise ValueError(f"ensemble: {m.path} classes {_names(m)} differ from {models[0].path} classes {names}")
    return models, names, _load_classifiers(spec)[0]


def _load_classifiers(spec: _Spec) -> tuple[list, list[str] | None]:
    """The classifiers of ``spec`` (ultralytics :class:`Loaded` or multi-label runners) and the
    multi-label labels (None for normal/abnormal ones); mixing the two kinds is refused."""
    clfs = [_multilabel_runner(c, spec.onnx, spec.device)
            or load_model(c, spec.cls_imgsz, spec.batch, "classify", spec.onnx) for c in spec.classifiers]
    ml = [c for c in clfs if not isinstance(c, Loaded)]
    if ml and (len(ml) != len(clfs) or any(c.labels != ml[0].labels for c in ml)):
        raise ValueError(f"classifiers {list(spec.classifiers)}: expected all normal/abnormal (ultralytics) or all "
                         "multi-label with the same labels, to average them")
    return clfs, (list(ml[0].labels) if ml else None)


def _predict_rows(models: list[Loaded], names: dict[int, str], clfs: list[Loaded], rows: pd.DataFrame,
                  spec: _Spec) -> tuple[list[pd.DataFrame], dict[str, float], list[str], dict[str, tuple]]:
    """One batch of source rows -> (box tables, {image_id: p(abnormal)}, error lines,
    {image_id: original (height, width)}). A failing image never stops the batch: it is listed."""
    loaded, errs, tables, p_abn, sizes, paths = [], [], [], {}, {}, {}
    for r in rows.itertuples():
        paths[r.image_id] = r.path
        try:
            loaded.append((r.image_id, *load_image(r, spec.size, spec.keep_ratio, spec.voi)))
        except Exception as e:  # one bad image never stops the batch; listed at the end
            errs.append(_reason(r.path, e))
    if not loaded:
        return tables, p_abn, errs, sizes
    flips = (False, True) if spec.tta else (False,)
    vw = None if spec.ens_weights is None else [w for w in spec.ens_weights for _ in flips]

    def fuse(views, hw):
        return fuse_views(views, hw, spec.ens_iou, spec.ens_skip, spec.ens_conf_type, vw)

    args = (models, clfs, spec.tta, spec.conf, spec.nms_iou, spec.max_det, spec.device, fuse)
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
    (:func:`list_source`) -> (raw box table in original pixels, {image_id: (height, width)}).
    TTA views and several models are fused by WBF (``ens_*``); nothing else happens to the boxes."""
    from detection.models.devices import resolve_device

    s = settings or PredictSettings()
    pc = post_mod.post_config(s.post)
    spec = _Spec(tuple(m.path for m in models), (), s.imgsz, int(s.batch), int(s.cls_imgsz), False,
                 resolve_device(s.device), bool(s.tta), float(s.conf), float(s.nms_iou), int(s.max_det),
                 float(s.ens_iou), float(s.ens_skip), None if s.size is None else int(s.size), bool(s.keep_ratio),
                 s.voi, str(pc["ens_conf_type"]))
    names = _names(models[0])
    tables, sizes, errs = [], {}, [] if errors is None else errors
    step = max(1, min([int(s.batch)] + [m.batch for m in models]))
    for start in range(0, len(rows), step):
        t, _, e, z = _predict_rows(models, names, [], rows.iloc[start:start + step], spec)
        tables += t
        errs += e
        sizes.update(z)
    return (pd.concat(tables, ignore_index=True) if tables else empty_boxes()), sizes


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
    (``settings.workers`` LocalCluster processes, see :func:`detection.engine.predict_cluster._predict_dask`); the same table."""
    if isinstance(settings, dict):
        settings = PredictSettings.from_config(settings)
    s = (settings or PredictSettings()).replace(**changes)
    tta, conf, nms_iou, max_det, imgsz, batch = s.tta, s.conf, s.nms_iou, s.max_det, s.imgsz, s.batch
    device, ens_iou, ens_skip, cls_imgsz, low, high = s.device, s.ens_iou, s.ens_skip, s.cls_imgsz, s.cls_low, s.cls_high
    normal_class, size, keep_ratio, voi_options, post = s.normal, s.size, s.keep_ratio, s.voi, s.post
    from data_prep.core.cluster import check_scheduler
    from detection.models.devices import resolve_device

    device = resolve_device(device)
    scheduler, workers = check_scheduler(s.scheduler), s.workers
    pc = post_mod.post_config({**(post or {}), "ens_iou": ens_iou, "ens_skip": ens_skip, "cls_low": low,
                               "cls_high": high})
    wlist = [weights] if isinstance(weights, (str, os.PathLike)) else list(weights)
    from detection.models.checkpoints import check_k, expand

    wlist = expand(wlist, check_k((post or {}).get("ckpt_ensemble", 0) or 0, "ckpt_ensemble"))  # RUN_DIR: its kept epochs
    if not wlist:
        raise ValueError("predict: no weights given")
    if pc["ens_weights"] is not None and len(pc["ens_weights"]) != len(wlist):
        raise ValueError(f"ens_weights {pc['ens_weights']}: {len(pc['ens_weights'])} weight(s) for "
                         f"{len(wlist)} model(s)")
    clist = [] if not classifier else [classifier] if isinstance(classifier, (str, os.PathLike)) else list(classifier)
    spec = _Spec(tuple(str(w) for w in wlist), tuple(str(c) for c in clist), None if imgsz is None else int(imgsz),
                 int(batch),
                 int(cls_imgsz), bool(onnx), str(device), bool(tta), float(conf), float(nms_iou), int(max_det),
                 float(pc["ens_iou"]), float(pc["ens_skip"]), None if size is None else int(size), bool(keep_ratio),
                 voi_options, str(pc["ens_conf_type"]),
                 None if pc["ens_weights"] is None else tuple(pc["ens_weights"]))
    if scheduler is None:
        models, names, clfs = _load_models(spec)
        ml = [c for c in clfs if not isinstance(c, Loaded)]
        labels = list(ml[0].labels) if ml else None
        chunk = min([batch] + [m.batch for m in models])
    rows = list_source(source, meta)
    errs: list[str] = [] if errors is None else errors
    tables, p_abn, sizes = [], {}, {}
    t0 = time.perf_counter()
    if scheduler is not None:
        from detection.engine.predict_cluster import _predict_dask

        labels = _predict_dask(spec, rows, scheduler, workers, tables, p_abn, errs, sizes)
    else:
        with tqdm(total=len(rows), desc="predict", unit="img") as bar:
            for start in range(0, len(rows), chunk):
                t, p, e, z = _predict_rows(models, names, clfs, rows.iloc[start:start + chunk], spec)
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
    return Inference(raw, probs, hw, pc, normal_class)


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
