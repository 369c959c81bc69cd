"""What training, train-cls, predict and export share: a model spec resolved to a local file
(:func:`resolve_model`), a training run's folder (:func:`run_dir`) and its lock (:func:`run_lock`).

Below every stage of detection.engine: it imports data_prep.core and detection.models only."""
from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path
from typing import Iterator


def resolve_model(model: str, what: str = "model") -> str:
    """A model spec ultralytics can load without a network: a YAML name/path or an existing ``.pt``.

    ``.pt`` names are looked up as given, then in ``<repo>/weights/``. Raises ``FileNotFoundError``
    for a ``.pt`` that is not a local file (pretrained weights cannot be downloaded here) and
    ``ValueError`` for any other suffix."""
    from detection.models import tv

    if tv.is_spec(model):   # a torchvision detection model, built from scratch (detection.models.tv)
        return tv.check_spec(str(model), what)
    p = Path(str(model)).expanduser()
    if p.suffix in (".yaml", ".yml"):
        return str(p) if p.is_file() else str(model)  # bundled cfg names are resolved by ultralytics
    if p.suffix == ".pt":
        from data_prep.core.resources import shipped_weight, weights_dir

        for cand in (p, shipped_weight(str(model))):
            if cand is not None and cand.is_file():
                return str(cand)
        raise FileNotFoundError(
            f"{what} {str(model)!r}: no such local file (looked in the working directory and the shipped "
            f"weights, {weights_dir()}). "
            "Pretrained weights cannot be downloaded here (offline by construction); train from scratch "
            f"with a model YAML ({what}=yolo11n.yaml) or give a local .pt (e.g. {what}=weights/<name>.pt)")
    raise ValueError(f"{what} {str(model)!r}: expected a model YAML (.yaml) or local weights (.pt)")


def run_dir(cfg: dict, suffix: str = "") -> Path:
    """``<project>/<name>`` as an absolute path (``name`` null -> ``<dataset>_fold<k><suffix>``)."""
    name = cfg.get("name") or f"{cfg['dataset']}_fold{cfg['fold']}{suffix}"
    return Path(cfg["project"]).expanduser().resolve() / name


@contextmanager
def run_lock(run: Path, what: str) -> Iterator[Path]:
    """One training per run folder (``<project>/<name>/.cxrdet.lock``, as ``--out`` folders): a
    second train / train-cls / cv on the same run name stops at once with one line naming the
    holder (pid, host, start); it does not wait. A run that fails before writing anything leaves
    no empty run folder behind."""
    from data_prep.core.atomic import folder_lock

    made = [d for d in (run, *run.parents) if not d.exists()]   # what the lock creates, deepest first
    try:
        with folder_lock(run, f"{what} {run.name}") as lock:
            yield lock
    finally:
        for d in made:
            try:
                d.rmdir()   # only when empty
            except OSError:
                break
