"""``cxrdet prep --config CONFIG --data DIR --out OUT [key=value ...]``: a dataset folder -> training-ready OUT.

Steps, each skipped when already done with the same inputs and settings::

    convert  DIR/<images_dir> DICOMs -> OUT/images/<id>.png + OUT/meta.csv   (data_prep.dicom.convert)
             (a folder of PNGs, e.g. Kaggle's public 512 px sets or NIH, is used as is:
             OUT/images/<id>.png are symlinks to them, meta.csv holds their PNG sizes)
    load     DIR/<labels> (+ DIR/<meta>, else OUT/meta.csv) -> OUT/images.csv, OUT/boxes.csv
    fuse     boxes.csv -> OUT/fused_boxes.csv (+ OUT/fused.csv, VinBigData's train.csv form)
    folds    fused_boxes.csv -> OUT/folds.csv                               (data_prep.labels.folds)
    export   -> OUT/labels/<id>.txt, OUT/yolo/fold<k>/{train,val}.txt + data.yaml,
                OUT/coco/fold<k>_{train,val}.json                          (data_prep.labels.export)
             (squarify / train_labels variants|both: + OUT/train_items, data_variants.yaml, data_both.yaml)

``OUT/prep.json`` is the manifest: the config used, counts, and per step its fingerprint (size
and mtime_ns of every input file, the config values the step depends on), its outputs and when it
finished. A step re-runs when its fingerprint changed or an output is missing; since a step's
inputs are the previous steps' outputs, a re-run step makes the later ones re-run too (changing
``fusion_iou`` redoes fuse, folds and export, not convert or load). Every file is written to a
temporary name and renamed; a step is marked done only after all its outputs are in place.

Tables: ``images.csv`` is the image table (original ``height``/``width``, ``png_height``,
``png_width``, ``path`` = absolute PNG path in OUT/images), ``boxes.csv`` the raw per-rater box
table, ``fused_boxes.csv`` the fused box table (``fusion: none`` keeps the raw boxes, with
``n_raters`` 1), all in ORIGINAL pixels (``data_prep/core/boxes.py``).
"""
from __future__ import annotations

import argparse
import hashlib
import inspect
import json
import logging
import os
import shutil
import time
from pathlib import Path

import pandas as pd

from data_prep.core.config import load_config
from data_prep.datasets import DATASETS, describe
from data_prep.core.tables import read_table  # noqa: F401 (re-exported: prep's tables are read with it)
from data_prep.core.atomic import write_csv, write_text
from data_prep.core.prepdir import PrepDir
from data_prep.dicom.voi import VoiOptions

log = logging.getLogger(__name__)

EXPORT_FORMATS = ("yolo", "coco")
# What prep asks of a dataset's description (data_prep.datasets.describe): ``extra_files`` (optional
# files its loader can use), ``boxed_only`` (unboxed images are NOT normal: only a subset was boxed;
# NIH's other 111k images carry image-level findings nobody drew: only the boxed images are kept),
# ``size_meta`` (False: its `meta` is not an image-size table, e.g. NIH's Data_Entry_2017.csv, whose
# boxes are in the released 1024 px PNG frame whatever the PNG on disk: no fallback to convert's
# meta.csv), ``competition_csv`` (write fused.csv in the competition's train.csv layout), ``classes``.


# ----------------------------------------------------------------------------- small helpers


def _write_json(obj, path: Path) -> None:
    write_text(path, json.dumps(obj, indent=2, default=str))


