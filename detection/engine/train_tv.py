"""Training a ``tv:`` model (:mod:`detection.models.tv`) on a fold of a prepared folder.

Data: prep's COCO export (``OUT/coco/fold<k>_train.json``; ``export`` must hold ``coco``, the
default): each image's ``png_file`` is read as it is, its boxes (original pixels) are scaled to that
PNG by ``png width / width`` and ``png height / height`` and given label ``class_id + 1``; boxes
thinner than one PNG pixel are dropped (counted in the log); images without boxes are background.
Augmentation: a horizontal flip with probability 0.5 (seeded by ``seed`` and the epoch).

Optimiser: AdamW, ``tv_lr`` (cosine to 0 over ``epochs``), weight decay 1e-4, gradients clipped at
norm 10; ``batch`` images a step; ``seed`` seeds the weights and the order; on a GPU ``workers``
processes read the images (none on the CPU, as ultralytics does). After every epoch:
``<run>/weights/last.pt`` (with the optimiser, for ``resume=true``), the competition score of the
validation fold through :class:`detection.engine.epoch_score.FoldScore` (``<run>/competition.csv``, the
same file and code YOLO uses), and ``best.pt`` at the best epoch by ``select_by``: ``competition``
(that score), or ``fitness`` (for this family: the lowest mean training loss); ``patience`` epochs
without a better one stop the run. ``device`` ``0,1`` trains on the first GPU only (logged).
"""
from __future__ import annotations

import json
import logging
import math
import os
import time
from pathlib import Path
from typing import Callable

import numpy as np

from data_prep.core.errors import InputError
from detection.models import tv

log = logging.getLogger(__name__)


def coco_samples(path: Path) -> tuple[list[tuple[str, np.ndarray, np.ndarray, int, int]], dict[int, str]]:
    """``[(png path, xyxy in ORIGINAL pixels (N, 4), class ids (N,), height, width)]`` and the
    class names of one COCO json written by ``cxrdet prep``."""
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no COCO export for this fold; tv: models train on it (run `cxrdet prep` "
                                "with export: [yolo, coco], the default)")
    d = json.loads(path.read_text())
    names = {int(c["id"]): str(c["name"]) for c in d.get("categories", [])}
    by_img: dict[int, list] = {}
    for a in d.get("annotations", []):
        by_img.setdefault(int(a["image_id"]), []).append(a)
    out = []
    for im in d.get("images", []):
        if "png_file" not in im:
            raise InputError(path, f"image {im.get('file_name')!r} has no png_file; expected a COCO json of `cxrdet prep`")
        anns = by_img.get(int(im["id"]), [])
        xywh = np.array([a["bbox"] for a in anns], "float64").reshape(-1, 4)
        xyxy = np.concatenate([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]], 1)
        cls = np.array([int(a["category_id"]) for a in anns], "int64")
        out.append((str(im["png_file"]), xyxy, cls, int(im["height"]), int(im["width"])))
    return out, names


def _sample(rec, flip: bool):
    """(image tensor (3, h, w), target {boxes, labels} in its pixels), boxes thinner than 1 px dropped."""
    import cv2
    import torch

    png, xyxy, cls, h, w = rec
    img = cv2.imread(png, cv2.IMREAD_GRAYSCALE)
    if img is None:
        raise InputError(png, "cannot read the image (not a PNG or truncated)")
    ph, pw = img.shape
    b = xyxy * np.array([pw / w, ph / h, pw / w, ph / h])
    b = np.clip(b, 0, [pw, ph, pw, ph])
    ok = (b[:, 2] - b[:, 0] >= 1) & (b[:, 3] - b[:, 1] >= 1)
    b, c = b[ok], cls[ok]
    if flip:
        img = np.ascontiguousarray(img[:, ::-1])
        b = np.stack([pw - b[:, 2], b[:, 1], pw - b[:, 0], b[:, 3]], 1) if len(b) else b
    target = {"boxes": torch.as_tensor(b, dtype=torch.float32).reshape(-1, 4),
              "labels": torch.as_tensor(c + 1, dtype=torch.int64)}
    return tv.to_tensor(img), target, int((~ok).sum())


