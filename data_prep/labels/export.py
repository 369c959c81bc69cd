"""YOLO and COCO writers: tables + fold assignment -> datasets an ultralytics / COCO trainer reads.

Inputs are the canonical tables (``data_prep/core/boxes.py``): the image table, whose ``path`` is the
PNG of each image (``OUT/images/<id>.png``), and the box table in ORIGINAL pixels; plus the
``image_id, fold`` table of :func:`data_prep.labels.folds.make_folds`.

YOLO (:func:`write_yolo`)::

    OUT/labels/<id>.txt              "class cx cy w h" per box, normalised; empty = background
    OUT/yolo/fold<k>/train.txt       absolute PNG paths of the other folds
    OUT/yolo/fold<k>/val.txt         absolute PNG paths of fold k
    OUT/yolo/fold<k>/data.yaml       path, train, val, nc, names {id: name} (+ channels: 1)

ultralytics finds an image's label by replacing the last ``/images/`` of its path with
``/labels/`` and the extension with ``.txt``; the writer checks that every PNG path maps to the
label it writes.

Why the YOLO numbers are computed from ORIGINAL pixels: a PNG made from an image of
``(height, width)`` is a pure resize, ``x_png = x * sx`` and ``y_png = y * sy`` with
``sx = png_width / width`` and ``sy = png_height / height`` (one scale for both with
``keep_ratio``, two for the square resize; never padded on disk). Normalising in the PNG frame
divides by ``png_width = width * sx`` and ``png_height = height * sy``, so the scale cancels:
``x_png / png_width = x / width``. The normalised label is therefore the same for the original,
the square-resized and the keep-ratio PNG, and it stays exact even where the PNG side was rounded
(it is the ideal resize of the original). ``tests/test_export.py`` checks it against
:func:`data_prep.core.boxes.to_frame`.

COCO (:func:`write_coco`)::

    OUT/coco/fold<k>_train.json, OUT/coco/fold<k>_val.json

The COCO files describe the ORIGINAL images, which is what the COCO metric in original pixels
needs: ``images[].height/width`` are original pixels, ``annotations[].bbox`` is ``x, y, w, h`` in
original pixels (``boxes.xyxy_to_xywh``), ``area = w * h``, ``iscrowd = 0``. ``file_name`` is the
image_id (the original image's name, not a file to open); each image also carries ``png_file``
(absolute path of its PNG), ``png_height`` and ``png_width``: a trainer reading pixels opens
``png_file`` and scales boxes by ``png_width / width`` and ``png_height / height``. Image ids are
1-based and stable across folds (the rank of the image_id in sorted order), annotation ids are
1-based, ``category_id`` = ``class_id`` (0-based, as in the box table).

Training recipes (:func:`training_items`): the TRAINING labels may differ from the truth, which
stays in ``OUT/labels`` (what the val lists and every score read):

* ``squarify: R`` grows training boxes whose longer side exceeds R x the shorter about the centre
  to that ratio, clipped to the image (:func:`data_prep.core.boxes.squarify`);
* ``train_labels: variants | both`` adds one training item per (image, radiologist who read it)
  carrying that radiologist's own boxes (a normal reading = a background item)::

    OUT/train_items/images/<item>.png    symlinks to the image's PNG (<item> = <id> for a
                                         squarified fused item, <id>~<rater> for a variant)
    OUT/train_items/labels/<item>.txt    the item's (squarified) training labels
    OUT/train_items/items.csv            item, image_id, rater ("" = fused)
    OUT/yolo/fold<k>/train_variants.txt + data_variants.yaml   the variant items of the other folds
    OUT/yolo/fold<k>/train_both.txt + data_both.yaml           fused items then variant items
    OUT/coco/fold<k>_train_variants.json, fold<k>_train_both.json (one COCO image per item)

  Without squarify the fused training items are the images themselves (OUT/images, OUT/labels).
  An item belongs to its image's fold: no variant of a held-out image is ever in a training list.

The ``labels``, ``yolo``, ``coco`` and ``train_items`` folders are built beside their final place and swapped in
whole (:func:`data_prep.core.atomic.atomic_folder`), so a re-export never leaves half-written or
stale files (labels of dropped images, folds beyond a new k).
"""
from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from data_prep.core import boxes as bx
from data_prep.core.atomic import atomic_folder, safe_name
from data_prep.core.prepdir import (  # noqa: F401 (data_yaml_name, coco_train_name, TRAIN_LABELS re-exported)
    IMAGES, ITEMS, ITEMS_CSV, TRAIN_LABELS, VAL_LIST, PrepDir, coco_train_name, data_yaml_name, yaml_names)

