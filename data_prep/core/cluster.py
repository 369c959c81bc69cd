"""Where the batch stages (``convert``, ``prep``'s conversion, ``predict``) run their tasks.

Config key ``scheduler`` (flag ``--scheduler``):

* ``null`` (default): this machine, a local process pool of ``workers`` processes;
* ``local``: a Dask ``LocalCluster`` of ``workers`` single-threaded worker processes, bound to
  127.0.0.1, without a dashboard (the same machine, through Dask: a check of the cluster path),
  with Dask's diagnostics that cost CPU time slowed down (:data:`LOCAL_CONFIG`);
* ``tcp://host:port``: an existing Dask cluster (``dask scheduler`` + ``dask worker``, dask-jobqueue,
  ...). Its workers must import the same cxrdet and see the input and output folders under the
  same paths as this client (a shared file system): tasks carry absolute paths and return only
  small rows (meta rows, error strings, prediction rows), never pixel arrays.

:func:`dask_client` opens the client (and the LocalCluster), :func:`run_unordered` submits tasks
with a bounded number in flight and yields their results in completion order
(``distributed.as_completed``), so a progress bar can follow completed futures.
"""
from __future__ import annotations

import logging
import re
import struct
from contextlib import contextmanager
from itertools import islice
from typing import Any, Callable, Iterable, Iterator

log = logging.getLogger(__name__)

LOCAL = "local"
CONNECT_TIMEOUT = "30s"      # waiting for an existing scheduler to answer
PROBE_TIMEOUT = 5.0          # seconds per step of probe_scheduler (connect, its handshake, an HTTP check)
_ADDRESS = re.compile(r"tcp://[^\s/:]+:\d{1,5}")

# Dask settings of the LocalCluster (scheduler=local). The defaults serve the dashboard, which is
# not started here, and on 2 cores they cost the images' CPU time: bench/convert.py measured the
# cluster's processes at ~205 ms of CPU per image against ~125 ms in the process pool, ~50 ms of it
# in the workers' other threads while a task runs; with these settings, see bench/convert.py.
# A cluster started by hand takes the same keys from its environment (README, More than one machine).
LOCAL_CONFIG = {
    "distributed.worker.profile.enabled": False,           # a stack sample of the task every 10 ms
    "distributed.admin.tick.interval": "1s",                # event-loop check, every 20 ms per process
    "distributed.worker.memory.monitor-interval": "1s",     # RSS poll for spill/pause/kill, 100 ms
    "distributed.admin.system-monitor.interval": "5s",      # CPU/memory/network/disk poll, 500 ms
    # Dask's nanny starts workers with MALLOC_TRIM_THRESHOLD_=65536: glibc then hands every freed
    # image buffer back to the system and faults it in again (measured: +45 % page faults, +10 ms
    # system CPU per image); the workers keep no data between tasks, so glibc's default is kept.
    "distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_": None,
}
LOCAL_SCHEDULER = {"dashboard": False, "dashboard_address": "127.0.0.1:0"}


def check_scheduler(value: Any) -> str | None:
    """``None``/``"null"``/``""`` -> None; ``"local"``; ``"tcp://host:port"``; anything else is a
    ``ValueError`` naming the value and what is expected."""
    if value is None or (isinstance(value, str) and value.strip().lower() in ("", "null", "none")):
        return None
    s = str(value).strip()
    if s == LOCAL or _ADDRESS.fullmatch(s):
        return s
    raise ValueError(f"scheduler {value!r}: expected null (local process pool), 'local' (a Dask LocalCluster "
                     "on this machine) or tcp://host:port (the address of a running `dask scheduler`)")


def _dask_handshake(data: bytes) -> bool:
    """Whether ``data`` starts like a Dask comm message (distributed.comm.tcp): uint64 total
    length, then uint64 frame count and one uint64 length per frame, adding up to the total."""
    if len(data) < 16:
        return False
    total, nframes = struct.unpack_from("<QQ", data)
    if not 1 <= nframes <= 64 or len(data) < 16 + 8 * nframes:
        return False
    lengths = struct.unpack_from(f"<{nframes}Q", data, 16)
    return total == 8 + 8 * nframes + sum(lengths) and total < (1 << 24)


