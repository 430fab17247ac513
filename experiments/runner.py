"""Cells of an experiment: run, persist, resume.

An experiment is a list of *cells* (one combination of scenario, method, parameters), each producing a
list of per-episode result rows. Each cell's result is written atomically to ``RUN/cells/<key>.json`` as
soon as it finishes; a rerun of the same run folder skips finished cells, so an interrupted run resumes
and redoes only unfinished cells. Every cell is seeded from the run seed and the cell's key (a stable
hash), never from the order in which workers pick cells up: results do not depend on the backend or the
number of workers.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from drivediff.errors import DrivediffError
from drivediff.io import atomic_write


@dataclass(frozen=True)
class Cell:
    key: str  # unique, file-name safe
    params: dict = field(default_factory=dict)


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


def load_cell(run_dir: Path, key: str) -> list[dict] | None:
    path = _cell_file(run_dir, key)
    if not path.exists():
        return None
    try:
        with open(path) as fh:
            return json.load(fh)["rows"]
    except (ValueError, KeyError, OSError):
        return None  # a damaged result is redone


def run_cells(run_dir: Path, cells: Sequence[Cell], fn: Callable[[Cell, int], list[dict]], run_seed: int = 0,
              backend: str = "local", workers: int = 1, progress: Callable[[int, int, str], None] | None = None,
              ray_address: str | None = None) -> list[dict]:
    """Run every unfinished cell; returns all rows (each tagged with its cell key), in cell order.

    ``fn(cell, seed)`` must be a module-level function (it is shipped to worker processes).
    """
    run_dir = Path(run_dir)
    keys = [c.key for c in cells]
    if len(set(keys)) != len(keys):
        raise DrivediffError("cell keys must be unique")
    todo = [c for c in cells if load_cell(run_dir, c.key) is None]
    done = len(cells) - len(todo)
    if progress is not None:
        progress(done, len(cells), "resuming" if done else "starting")
    if backend == "local":
        _run_local(run_dir, todo, fn, run_seed, workers, progress, done, len(cells))
    elif backend == "ray":
        from drivediff.experiments.ray_backend import run_ray  # optional extra

        run_ray(run_dir, todo, fn, run_seed, progress, done, len(cells), ray_address)
    else:
        raise DrivediffError(f"unknown backend {backend!r} (local, ray)")
    rows = []
    for c in cells:
        got = load_cell(run_dir, c.key)
        if got is None:
            raise DrivediffError(f"cell {c.key} produced no result")
        rows.extend(dict(r, cell=c.key) for r in got)
    return rows


def execute_cell(run_dir: Path, cell: Cell, fn, run_seed: int) -> str:
    """Run one cell and persist its rows (what each worker does)."""
    rows = fn(cell, cell_seed(run_seed, cell.key))
    write_json(_cell_file(Path(run_dir), cell.key), {"cell": cell.key, "params": cell.params, "rows": rows})
    return cell.key


def _run_local(run_dir, todo, fn, run_seed, workers, progress, done, total):
    if workers <= 1 or len(todo) <= 1:
        for c in todo:
            execute_cell(run_dir, c, fn, run_seed)
            done += 1
            if progress is not None:
                progress(done, total, c.key)
        return
    import concurrent.futures as cf
    import multiprocessing as mp

    ctx = mp.get_context("spawn")  # fresh interpreters: no inherited Numba/torch thread state
    env_threads = os.environ.get("NUMBA_NUM_THREADS")
    os.environ["NUMBA_NUM_THREADS"] = "1"
    try:
        with cf.ProcessPoolExecutor(max_workers=workers, mp_context=ctx) as pool:
            futs = {pool.submit(execute_cell, run_dir, c, fn, run_seed): c for c in todo}
            for fut in cf.as_completed(futs):
                key = fut.result()
                done += 1
                if progress is not None:
                    progress(done, total, key)
    finally:
        if env_threads is None:
            os.environ.pop("NUMBA_NUM_THREADS", None)
        else:
            os.environ["NUMBA_NUM_THREADS"] = env_threads