log = logging.getLogger(__name__)

VARIANT_SEP = "~"              # <image_id>~<rater>: a variant item's name


# ----------------------------------------------------------------------------- helpers
def _names(class_names) -> dict[int, str]:
    """A list (class_id order) or a dict {id: name} -> {int id: str name}."""
    if isinstance(class_names, dict):
        return {int(k): str(v) for k, v in sorted(class_names.items())}
    return {i: str(n) for i, n in enumerate(class_names)}


def label_path_for(png: str | os.PathLike) -> str:
    """The label file ultralytics reads for image ``png`` (ultralytics.data.utils.img2label_paths):
    the last ``/images/`` becomes ``/labels/`` and the extension ``.txt``."""
    sa, sb = f"{os.sep}images{os.sep}", f"{os.sep}labels{os.sep}"
    return sb.join(os.fspath(png).rsplit(sa, 1)).rsplit(".", 1)[0] + ".txt"


def _prepare(images: pd.DataFrame, boxes: pd.DataFrame, folds: pd.DataFrame, class_names):  # pragma: no mutate block, input check
    """Common checks: every image has a fold and a PNG path; every box's class is named."""
    images = bx.as_image_table(images)
    boxes = bx.as_box_table(boxes)
    names = _names(class_names)
    fold_of = folds.assign(image_id=folds["image_id"].astype(str)).set_index("image_id")["fold"]
    missing = ~images["image_id"].isin(fold_of.index)
    if missing.any():
        raise ValueError(f"export: image {images['image_id'][missing].iloc[0]!r} has no fold in the folds table "
                         f"({int(missing.sum())} images without a fold)")
    nopath = images["path"] == ""
    if nopath.any():
        raise ValueError(f"export: image {images['image_id'][nopath].iloc[0]!r}: empty path; expected its PNG path")
    bad = ~boxes["class_id"].isin(list(names))
    if bad.any():
        i = int(np.flatnonzero(bad.to_numpy())[0])
        raise ValueError(f"export: box row {i}: class_id {int(boxes['class_id'].iloc[i])} of image "
                         f"{boxes['image_id'].iloc[i]!r} has no name; expected one of {sorted(names)}")
    bx.validate_boxes(boxes, images, source="export box table", tol=float("inf"))
    images = images.sort_values("image_id", kind="stable").reset_index(drop=True)
    images["fold"] = fold_of.loc[images["image_id"]].to_numpy().astype("int64")
    return images, boxes, names


def _clip(boxes: pd.DataFrame, images: pd.DataFrame) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Boxes clipped to their image: (xyxy (N, 4) float64, height (N,), width (N,))."""
    hw = images.set_index("image_id").loc[boxes["image_id"], ["height", "width"]].to_numpy(dtype="float64")
    xyxy = boxes[bx.COORDS].to_numpy(dtype="float64")
    xyxy = np.clip(xyxy, 0.0, np.stack([hw[:, 1], hw[:, 0], hw[:, 1], hw[:, 0]], 1))
    return xyxy, hw[:, 0], hw[:, 1]


def _val(images: pd.DataFrame, k: int) -> pd.DataFrame:
    """Fold ``k``'s images, normal ones included: its val list."""
    return images[images["fold"] == k]


def _train(images: pd.DataFrame, k: int, has_box: set, include_normal: bool) -> pd.DataFrame:
    """The other folds' images; without ``include_normal`` only those with a box (``has_box``)."""
    train = images[images["fold"] != k]
    if not include_normal:
        train = train[train["image_id"].isin(has_box)]
    return train


