"""Scale-out benchmarks: sweep throughput per backend and DDP training speed per process count.

    drivediff bench sweep [--experiment demo|planner|safety|platoon] [--configs local:1,local:2,ray] [--json]
    drivediff bench train [--procs 1,2] [--steps 60] [--json]

``bench sweep`` runs the quick sweep of an experiment (``QUICK_SWEEPS``: a name -> its cells, cell function
and seed; a new experiment adds itself there) once per configuration, each in a fresh temporary run folder,
after one warm-up cell in this process (so every configuration finds the Numba cache filled). It reports
cells per minute over the cells themselves and end to end (with the pool or Ray start-up), and checks that
every configuration produced the same rows (planning latencies and other wall-clock fields aside).

``bench train`` trains the planner under ``torchrun --nproc_per_node N`` for N in ``procs`` (same global
batch; torch threads per process: the CPUs divided among the processes, or ``threads``) and reports
optimisation steps per second, timed between the first and last logged steps (start-up and data loading
excluded), and the final loss.
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from drivediff.errors import DrivediffError
from drivediff.experiments.runner import Cell, cell_seed, run_cells


def _demo_sweep(checkpoint=None):
    from drivediff.experiments.sweep_demo import SweepDemoConfig, cells, demo_cell

    cfg = SweepDemoConfig(blocks=6, worlds_per_cell=16, steps=2000)  # 24 cells of about half a second each
    return cells(cfg), demo_cell, cfg.seed


def _planner_sweep(checkpoint=None):
    from drivediff.experiments import planner_eval

    cfg = planner_eval.PlannerEvalConfig.quick(checkpoint=checkpoint)
    return planner_eval._cells(cfg), planner_eval._dispatch, cfg.seed


def _safety_sweep(checkpoint=None):
    from drivediff.experiments import safety

    cfg = safety.SafetyConfig.quick_config(checkpoint=checkpoint)
    return safety._cells(cfg), safety.safety_cell, cfg.seed


def _platoon_sweep(checkpoint=None):
    from drivediff.experiments import platoon

    cfg = platoon.PlatoonConfig.quick_config()
    return platoon.make_cells(cfg), platoon.platoon_cell, cfg.seed


# the quick sweep of each experiment: (planner checkpoint or None) -> (cells, cell function, run seed)
QUICK_SWEEPS: dict[str, Callable[..., tuple[list[Cell], Callable, int]]] = {
    "demo": _demo_sweep,
    "planner": _planner_sweep,
    "safety": _safety_sweep,
    "platoon": _platoon_sweep,
}


def parse_configs(text: str) -> list[tuple[str, int | None]]:
    """``"local:1,local:2,ray"`` -> [("local", 1), ("local", 2), ("ray", None)]."""
    out = []
    for item in filter(None, (s.strip() for s in text.split(","))):
        backend, _, n = item.partition(":")
        if backend not in ("local", "ray") or (n and not n.isdigit()) or n == "0":
            raise DrivediffError(f"bad configuration {item!r}: use local:N or ray[:N]")
        out.append((backend, int(n) if n else (1 if backend == "local" else None)))
    if not out:
        raise DrivediffError("no configuration given")
    return out


def run_sweep_bench(experiment: str = "demo", configs=(("local", 1), ("local", 2), ("ray", None)),
                    address: str | None = None, checkpoint: str | None = None, progress=None) -> dict:
    if experiment not in QUICK_SWEEPS:
        raise DrivediffError(f"unknown experiment {experiment!r} ({', '.join(QUICK_SWEEPS)})")
    cells, fn, seed = QUICK_SWEEPS[experiment](checkpoint)
    t0 = time.perf_counter()
    fn(cells[0], cell_seed(seed, cells[0].key))  # warm-up: compile into the Numba cache, build road caches
    res = {"experiment": experiment, "cells": len(cells), "warmup_s": time.perf_counter() - t0,
           "machine": {"cpus": os.cpu_count(), "load_avg_1min": os.getloadavg()[0]}, "runs": []}
    reference = None
    for backend, workers in configs:
        run = _time_sweep(cells, fn, seed, backend, workers, address, progress)
        rows = outcomes(run.pop("rows"))
        reference = rows if reference is None else reference
        run["same_rows_as_first"] = rows == reference
        res["runs"].append(run)
    return res


TIMING_FIELDS = ("latency", "wall", "seconds", "runtime")  # wall-clock measurements differ from run to run


def outcomes(rows: list[dict]) -> str:
    """The rows without wall-clock measurements (planning latency...), as comparable text (NaN == NaN):
    what must not depend on the backend or the number of workers."""
    return json.dumps([{k: v for k, v in r.items() if not any(t in k for t in TIMING_FIELDS)} for r in rows],
                      sort_keys=True)


def _time_sweep(cells, fn, seed, backend, workers, address, progress) -> dict:
    startup, started = 0.0, False
    if backend == "ray":
        from drivediff.experiments.ray_backend import connect, require_ray

        t0 = time.perf_counter()
        started = connect(address, workers)
        startup = time.perf_counter() - t0
    try:
        with tempfile.TemporaryDirectory(prefix="drivediff-bench-sweep-") as tmp:
            first = []

            def tick(done, total, key):
                if done and not first:
                    first.append(time.perf_counter() - t0)
                if progress is not None:
                    progress(f"{backend}:{workers or 'all'} {done}/{total}")

            t0 = time.perf_counter()
            rows = run_cells(Path(tmp), cells, fn, seed, backend=backend, workers=workers, progress=tick)
            wall = time.perf_counter() - t0
    finally:
        if started:
            require_ray().shutdown()
    return {"backend": backend, "workers": workers, "startup_s": startup, "wall_s": wall,
            "first_cell_s": first[0] if first else None, "cells_per_min": 60.0 * len(cells) / wall,
            "end_to_end_cells_per_min": 60.0 * len(cells) / (wall + startup), "rows": rows}


def print_sweep_bench(res: dict, console) -> None:
    from rich.table import Table

    table = Table(title=f"sweep throughput: quick '{res['experiment']}' sweep, {res['cells']} cells "
                        f"({res['machine']['cpus']} CPUs, load {res['machine']['load_avg_1min']:.1f} at start)")
    # start: Ray start-up; run: the cells (a local pool starts inside); e2e: both; same: rows as the first run
    for col in ("backend", "workers", "start [s]", "run [s]", "1st cell [s]", "cells/min", "e2e/min", "same"):
        table.add_column(col)
    for r in res["runs"]:
        table.add_row(r["backend"], str(r["workers"] or "all"), f"{r['startup_s']:.1f}", f"{r['wall_s']:.1f}",
                      f"{r['first_cell_s']:.1f}", f"{r['cells_per_min']:.1f}", f"{r['end_to_end_cells_per_min']:.1f}",
                      "yes" if r["same_rows_as_first"] else "NO")
    console.print(table)


def run_train_bench(procs=(1, 2), steps: int = 60, batch_size: int = 128, data: Path | None = None,
                    threads: int | None = None, progress=None) -> dict:
    """Steps/s of ``drivediff train`` under torchrun for each process count (CPU, gloo). Each process runs
    ``threads`` torch threads (default: the CPUs divided among the processes)."""
    res = {"steps": steps, "batch_size": batch_size, "machine": {"cpus": os.cpu_count(),
                                                                "load_avg_1min": os.getloadavg()[0]}, "runs": []}
    with tempfile.TemporaryDirectory(prefix="drivediff-bench-train-") as tmp:
        if data is None:
            from drivediff.experiments.collect_parallel import collect_parallel

            data = Path(tmp) / "data"
            if progress is not None:
                progress("collecting a small dataset (merge, 2 episodes)")
            collect_parallel(["merge"], 2, data, num_worlds=4, workers=2)
        for n in procs:
            if progress is not None:
                progress(f"training with {n} process(es)")
            t = threads or max(1, (os.cpu_count() or 1) // n)
            res["runs"].append(_time_training(n, t, steps, batch_size, data, Path(tmp) / f"p{n}" / "p.pt"))
    return res


def torchrun_train_command(nproc: int, data: Path, out: Path, *extra: str) -> list[str]:
    """``torchrun --nproc_per_node N -m drivediff.cli train ...`` with this interpreter."""
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
            "-m", "drivediff.cli", "train", "--data", str(data), "--out", str(out), "--device", "cpu", *extra]


def _time_training(nproc: int, threads: int, steps: int, batch_size: int, data: Path, out: Path) -> dict:
    cmd = torchrun_train_command(nproc, data, out, "--steps", str(steps), "--batch-size", str(batch_size),
                                 "--warmup", "10", "--minutes", "30")
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=dict(os.environ, OMP_NUM_THREADS=str(threads)))
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise DrivediffError(f"torchrun with {nproc} processes failed:\n{proc.stderr[-2000:]}")
    with open(str(out) + ".loss.csv") as fh:
        curve = list(csv.DictReader(fh))
    a, b = curve[0], curve[-1]
    rate = (int(b["step"]) - int(a["step"])) / max(float(b["seconds"]) - float(a["seconds"]), 1e-9)
    return {"processes": nproc, "threads_per_process": threads, "batch_per_process": batch_size // nproc,
            "steps_per_s": rate,
            "wall_s": wall, "final_loss": float(b["loss"])}


def print_train_bench(res: dict, console) -> None:
    from rich.table import Table

    table = Table(title=f"DDP training (CPU, gloo): global batch {res['batch_size']}, {res['steps']} steps "
                        f"({res['machine']['cpus']} CPUs, load {res['machine']['load_avg_1min']:.1f} at start)")
    for col in ("processes", "threads/proc", "batch/proc", "steps/s", "windows/s", "wall [s]", "final loss"):
        table.add_column(col)
    for r in res["runs"]:
        table.add_row(str(r["processes"]), str(r["threads_per_process"]), str(r["batch_per_process"]),
                      f"{r['steps_per_s']:.2f}", f"{r['steps_per_s'] * res['batch_size']:.0f}", f"{r['wall_s']:.1f}",
                      f"{r['final_loss']:.4f}")
    console.print(table)
