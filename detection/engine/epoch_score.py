"""The competition's metric on a training run's validation fold, epoch by epoch, for any detector.

:class:`FoldScore` knows one fold of a prepared folder (``cxrdet prep``): its validation images
(the data.yaml's ``val`` list, original sizes from ``images.csv``), their truth
(``fused_boxes.csv``) and the metric of the config (``metric``, ``iou_thr``, the dataset's normal
class). A detector family hands it a raw box table of those images (inference only, original
pixels: what ``cxrdet predict --raw`` writes) and gets the score of that table after the config's
post-processing (:func:`detection.competition.postprocess.apply`) by :func:`detection.evaluation.evaluate.evaluate`,
the very numbers ``cxrdet evaluate`` prints. :meth:`FoldScore.record` appends the epoch to
``<run folder>/competition.csv`` (``epoch``, ``metric``, ``score``; rewritten whole and atomically,
so a killed run never leaves half a row; a resumed run keeps the epochs before its start).

The ultralytics glue (:func:`yolo_callbacks`) wraps the trainer's ``validate`` once training is set
up: after ultralytics' own validation it predicts the fold with the trainer's EMA weights in memory
(:class:`InMemoryDetector`, through :func:`detection.engine.predict_batch.predict_loaded`: the code path of
``cxrdet predict``), records the score, and with ``select_by: competition`` returns it as the
trainer's fitness, so ultralytics writes ``best.pt`` at the epoch with the highest competition score
(and early stopping follows it). ``select_by: fitness`` keeps ultralytics' own choice. Other
families (issue 26) call :meth:`FoldScore.score` and :meth:`FoldScore.record` from their own
per-epoch hook. ``keep_epochs: K`` keeps the K best epochs' weights by that score
(:mod:`detection.models.checkpoints`: ``<run>/weights/kept_epoch<N>.pt``, the checkpoint ensemble of
``predict --weights RUN_DIR``).
"""
from __future__ import annotations

import logging
import math
from copy import deepcopy
from pathlib import Path

import numpy as np
import pandas as pd

from data_prep.core.atomic import write_csv
from data_prep.datasets import describe
from data_prep.core.errors import InputError
from data_prep.core.prepdir import PrepDir

log = logging.getLogger(__name__)

FILE = "competition.csv"
COLUMNS = ["epoch", "metric", "score"]
SELECT_BY = ("competition", "fitness")


def val_list(data_yaml: Path) -> Path:
    """The ``val`` list of an ultralytics data.yaml (a .txt of PNG paths, relative to ``path``)."""
    import yaml

    d = yaml.safe_load(Path(data_yaml).read_text()) or {}
    if "val" not in d:
        raise InputError(data_yaml, "no 'val' key; expected an ultralytics data.yaml written by `cxrdet prep`")
    root = Path(d.get("path") or Path(data_yaml).parent)
    root = root if root.is_absolute() else Path(data_yaml).parent / root
    p = Path(d["val"])
    return p if p.is_absolute() else root / p


