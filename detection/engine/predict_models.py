"""The models :mod:`detection.engine.predict` runs: ultralytics detect/classify weights (``.pt`` or
``.onnx``; a ``.pt`` exported to ONNX once and cached beside it), multi-label classifier runners
(:mod:`detection.engine.classify`), and a classifier's probabilities for a list of images.
:func:`load_models` loads the detectors and classifiers of one prediction (the local path and
each Dask worker, :mod:`detection.engine.predict_cluster`).

Loading and calling models only; which images, views, fusion and post-processing are
:mod:`detection.engine.predict`'s."""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

log = logging.getLogger("detection.engine.predict")   # the stage's logger: its lines read as predict's


def onnx_input(path: str) -> tuple[int | None, int | None]:
    """(static batch or None, static square imgsz or None) of an ONNX model's first input."""
    import onnxruntime as ort

    shape = ort.InferenceSession(path, providers=["CPUExecutionProvider"]).get_inputs()[0].shape
    batch = shape[0] if isinstance(shape[0], int) else None
    size = shape[2] if isinstance(shape[2], int) else None
    return batch, size


@dataclass
class Loaded:
    """An ultralytics model plus the batch/imgsz it must be called with."""
    model: object
    path: str
    imgsz: int
    batch: int


def load_model(weights: str | os.PathLike, imgsz: int | None, batch: int, task: str = "detect",
               onnx: bool = False) -> Loaded:
    """A local ``.pt`` or ``.onnx`` of any family (:func:`detection.models.open_model`: ``YOLO(weights)``,
    RT-DETR, a ``tv:`` checkpoint); ``onnx=True`` exports a ``.pt`` first
    (cached beside it as ``<stem>_<imgsz>.onnx``). ``imgsz`` None: the size the checkpoint was
    trained at (logged; :data:`DEFAULT_IMGSZ` when it records none). An ONNX with a static input
    keeps its own imgsz and batch (a different ``imgsz`` is logged and ignored)."""
    from detection.models import open_model
    from detection.engine.runs import resolve_model

    what = "classifier" if task == "classify" else "weights"
    p = Path(weights)
    if p.suffix != ".onnx":
        p = Path(resolve_model(str(weights), what))
    model = open_model(p, task, what)
    if imgsz is None or p.suffix == ".pt":
        imgsz = _trained_imgsz(model, p, imgsz)
    if onnx and p.suffix == ".pt":
        p = onnx_cached(p, imgsz)
        model = open_model(p, task, what)
    if p.suffix == ".onnx":
        sb, ss = onnx_input(str(p))
        if ss is not None and ss != imgsz:
            log.warning("%s was exported at imgsz=%d; predicting at %d, not %d", p, ss, ss, imgsz)
            imgsz = ss
        batch = sb or batch
    return Loaded(model, str(p), int(imgsz), int(batch))


DEFAULT_IMGSZ = 512  # configs/default.yaml's imgsz: for weights that record no training size


def trained_imgsz(model) -> int | None:
    """The ``imgsz`` an ultralytics model (``YOLO``) was trained at, as its checkpoint records it."""
    v = (getattr(model, "overrides", None) or {}).get("imgsz")
    v = v[0] if isinstance(v, (list, tuple)) and v else v
    return int(v) if isinstance(v, (int, float)) and v > 0 else None


def _trained_imgsz(model, path: Path, asked: int | None) -> int:
    """``asked``, else the training size; the choice logged (and a mismatch with the training size)."""
    trained = trained_imgsz(model)
    if asked is None:
        size = trained or DEFAULT_IMGSZ
        log.info("%s: predicting at imgsz %d (%s; imgsz=N to change)", path, size,
                 "the size it was trained at" if trained else "it records no training size: the default")
        return size
    if trained and int(asked) != trained:
        log.info("%s: predicting at imgsz %d as asked (it was trained at %d)", path, int(asked), trained)
    return int(asked)


