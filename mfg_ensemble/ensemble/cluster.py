"""Where the members run: a Dask ``Client``, by default on a ``LocalCluster`` of processes.

No oversubscription: each worker process runs ``threads_per_worker`` solves at a time (1 by
default) and sizes Rayon's pool to its share of the cores,
``RAYON_NUM_THREADS = max(1, cores // n_workers)``, passed in the workers' environment
(Rayon reads it once, at the first kernel call). BLAS is kept to one thread per worker.
Workers are spawned processes, never forked (Rayon's pool does not survive ``fork``), and
never see a terminal's Ctrl-C: the client process handles it (see :func:`local_cluster`).

On an HPC cluster set the same variables in the job script, e.g. with dask-jobqueue:
``SLURMCluster(cores=8, processes=2, job_script_prologue=["export RAYON_NUM_THREADS=4"])``.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import threading
import warnings
from collections.abc import Iterator
from multiprocessing import resource_tracker
from typing import Any

from distributed import Client, LocalCluster

from mfg_ensemble import schema


def usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def worker_env(n_workers: int, cores: int | None = None) -> dict[str, str]:
    """Environment of each worker process: Rayon sized to the worker's share of the cores."""
    cores = cores or usable_cores()
    rayon = max(1, cores // max(1, n_workers))
    single = "1"
    return {
        "RAYON_NUM_THREADS": str(rayon),
        "OMP_NUM_THREADS": single,
        "OPENBLAS_NUM_THREADS": single,
        "MKL_NUM_THREADS": single,
    }


def local_cluster(n_workers: int | None = None, threads_per_worker: int = 1, **kwargs: Any) -> LocalCluster:
    """A LocalCluster of ``n_workers`` processes (default: one per core) sized as above."""
    n = n_workers or max(1, usable_cores() // threads_per_worker)
    env = {**worker_env(n), **kwargs.pop("env", {})}
    kwargs.setdefault("dashboard_address", "127.0.0.1:8787")  # this machine only (tunnel it to share)
    # Ctrl-C is for this process: the workers never see SIGINT, so a terminal's Ctrl-C, sent to
    # the whole process group, stops the run here, cleanly, without a KeyboardInterrupt
    # traceback from every worker. SIGINT is blocked while the cluster starts: its threads, and
    # the worker processes they spawn (now or later, on a restart), inherit the blocked mask;
    # the preload also ignores it. A Ctrl-C meanwhile waits and is raised once the cluster is
    # up, which is then closed. (The resource tracker is started first: starting it unblocks
    # SIGINT in the calling thread.)
    kwargs.setdefault("preload", ["mfg_ensemble.ensemble.worker_setup"])
    if threading.current_thread() is not threading.main_thread():
        return LocalCluster(n_workers=n, threads_per_worker=threads_per_worker, processes=True, env=env, **kwargs)
    resource_tracker.ensure_running()
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        cluster = LocalCluster(n_workers=n, threads_per_worker=threads_per_worker, processes=True, env=env, **kwargs)
    except BaseException:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)
        raise
    try:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)  # a Ctrl-C that waited is raised here
    except KeyboardInterrupt:
        cluster.close()
        raise
    return cluster


@contextlib.contextmanager
def connect(
    client: Client | str | None = None,
    *,
    n_workers: int | None = None,
    threads_per_worker: int = 1,
) -> Iterator[Client]:
    """A client to run on: ``client`` itself, a new client of the scheduler at the address
    ``client``, or (``None``) a LocalCluster started here and closed on exit."""
    if isinstance(client, Client):
        yield client
        return
    if isinstance(client, str):
        with Client(client) as c:
            yield c
        return
    with local_cluster(n_workers, threads_per_worker) as cluster, Client(cluster) as c:
        yield c


def _worker_backend() -> str:
    from mfg_ensemble.kernels import backend_info

    return str(backend_info()["backend"])


def _worker_facts() -> dict[str, Any]:
    return {"host": socket.gethostname(), "cores": usable_cores()}


def _size_rayon(threads: int) -> int | None:
    from mfg_ensemble.kernels import backend

    return backend.size_rayon(threads)


def size_rayon(client: Client) -> dict[str, int | None]:
    """Size every worker's Rayon pool to its share of its node's cores, wherever the workers
    were started (a LocalCluster, ``dask worker`` by hand, dask-jobqueue):

        rayon threads = max(1, cores of the node × its Dask threads // all Dask threads there)

    unless ``RAYON_NUM_THREADS`` is set in the worker's environment, or a kernel already built
    its pool (a pool is sized once per process). Returns each worker's pool size in effect, and
    warns when the pools of a node's workers add up to more threads than the node has cores.
    """
    workers = client.scheduler_info(n_workers=-1).get("workers", {})
    facts = client.run(_worker_facts)
    threads_on: dict[str, int] = {}
    cores_on: dict[str, int] = {}
    for address, fact in facts.items():
        threads_on[fact["host"]] = threads_on.get(fact["host"], 0) + workers[address]["nthreads"]
        cores_on[fact["host"]] = max(cores_on.get(fact["host"], 1), fact["cores"])
    wanted: dict[int, list[str]] = {}
    for address, fact in facts.items():
        share = cores_on[fact["host"]] * workers[address]["nthreads"] // threads_on[fact["host"]]
        wanted.setdefault(max(1, share), []).append(address)
    sizes: dict[str, int | None] = {}
    for threads, addresses in wanted.items():
        sizes.update(client.run(_size_rayon, threads, workers=addresses))
    for host, cores in cores_on.items():
        used = sum(sizes[a] or 0 for a, fact in facts.items() if fact["host"] == host)
        if used > cores:
            warnings.warn(
                f"{host}: the workers' Rayon pools add up to {used} threads on {cores} cores "
                "(oversubscribed: RAYON_NUM_THREADS is set, or the pools were built before the run)",
                RuntimeWarning,
                stacklevel=2,
            )
    return sizes


def thread_settings(client: Client, rayon: dict[str, int | None] | None = None) -> dict[str, Any]:
    """Workers, their threads and their Rayon pool sizes (``rayon``: from :func:`size_rayon`),
    for the store's provenance."""
    workers = client.scheduler_info(n_workers=-1).get("workers", {})
    env = client.run(lambda: os.environ.get("RAYON_NUM_THREADS", "unset"))
    backends = client.run(_worker_backend)
    settings = {
        "backend": sorted(set(backends.values())),
        "n_workers": len(workers),
        "threads_per_worker": sorted({w.get("nthreads", 0) for w in workers.values()}),
        "rayon_num_threads": sorted(set(env.values())),
        "rayon_threads": sorted({n for n in (rayon or {}).values() if n is not None}),
    }
    return {schema.RUN + name: value for name, value in settings.items()}
