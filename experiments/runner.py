"""Cells of an experiment: run, persist, resume, on one machine or a Ray cluster.

An experiment is a list of *cells* (one combination of scenario, method, parameters), each producing a
list of per-episode result rows. Each cell's result is written atomically to ``RUN/cells/<key>.json`` as
soon as it finishes, with what determined it: the cell's parameters, the run seed and the experiment's
``context`` (settings that are not cell parameters). A rerun of the same run folder skips finished cells
whose record matches, so an interrupted run resumes and redoes only unfinished cells; a cell computed under
other settings is recomputed (and overwritten), never mixed into the new run's rows. Every cell is seeded
from the run seed and the cell's key (a stable hash), never from the order in which workers pick cells up:
results do not depend on the backend or the number of workers.

Underneath, a *task* is one unit of work: a worker computes ``fn(*args)`` and the driver (this process)
stores what comes back. Workers never write into the run folder, so a cluster needs no shared file
system, and each result is stored exactly once. Backends:

- ``local`` (default): ``workers`` spawned processes on this machine (1 by default). A worker that dies
  mid-task (killed, out of memory, a crash in native code) takes down its pool: the tasks it had in flight
  are retried in a fresh pool, at most ``max_retries`` times each.
- ``ray``: tasks become Ray tasks on a local Ray instance or an existing cluster (``address``); see
  ``drivediff.experiments.ray_backend``.

Every worker runs one thread (Numba, OpenMP/torch, BLAS), whatever the backend: the cell's numbers then
cannot depend on how many threads the machine it landed on had, and N workers use N cores.
"""

from __future__ import annotations

import collections
import contextlib
import hashlib
import json
import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from drivediff.errors import DrivediffError
from drivediff.io import atomic_write

BACKENDS = ("local", "ray")
MAX_RETRIES = 3  # per task, after its worker died (exceptions raised by the task itself are not retried)
# thread counts of every worker process (set before numba / torch are imported there)
WORKER_ENV = {"NUMBA_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}

Progress = Callable[[int, int, str], None]  # (tasks done, total, key of the last one)


@dataclass(frozen=True)
class Cell:
    key: str  # unique, file-name safe
    params: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Task:
    """One unit of work: a worker runs ``fn(*args)``; the driver passes the result to ``store``."""

    key: str
    fn: Callable  # module-level (shipped to workers by reference)
    args: tuple = ()


def load_run_config(run_dir: Path, cls, what: str):
    """The configuration dataclass ``cls`` a run folder was made with (its ``config.json``; lists become
    tuples, keys the dataclass does not have are ignored)."""
    from drivediff.errors import DrivediffError

    path = Path(run_dir) / "config.json"
    try:
        raw = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise DrivediffError(f"{run_dir} is not a {what} run folder (cannot read {path}: {e})") from None
    fields = cls.__dataclass_fields__
    return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in raw.items() if k in fields})


def find_cell(cells, key: str, index: int, count: str) -> Cell:
    """The cell ``key`` of a run and a check that it has world/episode ``index`` (``cell.params[count]`` of
    them): what ``--log-episode KEY:INDEX`` reruns. A clear error otherwise."""
    from drivediff.errors import DrivediffError

    by_key = {c.key: c for c in cells}
    if key not in by_key:
        raise DrivediffError(f"no cell {key!r} in this configuration; cells: {', '.join(by_key)}")
    n = by_key[key].params[count]
    if not 0 <= index < n:
        raise DrivediffError(f"cell {key} has {count} 0..{n - 1}, not {index}")
    return by_key[key]


def cell_seed(run_seed: int, key: str) -> int:
    """A 31-bit seed from the run seed and the cell key (stable across processes and Python versions)."""
    h = hashlib.sha256(f"{run_seed}:{key}".encode()).digest()
    return int.from_bytes(h[:4], "little") & 0x7FFFFFFF


def _cell_file(run_dir: Path, key: str) -> Path:
    if not key or any(c in key for c in "/\\\0") or key.startswith("."):
        raise DrivediffError(f"invalid cell key {key!r}")
    return run_dir / "cells" / f"{key}.json"


def write_json(path: Path, obj) -> None:
    atomic_write(path, lambda fh: json.dump(obj, fh, indent=2, default=_jsonable), binary=False)


