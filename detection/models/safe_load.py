"""THE loader of every model file a user hands in: nothing in a ``.pt`` runs unless opted in.

A ``.pt`` is a pickle, and unpickling can call any function the file names (``__reduce__``). Every
read of a ``.pt`` in the project goes through this module:

* :func:`load` — ``torch.load(weights_only=True)``: tensors, numbers, strings, containers only
  (the multi-label classifier's checkpoints, ``tv:`` checkpoints, ``backbone_weights``,
  ``cls_pretrained`` state dicts);
* ultralytics' own restricted loader (``ultralytics.nn.tasks.torch_safe_load(..., safe_only=True)``:
  ``weights_only=True`` plus an allow-list of ultralytics' and torch's model classes) for YOLO /
  RT-DETR detectors, the 2-class filter, ``model=`` / ``cls_model=`` ``.pt`` and resume
  checkpoints: :func:`detection.models.runtime.open_yolo` and :func:`detection.models.runtime.ultralytics_checkpoint`
  (they live beside ultralytics' offline setup, which must come first) with this module's policy
  (:func:`trusted`) and messages (:func:`error`, :func:`guard`). :func:`enforce` sets ultralytics'
  per-process switch (``ULTRALYTICS_SAFE_LOAD``), so the loads ultralytics makes itself
  (``YOLO(path)``, the trainer's ``resume``) are restricted as well, in this process and in the ones
  it starts (DDP workers, a local Dask cluster).

The shipped weights (``weights/``) and every checkpoint the project writes load this way. A file
that needs more (a pickled class or function outside the allow-list) is refused with one line
naming the file and the opt-in: ``trust_weights=true`` (config key; :func:`configure` reads it from
the merged config of the stage), which loads with ``weights_only=False`` — only for files from a
source you trust. Damaged files (empty, truncated, not a torch archive) are one line too.
"""
from __future__ import annotations

import os
import pickle
from pathlib import Path
from typing import Iterator

from data_prep.core.errors import InputError

KEY = "trust_weights"
ENV = "CXRDET_TRUST_WEIGHTS"          # carries the opt-in to the processes a stage starts
ULTRA_ENV = "ULTRALYTICS_SAFE_LOAD"   # ultralytics' own per-process switch
HINT = (f"it needs more than plain tensors to load (a pickled class or function: loading it could run code); "
        f"refused. Use weights from a source you trust and opt in with {KEY}=true")


def trusted() -> bool:
    """Whether this process was told to trust model files (``trust_weights=true``)."""
    return os.environ.get(ENV, "") == "1"


def enforce(trust: bool | None = None) -> None:
    """Set the trust switch (None: keep the current one) for this process, its children and
    ultralytics (its module flag, when it is already imported, and its environment switch)."""
    import sys

    if trust is not None:
        os.environ[ENV] = "1" if trust else "0"
    safe = not trusted()
    os.environ[ULTRA_ENV] = "1" if safe else "0"
    for name in ("ultralytics.utils", "ultralytics.nn.tasks"):
        mod = sys.modules.get(name)
        if mod is not None and hasattr(mod, "SAFE_LOAD"):
            mod.SAFE_LOAD = safe


def configure(cfg: dict | None) -> bool:
    """Read ``trust_weights`` from a stage's merged config and :func:`enforce` it; returns it."""
    trust = bool((cfg or {}).get(KEY, False))
    enforce(trust)
    return trust


def _chain(e: BaseException | None) -> Iterator[BaseException]:
    seen = set()
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        yield e
        e = e.__cause__ or e.__context__


def refused(e: BaseException) -> bool:
    """Whether ``e`` (or what caused it) is a weights-only load refusing a global, as opposed to
    a damaged file."""
    for x in _chain(e):
        text = str(x)
        # torch's weights-only unpickler naming a global it does not allow; ultralytics' allow-list
        # refusing a getattr. (A damaged file fails with other words: "invalid load key", EOF...)
        if "Unsupported global" in text or "blocked during restricted model load" in text:
            return True
    return False


def _why(e: BaseException) -> str:
    text = " ".join(str(e).replace("ERROR ❌️", "").split())
    return f"{type(e).__name__}: {text[:160] or 'no detail'}"


def _check_file(p: Path, what: str, kind: str) -> None:
    if not p.is_file():
        raise InputError(f"{what} {p}", f"no such file; expected {kind}" if not p.is_dir()
                         else f"is a folder; expected {kind}")
    if p.stat().st_size == 0:
        raise InputError(f"{what} {p}", f"empty file (0 bytes); expected {kind}")


def error(path, what: str, kind: str, e: BaseException) -> InputError:
    """The one-line error for a model file that failed to load: refused (needs trust) or damaged."""
    where = f"{what} {path}"
    if refused(e):
        return InputError(where, f"{HINT} (expected {kind})")
    return InputError(where, f"not loadable ({_why(e)}); expected {kind} — the file may be truncated or damaged")


def load(path: str | os.PathLike, what: str = "weights", kind: str = "a PyTorch checkpoint (.pt)"):
    """``torch.load`` on the CPU, ``weights_only=True`` unless :func:`trusted`; every failure is
    one :class:`InputError` naming the file (refused files name ``trust_weights=true``)."""
    import torch

    p = Path(path)
    _check_file(p, what, kind)
    try:
        return torch.load(p, map_location="cpu", weights_only=not trusted())
    except Exception as e:  # UnpicklingError, RuntimeError, EOFError, ... for a bad or unsafe file
        raise error(p, what, kind, e) from e


def guard(path: str | os.PathLike, what: str, kind: str, e: BaseException) -> InputError | None:
    """For the caller of ultralytics' ``YOLO(path)``: the refusal error when ``e`` is the
    restricted loader refusing ``path``, else None (the caller reports other failures itself)."""
    return InputError(f"{what} {path}", f"{HINT} (expected {kind})") if refused(e) else None


__all__ = ["KEY", "configure", "enforce", "error", "guard", "load", "refused", "trusted"]
