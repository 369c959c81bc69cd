"""Boxes over X-rays: single overlays, per-radiologist views and galleries (``cxrdet show``).

Every picture is drawn with matplotlib in the displayed image's own pixel frame. In a single
overlay (:func:`render_image`) the image is drawn as RGB, unresampled, at output pixels
``[0, W) x [0, H)`` (so a box edge at displayed x lands in output column x, and the grey levels
are the image's own), with a legend panel to the right of it. Boxes arrive in ORIGINAL pixels
(the box table) and are mapped into the displayed frame with :func:`data_prep.core.boxes.to_frame`.

The boxes, labels and legend entries are drawn by :mod:`detection.pictures.draw` (the conventions every
picture shares: class colours, solid truth, dashed predictions, labels that never overlap, one dash
pattern per radiologist with ``--raters``); this module loads the images, lays out single overlays
and galleries, writes the PNGs, picks the gallery images and is the ``show`` stage.

Images come from a folder holding ``<image_id>.png`` (the 512 px PNGs; original sizes from an
image table / meta.csv) or ``<image_id>.dicom`` / ``.dcm`` (read with
:func:`data_prep.dicom.read.read_dicom`, longest side at most :data:`DICOM_DISPLAY` px, original
sizes from the header).
"""
from __future__ import annotations

import argparse
import logging
import os
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from data_prep.core.atomic import atomic_path, check_not_input, safe_name  # noqa: E402
from data_prep.core.boxes import Frame, frame_between  # noqa: E402
from data_prep.core.config import add_config_arguments, retired_flag, held_out_fold, stage_config  # noqa: E402
from data_prep.datasets import DEFAULT_DATASET, Dataset, describe  # noqa: E402
from data_prep.dicom.palette import PALETTE, class_color, class_rgb, text_color  # noqa: E402,F401  (old home, kept for callers)
from detection.pictures.draw import DPI, FONT, legend_handles, legend_px, short_name, draw_on_axes, names_dict  # noqa: E402

log = logging.getLogger(__name__)

DICOM_DISPLAY = 1024          # longest side of a DICOM shown directly (never upscaled)
LEGEND_PX = 240               # width of the legend panel right of the image
IMAGE_EXTS = (".png", ".dicom", ".dcm")


# ----------------------------------------------------------------------------- image sources
def find_image(source: str | os.PathLike, image_id: str) -> Path:
    """``source/<image_id>.png`` (preferred) or ``.dicom`` / ``.dcm`` / no extension."""
    src = Path(source)
    if any(c in str(image_id) for c in "/\\") or str(image_id) in (".", ".."):
        raise ValueError(f"image {image_id!r}: an image id is a file name under {src}, not a path; "
                         "expected the id alone (no '/', '\\' or '..')")
    for ext in IMAGE_EXTS + ("",):
        p = src / f"{image_id}{ext}"
        if p.is_file():
            return p
    raise FileNotFoundError(f"image {image_id!r}: no {image_id}.png/.dicom/.dcm under {src}")


def source_ids(source: str | os.PathLike) -> list[str]:
    """Image ids of the ``.png`` / ``.dicom`` / ``.dcm`` files directly under ``source`` (sorted)."""
    return sorted({p.stem for p in Path(source).iterdir() if p.suffix.lower() in IMAGE_EXTS})


def _original_size(images: pd.DataFrame | None, image_id: str) -> tuple[int, int] | None:
    if images is None or not {"height", "width"} <= set(images.columns):
        return None
    row = images.loc[images["image_id"].astype(str) == image_id]
    if row.empty:
        return None
    h, w = row.iloc[0][["height", "width"]]
    if pd.isna(h) or pd.isna(w) or h <= 0 or w <= 0:
        return None
    return int(h), int(w)


