"""``prep`` option ``extra: [nih]``: another dataset's boxes merged into VinBigData training as one
more radiologist.

NIH ChestX-ray14 (config ``extra_dirs: {nih: PATH}``, a folder in NIH's layout: ``images/*.png``,
``BBox_List_2017.csv``, optionally ``Data_Entry_2017.csv`` for patient ids; the file names are
configs/nih.yaml's ``images_dir``/``labels``/``meta``):

* only its boxed images are used; their PNGs are linked into ``OUT/images`` beside the
  converted VinBigData PNGs, with their own sizes (``height``/``width`` 1024, the box list's
  frame; ``png_height``/``png_width`` the files'), listed in ``OUT/extra_nih_meta.csv``;
* classes by the documented map ``data_prep.datasets.nih.TO_VINBIGDATA`` (Effusion -> Pleural
  effusion, Infiltrate -> Infiltration, Mass and Nodule -> Nodule/Mass, ...; Pneumonia dropped,
  and an image left without a box with it);
* rater ``NIH`` (``raters: [R8, R10, NIH]`` keeps it in a subset), ``dataset`` column ``nih``;
* patient ids prefixed by the dataset (``vinbigdata/<id>``, ``nih/<id>``) so folds, grouped by
  patient, stay patient-disjoint across both; YOLO/COCO export covers both.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path

import pandas as pd

from data_prep.core.prepdir import PrepDir

log = logging.getLogger(__name__)

SUPPORTED = {"vinbigdata": ("nih",)}   # training dataset -> datasets that can be merged into it


def sources(cfg: dict) -> dict[str, dict]:
    """``{name: {"dir", "labels", "meta", "images_dir"}}`` for each dataset of ``cfg["extra"]``;
    checks the combination and that the folder exists."""
    from data_prep.core.config import load_config

    extra = cfg.get("extra") or []
    if not extra:
        return {}
    if not isinstance(extra, list):
        raise ValueError(f"extra {extra!r}; expected a list of dataset names, e.g. [nih]")
    ok = SUPPORTED.get(cfg["dataset"], ())
    out = {}
    for name in extra:
        if name not in ok:
            raise ValueError(f"extra: {name!r} cannot be merged into {cfg['dataset']!r} training; expected one of "
                             f"{list(ok)} (supported: {SUPPORTED})")
        where = (cfg.get("extra_dirs") or {}).get(name)
        if not where:
            raise ValueError(f"extra: [{name}] needs its folder: set extra_dirs: {{{name}: PATH}}")
        d = Path(os.path.expanduser(str(where))).resolve()
        if not d.is_dir():
            raise FileNotFoundError(f"extra_dirs.{name}: folder {d} does not exist")
        own = load_config(name)
        out[name] = {"dir": d, "labels": d / own["labels"], "meta": d / own["meta"] if own["meta"] else None,
                     "images_dir": d / own["images_dir"]}
        if not out[name]["labels"].is_file():
            raise FileNotFoundError(f"extra_dirs.{name}: no {own['labels']} in {d}")
        if out[name]["meta"] is not None and not out[name]["meta"].is_file():
            out[name]["meta"] = None                    # Data_Entry is optional: patient ids from file names
    return out


def _load(src: dict):
    from data_prep.datasets import load, nih

    images, boxes = load("nih", src["labels"], src["meta"], on_missing_meta="drop")
    return nih.as_vinbigdata_rater(images, boxes)


def link(name: str, src: dict, out: Path) -> dict:
    """Link the boxed images' PNGs into ``out/images`` and write ``out/extra_<name>_meta.csv``."""
    from data_prep.dicom.convert import link_pngs

    images, _, info = _load(src)
    want = [src["images_dir"] / f"{i}.png" for i in images["image_id"]]
    missing = [p for p in want if not p.is_file()]
    if missing:
        log.warning("extra %s: %d boxed image(s) have no PNG in %s, left out, e.g. %s", name, len(missing),
                    src["images_dir"], missing[0].name)
    res = link_pngs([p for p in want if p.is_file()], PrepDir(out).images, PrepDir(out).extra_meta(name))
    res.update(n_missing=len(missing), mapping=info)
    return res


def merge(cfg: dict, images: pd.DataFrame, boxes: pd.DataFrame, out: Path) -> tuple[pd.DataFrame, pd.DataFrame, dict]:
    """``images``/``boxes`` (the training dataset's, PNG sizes attached) + each extra dataset's,
    patient ids prefixed by dataset. Returns the merged tables and ``{name: counts}``."""
    srcs = sources(cfg)
    if not srcs:
        return images, boxes, {}
    from data_prep.core.tables import read_table

    images = images.assign(dataset=cfg["dataset"],
                           patient_id=cfg["dataset"] + "/" + images["patient_id"].astype(str))
    parts_i, parts_b, info = [images], [boxes], {}
    for name, src in srcs.items():
        im, bx, counts = _load(src)
        png = read_table(PrepDir(out).extra_meta(name))[["image_id", "png_height", "png_width"]]
        im = im.drop(columns=[c for c in ("png_height", "png_width") if c in im]).merge(png, on="image_id")
        bx = bx[bx["image_id"].isin(set(im["image_id"]))]
        clash = sorted(set(im["image_id"]) & set(images["image_id"]))
        if clash:
            raise ValueError(f"extra {name}: image id {clash[0]!r} is also a {cfg['dataset']} image; expected "
                             "distinct ids")
        im = im.assign(dataset=name, patient_id=name + "/" + im["patient_id"].astype(str),
                       path=[str(PrepDir(out).png(i)) for i in im["image_id"]])
        im = im[[c for c in images.columns if c in im.columns]]
        parts_i.append(im)
        parts_b.append(bx)
        info[name] = {**counts, "images": len(im), "boxes": len(bx), "patients": int(im["patient_id"].nunique())}
        log.info("extra %s: %d images (%d patients), %d boxes merged as rater(s) %s", name, len(im),
                 info[name]["patients"], len(bx), ",".join(sorted(set(bx["rater"]))))
    return (pd.concat(parts_i, ignore_index=True), pd.concat(parts_b, ignore_index=True), info)
