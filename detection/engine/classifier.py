"""Multi-label image classifier: a timm backbone trained by a plain PyTorch loop.

``cxrdet train-cls --config CONFIG --prep OUT --fold K cls_task=multilabel [cls_labels=[...]]`` trains on
the PNGs of ``cxrdet prep``: validation = fold K of ``OUT/folds.csv`` (patient-disjoint by
construction; checked), training = the other folds. ``cls_task: binary`` (the default) still
trains the ultralytics 2-class filter (:mod:`detection.engine.train`).

Labels: ``cls_label_table`` (an ``image_labels.csv`` of ``cxrdet labels``), else built from
prep's raw box table (``OUT/boxes.csv``, ``vote: any|majority`` over the radiologists) by
:func:`data_prep.labels.image_level.labels_from_boxes`. The model outputs ``cls_labels`` (null = every label)
plus ``abnormal``; ``cls_images: labels_or_normal`` keeps only images positive for one of
``cls_labels`` or normal (e.g. ``cls_labels: [Effusion]`` on effusion and normal images). Empty
label cells (unknown) are left out of the loss and of the AUC.

Model: ``timm.create_model(cls_arch, pretrained=False, in_chans=1, num_classes=L)`` (grayscale
input; nothing is downloaded); ``cls_pretrained`` = a local file: a timm/torchvision state dict
(loaded by timm, which adapts the first conv to one channel and drops a head of another size)
or a checkpoint of this module (fine-tuning; heads of another size are dropped).

Loop: BCE-with-logits (optional per-label ``pos_weight``: ``cls_pos_weight: auto`` = n_neg/n_pos
of the training fold, or a list), AdamW (``cls_lr``, ``cls_weight_decay``), cosine LR per step,
AMP on CUDA, flip + affine augmentation (torchvision), a tqdm bar per epoch. Each epoch writes
``<run>/weights/last.pt`` (model + optimiser + scheduler + scaler: ``resume=true`` continues from
it) and ``results.csv``; ``best.pt`` is the epoch with the best mean validation AUC (over labels
with both classes in validation), its weights stored in float16 (half the size; loaded as float32). Every file is written through data_prep.core.atomic.

Checkpoint (``torch.save`` of a plain dict, loadable with ``weights_only=True``): ``format``
(:data:`FORMAT`), ``arch``, ``labels`` (output order, ``abnormal`` last), ``imgsz``,
``in_chans``, ``mean``, ``std``, ``state_dict``, ``epoch``, ``val_auc``, ``per_label_auc``,
``dataset``, ``fold``.
"""
from __future__ import annotations

import logging
import math
import os
import time
from pathlib import Path

import cv2
import numpy as np
import pandas as pd

from data_prep.core.atomic import atomic_path, write_csv
from data_prep.core.errors import InputError
from data_prep.labels.image_level import ABNORMAL, label_columns, labels_from_boxes, read_label_table
from data_prep.core.prepdir import PrepDir

log = logging.getLogger(__name__)

FORMAT = "cxrdet-multilabel"
KIND = "a multi-label checkpoint written by `cxrdet train-cls cls_task=multilabel`"
NEEDED = ("arch", "labels", "imgsz", "state_dict")
RESUME_KEYS = ("epoch", "optimizer", "scheduler", "scaler", "best", "history", "rng")
MEAN, STD = 0.5, 0.25
CLS_IMAGES = ("all", "labels_or_normal")


