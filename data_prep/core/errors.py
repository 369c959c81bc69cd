"""Failures a user causes, and how each is said in one line.

:class:`InputError` is raised at the place that knows the file or argument, with the message the
user will read (``<file or argument>: <what is wrong>; expected <what>``). It subclasses
``ValueError`` so the per-item ``except ValueError`` of batch stages still catches it.

:func:`reading` wraps one read of a user's file and turns the exceptions a bad file causes
(missing, a folder, unreadable, not UTF-8, not CSV, empty, a field past the csv module's limit)
into an :class:`InputError` naming that file. :func:`user_message` is the conservative mapping the
CLI boundary uses for whatever still reaches it: ``(one line, exit status)``; exceptions it does not
know are reported as internal errors (status 1), never as the user's fault.
"""
from __future__ import annotations

import csv
import errno
import json
import os
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

CSV_FIELD_LIMIT = 1 << 30  # raised from csv's 131,072 chars: a PredictionString of 5,000+ boxes is legal


class InputError(ValueError):
    """A failure the user caused and can fix; ``str()`` is the whole message (``where: what``)."""

    def __init__(self, where: str | os.PathLike, what: str):
        self.where, self.what = str(where), what
        super().__init__(f"{where}: {what}")


def _encoding_hint(raw: bytes) -> str:
    if raw[:2] in (b"\xff\xfe", b"\xfe\xff"):
        return "it looks like UTF-16 (byte-order mark)"
    if raw[:4] and b"\x00" in raw[:200]:
        return "it contains NUL bytes (UTF-16 text, or not text at all)"
    return "it looks like Latin-1/Windows-1252 or another 8-bit encoding"


def decode_message(path: str | os.PathLike, exc: UnicodeDecodeError) -> str:
    """``not UTF-8 text (...)`` for ``path``, guessing the encoding from its first bytes."""
    try:
        with open(path, "rb") as f:
            head = f.read(256)
    except OSError:
        head = b""
    bad = exc.object[exc.start:exc.start + 1] if isinstance(exc.object, (bytes, bytearray)) else b""
    at = f"byte 0x{bad.hex()} at offset {exc.start}" if bad else "undecodable bytes"
    return (f"not UTF-8 text ({at}; {_encoding_hint(head)}); expected a UTF-8 file: "
            "re-save it as UTF-8 (e.g. 'CSV UTF-8')")


def _os_what(exc: OSError) -> str:
    if isinstance(exc, IsADirectoryError):
        return "is a folder; expected a file path"
    if isinstance(exc, NotADirectoryError):
        return "a part of this path is a file; expected a folder there"
    if isinstance(exc, PermissionError):
        return "permission denied; expected a path you may read/write"
    if isinstance(exc, FileNotFoundError):
        return "no such file or folder"
    if isinstance(exc, FileExistsError):
        return "already exists"
    if exc.errno == errno.ENOSPC:
        return "no space left on the device"
    if exc.errno == errno.EROFS:
        return "read-only file system; expected a writable output path"
    return str(exc.strerror or exc)


def os_message(exc: OSError) -> str:
    """One line for an OSError, naming its file(s) and what was expected there."""
    if exc.filename is None:
        return str(exc) if not exc.strerror else _os_what(exc)
    where = f"{exc.filename} -> {exc.filename2}" if exc.filename2 else f"{exc.filename}"
    return f"{where}: {_os_what(exc)}"


@contextmanager
def reading(path: str | os.PathLike, what: str = "file") -> Iterator[None]:
    """Turn the exceptions a bad ``path`` causes inside the block into :class:`InputError`."""
    import pandas as pd

    csv.field_size_limit(CSV_FIELD_LIMIT)
    try:
        yield
    except InputError:
        raise
    except UnicodeDecodeError as e:
        raise InputError(path, decode_message(path, e)) from e
    except json.JSONDecodeError as e:
        raise InputError(path, f"not valid JSON ({e.msg} at line {e.lineno} column {e.colno}); "
                               f"expected a {what}") from e
    except IsADirectoryError as e:
        raise InputError(path, f"is a folder; expected a {what}") from e
    except OSError as e:
        raise InputError(path, _os_what(e)) from e
    except pd.errors.EmptyDataError as e:
        raise InputError(path, f"is empty; expected a {what} with a header row") from e
    except (pd.errors.ParserError, csv.Error) as e:
        raise InputError(path, f"not a readable CSV ({str(e).strip().splitlines()[0]}); expected a {what}") from e


def check_output(path: str | os.PathLike, *, folder: bool = False, arg: str | None = None) -> Path:
    """Refuse an output path that cannot be what is asked for, before any work is done.

    A file path must not be an existing folder and its parent, if it exists, must be a writable
    folder; a folder path must not be an existing file. Missing parents are fine (writers create
    them)."""
    p = Path(path)
    name = f"{arg} {p}" if arg else str(p)
    if folder:
        if p.exists() and not p.is_dir():
            raise InputError(name, "is a file; expected an output folder")
        probe = p
    else:
        if p.is_dir():
            raise InputError(name, "is a folder; expected an output file path")
        probe = p.parent
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if not probe.is_dir():
        raise InputError(name, f"{probe} is a file; expected a folder there")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise InputError(name, f"folder {probe} is not writable; expected a writable output location")
    return p


def user_message(exc: BaseException) -> tuple[str, int]:
    """``(one line, exit status)`` for an exception that reached the CLI boundary."""
    import pandas as pd

    if isinstance(exc, KeyboardInterrupt):
        return "interrupted", 130
    if isinstance(exc, json.JSONDecodeError):
        return f"an input is not valid JSON ({exc.msg} at line {exc.lineno} column {exc.colno})", 2
    if isinstance(exc, UnicodeDecodeError):
        return (f"input is not UTF-8 text ({exc.reason} at byte {exc.start}); expected UTF-8: "
                "re-save the file as UTF-8"), 2
    if isinstance(exc, OSError):
        return os_message(exc), 2
    if isinstance(exc, pd.errors.EmptyDataError):
        return f"an input table is empty ({exc}); expected a CSV with a header row", 2
    if isinstance(exc, (pd.errors.ParserError, csv.Error)):
        return f"an input is not a readable CSV: {str(exc).strip().splitlines()[0]}", 2
    if isinstance(exc, InputError) or (isinstance(exc, ValueError) and raised_by_project(exc)):
        return " ".join(str(exc).split("\n")), 2   # the project's own messages about an input
    if isinstance(exc, MemoryError):
        return "out of memory; try a smaller --size/--batch or fewer workers", 1
    text = " ".join(str(exc).split())[:300]
    return (f"internal error {type(exc).__name__}: {text} (unexpected: if the input looks right, this is a "
            "bug; rerun with --debug for the traceback and report it)"), 1


_PACKAGES = tuple(str(Path(__file__).resolve().parents[2] / p) + os.sep for p in ("data_prep", "detection", "bench"))


def raised_by_project(exc: BaseException) -> bool:
    """Whether ``exc`` was raised by the project's own code (a message written for the user),
    not deep inside a library (numpy's "output array is read-only" is a bug, not an input fault)."""
    tb, last = exc.__traceback__, None
    while tb is not None:
        last, tb = tb, tb.tb_next
    if last is None:
        return True
    return os.path.abspath(last.tb_frame.f_code.co_filename).startswith(_PACKAGES)
