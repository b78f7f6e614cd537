"""Execution: who computes where, and with how many threads.

One place decides the threads of torch, OpenMP (tblite, PySCF), and BLAS for the main process and for
every worker, and builds the executors that reference calls and independent jobs run on:

======================= ========================================
``ThreadLayout``        usable cores, worker count, threads per worker and in the main process;
                        :func:`decide_threads` makes one that never oversubscribes the machine.
``make_executor``       ``"serial"`` (in this process), ``"processes"`` (a local spawn pool of
                        persistent workers), a Dask scheduler address (``"tcp://host:8786"``), or
                        any ``concurrent.futures.Executor`` / ``dask.distributed.Client`` passed in.
``run_chunks``          run ``fn(chunk)`` over chunks of items on any of those, yielding each
                        chunk's results as it completes (so callers store them at once).
``worker_oracle``       inside a worker: one long-lived oracle (and calculator) per worker thread,
                        built on first use and kept for every later task.
``chunk_size_for``      how many calls go in one task, from the oracle's call-cost estimate.
======================= ========================================

Why threads matter: tblite and PySCF use OpenMP. Two OpenMP threads per process on a 2-core
machine that is busy with anything else collapse (one GFN2-xTB call on malonaldehyde measured
here: 9.7 ms with one thread, 410 ms with two, under load). ms-scale calls therefore run one
thread per call, and parallelism comes from processes.

Example
-------
>>> layout = decide_threads(workers=2, cores=2)
>>> layout.threads_per_worker, layout.main_threads
(1, 1)
>>> list(run_chunks(sum, [[1, 2], [3]], executor=None))
[(0, 3), (1, 3)]
"""
from __future__ import annotations

import logging
import math
import multiprocessing
import os
import threading
from concurrent.futures import Executor, ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass
from typing import Callable, Iterable, Optional, Sequence

from .errors import InputError

log = logging.getLogger(__name__)

__all__ = ["ThreadLayout", "decide_threads", "usable_cores", "apply_threads", "limit_threads", "make_executor",
           "run_chunks", "worker_oracle", "chunk_size_for", "EXECUTOR_CHOICES", "is_dask_client"]

#: the string forms of ``run.executor``; a Dask scheduler address (``tcp://...``, ``dask://...``) also works
EXECUTOR_CHOICES = ("auto", "serial", "processes")

#: a task should take about this long, so per-task overheads (Dask ~1.7 ms) stay below ~1 %
TARGET_TASK_SECONDS = 0.25

#: calls estimated shorter than this are "ms-scale": one thread per call, in-process by default
MS_SCALE_SECONDS = 0.05

_THREAD_ENV = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "BLIS_NUM_THREADS",
               "NUMEXPR_NUM_THREADS", "VECLIB_MAXIMUM_THREADS")


def usable_cores() -> int:
    """Cores this process may use: the CPU affinity mask, capped by a cgroup CPU quota when one is set."""
    try:
        n = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        n = os.cpu_count() or 1
    try:  # cgroup v2: "quota period" or "max period"
        with open("/sys/fs/cgroup/cpu.max") as fh:
            quota, period = fh.read().split()[:2]
        if quota != "max":
            n = min(n, max(1, int(math.floor(int(quota) / int(period)))))
    except (OSError, ValueError):
        pass
    return max(1, n)


@dataclass(frozen=True)
class ThreadLayout:
    """Threads per process.

    Attributes
    ----------
    cores : usable cores on this machine
    workers : worker processes for reference calls (0: they run in this process)
    threads_per_worker : OpenMP/BLAS/torch threads in each worker
    main_threads : torch threads of the main process (sampling, training)
    call_threads : OpenMP/BLAS threads of in-process reference calls
    """

    cores: int
    workers: int
    threads_per_worker: int
    main_threads: int
    call_threads: int

    def describe(self) -> str:
        """One line for the run log."""
        pool = (f"{self.workers} worker process(es) x {self.threads_per_worker} thread(s)" if self.workers
                else "reference calls in this process")
        return (f"threads: {self.cores} usable core(s); main process {self.main_threads} torch thread(s); "
                f"{pool}; {self.call_threads} OpenMP/BLAS thread(s) per in-process reference call")

    def worker_env(self) -> dict:
        """Environment variables that fix a worker's thread counts before its libraries start."""
        n = str(self.threads_per_worker)
        return {**{k: n for k in _THREAD_ENV}, "OMP_WAIT_POLICY": "PASSIVE"}

    def to_dict(self) -> dict:
        return asdict(self)