def file_stamp(path) -> list | None:
    """``[size, mtime_ns]`` of a file, or None when it does not exist."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    return [st.st_size, st.st_mtime_ns]


def files_stamp(paths: list[Path]) -> dict:
    """Fingerprint of many files: count, total size, newest mtime_ns, and a hash of the names."""
    sizes, mtimes = 0, 0
    for p in paths:
        st = os.stat(p)
        sizes += st.st_size
        mtimes = max(mtimes, st.st_mtime_ns)
    names = hashlib.sha1("\n".join(sorted(p.name for p in paths)).encode()).hexdigest()[:16]
    return {"n": len(paths), "bytes": sizes, "mtime_ns": mtimes, "names": names}


def _jsonable(x):
    return json.loads(json.dumps(x, default=str))


def _source_images(src: Path) -> tuple[str, list[Path]]:
    """("dicom", DICOM paths) or ("png", PNG paths) found in ``src``; DICOMs win when both exist."""
    if not src.is_dir():
        raise FileNotFoundError(f"prep: images folder {src} does not exist (config images_dir)")
    from data_prep.dicom.convert import dicom_paths

    dicoms = dicom_paths(src)
    if dicoms:
        return "dicom", dicoms
    pngs = sorted(p for p in src.iterdir() if p.suffix.lower() == ".png" and not p.name.startswith("."))
    if pngs:
        return "png", pngs
    raise FileNotFoundError(f"prep: no DICOM (.dcm/.dicom) or PNG files in {src}")


def class_names(cfg: dict, boxes: pd.DataFrame | None = None) -> list[str]:
    """Finding class names in class_id order: the dataset description's (config ``classes``
    replaces them), else the names seen in ``boxes``."""
    if cfg.get("classes"):
        return [str(c) for c in cfg["classes"]]
    if cfg.get("dataset") in DATASETS and DATASETS[cfg["dataset"]].classes:
        return list(DATASETS[cfg["dataset"]].classes)
    if boxes is None or not len(boxes):
        raise ValueError(f"prep: no class names for dataset {cfg['dataset']!r}; set `classes` in the config")
    m = boxes.drop_duplicates("class_id").set_index("class_id")["class_name"]
    return [str(m.get(i, f"class_{i}")) for i in range(int(m.index.max()) + 1)]


# ----------------------------------------------------------------------------- the runner
class _Run:
    """The manifest and the skip-or-run logic of one prep call."""

    def __init__(self, out: Path, cfg: dict, data: Path):
        self.out, self.cfg, self.data = out, cfg, data
        self.layout = PrepDir(out)
        path = self.layout.manifest
        self.manifest = json.loads(path.read_text()) if path.is_file() else {}
        self.manifest.setdefault("steps", {})
        self.ran: list[str] = []
        self.reused: list[str] = []

    def save(self) -> None:
        self.manifest["config"] = {k: v for k, v in self.cfg.items()}
        self.manifest["data"] = str(self.data)
        _write_json(self.manifest, self.layout.manifest)

    def step(self, name: str, fingerprint: dict, outputs: list[str], fn) -> bool:
        """Run ``fn() -> dict info`` unless ``name`` is done with ``fingerprint`` and ``outputs``
        (:class:`PrepDir` paths, recorded relative to OUT) all exist. Returns True when it ran."""
        fingerprint = _jsonable(fingerprint)
        prev = self.manifest["steps"].get(name)
        if prev and prev.get("fingerprint") == fingerprint and all(Path(o).exists() for o in outputs):
            log.info("prep: reusing %s (inputs and settings unchanged)", name)
            self.reused.append(name)
            return False
        why = "not done before" if not prev else (
            "outputs missing" if prev.get("fingerprint") == fingerprint else
            "changed: " + ", ".join(sorted(k for k in set(fingerprint) | set(prev.get("fingerprint", {}))
                                           if fingerprint.get(k) != prev.get("fingerprint", {}).get(k))))
        log.info("prep: running %s (%s)", name, why)
        self.manifest["steps"].pop(name, None)
        self.save()
        t = time.time()
        info = fn() or {}
        self.manifest["steps"][name] = {"fingerprint": fingerprint, "outputs": [self.layout.rel(o) for o in outputs],
                                        "finished": time.strftime("%Y-%m-%dT%H:%M:%S"),
                                        "seconds": round(time.time() - t, 3), "info": _jsonable(info)}
        self.save()
        self.ran.append(name)
        return True

    def info(self, name: str) -> dict:
        return self.manifest["steps"].get(name, {}).get("info", {})


# ----------------------------------------------------------------------------- steps
def _convert(run: _Run, src: Path) -> None:
    cfg, out = run.cfg, run.out
    mode, files = _source_images(src)
    fp = {"src": str(src), "mode": mode, "files": files_stamp(files)}
    if mode == "dicom":
        fp.update(size=cfg["size"], keep_ratio=cfg["keep_ratio"], voi=VoiOptions.from_config(cfg).tag())

    def do():
        images_dir = run.layout.images
        images_dir.mkdir(parents=True, exist_ok=True)
        if mode == "dicom":
            from data_prep.dicom.convert import convert_folder

            res = convert_folder(src, images_dir, size=cfg["size"], keep_ratio=cfg["keep_ratio"],
                                 options=VoiOptions.from_config(cfg), workers=cfg["workers"],
                                 overwrite=False, scheduler=cfg.get("scheduler"))
            log.info("prep convert: %s", res.summary())
            meta = read_table(images_dir / run.layout.meta.name)
            write_csv(meta, run.layout.meta)
            return {"mode": mode, "n_sources": len(files), "n_converted": res.n_converted,
                    "n_skipped": res.n_skipped, "n_errors": len(res.errors),
                    "errors": [list(e) for e in res.errors[:20]]}
        if not cfg["meta"] and describe(cfg).size_meta:
            log.warning("prep convert: %s holds PNGs and the config has no `meta`: their sizes are taken as "
                        "the original sizes; if they are resized copies, set meta=<image_id,dim0,dim1 file>", src)
        from data_prep.dicom.convert import link_pngs

        return link_pngs(files, images_dir, run.layout.meta)

    run.step("convert", fp, [run.layout.images, run.layout.meta], do)


def _extra(run: _Run) -> None:
    """Link the ``extra`` datasets' boxed PNGs into OUT/images (data_prep/labels/extra.py)."""
    from data_prep.labels import extra

    for name, src in extra.sources(run.cfg).items():
        fp = {"dir": str(src["dir"]), "labels": file_stamp(src["labels"]),
              "meta": file_stamp(src["meta"]) if src["meta"] else None}
        run.step(f"extra_{name}", fp, [run.layout.extra_meta(name)], lambda: extra.link(name, src, run.out))