# ----------------------------------------------------------------------------- model + pixels
def build_model(arch: str, n_out: int, pretrained: str | None = None, in_chans: int = 1):
    """A timm model with ``n_out`` logits on ``in_chans``-channel input; never downloads."""
    import timm
    import torch

    if arch not in timm.list_models():
        raise ValueError(f"cls_arch {arch!r} is not a timm model; e.g. resnet18, efficientnet_b0, densenet121 "
                         f"(timm.list_models() lists {len(timm.list_models())})")
    if not pretrained:
        return timm.create_model(arch, pretrained=False, num_classes=n_out, in_chans=in_chans)
    p = Path(pretrained)
    if not p.is_file():
        raise FileNotFoundError(f"cls_pretrained {pretrained!r}: no such local file; nothing can be downloaded "
                                "here: give a local timm state dict or a cxrdet multi-label checkpoint")
    from detection.models import safe_load

    ck = safe_load.load(p, "cls_pretrained", "a timm/torchvision state dict or a cxrdet multi-label checkpoint")
    if not (isinstance(ck, dict) and ck.get("format") == FORMAT):
        # a timm / torchvision state dict: timm adapts the stem and drops a mismatched head
        sd = ck.get("state_dict", ck.get("model", ck)) if isinstance(ck, dict) else ck
        if not isinstance(sd, dict) or not sd or not all(hasattr(v, "shape") for v in sd.values()):
            raise InputError(f"cls_pretrained {p}", f"holds a {type(sd).__name__} without tensors; expected a "
                             "state dict {name: tensor} (timm/torchvision) or a cxrdet multi-label checkpoint")
        try:
            return timm.create_model(arch, pretrained=True, pretrained_cfg_overlay={"state_dict": sd},
                                     num_classes=n_out, in_chans=in_chans)
        except (RuntimeError, KeyError, ValueError, AttributeError) as e:
            raise InputError(f"cls_pretrained {p}", f"does not fit {arch} ({' '.join(str(e).split())[:160]}); "
                             f"expected the state dict of a {arch}") from e
    missing = [k for k in ("arch", "state_dict") if k not in ck]
    if missing:
        raise InputError(f"cls_pretrained {p}", f"multi-label checkpoint without key(s) {', '.join(missing)}; "
                         f"expected {KIND}")
    if ck["arch"] != arch:
        raise ValueError(f"cls_pretrained {p}: a {ck['arch']} checkpoint; cls_arch is {arch}")
    model = timm.create_model(arch, pretrained=False, num_classes=n_out, in_chans=in_chans)
    own = model.state_dict()
    keep = {k: v for k, v in ck["state_dict"].items() if k in own and own[k].shape == v.shape}
    dropped = sorted(set(own) - set(keep))
    model.load_state_dict({**own, **{k: torch.as_tensor(v).to(own[k].dtype) for k, v in keep.items()}})
    log.info("initialised from %s (%d tensors; not taken: %s)", p, len(keep), dropped[:4] or "none")
    return model


def _try_checkpoint(path: Path) -> dict | None:
    from detection.models import safe_load

    try:
        ck = safe_load.load(path, "weights", KIND)
    except InputError:  # an ultralytics / pickled-model / damaged file: not ours (its loader says why)
        return None
    return ck if isinstance(ck, dict) and ck.get("format") == FORMAT else None


def is_multilabel(path: str | os.PathLike) -> bool:
    """True for a checkpoint written by this module (False for ultralytics weights)."""
    p = Path(path)
    return p.suffix == ".pt" and p.is_file() and _try_checkpoint(p) is not None


def load_checkpoint(path: str | os.PathLike) -> dict:
    """Read a multi-label checkpoint (through :mod:`detection.models.safe_load`); one
    :class:`~data_prep.core.errors.InputError` naming the file if it is refused, damaged, not one, or
    lacks a key (``arch``, ``labels``, ``imgsz``, ``state_dict``)."""
    from detection.models import safe_load

    p = Path(path)
    ck = safe_load.load(p, "weights", KIND)
    if not isinstance(ck, dict) or ck.get("format") != FORMAT:
        raise InputError(f"weights {p}", f"not a cxrdet multi-label checkpoint (no format={FORMAT!r}); "
                         "train one with `cxrdet train-cls ... cls_task=multilabel`")
    missing = [k for k in NEEDED if k not in ck]
    if missing:
        raise InputError(f"weights {p}", f"multi-label checkpoint without key(s) {', '.join(missing)}; expected "
                         f"{KIND} with keys {', '.join(NEEDED)}")
    bad = ("labels" if not isinstance(ck["labels"], (list, tuple)) or not ck["labels"] else
           "state_dict" if not isinstance(ck["state_dict"], dict) else
           "imgsz" if not isinstance(ck["imgsz"], int) or ck["imgsz"] < 1 else None)
    if bad:
        raise InputError(f"weights {p}", f"key {bad!r} = {str(ck[bad])[:60]!r} is not usable; expected {KIND}")
    ck["_path"] = str(p)
    return ck


