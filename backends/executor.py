"""Solve many problems at once: one after another, in local processes, or as Ray tasks.

    >>> from backends.executor import make_executor
    >>> with make_executor("processes", workers=2) as executor:
    ...     for result in executor.solve_many(problems, "sa", seed=7):
    ...         print(result.energy)

Every task's seed is ``task_seed(seed, index)``: one run seed and the problem's index, so
the answers are the same for every executor and every worker count (a backend run with a
time limit can still stop at a different point when the machine is busy).

An executor is built once and reused for many calls: the process pool (or Ray) stays up
between calls, and each worker imports the backends and solves a 3-variable problem with
each backend once, before its first timed task, so numba compilation is paid once per
worker, not per task.

Shipping: ``processes`` writes each Q of 256 KiB or more (n >= 182) into a recycled
shared-memory segment and the worker unpickles the Problem on top of it, without a copy
and without re-validating it (an n = 1024 block, 8 MiB: about 5 ms per task end to end,
against about 30 ms through the pool's pipe; see benchmarks/scale.py); ``ray`` passes
the Problem through its object store, which workers read without a copy (about 12 ms).

Faults: a worker that dies (``processes``: BrokenProcessPool) has the pool rebuilt and
every unfinished task run again, up to ``max_retries`` times per task; Ray retries tasks
of dead workers itself (``max_retries``). Each task's answer is yielded exactly once.
"""

from __future__ import annotations

import abc
import collections
import contextlib
import importlib.util
import logging
import multiprocessing
import os
import pickle
import re
import socket
import sys
import time
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from multiprocessing import shared_memory
from typing import Any, Callable, ClassVar, Iterable, Iterator, Literal, Mapping, Sequence

import numpy as np

from qcbo.errors import BackendUnavailableError, InputError, QCBOError, SolverError
from qcbo.problem import Problem
from qcbo.result import SolveResult

from .base import checked_time_limit

__all__ = ["Executor", "ExecutorKind", "SerialExecutor", "ProcessExecutor", "RayExecutor",
           "make_executor", "solve_many", "task_seed", "SHARED_MEMORY_MIN_BYTES"]

log = logging.getLogger(__name__)

ExecutorKind = Literal["serial", "processes", "ray"]
Errors = Literal["raise", "return"]
#: (index, result, info); with ``errors="return"`` the result may be the QCBOError raised.
Outcome = tuple[int, Any, dict[str, Any]]

#: Q arrays at least this large travel to process workers through shared memory.
SHARED_MEMORY_MIN_BYTES = 256 * 1024

_RAY_MISSING = "the ray executor needs Ray: pip install 'qcbo[ray]'"


