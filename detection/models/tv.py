"""torchvision's detection models as the ``tv:`` family: build, checkpoint, inference, ONNX.

``model=tv:<name>`` names any detection model torchvision's registry knows
(``torchvision.models.list_models(module=torchvision.models.detection)``: ``fasterrcnn_resnet50_fpn_v2``,
``fasterrcnn_mobilenet_v3_large_fpn``, ``retinanet_resnet50_fpn_v2``, ``fcos_resnet50_fpn``,
``ssdlite320_mobilenet_v3_large``, ...). It is built with ``get_model(name, weights=None,
weights_backbone=None, num_classes=K + 1)``: nothing is ever downloaded; the backbone starts from
scratch, or from ``backbone_weights=PATH`` (a local state dict, e.g. torchvision's
``resnet50-*.pth``, read with ``torch.load(weights_only=True)`` through :mod:`detection.models.safe_load`).
Class ``k`` of the box table is label ``k + 1`` inside the model (0 is torchvision's background).
``imgsz`` sets the model's own resize (``min_size = max_size = imgsz``; SSD models keep their fixed
size); ``tv_args`` (a dict) goes to the builder as keyword arguments.

Images: the PNGs are grayscale; the model gets the gray channel three times (its backbone and its
``image_mean``/``image_std`` are three-channel), as float in [0, 1].

A checkpoint (``best.pt``/``last.pt``) is a plain dict of tensors, numbers and strings, so it loads
with ``weights_only=True``: ``cxrdet_family: "tv"``, ``arch`` (the torchvision name), ``names``
({class_id: name}), ``imgsz``, ``channels`` (3), ``builder_args``, ``model`` (the state dict),
``epoch`` (0-based, the last finished), ``train_args`` (what it was trained with, ``data`` = the COCO
json), and in ``last.pt`` the optimiser's state for ``resume``. :class:`Detector` runs one behind
``YOLO.predict``'s signature; :func:`export_onnx` writes an ONNX (one image ``(1, 3, imgsz, imgsz)``
in, ``boxes, scores, labels`` out, the same metadata) that :class:`OnnxDetector` runs.
"""
from __future__ import annotations

import json
import logging
import os
import zipfile
from pathlib import Path

import numpy as np

from data_prep.core.errors import InputError

log = logging.getLogger(__name__)

PREFIX = "tv:"
MARK = "cxrdet_family"
KIND = "a tv: checkpoint written by `cxrdet train model=tv:<name>`"


# ----------------------------------------------------------------------------- specs
def is_spec(model) -> bool:
    """Whether a ``model=`` value names a torchvision model (``tv:<name>``)."""
    return str(model).startswith(PREFIX)


def known() -> list[str]:
    """The detection model names torchvision's registry knows."""
    import torchvision

    return sorted(torchvision.models.list_models(module=torchvision.models.detection))


def check_spec(model: str, what: str = "model") -> str:
    """``model`` when it is ``tv:<a name torchvision knows>``; else one line listing the names."""
    name = str(model)[len(PREFIX):]
    names = known()
    if name not in names:
        raise InputError(f"{what}={model}", f"torchvision has no detection model {name!r}; expected tv: and one of "
                         f"{', '.join(names)}")
    return str(model)


def load_torch(path: str | os.PathLike, what: str, kind: str):
    """A ``.pt`` read through :func:`detection.models.safe_load.load` (``weights_only=True`` unless
    ``trust_weights=true``); any failure is one line naming the file."""
    from detection.models import safe_load

    return safe_load.load(path, what, kind)


# ----------------------------------------------------------------------------- building
def build(arch: str, n_classes: int, imgsz: int, builder_args: dict | None = None):
    """torchvision's ``arch`` from scratch for ``n_classes`` classes (+ background), resizing to ``imgsz``."""
    from torchvision.models import get_model

    kw = dict(builder_args or {})
    base = dict(weights=None, weights_backbone=None, num_classes=int(n_classes) + 1)
    try:
        return get_model(arch, **base, **{"min_size": int(imgsz), "max_size": int(imgsz), **kw})
    except TypeError:  # SSD builders fix their own input size (min_size is theirs)
        return get_model(arch, **base, **kw)