def model_from_checkpoint(ck: dict):
    """The timm model a multi-label checkpoint holds (eval mode); a state dict that does not fit
    its ``arch`` is one line naming the file."""
    model = build_model(ck["arch"], len(ck["labels"]), in_chans=int(ck.get("in_chans", 1)))
    try:
        model.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in ck["state_dict"].items()})
    except (RuntimeError, AttributeError, TypeError) as e:
        where = f"weights {ck.get('_path', '')}".strip()
        raise InputError(where, f"its state_dict does not fit a {ck['arch']} with {len(ck['labels'])} output(s) "
                         f"({' '.join(str(e).split())[:160]}); expected {KIND}") from e
    return model.eval()


def to_gray(img: np.ndarray) -> np.ndarray:
    """uint8 (H, W) or (H, W, 3|4) BGR -> uint8 (H, W)."""
    if img.ndim == 3:
        img = cv2.cvtColor(img, cv2.COLOR_BGRA2GRAY if img.shape[2] == 4 else cv2.COLOR_BGR2GRAY)
    return img


def preprocess(img: np.ndarray, imgsz: int, mean: float = MEAN, std: float = STD) -> np.ndarray:
    """uint8 image -> float32 ``(1, imgsz, imgsz)``: grayscale, square resize (area), scaled."""
    g = to_gray(img)
    if g.shape != (imgsz, imgsz):
        g = cv2.resize(g, (imgsz, imgsz), interpolation=cv2.INTER_AREA)
    return ((g.astype(np.float32) / 255.0 - mean) / std)[None]


# ----------------------------------------------------------------------------- data
def read_png(path: str | os.PathLike) -> np.ndarray:
    img = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if img is None:
        raise ValueError(f"{path}: cannot read the image (not a PNG/JPEG or truncated)")
    if img.dtype == np.uint16:
        img = (img >> 8).astype(np.uint8)
    return img


class ImageSet:
    """torch Dataset of (image tensor (1, S, S), target (L,) with NaN = unknown)."""

    def __init__(self, paths: list[str], targets: np.ndarray, imgsz: int, augment: bool = False):
        self.paths, self.targets, self.imgsz, self.augment = list(paths), targets.astype("float32"), imgsz, augment
        self._aug = None

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int):
        import torch

        x = torch.from_numpy(preprocess(read_png(self.paths[i]), self.imgsz))
        if self.augment:
            if self._aug is None:
                from torchvision.transforms import v2

                self._aug = v2.Compose([v2.RandomHorizontalFlip(0.5),
                                        v2.RandomAffine(degrees=7, translate=(0.05, 0.05), scale=(0.9, 1.1),
                                                        fill=(0.0 - MEAN) / STD)])
            x = self._aug(x)
        return x, torch.from_numpy(self.targets[i])


def select_labels(table: pd.DataFrame, cls_labels, cls_images: str = "all") -> tuple[pd.DataFrame, list[str]]:
    """The model outputs (``cls_labels`` or every label, plus ``abnormal``) and the images kept."""
    have = label_columns(table)
    if ABNORMAL not in have:
        raise ValueError(f"label table: no {ABNORMAL!r} column; expected image_id, <labels>, abnormal")
    want = list(cls_labels) if cls_labels else [c for c in have if c != ABNORMAL]
    unknown = [c for c in want if c not in have]
    if unknown:
        raise ValueError(f"cls_labels {unknown}: not in the label table; expected some of {have}")
    outputs = [c for c in want if c != ABNORMAL] + [ABNORMAL]
    if cls_images not in CLS_IMAGES:
        raise ValueError(f"cls_images {cls_images!r}; expected one of {list(CLS_IMAGES)}")
    if cls_images == "labels_or_normal":
        pos = (table[[c for c in want if c != ABNORMAL]] == 1).any(axis=1) if len(want) else False
        table = table[pos | (table[ABNORMAL] == 0)]
    return table.reset_index(drop=True), outputs


