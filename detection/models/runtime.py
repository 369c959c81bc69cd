"""Make ultralytics run offline by construction. Import this before ultralytics, everywhere::

    import detection.models.runtime  # noqa: F401  (sets the environment, fonts and settings)
    from ultralytics import YOLO

What it does, once per process (idempotent):

* ``YOLO_CONFIG_DIR`` -> a folder the project controls, unless the user already set it:
  ``$CXRDET_CACHE/ultralytics`` when ``CXRDET_CACHE`` is set, else ``<repo>/.cache/ultralytics``.
  ultralytics keeps its ``settings.json`` and fonts in ``$YOLO_CONFIG_DIR/Ultralytics/``
  (``ultralytics.utils.get_user_config_dir``), so runs never depend on a user's home.
* ``YOLO_OFFLINE=1`` (no DNS look-ups at import: ``ultralytics.utils.is_online``) and
  ``YOLO_AUTOINSTALL=0`` (``ultralytics.utils.AUTOINSTALL``: a missing package raises instead of
  being pip-installed).
* Copies a TrueType font to ``$YOLO_CONFIG_DIR/Ultralytics/Arial.ttf`` and ``Arial.Unicode.ttf``:
  ``ultralytics.utils.checks.check_font`` looks there first and otherwise downloads them on every
  ``train`` (``YOLO_OFFLINE`` and ``plots=False`` do not stop it). The source font is Debian's
  DejaVuSans, or matplotlib's bundled copy (always in the venv).
* ``settings["sync"] = False`` (no analytics / crash reports).
* ``ULTRALYTICS_SAFE_LOAD=1`` (:mod:`detection.models.safe_load`): ultralytics loads every ``.pt``
  weights-only against its allow-list, unless ``trust_weights=true``.

Everything lives in ``os.environ`` and files, so the processes ultralytics starts itself (DDP
workers for ``device=0,1``) inherit it without importing this module.

Not covered (ultralytics, GPU only): ``check_amp`` on a CUDA device tries to fetch ``yolo26n.pt``
once per training run; offline that fails fast and ultralytics logs "AMP checks skipped" and keeps
AMP on. Pass ``yolo_args: {amp: false}`` to skip it entirely.
"""
from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

from data_prep.core.atomic import copy_file

log = logging.getLogger(__name__)

FONT_NAMES = ("Arial.ttf", "Arial.Unicode.ttf")
_SYSTEM_FONT = Path("/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf")

_done = False


def default_config_dir() -> Path:
    """The ``YOLO_CONFIG_DIR`` this module sets when the user has not set one."""
    from data_prep.core.resources import cache_dir

    return cache_dir() / "ultralytics"


def font_source() -> Path:
    """A TrueType font to stand in for Arial: Debian's DejaVuSans, else matplotlib's bundled one."""
    if _SYSTEM_FONT.is_file():
        return _SYSTEM_FONT
    import matplotlib

    bundled = Path(matplotlib.get_data_path()) / "fonts" / "ttf" / "DejaVuSans.ttf"
    if bundled.is_file():
        return bundled
    raise FileNotFoundError(f"no TrueType font found at {_SYSTEM_FONT} or {bundled}; "
                            "ultralytics would try to download Arial.ttf")


def install_fonts(user_dir: Path) -> None:
    """Copy the stand-in font to ``user_dir/Arial.ttf`` and ``Arial.Unicode.ttf`` (if absent)."""
    user_dir.mkdir(parents=True, exist_ok=True)
    src = None
    for name in FONT_NAMES:
        dst = user_dir / name
        if dst.is_file() and dst.stat().st_size > 0:
            continue
        src = src or font_source()
        copy_file(src, dst)


