"""Boxes over X-rays: single overlays, per-radiologist views and galleries (``cxrdet show``).

Every picture is drawn with matplotlib in the displayed image's own pixel frame: the image fills
its axes one data pixel per output pixel (so a test can look up a box edge by its coordinates), and
a legend panel sits to the right of it. Boxes arrive in ORIGINAL pixels (the box table) and are
mapped into the displayed frame with :func:`data_prep.boxes.to_frame`.

Conventions, the same in every picture:

* one fixed colour per class id (:func:`class_color`), across every picture and gallery;
* truth: solid lines; predictions: dashed, labelled ``class conf``; raw radiologist boxes (with
  ``--raters``): one line style per radiologist, thin, beside the fused truth box.

Images come from a folder holding ``<image_id>.png`` (the 512 px PNGs, sizes from a meta table) or
``<image_id>.dicom`` / ``.dcm`` (read with :func:`data_prep.dicom.read_dicom`, longest side
:data:`DICOM_DISPLAY` px, sizes from the header).
"""
from __future__ import annotations

import argparse
import logging
import os
import tempfile
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402
from matplotlib.patches import Rectangle  # noqa: E402

from data_prep.boxes import Frame, to_frame  # noqa: E402

log = logging.getLogger(__name__)

DICOM_DISPLAY = 1024          # longest side of a DICOM shown directly
LEGEND_PX = 220               # width of the legend panel right of the image
DPI = 100
RATER_STYLES = [(0, (1, 1)), (0, (4, 1, 1, 1)), (0, (6, 2)), (0, (2, 2, 6, 2)), (0, (1, 3))]
_PALETTE = [  # 15 well separated colours (tab20 darks + a few), class 14 = grey
    "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#bcbd22",
    "#17becf", "#aec7e8", "#ffbb78", "#98df8a", "#ff9896", "#c5b0d5", "#7f7f7f",
]


def class_color(class_id: int) -> str:
    """The fixed hex colour of a class id (cycled beyond 15 classes)."""
    return _PALETTE[int(class_id) % len(_PALETTE)]


def class_rgb(class_id: int) -> tuple[int, int, int]:
    """:func:`class_color` as an (R, G, B) uint8 triple."""
    h = class_color(class_id).lstrip("#")
    return tuple(int(h[i:i + 2], 16) for i in (0, 2, 4))


# ----------------------------------------------------------------------------- image sources
def find_image(source: str | os.PathLike, image_id: str) -> Path:
    """``source/<image_id>.png`` (preferred) or ``.dicom`` / ``.dcm`` / no extension."""
    src = Path(source)
    for ext in (".png", ".dicom", ".dcm", ""):
        p = src / f"{image_id}{ext}"
        if p.is_file():
            return p
    raise FileNotFoundError(f"image {image_id!r}: no {image_id}.png/.dicom/.dcm under {src}")


def load_display(image_id: str, source, images: pd.DataFrame | None = None) -> tuple[np.ndarray, Frame]:
    """The image to draw on (uint8 HxW) and the :class:`Frame` mapping original pixels into it.

    PNG: the original size comes from ``images`` (columns height, width); without it the PNG is
    taken to be the original. DICOM: the header gives the original size."""
    path = find_image(source, image_id)
    if path.suffix == ".png":
        import cv2

        img = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
        if img is None:
            raise ValueError(f"{path}: not a readable PNG")
        ph, pw = img.shape
        h, w = ph, pw
        if images is not None and image_id in set(images["image_id"]):
            row = images.loc[images["image_id"] == image_id].iloc[0]
            h, w = int(row["height"]), int(row["width"])
        return img, Frame(ph / h, pw / w, 0.0, 0.0, ph, pw)
    from data_prep.dicom import read_dicom

    img, hdr = read_dicom(path, size=DICOM_DISPLAY, keep_ratio=True)
    h, w = int(hdr["height"]), int(hdr["width"])
    return img, Frame(img.shape[0] / h, img.shape[1] / w, 0.0, 0.0, *img.shape)