def _jsonable(o):
    try:
        import numpy as np

        if isinstance(o, np.generic):
            return o.item()
        if isinstance(o, np.ndarray):
            return o.tolist()
    except ImportError:
        pass
    raise TypeError(f"not JSON-serialisable: {type(o).__name__}")


def cell_identity(cell: Cell, run_seed: int, context: dict | None = None) -> dict:
    """What determines a cell's rows besides the code: its params, the run seed and the experiment's context,
    as stored in its result file."""
    return {"params": cell.params, "run_seed": run_seed, "context": context or {}}


def _canonical(obj) -> str:
    """``obj`` as it compares after a JSON round trip: tuples are lists, numpy scalars numbers, 1.0 is 1, and
    NaN equals NaN (the text is compared, not the values)."""
    def norm(o):
        if isinstance(o, dict):
            return {str(k): norm(v) for k, v in o.items()}
        if isinstance(o, list):
            return [norm(v) for v in o]
        if isinstance(o, float) and o.is_integer():
            return int(o)
        return o

    return json.dumps(norm(json.loads(json.dumps(obj, default=_jsonable))), sort_keys=True)


def _read_cell(run_dir: Path, key: str) -> dict | None:
    path = _cell_file(run_dir, key)
    try:
        with open(path) as fh:
            got = json.load(fh)
        return got if isinstance(got, dict) and isinstance(got.get("rows"), list) else None
    except (ValueError, OSError):
        return None  # missing, or a damaged result: redone


def load_cell(run_dir: Path, key: str, identity: dict | None = None) -> list[dict] | None:
    """A finished cell's rows; None when it is missing or damaged, or (``identity`` given, see
    ``cell_identity``) was computed under other settings."""
    got = _read_cell(Path(run_dir), key)
    if got is None or (identity is not None and not _same_identity(got, identity)):
        return None
    return got["rows"]


def _same_identity(stored: dict, identity: dict) -> bool:
    # a result file without the record (written before it was stored) cannot be vouched for: redone
    if any(k not in stored for k in identity):
        return False
    return _canonical({k: stored[k] for k in identity}) == _canonical(identity)