def decide_threads(workers: int = 0, *, threads: Optional[int] = None, cores: Optional[int] = None,
                   call_seconds: float = 0.0) -> ThreadLayout:
    """A thread layout that never oversubscribes ``cores``.

    Parameters
    ----------
    workers : worker processes that will run reference calls (0: in-process)
    threads : torch threads for the main process (default 1: fesurf's batched small-system sampling is
        fastest on one thread, and one thread cannot collapse under a competing load)
    cores : usable cores (default :func:`usable_cores`)
    call_seconds : estimated seconds per reference call; ms-scale calls (< 50 ms) get one thread each,
        longer ones (DFT) share the cores among the processes that compute them

    >>> decide_threads(0, cores=8, call_seconds=5.0).call_threads
    8
    >>> decide_threads(4, cores=8, call_seconds=5.0).threads_per_worker
    2
    """
    cores = usable_cores() if cores is None else int(cores)
    if cores < 1:
        raise InputError(f"cores must be >= 1, got {cores}")
    workers = int(workers)
    if workers < 0:
        raise InputError(f"workers must be >= 0, got {workers}")
    if threads is not None and (isinstance(threads, bool) or int(threads) < 1):
        raise InputError(f"threads must be >= 1, got {threads!r}")
    main = min(cores, int(threads)) if threads is not None else 1
    ms_scale = call_seconds < MS_SCALE_SECONDS
    per_worker = 1 if (ms_scale or workers == 0) else max(1, cores // workers)
    if workers > cores:
        log.warning("%d workers on %d cores: they will time-share the cores", workers, cores)
    call = 1 if ms_scale else cores
    return ThreadLayout(cores=cores, workers=workers, threads_per_worker=per_worker, main_threads=main,
                        call_threads=call)


def apply_threads(n: int) -> None:
    """Set torch's intra-op threads and every loaded OpenMP/BLAS pool of this process to ``n``."""
    import torch

    n = max(1, int(n))
    if torch.get_num_threads() != n:
        torch.set_num_threads(n)
    try:
        from threadpoolctl import threadpool_limits

        threadpool_limits(limits=n)
    except ImportError:  # pragma: no cover - threadpoolctl is a dependency
        pass


class limit_threads:
    """Context manager: OpenMP/BLAS pools (and torch) at ``n`` threads inside the block, restored after.

    >>> with limit_threads(1):
    ...     pass
    """

    def __init__(self, n: int):
        self.n = max(1, int(n))

    def __enter__(self):
        import torch

        from threadpoolctl import threadpool_limits

        self._torch = torch.get_num_threads()
        self._ctl = threadpool_limits(limits=self.n)
        if self._torch != self.n:
            torch.set_num_threads(self.n)
        return self

    def __exit__(self, *exc):
        import torch

        self._ctl.restore_original_limits()
        if torch.get_num_threads() != self._torch:
            torch.set_num_threads(self._torch)
        return False


# ------------------------------------------------------------------ workers
_WORKER_OBJECTS: dict = {}
_WORKER_LOCK = threading.Lock()


def _worker_init(threads: int) -> None:
    """Process-pool initializer: fix this worker's threads before any call."""
    for k in _THREAD_ENV:
        os.environ[k] = str(threads)
    apply_threads(threads)


def worker_oracle(oracle):
    """The long-lived copy of ``oracle`` kept in this process for this thread (built on first use).

    Tasks receive the oracle's settings (it pickles without its calculator); the first task in a worker
    keeps that copy, whose calculator is then built once and reused by every later task of the same
    oracle settings. Keyed by thread as well, because a calculator must not be shared between threads
    (a Dask worker may run several).
    """
    key = (getattr(oracle, "cache_identity", lambda: oracle.method)(), type(oracle).__qualname__,
           threading.get_ident())
    with _WORKER_LOCK:
        kept = _WORKER_OBJECTS.get(key)
        if kept is None:
            kept = oracle._task_copy()
            _WORKER_OBJECTS[key] = kept
    return kept


def chunk_size_for(call_seconds: float, n_items: int, n_workers: int) -> int:
    """Calls per task: about :data:`TARGET_TASK_SECONDS` of work, at least one, and small enough that every
    worker gets work.

    >>> chunk_size_for(0.002, 240, 2)   # ms-scale xTB calls: many per task
    120
    >>> chunk_size_for(5.0, 4, 2)       # DFT: one per task
    1
    """
    if n_items <= 0:
        return 1
    per_task = max(1, int(TARGET_TASK_SECONDS / max(call_seconds, 1e-6)))
    fair = max(1, math.ceil(n_items / max(1, n_workers)))
    return max(1, min(per_task, fair))


def is_dask_client(obj) -> bool:
    return type(obj).__name__ == "Client" and type(obj).__module__.startswith("distributed")


class _ThreadsPlugin:
    """A Dask worker plugin that fixes each worker's threads when it starts (and after a restart)."""

    name = "fesurf-threads"

    def __init__(self, threads: int):
        self.threads = int(threads)

    def setup(self, worker):  # noqa: D401 - Dask's plugin hook
        _worker_init(self.threads)

    def teardown(self, worker):
        pass


def make_executor(spec, layout: Optional[ThreadLayout] = None):
    """An executor for ``spec``; returns ``(executor_or_None, owned)``.

    ``spec``: ``"serial"`` or None (in this process: returns None), ``"processes"`` (a spawn pool of
    ``layout.workers`` persistent workers, each with ``layout.threads_per_worker`` threads), a Dask
    scheduler address (``"tcp://..."`` or ``"dask://host:port"``), or an Executor / Dask Client, used as
    given. ``owned`` is True when the caller created it here and must shut it down.
    """
    layout = layout or decide_threads()
    if spec is None or spec == "serial":
        return None, False
    if isinstance(spec, Executor) or is_dask_client(spec):
        return spec, False
    if not isinstance(spec, str):
        raise InputError(f"executor must be 'serial', 'processes', a Dask scheduler address, a "
                         f"concurrent.futures.Executor or a dask.distributed.Client; got {type(spec).__name__}")
    if spec == "processes":
        n = max(1, layout.workers)
        env_threads = layout.threads_per_worker
        # spawn, not fork: forking a process that holds torch or OpenMP threads can deadlock the workers
        pool = ProcessPoolExecutor(max_workers=n, mp_context=multiprocessing.get_context("spawn"),
                                   initializer=_worker_init, initargs=(env_threads,))
        return pool, True
    if spec.startswith(("tcp://", "tls://", "dask://", "ucx://")):
        try:
            from distributed import Client
        except ImportError:
            raise InputError("a Dask scheduler address needs dask.distributed: pip install 'dask[distributed]'") \
                from None
        address = spec.replace("dask://", "tcp://", 1)
        try:
            client = Client(address, timeout="20s")
        except (OSError, TimeoutError) as exc:
            raise InputError(f"cannot reach the Dask scheduler at {address} ({exc}); start it, or check the "
                             "address in run.executor") from None
        register_thread_plugin(client, layout.threads_per_worker)
        return client, True
    raise InputError(f"unknown executor {spec!r}; use one of {', '.join(EXECUTOR_CHOICES)} or a Dask scheduler "
                     "address such as 'tcp://scheduler:8786'")


def register_thread_plugin(client, threads: int) -> None:
    """Make every worker of a Dask ``client`` run with ``threads`` OpenMP/BLAS/torch threads."""
    try:
        from distributed.diagnostics.plugin import WorkerPlugin
    except ImportError:  # pragma: no cover
        return

    class ThreadsPlugin(_ThreadsPlugin, WorkerPlugin):
        pass

    client.register_plugin(ThreadsPlugin(threads), name=_ThreadsPlugin.name)


def shutdown(executor, owned: bool) -> None:
    """Close an executor made by :func:`make_executor` when this code owns it."""
    if not owned or executor is None:
        return
    if is_dask_client(executor):
        executor.close()
    else:
        executor.shutdown(wait=True, cancel_futures=True)


def run_chunks(fn: Callable, chunks: Sequence, *, executor=None) -> Iterable:
    """Yield ``(chunk_index, fn(chunk))`` for every chunk, in completion order.

    ``executor``: None (in this process, in order), a ``concurrent.futures.Executor``, or a Dask
    ``Client`` (tasks submitted with ``pure=False``; a worker that dies has its tasks rerun by Dask).
    Results are yielded as soon as each task finishes, so the caller can store them before the next.
    """
    if executor is None:
        for k, chunk in enumerate(chunks):
            yield k, fn(chunk)
        return
    if is_dask_client(executor):
        from distributed import as_completed as dask_completed

        futures = {executor.submit(fn, chunk, pure=False, key=f"fesurf-chunk-{os.getpid()}-{id(chunks)}-{k}"): k
                   for k, chunk in enumerate(chunks)}
        try:
            for fut in dask_completed(list(futures)):
                yield futures[fut], fut.result()
        finally:
            for fut in futures:
                if not fut.done():
                    fut.cancel()
        return
    futures = {executor.submit(fn, chunk): k for k, chunk in enumerate(chunks)}
    try:
        for fut in as_completed(futures):
            yield futures[fut], fut.result()
    finally:
        for fut in futures:
            fut.cancel()
