"""Datasets: each module holds its loader AND its description (a frozen :class:`Dataset`).

``DATASETS`` maps a dataset name to its description (``.load`` is its loader,
``load(labels, meta=None, ...) -> (images, boxes)``); ``LOADERS`` is the same dict seen as
loaders. Stages take a dataset's knowledge (class names, normal class, submission format,
default metric, ...) from :func:`describe` -- given the config's ``dataset`` (or the prep
manifest's config) -- never from literals or from guessing by columns. This package is the
only place a class id or a class name is spelled.

Each module's docstring states its inputs, its bad-row policy (error vs counted repair) and
where repairs are returned (``boxes.attrs["repairs"]``).

May import: data_prep.core.
"""
from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

import pandas as pd

from data_prep.datasets import nih, rsna, vinbigdata
from data_prep.datasets.common import Dataset, SubmissionFormat

# the dataset of configs/default.yaml: what a function called without a dataset assumes
DEFAULT_DATASET = "vinbigdata"
DATASETS: dict[str, Dataset] = {d.name: d for d in (vinbigdata.DATASET, rsna.DATASET, nih.DATASET)}
LOADERS = {name: d.load for name, d in DATASETS.items()}


def describe(dataset: "str | dict | Dataset") -> Dataset:
    """The :class:`Dataset` of a name, or of a merged config (its ``dataset``; a non-null
    ``classes`` key replaces the class names). Unknown name: ``ValueError`` listing the valid ones."""
    if isinstance(dataset, Dataset):
        return dataset
    cfg = dataset if isinstance(dataset, dict) else None
    name = cfg.get("dataset") if cfg is not None else dataset
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; expected one of {sorted(DATASETS)}")
    d = DATASETS[name]
    if cfg is not None and cfg.get("classes"):
        d = dataclasses.replace(d, classes=tuple(str(c) for c in cfg["classes"]))
    return d


def normal_ids() -> set[int]:
    """The normal class ids of every registered dataset (a "normal" verdict row, whatever the dataset)."""
    return {d.normal_id for d in DATASETS.values() if d.normal is not None}


def describe_prep(prep_dir: str | os.PathLike) -> Dataset:
    """The :class:`Dataset` a prep folder was made for, from its manifest (``prep.json``)."""
    from data_prep.core.prepdir import PrepDir

    path = PrepDir(prep_dir).manifest
    if not path.is_file():
        raise FileNotFoundError(f"{prep_dir}: no prep.json; expected a folder written by `cxrdet prep`")
    cfg = json.loads(path.read_text()).get("config") or {}
    if "dataset" not in cfg:
        raise ValueError(f"{path}: no config.dataset; expected a manifest written by `cxrdet prep`")
    return describe(cfg)


def load(dataset: str, labels, meta=None, **kw) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``describe(dataset).load(labels, meta=meta, **kw)`` -> ``(images, boxes)``;
    an unknown ``dataset`` raises ``ValueError`` listing the valid names."""
    return describe(dataset).load(labels, meta=meta, **kw)