def setup() -> Path:
    """Set the offline environment, install the fonts, turn settings sync off.

    Returns ultralytics' user config folder (``$YOLO_CONFIG_DIR/Ultralytics``)."""
    global _done
    if "ultralytics.utils" in sys.modules and not _done:
        log.warning("ultralytics was imported before detection.models.runtime: YOLO_CONFIG_DIR/YOLO_OFFLINE set now "
                    "come too late for its import-time checks; import detection.models.runtime first")
    os.environ.setdefault("YOLO_CONFIG_DIR", str(default_config_dir()))
    os.environ["YOLO_OFFLINE"] = "1"
    os.environ["YOLO_AUTOINSTALL"] = "0"
    from detection.models import safe_load

    safe_load.enforce()   # ULTRALYTICS_SAFE_LOAD=1 unless trust_weights=true: read before ultralytics imports
    Path(os.environ["YOLO_CONFIG_DIR"]).expanduser().mkdir(parents=True, exist_ok=True)
    # The folder ultralytics computes itself (it may fall back to /tmp when ours is not writable).
    install_fonts(Path(os.environ["YOLO_CONFIG_DIR"]).expanduser() / "Ultralytics")
    from ultralytics.utils import SETTINGS, USER_CONFIG_DIR

    install_fonts(Path(USER_CONFIG_DIR))
    if SETTINGS.get("sync", True):
        SETTINGS.update(sync=False)
    _done = True
    return Path(USER_CONFIG_DIR)


USER_DIR = setup()


def open_yolo(path, task: str | None = None, what: str = "weights"):
    """``YOLO(path, task=task)`` for a local ``.pt`` / ``.onnx``, with a file that is not such a
    model (empty, random bytes, text, a zip of something else, the wrong task) reported as an
    :class:`~data_prep.core.errors.InputError` naming the file instead of ultralytics' traceback."""
    from ultralytics import YOLO

    from data_prep.core.errors import InputError

    p = Path(path)
    kind = "an ONNX model exported by `cxrdet export`" if p.suffix == ".onnx" else \
        "a YOLO checkpoint saved by `cxrdet train` / `cxrdet train-cls` (ultralytics .pt)"
    if not p.is_file():
        raise InputError(f"{what} {p}", f"no such file; expected {kind}")
    if p.stat().st_size == 0:
        raise InputError(f"{what} {p}", f"empty file (0 bytes); expected {kind}")
    try:
        if p.suffix == ".onnx":
            import onnxruntime as ort

            ort.InferenceSession(str(p), providers=["CPUExecutionProvider"])
        model = YOLO(str(p), task=task)
    except Exception as e:  # ultralytics / torch / onnxruntime each raise their own kinds
        from detection.models import safe_load

        refused = safe_load.guard(p, what, kind, e)
        if refused is not None:
            raise refused from e
        why = " ".join(str(e).split())[:200] or type(e).__name__
        raise InputError(f"{what} {p}", f"not a usable model ({type(e).__name__}: {why}); expected {kind}") from e
    if task and p.suffix != ".onnx" and getattr(model, "task", task) != task:
        raise InputError(f"{what} {p}", f"is a {model.task!r} model; expected a {task!r} model here")
    return model


def ultralytics_checkpoint(path, what: str = "weights", kind: str = "an ultralytics checkpoint (.pt)") -> dict:
    """An ultralytics ``.pt`` as its checkpoint dict, through ultralytics' restricted loader (a full
    load only with ``trust_weights=true``: :mod:`detection.models.safe_load`); one
    :class:`~data_prep.core.errors.InputError` naming the file on failure. A plain dict of tensors (a
    ``tv:`` checkpoint) loads too."""
    from ultralytics.nn.tasks import torch_safe_load

    from data_prep.core.errors import InputError
    from detection.models import safe_load

    p = Path(path)
    if not p.is_file() or p.stat().st_size == 0:
        raise InputError(f"{what} {p}", f"{'no such file' if not p.exists() else 'empty file (0 bytes)'}; expected {kind}")
    safe_load.enforce()
    try:
        ck = torch_safe_load(str(p), safe_only=not safe_load.trusted())[0]
    except Exception as e:  # torch / ultralytics raise TypeError, RuntimeError, UnpicklingError...
        raise safe_load.error(p, what, kind, e) from e
    if not isinstance(ck, dict):
        raise InputError(f"{what} {p}", f"holds a {type(ck).__name__}, not a checkpoint dict; expected {kind}")
    return ck
