"""``cxrdet export W.pt [--imgsz 512] [--out X.onnx] [--dynamic]``: detector weights -> ONNX.

Every family exports: YOLO and RT-DETR through ultralytics (below), a ``tv:`` checkpoint through
torch's exporter (:func:`detection.models.tv.export_onnx`: one image in, boxes/scores/labels out).

A multi-label classifier checkpoint (``train-cls cls_task=multilabel``) is exported by
:func:`detection.engine.classify.export_onnx` instead (its own imgsz, dynamic batch).

A thin call to ultralytics' exporter (``YOLO(w).export(format="onnx")``, simplified with onnxslim).
onnx, onnxslim and onnxruntime are project dependencies; ultralytics never installs anything here
(``YOLO_AUTOINSTALL=0`` via :mod:`detection.models.runtime`). The ONNX input is static
``(batch, channels, imgsz, imgsz)`` unless ``dynamic``; the class names, task, imgsz and channels
travel in its metadata, so ``YOLO("x.onnx")`` predicts like the ``.pt`` (``cxrdet predict``).
"""
from __future__ import annotations

import argparse
import logging
import os
from pathlib import Path

log = logging.getLogger(__name__)


def export_onnx(weights: str | os.PathLike, imgsz: int = 512, out: str | os.PathLike | None = None,
                dynamic: bool = False, batch: int = 1) -> Path:
    """Export local ``weights`` (.pt) to ONNX at ``imgsz``; return the ``.onnx`` path.

    Default destination: beside the weights as ``<stem>.onnx`` (ultralytics' own choice), or the
    working directory for the shipped weights (data_prep.core.resources.export_destination: nothing is
    written into the package). With ``out`` the file is moved there (atomic rename on one file system)."""
    from detection.models import tv
    from detection.models.runtime import open_yolo
    from detection.engine.runs import resolve_model

    from data_prep.core.resources import export_destination, is_shipped

    src = Path(resolve_model(str(weights), "weights"))
    if out is None and is_shipped(src):
        out = export_destination(src, f"{src.stem}.onnx")
    if is_shipped(src):   # ultralytics writes beside its .pt: export a copy in a temporary folder
        import shutil
        import tempfile

        with tempfile.TemporaryDirectory(prefix="cxrdet-export-") as tmp:
            return export_onnx(shutil.copy2(src, Path(tmp) / src.name), imgsz, out, dynamic, batch)
    if tv.is_weights(src):   # torchvision's detectors: torch's own exporter (detection.models.tv)
        if dynamic:
            log.warning("%s: a tv: ONNX takes one image of a fixed size; --dynamic ignored", src)
        return tv.export_onnx(src, imgsz, out)
    model = open_yolo(src)
    made = Path(model.export(format="onnx", imgsz=int(imgsz), dynamic=bool(dynamic), batch=int(batch),
                             simplify=True, device="cpu", verbose=False))
    if not made.is_file():
        raise FileNotFoundError(f"ultralytics export of {src} reported {made}, which does not exist")
    if out is None:
        return made
    dst = Path(out)
    if made.resolve() != dst.resolve():
        from data_prep.core.atomic import move

        move(made, dst)   # a rename; across file systems a copy to a temp beside dst, then a rename
    log.info("exported %s -> %s (imgsz %d)", src, dst, imgsz)
    return dst


def add_arguments_export(p: argparse.ArgumentParser) -> None:
    from data_prep.core.config import add_config_arguments

    p.add_argument("weights", help="local .pt weights")
    p.add_argument("--out", default=None, help="destination .onnx (default: beside the weights)")
    p.add_argument("--dynamic", action="store_true", help="dynamic batch and image size")
    add_config_arguments(p, ["imgsz"], help={"imgsz": "network input size baked into the ONNX"})


def run_export(args: argparse.Namespace) -> int:
    from data_prep.core.config import stage_config
    from detection.models import safe_load
    from detection.engine.classifier import is_multilabel

    cfg = stage_config(args)
    safe_load.configure(cfg)   # trust_weights: what a model file may run on load
    if is_multilabel(args.weights):  # a multi-label classifier: its own imgsz, dynamic batch
        from detection.engine.classify import export_onnx as export_classifier

        print(export_classifier(args.weights, args.out))
        return 0
    path = export_onnx(args.weights, imgsz=int(cfg["imgsz"]), out=args.out, dynamic=args.dynamic)
    print(path)
    return 0