# ----------------------------------------------------------------------------- drawing
def _draw(ax, boxes: pd.DataFrame, frame: Frame, linestyle, lw: float, label: bool, alpha=1.0):
    if boxes is None or boxes.empty:
        return
    xy = to_frame(boxes[["x_min", "y_min", "x_max", "y_max"]].to_numpy(), frame)
    for (x0, y0, x1, y1), cid, score in zip(xy, boxes["class_id"], boxes["score"]):
        ls = linestyle if not callable(linestyle) else linestyle()
        ax.add_patch(Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, edgecolor=class_color(cid),
                               linewidth=lw, linestyle=ls, antialiased=False, alpha=alpha))
        if label:
            ax.text(x0, max(y0 - 2, 0), f"{int(cid)} {score:.2f}", color="white", fontsize=7,
                    va="bottom", ha="left",
                    bbox=dict(facecolor=class_color(cid), edgecolor="none", pad=1, alpha=0.85))


def draw_on_axes(ax, img: np.ndarray, frame: Frame, truth=None, pred=None, raters=None,
                 title: str | None = None) -> set[int]:
    """Draw one image and its boxes on ``ax`` (data pixels = image pixels). Returns the class
    ids drawn (for the legend). ``raters``: raw per-radiologist boxes (column ``rater``)."""
    ax.imshow(img, cmap="gray", vmin=0, vmax=255, interpolation="nearest", aspect="auto",
              extent=(0, img.shape[1], img.shape[0], 0))
    ax.set_xlim(0, img.shape[1])
    ax.set_ylim(img.shape[0], 0)
    ax.set_axis_off()
    used: set[int] = set()
    if raters is not None and not raters.empty:
        for i, (_, grp) in enumerate(raters.groupby("rater", sort=True)):
            _draw(ax, grp, frame, RATER_STYLES[i % len(RATER_STYLES)], 1.2, False, alpha=0.9)
        used |= set(raters["class_id"].astype(int))
    if truth is not None and not truth.empty:
        _draw(ax, truth, frame, "-", 2.5, False)
        used |= set(truth["class_id"].astype(int))
    if pred is not None and not pred.empty:
        _draw(ax, pred, frame, (0, (5, 3)), 2.0, True)
        used |= set(pred["class_id"].astype(int))
    if title:
        ax.set_title(title, fontsize=8)
    return used


def _legend_handles(used: set[int], class_names: dict[int, str], raters: list[str] | None):
    h = [Line2D([], [], color=class_color(c), lw=3, label=f"{c} {class_names.get(c, '')}".strip())
         for c in sorted(used)]
    h += [Line2D([], [], color="black", lw=2, ls="-", label="truth (solid)"),
          Line2D([], [], color="black", lw=2, ls=(0, (5, 3)), label="prediction (dashed)")]
    for i, r in enumerate(raters or []):
        h.append(Line2D([], [], color="black", lw=1.2, ls=RATER_STYLES[i % len(RATER_STYLES)],
                        label=f"radiologist {r}"))
    return h


def _save(fig, out: Path) -> Path:
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(suffix=".png", dir=out.parent)
    os.close(fd)
    try:
        fig.savefig(tmp, dpi=DPI)
        os.replace(tmp, out)
    finally:
        plt.close(fig)
        if os.path.exists(tmp):
            os.unlink(tmp)
    return out


def render_image(image_id: str, source, out, images=None, truth=None, pred=None, raters=None,
                 class_names: dict[int, str] | None = None) -> Path:
    """One PNG: the image at its own resolution, boxes, and a legend panel on the right.

    The image occupies output pixels ``[0, W) x [0, H)`` exactly, so a box edge at displayed
    x lands in output column x."""
    img, frame = load_display(image_id, source, images)
    sel = lambda t: None if t is None else t[t["image_id"] == image_id]  # noqa: E731
    t, p, r = sel(truth), sel(pred), sel(raters)
    h, w = img.shape
    fig = plt.figure(figsize=((w + LEGEND_PX) / DPI, h / DPI), dpi=DPI)
    ax = fig.add_axes((0, 0, w / (w + LEGEND_PX), 1))
    used = draw_on_axes(ax, img, frame, t, p, r)
    lax = fig.add_axes((w / (w + LEGEND_PX), 0, LEGEND_PX / (w + LEGEND_PX), 1))
    lax.set_axis_off()
    rater_ids = sorted(r["rater"].unique()) if r is not None and not r.empty else None
    lax.legend(handles=_legend_handles(used, class_names or {}, rater_ids), loc="upper left",
               fontsize=7, frameon=False, title=image_id[:20], title_fontsize=7)
    return _save(fig, Path(out))


