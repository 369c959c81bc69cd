"""``cxrdet classify --weights C.pt --source DIR [--meta M] [--onnx] --out probs.csv``.

Runs a multi-label checkpoint (:mod:`detection.engine.classifier`) over a folder of PNGs or DICOMs and
writes the **probabilities table**: ``image_id`` + one column per label + ``abnormal`` (sigmoid
outputs in [0, 1]), the table ``cxrdet evaluate-cls`` scores and ``cxrdet predict --classifier``
fuses into box scores. Images are listed and read by the detector's own readers
(:func:`detection.engine.sources.list_source` / :func:`detection.engine.sources.load_image`: DICOMs are
converted in memory at config ``size``/``keep_ratio`` like ``cxrdet convert``), then made
grayscale and resized to the checkpoint's ``imgsz``. Unreadable images are skipped, listed at the
end, and the exit status is 1.

ONNX: :func:`export_onnx` writes the model with a dynamic batch axis, input ``image``
``(N, 1, imgsz, imgsz)`` float32, output ``probs`` ``(N, L)`` (sigmoid included), and the label
names / imgsz / normalisation in the ONNX metadata (``cxrdet`` key, JSON). ``--onnx`` exports a
``.pt`` first (cached beside it as ``<stem>_<imgsz>.onnx``) and runs it with ONNX Runtime;
a ``.onnx`` passed as ``--weights`` runs as it is. ``cxrdet export C.pt`` exports too.
"""
from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm import tqdm

from data_prep.core.atomic import atomic_path, write_csv
from data_prep.core.resources import export_destination
from detection.models import safe_load
from detection.engine.classifier import (FORMAT, is_multilabel, load_checkpoint, model_from_checkpoint,
                                         preprocess)
from detection.engine.settings import PredictSettings

log = logging.getLogger(__name__)


# ----------------------------------------------------------------------------- runners
class TorchRunner:
    """A checkpoint on CPU/GPU: ``probs(batch (N, 1, S, S) float32) -> (N, L)``."""

    def __init__(self, path, device: str = "cpu"):
        import torch

        ck = load_checkpoint(path)
        self.labels, self.imgsz = list(ck["labels"]), int(ck["imgsz"])
        self.mean, self.std = float(ck.get("mean", 0.5)), float(ck.get("std", 0.25))
        d = str(device).split(",")[0].strip()
        self.device = torch.device("cpu" if d in ("cpu", "") else f"cuda:{d}" if d.isdigit() else d)
        self.model = model_from_checkpoint(ck).to(self.device)
        self.path = str(path)

    def probs(self, x: np.ndarray) -> np.ndarray:
        import torch

        with torch.no_grad():
            return torch.sigmoid(self.model(torch.from_numpy(x).to(self.device))).float().cpu().numpy()


class OnnxRunner:
    """An exported ``.onnx`` under ONNX Runtime (CPU)."""

    def __init__(self, path):
        import onnxruntime as ort

        from data_prep.core.errors import InputError

        kind = "an ONNX written by `cxrdet export` from a multi-label checkpoint"
        if Path(path).stat().st_size == 0:
            raise InputError(f"weights {path}", f"empty file (0 bytes); expected {kind}")
        try:
            self.sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        except Exception as e:  # onnxruntime raises its own InvalidProtobuf / Fail / RuntimeException kinds
            why = " ".join(str(e).split())[:160] or type(e).__name__
            raise InputError(f"weights {path}", f"not a loadable ONNX model ({type(e).__name__}: {why}); "
                             f"expected {kind}") from e
        meta = self.sess.get_modelmeta().custom_metadata_map
        if "cxrdet" not in meta:
            raise InputError(f"weights {path}", f"no 'cxrdet' metadata; expected {kind}")
        try:
            m = json.loads(meta["cxrdet"])
            self.labels, self.imgsz, self.mean, self.std = list(m["labels"]), int(m["imgsz"]), m["mean"], m["std"]
        except (ValueError, KeyError, TypeError) as e:
            raise InputError(f"weights {path}", f"its 'cxrdet' metadata is not usable ({type(e).__name__}: {e}); "
                             f"expected {kind} (labels, imgsz, mean, std)") from e
        self.name = self.sess.get_inputs()[0].name
        self.path = str(path)

    def probs(self, x: np.ndarray) -> np.ndarray:
        return self.sess.run(None, {self.name: x.astype(np.float32)})[0]


def export_onnx(weights, out=None, opset: int = 17) -> Path:
    """Export a multi-label checkpoint to ONNX (dynamic batch); return the ``.onnx`` path
    (default ``<stem>_<imgsz>.onnx`` beside the weights), written through data_prep.core.atomic."""
    import torch

    ck = load_checkpoint(weights)
    model = model_from_checkpoint(ck)
    s = int(ck["imgsz"])
    dst = Path(out) if out else export_destination(Path(weights), f"{Path(weights).stem}_{s}.onnx")

    class WithSigmoid(torch.nn.Module):
        def __init__(self, m):
            super().__init__()
            self.m = m

        def forward(self, x):
            return torch.sigmoid(self.m(x))

    import onnx

    with atomic_path(dst) as tmp:
        torch.onnx.export(WithSigmoid(model).eval(), torch.zeros(1, int(ck.get("in_chans", 1)), s, s), str(tmp),
                          input_names=["image"], output_names=["probs"], opset_version=opset,
                          dynamic_axes={"image": {0: "batch"}, "probs": {0: "batch"}}, dynamo=False)
        m = onnx.load(str(tmp))
        info = {"format": FORMAT, "labels": list(ck["labels"]), "imgsz": s, "arch": ck["arch"],
                "mean": float(ck.get("mean", 0.5)), "std": float(ck.get("std", 0.25))}
        entry = m.metadata_props.add()
        entry.key, entry.value = "cxrdet", json.dumps(info)
        onnx.save(m, str(tmp))
    log.info("exported %s -> %s (imgsz %d, labels %s)", weights, dst, s, ck["labels"])
    return dst