def load_display(image_id: str, source, images: pd.DataFrame | None = None,
                 voi_options=None) -> tuple[np.ndarray, Frame]:
    """The image to draw on (uint8 ``(h, w)``) and the :class:`Frame` mapping original pixels into it.

    PNG: the original ``(height, width)`` comes from ``images`` (image table or meta.csv rows);
    where it is unknown the PNG is taken to be the original (a warning says so). DICOM: the
    header gives the original size; the image is shown with its longest side
    ``min(DICOM_DISPLAY, original)``, aspect ratio kept."""
    path = find_image(source, image_id)
    if path.suffix.lower() == ".png":
        import cv2

        img = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
        if img is None:
            raise ValueError(f"{path}: not a readable PNG")
        ph, pw = img.shape
        hw = _original_size(images, image_id)
        if hw is None:
            log.warning("image %s: original size unknown (no meta row with height,width); boxes drawn as if "
                        "the PNG %dx%d were the original", image_id, ph, pw)
            hw = (ph, pw)
        return img, frame_between(hw[0], hw[1], ph, pw)
    import pydicom

    from data_prep.dicom.read import DicomReadError, read_dicom

    try:
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        longest = max(int(ds.Rows), int(ds.Columns))
    except Exception as e:  # read_dicom below names the problem precisely
        log.debug("%s: header read failed (%s)", path, e)
        longest = DICOM_DISPLAY
    try:
        img, hdr = read_dicom(path, size=min(DICOM_DISPLAY, longest), keep_ratio=True, options=voi_options)
    except DicomReadError as e:
        raise ValueError(str(e)) from e
    h, w = int(hdr["height"]), int(hdr["width"])
    return img, frame_between(h, w, img.shape[0], img.shape[1])


def _save(fig, out: Path) -> Path:
    try:
        with atomic_path(out) as tmp:
            fig.savefig(tmp, format="png", dpi=DPI, facecolor="white")
    finally:
        plt.close(fig)
    return out


def _rows(t: pd.DataFrame | None, image_id: str) -> pd.DataFrame | None:
    return None if t is None else t[t["image_id"].astype(str) == image_id]


def render_image(image_id: str, source, out, images=None, truth=None, pred=None, raters=None,
                 class_names: dict[int, str] | None = None, voi_options=None) -> Path:
    """One PNG: the image at its displayed resolution, its boxes, a legend panel on the right.

    The image occupies output pixels ``[0, W) x [0, H)`` exactly (RGB grey, unresampled), so a
    box edge at displayed x lands in output column x; the legend is the ``LEGEND_PX`` columns
    right of it, and the canvas grows below the image (white) when the legend is taller.
    ``truth``/``pred``/``raters``: box tables (ORIGINAL pixels; rows of other images ignored);
    callers filter predictions by confidence. ``voi_options``: how DICOMs are rendered
    (:class:`data_prep.dicom.voi.VoiOptions`). Returns ``out`` (written atomically)."""
    img, frame = load_display(image_id, source, images, voi_options)
    t, p, r = _rows(truth, image_id), _rows(pred, image_id), _rows(raters, image_id)
    names = names_dict(class_names)
    for tab in (t, p, r):
        if tab is not None and len(tab):
            for c, n in zip(tab["class_id"].astype(int), tab["class_name"].astype(str)):
                names.setdefault(c, n)
    h, w = img.shape
    fig_w = w + LEGEND_PX
    fig = plt.figure(figsize=(fig_w / DPI, 1), dpi=DPI)
    ax = fig.add_axes((0, 0, 1, 1))  # placed below, once the figure height is known
    used, rater_ids = draw_on_axes(ax, img, frame, t, p, r, class_names=names)
    handles = legend_handles(used, names, rater_ids, has_pred=pred is not None)
    fig_h = max(h, legend_px(len(handles)))
    fig.set_size_inches(fig_w / DPI, fig_h / DPI)
    ax.set_position((0, 1 - h / fig_h, w / fig_w, h / fig_h))
    lax = fig.add_axes((w / fig_w, 0, LEGEND_PX / fig_w, 1))
    lax.set_axis_off()
    title = image_id if len(image_id) <= 24 else f"{image_id[:24]}\n{image_id[24:48]}"
    lax.legend(handles=handles, loc="upper left", fontsize=FONT, frameon=False, title=title,
               title_fontsize=FONT, alignment="left", handlelength=2.6, borderaxespad=0.6)
    return _save(fig, Path(out))


