"""``drivediff collect`` on several workers or a Ray cluster: one task per (scenario, episode) shard.

The shards are the ones ``drivediff.planner.data.collect`` writes, with the same names, seeds and contents
(byte for byte in every array), whatever the backend or the number of workers: a shard's seed comes from
the collection seed and its episode number only. Workers compute a shard's windows and send them back;
this process writes each shard atomically into ``out``. Shards already in ``out`` that were made with the
same settings are kept, so an interrupted collection resumes; the others are redone (``data.shard_state``).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from drivediff.experiments.runner import MAX_RETRIES, Progress, Task, resume_status, run_tasks
from drivediff.planner.config import PlannerConfig
from drivediff.planner.data import collect_episode, save_shard, shard_meta, shard_path, shard_state


def episode_seed(seed: int, episode: int) -> int:
    """The seed of episode ``episode`` of a collection (as ``drivediff.planner.data.collect`` draws it)."""
    return seed * 100_003 + episode


def shard_windows(scenario: str, episode: int, seed: int, cfg: PlannerConfig, num_worlds: int) -> dict | None:
    """What a worker computes for one shard: its windows (None when the episode yields none)."""
    return collect_episode(scenario, episode_seed(seed, episode), cfg, num_worlds)


def collect_parallel(scenarios: Sequence[str], episodes: int, out: Path, cfg: PlannerConfig | None = None,
                     seed: int = 0, num_worlds: int = 4, backend: str = "local", workers: int | None = None,
                     address: str | None = None, progress: Progress | None = None,
                     max_retries: int = MAX_RETRIES) -> list[Path]:
    """Write ``episodes`` shards per scenario into ``out`` on a backend; returns the shard paths present,
    in (scenario, episode) order. Arguments as ``data.collect`` plus those of ``runner.run_tasks``."""
    cfg = cfg or PlannerConfig()
    out = Path(out)
    jobs = [(str(sc), e) for sc in scenarios for e in range(episodes)]
    state = {(sc, e): shard_state(shard_path(out, sc, e), shard_meta(sc, e, seed, num_worlds, cfg)) for sc, e in jobs}
    todo = [job for job in jobs if not state[job]]
    tasks = [Task(shard_path(out, sc, e).stem, shard_windows, (sc, e, seed, cfg, num_worlds)) for sc, e in todo]
    done = len(jobs) - len(todo)
    stale = sum(s is False for s in state.values())
    if progress is not None:
        progress(done, len(jobs), resume_status(done, stale))

    def store(task: Task, windows: dict | None) -> None:
        sc, e = task.args[0], task.args[1]
        if windows is not None:
            save_shard(shard_path(out, sc, e), windows, shard_meta(sc, e, seed, num_worlds, cfg))
        else:  # no windows with these settings: a shard made with others must not stay
            shard_path(out, sc, e).unlink(missing_ok=True)

    run_tasks(tasks, store, backend=backend, workers=workers, progress=progress, done=done, total=len(jobs),
              address=address, max_retries=max_retries)
    return [p for p in (shard_path(out, sc, e) for sc, e in jobs) if p.exists()]
