"""Benchmark: CPU multi-label classifier throughput, PyTorch checkpoint vs ONNX Runtime, one run.

    .venv/bin/python bench/classify.py [--weights weights/vinbig_phantom_multilabel.pt] [--n 64]
                                       [--batch 16] [--warmup 2] [--threads 1]

The shipped checkpoint (or ``--weights``) is exported to ONNX in a temp dir with
``detection.engine.classify.export_onnx`` and both run the same ``n`` synthetic 512 px grayscale images
at the checkpoint's own input size, through ``detection.engine.classify.classify_images`` (preprocess:
grayscale + resize + scale, then the network + sigmoid), in batches of ``batch``. The two are
interleaved batch by batch (alternating which goes first) so that load from other processes hits
both alike; both get the same number of threads (torch ``set_num_threads`` and ONNX Runtime
``intra_op_num_threads``). Reported: images/s of each and the ONNX / PyTorch speed ratio, and the
largest probability difference between the two (they must agree to 1e-4).
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from detection.engine.classify import OnnxRunner, TorchRunner, classify_images, export_onnx  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--weights", default=str(REPO / "weights" / "vinbig_phantom_multilabel.pt"))
    ap.add_argument("--n", type=int, default=64)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--threads", type=int, default=1)
    a = ap.parse_args(argv)

    import onnxruntime as ort
    import torch

    torch.set_num_threads(a.threads)
    rng = np.random.default_rng(0)
    imgs = [rng.integers(0, 256, (512, 512), dtype=np.uint8) for _ in range(a.n)]
    batches = [imgs[s:s + a.batch] for s in range(0, a.n, a.batch)]
    with tempfile.TemporaryDirectory() as tmp:
        pt = TorchRunner(a.weights)
        onnx_path = export_onnx(a.weights, Path(tmp) / "m.onnx")
        ox = OnnxRunner(onnx_path)
        so = ort.SessionOptions()
        so.intra_op_num_threads = a.threads
        so.inter_op_num_threads = 1
        ox.sess = ort.InferenceSession(str(onnx_path), so, providers=["CPUExecutionProvider"])
        for _ in range(a.warmup):
            classify_images(pt, batches[0])
            classify_images(ox, batches[0])
        times = {"torch": [], "onnx": []}
        diff = 0.0
        for i, b in enumerate(batches):
            order = (("torch", pt), ("onnx", ox)) if i % 2 == 0 else (("onnx", ox), ("torch", pt))
            out = {}
            for name, r in order:
                t0 = time.perf_counter()
                out[name] = classify_images(r, b)
                times[name].append((time.perf_counter() - t0) / len(b))
            diff = max(diff, float(np.abs(out["torch"] - out["onnx"]).max()))
    ips = {k: 1.0 / statistics.median(v) for k, v in times.items()}
    print(f"multi-label classifier {Path(a.weights).name}: {pt.labels.__len__()} outputs, input {pt.imgsz} px "
          f"(1 channel), {a.n} images of 512 px in batches of {a.batch}, {a.threads} thread(s), load "
          f"{os.getloadavg()[0]:.1f}")
    print(f"  torch (.pt)   {ips['torch']:8.1f} images/s")
    print(f"  ONNX Runtime  {ips['onnx']:8.1f} images/s")
    print(f"  ONNX / torch  {ips['onnx'] / ips['torch']:8.2f}x   (max |p_torch - p_onnx| = {diff:.1e})")
    return 0 if diff < 1e-4 else 1


if __name__ == "__main__":
    raise SystemExit(main())