def _loader_kwargs(cfg: dict, data: Path) -> tuple[dict, dict]:
    """Keyword arguments this dataset's loader accepts and prep can fill; and their files."""
    ds = describe(cfg)
    params = inspect.signature(ds.load).parameters
    kw, files = {}, {}
    if "on_missing_meta" in params:
        kw["on_missing_meta"] = "drop"            # images that failed conversion: dropped, reported
    for key, names in ds.extra_files:
        if key in params:
            for n in names:
                if (data / n).is_file():
                    kw[key] = files[key] = data / n
                    break
    return kw, files


def _load(run: _Run) -> None:
    cfg, out, data = run.cfg, run.out, run.data
    if cfg["dataset"] not in DATASETS:
        raise ValueError(f"prep: dataset {cfg['dataset']!r}; expected one of {sorted(DATASETS)}")
    ds = describe(cfg)
    labels = data / cfg["labels"]
    if not labels.is_file():
        raise FileNotFoundError(f"prep: labels file {labels} does not exist (config labels={cfg['labels']!r})")
    meta = data / cfg["meta"] if cfg["meta"] else (run.layout.meta if ds.size_meta else None)
    if meta is not None and not meta.is_file():
        raise FileNotFoundError(f"prep: meta file {meta} does not exist (config meta={cfg['meta']!r})")
    kw, extra = _loader_kwargs(cfg, data)
    fp = {"dataset": cfg["dataset"], "labels": [str(labels), file_stamp(labels)],
          "meta": [str(meta), file_stamp(meta)] if meta else None, "png_meta": file_stamp(run.layout.meta),
          "extra": {k: [str(v), file_stamp(v)] for k, v in extra.items()}}
    from data_prep.labels.fusion import parse_raters
    if parse_raters(cfg["raters"]):   # all = every radiologist = none named
        fp["raters"] = cfg["raters"]
    from data_prep.labels import extra as extra_sets
    for name, src in extra_sets.sources(cfg).items():
        fp[f"extra_{name}"] = [str(src["labels"]), file_stamp(src["labels"]), file_stamp(src["meta"]) if src["meta"]
                               else None, file_stamp(out / f"extra_{name}_meta.csv")]

    def do():
        from data_prep.labels.fusion import parse_raters, select_raters

        images, boxes = ds.load(labels, meta, **kw)
        repairs = dict(boxes.attrs.get("repairs", {}))
        if ds.boxed_only:
            unboxed = ~images["image_id"].isin(set(boxes["image_id"]))
            log.info("prep load: %s: %d image(s) without boxes left out (not normal, just not boxed); "
                     "%d boxed images kept", cfg["dataset"], int(unboxed.sum()), int((~unboxed).sum()))
            images = images[~unboxed]
        png = read_table(run.layout.meta)[["image_id", "png_height", "png_width"]]
        images = images.drop(columns=[c for c in ("png_height", "png_width") if c in images])
        images = images.merge(png, on="image_id", how="left")
        no_png = images["png_height"].isna()
        if no_png.any():
            log.warning("prep load: %d labelled image(s) have no PNG (failed or missing), dropped, e.g. %s",
                        int(no_png.sum()), images.loc[no_png, "image_id"].head(5).tolist())
            images = images[~no_png]
            boxes = boxes[boxes["image_id"].isin(set(images["image_id"]))]
        repairs["no_png_dropped"] = int(no_png.sum())
        images["path"] = [str(run.layout.png(i)) for i in images["image_id"]]   # symlinks kept
        images, boxes, merged = extra_sets.merge(cfg, images, boxes, out)
        images, boxes, chosen = select_raters(images, boxes, parse_raters(cfg["raters"]), cfg["rater_weights"])
        for c in ("png_height", "png_width"):
            images[c] = images[c].astype("int64")
        bad = (images["height"] <= 0) | (images["width"] <= 0)
        if bad.any():
            raise ValueError(f"prep load: image {images.loc[bad, 'image_id'].iloc[0]!r} has height x width "
                             f"{images.loc[bad, 'height'].iloc[0]} x {images.loc[bad, 'width'].iloc[0]}; "
                             f"expected sizes from {meta}")
        write_csv(images, run.layout.images_csv)
        write_csv(boxes, run.layout.boxes_csv)
        n_unused = int((~png["image_id"].isin(set(images["image_id"]))).sum())  # the training dataset's PNGs
        if n_unused:
            log.info("prep load: %d PNG(s) without labels are not used", n_unused)
        return {"repairs": repairs, "n_png_unlabelled": n_unused, **({"raters": chosen} if chosen else {}),
                **({"extra": merged} if merged else {})}

    run.step("load", fp, [run.layout.images_csv, run.layout.boxes_csv], do)


