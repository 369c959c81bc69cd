"""Write-then-rename: nothing a stage writes is ever seen half-written. The one module that renames.

:func:`atomic_path` yields a temporary name beside the target (same folder, so the final
``os.replace`` is atomic on POSIX); the file is renamed into place only when the block succeeds and
removed when it fails. :func:`write_csv`, :func:`write_text`, :func:`write_bytes` and
:func:`copy_file` are its common uses; :func:`atomic_folder` does the same for a whole folder
(built beside its final place, swapped in when complete), :func:`move` puts a finished file in
place (a rename, or a copy then rename across file systems) and :func:`symlink` replaces a link.
No other module calls ``os.replace``/``os.rename``/``Path.rename`` (a test checks).

Temporary names (files and folders) are ``.<name>.<pid>.<random>.tmp`` (:data:`TEMP_PATTERN`): a
run killed mid-write leaves one behind; the next write of the same target removes those whose
process is gone (:func:`clean_stale`), and a stage that writes many files into one folder (convert)
clears the whole folder once at its start instead (:func:`clean_folder`, which also removes the
``<name>.<pid>.tmp`` temps of earlier versions' PNG and meta writers).

Also here, because they guard what is written: :func:`safe_name` (an image id -> a file name that
cannot leave its folder), :func:`check_not_input` and :func:`check_outputs` (no stage writes over its inputs; the latter is
the CLI's one guard of every stage's output flags against its input flags) and
:func:`folder_lock` (one writer per output folder; the holder is named, dead holders' locks are
taken over). The process umask is read once, at import, never set again.
"""
from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import socket
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator



@contextmanager
def atomic_path(path: str | os.PathLike, clean: bool = True) -> Iterator[Path]:
    """A temporary path beside ``path`` (parents created); renamed to ``path`` on success.

    ``clean``: first remove the temps of ``path`` left by dead processes (:func:`clean_stale`, one
    listing of the folder); off for a stage that called :func:`clean_folder` once at its start."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if clean:
        clean_stale(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.{os.getpid()}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give the usual mode of a new file
        os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)


@contextmanager
def atomic_folder(path: str | os.PathLike) -> Iterator[Path]:
    """An empty temporary folder beside ``path``; on success it takes the place of ``path`` (the old
    folder, if any, is moved aside and then removed), on failure it is removed and ``path`` is
    left as it was. Between the two renames ``path`` is briefly absent, never half-written."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    clean_stale(path)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.{os.getpid()}.", suffix=".tmp", dir=path.parent))
    try:
        os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp makes 0700
        yield tmp
        old = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
        if path.exists():
            os.replace(path, old)
        os.replace(tmp, path)
        shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def move(src: str | os.PathLike, path: str | os.PathLike) -> Path:
    """Put the finished file ``src`` in place of ``path``: one rename on the same file system; else
    a copy to a temporary name beside ``path``, renamed, then ``src`` removed."""
    src, path = Path(src), Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.replace(src, path)
    except OSError as e:
        import errno

        if e.errno != errno.EXDEV:
            raise
        copy_file(src, path)
        src.unlink()
    return path