def training_table(cfg: dict, prep_dir: Path) -> pd.DataFrame:
    """Label table joined with prep's folds and PNG paths: image_id, patient_id, path, fold, labels."""
    from data_prep.prep import class_names, read_table

    folds = read_table(PrepDir(prep_dir).folds_csv)
    images = read_table(PrepDir(prep_dir).images_csv)
    if cfg.get("cls_label_table"):
        labels = read_label_table(cfg["cls_label_table"])
    else:
        boxes = read_table(PrepDir(prep_dir).boxes_csv)
        labels = labels_from_boxes(images, boxes, class_names(cfg, boxes), cfg["vote"])
    t = labels.drop(columns=[c for c in ("patient_id",) if c in labels]).merge(
        folds[["image_id", "fold"]], on="image_id", how="inner")
    pid = images.set_index("image_id")["patient_id"].astype(str) if "patient_id" in images else None
    t["patient_id"] = t["image_id"].map(pid) if pid is not None else t["image_id"]
    t["patient_id"] = t["patient_id"].fillna(t["image_id"])
    paths = images.set_index("image_id")["path"] if "path" in images else pd.Series(dtype=str)
    t["path"] = [p if isinstance(p, str) and p else str(PrepDir(prep_dir).png(i))
                 for i, p in zip(t["image_id"], t["image_id"].map(paths))]
    lost = len(labels) - len(t)
    if lost:
        log.warning("%d labelled image(s) are not in %s and are not used", lost, PrepDir(prep_dir).folds_csv)
    if t.empty:
        raise ValueError(f"no image of the label table is in {PrepDir(prep_dir).folds_csv}; expected the same image ids")
    return t


# ----------------------------------------------------------------------------- metrics
def per_label_auc(y: np.ndarray, p: np.ndarray, labels: list[str]) -> dict[str, float]:
    """scikit-learn ROC AUC per column over known (non-NaN) cells; NaN where one class is absent."""
    from sklearn.metrics import roc_auc_score

    out = {}
    for j, name in enumerate(labels):
        k = ~np.isnan(y[:, j])
        yy = y[k, j]
        out[name] = float(roc_auc_score(yy, p[k, j])) if len(np.unique(yy)) == 2 else float("nan")
    return out


def mean_auc(aucs: dict[str, float]) -> float:
    v = [a for a in aucs.values() if not math.isnan(a)]
    return float(np.mean(v)) if v else float("nan")


# ----------------------------------------------------------------------------- training
def _device(cfg: dict):
    import torch

    from detection.models.devices import resolve_device

    chosen = resolve_device(cfg.get("device"))
    d = chosen.removeprefix("cuda:").split(",")[0].strip()
    if d in ("cpu", "mps"):
        return torch.device(d)
    if "," in chosen:
        log.warning("multi-label training uses one GPU: cuda:%s", d)
    return torch.device(f"cuda:{d}" if d.isdigit() else d)


def _pos_weight(spec, y: np.ndarray, labels: list[str]):
    import torch

    if spec in (None, False, "none"):
        return None
    if spec == "auto":
        pos = np.nansum(y == 1, 0)
        neg = np.nansum(y == 0, 0)
        return torch.tensor(np.where(pos > 0, neg / np.maximum(pos, 1), 1.0), dtype=torch.float32)
    if isinstance(spec, (list, tuple)) and len(spec) == len(labels):
        return torch.tensor([float(v) for v in spec], dtype=torch.float32)
    raise ValueError(f"cls_pos_weight {spec!r}; expected null, 'auto' or a list of {len(labels)} numbers "
                     f"(one per output {labels})")


def _save(obj: dict, path: Path) -> None:
    import torch

    with atomic_path(path) as tmp:
        torch.save(obj, tmp)