def render_gallery(image_ids: list[str], source, out, images=None, truth=None, pred=None,
                   class_names: dict[int, str] | None = None, captions: dict[str, str] | None = None,
                   tile: int = 320, title: str | None = None, voi_options=None) -> Path:
    """N images on one grid PNG (``tile`` px per image, a caption above each), one legend for
    the whole grid in a panel on the right. Images keep their aspect ratio."""
    n = len(image_ids)
    if n == 0:
        raise ValueError("gallery: no images to show")
    cols = int(np.ceil(np.sqrt(n)))
    rows = int(np.ceil(n / cols))
    cap_px, title_px, gap = 20, (34 if title else 6), 8
    fig_w = cols * (tile + gap) + gap + LEGEND_PX
    fig_h = rows * (tile + cap_px + gap) + title_px
    fig = plt.figure(figsize=(fig_w / DPI, fig_h / DPI), dpi=DPI)
    used: set[int] = set()
    names = names_dict(class_names)
    for k, iid in enumerate(image_ids):
        r, c = divmod(k, cols)
        x0 = gap + c * (tile + gap)
        y_top = title_px + r * (tile + cap_px + gap) + cap_px
        ax = fig.add_axes((x0 / fig_w, 1 - (y_top + tile) / fig_h, tile / fig_w, tile / fig_h))
        img, frame = load_display(iid, source, images, voi_options)
        t, p = _rows(truth, iid), _rows(pred, iid)
        for tab in (t, p):
            if tab is not None and len(tab):
                for ci, nm in zip(tab["class_id"].astype(int), tab["class_name"].astype(str)):
                    names.setdefault(ci, nm)
        cap = (captions or {}).get(iid) or (f"{iid[:12]}  truth {0 if t is None else len(t)}"
                                             + ("" if p is None else f", pred {len(p)}"))
        u, _ = draw_on_axes(ax, img, frame, t, p, None, title=cap, class_names=names, exact=False,
                            fontsize=7, px=tile)
        used |= u
    lax = fig.add_axes(((fig_w - LEGEND_PX) / fig_w, 0, LEGEND_PX / fig_w, 1 - title_px / fig_h))
    lax.set_axis_off()
    lax.legend(handles=legend_handles(used, names, None, has_pred=pred is not None), loc="upper left",
               fontsize=FONT, frameon=False, handlelength=2.6)
    if title:
        fig.suptitle(title, fontsize=11, y=1 - 8 / fig_h, va="top")
    return _save(fig, Path(out))


# ----------------------------------------------------------------------------- galleries
def pick_gallery(kind: str, images: pd.DataFrame, truth: pd.DataFrame | None, pred: pd.DataFrame | None,
                 n: int = 16, seed: int = 0, iou_thr: float = 0.4, conf: float = 0.3,
                 class_names: dict[int, str] | None = None, *, metric: str | None = None,
                 normal_class: int | None = None) -> tuple[list[str], dict[str, str]]:
    """Choose the gallery's image ids (from ``images``) and a caption for each.

    ``worst`` / ``best``: images ranked by what they cost ``metric``
    (:func:`detection.evaluation.image_metrics.image_costs` on predictions scored >= ``conf``, the explorer's
    and report-eval's cost too); worst = highest cost first (only images that cost anything: fewer
    than ``n`` is logged with the reason), best = zero-cost images with the most true positives first. ``random``: a seeded sample. ``class=<name>``
    (or ``class=<id>``): images whose truth (or, without truth, predictions) hold that class,
    most boxes first."""
    ids = images["image_id"].astype(str).tolist()
    if kind in ("worst", "best"):
        if truth is None or pred is None:
            raise ValueError(f"gallery {kind!r} needs both --truth and --pred")
        if metric is None:
            raise ValueError(f"gallery {kind!r}: which metric's cost? (metric= the dataset's metric)")
        from detection.evaluation.image_metrics import image_costs

        costs = image_costs(truth, pred, ids, metric=metric, normal_class=normal_class, iou_thr=iou_thr,
                            conf_thr=conf)
        if kind == "worst":
            n_all = len(costs)
            costs = costs[costs["cost"] > 0].sort_values("cost", ascending=False, kind="stable")
            if costs.empty:
                raise ValueError("gallery 'worst': no image costs anything (no missed truth, no false "
                                 f"positive at conf >= {conf:g})")
            if len(costs) < n:
                log.info("gallery 'worst': %d image%s asked, %d shown: the other %d of the %d image%s cost "
                         "nothing at conf >= %g", n, "s" if n != 1 else "", len(costs), n_all - len(costs), n_all,
                         "s" if n_all != 1 else "", conf)
        else:
            costs = costs.sort_values(["cost", "n_tp"], ascending=[True, False], kind="stable")
        sel = costs.head(n)
        caps = {r.image_id: f"{r.image_id[:8]} cost {r.cost:.2f} (fn {int(r.n_fn)}, fp {int(r.n_fp)}, "
                            f"tp {int(r.n_tp)})" for r in sel.itertuples()}
        return [str(i) for i in sel["image_id"]], caps
    if kind == "random":
        rng = np.random.default_rng(seed)
        pick = [str(i) for i in rng.choice(np.array(ids, dtype=object), size=min(n, len(ids)), replace=False)]
        return pick, {}
    if kind.startswith("class="):
        name = kind.split("=", 1)[1]
        src = truth if truth is not None else pred
        if src is None:
            raise ValueError("gallery class=<name> needs --truth or --pred")
        names = names_dict(class_names)
        names.update(dict(zip(src["class_id"].astype(int), src["class_name"].astype(str))))
        match = [c for c, nm in names.items() if nm.lower() == name.lower()]
        if not match and name.isdigit():
            match = [int(name)]
        if not match:
            raise ValueError(f"gallery class={name!r}: unknown class; expected one of {sorted(names.values())}")
        src = src[src["image_id"].astype(str).isin(set(ids))]
        counts = (src[src["class_id"].isin(match)].groupby("image_id", sort=False).size()
                  .sort_values(ascending=False, kind="stable"))
        if counts.empty:
            raise ValueError(f"gallery class={name!r}: no shown image has a box of that class")
        label = names.get(match[0], name)
        return ([str(i) for i in counts.index[:n]],
                {str(i): f"{str(i)[:8]} {short_name(label, 20)} x{c}" for i, c in counts.head(n).items()})
    raise ValueError(f"gallery {kind!r}: expected worst, best, random or class=<name>")