def task_seed(run_seed: int, index: int) -> int:
    """The seed of task ``index`` in a run seeded ``run_seed`` (both integers >= 0).

    Equal to ``backends.base.child_seeds(run_seed, index + 1)[index]`` (the SeedSequence
    child ``index``) but computed without spawning the ``index`` children before it.
    """
    for name, value in (("seed", run_seed), ("index", index)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
            raise InputError(f"{name} must be an integer >= 0, got {value!r}")
    sequence = np.random.SeedSequence(int(run_seed), spawn_key=(int(index),))
    return int(sequence.generate_state(1)[0])


# --------------------------------------------------------------------------- tasks
@dataclass(frozen=True)
class _ProblemData:
    """A Problem on its way to a worker: the object itself (pickled with the task), or
    its protocol-5 pickle whose arrays (Q) lie in a shared-memory segment at ``spans``.

    Unpickling restores the Problem without re-validating it (the sender's Problem was
    valid), and from shared memory without copying Q.
    """

    problem: Problem | None = None
    pickled: bytes | None = None
    segment: str | None = None
    spans: tuple[tuple[int, int], ...] = ()

    @contextlib.contextmanager
    def open(self) -> Iterator[Problem]:
        """The Problem, valid inside the ``with`` block (its Q may be shared memory)."""
        if self.segment is None:
            self.problem.Q.setflags(write=False)  # an unpickled array comes back writable
            yield self.problem
            return
        _close_segments()
        shm = shared_memory.SharedMemory(name=self.segment)
        try:
            problem = pickle.loads(self.pickled,
                                   buffers=[shm.buf[start:stop] for start, stop in self.spans])
            problem.Q.setflags(write=False)
            yield problem
        finally:
            problem = None
            _UNCLOSED.append(shm)
            _close_segments()


#: Segments a worker could not close yet (an exception's traceback still held Q).
_UNCLOSED: list[shared_memory.SharedMemory] = []


def _close_segments() -> None:
    for shm in list(_UNCLOSED):
        try:
            shm.close()
        except BufferError:
            continue
        _UNCLOSED.remove(shm)


@dataclass(frozen=True)
class _Task:
    """One solve: ``position`` in the caller's sequence, ``index`` names it (and its seed)."""

    position: int
    index: int
    backend: str
    options: Mapping[str, Any]
    seed: int
    time_limit: float | None
    problem: _ProblemData
    on_ray: bool = False


#: Per worker process: backend instances already warmed up.
_WARM: dict[str, Any] = {}
_TINY = np.array([[1.0, -0.5, 0.2], [-0.5, -1.0, 0.3], [0.2, 0.3, 0.5]])


def _warm_backend(name: str, options: Mapping[str, Any]) -> Any:
    """This process's instance of ``name``, after one untimed 3-variable solve."""
    backend = _WARM.get(name)
    if backend is None:
        from . import get_backend

        backend = get_backend(name)
        plain = {key: value for key, value in options.items() if key != "initial"}
        try:
            backend.solve(Problem(_TINY, 0.0, 1), seed=0, time_limit=5.0, **plain)
        except QCBOError as exc:  # the real task reports bad options itself
            log.debug("warm-up of %s failed: %s", name, exc)
        _WARM[name] = backend
    return backend


def _where(on_ray: bool) -> dict[str, Any]:
    host, pid = socket.gethostname(), os.getpid()
    node = host
    if on_ray:
        import ray

        node = ray.get_runtime_context().get_node_id()
    return {"worker": f"{host}:{pid}", "host": host, "pid": pid, "node": node}


def _run_task(task: _Task, errors: Errors = "raise") -> tuple[int, Any, dict[str, Any]]:
    """Solve one task (in whichever process runs it): (position, result, info)."""
    start = time.perf_counter()
    backend = _warm_backend(task.backend, task.options)
    result: Any
    with task.problem.open() as problem:
        try:
            result = backend.solve(problem, seed=task.seed, time_limit=task.time_limit,
                                   **task.options)
        except QCBOError as exc:
            # Its traceback would keep the Problem (and the shared memory under Q) alive.
            result = exc.with_traceback(None)
        del problem
    if isinstance(result, QCBOError) and errors == "raise":
        raise result
    info = _where(task.on_ray)
    info["wall_time_s"] = time.perf_counter() - start
    return task.position, result, info


def _run_batch(tasks: Sequence[_Task], errors: Errors = "raise") -> list[tuple[int, Any, dict[str, Any]]]:
    """`_run_task` on each of ``tasks`` in turn (one round trip for several small tasks)."""
    return [_run_task(task, errors) for task in tasks]


#: Small tasks travel to process workers in batches of up to this many ...
BATCH_MAX = 32
#: ... with at most this many Q entries in a batch (n = 32: 32 tasks; n = 128: 4).
BATCH_ENTRIES = 65536


def _batch_size(task: _Task) -> int:
    """How many tasks like ``task`` share one round trip to a process worker: 1 for a
    problem in shared memory; else as many as keep the batch under BATCH_ENTRIES of Q.
    A task of an n = 32 block takes about a millisecond, as long as its round trip."""
    if task.problem.segment is not None or task.problem.problem is None:
        return 1
    n = max(1, task.problem.problem.n)
    return max(1, min(BATCH_MAX, BATCH_ENTRIES // (n * n)))


def _exit_with_parent() -> None:
    """A daemon thread that ends this worker when the process that owns the pool dies
    (killed without closing it): no orphaned workers holding memory."""
    import threading
    from multiprocessing.connection import wait as wait_for

    parent = multiprocessing.parent_process()
    if parent is None:
        return

    def watch() -> None:
        wait_for([parent.sentinel])
        os._exit(1)

    threading.Thread(target=watch, name="qcbo-parent-watch", daemon=True).start()


def _init_worker() -> None:
    """Process-pool initializer: one thread per worker, the backends imported, and an exit
    when the owning process dies."""
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS",
                "NUMBA_NUM_THREADS"):
        os.environ.setdefault(var, "1")
    # The forkserver may have imported torch already (it preloads the main module): its
    # thread pool was sized for the whole machine, and workers x threads > cores makes
    # coarse `Executor.map` tasks several times slower.
    torch = sys.modules.get("torch")
    if torch is not None and os.environ["OMP_NUM_THREADS"] == "1":
        torch.set_num_threads(1)
    _exit_with_parent()
    import backends  # noqa: F401
    import scipy.linalg  # noqa: F401  (loads scipy's BLAS, so the limit below reaches it)

    if os.environ["OPENBLAS_NUM_THREADS"] == "1":
        # Likewise numpy's and scipy's BLAS, loaded before the variables were set: with
        # two threads each, the many small factorisations of a Linear's row blocks (LAPACK
        # through scipy) ran up to 1.4x slower than with one, even in a single process.
        from threadpoolctl import threadpool_limits

        threadpool_limits(limits=1, user_api="blas")


# --------------------------------------------------------------------------- executors
class Executor(abc.ABC):
    """Runs solve tasks; use as a context manager (or call `close`) and reuse it.

    Subclasses implement `_run`, which takes tasks lazily and yields (position, result,
    info) as tasks finish, each position exactly once.
    """

    kind: ClassVar[str]
    #: Tasks run at the same time.
    workers: int

    def solve_iter(
        self,
        problems: Iterable[Problem],
        backend: str,
        options: Mapping[str, Any] | None = None,
        *,
        seed: int = 0,
        time_limit: float | None = None,
        initials: Sequence[np.ndarray | None] | None = None,
        indices: Sequence[int] | None = None,
        seeds: Sequence[int] | None = None,
        errors: Errors = "raise",
    ) -> Iterator[Outcome]:
        """Solve every problem with ``backend``; yield (index, result, info) as each finishes.

        Args:
            problems: read lazily, a few ahead of the workers (a BlockSet or a generator
                never sits in memory whole).
            options: backend options for every task.
            seed: run seed; problem ``i`` is solved with ``task_seed(seed, indices[i])``.
            initials: per problem, an (n,) 0/1 warm start or None; passed as the
                ``initial`` option to backends that take one (`supports_initial`) and
                ignored by the others.
            indices: the index of each problem (default 0, 1, ...), yielded with its
                answer and used for its seed.
            seeds: explicit per-problem seeds, replacing the derived ones.
            errors: "raise" stops at the first QCBOError of a task (it is re-raised here);
                "return" yields it in place of the SolveResult.

        info: ``worker`` ("host:pid"), ``host``, ``pid``, ``node`` (the host, or the Ray
        node id) and ``wall_time_s`` of the whole task in its worker.
        """
        tasks = self._tasks(problems, backend, options, seed=seed, time_limit=time_limit,
                            initials=initials, indices=indices, seeds=seeds)
        index_of: dict[int, int] = {}

        def tracked() -> Iterator[_Task]:
            for task in tasks:
                index_of[task.position] = task.index
                yield task

        for position, result, info in self._run(tracked(), errors):
            yield index_of.pop(position), result, info

    def solve_many(
        self,
        problems: Iterable[Problem],
        backend: str,
        options: Mapping[str, Any] | None = None,
        *,
        seed: int = 0,
        time_limit: float | None = None,
        initials: Sequence[np.ndarray | None] | None = None,
        indices: Sequence[int] | None = None,
    ) -> Iterator[SolveResult]:
        """Like `solve_iter`, but yields the SolveResults in input order."""
        tasks = self._tasks(problems, backend, options, seed=seed, time_limit=time_limit,
                            initials=initials, indices=indices, seeds=None)
        waiting: dict[int, SolveResult] = {}
        following = 0
        for position, result, _ in self._run(tasks, "raise"):
            waiting[position] = result
            while following in waiting:
                yield waiting.pop(following)
                following += 1

    def _tasks(self, problems: Iterable[Problem], backend: str,
               options: Mapping[str, Any] | None, *, seed: int, time_limit: float | None,
               initials: Sequence[np.ndarray | None] | None, indices: Sequence[int] | None,
               seeds: Sequence[int] | None) -> Iterator[_Task]:
        from . import backend_class

        warm_start = backend_class(backend).supports_initial()  # unknown names raise here
        task_seed(seed, 0)
        time_limit = checked_time_limit(time_limit)
        options = dict(options or {})
        on_ray = self.kind == "ray"

        def generate() -> Iterator[_Task]:
            for position, problem in enumerate(problems):
                if not isinstance(problem, Problem):
                    raise InputError(f"problem {position} is a {type(problem).__name__}, "
                                     "not a qcbo.Problem")
                try:
                    index = position if indices is None else int(indices[position])
                    initial = None if initials is None else initials[position]
                    chosen = task_seed(seed, index) if seeds is None else int(seeds[position])
                except IndexError:
                    raise InputError(f"fewer indices, initials or seeds than problems (problem "
                                     f"{position} has none); give one per problem") from None
                task_options = options
                if initial is not None and warm_start:
                    task_options = {**options, "initial": np.asarray(initial)}
                yield _Task(position, index, backend, task_options, chosen, time_limit,
                            self._pack(problem), on_ray)

        return generate()

    def map(self, fn: Callable[[Any], Any], items: Iterable[Any]) -> Iterator[Any]:
        """``fn(item)`` for every item, in the workers; yields the results in input order.

        For coarse tasks that are not QCBO solves (e.g. pruning a whole Linear). ``fn``
        must be a module-level function (so a worker can import it) and ``items`` and the
        results picklable. Items are submitted in the order given: put the longest first.
        An exception raised by ``fn`` is re-raised here; a task whose worker died runs
        again (up to ``max_retries`` times).
        """
        return (fn(item) for item in items)

    def _pack(self, problem: Problem) -> _ProblemData:
        return _ProblemData(problem)

    def _release(self, task: _Task, *, reuse: bool = True) -> None:
        """Free what `_pack` set aside for ``task`` (it will not run again)."""

    @abc.abstractmethod
    def _run(self, tasks: Iterator[_Task], errors: Errors) -> Iterator[tuple[int, Any, dict]]:
        """Run ``tasks``; yield (position, result, info) as they finish, each once."""

    def close(self) -> None:
        """Stop the workers (the executor cannot be used afterwards)."""

    def __enter__(self) -> "Executor":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


class SerialExecutor(Executor):
    """Every task in this process, one after another."""

    kind = "serial"
    workers = 1

    def _run(self, tasks: Iterator[_Task], errors: Errors) -> Iterator[tuple[int, Any, dict]]:
        for task in tasks:
            yield _run_task(task, errors)


class ProcessExecutor(Executor):
    """A local pool of ``workers`` processes (forkserver where the OS has it, else spawn).

    ``max_retries``: how often a task whose worker died is run again before the run
    fails with SolverError. ``restarts`` counts the pools rebuilt after a worker died.
    """

    kind = "processes"

    def __init__(self, workers: int | None = None, *, start_method: str | None = None,
                 max_retries: int = 3) -> None:
        self.workers = _worker_count(workers)
        if start_method is None:
            methods = multiprocessing.get_all_start_methods()
            start_method = "forkserver" if "forkserver" in methods else "spawn"
        self._context = multiprocessing.get_context(start_method)
        self.max_retries = max_retries
        self.restarts = 0
        self._pool: ProcessPoolExecutor | None = None
        self._segments: dict[str, shared_memory.SharedMemory] = {}
        self._free: list[shared_memory.SharedMemory] = []

    def _get_pool(self) -> ProcessPoolExecutor:
        if self._pool is None:
            self._pool = ProcessPoolExecutor(self.workers, mp_context=self._context,
                                             initializer=_init_worker)
        return self._pool

    def _pack(self, problem: Problem) -> _ProblemData:
        if problem.Q.nbytes < SHARED_MEMORY_MIN_BYTES:
            return _ProblemData(problem)
        buffers: list[pickle.PickleBuffer] = []
        pickled = pickle.dumps(problem, protocol=5, buffer_callback=buffers.append)
        views = [buffer.raw() for buffer in buffers]
        shm = self._segment(max(1, sum(v.nbytes for v in views)))
        spans, start = [], 0
        for view in views:
            shm.buf[start:start + view.nbytes] = view
            spans.append((start, start + view.nbytes))
            start += view.nbytes
        self._segments[shm.name] = shm
        return _ProblemData(pickled=pickled, segment=shm.name, spans=tuple(spans))

    def _segment(self, size: int) -> shared_memory.SharedMemory:
        """A shared-memory segment of at least ``size`` bytes, recycled when one is free.

        A fresh segment costs a page fault per 4 KiB on its first write (about 6 ms of
        the 9 ms that an n = 1024 block takes); a recycled one only the copy.
        """
        for i, shm in enumerate(self._free):
            if size <= shm.size <= 2 * size:
                return self._free.pop(i)
        return shared_memory.SharedMemory(create=True, size=size)

    def _release(self, task: _Task, *, reuse: bool = True) -> None:
        """``reuse`` only when no worker can still be reading the task's segment."""
        shm = self._segments.pop(task.problem.segment, None) if task.problem.segment else None
        if shm is None:
            return
        if reuse and len(self._free) < 2 * self.workers + 2:
            self._free.append(shm)
        else:
            shm.close()
            shm.unlink()

    def _run(self, tasks: Iterator[_Task], errors: Errors) -> Iterator[tuple[int, Any, dict]]:
        # Up to 2 batches per worker in flight; small tasks go in batches (`_batch_size`),
        # which changes no answer (every task keeps its own seed).
        window = 2 * self.workers
        pending: dict[Future, list[_Task]] = {}
        again: collections.deque[_Task] = collections.deque()
        tries: dict[int, int] = {}
        exhausted = False
        lookahead: _Task | None = None
        growth = 1  # batch sizes 1, 2, 4, ... up to `_batch_size`: every worker starts soon

        def next_task() -> _Task | None:
            nonlocal lookahead, exhausted
            if again:
                return again.popleft()
            if lookahead is not None:
                task, lookahead = lookahead, None
                return task
            task = None if exhausted else next(tasks, None)
            exhausted = task is None
            return task

        def next_batch() -> list[_Task]:
            nonlocal lookahead, growth
            first = next_task()
            if first is None:
                return []
            kind = _batch_size(first)
            batch, size = [first], min(kind, growth)
            growth *= 2
            while len(batch) < size:
                task = next_task()
                if task is None:
                    break
                if _batch_size(task) != kind:  # another kind of problem: its own batch
                    lookahead = task
                    break
                batch.append(task)
            return batch

        try:
            while True:
                while len(pending) < window:
                    batch = next_batch()
                    if not batch:
                        break
                    try:
                        pending[self._get_pool().submit(_run_batch, batch, errors)] = batch
                    except BrokenProcessPool:
                        again.extendleft(reversed(batch))
                        self._rebuild(pending, again, tries)
                if not pending:
                    return
                done, _ = wait(list(pending), return_when=FIRST_COMPLETED)
                broken = False
                for future in done:
                    if isinstance(future.exception(), BrokenProcessPool):
                        broken = True
                        continue
                    batch = pending.pop(future)
                    for task in batch:
                        self._release(task)
                    yield from future.result()
                if broken:
                    finished = [f for f in pending if f.done() and f.exception() is None]
                    for future in finished:
                        batch = pending.pop(future)
                        for task in batch:
                            self._release(task)
                        yield from future.result()
                    self._rebuild(pending, again, tries)
        finally:
            for future in pending:
                future.cancel()
            for task in [t for batch in pending.values() for t in batch] + list(again):
                self._release(task, reuse=False)  # a worker may still be reading it
            if lookahead is not None:
                self._release(lookahead, reuse=False)

    def map(self, fn: Callable[[Any], Any], items: Iterable[Any]) -> Iterator[Any]:
        items = list(items)
        tries = [0] * len(items)
        futures: dict[int, Future] = {}
        try:
            for i in range(len(items)):
                while True:
                    future = futures.get(i)
                    if future is None:
                        for j in range(i, len(items)):  # (re)submit everything not done
                            if j not in futures:
                                futures[j] = self._get_pool().submit(fn, items[j])
                        future = futures[i]
                    try:
                        result = future.result()
                        break
                    except BrokenProcessPool:
                        for j in [j for j, f in futures.items() if j >= i and (
                                not f.done() or isinstance(f.exception(), BrokenProcessPool))]:
                            tries[j] += 1
                            if tries[j] > self.max_retries:
                                raise SolverError(f"map task {j} lost its worker {tries[j]} "
                                                  "times; giving up") from None
                            del futures[j]
                        log.warning("a worker process died; restarting the pool")
                        if self._pool is not None:
                            self._pool.shutdown(wait=False, cancel_futures=True)
                        self._pool = None
                        self.restarts += 1
                del futures[i]
                yield result
        finally:
            for future in futures.values():
                future.cancel()

    def _rebuild(self, pending: dict[Future, list[_Task]], again: collections.deque[_Task],
                 tries: dict[int, int]) -> None:
        """A worker died: a fresh pool, and every unfinished task queued again."""
        lost = sorted((t for batch in pending.values() for t in batch),
                      key=lambda t: t.position)
        pending.clear()
        for task in lost:
            tries[task.position] = tries.get(task.position, 0) + 1
            if tries[task.position] > self.max_retries:
                raise SolverError(f"task {task.index} lost its worker {tries[task.position]} "
                                  "times; giving up")
        again.extendleft(reversed(lost))
        log.warning("a worker process died; restarting the pool and re-running %d task(s)",
                    len(lost))
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
        self._pool = None
        self.restarts += 1

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None
        for shm in list(self._segments.values()) + self._free:
            shm.close()
            shm.unlink()
        self._segments.clear()
        self._free.clear()


#: Seconds to wait for a TCP connection to a Ray cluster's address before giving up.
RAY_CONNECT_TIMEOUT_S = 5.0


def _probe_ray_address(address: str) -> None:
    """One-line errors for a malformed or unreachable cluster address, before `ray.init`
    (which raises a traceback on the first and retries for minutes on the second).
    "auto" is left to Ray."""
    if address == "auto":
        return
    match = re.fullmatch(r"(?:ray://)?\[?([^\s\[\]]+?)\]?:(\d{1,5})", address)
    if match is None:
        raise InputError(f"--ray-address {address!r}: expected HOST:PORT, ray://HOST:PORT or "
                         "auto (e.g. 10.0.0.5:6379 for a `ray start --head` node)")
    host, port = match.group(1), int(match.group(2))
    try:
        socket.create_connection((host, port), timeout=RAY_CONNECT_TIMEOUT_S).close()
    except OSError as exc:
        raise BackendUnavailableError(
            f"cannot reach the Ray cluster at {address} ({exc.strerror or exc}); check the "
            "address and that `ray start --head` runs there") from None


class RayExecutor(Executor):
    """Ray tasks: a local Ray instance, or the cluster at ``address`` (or $RAY_ADDRESS).

    A Ray that is already initialised in this process is used as it is and left running
    on `close`; one started here is shut down. ``workers``: CPUs of a local instance
    (default: all). ``max_retries``: Ray's retries of a task whose worker died.
    """

    kind = "ray"

    def __init__(self, workers: int | None = None, *, address: str | None = None,
                 max_retries: int = 3) -> None:
        ray = _import_ray()
        address = address or os.environ.get("RAY_ADDRESS") or None
        if address is not None and workers is not None:
            raise InputError("--workers sets the CPUs of a local Ray; a cluster at "
                             f"{address} has its own")
        self._owner = not ray.is_initialized()
        if self._owner:
            # "local": a new instance, never one that `ray start` left running here.
            kwargs: dict[str, Any] = {"address": address} if address else {
                "address": "local", "num_cpus": _worker_count(workers)}
            if address is not None:
                _probe_ray_address(address)
            try:
                ray.init(include_dashboard=False, log_to_driver=False, **kwargs)
            except (ConnectionError, ValueError) as exc:
                first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
                raise BackendUnavailableError(f"cannot reach the Ray cluster at {address}: "
                                              f"{first}") from None
        self.workers = max(1, int(ray.cluster_resources().get("CPU", 1)))
        self._ray = ray
        self._max_retries = max_retries
        self._remote = ray.remote(num_cpus=1, max_retries=max_retries)(_run_task)

    def _run(self, tasks: Iterator[_Task], errors: Errors) -> Iterator[tuple[int, Any, dict]]:
        ray = self._ray
        window = 2 * self.workers
        pending: dict[Any, _Task] = {}
        exhausted = False
        try:
            while True:
                while len(pending) < window and not exhausted:
                    task = next(tasks, None)
                    if task is None:
                        exhausted = True
                    else:
                        pending[self._remote.remote(task, errors)] = task
                if not pending:
                    return
                ready, _ = ray.wait(list(pending), num_returns=1)
                task = pending.pop(ready[0])
                yield self._get(ready[0], f"task {task.index}")
        finally:
            for ref in pending:
                ray.cancel(ref)

    def _get(self, ref: Any, what: str) -> Any:
        """``ray.get(ref)``; a task's own exception is re-raised as it was, other Ray
        failures become one-line SolverErrors naming ``what``."""
        ray = self._ray
        try:
            return ray.get(ref)
        except ray.exceptions.RayTaskError as exc:
            cause = getattr(exc, "cause", None)
            raise (cause if isinstance(cause, Exception) else SolverError(
                f"{what} failed on Ray: {str(exc).splitlines()[0]}")) from None
        except ray.exceptions.RayError as exc:
            raise SolverError(f"{what} failed on Ray: {type(exc).__name__}") from None

    def map(self, fn: Callable[[Any], Any], items: Iterable[Any]) -> Iterator[Any]:
        ray = self._ray
        remote = ray.remote(num_cpus=1, max_retries=self._max_retries)(fn)
        refs = [remote.remote(item) for item in items]
        try:
            while refs:
                result = self._get(refs[0], "map task")
                refs.pop(0)
                yield result
        finally:
            for ref in refs:
                ray.cancel(ref)

    def close(self) -> None:
        if self._owner and self._ray.is_initialized():
            self._ray.shutdown()
            self._owner = False


# --------------------------------------------------------------------------- helpers
def _import_ray() -> Any:
    if importlib.util.find_spec("ray") is None:
        raise BackendUnavailableError(_RAY_MISSING)
    try:
        import ray
    except ImportError:
        raise BackendUnavailableError(_RAY_MISSING) from None
    return ray


def _worker_count(workers: int | None) -> int:
    if workers is None:
        return os.cpu_count() or 1
    if isinstance(workers, bool) or not isinstance(workers, (int, np.integer)) or workers < 1:
        raise InputError(f"workers must be an integer >= 1, got {workers!r}")
    return int(workers)


def make_executor(
    kind: ExecutorKind = "serial",
    *,
    workers: int | None = None,
    ray_address: str | None = None,
) -> Executor:
    """An executor by name: "serial", "processes" (``workers`` local processes, default
    one per CPU) or "ray" (a local Ray, or the cluster at ``ray_address``/$RAY_ADDRESS)."""
    if kind not in ("serial", "processes", "ray"):
        raise InputError(f"unknown executor {kind!r}; choose serial, processes or ray")
    if ray_address is not None and kind != "ray":
        raise InputError(f"a Ray address needs the ray executor, not {kind}")
    if kind == "serial":
        if workers not in (None, 1):
            _worker_count(workers)
            raise InputError("the serial executor runs one task at a time; workers applies "
                             "to the processes and ray executors")
        return SerialExecutor()
    if kind == "processes":
        return ProcessExecutor(workers)
    return RayExecutor(workers, address=ray_address)


def solve_many(
    problems: Iterable[Problem],
    backend: str,
    options: Mapping[str, Any] | None = None,
    *,
    executor: ExecutorKind | Executor = "serial",
    workers: int | None = None,
    seed: int = 0,
    time_limit: float | None = None,
    initials: Sequence[np.ndarray | None] | None = None,
) -> Iterator[SolveResult]:
    """Solve every problem; yields one SolveResult per problem, in input order.

    ``executor``: an `Executor` (kept open), or a kind for `make_executor` (built here
    and closed when the iteration ends). See `Executor.solve_iter` for the rest.
    """
    if isinstance(executor, Executor):
        if workers is not None:
            raise InputError("workers is set on the executor itself, not on solve_many")
        yield from executor.solve_many(problems, backend, options, seed=seed,
                                       time_limit=time_limit, initials=initials)
        return
    with make_executor(executor, workers=workers) as owned:
        yield from owned.solve_many(problems, backend, options, seed=seed,
                                    time_limit=time_limit, initials=initials)