def _fuse(run: _Run) -> None:
    cfg, out = run.cfg, run.out
    keys = ("fusion", "fusion_iou", "fusion_skip", "fusion_conf_type") + (("rater_weights",) if cfg["rater_weights"] else ())
    competition = describe(cfg).competition_csv
    fp = {k: cfg[k] for k in keys} | {"images": file_stamp(run.layout.images_csv),
                                     "boxes": file_stamp(run.layout.boxes_csv), "competition_csv": competition}

    def do():
        from data_prep.labels.fusion import fuse, write_competition_csv

        images, boxes = read_table(run.layout.images_csv), read_table(run.layout.boxes_csv)
        fused = fuse(boxes, images, method=cfg["fusion"], iou_thr=cfg["fusion_iou"],
                     skip_box_thr=cfg["fusion_skip"], conf_type=cfg["fusion_conf_type"], weights=cfg["rater_weights"])
        write_csv(fused, run.layout.fused_boxes_csv)
        if competition:
            write_competition_csv(fused, images, run.layout.fused_csv)
        return {"dropped": dict(fused.attrs.get("dropped", {}))}

    run.step("fuse", fp, [run.layout.fused_boxes_csv] + ([run.layout.fused_csv] if competition else []), do)


def _folds(run: _Run) -> None:
    cfg, out = run.cfg, run.out
    fp = {"folds": cfg["folds"], "seed": cfg["seed"], "images": file_stamp(run.layout.images_csv),
          "fused": file_stamp(run.layout.fused_boxes_csv)}

    def do():
        from data_prep.labels.folds import make_folds

        folds = make_folds(read_table(run.layout.images_csv), read_table(run.layout.fused_boxes_csv),
                           k=cfg["folds"], seed=cfg["seed"])
        write_csv(folds, run.layout.folds_csv)

    run.step("folds", fp, [run.layout.folds_csv], do)


