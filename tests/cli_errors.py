"""The one helper the bad-input tests share: a failed ``cxrdet`` run's single error line."""
from __future__ import annotations


def one_error(capsys, stage: str) -> str:
    """The single stderr line of a failed run (asserts there is exactly one and no traceback)."""
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.startswith("cxrdet ") or "Traceback" in ln or "Error" in ln[:20]]
    assert "Traceback" not in err, err
    assert len(lines) == 1, err
    assert lines[0].startswith(f"cxrdet {stage}: error: "), lines[0]
    return lines[0]