def checkpoint_digest(path: str | None) -> str | None:
    """SHA-256 of a planner checkpoint file (None: the shipped one): the path alone does not say which weights
    a cell ran with (a checkpoint retrained in place). None when there is no such file (loading it fails
    clearly in the cell)."""
    if path is None:
        from drivediff.planner.checkpoint import default_checkpoint

        path = default_checkpoint()
    h = hashlib.sha256()
    try:
        with open(path, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
    except OSError:
        return None
    return h.hexdigest()


def resume_status(reused: int, stale: int) -> str:
    """The first progress call's key: "starting", "resuming" (every result found was reused) or how many were
    reused and how many are redone because they were made with other settings."""
    if stale:
        return f"{reused} reused, {stale} recomputed: made with other settings"
    return "resuming" if reused else "starting"


def check_backend(backend: str) -> None:
    """Fail early (before any work) on an unknown backend or a missing optional dependency."""
    if backend not in BACKENDS:
        raise DrivediffError(f"unknown backend {backend!r} ({', '.join(BACKENDS)})")
    if backend == "ray":
        from drivediff.experiments.ray_backend import require_ray

        require_ray()


def run_cells(run_dir: Path, cells: Sequence[Cell], fn: Callable[[Cell, int], list[dict]], run_seed: int = 0,
              backend: str = "local", workers: int | None = None, progress: Progress | None = None,
              ray_address: str | None = None, max_retries: int = MAX_RETRIES,
              context: dict | None = None) -> list[dict]:
    """Run every unfinished cell; returns all rows (each tagged with its cell key), in cell order.

    Args:
        fn: ``fn(cell, seed) -> rows``, a module-level function (it is shipped to worker processes).
        workers: cells run at once (local: worker processes, default 1; ray: default all the cluster's CPUs).
        progress: ``progress(done, total, key)`` after each cell, and once before the first with the cells
            reused from the run folder as ``done`` and ``key`` "starting", "resuming" or, when some finished
            cells were made under other settings, "N reused, M recomputed: made with other settings".
        ray_address: an existing Ray cluster (default: ``$RAY_ADDRESS``, else a local Ray instance).
        context: the experiment's settings that determine cells' rows but are not in their params (JSON-able);
            stored with each cell and compared, with the params and the run seed, before a cell is reused.
    """
    run_dir = Path(run_dir)
    check_backend(backend)
    keys = [c.key for c in cells]
    if len(set(keys)) != len(keys):
        raise DrivediffError("cell keys must be unique")
    identity = {c.key: cell_identity(c, run_seed, context) for c in cells}
    todo, stale = [], 0
    for c in cells:
        got = _read_cell(run_dir, c.key)
        if got is None or not _same_identity(got, identity[c.key]):
            todo.append(c)
            stale += got is not None
    done = len(cells) - len(todo)
    if progress is not None:
        progress(done, len(cells), resume_status(done, stale))
    by_key = {c.key: c for c in todo}
    tasks = [Task(c.key, compute_cell, (c, fn, run_seed)) for c in todo]
    run_tasks(tasks, lambda task, rows: store_cell(run_dir, by_key[task.key], rows, run_seed, context),
              backend=backend, workers=workers, progress=progress, done=done, total=len(cells),
              address=ray_address, max_retries=max_retries)
    rows = []
    for c in cells:
        got = load_cell(run_dir, c.key, identity[c.key])
        if got is None:
            raise DrivediffError(f"cell {c.key} produced no result")
        rows.extend(dict(r, cell=c.key) for r in got)
    return rows


def compute_cell(cell: Cell, fn, run_seed: int) -> list[dict]:
    """What a worker does for a cell: its rows, seeded from the run seed and the cell key only."""
    return fn(cell, cell_seed(run_seed, cell.key))


def store_cell(run_dir: Path, cell: Cell, rows: list[dict], run_seed: int = 0, context: dict | None = None) -> None:
    write_json(_cell_file(Path(run_dir), cell.key),
               {"cell": cell.key, **cell_identity(cell, run_seed, context), "rows": rows})


def run_tasks(tasks: Sequence[Task], store: Callable[[Task, object], None], backend: str = "local",
              workers: int | None = None, progress: Progress | None = None, done: int = 0,
              total: int | None = None, address: str | None = None, max_retries: int = MAX_RETRIES) -> None:
    """Run every task on a backend; ``store(task, result)`` runs here, once per task, as each one finishes.

    ``done`` and ``total`` only feed ``progress`` (tasks finished before this call, and the run's size).
    """
    check_backend(backend)
    total = done + len(tasks) if total is None else total
    if not tasks:
        return
    if backend == "ray":
        from drivediff.experiments.ray_backend import run_ray

        run_ray(tasks, store, workers=workers, progress=progress, done=done, total=total, address=address,
                max_retries=max_retries)
    else:
        _run_local(tasks, store, workers or 1, progress, done, total, max_retries)


@contextlib.contextmanager
def _worker_env():
    """Spawned workers inherit this process's environment: one thread each, set before they import numba."""
    saved = {k: os.environ.get(k) for k in WORKER_ENV}
    os.environ.update(WORKER_ENV)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _run_local(tasks, store, workers, progress, done, total, max_retries):
    pending = collections.deque(tasks)
    attempts: dict[str, int] = {}
    count = [done]
    while pending:
        lost = _run_pool(pending, store, min(workers, len(pending)), attempts, count, total, progress)
        for t in lost:
            if attempts[t.key] > max_retries:
                hint = ("; a script that starts a run needs the `if __name__ == '__main__':` guard (workers are "
                        "spawned and import it)") if count[0] == done else ""
                raise DrivediffError(f"{t.key}: its worker process died {attempts[t.key]} times (killed, out of "
                                     f"memory or crashed in native code); finished results are kept, rerun to "
                                     f"resume{hint}")
        pending.extendleft(reversed(lost))  # retried first, in a fresh pool


def _run_pool(pending, store, workers, attempts, count, total, progress) -> list[Task]:
    """Feed tasks from ``pending`` to one pool of spawned workers (at most ``workers`` in flight) until all
    are done or a worker dies; returns the tasks that were in flight when the pool broke."""
    import concurrent.futures as cf
    import multiprocessing as mp
    from concurrent.futures.process import BrokenProcessPool

    running: dict[cf.Future, Task] = {}
    with _worker_env():  # spawn: fresh interpreters, no inherited Numba/torch thread state
        pool = cf.ProcessPoolExecutor(max_workers=workers, mp_context=mp.get_context("spawn"))
    try:
        broken = False
        while (pending or running) and not broken:
            while pending and len(running) < workers:
                t = pending.popleft()
                try:
                    with _worker_env():  # workers start on demand
                        fut = pool.submit(t.fn, *t.args)
                except BrokenProcessPool:
                    pending.appendleft(t)
                    broken = True
                    break
                attempts[t.key] = attempts.get(t.key, 0) + 1
                running[fut] = t
            if not running:
                break
            finished, _ = cf.wait(running, return_when=cf.FIRST_COMPLETED)
            for fut in finished:
                if isinstance(fut.exception(), BrokenProcessPool):
                    broken = True
                else:
                    _finish(running.pop(fut), fut, store, count, total, progress)
        if broken:
            cf.wait(running)  # a broken pool fails every future still pending at once
            for fut in [f for f in running if f.exception() is None]:
                _finish(running.pop(fut), fut, store, count, total, progress)
        pool.shutdown(wait=True)
        return list(running.values())
    except BaseException:  # a task raised, or Ctrl-C: stop the other workers now rather than after their task
        for proc in list((getattr(pool, "_processes", None) or {}).values()):
            proc.terminate()
        pool.shutdown(wait=False, cancel_futures=True)
        raise


def _finish(task, fut, store, count, total, progress):
    store(task, fut.result())  # an exception raised by the task itself is raised here
    count[0] += 1
    if progress is not None:
        progress(count[0], total, task.key)


# ------------------------------------------------------------------- intervals (every experiment's summary)
# two-sided 95% Student t quantiles by degrees of freedom: every df to 30, then 40, 60 and 120 (standard
# tables; tests/experiments/test_safety.py checks them against scipy)
T95 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262, 10: 2.228,
       11: 2.201, 12: 2.179, 13: 2.160, 14: 2.145, 15: 2.131, 16: 2.120, 17: 2.110, 18: 2.101, 19: 2.093,
       20: 2.086, 21: 2.080, 22: 2.074, 23: 2.069, 24: 2.064, 25: 2.060, 26: 2.056, 27: 2.052, 28: 2.048,
       29: 2.045, 30: 2.042, 40: 2.021, 60: 2.000, 120: 1.980}


