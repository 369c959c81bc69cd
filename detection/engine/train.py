"""Detector and normal/abnormal classifier training: thin calls into ultralytics' own API.

``cxrdet train --config CONFIG --prep OUT [--fold K] [key=value ...]`` trains a YOLO detector on
``OUT/yolo/fold<K>/data.yaml`` (written by ``cxrdet prep``); ``cxrdet train-cls`` trains the
2-class filter (an ultralytics classify model) on the same fold split. Both write
``<project>/<name>/weights/best.pt`` and return its path.

* ``model``: a model YAML (trained from scratch; ultralytics resolves bundled names such as
  ``yolo11n.yaml``) or a local ``.pt`` (e.g. ``weights/vinbig_phantom_yolo11n.pt``). Nothing is
  ever downloaded: a bare ``yolo11n.pt`` that is not a local file raises a clear error before
  ultralytics would try.
* Grayscale: ``channels: 1`` in data.yaml makes ultralytics build a 1-channel model.
* Run folder: ``<project>/<name>`` (``name`` defaults to ``<dataset>_fold<K>``, ``_cls`` for the
  classifier). It is reused (ultralytics ``exist_ok=True``): training the same name again
  overwrites it. One training at a time per run folder (``.cxrdet.lock`` in it, :func:`run_lock`):
  a second train / train-cls / cv on the same name while one runs stops with a line naming it. ``resume=true`` continues a killed run from ``<project>/<name>/weights/last.pt``
  (ultralytics restores every training argument from that checkpoint).
* ``device``: ``auto`` (default: the first GPU torch sees, else the CPU; the choice is logged),
  ``cpu``, ``0`` or ``0,1`` (a GPU torch does not see is a one-line error); several GPUs train with ultralytics' own DDP (it re-launches
  itself under ``torch.distributed.run``; the workers inherit the offline environment from
  :mod:`detection.models.runtime`, but callbacks passed in Python do not reach them).
* ``yolo_args`` (a dict in the config) is passed to ``YOLO.train`` as it is, last, so it can override
  anything above (``lr0``, ``mosaic``, ``fliplr``, ``amp``, ``workers``...).
* ``train_labels`` picks the training list prep wrote (fused, radiologist variants, or both;
  :func:`fold_data`); ``init=PATH`` starts from a checkpoint's weights (the fine-tune stage;
  loaded by the safe loader, :func:`detection.models.runtime.open_yolo`).
"""
from __future__ import annotations

import argparse
import logging
import os
import shutil
from pathlib import Path
from typing import Callable

import pandas as pd
import yaml

from data_prep.core.atomic import safe_name
from data_prep.core.config import add_config_arguments, stage_config
from data_prep.core.errors import InputError
from data_prep.core.prepdir import PrepDir
from detection.engine.runs import resolve_model, run_dir, run_lock  # noqa: F401  (train's API)
from detection.models import safe_load

log = logging.getLogger(__name__)

CLS_NAMES = ("abnormal", "normal")  # ultralytics sorts class folders: abnormal = 0, normal = 1


# ----------------------------------------------------------------------------- helpers
def _device(cfg: dict) -> str:
    from detection.models.devices import resolve_device

    return resolve_device(cfg.get("device"))