class FoldScore:
    """Scores raw box tables of one validation fold with the competition's metric (module docstring)."""

    def __init__(self, cfg: dict, prep_dir, fold: int, run: Path):
        from data_prep.core.tables import fold_images, read_truth
        from detection.engine.sources import list_source

        prep = Path(prep_dir)
        self.cfg, self.fold, self.path = cfg, int(fold), Path(run) / FILE
        self.metric, self.iou = str(cfg["metric"]), float(cfg["iou_thr"])
        images, truth, self.ds = read_truth(PrepDir(prep).fused_boxes_csv, describe(cfg), PrepDir(prep).images_csv)
        held = set(fold_images(PrepDir(prep).folds_csv, self.fold))
        self.ids = [i for i in images["image_id"].astype(str) if i in held]
        self.truth = truth[truth["image_id"].astype(str).isin(held)].reset_index(drop=True)
        self.rows = list_source(val_list(PrepDir(prep).data_yaml(self.fold)), PrepDir(prep).images_csv)
        self.rows = self.rows[self.rows["image_id"].isin(held)].reset_index(drop=True)
        self.sizes = self.rows.set_index("image_id")[["height", "width"]]
        self.scores: list[dict] = []
        from detection.models.checkpoints import check_k

        self.keep = check_k(cfg.get("keep_epochs", 0), "keep_epochs")

    @classmethod
    def maybe(cls, cfg: dict, prep_dir, fold: int, run: Path) -> "FoldScore | None":
        """A scorer, or None (logged) when the prepared folder lacks what it needs (a hand-made
        YOLO dataset without prep's tables)."""
        prep = Path(prep_dir)
        need = [PrepDir(prep).fused_boxes_csv, PrepDir(prep).images_csv, PrepDir(prep).folds_csv]
        missing = [str(p) for p in need if not p.is_file()]
        if missing:
            log.warning("no per-epoch competition score (%s missing; a folder made by `cxrdet prep` has them): "
                        "best.pt follows ultralytics' fitness", ", ".join(missing))
            return None
        return cls(cfg, prep, fold, run)

    def score(self, raw: pd.DataFrame) -> float:
        """The metric of ``raw`` (a raw box table of the fold's images) after the config's post-processing."""
        from detection.evaluation.evaluate import evaluate
        from detection.competition.postprocess import apply

        pred = apply(raw, None, self.cfg, self.ds.normal, self.sizes)
        res = evaluate(self.truth, pred, self.ids, self.metric, self.iou, dataset=self.ds)
        return float(res["mAP"])

    def score_detector(self, model, imgsz: int, device: str) -> float:
        """The score of a detector in memory (``YOLO.predict``'s signature, any family) on the fold,
        predicted by :func:`detection.engine.predict_batch.predict_loaded` (the code path of ``cxrdet predict``)."""
        from detection.engine.predict_batch import predict_loaded
        from detection.engine.predict_models import Loaded
        from detection.engine.settings import PredictSettings

        cfg = self.cfg
        settings = PredictSettings(conf=float(cfg["conf"]), nms_iou=float(cfg["nms_iou"]), max_det=int(cfg["max_det"]),
                                   imgsz=int(imgsz), device=device, tta=bool(cfg["tta"]),
                                   ens_iou=float(cfg["ens_iou"]), ens_skip=float(cfg["ens_skip"]), batch=1)
        raw, _ = predict_loaded([Loaded(model, getattr(model, "path", "in memory"), int(imgsz), 1)], self.rows, settings)
        return self.score(raw)

    def start(self, first_epoch: int) -> None:
        """Keep the rows of ``competition.csv`` before ``first_epoch`` (1-based; a resumed run)."""
        self.scores = []
        if first_epoch > 1 and self.path.is_file():
            old = pd.read_csv(self.path)
            self.scores = old[old["epoch"] < first_epoch].to_dict("records")

    def record(self, epoch: int, score: float) -> None:
        """Add (or replace) ``epoch``'s score and rewrite ``competition.csv``."""
        self.scores = [r for r in self.scores if int(r["epoch"]) != int(epoch)]
        self.scores.append({"epoch": int(epoch), "metric": self.metric, "score": float(score)})
        write_csv(pd.DataFrame(self.scores, columns=COLUMNS), self.path)
        log.info("epoch %d: %s %.4f on fold %d (%d images) -> %s", epoch, self.metric, score, self.fold,
                 len(self.ids), self.path)


    def keep_weights(self, epoch: int, write) -> list[int]:
        """``keep_epochs``: keep ``epoch``'s weights (``write(tmp path)`` writes them) when it is among
        the K best scored so far, drop the files of epochs that fell out (:func:`detection.models.checkpoints.keep`)."""
        from detection.models.checkpoints import keep

        return keep(self.path.parent, epoch, self.scores, self.keep, write)