def render_gallery(image_ids: list[str], source, out, images=None, truth=None, pred=None,
                   class_names: dict[int, str] | None = None, captions: dict[str, str] | None = None,
                   tile: int = 320, title: str | None = None) -> Path:
    """N images on one grid PNG (about ``tile`` px per image), one legend for the whole grid."""
    n = len(image_ids)
    if n == 0:
        raise ValueError("gallery: no images to show")
    cols = int(np.ceil(np.sqrt(n)))
    rows = int(np.ceil(n / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(cols * tile / DPI + 2.2, rows * (tile + 24) / DPI),
                             dpi=DPI, squeeze=False)
    used: set[int] = set()
    for ax, iid in zip(axes.ravel(), image_ids):
        img, frame = load_display(iid, source, images)
        sel = lambda t: None if t is None else t[t["image_id"] == iid]  # noqa: E731
        cap = (captions or {}).get(iid, iid[:16])
        used |= draw_on_axes(ax, img, frame, sel(truth), sel(pred), None, title=cap)
    for ax in axes.ravel()[n:]:
        ax.set_axis_off()
    fig.subplots_adjust(left=0.01, right=1 - 2.2 / fig.get_figwidth(), top=0.95 if title else 0.98,
                        bottom=0.01, wspace=0.05, hspace=0.15)
    fig.legend(handles=_legend_handles(used, class_names or {}, None), loc="upper right",
               fontsize=7, frameon=False)
    if title:
        fig.suptitle(title, fontsize=10)
    return _save(fig, Path(out))


# ----------------------------------------------------------------------------- galleries
def pick_gallery(kind: str, images: pd.DataFrame, truth: pd.DataFrame | None, pred: pd.DataFrame | None,
                 n: int = 16, seed: int = 0, iou_thr: float = 0.4, conf: float = 0.3,
                 class_names: dict[int, str] | None = None) -> tuple[list[str], dict[str, str]]:
    """Choose the gallery's image ids and a caption for each.

    ``worst`` / ``best``: images ranked by what they cost the metric (see
    :func:`detection.metrics.image_costs`: missed truth boxes and false positives weighted by
    confidence); ``random``: a seeded sample; ``class=<name>``: images whose truth (or, without
    truth, predictions) hold that class, most boxes first."""
    ids = list(images["image_id"])
    if kind in ("worst", "best"):
        if truth is None or pred is None:
            raise ValueError(f"gallery {kind!r} needs both --truth and --pred")
        from detection.metrics import image_costs

        costs = image_costs(truth, pred[pred["score"] >= 0] if pred is not None else pred, ids, iou_thr=iou_thr)
        costs = costs.sort_values(["cost", "image_id"], ascending=[kind == "best", True], kind="stable")
        sel = costs.head(n)
        caps = {r.image_id: f"{r.image_id[:10]} cost {r.cost:.2f} (fn {int(r.n_fn)}, fp {int(r.n_fp)})"
                for r in sel.itertuples()}
        return list(sel["image_id"]), caps
    if kind == "random":
        rng = np.random.default_rng(seed)
        pick = list(rng.choice(ids, size=min(n, len(ids)), replace=False))
        return pick, {}
    if kind.startswith("class="):
        name = kind.split("=", 1)[1]
        src = truth if truth is not None else pred
        if src is None:
            raise ValueError("gallery class=<name> needs --truth or --pred")
        names = class_names or {}
        match = [c for c, nm in names.items() if nm == name] or ([int(name)] if name.isdigit() else [])
        if not match:
            raise ValueError(f"gallery class={name!r}: unknown class; expected one of {sorted(names.values())}")
        counts = src[src["class_id"].isin(match)].groupby("image_id").size().sort_values(ascending=False, kind="stable")
        return list(counts.index[:n]), {i: f"{i[:12]} {name} x{c}" for i, c in counts.head(n).items()}
    raise ValueError(f"gallery {kind!r}: expected worst, best, random or class=<name>")


# ----------------------------------------------------------------------------- CLI
def add_arguments_show(p: argparse.ArgumentParser) -> None:
    p.add_argument("--image", action="append", default=[], metavar="ID", help="image id (repeatable)")
    p.add_argument("--gallery", help="worst | best | random | class=<name>: N images on one grid PNG")
    p.add_argument("--n", type=int, default=16, help="gallery size")
    p.add_argument("--source", required=True, help="folder of <id>.png or <id>.dicom/.dcm")
    p.add_argument("--meta", help="image sizes (meta.csv image_id,height,width or image_id,dim0,dim1)")
    p.add_argument("--truth", help="truth: competition labels (train.csv / fused.csv / RSNA labels) or a box table")
    p.add_argument("--pred", help="predictions: a box table CSV or a submission CSV")
    p.add_argument("--raters", action="store_true", help="draw each radiologist's raw boxes beside the fused truth")
    p.add_argument("--conf", type=float, default=0.3, help="hide predictions below this confidence")
    p.add_argument("--seed", type=int, default=0, help="seed of the random gallery")
    p.add_argument("--out", required=True, help="output folder")


def load_tables(truth_path=None, pred_path=None, meta=None, want_raters: bool = False):
    """(images, truth, raw rater boxes, predictions, class names) from the files a user has.

    Truth and predictions are read by :mod:`detection.evaluate` (competition labels, fused.csv,
    RSNA labels, box tables, submissions); a raw VinBigData train.csv is fused there. ``raw``
    holds the per-radiologist boxes when ``want_raters`` and the truth file has them."""
    from detection.evaluate import load_pred, load_truth
    from data_prep.datasets.common import read_meta

    images = truth = raw = pred = None
    if truth_path:
        images, truth, _ = load_truth(truth_path, meta)
        if want_raters:
            cols = set(pd.read_csv(truth_path, nrows=0).columns)
            if "rad_id" not in cols:
                raise ValueError(f"--raters: {truth_path} has no rad_id column; give the raw train.csv")
            from data_prep.datasets import vinbigdata

            raw = vinbigdata.load(truth_path, meta)[1]
    elif meta:
        images = read_meta(meta, str(meta))
    if pred_path:
        pred = load_pred(pred_path)
    names: dict[int, str] = {}
    for t in (truth, pred):
        if t is not None and len(t):
            names.update(dict(zip(t["class_id"].astype(int), t["class_name"].astype(str))))
    return images, truth, raw, pred, names


def run_show(args) -> int:
    images, truth, raw, pred, names = load_tables(args.truth, args.pred, args.meta, want_raters=args.raters)
    if images is None:
        ids = [p.stem for p in sorted(Path(args.source).iterdir()) if p.suffix in (".png", ".dicom", ".dcm")]
        images = pd.DataFrame({"image_id": ids})
    if pred is not None:
        pred = pred[(pred["score"] >= args.conf) & (pred["class_id"] != 14)]
    out = Path(args.out)
    written = []
    if args.gallery:
        ids, caps = pick_gallery(args.gallery, images, truth, pred, n=args.n, seed=args.seed, class_names=names)
        name = args.gallery.replace("=", "_").replace("/", "_")
        written.append(render_gallery(ids, args.source, out / f"gallery_{name}.png", images, truth, pred,
                                      names, caps, title=f"{args.gallery} {len(ids)} images"))
    failed = []
    for iid in args.image:
        try:
            written.append(render_image(iid, args.source, out / f"{iid}.png", images, truth, pred,
                                        raw if args.raters else None, names))
        except (FileNotFoundError, ValueError) as e:
            failed.append(f"{iid}: {e}")
    if not args.image and not args.gallery:
        raise ValueError("nothing to show: give --image ID (repeatable) and/or --gallery KIND")
    for w in written:
        print(w)
    for f in failed:
        log.error(f)
    if failed:
        print(f"{len(failed)} of {len(args.image)} images failed")
    return 1 if failed else 0