def _train(model_spec: str, cfg: dict, out: Path, train_args: dict,
           callbacks: dict[str, Callable] | None, more: dict[str, Callable] | None = None) -> Path:
    """Run ``YOLO(model).train`` (or resume) into ``out``; return ``out/weights/best.pt``."""
    import detection.models.runtime  # noqa: F401  (offline before ultralytics)
    from ultralytics import YOLO

    from detection.models.runtime import open_yolo

    last = out / "weights" / "last.pt"
    if cfg.get("resume"):
        if not last.is_file():
            raise FileNotFoundError(f"resume=true: no checkpoint {last} to resume from; "
                                    "run once without resume (same project/name) first")
        log.info("resuming %s from %s", out, last)
        model = open_yolo(last, what="checkpoint")
        kw = {"resume": True}
    else:
        from detection.models import rtdetr

        model = (open_yolo(model_spec, what="model") if str(model_spec).endswith(".pt")
                 else rtdetr.build(model_spec) if rtdetr.is_rtdetr_yaml(model_spec) else YOLO(model_spec))
        kw = {**train_args, "project": str(out.parent), "name": out.name, "exist_ok": True}
        kw.update(cfg.get("yolo_args") or {})
    for event, fn in [*(callbacks or {}).items(), *(more or {}).items()]:  # ultralytics keeps a list per event
        model.add_callback(event, fn)
    try:
        model.train(**kw)
    except Exception as e:  # a .pt ultralytics loads itself (yolo_args pretrained=, resume) refused by its safe mode
        if not safe_load.refused(e):
            raise
        pre = kw.get("pretrained")
        src = pre if isinstance(pre, str) else last if cfg.get("resume") else model_spec
        raise safe_load.guard(src, "weights", "an ultralytics checkpoint (.pt)", e) from e
    best = Path(getattr(model.trainer, "best", out / "weights" / "best.pt"))
    if not best.is_file():
        raise FileNotFoundError(f"training finished but {best} was not written")
    log.info("best weights: %s", best)
    return best


def fold_data(prep_dir: str | os.PathLike, fold: int, cfg: dict) -> Path:
    """The data.yaml fold ``fold`` trains on: ``OUT/yolo/fold<k>/data.yaml`` for ``train_labels:
    fused``, ``data_variants.yaml`` / ``data_both.yaml`` otherwise (prep writes them when its own
    ``train_labels`` asked for variants); its val list is always the fold's images and fused truth."""
    labels = str(cfg.get("train_labels") or "fused")
    data = PrepDir(prep_dir).data_yaml(fold, labels)
    if not data.is_file():
        if labels != "fused" and PrepDir(prep_dir).data_yaml(fold).is_file():
            raise FileNotFoundError(f"{data}: no {labels} training list for fold {fold}; run `cxrdet prep` with "
                                    f"train_labels={labels} (it writes the radiologist variants)")
        raise FileNotFoundError(f"{data}: no YOLO dataset for fold {fold}; run `cxrdet prep` first "
                                f"(folds: {cfg['folds']})")
    return data


# ----------------------------------------------------------------------------- detector
def train_detector(cfg: dict, prep_dir: str | os.PathLike, fold: int | None = None,
                   callbacks: dict[str, Callable] | None = None) -> Path:
    """Train ``cfg['model']`` on ``prep_dir/yolo/fold<fold>/data.yaml``; return ``.../weights/best.pt``.

    ``callbacks`` maps ultralytics events (``on_fit_epoch_end``...) to functions, added with
    ``YOLO.add_callback`` (single-process runs only). The run folder is locked (:func:`run_lock`)."""
    cfg = dict(cfg)
    if fold is not None:
        cfg["fold"] = int(fold)
    with run_lock(run_dir(cfg), "cxrdet train"):
        return _train_detector(cfg, prep_dir, callbacks)