# ----------------------------------------------------------------------------- CLI
def add_arguments_show(p: argparse.ArgumentParser) -> None:
    p.add_argument("--image", action="append", default=[], metavar="ID", help="image id (repeatable)")
    p.add_argument("--gallery", help="worst | best | random | class=<name>: N images on one grid PNG")
    p.add_argument("--n", type=int, default=16, help="gallery size (default: %(default)s)")
    p.add_argument("--source", required=True, help="folder of <id>.png or <id>.dicom/.dcm")
    p.add_argument("--meta", help="image sizes (meta.csv image_id,height,width or image_id,dim0,dim1); "
                   "not needed with a DICOM --source (sizes from the headers' Rows/Columns)")
    p.add_argument("--folds", help="folds.csv (image_id,fold): with --fold, show / rank only that fold's images")
    p.add_argument("--truth", help="truth: competition labels (train.csv / fused.csv / RSNA labels) or a box table")
    p.add_argument("--pred", help="predictions: a box table CSV or a submission CSV")
    p.add_argument("--rater-labels", metavar="CSV",
                   help="raw per-radiologist labels (VinBigData train.csv, with rad_id): each radiologist's own boxes "
                        "beside the truth (all of them, or those of --raters)")
    p.add_argument("--out", required=True, help="output folder")
    add_config_arguments(p, ["dataset", "show_conf", "iou_thr", "seed", "fold", "raters"],
                         help={"iou_thr": "IoU of a match for the worst/best gallery", "seed": "seed of the random gallery",
                               "raters": "draw these radiologists' own boxes beside the truth: R8,R10, or no value = "
                                         "all; from --rater-labels, else from --truth (then a raw train.csv)"})
    retired_flag(p, "--conf", "show_conf")


def load_tables(truth_path=None, pred_path=None, meta=None, dataset: Dataset | str = DEFAULT_DATASET):
    """(images, truth, predictions, class names, dataset description) from the files a user has.

    Truth is read by :func:`data_prep.core.tables.read_truth` for ``dataset`` (its labels file, a
    fused.csv or a box table; a raw per-radiologist file is fused there: WBF, needs ``meta``),
    predictions by :func:`detection.competition.submission.read_predictions` (box table or submission).
    ``images`` is None without truth and meta."""
    from data_prep.core.tables import read_meta, read_truth
    from detection.competition.submission import read_predictions

    ds = describe(dataset)
    images = truth = pred = None
    if truth_path:
        images, truth, ds = read_truth(truth_path, ds, meta)
    elif meta is not None:
        images = read_meta(meta, _meta_name(meta))
    if meta is not None and images is not None and not _sizes_known(images):
        images = images.drop(columns=["height", "width"], errors="ignore").merge(
            read_meta(meta, _meta_name(meta))[["image_id", "height", "width"]], on="image_id", how="left")
    if pred_path:
        pred = read_predictions(pred_path, ds)
    names: dict[int, str] = {}
    for t in (truth, pred):
        if t is not None and len(t):
            names.update(dict(zip(t["class_id"].astype(int), t["class_name"].astype(str))))
    return images, truth, pred, names, ds


def _meta_name(meta) -> str:
    return "DICOM headers" if isinstance(meta, pd.DataFrame) else str(meta)