def t95(df: int) -> float:
    """Two-sided 95% Student t quantile: exact (to the table's 3 decimals) up to 30 degrees of freedom; beyond,
    the quantile of the next tabulated df below, which is larger than the exact one (a slightly wider
    interval, never a narrower one)."""
    if df <= 0:
        return math.nan
    return T95[max(k for k in T95 if k <= df)]


def wilson(k: float, n: int, z: float = 1.96) -> tuple[float, float]:
    """95% Wilson score interval of a proportion k / n: within [0, 1], and of non-zero width when no (or
    every) episode had the event, where the normal interval collapses to a point."""
    if n == 0:
        return (math.nan, math.nan)
    p = k / n
    den = 1 + z * z / n
    c = (p + z * z / (2 * n)) / den
    h = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / den
    # the exact interval always holds p; rounding must not push a bound past it (0 events: lower bound 0)
    return (min(max(0.0, c - h), p), max(min(1.0, c + h), p))


def t_interval(values, lo: float = -math.inf, hi: float = math.inf) -> tuple[float, float, float]:
    """Mean and 95% Student-t interval of the finite values, clipped to the range [lo, hi] the quantity lives
    in (a share: [0, 1]); NaN bounds with fewer than two values."""
    x = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    if not x:
        return (math.nan,) * 3
    m = math.fsum(x) / len(x)
    if len(x) < 2:
        return m, math.nan, math.nan
    sd = math.sqrt(math.fsum((v - m) ** 2 for v in x) / (len(x) - 1))
    h = t95(len(x) - 1) * sd / math.sqrt(len(x))
    return m, min(max(m - h, lo), m), max(min(m + h, hi), m)