def _recv(sock, n: int, timeout: float) -> bytes:
    import socket
    import time

    out, end = b"", time.monotonic() + timeout
    while len(out) < n:
        left = end - time.monotonic()
        if left <= 0:
            break
        sock.settimeout(left)
        try:
            chunk = sock.recv(n - len(out))
        except (socket.timeout, OSError):
            break
        if not chunk:
            break
        out += chunk
    return out


def _http_answer(host: str, port: int, timeout: float) -> str | None:
    """The status line (and Server header) of an HTTP server at host:port, else None."""
    import socket

    try:
        with socket.create_connection((host, port), timeout=timeout) as s:
            s.sendall(b"GET / HTTP/1.0\r\nHost: " + host.encode() + b"\r\n\r\n")
            head = _recv(s, 2048, timeout)
    except OSError:
        return None
    if not head.startswith(b"HTTP/"):
        return None
    lines = head.decode("latin-1").split("\r\n")
    server = next((ln.split(":", 1)[1].strip() for ln in lines if ln.lower().startswith("server:")), None)
    return lines[0].strip() + (f", Server: {server}" if server else "")


def probe_scheduler(address: str, timeout: float = PROBE_TIMEOUT) -> None:
    """Check that ``tcp://host:port`` answers like a Dask scheduler (it sends its handshake first,
    unasked) within ``timeout`` seconds for each step; else a ``ValueError`` naming the address and
    what answered: nothing (cannot connect: refused, unreachable, unknown host, no answer), an HTTP
    server (e.g. the dashboard port), or some other service (its first bytes)."""
    import socket

    host, _, port = address[len("tcp://"):].rpartition(":")
    host = host.strip("[]")
    where = f"scheduler {address}"
    try:
        sock = socket.create_connection((host, int(port)), timeout=timeout)
    except socket.gaierror as e:
        raise ValueError(f"{where}: cannot connect: unknown host {host!r} ({e.strerror}); expected the address "
                         "of a running `dask scheduler`") from None
    except socket.timeout:
        raise ValueError(f"{where}: cannot connect: no answer within {timeout:g} s (unroutable, or a firewall "
                         "drops it); expected the address of a running `dask scheduler`") from None
    except OSError as e:
        raise ValueError(f"{where}: cannot connect ({e.strerror or e}); expected the address of a running "
                         "`dask scheduler` (started with `dask scheduler --port PORT`)") from None
    with sock:
        first = _recv(sock, 16, timeout)           # a Dask handshake: its length, then frames
        if len(first) == 16:
            total = struct.unpack_from("<Q", first)[0]
            if 16 <= total < (1 << 24):
                first += _recv(sock, total + 8 - 16, timeout)
        if first and not _dask_handshake(first):
            first += _recv(sock, 60, 0.5)            # a little more of what it says, for the message
    if _dask_handshake(first):
        return
    if first:
        what = f"a service that is not Dask answered: {first[:60]!r}"
    else:
        http = _http_answer(host, int(port), min(timeout, 2.0))   # a web server answers a GET at once
        what = (f"an HTTP server answered ({http}) - the dashboard or another web port, not the scheduler's"
                if http else f"the port accepted the connection but sent nothing within {timeout:g} s, as a Dask "
                "scheduler does at once")
    raise ValueError(f"{where}: not a Dask scheduler: {what}; expected the address `dask scheduler` prints "
                     "(\"Scheduler at: tcp://...\", default port 8786)")


