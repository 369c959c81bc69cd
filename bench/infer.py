"""Benchmark: CPU detector inference, PyTorch ``.pt`` vs ONNX Runtime ``.onnx``, same weights, one run.

    .venv/bin/python bench/infer.py [--weights W.pt] [--imgsz 512] [--n 30] [--warmup 5] [--threads T]

Without ``--weights`` a yolo11n (1 channel, 14 classes, seeded initial weights) is built from
``yolo11n.yaml`` and saved in a temp dir: the speed of a network does not depend on what it
learned. The weights are exported to ONNX (static batch 1, ``imgsz``) in the temp dir with
``detection.engine.export.export_onnx``. Both models then predict the same ``n`` synthetic 512 px
grayscale images through ultralytics (``YOLO(...).predict``, batch 1: preprocess + inference + NMS),
after ``warmup`` calls each; the two are interleaved image by image (alternating which goes first)
so that load from other processes hits both alike. Reported: median ms and images/s per model and
the PyTorch / ONNX time ratio (= ONNX speed-up); target ONNX >= 2x as shipped (exit 1 below it).

Threads: ultralytics sets ``OMP_NUM_THREADS=1`` at import and ``torch.set_num_threads(cpu_count - 1)``
when it selects the CPU, while ONNX Runtime uses every physical core. The first row is that
as-shipped setting (what ``cxrdet predict`` gets); the next rows give both the same number of
threads (``--threads``, default 1 and all cores; the ONNX Runtime session is re-made with
``intra_op_num_threads``). On a machine shared with other jobs, more threads than free cores can
be much slower than one: read the rows together.
"""
from __future__ import annotations

import argparse
import logging
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import detection.models.runtime  # noqa: E402,F401  (offline before ultralytics)

TARGET = 2.0


def make_weights(path: Path, seed: int = 0) -> Path:
    """A 1-channel yolo11n with VinBigData's finding classes (14) and its initial (seeded) weights,
    saved like ultralytics."""
    import torch
    from ultralytics.nn.tasks import DetectionModel

    from data_prep.datasets import describe

    nc = len(describe("vinbigdata").classes)
    torch.manual_seed(seed)
    m = DetectionModel("yolo11n.yaml", nc=nc, ch=1, verbose=False)
    m.names = {i: f"class{i}" for i in range(nc)}
    torch.save({"model": m, "train_args": {"task": "detect"}}, path)
    return path


def images(n: int, size: int, seed: int = 0) -> list[np.ndarray]:
    """``n`` uint8 ``(size, size)`` chest-like images: smooth body + two dark lungs + noise."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size] / size
    out = []
    for _ in range(n):
        body = 0.8 - 1.5 * ((xx - 0.5) ** 2 + (yy - 0.55) ** 2)
        for cx in (0.3, 0.7):
            body -= 0.35 * np.exp(-(((xx - cx) / 0.13) ** 2 + ((yy - 0.45) / 0.25) ** 2))
        img = np.clip(body + rng.normal(0, 0.03, (size, size)), 0, 1)
        out.append((img * 255).astype(np.uint8))
    return out


INFER_MS: dict[int, list[float]] = {}  # id(model) -> ultralytics' own "inference" ms per call


def _time(model, img, imgsz: int) -> float:
    t = time.perf_counter()
    r = model.predict(img, imgsz=imgsz, conf=0.25, device="cpu", verbose=False)
    dt = time.perf_counter() - t
    INFER_MS.setdefault(id(model), []).append(r[0].speed["inference"])
    return dt


def _set_ort_threads(model, path: Path, threads: int) -> None:
    """Replace the ONNX Runtime session inside an ultralytics model (after its first predict) with
    one limited to ``threads`` intra-op threads (0 = ONNX Runtime's default, the physical cores)."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    model.predictor.model.backend.session = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


def _interleaved(m_pt, m_onnx, imgs, imgsz) -> tuple[list[float], list[float]]:
    """Seconds per image for both models, alternating which one goes first."""
    t_pt, t_onnx = [], []
    INFER_MS.clear()
    for i, img in enumerate(imgs):
        if i % 2:
            t_onnx.append(_time(m_onnx, img, imgsz))
            t_pt.append(_time(m_pt, img, imgsz))
        else:
            t_pt.append(_time(m_pt, img, imgsz))
            t_onnx.append(_time(m_onnx, img, imgsz))
    return t_pt, t_onnx, statistics.median(INFER_MS[id(m_pt)]), statistics.median(INFER_MS[id(m_onnx)])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--weights", default=None, help="local .pt (default: a seeded yolo11n from yolo11n.yaml)")
    ap.add_argument("--imgsz", type=int, default=512)
    ap.add_argument("--n", type=int, default=30, help="timed images per model and setting")
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--threads", type=int, nargs="*", default=sorted({1, os.cpu_count()}),
                    help="equal thread counts to compare at (besides the as-shipped defaults)")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)

    import torch
    from ultralytics import YOLO

    from detection.engine.export import export_onnx

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        pt = Path(args.weights) if args.weights else make_weights(Path(tmp) / "yolo11n_seed0.pt")
        t = time.perf_counter()
        onnx = export_onnx(pt, imgsz=args.imgsz, out=Path(tmp) / f"{pt.stem}_{args.imgsz}.onnx")
        t_export = time.perf_counter() - t
        m_pt, m_onnx = YOLO(str(pt)), YOLO(str(onnx), task="detect")
        imgs = images(args.n, args.imgsz)
        for i in range(args.warmup):  # also runs ultralytics' predictor setup (which sets torch threads)
            _time(m_pt, imgs[i % len(imgs)], args.imgsz)
            _time(m_onnx, imgs[i % len(imgs)], args.imgsz)
        shipped = torch.get_num_threads()
        rows.append((f"as shipped: torch {shipped} thread(s), onnxruntime default", *_interleaved(m_pt, m_onnx, imgs, args.imgsz)))
        for th in args.threads:
            torch.set_num_threads(th)
            _set_ort_threads(m_onnx, onnx, th)
            _time(m_onnx, imgs[0], args.imgsz)
            rows.append((f"equal threads: {th} each", *_interleaved(m_pt, m_onnx, imgs, args.imgsz)))
        torch.set_num_threads(shipped)

    print(f"CPU inference, ultralytics predict at {args.imgsz} px, batch 1, {args.n} images after {args.warmup} "
          f"warm-up ({os.cpu_count()} CPU cores; ONNX export {t_export:.1f} s)")
    print("(end-to-end ultralytics predict per image; 'net ms' = ultralytics' own inference-only time)")
    print(f"{'setting':<48} {'.pt ms':>7} {'img/s':>6} {'net ms':>7} | {'.onnx ms':>8} {'img/s':>6} {'net ms':>7} | "
          f"{'ratio':>6} {'net':>6}")
    for name, a, b, na, nb in rows:
        ma, mb = statistics.median(a), statistics.median(b)
        print(f"{name:<48} {ma * 1e3:>7.1f} {1 / ma:>6.2f} {na:>7.1f} | {mb * 1e3:>8.1f} {1 / mb:>6.2f} {nb:>7.1f} | "
              f"{ma / mb:>5.2f}x {na / nb:>5.2f}x")
    ratio = statistics.median(rows[0][1]) / statistics.median(rows[0][2])
    print(f"ONNX / PyTorch (median per image, as shipped): {ratio:.2f}x; target >= {TARGET:.1f}x")
    return 0 if ratio >= TARGET else 1


if __name__ == "__main__":
    raise SystemExit(main())