def _train_detector(cfg: dict, prep_dir, callbacks) -> Path:
    from detection.models import family

    if family(cfg["model"]) == "tv":   # torchvision's detectors train in their own loop, on the COCO export
        from detection.engine.train_tv import train as train_tv

        return train_tv(cfg, prep_dir, int(cfg["fold"]), run_dir(cfg), callbacks)
    data = fold_data(prep_dir, int(cfg["fold"]), cfg)
    spec = resolve_model(cfg["model"]) if not cfg.get("resume") else cfg["model"]
    from detection.models.checkpoints import init_weights

    init = init_weights(cfg)
    if init is not None and not cfg.get("resume"):
        spec = str(init)        # the fine-tune stage: ultralytics starts from the checkpoint's model and weights
    out = run_dir(cfg)
    args = dict(data=str(data.resolve()), epochs=int(cfg["epochs"]), imgsz=int(cfg["imgsz"]),
                batch=int(cfg["batch"]), device=_device(cfg), patience=int(cfg["patience"]),
                seed=int(cfg["seed"]), workers=int(cfg["workers"]))
    log.info("training %s on %s -> %s", spec, data, out)
    scored: dict[str, Callable] = {}
    if "," in args["device"]:  # DDP workers re-launch themselves: callbacks given here never reach them
        log.warning("device=%s: several GPUs train in other processes; no per-epoch competition score, "
                    "best.pt follows ultralytics' fitness", args["device"])
    else:
        from detection.engine.epoch_score import FoldScore, yolo_callbacks

        scorer = FoldScore.maybe(cfg, prep_dir, int(cfg["fold"]), out)
        if scorer is not None:
            scored = yolo_callbacks(scorer, str(cfg.get("select_by") or "competition"))
    best = _train(spec, cfg, out, args, callbacks, scored)
    from detection.engine.epoch_score import closing_line

    log.info("%s", closing_line(best, str(cfg.get("select_by") or "competition")))
    return best


# ----------------------------------------------------------------------------- classifier
def abnormal_ids(prep_dir: Path) -> set[str]:
    """Image ids with at least one box: from ``fused_boxes.csv``, else non-empty ``labels/*.txt``."""
    fused = PrepDir(prep_dir).fused_boxes_csv
    if fused.is_file():
        df = pd.read_csv(fused, usecols=["image_id"], dtype={"image_id": str})
        return set(df["image_id"])
    labels = prep_dir / "labels"
    if not labels.is_dir():
        raise FileNotFoundError(f"{prep_dir}: neither fused_boxes.csv nor labels/ to tell abnormal images apart")
    return {p.stem for p in labels.glob("*.txt") if p.read_text().strip()}


def _link(src: Path, dst: Path) -> None:
    """Hard link ``src`` at ``dst``; symlink across file systems; copy as a last resort."""
    if dst.exists() or dst.is_symlink():
        dst.unlink()
    try:
        os.link(src, dst)
    except OSError:
        try:
            dst.symlink_to(src.resolve())
        except OSError:
            shutil.copyfile(src, dst)


def build_cls_dataset(prep_dir: str | os.PathLike, fold: int, out: str | os.PathLike) -> dict[str, int]:
    """Write ``out/{train,val}/{normal,abnormal}/<image_id>.png`` links to the prep PNGs.

    Validation = ``folds.csv`` rows with ``fold == fold``; train = the rest. Returns counts
    ``{"train/normal": n, ...}``. Images listed in folds.csv but missing on disk are reported
    (logged, counted under ``"missing"``) and skipped."""
    prep_dir, out = Path(prep_dir), Path(out)
    folds = pd.read_csv(PrepDir(prep_dir).folds_csv, dtype={"image_id": str})
    for col in ("image_id", "fold"):
        if col not in folds:
            raise ValueError(f"{PrepDir(prep_dir).folds_csv}: missing column {col!r}; expected image_id,fold")
    if fold not in set(folds["fold"].astype(int)):
        raise ValueError(f"{PrepDir(prep_dir).folds_csv}: fold {fold} not present; folds are "
                         f"{sorted(set(folds['fold'].astype(int)))}")
    paths = {}
    if (PrepDir(prep_dir).images_csv).is_file():
        it = pd.read_csv(PrepDir(prep_dir).images_csv, dtype={"image_id": str, "path": str})
        paths = {r.image_id: Path(r.path) for r in it.itertuples() if isinstance(r.path, str) and r.path}
    abnormal = abnormal_ids(prep_dir)
    if out.exists():
        shutil.rmtree(out)
    counts: dict[str, int] = {}
    missing = []
    for r in folds.itertuples():
        src = paths.get(r.image_id, prep_dir / "images" / f"{r.image_id}.png")
        if not src.is_absolute() and not src.is_file():
            src = prep_dir / src
        if not src.is_file():
            missing.append(str(src))
            continue
        split = "val" if int(r.fold) == fold else "train"
        cls = "abnormal" if r.image_id in abnormal else "normal"
        d = out / split / cls
        d.mkdir(parents=True, exist_ok=True)
        _link(src, d / f"{safe_name(r.image_id)}{src.suffix}")
        counts[f"{split}/{cls}"] = counts.get(f"{split}/{cls}", 0) + 1
    for split in ("train", "val"):  # ultralytics needs both class folders in both splits
        for cls in CLS_NAMES:
            (out / split / cls).mkdir(parents=True, exist_ok=True)
    empty = [f"{s}/{c}" for s in ("train", "val") for c in CLS_NAMES if not counts.get(f"{s}/{c}")]
    if empty:
        log.warning("classifier dataset fold %d: no images in %s; the classifier cannot learn or be "
                    "checked on that class", fold, ", ".join(empty))
    if missing:
        log.warning("classifier dataset: %d image(s) in folds.csv not found, skipped; first: %s",
                    len(missing), missing[0])
        counts["missing"] = len(missing)
    log.info("classifier dataset %s: %s", out, counts)
    return counts


