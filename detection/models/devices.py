"""Which device a stage runs on: ``device`` of the config resolved once, the choice logged.

``auto`` (the default) is the first GPU torch sees (``"0"``), else the CPU. ``cpu`` is the CPU;
``0`` / ``0,1`` / ``cuda:0`` name CUDA GPUs and are refused in one line (a user error, exit 2)
when torch sees no such GPU, instead of ultralytics' or torch's traceback later.
"""
from __future__ import annotations

import logging

from data_prep.core.errors import InputError

log = logging.getLogger(__name__)
_said: set[tuple[str, str]] = set()  # (asked, chosen) already logged in this process


def _gpus() -> int:
    import torch

    return int(torch.cuda.device_count()) if torch.cuda.is_available() else 0


def resolve_device(device, what: str = "device") -> str:
    """``device`` of a config -> what torch / ultralytics are given: ``"cpu"``, ``"0"``, ``"0,1"``,
    ``"cuda:1"``, ``"mps"``. ``None``/``""``/``auto`` pick the first GPU, else the CPU (logged)."""
    asked = "auto" if device is None or str(device).strip() in ("", "auto") else str(device).strip()
    low = asked.lower()
    if low == "auto":
        chosen = "0" if _gpus() else "cpu"
    elif low in ("cpu", "mps"):
        chosen = low
    else:
        ids = low.removeprefix("cuda:").split(",")
        if not all(i.strip().isdigit() for i in ids):
            raise InputError(f"{what}={asked}", "expected auto, cpu, a GPU number (0) or numbers (0,1)")
        n = _gpus()
        bad = [int(i) for i in ids if int(i) >= n]
        if bad:
            seen = "no CUDA GPU" if n == 0 else f"{n} GPU(s) (0..{n - 1})"
            raise InputError(f"{what}={asked}", f"torch sees {seen} here; expected device=cpu or device=auto")
        chosen = asked if low.startswith("cuda:") else ",".join(i.strip() for i in ids)
    if (asked, chosen) not in _said:
        _said.add((asked, chosen))
        if asked == "auto":
            log.info("%s auto: %s", what, "GPU 0 (the first of %d torch sees)" % _gpus() if chosen != "cpu"
                     else "cpu (torch sees no GPU)")
        else:
            log.info("%s: %s", what, chosen)
    return chosen
