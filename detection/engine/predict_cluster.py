"""``cxrdet predict`` on a Dask cluster (``--scheduler local|tcp://host:port``, :mod:`data_prep.core.cluster`).

The local path's batches (:func:`detection.engine.predict_batch.predict_rows`) become tasks; each worker
process loads the models once (:func:`_worker_models`, keyed by weights and sizes) and returns only
box rows, p(abnormal), original sizes and error lines; :func:`detection.engine.predict.predict` runs the
post-processing on the client. Weights and image paths travel absolute; ``--onnx`` exports happen
on the client, once, before any task. ``client.run(worker_loads)`` tells how many times a worker
loaded models."""
from __future__ import annotations

import os
import threading
from pathlib import Path

import pandas as pd
from tqdm import tqdm

from detection.engine.predict_batch import predict_rows
from detection.engine.predict_models import load_classifiers, load_models, onnx_cached, onnx_input
from detection.engine.settings import PredictSettings

_WORKER_MODELS: dict[tuple, tuple] = {}
_WORKER_LOCK = threading.Lock()
_WORKER_LOADS = [0]     # model loads in this process (worker_loads(): tests, and a check for users)


def worker_loads() -> int:
    """How many times this process loaded models for Dask tasks (``client.run(worker_loads)``)."""
    return _WORKER_LOADS[0]


def _worker_models(weights: tuple[str, ...], classifiers: tuple[str, ...], settings: PredictSettings) -> tuple:
    """The models of a prediction in this worker process, loaded on its first batch and kept (keyed
    by the weights paths and sizes, so a new run with other weights replaces them)."""
    s = settings
    key = (weights, classifiers, s.imgsz, s.batch, s.cls_imgsz)
    with _WORKER_LOCK:
        if key not in _WORKER_MODELS:
            _WORKER_MODELS.clear()
            _WORKER_MODELS[key] = load_models(weights, classifiers, s)
            _WORKER_LOADS[0] += 1
        return _WORKER_MODELS[key]


def _predict_task(task: tuple[int, tuple, tuple, PredictSettings, list[dict]]) -> tuple:
    """One batch on a Dask worker: -> (batch start, n images, box table or None, p(abnormal), error
    lines, original sizes). Only these rows travel back; images are read and predicted on the worker."""
    start, weights, classifiers, settings, records = task
    rows = pd.DataFrame.from_records(records)
    tables, p_abn, errs, sizes = predict_rows(*_worker_models(weights, classifiers, settings), rows, settings)
    return start, len(records), (pd.concat(tables, ignore_index=True) if tables else None), p_abn, errs, sizes


def predict_dask(weights: tuple[str, ...], classifiers: tuple[str, ...], settings: PredictSettings, onnx: bool,
                 rows: pd.DataFrame, tables: list, p_abn: dict, errs: list, sizes: dict) -> list[str] | None:
    """Send batches of ``rows`` (the local path's batches, so ultralytics letterboxes them the same)
    to the cluster of ``settings.scheduler`` (``settings.workers`` LocalCluster processes; its
    ``device`` resolved, its ``post`` the checked post-processing keys); each worker loads the models once (:func:`_worker_models`). Weights and
    image paths travel absolute; ``onnx`` exports happen here, once, before any task. The
    classifiers are opened here first (refusing a mix of kinds before any task, as the local path
    does) -> their multi-label labels, or None."""
    from data_prep.core.cluster import dask_client, run_unordered
    from detection.engine.classifier import is_multilabel, load_checkpoint
    from detection.engine.runs import resolve_model

    labels = load_classifiers(classifiers, settings, onnx)[1] if classifiers else None   # exports multi-label ONNX once

    def absolute(w: str | None, what: str, imgsz: int | None) -> str | None:
        if not w:
            return None
        p = Path(w) if Path(w).suffix == ".onnx" else Path(resolve_model(w, what))
        if what == "classifier" and is_multilabel(p):
            if onnx:    # the ONNX detection.engine.classify.load_runner exported above
                p = p.with_name(f"{p.stem}_{int(load_checkpoint(p)['imgsz'])}.onnx")
        elif onnx and p.suffix == ".pt":
            if imgsz is None:                     # the size it was trained at
                from detection.engine.predict_models import DEFAULT_IMGSZ, trained_imgsz
                from detection.models import open_model

                imgsz = trained_imgsz(open_model(p)) or DEFAULT_IMGSZ
            p = onnx_cached(p, imgsz)            # exported once, here, not by every worker
        if not p.is_file():
            raise FileNotFoundError(f"{what} {w}: no such file")
        return str(p.resolve())

    ws = tuple(absolute(w, "weights", settings.imgsz) for w in weights)
    clfs = tuple(absolute(c, "classifier", settings.cls_imgsz) for c in classifiers)
    batch = int(settings.batch)
    chunk = min([batch] + [onnx_input(w)[0] or batch for w in ws if w.endswith(".onnx")])
    orig = rows["path"].tolist()
    rows = rows.assign(path=[os.path.abspath(p) for p in orig])
    back = dict(zip(rows["path"], orig))
    tasks = ((s, ws, clfs, settings, rows.iloc[s:s + chunk].to_dict("records")) for s in range(0, len(rows), chunk))
    done: dict[int, tuple] = {}
    with dask_client(settings.scheduler, settings.workers) as client, \
            tqdm(total=len(rows), desc="predict (dask)", unit="img") as bar:
        for start, n, table, p, e, z in run_unordered(client, _predict_task, tasks,
                                                      in_flight=2 * max(1, len(client.nthreads()))):
            done[start] = (table, p, e, z)
            bar.update(n)
    for start in sorted(done):     # batch order: the same table and error order as the local path
        table, p, e, z = done[start]
        if table is not None:
            tables.append(table)
        p_abn.update(p)
        sizes.update(z)
        for line in e:
            path = line.split(": ", 1)[0]
            errs.append(line.replace(path, back.get(path, path), 1))
    return labels