def train_classifier(cfg: dict, prep_dir: str | os.PathLike, fold: int | None = None,
                     callbacks: dict[str, Callable] | None = None) -> Path:
    """Train ``cfg['cls_model']`` (normal vs abnormal) on fold ``fold``; return ``.../weights/best.pt``.

    The dataset is built under ``<run>/cls_data`` from ``folds.csv`` and the fused boxes."""
    cfg = dict(cfg)
    if fold is not None:
        cfg["fold"] = int(fold)
    with run_lock(run_dir(cfg, "_cls"), "cxrdet train-cls"):
        return _train_classifier(cfg, prep_dir, callbacks)


def _train_classifier(cfg: dict, prep_dir, callbacks) -> Path:
    out = run_dir(cfg, "_cls")
    spec = resolve_model(cfg["cls_model"], "cls_model") if not cfg.get("resume") else cfg["cls_model"]
    if not cfg.get("resume"):
        build_cls_dataset(prep_dir, int(cfg["fold"]), out / "cls_data")
    args = dict(data=str(out / "cls_data"), epochs=int(cfg["cls_epochs"]), imgsz=int(cfg["cls_imgsz"]),
                batch=int(cfg["batch"]), device=_device(cfg), patience=int(cfg["patience"]),
                seed=int(cfg["seed"]), workers=int(cfg["workers"]))
    log.info("training classifier %s -> %s", spec, out)
    return _train(spec, cfg, out, args, callbacks)


# ----------------------------------------------------------------------------- what a run trained on
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")


def trained_on(weights: str | Path) -> str:
    """The dataset a model was trained on, as ultralytics recorded it: ``train_args["data"]`` of
    the checkpoint (a data.yaml, or a classification folder), else ``args.yaml`` beside the run."""
    from detection.models.runtime import ultralytics_checkpoint

    ck = ultralytics_checkpoint(weights, "weights")
    data = (ck.get("train_args") or {}).get("data") if isinstance(ck, dict) else None
    if not data:
        args = Path(weights).parents[1] / "args.yaml"
        data = (yaml.safe_load(args.read_text()) or {}).get("data") if args.is_file() else None
    if not data:
        raise ValueError(f"{weights}: the checkpoint records no training data (train_args['data']) and "
                         f"there is no args.yaml beside it; cannot check it for leaks")
    return str(data)


def _images_under(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)