@contextmanager
def dask_client(scheduler: str, workers: int = 2):
    """A ``distributed.Client`` for ``scheduler`` (``local`` or ``tcp://host:port``), closed (with
    its LocalCluster) on exit. LocalCluster workers are processes with one thread each, on
    127.0.0.1, no dashboard; Dask's nanny gives them ``OMP_NUM_THREADS=1`` (and MKL/OpenBLAS).
    The scheduler serves its HTTP routes (health, metrics) even without a dashboard, by default on
    port 8787 (dask/distributed#7207): here on a free port of 127.0.0.1 instead."""
    import dask
    from distributed import Client, LocalCluster

    scheduler = check_scheduler(scheduler)
    if scheduler is None:
        raise ValueError("dask_client: scheduler is null (the local process pool needs no client)")
    if scheduler == LOCAL:
        n = max(1, int(workers))
        # our own cluster's start-up and shutdown chatter (connections, nannies, retiring workers) is
        # INFO of this process's distributed loggers; keep their warnings only while it runs
        quiet = logging.getLogger("distributed")
        level = quiet.level
        quiet.setLevel(max(logging.WARNING, level))
        try:
            with dask.config.set(LOCAL_CONFIG), \
                    LocalCluster(n_workers=n, threads_per_worker=1, processes=True, host="127.0.0.1",
                                 dashboard_address=None, scheduler_kwargs=LOCAL_SCHEDULER,
                                 silence_logs=logging.WARNING) as cluster, \
                    Client(cluster) as client:
                log.info("Dask LocalCluster: %d worker process(es) at %s", n, cluster.scheduler_address)
                yield client
        finally:
            quiet.setLevel(level)
        return
    probe_scheduler(scheduler)   # seconds, not Dask's unbounded wait on a port that is not a scheduler
    try:
        client = Client(scheduler, timeout=CONNECT_TIMEOUT)
    except OSError as e:
        raise ValueError(f"scheduler {scheduler}: no Dask scheduler answered within {CONNECT_TIMEOUT} "
                         f"({e}); start one with `dask scheduler` or set scheduler=local") from None
    with client:
        n = len(client.scheduler_info().get("workers", {}))
        log.info("Dask cluster %s: %d worker(s)", scheduler, n)
        if n == 0:
            log.warning("Dask cluster %s has no worker yet: tasks wait until one joins", scheduler)
        yield client


def n_threads(client) -> int:
    """Total worker threads of the cluster (at least 1)."""
    try:
        return max(1, sum(client.nthreads().values()))
    except Exception:  # noqa: BLE001 - a sizing hint only
        return 1


def batch_size(n_items: int, threads: int, most: int = 4) -> int:
    """Items per task for ``n_items`` short tasks on ``threads`` worker threads: up to ``most``
    (fewer tasks: less of the scheduler's and the network's cost per task), but at least ~16
    tasks per thread, so that the progress bar advances and no thread waits long at the end."""
    return max(1, min(most, n_items // (max(1, threads) * 16)))


def batches(items: list, size: int) -> list[list]:
    """``items`` cut into consecutive lists of ``size`` (the last one shorter)."""
    size = max(1, int(size))
    return [items[i:i + size] for i in range(0, len(items), size)]


def run_unordered(client, fn: Callable, items: Iterable, in_flight: int | None = None) -> Iterator:
    """``fn(item)`` for every item on the cluster; yields the results as their futures complete.

    At most ``in_flight`` tasks (default: 4 per worker thread) are submitted at once, so a large
    batch neither floods the scheduler nor loses much work to a kill. A task that raises re-raises
    here (stage functions catch per-item errors themselves and return them)."""
    from distributed import as_completed

    if in_flight is None:
        in_flight = 4 * n_threads(client)
    it = iter(items)
    first = [client.submit(fn, x, pure=False) for x in islice(it, max(1, in_flight))]
    if not first:
        return
    done = as_completed(first)
    for fut in done:
        result = fut.result()
        fut.release()
        nxt = next(it, _END)
        if nxt is not _END:
            done.add(client.submit(fn, nxt, pure=False))
        yield result


_END = object()


# ----------------------------------------------------------------------------- long tasks (cv's trainings)
GPU = "GPU"   # the resource name a GPU worker declares: dask worker ... --resources GPU=1


def task_resources(client) -> dict | None:
    """``{"GPU": 1}`` when some worker of the cluster declares a ``GPU`` resource (``dask worker
    --resources GPU=N``): each task then holds one GPU, so a worker runs at most N at a time and
    workers without one take none; else None (each worker thread takes a task)."""
    try:
        workers = client.scheduler_info().get("workers", {}).values()
    except Exception:  # noqa: BLE001 - no information: plain tasks
        return None
    return {GPU: 1} if any(float((w.get("resources") or {}).get(GPU, 0)) > 0 for w in workers) else None


def run_each(client, fn: Callable, jobs: list[tuple], resources: dict | None = None) -> Iterator[tuple[int, Any]]:
    """``fn(*args)`` for every ``args`` of ``jobs``, all submitted at once (long tasks: trainings),
    each holding ``resources``; yields ``(index in jobs, result)`` as they complete. A task that
    raises re-raises here, after the others are cancelled."""
    from distributed import as_completed

    futures = [client.submit(fn, *args, pure=False, resources=resources) for args in jobs]
    index = {f.key: i for i, f in enumerate(futures)}
    try:
        for fut in as_completed(futures):
            yield index[fut.key], fut.result()
    except BaseException:
        client.cancel(futures)
        raise