def _export(run: _Run) -> None:
    cfg, out = run.cfg, run.out
    formats = list(cfg["export"] or [])
    unknown = [f for f in formats if f not in EXPORT_FORMATS]
    if unknown:
        raise ValueError(f"prep: export {unknown}; expected a list of {list(EXPORT_FORMATS)}")
    fp = {k: cfg[k] for k in ("export", "channels", "include_normal", "classes", "dataset")} | {
        "images": file_stamp(run.layout.images_csv), "fused": file_stamp(run.layout.fused_boxes_csv),
        "folds": file_stamp(run.layout.folds_csv)}
    if cfg.get("squarify") is not None:         # only when set: folders prepared before the key stay valid
        fp["squarify"] = cfg["squarify"]
    variants = cfg.get("train_labels", "fused") != "fused"
    if variants:
        fp["train_labels"] = "variants"           # both and variants write the same lists
        fp["boxes"] = file_stamp(run.layout.boxes_csv)
    L = run.layout
    outputs = ([L.labels, L.yolo] if "yolo" in formats else []) + ([L.coco] if "coco" in formats else [])
    if "yolo" in formats and (cfg.get("squarify") is not None or variants):
        outputs.append(L.train_items)

    def do():
        from data_prep.labels.export import write_coco, write_yolo

        images, fused = read_table(run.layout.images_csv), read_table(run.layout.fused_boxes_csv)
        folds = read_table(run.layout.folds_csv)
        names = class_names(cfg, fused)
        info = {"class_names": names}
        raw = None
        if variants:                             # the radiologists' own boxes (after `raters`): one item each
            raw = read_table(run.layout.boxes_csv)
            if not (raw["rater"].astype(str) != "").any() and "raters" not in images:
                raise ValueError(f"prep: train_labels={cfg['train_labels']}: {run.layout.boxes_csv} carries no "
                                 "radiologist ids (column rater); expected per-radiologist labels (VinBigData)")
        for fmt in EXPORT_FORMATS:              # a format no longer asked for: its old folder goes
            if fmt not in formats and getattr(L, fmt).exists():
                shutil.rmtree(getattr(L, fmt))
        if "yolo" not in formats and (run.layout.train_items).exists():   # the YOLO training items go with it
            shutil.rmtree(run.layout.train_items)
        if "yolo" in formats:
            res = write_yolo(images, fused, folds, out, names, channels=cfg["channels"],
                             include_normal=cfg["include_normal"], squarify=cfg.get("squarify"), rater_boxes=raw)
            info["yolo_dropped_boxes"] = res["n_dropped"]
            info[L.train_items.name] = res["n_items"]   # the manifest key is the folder's name
        if "coco" in formats:
            write_coco(images, fused, folds, out, names, include_normal=cfg["include_normal"],
                       squarify=cfg.get("squarify"), rater_boxes=raw)
        return info

    run.step("export", fp, outputs, do)


# ----------------------------------------------------------------------------- public
def prep(cfg: dict | str, data, out) -> dict:
    """Run every prep step for dataset folder ``data`` into ``out`` (see the module docstring).

    ``cfg``: a merged config (:func:`data_prep.core.config.load_config`) or a config name/path.
    Returns ``{name: Path or list[Path]}``: out, images, meta, images_csv, boxes_csv,
    fused_boxes_csv, fused_csv (VinBigData), folds_csv, labels, data_yaml (per fold), coco (per
    fold, train then val), manifest; plus ``summary`` (dict of counts) and ``ran``/``reused``
    (step names)."""
    if not isinstance(cfg, dict):
        cfg = load_config(cfg)
    data, out = Path(data).resolve(), Path(out).resolve()
    if not data.is_dir():
        raise FileNotFoundError(f"prep: dataset folder {data} does not exist (--data)")
    out.mkdir(parents=True, exist_ok=True)
    run = _Run(out, cfg, data)
    _convert(run, data / cfg["images_dir"])
    _extra(run)
    _load(run)
    _fuse(run)
    _folds(run)
    _export(run)
    summary = _summary(run)
    run.manifest["counts"] = summary
    run.save()
    k = int(cfg["folds"])
    L = run.layout
    paths = {"out": out, "images": run.layout.images, "meta": run.layout.meta, "images_csv": run.layout.images_csv,
             "boxes_csv": run.layout.boxes_csv, "fused_boxes_csv": run.layout.fused_boxes_csv,
             "folds_csv": run.layout.folds_csv, "manifest": L.manifest}
    if (run.layout.fused_csv).is_file() and "fuse" in run.manifest["steps"] and \
            run.manifest["steps"]["fuse"]["fingerprint"].get("competition_csv"):
        paths["fused_csv"] = run.layout.fused_csv
    if "yolo" in cfg["export"]:
        paths["labels"] = run.layout.labels
        paths["data_yaml"] = [L.data_yaml(i) for i in range(k)]
    if "coco" in cfg["export"]:
        paths["coco"] = [L.coco_json(i, s) for i in range(k) for s in ("train", "val")]
    paths.update(summary=summary, ran=run.ran, reused=run.reused)
    return paths