def train_list(data: str | Path) -> list[Path]:
    """The training images of a dataset as ultralytics reads it: a data.yaml's ``train`` (a .txt
    list of paths, a folder, or a list of those; relative to its ``path``), or a classification
    folder's ``train/`` subfolder."""
    data = Path(data)
    if data.suffix == ".json" and data.is_file():   # a COCO export (tv: models): its images' PNG files
        import json

        return [Path(im["png_file"]) for im in json.loads(data.read_text()).get("images", []) if "png_file" in im]
    if data.is_dir():
        if not (data / "train").is_dir():
            raise FileNotFoundError(f"{data}: classification dataset without a train/ folder")
        return _images_under(data / "train")
    if not data.is_file():
        raise FileNotFoundError(f"{data}: the training data the model recorded no longer exists; "
                                "cannot check it for leaks (re-run with --force to retrain)")
    d = yaml.safe_load(data.read_text()) or {}
    if "train" not in d:
        raise ValueError(f"{data}: no 'train' key; expected an ultralytics data.yaml")
    root = Path(d.get("path") or data.parent)
    root = root if root.is_absolute() else data.parent / root
    out: list[Path] = []
    for entry in d["train"] if isinstance(d["train"], list) else [d["train"]]:
        p = Path(entry)
        p = p if p.is_absolute() else root / p
        if p.is_dir():
            out += _images_under(p)
        elif p.suffix == ".txt" and p.is_file():
            for line in p.read_text().splitlines():
                if line.strip():
                    q = Path(line.strip())
                    out.append(q if q.is_absolute() else p.parent / q)
        elif p.is_file():
            out.append(p)
        else:
            raise FileNotFoundError(f"{data}: train entry {entry!r} ({p}) does not exist")
    return out


def checkpoint_finished(last: Path) -> bool:
    """True when ``last.pt`` holds a finished training: stripped by ultralytics at the end
    (``epoch`` -1), or saved after the last epoch (killed before the strip: nothing to resume)."""
    from detection.models.runtime import ultralytics_checkpoint

    try:
        ck = ultralytics_checkpoint(last, "checkpoint")
    except InputError as e:  # a checkpoint cut short by the kill: nothing to resume from
        if safe_load.refused(e.__cause__ or e):
            raise   # a planted file is not "cut short": never trained over silently
        raise ValueError(f"{last}: unreadable checkpoint ({type(e.__cause__ or e).__name__})") from e
    epoch = ck.get("epoch", -1)
    return epoch == -1 or epoch + 1 >= int((ck.get("train_args") or {}).get("epochs", 0))


# ----------------------------------------------------------------------------- CLI
def _add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--prep", required=True, help="output folder of `cxrdet prep`")
    p.epilog = ("key=value overrides any config key, e.g. model=yolo11n.yaml epochs=3 imgsz=512 batch=16 "
                "device=cpu|0|0,1 resume=true name=myrun; train-cls: cls_task=multilabel cls_arch=resnet18 "
                "cls_epochs=20 cls_imgsz=256.")
    add_config_arguments(p, ["fold", "model", "epochs", "imgsz", "batch", "device"], retired_positional=True)


def add_arguments_train(p: argparse.ArgumentParser) -> None:
    _add_common(p)


def run_train(args: argparse.Namespace) -> int:
    from detection.engine.epoch_score import closing_line

    cfg = stage_config(args)
    safe_load.configure(cfg)   # trust_weights: what a model file may run on load
    best = train_detector(cfg, args.prep, cfg["fold"])
    print(closing_line(best, str(cfg.get("select_by") or "competition")))
    return 0


def add_arguments_train_cls(p: argparse.ArgumentParser) -> None:
    _add_common(p)


def run_train_cls(args: argparse.Namespace) -> int:
    cfg = stage_config(args)
    safe_load.configure(cfg)   # trust_weights: what a model file may run on load
    if cfg["cls_task"] == "multilabel":
        from detection.engine.classifier import train_multilabel

        best = train_multilabel(cfg, args.prep, cfg["fold"])
    elif cfg["cls_task"] == "binary":
        best = train_classifier(cfg, args.prep, cfg["fold"])
    else:
        raise ValueError(f"cls_task {cfg['cls_task']!r}; expected binary (ultralytics 2-class filter) or multilabel")
    print(best)
    return 0