def best_epoch(run: Path) -> dict | None:
    """``{epoch, metric, score, n_epochs}`` of the highest score in ``run/competition.csv`` (the
    first of equal ones, as ultralytics keeps its first best), or None without scores."""
    path = Path(run) / FILE
    if not path.is_file():
        return None
    df = pd.read_csv(path)
    ok = df[np.isfinite(df["score"].astype(float))]
    if ok.empty:
        return None
    r = ok.loc[ok["score"].astype(float).idxmax()]
    return {"epoch": int(r["epoch"]), "metric": str(r["metric"]), "score": float(r["score"]), "n_epochs": len(df)}


def closing_line(best_pt: Path, select_by: str = "competition") -> str:
    """The line a training ends with: where best.pt is and which epoch and score it holds."""
    run = Path(best_pt).parents[1]
    b = best_epoch(run)
    if b is None:
        return f"{best_pt} (no per-epoch competition score: best.pt follows ultralytics' fitness)"
    if select_by == "competition":
        return (f"{best_pt}: epoch {b['epoch']} of {b['n_epochs']}, {b['metric']} {b['score']:.4f} on the validation "
                f"fold (the best epoch; every epoch in {run / FILE})")
    return (f"{best_pt} (select_by: fitness, ultralytics' choice); the best {b['metric']} was epoch {b['epoch']} "
            f"of {b['n_epochs']}: {b['score']:.4f} ({run / FILE})")


# ----------------------------------------------------------------------------- ultralytics glue
class InMemoryDetector:
    """An ultralytics detection module in memory (the trainer's EMA) behind ``YOLO.predict``'s
    signature, so :func:`detection.engine.predict_batch.predict_loaded` runs it as it runs a saved ``best.pt``
    (the predictor is ultralytics' own, with ``YOLO.predict``'s defaults: batch 1, rect)."""

    def __init__(self, module):
        self.module = deepcopy(module).float().eval()
        self.names = dict(getattr(self.module, "names", {}) or {})
        self._predictor = None

    def predict(self, imgs, imgsz, conf, iou, max_det, device, verbose=False):
        if self._predictor is None:
            from detection.models.rtdetr import predictor_class

            args = dict(conf=conf, batch=1, save=False, mode="predict", rect=True, imgsz=imgsz, iou=iou,
                        max_det=max_det, device=device, verbose=verbose)
            self._predictor = predictor_class(self.module)(overrides=args)   # RT-DETR's or YOLO's
            self._predictor.setup_model(self.module, verbose=False)
        return self._predictor(source=imgs)


def _device_of(trainer) -> str:
    d = getattr(trainer, "device", None)
    if d is None or d.type != "cuda":
        return "cpu"
    return str(d.index or 0)


def yolo_callbacks(scorer: FoldScore, select_by: str = "competition") -> dict:
    """ultralytics callbacks that score every validated epoch (module docstring)."""
    if select_by not in SELECT_BY:
        raise InputError(f"select_by={select_by}", f"expected one of {', '.join(SELECT_BY)}")

    def wrap(trainer) -> None:
        original = trainer.validate
        scorer.start(int(getattr(trainer, "start_epoch", 0)) + 1)

        def validate():
            before = trainer.best_fitness
            metrics, fitness = original()
            if metrics is None:
                return metrics, fitness
            model = trainer.ema.ema if getattr(trainer, "ema", None) else trainer.model
            s = scorer.score_detector(InMemoryDetector(model), int(trainer.args.imgsz), _device_of(trainer))
            scorer.record(trainer.epoch + 1, s)
            if select_by == "fitness":
                return metrics, fitness
            fit = s if math.isfinite(s) else 0.0   # NaN fitness would make ultralytics reload last.pt
            trainer.best_fitness = fit if before is None or before < fit else before
            return metrics, fit

        trainer.validate = validate

    def kept(trainer) -> None:   # after ultralytics wrote last.pt (this epoch's EMA): keep_epochs
        from ultralytics.utils.torch_utils import strip_optimizer

        epoch = trainer.epoch + 1
        if any(int(r["epoch"]) == epoch for r in scorer.scores):
            scorer.keep_weights(epoch, lambda tmp: strip_optimizer(trainer.last, s=str(tmp)))

    return {"on_pretrain_routine_end": wrap, **({"on_model_save": kept} if scorer.keep else {})}