def _summary(run: _Run) -> dict:
    out = run.out
    images, boxes = read_table(run.layout.images_csv), read_table(run.layout.boxes_csv)
    fused, folds = read_table(run.layout.fused_boxes_csv), read_table(run.layout.folds_csv)
    abnormal = int(images["image_id"].isin(set(fused["image_id"])).sum())
    conv = run.info("convert")
    s = {"images": len(images), "abnormal": abnormal, "normal": len(images) - abnormal,
         "boxes_raw": len(boxes), "boxes_fused": len(fused),
         "fold_sizes": folds["fold"].value_counts().sort_index().astype(int).tolist(),
         "conversion_errors": int(conv.get("n_errors", 0)), "repairs": run.info("load").get("repairs", {}),
         "fusion_dropped": run.info("fuse").get("dropped", {})}
    for k in ("raters", "extra"):
        if run.info("load").get(k):
            s[k] = run.info("load")[k]
    log.info("prep summary: %d images (%d normal, %d abnormal), boxes %d raw -> %d fused (%s), "
             "fold sizes %s, conversion errors %d, loader repairs %s",
             s["images"], s["normal"], s["abnormal"], s["boxes_raw"], s["boxes_fused"], run.cfg["fusion"],
             s["fold_sizes"], s["conversion_errors"], {k: v for k, v in s["repairs"].items() if v} or "none")
    return s


# ----------------------------------------------------------------------------- CLI
def add_arguments_prep(parser: argparse.ArgumentParser) -> None:
    from data_prep.core.config import add_config_arguments

    parser.add_argument("--data", required=True, help="dataset folder (competition layout, or PNGs + labels)")
    parser.add_argument("--out", required=True, help="output folder (re-running reuses finished steps)")
    parser.epilog = "key=value pairs override the config, e.g. fusion_iou=0.5 folds=3 size=256."
    add_config_arguments(parser, ["size", "keep_ratio", "workers", "scheduler", "fusion", "fusion_iou", "seed",
                                  "raters"], retired_positional=True,
                         help={"raters": "prep only these radiologists' labels: R8,R10 (images none of them read "
                                         "are left out), or no value = all"})


def run_prep(args: argparse.Namespace) -> int:
    from data_prep.core.config import stage_config

    res = prep(stage_config(args), args.data, args.out)
    s = res["summary"]
    print(f"{'images':<16}{s['images']} ({s['normal']} normal, {s['abnormal']} abnormal)")
    print(f"{'boxes':<16}{s['boxes_raw']} raw -> {s['boxes_fused']} fused")
    for name, e in (s.get("extra") or {}).items():
        print(f"{'extra ' + name:<16}{e['images']} images ({e['patients']} patients), {e['boxes']} boxes as one more "
              f"rater; {e['boxes_dropped']} boxes of {', '.join(e['dropped_classes'])} dropped")
    if s.get("raters"):
        r = s["raters"]
        print(f"{'raters':<16}{','.join(r['raters'])}: {r['images_left_out']} image(s) read by none of them left out")
    print(f"{'fold sizes':<16}{' '.join(map(str, s['fold_sizes']))}")
    print(f"{'steps run':<16}{', '.join(res['ran']) or '-'}; reused {', '.join(res['reused']) or '-'}")
    print(f"{'output':<16}{res['out']}")
    if s["conversion_errors"]:
        print(f"{'errors':<16}{s['conversion_errors']} image(s) failed to convert (see {res['images'] / 'errors.csv'})")
        return 1
    return 0