def source_meta(source, meta=None):
    """``meta`` when given; else, for a folder holding DICOMs, their sizes read from the headers
    (Rows/Columns; no pixel decoded) as an ``image_id,height,width`` table; else None."""
    if meta is not None:
        return meta
    src = Path(source)
    if not src.is_dir() or not any(p.suffix.lower() in (".dicom", ".dcm") for p in src.iterdir()):
        return None
    from data_prep.dicom.convert import header_meta

    m = header_meta(src)
    if m.empty:
        return None
    log.info("image sizes of %d DICOM(s) read from the headers under %s (no --meta needed)", len(m), src)
    return m


def _sizes_known(images: pd.DataFrame) -> bool:
    return {"height", "width"} <= set(images.columns) and bool((images["height"] > 0).all())


def run_show(args) -> int:
    if not args.image and not args.gallery:
        raise ValueError("nothing to show: give --image ID (repeatable) and/or --gallery KIND")
    from data_prep.dicom.voi import VoiOptions
    from detection.evaluation.raters import rater_layer

    cfg = stage_config(args)
    voi = VoiOptions.from_config(cfg)
    ds = describe(cfg)
    conf, iou, seed = float(cfg["show_conf"]), float(cfg["iou_thr"]), int(cfg["seed"])
    fold = held_out_fold(cfg, args.folds)        # like evaluate: --fold needs --folds
    meta = source_meta(args.source, args.meta) if (args.truth or args.rater_labels) else args.meta
    images, truth, pred, names, truth_ds = load_tables(args.truth, args.pred, meta, dataset=ds)
    raw = rater_layer(cfg, args.rater_labels, args.truth, truth_ds, meta)
    on_disk = source_ids(args.source)
    if images is None:
        images = pd.DataFrame({"image_id": on_disk})
    ranked = None                       # which images a gallery is drawn from, said in its title
    if fold is not None:
        from data_prep.core.tables import images_of_folds

        keep = set(images_of_folds(images["image_id"], args.folds, fold, "images")["image_id"].astype(str))
        images = images[images["image_id"].astype(str).isin(keep)]
        ranked = f"fold {fold} of {Path(args.folds).name}"
    elif args.gallery in ("worst", "best") and pred is not None:
        # only the predicted images: an image never predicted would rank as "everything missed"
        keep = set(pred["image_id"].astype(str)) | {str(i) for i in pred.attrs.get("image_ids", [])}
        n_all = len(images)
        images = images[images["image_id"].astype(str).isin(keep)]
        ranked = f"the {len(images)} of {n_all} images with predictions"
        if n_all > len(images):
            log.info("gallery %s: ranking the %d images with predictions (of %d with truth); pass --folds F "
                     "--fold K to rank one held-out fold", args.gallery, len(images), n_all)
    if pred is not None:
        pred = ds.findings(pred[pred["score"] >= conf])
    out = Path(args.out)
    check_not_input(out, [args.source, args.truth, args.pred, args.meta])
    written = []
    if args.gallery:
        have = images["image_id"].astype(str).isin(set(on_disk))
        if not have.all():
            log.warning("gallery: %d of %d images are not under %s; left out", int((~have).sum()), len(images),
                        args.source)
        ids, caps = pick_gallery(args.gallery, images[have], truth, pred, n=args.n, seed=seed,
                                 iou_thr=iou, conf=conf, class_names=names, metric=ds.metric, normal_class=ds.normal_id)
        name = safe_name(args.gallery.replace("=", "_").replace(" ", "_"))
        plural = "s" if len(ids) != 1 else ""
        pool = ranked or f"{int(have.sum())} images"
        title = f"{args.gallery}: {len(ids)} image{plural}, ranked among {pool}" if args.gallery in (
            "worst", "best") else f"{args.gallery}: {len(ids)} image{plural} of {pool}"
        written.append(render_gallery(ids, args.source, out / f"gallery_{name}.png", images, truth, pred,
                                      names, caps, title=title, voi_options=voi))
        log.info("gallery %s: %s", written[-1], title)
    failed = []
    for iid in args.image:
        try:
            dst = out / f"{safe_name(iid)}.png"
            if dst.exists() and dst.resolve() == find_image(args.source, iid).resolve():
                raise ValueError(f"--out {out}: {dst} is the source image of {iid!r}; expected an output "
                                 "folder apart from --source")
            written.append(render_image(iid, args.source, dst, images, truth, pred, raw, names, voi_options=voi))
        except (FileNotFoundError, ValueError) as e:
            failed.append(f"{iid}: {e}")
    for w in written:
        print(w)
    for f in failed:
        log.error(f)
    if failed:
        print(f"{len(failed)} of {len(args.image)} images failed")
    return 1 if failed else 0
