"""Where cxrdet's shipped files are, and where the files it generates for itself go.

Two ways to run the same code:

* **from the checkout** (``make setup``'s editable install, or ``PYTHONPATH=.``): the shipped
  configs are ``<checkout>/configs`` and the shipped weights ``<checkout>/weights``; caches go to
  ``<checkout>/.cache`` (git-ignored), as before;
* **installed** (``pip install .`` or a wheel): the same files travel as package data
  (``data_prep/configs/*.yaml``, ``detection/weights/*.pt``, mapped in pyproject.toml) and caches go
  to the user's cache folder (``$XDG_CACHE_HOME/cxrdet``, default ``~/.cache/cxrdet``), never into
  the installed package.

``CXRDET_CONFIGS`` (a folder of configs) and ``CXRDET_CACHE`` (the cache folder) override both.
Shipped weights are found by file name: ``weights=vinbig_phantom_yolo11n.pt`` resolves to them
when no such file exists in the working directory (:func:`shipped_weight`).

Generated files that belong to an input (an ONNX export of a ``.pt``) go beside that input when
it is the user's own file, and to :func:`cache_dir` when it is a shipped file
(:func:`beside_or_cache`): the package's folders are read-only by intent.
"""
from __future__ import annotations

import hashlib
import os
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1]      # data_prep/
ROOT = PACKAGE.parent                               # the checkout, or site-packages when installed


def in_checkout() -> bool:
    """True when this code runs from a source checkout (its pyproject.toml and configs/ beside it)."""
    return (ROOT / "pyproject.toml").is_file() and (ROOT / "configs" / "default.yaml").is_file()


def config_dir() -> Path:
    """The folder of the shipped configs (``default.yaml`` and one per dataset)."""
    env = os.environ.get("CXRDET_CONFIGS")
    if env:
        return Path(env).expanduser()
    return ROOT / "configs" if in_checkout() else PACKAGE / "configs"


def weights_dir() -> Path:
    """The folder of the shipped weights (``weights/`` of the checkout, else the package's copy)."""
    return ROOT / "weights" if in_checkout() else ROOT / "detection" / "weights"


def cache_dir() -> Path:
    """Where cxrdet keeps what it generates for itself (ultralytics' settings, ONNX exports of
    shipped weights): ``$CXRDET_CACHE``, else ``<checkout>/.cache``, else the user's cache folder."""
    env = os.environ.get("CXRDET_CACHE")
    if env:
        return Path(env).expanduser()
    if in_checkout():
        return ROOT / ".cache"
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg).expanduser() if xdg else Path.home() / ".cache") / "cxrdet"


def shipped_weight(name: str | os.PathLike) -> Path | None:
    """The shipped weights file called ``name`` (a bare file name), or None."""
    p = Path(name)
    if p.name != str(name):   # a path with folders is the user's, never looked up here
        return None
    cand = weights_dir() / p.name
    return cand if cand.is_file() else None


def is_shipped(path: str | os.PathLike) -> bool:
    """True for a file inside the shipped weights or configs folders (never written to)."""
    p = Path(path).resolve()
    return any(p.parent == d.resolve() for d in (weights_dir(), config_dir()) if d.is_dir())


def beside_or_cache(src: str | os.PathLike, name: str) -> Path:
    """Where a file generated from ``src`` (e.g. its ONNX export ``name``) goes: beside ``src``
    when it is the user's file, else (a shipped file) in ``cache_dir()/generated`` under a name
    that also carries a hash of the source's path, so two sources never share one cached file."""
    src = Path(src)
    if not is_shipped(src):
        return src.with_name(name)
    tag = hashlib.sha1(str(src.resolve()).encode()).hexdigest()[:8]
    stem, dot, ext = name.rpartition(".")
    return cache_dir() / "generated" / (f"{stem}_{tag}.{ext}" if dot else f"{name}_{tag}")


def export_destination(src: str | os.PathLike, name: str) -> Path:
    """The default destination of an export the user asked for (``cxrdet export W.pt``): beside
    ``src`` when it is the user's file, else (a shipped file) ``name`` in the working directory."""
    src = Path(src)
    return Path.cwd() / name if is_shipped(src) else src.with_name(name)