def load_runner(weights, onnx: bool = False, device: str = "cpu"):
    """A runner for a ``.pt`` checkpoint (``onnx=True``: exported, cached, run by ONNX Runtime) or ``.onnx``."""
    p = Path(weights)
    if not p.is_file():
        raise FileNotFoundError(f"weights {p}: no such file")
    if p.suffix == ".onnx":
        return OnnxRunner(p)
    if onnx:
        s = int(load_checkpoint(p)["imgsz"])
        from data_prep.core.resources import beside_or_cache

        cached = beside_or_cache(p, f"{p.stem}_{s}.onnx")   # shipped weights: the user cache, not the package
        if not cached.is_file() or cached.stat().st_mtime < p.stat().st_mtime:
            export_onnx(p, cached)
        return OnnxRunner(cached)
    return TorchRunner(p, device)


# ----------------------------------------------------------------------------- classify
def classify_images(runner, imgs: list[np.ndarray]) -> np.ndarray:
    """``(N, L)`` probabilities for uint8 images (any size, gray or BGR)."""
    if not imgs:
        return np.zeros((0, len(runner.labels)), np.float32)
    x = np.stack([preprocess(im, runner.imgsz, runner.mean, runner.std) for im in imgs])
    return runner.probs(x)


def probs_table(ids: list[str], p: np.ndarray, labels: list[str]) -> pd.DataFrame:
    t = pd.DataFrame(np.asarray(p, dtype="float64").reshape(len(ids), len(labels)), columns=labels)
    t.insert(0, "image_id", [str(i) for i in ids])
    return t


def classify(weights, source, meta=None, settings: PredictSettings | dict | None = None, *, onnx: bool = False,
             errors: list[str] | None = None, **changes) -> pd.DataFrame:
    """Probabilities table for every image of ``source`` (PNG or DICOM folder). ``settings``: the
    prediction settings (:class:`detection.engine.settings.PredictSettings`, a merged config dict or
    None: the defaults; keyword ``changes`` override single fields): ``batch`` (<= 0: 16),
    ``device``, and DICOMs rendered as predict and convert render them (``size``, ``keep_ratio``,
    ``voi``: :class:`data_prep.dicom.voi.VoiOptions`, the config's ``voi``/``window_index``/
    ``stretch``/``padding``; None: their defaults)."""
    from detection.engine.sources import list_source, load_image
    from detection.models.devices import resolve_device

    st = PredictSettings.of(settings, **changes)
    batch = int(st.batch) if int(st.batch) > 0 else 16
    size, keep_ratio, voi, device = st.size, st.keep_ratio, st.voi, resolve_device(st.device)
    runner = load_runner(weights, onnx, device)
    rows = list_source(source, meta)
    errs: list[str] = [] if errors is None else errors
    ids, parts = [], []
    t0 = time.perf_counter()
    for s in tqdm(range(0, len(rows), batch), desc="classify", unit="batch"):
        imgs = []
        for r in rows.iloc[s:s + batch].itertuples():
            try:
                imgs.append(load_image(r, size, keep_ratio, voi)[0])
                ids.append(r.image_id)
            except (ValueError, OSError) as e:
                errs.append(f"{r.path}: {e}")
        parts.append(classify_images(runner, imgs))
    out = probs_table(ids, np.concatenate(parts) if parts else np.zeros((0, len(runner.labels))), runner.labels)
    dt = time.perf_counter() - t0
    log.info("classified %d image(s) in %.1f s (%.1f img/s) with %s", len(out), dt, len(out) / max(dt, 1e-9),
             runner.path)
    if errs:
        log.warning("%d image(s) could not be read and were skipped:\n  %s", len(errs), "\n  ".join(errs))
    return out


# ----------------------------------------------------------------------------- CLI
def add_arguments_classify(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", default=None, help="config (path or name) for size/keep_ratio/batch/device and the "
                   "DICOM rendering (voi/window_index/stretch/padding, as predict)")
    p.add_argument("--weights", required=True, help="multi-label checkpoint (.pt from train-cls "
                   "cls_task=multilabel) or its .onnx")
    p.add_argument("--source", required=True, help="folder of PNGs or DICOMs")
    p.add_argument("--meta", default=None, help="original sizes for PNGs (not needed for probabilities; checked)")
    p.add_argument("--onnx", action="store_true", help="export .pt to ONNX (cached beside it) and run that")
    p.add_argument("--out", required=True, help="probabilities CSV: image_id + one column per label + abnormal")


def run_classify(args: argparse.Namespace) -> int:
    from data_prep.core.config import load_config

    cfg = load_config(args.config, args.overrides or [])
    safe_load.configure(cfg)   # trust_weights: what a model file may run on load
    settings = PredictSettings.from_config(cfg)   # the DICOM rendering predict uses, checked before any image
    errors: list[str] = []
    t = classify(args.weights, args.source, args.meta, settings, onnx=args.onnx, errors=errors)
    write_csv(t, args.out)
    print(f"{args.out}: {len(t)} image(s), {len(t.columns) - 1} probabilities each; {len(errors)} unreadable")
    return 1 if errors else 0


__all__ = ["classify", "classify_images", "export_onnx", "is_multilabel", "load_runner", "probs_table"]
