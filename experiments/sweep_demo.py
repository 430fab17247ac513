"""A small real sweep (catalog scenarios x seed blocks, IDM/MOBIL traffic for a few seconds).

What the scale-out tests and ``drivediff bench sweep`` run when no heavier experiment is asked for: each
cell simulates ``worlds_per_cell`` worlds of one scenario for ``steps`` steps and returns one row per world
(episode) with its summary (collisions, off-road events, vehicles, mean speed, distance).

``crash_marker`` (tests only) makes the first attempt of every cell kill its own worker process: the first
attempt of a cell creates ``<crash_marker>-<key>`` and dies; the retry finds the file and runs normally.
"""

from __future__ import annotations

import os
import signal
from dataclasses import dataclass
from pathlib import Path

from drivediff.experiments.runner import Cell, run_cells


@dataclass(frozen=True)
class SweepDemoConfig:
    scenarios: tuple[str, ...] = ("merge", "highway", "intersection", "roundabout")
    blocks: int = 2  # cells per scenario (each a block of seeds)
    worlds_per_cell: int = 2  # episodes per cell
    steps: int = 100  # simulator steps per episode (10 s at dt = 0.1 s)
    seed: int = 0
    crash_marker: str | None = None  # tests: kill each cell's worker on its first attempt

    def __post_init__(self):
        if self.blocks < 1 or self.worlds_per_cell < 1 or self.steps < 1:
            raise ValueError("blocks, worlds_per_cell and steps must be positive")


def cells(cfg: SweepDemoConfig) -> list[Cell]:
    return [Cell(f"{sc}-{k}", {"scenario": sc, "worlds": cfg.worlds_per_cell, "steps": cfg.steps,
                               "crash_marker": cfg.crash_marker})
            for sc in cfg.scenarios for k in range(cfg.blocks)]


def demo_cell(cell: Cell, seed: int) -> list[dict]:
    """One row per world: the episode summary of ``steps`` steps of the scenario from seed ``seed + b``."""
    from drivediff.sim import World
    from drivediff.sim.summary import episode_summary

    p = cell.params
    if p.get("crash_marker"):
        _crash_once(Path(f"{p['crash_marker']}-{cell.key}"))
    world = World(p["scenario"], num_worlds=p["worlds"])
    world.reset(seed=seed)
    rec = world.run(p["steps"], record=True)
    return [{"scenario": p["scenario"], "episode": b, "seed": seed + b,
             **episode_summary({k: rec[k][b] for k in rec if k != "t"}, world.dt)} for b in range(p["worlds"])]


def _crash_once(marker: Path) -> None:
    if not marker.exists():
        marker.touch()
        os.kill(os.getpid(), signal.SIGKILL)


def main(cfg: SweepDemoConfig, out: Path, backend: str = "local", workers: int | None = None, progress=None,
         address: str | None = None) -> list[dict]:
    """Run (or resume) the sweep in ``out``; returns every episode row, in cell order."""
    return run_cells(out, cells(cfg), demo_cell, cfg.seed, backend=backend, workers=workers, progress=progress,
                     ray_address=address)
