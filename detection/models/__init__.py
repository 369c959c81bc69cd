"""Detector families: which family a ``model=`` spec or a weights file belongs to, and opening it.

Owns the families beside ultralytics YOLO: ultralytics' RT-DETR (:mod:`.rtdetr`: trained through
its ``RTDETR`` class, read back by ultralytics itself) and torchvision's detection models, the
``tv:<name>`` specs (:mod:`.tv`: build, checkpoint, inference and ONNX; their training loop is
:mod:`detection.engine.train_tv`). A model of any family is opened behind ultralytics' ``YOLO.predict`` signature
(``.predict(imgs, imgsz, conf, iou, max_det, device)`` -> results with ``.boxes.xyxy/.conf/.cls``
in the pixels of the image given, ``.names``, ``.overrides["imgsz"]``), so :mod:`detection.engine.predict`,
cv, tune and the cluster path run every family through the same code. Its modules
(runtime, devices, safe_load, checkpoints, rtdetr, tv) import each other and data_prep.core only:
opening a model never imports a stage.

May import: data_prep.core.

Public API:
:func:`family`, :func:`weights_family`, :func:`open_model`.
"""
from __future__ import annotations

import os
from pathlib import Path

FAMILIES = ("yolo", "rtdetr", "tv")


def family(model: str | os.PathLike) -> str:
    """The family a ``model=`` value names: ``tv`` (``tv:<name>``), ``rtdetr`` (an RT-DETR YAML or
    checkpoint), else ``yolo`` (any other ultralytics YAML or ``.pt``)."""
    from detection.models import rtdetr, tv

    if tv.is_spec(model):
        return "tv"
    p = Path(str(model))
    if p.suffix in (".pt", ".onnx") and p.is_file():
        return weights_family(p)
    return "rtdetr" if rtdetr.is_rtdetr_yaml(model) else "yolo"


def weights_family(path: str | os.PathLike) -> str:
    """``tv`` for a checkpoint or ONNX written by the ``tv:`` family (read without unpickling:
    a marker in the archive / the ONNX metadata), ``rtdetr`` for an ultralytics RT-DETR file, else
    ``yolo``."""
    from detection.models import rtdetr, tv

    if tv.is_weights(path):
        return "tv"
    return "rtdetr" if rtdetr.is_rtdetr_weights(path) else "yolo"


def open_model(path: str | os.PathLike, task: str | None = "detect", what: str = "weights"):
    """A local ``.pt``/``.onnx`` of any family behind ``YOLO.predict``'s signature (module
    docstring); a file that is no such model is one :class:`~data_prep.core.errors.InputError`."""
    from detection.models import tv
    from detection.models.runtime import open_yolo

    if task in (None, "detect") and tv.is_weights(path):
        return tv.open_detector(path, what)
    return open_yolo(path, task, what)   # YOLO, and RT-DETR (ultralytics switches to RTDETR by the head)
