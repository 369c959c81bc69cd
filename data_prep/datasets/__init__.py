"""Dataset loaders: source annotation files -> (image table, box table) per data_prep/boxes.py.

``LOADERS`` maps a dataset name to its ``load(labels, meta=None, ...)``; :func:`load` picks one.
Each module's docstring states its inputs, its bad-row policy (error vs counted repair) and
where repairs are returned (``boxes.attrs["repairs"]``).
"""
from __future__ import annotations

import pandas as pd

from data_prep.datasets import nih, rsna, vinbigdata

LOADERS = {"vinbigdata": vinbigdata.load, "rsna": rsna.load, "nih": nih.load}


def load(dataset: str, labels, meta=None, **kw) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``LOADERS[dataset](labels, meta=meta, **kw)`` -> ``(images, boxes)``;
    an unknown ``dataset`` raises ``ValueError`` listing the valid names."""
    if dataset not in LOADERS:
        raise ValueError(f"unknown dataset {dataset!r}; expected one of {sorted(LOADERS)}")
    return LOADERS[dataset](labels, meta=meta, **kw)
