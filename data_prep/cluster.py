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
from contextlib import contextmanager
from itertools import islice
from typing import Any, Callable, Iterable, Iterator

log = logging.getLogger(__name__)

LOCAL = "local"
CONNECT_TIMEOUT = "30s"      # waiting for an existing scheduler to answer
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