def symlink(target: str | os.PathLike, path: str | os.PathLike) -> Path:
    """Make ``path`` a symbolic link to ``target``, replacing what is there in one rename."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    os.symlink(target, tmp)
    try:
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)   # a no-op after the rename (the name is gone)
    return path


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` exists on this host."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


TEMP_PATTERN = r"^\.(?P<name>.+)\.(?P<pid>\d+)\.[^.]+\.tmp$"
"""The temporary names of this module: ``.<name>.<pid>.<random>.tmp`` (``name``: the target's)."""
_TMP = re.compile(TEMP_PATTERN)
_OLD_TMP = re.compile(r"^[^.].*\.\d+\.tmp$")   # ``<name>.<pid>.tmp``: earlier versions' PNG/meta writers


def clean_stale(path: str | os.PathLike) -> int:
    """Remove the temporary files (or folders) of ``path`` left by dead processes
    (``.<name>.<pid>.*.tmp``, and the pid-less ``.<name>.*.tmp`` of older versions); return how
    many were removed."""
    path = Path(path)
    try:
        found = list(path.parent.glob(f".{glob_escape(path.name)}.*.tmp"))
    except OSError:
        return 0
    return sum(_remove_stale(t, path.name) for t in found)


def clean_folder(folder: str | os.PathLike) -> int:
    """:func:`clean_stale` for every target in ``folder`` at once (one listing): the temps of dead
    processes, the pid-less ones of older versions and the ``<name>.<pid>.tmp`` of earlier
    versions' writers (never made by this version, so stale whatever their pid). Returns how many
    were removed."""
    try:
        found = [t for t in Path(folder).iterdir() if t.name.endswith(".tmp")]
    except OSError:
        return 0
    n = 0
    for t in found:
        if t.name.startswith("."):
            n += _remove_stale(t, None)
        elif _OLD_TMP.match(t.name):
            _remove(t)
            n += 1
    return n


def _remove_stale(t: Path, name: str | None) -> int:
    """Remove temp ``t`` (of target ``name``, or of any target) unless a live process owns it."""
    m = _TMP.match(t.name)
    if m and (name is None or m["name"] == name) and pid_alive(int(m["pid"])):
        return 0
    if m is None or name is None or m["name"] == name:
        _remove(t)
        return 1
    return 0


def _remove(t: Path) -> None:
    if t.is_dir() and not t.is_symlink():
        shutil.rmtree(t, ignore_errors=True)
    else:
        t.unlink(missing_ok=True)


def glob_escape(name: str) -> str:
    return re.sub(r"([*?\[])", r"[\1]", name)


def safe_name(image_id: str) -> str:
    """``image_id`` as a file name that stays in its folder: path separators, control characters
    and runs of dots become ``_``, and a leading dot is kept from hiding the file."""
    s = re.sub(r"[/\\\x00-\x1f]", "_", str(image_id))
    s = re.sub(r"\.{2,}", "_", s)
    if s.startswith("."):
        s = "_" + s[1:]
    return s or "_"


def check_not_input(out: str | os.PathLike, inputs, what: str = "--out") -> None:
    """Raise :class:`~data_prep.core.errors.InputError` when ``out`` (a file or folder) IS one of the
    ``inputs`` (files or folders): no stage writes over what it reads."""
    from data_prep.core.errors import InputError

    o = Path(out).resolve()
    for i in inputs:
        if i is None:
            continue
        if o == Path(i).resolve():
            raise InputError(f"{what} {out}", f"is the input {i}; expected an output path that is not "
                             "one of the inputs (a stage never writes over what it reads)")



READ_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".dcm", ".dicom")


def _same(a: Path, b: Path) -> bool:
    try:
        return a == b or (a.exists() and b.exists() and os.path.samefile(a, b))
    except OSError:
        return False


def check_outputs(outputs: list[tuple[str, str | os.PathLike]], inputs: list[tuple[str, str | os.PathLike]]) -> None:
    """THE guard of every stage's paths (the CLI calls it once, after parsing): ``outputs`` and
    ``inputs`` are ``(flag, path)`` pairs. Raises :class:`~data_prep.core.errors.InputError` when

    * two outputs are one path (``tune --out tuned.json`` would write its YAML, then the JSON over it);
    * an output IS an input (file or folder, config files included; hard links and symlinks too);
    * an output file lies inside an input folder with a suffix the stage reads there (an image or a
      DICOM: ``classify --out`` inside ``--source`` over a PNG).
    """
    from data_prep.core.errors import InputError

    outs = [(f, Path(p).expanduser().resolve()) for f, p in outputs if p is not None and str(p) != ""]
    ins = [(f, Path(p).expanduser().resolve()) for f, p in inputs if p is not None and str(p) != ""]
    for i, (fa, a) in enumerate(outs):
        for fb, b in outs[i + 1:]:
            if _same(a, b):
                raise InputError(f"{fa} and {fb}", f"are one path ({a}); expected a different path for each output "
                                 "(a stage never writes two outputs to one file)")
    for fo, o in outs:
        for fi, i in ins:
            if _same(o, i):
                raise InputError(f"{fo} {o}", f"is the input {fi} {i}; expected an output path that is not one of "
                                 "the inputs (a stage never writes over what it reads)")
            if i.is_dir() and o.suffix.lower() in READ_SUFFIXES and o.is_relative_to(i):
                raise InputError(f"{fo} {o}", f"is inside the input folder {fi} {i}, where the stage reads "
                                 f"{o.suffix} files; expected an output path outside it")


