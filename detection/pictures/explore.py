"""``cxrdet explore``: a self-contained, server-less HTML explorer of truth, predictions and radiologists.

Output folder (``--out DIR``)::

    DIR/index.html          the page (a static copy of detection/pictures/explore.html; open it from disk)
    DIR/data.json           every image and box, for scripts (layout below)
    DIR/data.js             the same JSON as ``window.CXRDET_EXPLORE = {...};``: what the page loads
    DIR/images/<id>_<key>.jpg   each image downscaled to <= ``max_side`` px (1024), aspect kept
    DIR/images/<id>_<key>.jpg.json  its frame (a resumed run re-uses both; <key> hashes the source)

Why ``data.js`` beside ``data.json``: a page opened from ``file://`` cannot ``fetch()`` a local
JSON file in Chromium (a CORS error), but it can run a ``<script src>`` next to it. So the page
reads ``data.js``, and ``data.json`` holds the identical JSON for anyone's scripts.

``data.json`` keys: ``format`` ("cxrdet-explore/1"), ``title``, ``metric`` (vinbigdata | coco |
rsna), ``iou_thresholds`` (the metric's IoU thresholds: one, or RSNA's eight), ``conf`` (the
slider's start), ``normal_class`` (or null), ``classes`` [{id, name, color}] (colours of
:func:`data_prep.dicom.palette.class_color`), ``layers`` [{kind: truth|pred|rater, name, source}],
``box_fields``, ``boxes`` (one list per box, fields in ``box_fields`` order, boxes of an image
contiguous), ``images`` [{id, file, width, height, orig_width, orig_height, box_start,
box_count, p_normal, sr}] (``sr``: the image's DICOM SR from ``--sr`` (``cxrdet export-sr``'s folder),
relative to the page, or null). A box: ``layer`` (index into ``layers``), ``class_id``, ``x_min, y_min,
x_max, y_max`` in the DISPLAYED image's pixels (0.1 px), ``score`` (null for truth/raters),
``tp`` (predictions: bit k set = a true positive at ``iou_thresholds[k]`` by the metric's own
matching; -1 = ignored by the metric, COCO beyond ``max_dets``), ``match`` (predictions: index
in ``boxes`` of the truth box matched at the first threshold, -1 if none), ``iou`` (predictions
and raters: IoU with the best truth box of the same class, 0 if none).

Matching is computed ONCE on all predictions (:mod:`detection.evaluation.metrics`, findings only, as in
:func:`detection.evaluation.image_metrics.pred_matches`, which :func:`~detection.evaluation.image_metrics.image_costs` uses too). Every rule here takes predictions in descending score
order, so the matches of the predictions scored >= t are exactly the matches of the full set
restricted to them: the page gets TP/FP/FN and the cost at any slider position from these bits.
``p_normal``: per prediction layer, the image's highest normal-class score (VinBigData's 2-class
filter writes ``14 p 0 0 1 1``), or null.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import logging
import re
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from data_prep.core.atomic import atomic_path, write_text
from data_prep.core.boxes import COORDS, Frame, to_frame
from data_prep.core.config import StageSettings
from detection.evaluation.image_metrics import pred_matches

log = logging.getLogger(__name__)

MAX_SIDE = 1024
TEMPLATE = Path(__file__).with_name("explore.html")
BOX_FIELDS = ["layer", "class_id", "x_min", "y_min", "x_max", "y_max", "score", "tp", "match", "iou"]
FORMAT = "cxrdet-explore/1"


@dataclass(frozen=True)
class ExploreSettings(StageSettings):
    """What :func:`build_explorer` and :func:`explore_data` are tuned by; ``metric``, ``iou_thr``,
    ``show_conf`` (the slider's start) and ``workers`` (processes decoding images) are the config
    keys; ``normal_class``, ``class_names`` come from the config's dataset, ``voi`` (how DICOMs
    are rendered, :class:`data_prep.dicom.voi.VoiOptions`; None = the defaults) from its DICOM keys;
    ``title``, ``max_side`` (longest side of the shown images, <= 1024 px) and ``truth_name``
    (the truth layer's source) are ``cxrdet explore``'s own arguments."""
    metric: str = "vinbigdata"
    iou_thr: float = 0.4
    show_conf: float = 0.3
    normal_class: int | None = None
    class_names: object = None   # list by class id or {id: name}; None = from the tables
    title: str = "cxrdet explorer"
    max_side: int = MAX_SIDE
    workers: int = 1
    truth_name: str = "truth"
    voi: object = None

    OLD = {"conf": "show_conf", "voi_options": "voi"}   # the keywords before the settings object

    @classmethod
    def derived(cls, cfg: dict) -> dict:
        from data_prep.datasets import describe
        from data_prep.dicom.voi import VoiOptions

        ds = describe(cfg)
        return {"normal_class": ds.normal_id, "class_names": ds.names if ds.normal is not None else None,
                "voi": VoiOptions.from_config(cfg)}


# ----------------------------------------------------------------------------- images
def _safe(image_id: str) -> str:
    s = re.sub(r"[^A-Za-z0-9._-]", "_", image_id)[:80]
    return s if s and not s.startswith(".") else "img" + s


def display_image(image_id: str, source, orig_hw: tuple[int, int] | None, out_dir, max_side: int = MAX_SIDE,
                  quality: int = 90, voi_options=None) -> dict:
    """Write ``image_id``'s displayed image (JPEG, longest side <= ``max_side``) under ``out_dir``.

    ``orig_hw``: the original (height, width) when the source is a PNG of another size (meta.csv);
    None takes a PNG as the original. ``voi_options``: how a DICOM is rendered
    (:class:`data_prep.dicom.voi.VoiOptions`; None = the defaults). Returns {file, width, height,
    orig_width, orig_height, sy, sx, pad_top, pad_left} (file relative to ``out_dir``'s parent).
    A file already written for the same source file, size hint, ``max_side`` and options is
    re-used (the name carries a hash of them; its frame is in ``<file>.json``)."""
    import cv2

    from detection.pictures.visualize import find_image, load_display

    path = find_image(source, image_id)
    st = path.stat()
    key = hashlib.sha1(f"{path.resolve()}|{st.st_size}|{st.st_mtime_ns}|{orig_hw}|{max_side}|{quality}|{voi_options!r}"
                       .encode()).hexdigest()[:10]
    out_dir = Path(out_dir)
    name = f"{_safe(image_id)}_{key}.jpg"
    side = out_dir / f"{name}.json"
    if (out_dir / name).is_file() and side.is_file():
        return json.loads(side.read_text())
    images = None
    if orig_hw is not None:
        images = pd.DataFrame({"image_id": [image_id], "height": [orig_hw[0]], "width": [orig_hw[1]]})
    elif path.suffix.lower() == ".png":  # no size known: the PNG is the original (said once by the caller)
        im = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
        if im is not None:
            images = pd.DataFrame({"image_id": [image_id], "height": [im.shape[0]], "width": [im.shape[1]]})
    img, frame = load_display(image_id, source, images, voi_options)
    h, w = img.shape[:2]
    s = min(1.0, max_side / max(h, w))
    if s < 1.0:
        nh, nw = max(1, int(round(h * s))), max(1, int(round(w * s)))
        img = cv2.resize(img, (nw, nh), interpolation=cv2.INTER_AREA)
        frame = Frame(frame.sy * nh / h, frame.sx * nw / w, frame.pad_top * nh / h, frame.pad_left * nw / w, nh, nw)
        h, w = nh, nw
    ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:
        raise ValueError(f"{path}: could not encode the displayed image as JPEG")
    with atomic_path(out_dir / name) as tmp:
        tmp.write_bytes(buf.tobytes())
    info = {"file": f"{out_dir.name}/{name}", "width": int(w), "height": int(h),
            "orig_width": float(w / frame.sx), "orig_height": float(h / frame.sy),
            "sy": float(frame.sy), "sx": float(frame.sx), "pad_top": float(frame.pad_top),
            "pad_left": float(frame.pad_left)}
    write_text(side, json.dumps(info))
    return info


def _display_job(args):
    image_id, source, hw, out_dir, max_side, voi = args
    try:
        return image_id, display_image(image_id, source, hw, out_dir, max_side, voi_options=voi), None
    except (OSError, ValueError) as e:  # a bad image is reported at the end; the batch goes on
        return image_id, None, f"{image_id}: {e}"


def write_images(images: pd.DataFrame, source, out_dir, max_side: int = MAX_SIDE, workers: int = 1,
                 voi_options=None) -> tuple[dict[str, dict], list[str]]:
    """Displayed images of every row of ``images`` found under ``source`` -> ({id: info}, [errors])."""
    from tqdm import tqdm

    from detection.pictures.visualize import source_ids

    ids = images["image_id"].astype(str).tolist()
    on_disk = set(source_ids(source))
    missing = [i for i in ids if i not in on_disk]
    if missing:
        log.warning("explore: %d of %d image(s) are not under %s and are left out, e.g. %s", len(missing),
                    len(ids), source, missing[0])
    known = {"height", "width"} <= set(images.columns)
    jobs = []
    n_unknown = 0
    for r in images.itertuples(index=False):
        iid = str(r.image_id)
        if iid not in on_disk:
            continue
        hw = (int(r.height), int(r.width)) if known and r.height > 0 and r.width > 0 else None
        n_unknown += hw is None
        jobs.append((iid, str(source), hw, str(out_dir), int(max_side), voi_options))
    if n_unknown:
        log.warning("explore: %d image(s) without an original size (no --meta row with height,width): PNGs are "
                    "taken as the original, DICOMs use their header", n_unknown)
    infos, errors = {}, []
    bar = dict(total=len(jobs), desc="explore images", unit="img", disable=len(jobs) < 50)
    if workers > 1 and len(jobs) > 1:
        with ProcessPoolExecutor(workers) as ex:
            results = list(tqdm(ex.map(_display_job, jobs, chunksize=8), **bar))
    else:
        results = [_display_job(j) for j in tqdm(jobs, **bar)]
    for iid, info, err in results:
        if err:
            errors.append(err)
        else:
            infos[iid] = info
    return infos, errors


# ----------------------------------------------------------------------------- boxes
def _best_iou(boxes: pd.DataFrame, truth: pd.DataFrame) -> np.ndarray:
    """(len(boxes),) IoU of each box with the best truth box of the same image and class (0 if none)."""
    from detection.evaluation.metrics import iou_xyxy

    out = np.zeros(len(boxes))
    if not len(boxes) or not len(truth):
        return out
    a = pd.DataFrame({"_i": np.arange(len(boxes)), "image_id": boxes["image_id"].to_numpy(),
                      "class_id": boxes["class_id"].to_numpy()})
    b = truth[["image_id", "class_id"]].reset_index(drop=True).assign(_t=np.arange(len(truth)))
    pairs = a.merge(b, on=["image_id", "class_id"])
    if not len(pairs):
        return out
    iou = iou_xyxy(boxes[COORDS].to_numpy("float64")[pairs["_i"].to_numpy()],
                   truth[COORDS].to_numpy("float64")[pairs["_t"].to_numpy()])
    np.maximum.at(out, pairs["_i"].to_numpy(), iou)
    return out


def _layer_names(paths: list[str]) -> list[str]:
    stems = [Path(p).name for p in paths]
    return [s if stems.count(s) == 1 else f"{s} ({i + 1})" for i, s in enumerate(stems)]


def explore_data(images: pd.DataFrame, infos: dict[str, dict], truth: pd.DataFrame,
                 preds: list[tuple[str, pd.DataFrame]], raters: pd.DataFrame | None = None,
                 settings: ExploreSettings | dict | None = None, **changes) -> dict:
    """The page's data (module docstring) for the images of ``images`` that have an entry in
    ``infos`` (from :func:`write_images`). Box tables are in ORIGINAL pixels; ``raters``: raw
    per-radiologist boxes (column rater); ``settings``: an :class:`ExploreSettings`, a merged
    config dict or None (the defaults); keyword ``changes`` override single fields."""
    s = ExploreSettings.of(settings, **changes)
    metric, iou_thr, normal_class, class_names = s.metric, s.iou_thr, s.normal_class, s.class_names
    conf, title, truth_name = s.show_conf, s.title, s.truth_name
    from detection.evaluation import metrics as M
    from data_prep.dicom.palette import class_color
    from detection.pictures.draw import names_dict

    ids = [i for i in images["image_id"].astype(str) if i in infos]
    pos = pd.Index(ids)
    rule = M.metric_named(metric)
    rsna = rule.per_image   # the page's cost rule: 1 - the image's mean TP/(TP+FP+FN) over the thresholds
    thresholds = rule.thresholds(iou_thr)

    def on_images(df):
        if df is None or not len(df):
            return pd.DataFrame(columns=list(df.columns) if df is not None else ["image_id", "class_id", *COORDS])
        df = df[df["image_id"].astype(str).isin(pos)].copy()
        df["image_id"] = df["image_id"].astype(str)
        return df.reset_index(drop=True)

    def findings(df):
        return df if normal_class is None or not len(df) else df[df["class_id"] != normal_class].reset_index(drop=True)

    truth = findings(on_images(truth))
    names = names_dict(class_names)
    layers = [{"kind": "truth", "name": "truth", "source": truth_name}]
    parts = [truth.assign(layer=0, score=np.nan, tp=pd.NA, match=pd.NA, iou=np.nan)]
    p_normal = {}
    for k, (name, pred) in enumerate(preds, start=1):
        pred = on_images(pred)
        if normal_class is not None and len(pred):
            nm = pred[pred["class_id"] == normal_class]
            if len(nm):
                p_normal[k] = nm.groupby("image_id")["score"].max().to_dict()
        pred = findings(pred)
        tp, match = pred_matches(truth, pred, ids, metric, iou_thr)
        layers.append({"kind": "pred", "name": name, "source": name})
        parts.append(pred.assign(layer=k, tp=tp, match=match, iou=_best_iou(pred, truth)))
    if raters is not None and len(raters):
        raters = findings(on_images(raters))
        rids = sorted(raters["rater"].astype(str).unique(), key=lambda r: (len(r), r))
        base = len(layers)
        layers += [{"kind": "rater", "name": r, "source": "raters"} for r in rids]
        lay = base + pd.Index(rids).get_indexer(raters["rater"].astype(str))
        parts.append(raters.assign(layer=lay, score=np.nan, tp=pd.NA, match=pd.NA, iou=_best_iou(raters, truth)))
    for df in parts:
        if len(df) and "class_name" in df:
            for c, n in zip(df["class_id"].astype(int), df["class_name"].astype(str)):
                names.setdefault(c, n)
    cols = ["image_id", "layer", "class_id", *COORDS, "score", "tp", "match", "iou"]
    allb = pd.concat([p[cols] for p in parts if len(p)], ignore_index=True) if any(len(p) for p in parts) \
        else pd.DataFrame(columns=cols)
    img = pos.get_indexer(allb["image_id"].astype(str))
    order = np.lexsort((np.arange(len(allb)), allb["layer"].to_numpy("int64"), img))
    new_pos = np.empty(len(order), "int64")
    new_pos[order] = np.arange(len(order))
    # match: truth row index (truth rows come first in allb) -> position in the sorted box list
    m = allb["match"].astype("Int64")
    has = m.notna() & (m >= 0)
    m[has] = new_pos[m[has].to_numpy("int64")]
    allb["match"] = m
    allb = allb.iloc[order].reset_index(drop=True)
    img = img[order]
    # boxes into each image's displayed frame
    sy = np.array([infos[i]["sy"] for i in ids])[img] if len(img) else np.zeros(0)
    sx = np.array([infos[i]["sx"] for i in ids])[img] if len(img) else np.zeros(0)
    xy = allb[COORDS].to_numpy("float64") * np.stack([sx, sy, sx, sy], 1) if len(allb) else np.zeros((0, 4))
    out = pd.DataFrame({"layer": allb["layer"].astype("int64"), "class_id": allb["class_id"].astype("int64")})
    for j, c in enumerate(COORDS):
        out[c] = np.round(xy[:, j], 1)
    out["score"] = allb["score"].astype("float64").round(6)
    out["tp"] = allb["tp"].astype("Int64")
    out["match"] = allb["match"].astype("Int64")
    out["iou"] = allb["iou"].astype("float64").round(3)
    start = np.searchsorted(img, np.arange(len(ids)))
    count = np.bincount(img, minlength=len(ids)) if len(img) else np.zeros(len(ids), "int64")
    used = sorted(set(out["class_id"].tolist()) | ({normal_class} if p_normal else set()))
    recs = []
    for k, iid in enumerate(ids):
        inf = infos[iid]
        recs.append({"id": iid, "file": inf["file"], "width": inf["width"], "height": inf["height"],
                     "orig_width": round(inf["orig_width"], 2), "orig_height": round(inf["orig_height"], 2),
                     "box_start": int(start[k]), "box_count": int(count[k]),
                     "p_normal": [p_normal.get(L, {}).get(iid) for L in range(1, len(preds) + 1)]})
    return {"format": FORMAT, "title": title, "metric": metric, "iou_thresholds": thresholds,
            "conf": float(conf), "normal_class": normal_class,
            "classes": [{"id": int(c), "name": names.get(int(c), str(c)), "color": class_color(int(c))} for c in used],
            "layers": layers, "box_fields": BOX_FIELDS, "boxes": out, "images": recs}


def _dump(data: dict) -> str:
    """JSON text of ``data``; its ``boxes`` DataFrame is written by pandas (NaN/NA -> null)."""
    boxes = data["boxes"].to_json(orient="values", double_precision=6)
    head = json.dumps({k: v for k, v in data.items() if k != "boxes"}, separators=(",", ":"))
    return head[:-1] + ',"boxes":' + boxes + "}"


def build_explorer(images: pd.DataFrame, truth: pd.DataFrame, preds: list[tuple[str, pd.DataFrame]], source,
                   out, settings: ExploreSettings | dict | None = None, *, raters: pd.DataFrame | None = None,
                   sr: dict[str, str] | None = None, **changes) -> dict:
    """Write the explorer into the folder ``out`` (module docstring); return {"index", "n_images",
    "n_boxes", "errors"}. ``images``: the image table of the images to show (original sizes);
    ``preds``: [(layer name, box table)]; ``raters``: raw per-radiologist boxes (column rater),
    one layer per radiologist; ``sr``: {image_id: path of its DICOM SR} (linked from the page);
    ``settings``: an :class:`ExploreSettings`, a merged config dict or None (the defaults); keyword
    ``changes`` override single fields (``title="..."``)."""
    s = ExploreSettings.of(settings, **changes)
    max_side, workers, voi_options = s.max_side, s.workers, s.voi
    if not 1 <= max_side <= MAX_SIDE:
        raise ValueError(f"max_side {max_side}; expected 1..{MAX_SIDE} px")
    from data_prep.core.atomic import check_not_input
    from data_prep.core.errors import check_output

    out = check_output(out, folder=True, arg="--out")
    check_not_input(out, [source], "--out")
    check_not_input(out / "images", [source], "--out")
    infos, errors = write_images(images, source, out / "images", max_side, workers, voi_options)
    if not infos:
        raise ValueError(f"explore: none of the {len(images)} image(s) could be shown from {source}"
                         + (f" ({errors[0]})" if errors else ""))
    data = explore_data(images, infos, truth, preds, raters, s)
    from detection.pacs.export_sr import relative_link

    for rec in data["images"]:
        rec["sr"] = relative_link(sr[rec["id"]], out) if sr and rec["id"] in sr else None
    text = _dump(data)
    write_text(out / "data.json", text + "\n")
    write_text(out / "data.js", "window.CXRDET_EXPLORE = " + text + ";\n")
    index = write_text(out / "index.html", TEMPLATE.read_text(encoding="utf-8"))
    for e in errors:
        log.error("explore: %s", e)
    return {"index": index, "n_images": len(data["images"]), "n_boxes": len(data["boxes"]), "errors": errors}


# ----------------------------------------------------------------------------- CLI
def add_arguments_explore(p: argparse.ArgumentParser) -> None:
    from data_prep.core.config import add_config_arguments, retired_flag

    p.add_argument("--truth", required=True, help="train.csv / fused.csv / RSNA labels / box table CSV")
    p.add_argument("--pred", action="extend", nargs="+", required=True, metavar="P",
                   help="submission CSV(s) or box table CSV(s): one prediction layer each (--pred A B or --pred A --pred B)")
    p.add_argument("--source", required=True, help="folder of the images (<id>.png or <id>.dicom/.dcm)")
    p.add_argument("--meta", help="original image sizes (meta.csv or image_id,dim0,dim1)")
    p.add_argument("--rater-labels", metavar="CSV",
                   help="raw per-radiologist labels (VinBigData train.csv, with rad_id): one layer per radiologist "
                        "(all of them, or those of --raters)")
    p.add_argument("--folds", help="folds.csv (image_id,fold)")
    p.add_argument("--max-side", type=int, default=MAX_SIDE, help=f"longest side of the shown images (<= {MAX_SIDE})")
    p.add_argument("--title", default="cxrdet explorer")
    p.add_argument("--sr", metavar="SR_DIR", help="a `cxrdet export-sr` folder: each image links to its DICOM SR")
    p.add_argument("--out", required=True, help="output folder (index.html, data.json, data.js, images/)")
    add_config_arguments(p, ["dataset", "metric", "iou_thr", "fold", "show_conf", "workers", "raters"],
                         help={"fold": "with --folds: show only this fold's images",
                               "raters": "radiologists drawn as their own layers: R8,R10, or no value = all; from "
                                         "--rater-labels, else from --truth (then a raw labels file)",
                               "metric": "matching rule for TP/FP/FN and cost (default: the dataset's metric)",
                               "show_conf": "the confidence slider's start", "workers": "processes decoding images"})
    retired_flag(p, "--conf", "show_conf")


def load_explore_inputs(truth_path, pred_paths, meta=None, folds=None, fold=None, dataset="vinbigdata"):
    """(images, truth, [(name, pred)], dataset description), truth/preds restricted to the shown
    images (the truth file's, within ``fold`` of ``folds`` when given); ``dataset``: a name or
    description (:func:`data_prep.datasets.describe`)."""
    from data_prep.datasets import describe
    from data_prep.core.tables import images_of_folds, read_truth
    from detection.competition.submission import read_predictions

    if (folds is None) != (fold is None):
        raise ValueError("--folds and --fold go together")
    images, truth, ds = read_truth(truth_path, describe(dataset), meta)
    if fold is not None:
        keep = set(images_of_folds(images["image_id"], folds, fold, "truth images")["image_id"].astype(str))
        images = images[images["image_id"].astype(str).isin(keep)].reset_index(drop=True)
        log.info("fold %d: %d images", fold, len(images))
    ids = set(images["image_id"].astype(str))
    truth = truth[truth["image_id"].astype(str).isin(ids)]
    preds = [(n, read_predictions(p, ds)) for n, p in zip(_layer_names(pred_paths), pred_paths)]
    return images, truth, preds, ds


def run_explore(args) -> int:
    from data_prep.core.config import from_command_line, held_out_fold, stage_config
    from detection.evaluation.raters import rater_layer

    cfg = stage_config(args)
    images, truth, preds, ds = load_explore_inputs(args.truth, args.pred, args.meta, args.folds,
                                                   held_out_fold(cfg, args.folds), cfg)
    raters = rater_layer(cfg, args.rater_labels, args.truth, ds, args.meta, on_missing_meta="drop")
    # the configured metric, unless the truth turned out to be another dataset's labels (then its own)
    metric = cfg["metric"] if ds.name == cfg["dataset"] or from_command_line(cfg, "metric") else ds.metric
    settings = ExploreSettings.from_config(cfg, metric=metric, normal_class=ds.normal_id,
                                           class_names=ds.names if ds.normal is not None else None, title=args.title,
                                           max_side=args.max_side, truth_name=Path(args.truth).name)
    from detection.pacs.export_sr import read_index

    sr = read_index(args.sr) if args.sr else None
    res = build_explorer(images, truth, preds, args.source, args.out, settings, raters=raters, sr=sr)
    print(res["index"])
    print(f"{res['n_images']} images, {res['n_boxes']} boxes" +
          (f"; {len(res['errors'])} image(s) failed (see the log)" if res["errors"] else ""))
    return 1 if res["errors"] else 0