def load_backbone(model, path: str | os.PathLike) -> int:
    """Copy a local backbone state dict (``backbone_weights``) into ``model``'s backbone; returns
    how many tensors matched by name and shape (after dropping ``module.``/``backbone.``/``body.``
    prefixes). None matching is an error naming the file."""
    sd = load_torch(path, "backbone_weights", "a state dict of backbone tensors (e.g. torchvision's resnet50)")
    sd = sd.get("state_dict", sd.get("model", sd)) if isinstance(sd, dict) else sd
    if not isinstance(sd, dict) or not sd:
        raise InputError(f"backbone_weights {path}", "holds no state dict; expected {name: tensor}")
    best, target = {}, None
    for part in ("backbone.body", "backbone", ""):
        mod = model.get_submodule(part) if part else model
        own = mod.state_dict()
        got = {}
        for k, v in sd.items():
            key = str(k)
            for pre in ("module.", "backbone.", "body.", "features."):
                key = key.removeprefix(pre) if key.removeprefix(pre) in own else key
            if key in own and hasattr(v, "shape") and tuple(own[key].shape) == tuple(v.shape):
                got[key] = v
        if len(got) > len(best):
            best, target = got, mod
    if not best:
        raise InputError(f"backbone_weights {path}", f"none of its {len(sd)} tensors matches the backbone of this "
                         "model by name and shape; expected the state dict of its backbone (e.g. resnet50 for "
                         "*_resnet50_fpn*)")
    target.load_state_dict(best, strict=False)
    log.info("backbone_weights %s: %d of %d tensors loaded", path, len(best), len(sd))
    return len(best)


def to_tensor(img: np.ndarray):
    """uint8 ``(H, W)`` (or ``(H, W, 3)`` BGR) -> float ``(3, H, W)`` in [0, 1] (gray repeated)."""
    import torch

    a = np.asarray(img)
    if a.ndim == 2:
        a = np.repeat(a[:, :, None], 3, axis=2)
    elif a.shape[2] == 3:
        a = a[:, :, ::-1]   # BGR (OpenCV) -> RGB
    return torch.from_numpy(np.ascontiguousarray(a.transpose(2, 0, 1))).float().div_(255.0)


