"""Output image sizes, apart from :mod:`data_prep.core.boxes` so that the convert worker (which
imports no pandas) computes them with the same formula."""
from __future__ import annotations


def keep_ratio_size(height: int, width: int, size: int) -> tuple[int, int]:
    """(height, width) with the longest side ``size`` and the aspect ratio kept (rounded)."""
    s = size / max(height, width)
    return max(1, int(round(height * s))), max(1, int(round(width * s)))