class _Batch:
    """DataLoader ``collate_fn``: a batch of sample indices -> their (image, target, dropped) triples."""

    def __init__(self, samples, flips):
        self.samples, self.flips = samples, flips

    def __call__(self, idx):
        return [_sample(self.samples[i], self.flips[i]) for i in idx]


def _score(scorer, model, names, imgsz, device, epoch) -> float:
    """The competition score of the fold with the model in memory (the code path of ``cxrdet predict``)."""
    return scorer.score_detector(tv.Detector(model, names, imgsz, f"epoch {epoch}"), imgsz, device)


def train(cfg: dict, prep_dir: str | os.PathLike, fold: int, out: Path,
          callbacks: dict[str, Callable] | None = None) -> Path:
    """Train ``cfg['model']`` (``tv:<name>``) on fold ``fold`` into ``out``; return ``out/weights/best.pt``.

    ``callbacks``: ``on_fit_epoch_end(state)`` is called after each epoch's checkpoints with an
    object holding ``epoch`` (0-based), ``epochs``, ``last`` and ``best``."""
    import torch
    from torch.utils.data import DataLoader

    from detection.models.devices import resolve_device
    from data_prep.core.prepdir import PrepDir
    from detection.engine.epoch_score import FoldScore, closing_line
    from detection.models.checkpoints import init_weights

    prep, fold = Path(prep_dir), int(fold)
    wdir = out / "weights"
    last, best = wdir / "last.pt", wdir / "best.pt"
    resume = None
    if cfg.get("resume"):
        if not last.is_file():
            raise FileNotFoundError(f"resume=true: no checkpoint {last} to resume from; "
                                    "run once without resume (same project/name) first")
        resume = tv.read_checkpoint(last, "checkpoint")
        args = dict(resume["train_args"])
        if int(resume["epoch"]) < 0:
            raise InputError(f"resume=true {last}", f"training to {args.get('epochs')} epochs is finished; nothing "
                             "to resume (train again without resume=true)")
        log.info("resuming %s from %s (epoch %d of %d)", out, last, int(resume["epoch"]) + 1, int(args["epochs"]))
    else:
        args = {"model": tv.check_spec(cfg["model"]), "epochs": int(cfg["epochs"]), "imgsz": int(cfg["imgsz"]),
                "batch": int(cfg["batch"]), "seed": int(cfg["seed"]), "patience": int(cfg["patience"]),
                "tv_lr": float(cfg["tv_lr"]), "tv_args": dict(cfg.get("tv_args") or {}),
                "backbone_weights": cfg.get("backbone_weights"), "select_by": str(cfg.get("select_by") or "competition"),
                "fold": fold, "device": str(cfg.get("device")),
                "data": str(PrepDir(prep).coco_train(fold, str(cfg.get("train_labels") or "fused")).resolve())}
    samples, names = coco_samples(Path(args["data"]))
    if not names:
        raise InputError(args["data"], "no categories; expected the classes of the dataset")
    arch, epochs, imgsz = args["model"][len(tv.PREFIX):], int(args["epochs"]), int(args["imgsz"])
    device = tv.torch_device(resolve_device(cfg.get("device")))
    if "," in str(cfg.get("device") or ""):
        log.warning("device=%s: tv: models train on one GPU here (%s)", cfg.get("device"), device)
    torch.manual_seed(int(args["seed"]))
    model = tv.build(arch, len(names), imgsz, args["tv_args"])
    if resume is not None:
        model.load_state_dict(resume["model"])
    elif init_weights({**cfg, "fold": fold}) is not None:   # the fine-tune stage: a tv: checkpoint's weights
        ck = tv.read_checkpoint(init_weights({**cfg, "fold": fold}), "init")
        if ck["arch"] != arch:
            raise InputError(f"init={cfg['init']}", f"a tv:{ck['arch']} checkpoint; expected tv:{arch} (model)")
        model.load_state_dict(ck["model"])
    elif args.get("backbone_weights"):
        tv.load_backbone(model, args["backbone_weights"])
    model.to(device)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=float(args["tv_lr"]), weight_decay=1e-4)
    start, best_fit, bad = 0, None, 0
    if resume is not None:
        opt.load_state_dict(resume["optimizer"])
        start, best_fit, bad = int(resume["epoch"]) + 1, resume.get("best_fitness"), int(resume.get("bad_epochs", 0))
    select_by = str(args["select_by"])
    scorer = FoldScore.maybe(cfg, prep, fold, out) if select_by in ("competition", "fitness") else None
    if scorer is not None:
        scorer.start(start + 1)
    log.info("training tv:%s (%d classes, imgsz %d) on %s, %d images -> %s", arch, len(names), imgsz, args["data"],
             len(samples), out)
    meta = dict(arch=arch, names=names, imgsz=imgsz, builder_args=args["tv_args"])
    batch = max(1, int(args["batch"]))
    workers = int(cfg.get("workers") or 0) if device.startswith("cuda") else 0   # on the CPU: none, as ultralytics
    for epoch in range(start, epochs):
        t0 = time.perf_counter()
        lr = float(args["tv_lr"]) * 0.5 * (1 + math.cos(math.pi * epoch / max(epochs, 1)))
        for g in opt.param_groups:
            g["lr"] = lr
        gen = torch.Generator().manual_seed(int(args["seed"]) * 1000 + epoch)
        order = torch.randperm(len(samples), generator=gen).tolist()
        flips = (torch.rand(len(samples), generator=gen) < 0.5).tolist()
        model.train()
        losses, dropped = [], 0
        loader = DataLoader(order, batch_size=batch, shuffle=False, num_workers=workers,
                            collate_fn=_Batch(samples, flips))
        for got in loader:
            dropped += sum(g[2] for g in got)
            ld = model([g[0].to(device) for g in got], [{k: v.to(device) for k, v in g[1].items()} for g in got])
            loss = sum(ld.values())
            if not torch.isfinite(loss):
                log.warning("epoch %d: non-finite loss %s, batch skipped (lower tv_lr)", epoch + 1,
                            {k: float(v) for k, v in ld.items()})
                continue
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 10.0)
            opt.step()
            losses.append(float(loss.detach()))
        mean_loss = float(np.mean(losses)) if losses else float("nan")
        model.eval()
        score = _score(scorer, model, names, imgsz, device, epoch + 1) if scorer is not None else float("nan")
        if scorer is not None:
            scorer.record(epoch + 1, score)
        fit = score if (select_by == "competition" and scorer is not None) else -mean_loss
        fit = fit if math.isfinite(fit) else -math.inf
        better = best_fit is None or fit > best_fit
        if better:
            best_fit, bad = fit, 0
        else:
            bad += 1
        ta = {**args, "epochs": epochs}
        ck = tv.checkpoint(model, **meta, epoch=epoch, train_args=ta, best_fitness=best_fit, bad_epochs=bad,
                           loss=mean_loss, score=score)
        if better:
            tv.save(ck, best)
        tv.save({**ck, "optimizer": opt.state_dict()}, last)
        if scorer is not None and scorer.keep:   # keep_epochs: the K best epochs' weights (detection.models.checkpoints)
            scorer.keep_weights(epoch + 1, lambda tmp, ck=ck: tv.save(ck, tmp))
        log.info("epoch %d/%d: loss %.4f, lr %.2e, %.1f s%s", epoch + 1, epochs, mean_loss, lr,
                 time.perf_counter() - t0, f", {dropped} box(es) under 1 px dropped" if dropped else "")
        for fn in [(callbacks or {}).get("on_fit_epoch_end")]:
            if fn is not None:
                fn(type("State", (), {"epoch": epoch, "epochs": epochs, "last": last, "best": best})())
        if bad >= int(args["patience"]):
            log.info("no better epoch in %d: stopping early", bad)
            break
    if not best.is_file():
        raise FileNotFoundError(f"training finished but {best} was not written (no epoch ran: epochs={epochs})")
    done = tv.read_checkpoint(last, "checkpoint")
    done.pop("optimizer", None)
    tv.save({**done, "epoch": -1}, last)   # finished (as ultralytics strips its last.pt): nothing to resume
    log.info("%s", closing_line(best, select_by) if scorer is not None else f"best weights: {best}")
    return best