# ----------------------------------------------------------------------------- training items
def _squarified(boxes: pd.DataFrame, images: pd.DataFrame, ratio: float | None) -> pd.DataFrame:
    """``boxes`` with their coordinates squarified (module docstring); unchanged when ``ratio`` is None."""
    if ratio is None or not len(boxes):
        return boxes
    hw = images.set_index("image_id").loc[boxes["image_id"], ["height", "width"]].to_numpy(dtype="float64")
    xyxy, _, _ = _clip(boxes, images)
    out = boxes.copy()
    out[bx.COORDS] = bx.squarify(xyxy, ratio, hw[:, 0], hw[:, 1])
    return out


def variant_items(images: pd.DataFrame, rater_boxes: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """One item per (image, radiologist who read it): ``(items, boxes)``.

    items: ``item, image_id, rater`` (sorted by item; readers from the image table's ``raters``
    and the box table's ``rater``, :func:`data_prep.labels.raters.readers`), boxes: that radiologist's
    boxes on that image with their ``item``. A radiologist who drew nothing (a normal reading)
    has an item without boxes. Boxes without a rater id are no one's variant and are left out."""
    from data_prep.labels.raters import readers

    rater_boxes = bx.as_box_table(rater_boxes)
    rd = readers(images, rater_boxes)
    rd = rd[rd["image_id"].isin(set(images["image_id"].astype(str)))]
    items = rd.assign(item=rd["image_id"] + VARIANT_SEP + rd["rater"].map(safe_name))
    items = items[["item", "image_id", "rater"]].sort_values("item", kind="stable").reset_index(drop=True)
    if items["item"].duplicated().any():
        d = items.loc[items["item"].duplicated(), "item"].iloc[0]
        raise ValueError(f"export: variant item {d!r} names two (image, radiologist) pairs; expected distinct "
                         "radiologist ids")
    b = rater_boxes[rater_boxes["rater"].astype(str) != ""]
    b = b.merge(items, on=["image_id", "rater"], how="inner")
    return items, b.reset_index(drop=True)


def training_items(images: pd.DataFrame, boxes: pd.DataFrame, rater_boxes: pd.DataFrame | None = None,
                   squarify: float | None = None) -> dict[str, tuple[pd.DataFrame, pd.DataFrame]]:
    """The training items of each kind whose labels are not the truth: ``{"fused": ...}`` when
    ``squarify`` is set, ``{"variants": ...}`` when ``rater_boxes`` is given. Each is an item
    table (the image table with ``image_id`` = the item's name, plus ``source_id`` = its image and
    ``rater``) and its box table (``image_id`` = the item's name), boxes squarified. ``images``
    and ``boxes``: as :func:`write_yolo` takes them (after :func:`_prepare`)."""
    out = {}
    if squarify is not None:
        it = images.assign(source_id=images["image_id"], rater="")
        out["fused"] = (it, _squarified(boxes, images, squarify))
    if rater_boxes is not None:
        items, vb = variant_items(images, rater_boxes)
        it = images.set_index("image_id").loc[items["image_id"]].reset_index()
        it = it.assign(source_id=it["image_id"], image_id=items["item"].to_numpy(), rater=items["rater"].to_numpy())
        vb = _squarified(vb, images, squarify).assign(image_id=lambda t: t["item"])
        out["variants"] = (it.reset_index(drop=True), vb.drop(columns=["item"]).reset_index(drop=True))
    return out


def _train_lists(images: pd.DataFrame, k: int, has_box: set, include_normal: bool, items: dict) -> dict:
    """Per training-label kind, fold ``k``'s training items (image or item tables, ``path`` = what a
    trainer opens): ``fused``, and with variants ``variants`` and ``both``."""
    train = _train(images, k, has_box, include_normal)
    lists = {"fused": train}
    if "fused" in items:
        it = items["fused"][0]
        lists["fused"] = it[it["source_id"].isin(set(train["image_id"]))]
    if "variants" in items:
        it, vb = items["variants"]
        keep = it["source_id"].isin(set(images.loc[images["fold"] != k, "image_id"]))
        if not include_normal:
            keep &= it["image_id"].isin(set(vb["image_id"]))
        lists["variants"] = it[keep]
        lists["both"] = pd.concat([lists["fused"], it[keep]], ignore_index=True)
    return lists


def _write_items(out: Path, items: dict) -> dict:
    """``OUT/train_items`` (module docstring): symlinks, label files, items.csv; the items' paths
    set to their symlinks. Without items the folder is removed. Returns ``items`` with those paths."""
    folder = out / ITEMS
    if not items:
        if folder.exists():
            import shutil

            shutil.rmtree(folder)
        return items
    res = {}
    with atomic_folder(folder) as tmp:
        (tmp / IMAGES).mkdir()
        (tmp / "labels").mkdir()
        rows = []
        for kind, (it, ib) in items.items():
            lines = yolo_lines(ib, it)
            per = lines.dropna().groupby(ib["image_id"][lines.notna()]).agg("\n".join)
            paths = []
            for r in it.itertuples():
                name = f"{r.image_id}{Path(r.path).suffix or '.png'}"
                os.symlink(os.path.abspath(r.path), tmp / IMAGES / name)
                text = per.get(r.image_id)
                (tmp / "labels" / f"{r.image_id}.txt").write_text(text + "\n" if text else "")
                paths.append(str(folder / IMAGES / name))
                rows.append((r.image_id, r.source_id, r.rater))
            has = set(ib["image_id"][lines.notna()])
            res[kind] = (it.assign(path=paths), ib[ib["image_id"].isin(has)] if len(ib) else ib)
        pd.DataFrame(rows, columns=["item", "image_id", "rater"]).to_csv(tmp / ITEMS_CSV, index=False)
    return res


def item_image_ids(paths, prep_dir: str | os.PathLike | None = None) -> list[str]:
    """The image each training path shows: a training item's image from ``train_items/items.csv``
    (beside its ``images`` folder, or in ``prep_dir``), else the file's stem (an image of OUT/images)."""
    maps: dict[Path, dict] = {}
    out = []
    for p in map(Path, paths):
        root = p.parent.parent
        if p.parent.name == IMAGES and root.name == ITEMS:
            if root not in maps:
                f = root / ITEMS_CSV
                maps[root] = (dict(pd.read_csv(f, dtype=str, keep_default_na=False)[["item", "image_id"]].to_numpy())
                              if f.is_file() else {})
            out.append(maps[root].get(p.stem, p.stem.split(VARIANT_SEP)[0]))
        else:
            out.append(p.stem)
    return out


# ----------------------------------------------------------------------------- YOLO
def yolo_lines(boxes: pd.DataFrame, images: pd.DataFrame) -> pd.Series:
    """``"class cx cy w h"`` per box (normalised by the ORIGINAL size, boxes clipped to the image,
    6 decimals), indexed like ``boxes``; zero-area boxes after clipping give ``None``."""
    xyxy, h, w = _clip(boxes, images)
    yolo = bx.xyxy_to_yolo(xyxy, h, w)
    ok = (yolo[:, 2] > 0) & (yolo[:, 3] > 0)
    cls = boxes["class_id"].to_numpy()
    lines = [f"{c} {a:.6f} {b:.6f} {d:.6f} {e:.6f}" if o else None
             for c, (a, b, d, e), o in zip(cls, yolo, ok)]
    return pd.Series(lines, index=boxes.index, dtype=object)


def write_yolo(images: pd.DataFrame, boxes: pd.DataFrame, folds: pd.DataFrame, out: str | os.PathLike,
               class_names, channels: int = 3, include_normal: bool = True, squarify: float | None = None,
               rater_boxes: pd.DataFrame | None = None) -> dict:
    """Write ``out/labels/<id>.txt`` and ``out/yolo/fold<k>/{train.txt,val.txt,data.yaml}``.

    images: image table, ``path`` = PNG path inside ``out/images/``; boxes: box table (original
    px); folds: ``image_id, fold``; class_names: list in class_id order or ``{id: name}``;
    channels: 1 (grayscale, ``channels: 1`` in data.yaml) or 3; include_normal: keep images
    without boxes in the TRAIN lists as background (val lists always hold the whole fold);
    squarify: the ratio of :func:`data_prep.core.boxes.squarify` for training labels (None = off);
    rater_boxes: the per-radiologist box table: also write the variant and both lists (module
    docstring). The val lists and ``out/labels`` always hold the truth (``boxes``).
    Returns ``{"labels": Path, "data_yaml": [Path per fold], "n_labels": int, "n_dropped": int,
    "n_items": {kind: int}}``.
    """
    if channels not in (1, 3):
        raise ValueError(f"export: channels = {channels!r}; expected 1 or 3")
    out = Path(os.path.abspath(out))
    images, boxes, names = _prepare(images, boxes, folds, class_names)
    paths = images["path"].map(os.path.abspath)     # absolute, symlinks kept (PNG folders linked by prep)
    images["path"] = paths
    want = images["image_id"].map(lambda i: str(out / "labels" / f"{i}.txt"))
    got = paths.map(label_path_for)
    wrong = got != want
    if wrong.any():
        i = int(np.flatnonzero(wrong.to_numpy())[0])
        raise ValueError(f"export: image {images['image_id'].iloc[i]!r}: PNG {paths.iloc[i]} would have its "
                         f"labels read from {got.iloc[i]}; expected the PNG in {out / 'images'} so that "
                         f"ultralytics reads {want.iloc[i]}")

    lines = yolo_lines(boxes, images)
    n_dropped = int(lines.isna().sum())
    if n_dropped:
        log.warning("export: %d zero-area boxes (after clipping to the image) left out of the YOLO labels", n_dropped)
    per_image = lines.dropna().groupby(boxes["image_id"][lines.notna()]).agg("\n".join)

    layout = PrepDir(out)
    with atomic_folder(layout.labels) as labels_tmp:
        for image_id in images["image_id"]:
            text = per_image.get(image_id)               # None: a background image, an empty file
            (labels_tmp / f"{image_id}.txt").write_text(text + "\n" if text else "")
    cache = layout.labels.with_suffix(".cache")      # ultralytics' label cache keys on file sizes only: drop it
    if cache.exists():
        cache.unlink()

    has_box = set(boxes["image_id"][lines.notna()])
    items = _write_items(out, training_items(images, boxes, rater_boxes, squarify))
    with atomic_folder(layout.yolo) as yolo_tmp:
        ks = sorted(images["fold"].unique())
        for k in ks:
            val = _val(images, k)
            d = yolo_tmp / layout.yolo_fold(k).name
            d.mkdir()
            (d / VAL_LIST).write_text("".join(p + "\n" for p in val["path"]))
            for kind, train in _train_lists(images, k, has_box, include_normal, items).items():
                list_name, yaml_name = yaml_names(kind)
                (d / list_name).write_text("".join(p + "\n" for p in train["path"]))
                data = {"path": str(layout.yolo_fold(k)), "train": list_name, "val": VAL_LIST,
                        "nc": len(names), "names": names}
                if channels == 1:
                    data["channels"] = 1
                what = "images" if kind == "fused" and squarify is None else f"{kind} training items"
                (d / yaml_name).write_text(
                    f"# cxrdet fold {k} of {len(ks)}: train = other folds ({len(train)} {what}), val = fold {k} "
                    f"({len(val)} images)\n" + yaml.safe_dump(data, sort_keys=False, allow_unicode=True))
    log.info("export: YOLO labels for %d images (%d boxes), %d folds in %s", len(images),
             len(boxes) - n_dropped, len(ks), layout.yolo)
    return {"labels": layout.labels, "data_yaml": [layout.data_yaml(k) for k in ks],
            "n_labels": len(images), "n_dropped": n_dropped, "n_items": {k: len(v[0]) for k, v in items.items()}}


# ----------------------------------------------------------------------------- COCO
def coco_dict(images: pd.DataFrame, boxes: pd.DataFrame, names: dict[int, str], image_ids: dict[str, int],
              description: str = "") -> dict:
    """A COCO detection dict for ``images`` (with ``path``, optional ``png_height``/``png_width``)
    and their ``boxes`` (original px). ``image_ids`` maps image_id -> COCO int id."""
    img_list = []
    for r in images.itertuples():                 # fields by name (the Index field is not used)
        rec = {"id": image_ids[r.image_id], "file_name": r.image_id, "height": int(r.height),
               "width": int(r.width), "png_file": os.path.abspath(r.path)}
        for c in ("png_height", "png_width"):
            v = getattr(r, c, None)
            if v is not None and not pd.isna(v):
                rec[c] = int(v)
        img_list.append(rec)
    sel = boxes[boxes["image_id"].isin(set(images["image_id"]))]
    sel = sel.sort_values(["image_id"], kind="stable")
    xyxy, _, _ = _clip(sel, images)
    xywh = bx.xyxy_to_xywh(xyxy)
    anns = []
    for n, (iid, cid, b) in enumerate(zip(sel["image_id"], sel["class_id"], xywh), start=1):
        w, h = float(b[2]), float(b[3])
        anns.append({"id": n, "image_id": image_ids[iid], "category_id": int(cid),
                     "bbox": [round(float(b[0]), 3), round(float(b[1]), 3), round(w, 3), round(h, 3)],
                     "area": round(w * h, 3), "iscrowd": 0})
    cats = [{"id": i, "name": n, "supercategory": "finding"} for i, n in names.items()]
    return {"info": {"description": description, "version": "1.0"}, "licenses": [],
            "images": img_list, "annotations": anns, "categories": cats}


def write_coco(images: pd.DataFrame, boxes: pd.DataFrame, folds: pd.DataFrame, out: str | os.PathLike,
               class_names, include_normal: bool = True, squarify: float | None = None,
               rater_boxes: pd.DataFrame | None = None) -> list[Path]:
    """Write ``out/coco/fold<k>_train.json`` and ``fold<k>_val.json`` for every fold (with
    ``rater_boxes`` also ``fold<k>_train_variants.json`` and ``fold<k>_train_both.json``).

    Same inputs as :func:`write_yolo`; boxes stay in ORIGINAL pixels (see the module docstring);
    training boxes squarified with ``squarify``, the val json always the truth. A training item
    is a COCO image of its own (``file_name`` = the item's name, ``png_file`` = its image's PNG;
    ids after the images'). Returns the written paths (train, val per fold, then the others)."""
    out = Path(os.path.abspath(out))
    images, boxes, names = _prepare(images, boxes, folds, class_names)
    image_ids = {iid: n for n, iid in enumerate(images["image_id"], start=1)}
    has_box = set(boxes["image_id"])
    items = training_items(images, boxes, bx.as_box_table(rater_boxes) if rater_boxes is not None else None, squarify)
    if "variants" in items:
        image_ids.update({iid: n for n, iid in enumerate(items["variants"][0]["image_id"], start=len(image_ids) + 1)})
    item_boxes = pd.concat([boxes if "fused" not in items else items["fused"][1]]
                           + ([items["variants"][1]] if "variants" in items else []), ignore_index=True)
    layout = PrepDir(out)
    with atomic_folder(layout.coco) as tmp:
        written = []
        ks = sorted(images["fold"].unique())
        for k in ks:
            lists = _train_lists(images, k, has_box, include_normal, items)
            val = _val(images, k)
            for split, sub, bb in (("train", lists["fused"], item_boxes), ("val", val, boxes)):
                d = coco_dict(sub, bb, names, image_ids, description=f"cxrdet fold {k} {split}")
                (tmp / layout.coco_json(k, split).name).write_text(json.dumps(d))
                written.append(layout.coco_json(k, split))
            for kind in ("variants", "both"):
                if kind in lists:
                    d = coco_dict(lists[kind], item_boxes, names, image_ids, description=f"cxrdet fold {k} train {kind}")
                    (tmp / layout.coco_train(k, kind).name).write_text(json.dumps(d))
                    written.append(layout.coco_train(k, kind))
    log.info("export: COCO json for %d folds in %s", len(ks), layout.coco)
    return written