LOCK = ".cxrdet.lock"


@contextmanager
def folder_lock(folder: str | os.PathLike, what: str) -> Iterator[Path]:
    """Hold ``folder/.cxrdet.lock`` (pid, host, start time, ``what``) for the block.

    A second holder gets an :class:`~data_prep.core.errors.InputError` naming the first (it stops, it
    does not wait); a lock whose process is gone (same host, dead pid) is taken over with a warning."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    with _hold(folder / LOCK, folder, what, "output folder") as lock:
        yield lock


@contextmanager
def file_lock(path: str | os.PathLike, what: str) -> Iterator[Path]:
    """:func:`folder_lock` for an output file (and what is written beside it, e.g. tune's
    ``X.yaml`` + ``X.json``): ``.<name>.cxrdet.lock`` beside ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with _hold(path.parent / f".{path.name}{LOCK}", path, what, "output") as lock:
        yield lock


@contextmanager
def _hold(lock: Path, folder: Path, what: str, kind: str) -> Iterator[Path]:
    import logging

    from data_prep.core.errors import InputError

    me = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.strftime("%Y-%m-%d %H:%M:%S"),
          "what": what}
    for _ in range(3):
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            try:
                holder = json.loads(lock.read_text() or "{}")
            except (OSError, ValueError):
                holder = {}
            if not holder and time.time() - _mtime(lock) < 5:   # being written right now
                time.sleep(0.2)
                continue
            stale = not holder or (holder.get("host") == me["host"] and not pid_alive(int(holder.get("pid", 0))))
            if stale:
                logging.getLogger(__name__).warning("%s: taking over a stale lock of pid %s (%s) started %s",
                                                    lock, holder.get("pid", "?"), holder.get("what", "?"),
                                                    holder.get("started", "?"))
                lock.unlink(missing_ok=True)
                continue
            raise InputError(folder, f"in use by another run ({holder.get('what', '?')}: pid {holder.get('pid')} "
                             f"on host {holder.get('host')}, started {holder.get('started')}); expected one "
                             f"writer per {kind}: wait for it, or delete {lock} if that run is gone")
        with os.fdopen(fd, "w") as f:
            json.dump(me, f)
        break
    else:
        raise InputError(folder, f"could not take the lock {lock}; expected to be able to create it")
    try:
        yield lock
    finally:
        try:
            if json.loads(lock.read_text()).get("pid") == me["pid"]:
                lock.unlink()
        except (OSError, ValueError):
            pass


def _mtime(p: Path) -> float:
    try:
        return p.stat().st_mtime
    except OSError:
        return 0.0


def _read_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_UMASK = _read_umask()  # read once, at import: os.umask can only be read by setting it (not thread-safe)


def _umask() -> int:
    return _UMASK


def write_csv(df: "pd.DataFrame", path: str | os.PathLike, **to_csv) -> Path:
    """``df.to_csv(path, index=False, **to_csv)`` through :func:`atomic_path`."""
    with atomic_path(path) as tmp:
        df.to_csv(tmp, index=False, **to_csv)
    return Path(path)


def write_text(path: str | os.PathLike, text: str) -> Path:
    """``Path(path).write_text(text)`` through :func:`atomic_path`."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


def write_bytes(path: str | os.PathLike, data: bytes, clean: bool = True) -> Path:
    """``Path(path).write_bytes(data)`` through :func:`atomic_path` (``clean``: see there)."""
    with atomic_path(path, clean=clean) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def copy_file(src: str | os.PathLike, path: str | os.PathLike) -> Path:
    """``shutil.copyfile(src, path)`` through :func:`atomic_path`."""
    with atomic_path(path) as tmp:
        shutil.copyfile(src, tmp)
    return Path(path)