# ----------------------------------------------------------------------------- checkpoints
def is_weights(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a ``tv:`` checkpoint or its ONNX (read without unpickling anything)."""
    p = Path(path)
    if not p.is_file():
        return False
    if p.suffix == ".onnx":
        return onnx_meta(p).get(MARK) == "tv"
    return pickle_mentions(p, MARK)


def pickle_mentions(path: Path, name: str) -> bool:
    """Whether the pickle inside a ``torch.save`` archive names ``name`` (a key, a class): read as
    bytes, nothing unpickled. False for a file that is no such archive."""
    try:
        with zipfile.ZipFile(path) as z:
            pkl = next((n for n in z.namelist() if n.endswith("/data.pkl")), None)
            return pkl is not None and name.encode() in z.read(pkl)
    except (zipfile.BadZipFile, OSError):
        return False


def onnx_meta(p: Path) -> dict:
    """An ONNX file's metadata (``metadata_props``) as a dict; {} when it is not a readable ONNX."""
    try:
        import onnx

        return {m.key: m.value for m in onnx.load(str(p), load_external_data=False).metadata_props}
    except Exception:  # not an ONNX: the caller's loader reports it
        return {}


def read_checkpoint(path: str | os.PathLike, what: str = "weights") -> dict:
    """A ``tv:`` checkpoint as a dict (``torch.load(weights_only=True)``), checked for its keys."""
    ck = load_torch(path, what, KIND)
    need = ("arch", "names", "imgsz", "model")
    if not isinstance(ck, dict) or ck.get(MARK) != "tv" or any(k not in ck for k in need):
        raise InputError(f"{what} {path}", f"not {KIND} (keys {', '.join(need)} and {MARK}: tv)")
    return ck


def checkpoint(model, arch: str, names: dict, imgsz: int, builder_args: dict, epoch: int,
               train_args: dict, **more) -> dict:
    """The dict :func:`save` writes (module docstring): tensors, numbers and strings only."""
    return {MARK: "tv", "arch": str(arch), "names": {int(k): str(v) for k, v in names.items()},
            "imgsz": int(imgsz), "channels": 3, "builder_args": json.loads(json.dumps(builder_args or {})),
            "model": {k: v.detach().cpu() for k, v in model.state_dict().items()}, "epoch": int(epoch),
            "train_args": json.loads(json.dumps(train_args, default=str)), **more}


def save(ck: dict, path: str | os.PathLike) -> Path:
    """``torch.save`` to a temporary file beside ``path``, then renamed (never half written)."""
    import torch

    from data_prep.core.atomic import atomic_path

    with atomic_path(path) as tmp:
        torch.save(ck, tmp)
    return Path(path)


def from_checkpoint(ck: dict):
    """The model a checkpoint dict holds (eval mode, CPU)."""
    m = build(ck["arch"], len(ck["names"]), ck["imgsz"], ck.get("builder_args"))
    m.load_state_dict(ck["model"])
    return m.eval()


# ----------------------------------------------------------------------------- inference
class _Boxes:
    def __init__(self, xyxy, conf, cls):
        self.xyxy, self.conf, self.cls = xyxy, conf, cls


class _Result:
    """One image's boxes in the pixels of the image given, as ultralytics' ``Results.boxes``."""

    def __init__(self, xyxy, conf, cls):
        self.boxes = _Boxes(xyxy, conf, cls)


def torch_device(device) -> str:
    """A device as ultralytics spells it ("0", "0,1", "cpu", "cuda:1") -> torch's name (the first GPU)."""
    d = str(device or "cpu")
    return f"cuda:{d.split(',')[0].removeprefix('cuda:')}" if d.split(",")[0].removeprefix("cuda:").isdigit() else d


def set_limits(model, imgsz: int | None, conf: float, iou: float, max_det: int) -> None:
    """Input size and box limits of a torchvision detector (each family names them its own way)."""
    if imgsz and hasattr(model, "transform") and getattr(model.transform, "fixed_size", None) is None:
        model.transform.min_size, model.transform.max_size = (int(imgsz),), int(imgsz)
    for obj in (model, getattr(model, "roi_heads", None)):
        for attr, v in (("score_thresh", float(conf)), ("nms_thresh", float(iou)), ("detections_per_img", int(max_det))):
            if obj is not None and hasattr(obj, attr):
                setattr(obj, attr, v)


class Detector:
    """A ``tv:`` model behind ``YOLO.predict``'s signature (:mod:`detection.models`)."""

    def __init__(self, model, names: dict, imgsz: int, path: str = ""):
        self.model, self.names, self.path = model.eval(), {int(k): str(v) for k, v in names.items()}, path
        self.overrides = {"imgsz": int(imgsz)}

    def predict(self, imgs, imgsz=None, conf=0.001, iou=0.5, max_det=300, device="cpu", verbose=False):
        import torch

        dev = torch_device(device)
        self.model.to(dev)
        set_limits(self.model, imgsz, conf, iou, max_det)
        with torch.no_grad():
            outs = self.model([to_tensor(im).to(dev) for im in imgs])
        return [_Result(o["boxes"].float().cpu(), o["scores"].float().cpu(), (o["labels"] - 1).cpu()) for o in outs]


def open_detector(path: str | os.PathLike, what: str = "weights"):
    """:class:`Detector` for a ``tv:`` checkpoint, :class:`OnnxDetector` for its ONNX."""
    p = Path(path)
    if p.suffix == ".onnx":
        return OnnxDetector(p, what)
    ck = read_checkpoint(p, what)
    try:
        model = from_checkpoint(ck)
    except Exception as e:  # a state dict that does not fit the recorded architecture
        raise InputError(f"{what} {p}", f"its weights do not fit tv:{ck['arch']} with {len(ck['names'])} classes "
                         f"({type(e).__name__}); expected {KIND}") from e
    return Detector(model, ck["names"], ck["imgsz"], str(p))


# ----------------------------------------------------------------------------- ONNX
class _OneImage:
    """``(1, 3, H, W)`` tensor -> (boxes, scores, labels) of torchvision's detector: an input ONNX can fix."""

    def __new__(cls, model):
        import torch

        class OneImage(torch.nn.Module):
            def __init__(self, m):
                super().__init__()
                self.m = m

            def forward(self, x):
                o = self.m([x[0]])[0]
                return o["boxes"], o["scores"], o["labels"]

        return OneImage(model)


def export_onnx(weights: str | os.PathLike, imgsz: int | None = None, out: str | os.PathLike | None = None,
                iou: float = 0.5, max_det: int = 1000) -> Path:
    """A ``tv:`` checkpoint -> ONNX (TorchScript exporter, opset 17) at ``imgsz`` (default: its
    training size); ``out`` default ``<stem>.onnx`` beside it. Baked in: the NMS IoU ``iou`` and up
    to ``max_det`` boxes of any score (torchvision's NMS is greedy by score, so filtering at
    ``conf`` and keeping the top ``max_det`` afterwards gives what the ``.pt`` gives)."""
    conf = 0.0
    import warnings

    import onnx
    import torch

    p = Path(weights)
    ck = read_checkpoint(p)
    size = int(imgsz or ck["imgsz"])
    model = from_checkpoint(ck)
    set_limits(model, size, conf, iou, max_det)
    dst = Path(out) if out is not None else p.with_suffix(".onnx")
    from data_prep.core.atomic import atomic_path

    with atomic_path(dst) as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")   # the tracer's notes on Python control flow in torchvision
        torch.onnx.export(_OneImage(model), (torch.zeros(1, 3, size, size),), str(tmp), opset_version=17,
                          dynamo=False, input_names=["images"], output_names=["boxes", "scores", "labels"])
        m = onnx.load(str(tmp))
        meta = {MARK: "tv", "arch": ck["arch"], "names": json.dumps({str(k): v for k, v in ck["names"].items()}),
                "imgsz": str(size), "conf": str(conf), "iou": str(iou), "max_det": str(max_det)}
        onnx.helper.set_model_props(m, meta)
        onnx.save(m, str(tmp))
    log.info("exported %s -> %s (tv:%s, imgsz %d)", p, dst, ck["arch"], size)
    return dst


class OnnxDetector:
    """A ``tv:`` ONNX (:func:`export_onnx`) behind ``YOLO.predict``'s signature: one image a run,
    resized to the ONNX's input size (the boxes scaled back), then ``conf`` and ``max_det``."""

    def __init__(self, path: str | os.PathLike, what: str = "weights"):
        import onnxruntime as ort

        p = Path(path)
        meta = onnx_meta(p)
        if meta.get(MARK) != "tv":
            raise InputError(f"{what} {p}", "not an ONNX exported from a tv: checkpoint by `cxrdet export`")
        self.sess = ort.InferenceSession(str(p), providers=["CPUExecutionProvider"])
        self.names = {int(k): v for k, v in json.loads(meta["names"]).items()}
        self.size, self.path, self.meta, self._said = int(meta["imgsz"]), str(p), meta, False
        self.overrides = {"imgsz": self.size}

    def predict(self, imgs, imgsz=None, conf=0.001, iou=0.5, max_det=300, device="cpu", verbose=False):
        import cv2
        import torch

        baked = (float(self.meta["iou"]), int(self.meta["max_det"]))
        if (float(iou) != baked[0] or int(max_det) > baked[1]) and not self._said:
            self._said = True
            log.warning("%s: exported with NMS IoU %g and at most %d boxes; asked for %g and %d (export again "
                        "to change them)", self.path, baked[0], baked[1], float(iou), int(max_det))
        out = []
        for im in imgs:
            h, w = im.shape[:2]
            x = to_tensor(cv2.resize(np.asarray(im), (self.size, self.size), interpolation=cv2.INTER_LINEAR))
            boxes, scores, labels = self.sess.run(None, {"images": x[None].numpy()})
            keep = scores >= conf
            b = boxes[keep].astype("float64") * np.array([w / self.size, h / self.size] * 2)
            out.append(_Result(torch.from_numpy(b[:max_det]), torch.from_numpy(scores[keep][:max_det]),
                               torch.from_numpy(labels[keep][:max_det].astype("int64") - 1)))
        return out