def predict_arrays(model, loader, device, amp: bool) -> tuple[np.ndarray, np.ndarray]:
    """(targets, sigmoid probabilities) over a loader."""
    import torch

    ys, ps = [], []
    model.eval()
    with torch.no_grad():
        for x, y in loader:
            with torch.autocast(device.type, enabled=amp):
                logits = model(x.to(device, non_blocking=True))
            ps.append(torch.sigmoid(logits.float()).cpu().numpy())
            ys.append(y.numpy())
    return np.concatenate(ys), np.concatenate(ps)


def train_multilabel(cfg: dict, prep_dir: str | os.PathLike, fold: int | None = None) -> Path:
    """Train the multi-label classifier on fold ``fold`` of ``prep_dir``; return ``<run>/weights/best.pt``
    (the run folder locked: :func:`detection.engine.runs.run_lock`)."""
    from detection.engine.runs import run_dir, run_lock

    cfg = dict(cfg)
    if fold is not None:
        cfg["fold"] = int(fold)
    with run_lock(run_dir(cfg, "_cls"), "cxrdet train-cls"):
        return _train_multilabel(cfg, Path(prep_dir))


def _train_multilabel(cfg: dict, prep_dir: Path) -> Path:
    import torch
    from torch.utils.data import DataLoader
    from tqdm import tqdm

    from detection.engine.runs import run_dir

    out = run_dir(cfg, "_cls")
    wdir = out / "weights"
    last = wdir / "last.pt"
    state = None
    if cfg.get("resume"):
        if not last.is_file():
            raise FileNotFoundError(f"resume=true: no checkpoint {last} to resume from; "
                                    "run once without resume (same project/name) first")
        state = load_checkpoint(last)
        gone = [k for k in RESUME_KEYS if k not in state]
        if gone:
            raise InputError(f"checkpoint {last}", f"cannot resume: no {', '.join(gone)}; expected the last.pt a "
                             "multi-label training writes (train again without resume=true)")
        for k in ("arch", "imgsz", "labels"):  # the run's own settings win over the config
            cfg[{"arch": "cls_arch", "imgsz": "cls_imgsz", "labels": "cls_labels"}[k]] = state[k]
        cfg["cls_labels"] = [c for c in state["labels"] if c != ABNORMAL]
        log.info("resuming %s from epoch %d", out, state["epoch"] + 1)

    table, outputs = select_labels(training_table(cfg, prep_dir), cfg["cls_labels"], cfg["cls_images"])
    k = int(cfg["fold"])
    val, trn = table[table["fold"] == k], table[table["fold"] != k]
    if val.empty or trn.empty:
        raise ValueError(f"fold {k}: {len(trn)} training and {len(val)} validation images; expected both > 0 "
                         f"(folds present: {sorted(table['fold'].unique().tolist())})")
    shared = set(trn["patient_id"]) & set(val["patient_id"])
    if shared:
        raise ValueError(f"{PrepDir(prep_dir).folds_csv}: patient {sorted(shared)[0]!r} is in fold {k} and in the "
                         f"training folds ({len(shared)} such); expected patient-disjoint folds")
    imgsz, seed = int(cfg["cls_imgsz"]), int(cfg["seed"])
    torch.manual_seed(seed)
    np.random.seed(seed)
    device = _device(cfg)
    amp = device.type == "cuda" and bool(cfg["cls_amp"])
    y_trn = trn[outputs].to_numpy("float64")
    bs, workers = max(1, int(cfg["batch"])), int(cfg["workers"])
    gen = torch.Generator().manual_seed(seed)
    tl = DataLoader(ImageSet(trn["path"], y_trn, imgsz, augment=bool(cfg["cls_augment"])), batch_size=bs,
                    shuffle=True, num_workers=workers, generator=gen, drop_last=len(trn) > bs,
                    pin_memory=device.type == "cuda", persistent_workers=workers > 0)
    vl = DataLoader(ImageSet(val["path"], val[outputs].to_numpy("float64"), imgsz), batch_size=bs,
                    num_workers=workers, pin_memory=device.type == "cuda")
    model = build_model(cfg["cls_arch"], len(outputs), None if state else cfg.get("cls_pretrained")).to(device)
    pw = _pos_weight(cfg["cls_pos_weight"], y_trn, outputs)
    crit = torch.nn.BCEWithLogitsLoss(reduction="none", pos_weight=None if pw is None else pw.to(device))
    opt = torch.optim.AdamW(model.parameters(), lr=float(cfg["cls_lr"]), weight_decay=float(cfg["cls_weight_decay"]))
    epochs = int(cfg["cls_epochs"])
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(1, epochs * len(tl)))
    scaler = torch.amp.GradScaler(device.type, enabled=amp)
    start, best, history = 0, -math.inf, []
    if state:
        try:
            model.load_state_dict(state["state_dict"])
            opt.load_state_dict(state["optimizer"])
            sched.load_state_dict(state["scheduler"])
            scaler.load_state_dict(state["scaler"])
            start, best, history = int(state["epoch"]) + 1, float(state["best"]), list(state["history"])
            torch.set_rng_state(state["rng"])
        except (RuntimeError, ValueError, TypeError, KeyError) as e:
            raise InputError(f"checkpoint {last}", f"cannot resume from it ({' '.join(str(e).split())[:160]}); "
                             "expected the last.pt a multi-label training writes") from e
    meta = {"format": FORMAT, "arch": cfg["cls_arch"], "labels": outputs, "imgsz": imgsz, "in_chans": 1,
            "mean": MEAN, "std": STD, "dataset": cfg["dataset"], "fold": k}
    log.info("multi-label %s on %d train / %d val images (fold %d), outputs %s, %s%s -> %s", cfg["cls_arch"],
             len(trn), len(val), k, outputs, device, " AMP" if amp else "", out)
    for epoch in range(start, epochs):
        model.train()
        t0, tot, n = time.perf_counter(), 0.0, 0
        bar = tqdm(tl, desc=f"epoch {epoch + 1}/{epochs}", unit="batch", leave=False)
        for x, y in bar:
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            known = ~torch.isnan(y)
            with torch.autocast(device.type, enabled=amp):
                logits = model(x)
            loss_el = crit(logits.float(), torch.nan_to_num(y, nan=0.0))
            loss = (loss_el * known).sum() / known.sum().clamp(min=1)
            opt.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()
            sched.step()
            tot, n = tot + loss.item() * len(x), n + len(x)
            bar.set_postfix(loss=f"{tot / max(n, 1):.4f}")
        yv, pv = predict_arrays(model, vl, device, amp)
        aucs = per_label_auc(yv, pv, outputs)
        score = mean_auc(aucs)
        row = {"epoch": epoch + 1, "train_loss": tot / max(n, 1), "val_mean_auc": score,
               "lr": opt.param_groups[0]["lr"], "seconds": time.perf_counter() - t0,
               **{f"auc_{c}": a for c, a in aucs.items()}}
        history.append(row)
        improved = (not math.isnan(score) and score > best) or (best == -math.inf and epoch == start)
        sd = {kk: v.detach().cpu() for kk, v in model.state_dict().items()}
        if improved:
            best = score if not math.isnan(score) else best
            half = {kk: v.half() if v.is_floating_point() else v for kk, v in sd.items()}  # half the file size
            _save({**meta, "state_dict": half, "epoch": epoch, "val_auc": score, "per_label_auc": aucs}, wdir / "best.pt")
        _save({**meta, "state_dict": sd, "epoch": epoch, "val_auc": score, "per_label_auc": aucs,
               "optimizer": opt.state_dict(), "scheduler": sched.state_dict(), "scaler": scaler.state_dict(),
               "best": best, "history": history, "rng": torch.get_rng_state()}, last)
        write_csv(pd.DataFrame(history), out / "results.csv")
        log.info("epoch %d/%d: loss %.4f, val mean AUC %.4f%s (%.0f s)", epoch + 1, epochs, row["train_loss"],
                 score, " (best)" if improved else "", row["seconds"])
    best_pt = wdir / "best.pt"
    if not best_pt.is_file():
        raise FileNotFoundError(f"training finished but {best_pt} was not written")
    return best_pt
