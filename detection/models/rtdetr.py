"""ultralytics' RT-DETR (a transformer detector) as a cxrdet family: what it needs beyond YOLO's code.

ultralytics 8.4 trains RT-DETR through its ``RTDETR`` class only: ``YOLO("rtdetr-l.yaml")`` fails
("'YOLO' model does not support '_new' mode"), so a YAML whose head is ``RTDETRDecoder`` is built
with :func:`build`. Everything after training is ultralytics' own: ``YOLO(path)`` switches itself to
``RTDETR`` for a checkpoint or an exported ONNX whose head is RT-DETR's (``yolo/model.py``), the
trainer, validator and ONNX exporter are its RT-DETR ones, and its predictor is
:func:`predictor_class` (no NMS: the decoder's queries are the boxes). Training data: the YOLO lists
(``OUT/yolo/fold<k>/data.yaml``), as for YOLO.
"""
from __future__ import annotations

import os
from pathlib import Path

_HEAD = "RTDETRDecoder"


def is_rtdetr_yaml(model: str | os.PathLike) -> bool:
    """Whether ``model`` is a model YAML (a file, or a name ultralytics resolves) whose head ends
    in ``RTDETRDecoder``."""
    p = Path(str(model))
    if p.suffix not in (".yaml", ".yml"):
        return False
    import detection.models.runtime  # noqa: F401  (offline before ultralytics)
    from ultralytics.nn.tasks import yaml_model_load

    try:
        d = yaml_model_load(str(model))
    except Exception:  # not a readable model YAML: ultralytics names it when it builds the model
        return p.stem.startswith("rtdetr")
    head = d.get("head") or []
    return bool(head) and isinstance(head[-1], (list, tuple)) and len(head[-1]) > 2 and str(head[-1][2]) == _HEAD


def is_rtdetr_weights(path: str | os.PathLike) -> bool:
    """Whether a local ``.pt`` (the pickled module's class, read from the archive without
    unpickling) or ``.onnx`` (ultralytics' ``head`` metadata) is an RT-DETR model."""
    from detection.models.tv import onnx_meta, pickle_mentions

    p = Path(path)
    if not p.is_file():
        return False
    if p.suffix == ".onnx":
        return "RTDETR" in onnx_meta(p).get("head", "")
    return pickle_mentions(p, "RTDETRDetectionModel")


def build(model: str | os.PathLike):
    """``RTDETR(model)``: an RT-DETR YAML built from scratch (nothing downloaded)."""
    import detection.models.runtime  # noqa: F401
    from ultralytics import RTDETR

    return RTDETR(str(model))


def predictor_class(module):
    """The ultralytics predictor for a detection module in memory: RT-DETR's for an
    ``RTDETRDetectionModel`` (its decoder's queries need no NMS), else YOLO's."""
    from ultralytics.nn.tasks import RTDETRDetectionModel

    if isinstance(module, RTDETRDetectionModel):
        from ultralytics.models.rtdetr.predict import RTDETRPredictor

        return RTDETRPredictor
    from ultralytics.models.yolo.detect import DetectionPredictor

    return DetectionPredictor
