"""Write-then-rename: nothing a stage writes is ever seen half-written.

:func:`atomic_path` yields a temporary name beside the target (same folder, so the final
``os.replace`` is atomic on POSIX); the file is renamed into place only when the block succeeds and
removed when it fails. :func:`write_csv` and :func:`write_text` are the two common uses.
"""
from __future__ import annotations

import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import pandas as pd


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """A temporary path beside ``path`` (parents created); renamed to ``path`` on success."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give the usual mode of a new file
        os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_csv(df: pd.DataFrame, path: str | os.PathLike, **to_csv) -> Path:
    """``df.to_csv(path, index=False, **to_csv)`` through :func:`atomic_path`."""
    with atomic_path(path) as tmp:
        df.to_csv(tmp, index=False, **to_csv)
    return Path(path)


def write_text(path: str | os.PathLike, text: str) -> Path:
    """``Path(path).write_text(text)`` through :func:`atomic_path`."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)
