"""A training run's kept epoch weights and the checkpoint ensemble made of them.

``keep_epochs: K`` (training): after every scored epoch, the weights of the K best epochs so far
by the competition score (``<run>/competition.csv``, :mod:`detection.engine.epoch_score`; equal scores:
the earlier epoch first, as best.pt keeps its first best) are kept as
``<run>/weights/kept_epoch<N>.pt`` (the EMA weights without the optimiser, like best.pt); an epoch that
falls out of the K best loses its file. ``last.pt`` stays as ever (resume).

``predict --weights RUN_DIR`` (a run folder instead of a ``.pt``) predicts with the run's kept
epochs, best first, fused by WBF (the multi-weights path of :func:`detection.engine.predict.infer`, the
``ens_*`` keys); ``ckpt_ensemble: K`` takes the K best of them (0 = every kept one). ``cxrdet cv``
with ``ckpt_ensemble: K`` also scores each fold's checkpoint ensemble (VinBigData 3rd place fused
several epochs of one run; RSNA 2nd place averaged several epochs per fold).

``init=PATH`` (:func:`init_weights`): the checkpoint a training starts from (the fine-tune stage).

This module reads files only (pandas): :mod:`detection.engine.epoch_score` (training) and
:mod:`detection.engine.predict` both import it; it imports neither.
"""
from __future__ import annotations

import logging
import os
import re
from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np
import pandas as pd

from data_prep.core.errors import InputError

log = logging.getLogger(__name__)

SCORES = "competition.csv"
PATTERN = "kept_epoch{}.pt"              # 1-based epoch, as competition.csv numbers them
_RX = re.compile(r"kept_epoch(\d+)\.pt")  # (ultralytics' own save_period files are epoch<N-1>.pt)


def check_k(k, key: str) -> int:
    """A ``keep_epochs`` / ``ckpt_ensemble`` value: an int >= 0."""
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or int(k) < 0:
        raise InputError(f"{key}={k!r}", "expected an integer >= 0 (0 = off)")
    return int(k)


def ranked(scores: Iterable[dict] | pd.DataFrame) -> list[int]:
    """Epochs by score, best first; equal scores: the earlier epoch first; NaN scores left out."""
    df = pd.DataFrame(scores if not isinstance(scores, pd.DataFrame) else scores, columns=["epoch", "score"])
    df = df[np.isfinite(df["score"].astype(float))]
    df = df.assign(epoch=df["epoch"].astype(int), score=df["score"].astype(float))
    return df.sort_values(["score", "epoch"], ascending=[False, True], kind="stable")["epoch"].tolist()


def kept_files(run: str | os.PathLike) -> dict[int, Path]:
    """``{epoch: path}`` of the ``weights/kept_epoch<N>.pt`` files of a run."""
    wdir = Path(run) / "weights"
    out = {}
    if wdir.is_dir():
        for p in wdir.iterdir():
            m = _RX.fullmatch(p.name)
            if m:
                out[int(m.group(1))] = p
    return out


def keep(run: str | os.PathLike, epoch: int, scores: Iterable[dict], k: int,
         write: Callable[[Path], object]) -> list[int]:
    """After ``epoch``'s weights are saved: when it is among the ``k`` best of ``scores`` (every
    epoch scored so far), ``write(tmp)`` writes its weights (renamed to ``weights/kept_epoch<N>.pt``
    once complete); files of epochs no longer among the ``k`` best are removed. Returns the kept
    epochs, best first. ``k`` 0: nothing kept, nothing removed."""
    from data_prep.core.atomic import atomic_path

    if k <= 0:
        return []
    best = ranked(scores)[:k]
    wdir = Path(run) / "weights"
    if int(epoch) in best:
        wdir.mkdir(parents=True, exist_ok=True)
        with atomic_path(wdir / PATTERN.format(int(epoch))) as tmp:
            write(Path(tmp))
    for e, p in kept_files(run).items():
        if e not in best:
            p.unlink()
    log.info("keep_epochs %d: %s kept (by %s)", k, ", ".join(f"epoch {e}" for e in best), Path(run) / SCORES)
    return best


def members(run: str | os.PathLike, k: int = 0) -> list[Path]:
    """The checkpoint ensemble of a run folder: its kept epochs' weights, best first by
    ``competition.csv`` (epochs it does not score last, by number); ``k`` > 0: the ``k`` best."""
    run = Path(run)
    files = kept_files(run)
    if not files:
        raise InputError(run, "no kept epoch weights (weights/kept_epoch<N>.pt); train it with keep_epochs: K "
                              "to predict with its checkpoint ensemble, or give its weights/best.pt")
    order = []
    if (run / SCORES).is_file():
        order = [e for e in ranked(pd.read_csv(run / SCORES)) if e in files]
    order += sorted(e for e in files if e not in order)
    chosen = order[:k] if k > 0 else order
    if k > len(order):
        log.warning("ckpt_ensemble %d: %s keeps %d epoch(s); fusing those", k, run, len(order))
    return [files[e] for e in chosen]


def expand(weights: Sequence[str | os.PathLike], k: int = 0) -> list[str | os.PathLike]:
    """``weights`` with every run folder replaced by its checkpoint ensemble (:func:`members`)."""
    out: list = []
    for w in weights:
        if Path(w).is_dir():
            m = members(w, k)
            log.info("%s: checkpoint ensemble of %d epoch(s): %s", w, len(m), ", ".join(p.name for p in m))
            out += [str(p) for p in m]
        else:
            out.append(w)
    return out


def init_weights(cfg: dict) -> Path | None:
    """``init``: the checkpoint a training starts from (``{fold}`` replaced by the fold), checked
    to exist; None when unset."""
    init = cfg.get("init")
    if not init:
        return None
    p = Path(str(init).replace("{fold}", str(cfg["fold"]))).expanduser()
    if not p.is_file():
        raise InputError(f"init={init}", f"no such checkpoint {p}; expected a .pt of `cxrdet train` (e.g. the fused "
                         "run's weights/best.pt; {fold} stands for the fold)")
    return p