def onnx_cached(pt: Path, imgsz: int) -> Path:
    """``<stem>_<imgsz>.onnx`` beside ``pt`` (in the user cache for shipped weights:
    data_prep.core.resources.beside_or_cache), exported when absent or older than ``pt``."""
    from data_prep.core.resources import beside_or_cache
    from detection.engine.export import export_onnx

    cached = beside_or_cache(pt, f"{pt.stem}_{imgsz}.onnx")
    if not cached.is_file() or cached.stat().st_mtime < pt.stat().st_mtime:
        export_onnx(pt, imgsz=imgsz, out=cached)
    return cached


def class_names(m: Loaded) -> dict[int, str]:
    """``{class id: name}`` of a loaded model."""
    return {int(k): str(v) for k, v in m.model.names.items()}


def classifier_probs(clf: Loaded, imgs: list[np.ndarray], device: str = "cpu") -> np.ndarray:
    """p(abnormal) for each image, ``(N,)`` float64, from a classify model with an ``abnormal`` class;
    for a multi-label runner (:mod:`detection.engine.classify`), ``(N, L)``: every label, ``abnormal`` included."""
    if not isinstance(clf, Loaded):
        from detection.engine.classify import classify_images

        return np.asarray(classify_images(clf, imgs), "float64")
    names = class_names(clf)
    idx = [k for k, v in names.items() if v == "abnormal"]
    if not idx:
        raise ValueError(f"classifier {clf.path}: classes {names} have no 'abnormal'; train it with `cxrdet train-cls`")
    out = []
    for s in range(0, len(imgs), clf.batch):
        res = clf.model.predict(imgs[s:s + clf.batch], imgsz=clf.imgsz, device=device, verbose=False)
        out += [float(r.probs.data.cpu().numpy()[idx[0]]) for r in res]
    return np.asarray(out, "float64")



def multilabel_runner(classifier, onnx: bool, device: str):
    """A runner (:mod:`detection.engine.classify`) when ``classifier`` is a multi-label checkpoint or its
    ONNX, else None (an ultralytics normal/abnormal classifier)."""
    from detection.engine.classifier import is_multilabel

    p = Path(classifier)
    if p.suffix == ".onnx":
        import onnxruntime as ort

        try:
            sess = ort.InferenceSession(str(p), providers=["CPUExecutionProvider"])
        except Exception:  # not a readable ONNX: ultralytics' loader gives the error
            return None
        if "cxrdet" not in sess.get_modelmeta().custom_metadata_map:
            return None
    elif not is_multilabel(p):
        return None
    from detection.engine.classify import load_runner

    return load_runner(p, onnx, device)


def load_models(weights, classifiers, settings, onnx: bool = False) -> tuple[list[Loaded], dict[int, str], list]:
    """(detectors, their ``{class id: name}``, classifiers) of one prediction: ``weights`` and
    ``classifiers`` paths, ``settings`` a :class:`detection.engine.settings.PredictSettings`
    (``imgsz``, ``batch``, ``cls_imgsz``, its resolved ``device``). The detectors of an ensemble
    must name the same classes."""
    models = [load_model(w, settings.imgsz, int(settings.batch), "detect", onnx) for w in weights]
    names = class_names(models[0])
    for m in models[1:]:
        if class_names(m) != names:
            raise ValueError(f"ensemble: {m.path} classes {class_names(m)} differ from {models[0].path} classes {names}")
    return models, names, load_classifiers(classifiers, settings, onnx)[0]


def load_classifiers(classifiers, settings, onnx: bool = False) -> tuple[list, list[str] | None]:
    """The classifiers (ultralytics :class:`Loaded` or multi-label runners) and the multi-label
    labels (None for normal/abnormal ones); mixing the two kinds is refused."""
    clfs = [multilabel_runner(c, onnx, settings.device)
            or load_model(c, int(settings.cls_imgsz), int(settings.batch), "classify", onnx) for c in classifiers]
    ml = [c for c in clfs if not isinstance(c, Loaded)]
    if ml and (len(ml) != len(clfs) or any(c.labels != ml[0].labels for c in ml)):
        raise ValueError(f"classifiers {list(classifiers)}: expected all normal/abnormal (ultralytics) or all "
                         "multi-label with the same labels, to average them")
    return clfs, (list(ml[0].labels) if ml else None)
