"""Run a policy in a World and record the episode (the per-policy counterpart of ``World.run``)."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from drivediff.sim import layout as L


def run_policy(world, policy, num_steps: int, record: bool = True,
               progress: Callable[[int], None] | None = None) -> dict | None:
    """``policy.reset(world)`` must have been called. Returns a dict of (B, T, N) arrays like
    ``World.run(record=True)`` (plus ``t``), or None without ``record``."""
    rows = {k: [] for k in L.LOG_FIELDS} if record else None
    t0 = int(world.state.step[0])
    for k in range(num_steps):
        world.step(policy.act(world))
        if record:
            for name in L.LOG_FIELDS:
                rows[name].append(getattr(world.state, name).copy())
        if progress is not None and (k + 1) % 20 == 0:
            progress(k + 1)
    if not record:
        return None
    out = {k: np.stack(v, axis=1) if v else np.zeros((world.num_worlds, 0, world.max_vehicles))
           for k, v in rows.items()}
    out["t"] = (t0 + 1 + np.arange(num_steps)) * world.dt
    return out


def plan_extras(policy, rec_t: np.ndarray, dt: float, b: int, num_slots: int) -> dict[str, np.ndarray]:
    """Episode-log extras from a DiffusionPolicy's records for world b: the plan each vehicle was executing
    at every step, the candidates of its last replanning and the predicted neighbour trajectories
    (``plans`` (T, N, H, 2) + ``plans_valid``, ``candidates`` (T, N, C, H, 2) + ``candidate_costs`` +
    ``candidate_chosen``, ``predictions`` (T, N, M, H, 2) + ``predictions_valid``)."""
    records = getattr(policy, "records", [])
    if not records:
        return {}
    steps = np.round(rec_t / dt).astype(int)
    h = policy.cfg.horizon
    c = policy.scfg.candidates
    m = policy.cfg.num_agents - 1
    t = len(steps)
    out = {
        "plans": np.zeros((t, num_slots, h, 2)), "plans_valid": np.zeros((t, num_slots), bool),
        "candidates": np.zeros((t, num_slots, c, h, 2)), "candidate_costs": np.zeros((t, num_slots, c)),
        "candidate_chosen": np.full((t, num_slots), -1), "predictions": np.zeros((t, num_slots, m, h, 2)),
        "predictions_valid": np.zeros((t, num_slots, m), bool),
    }
    for rec in records:
        start = rec.step[b]
        rows = steps >= start  # this replanning holds from its step until the next one overwrites it
        for (wb, slot), xy in rec.plans.items():
            if wb != b:
                continue
            out["plans"][rows, slot] = xy
            out["plans_valid"][rows, slot] = True
            cands, costs, chosen = rec.candidates.get((wb, slot), (None, None, -1))
            if cands is not None:
                out["candidates"][rows, slot] = cands
                out["candidate_costs"][rows, slot] = costs
                out["candidate_chosen"][rows, slot] = chosen
            pred = rec.predictions.get((wb, slot))
            if pred is not None:
                out["predictions"][rows, slot, :len(pred)] = pred
                out["predictions_valid"][rows, slot, :len(pred)] = True
    return out


def write_episode_log(path, world, policy, rec: dict, initial: dict, b: int, meta: dict):
    """Write world ``b`` of a recorded rollout (``run_policy``) as an episode log for the replay viewer,
    with the planner's plans, candidates and predictions when the policy recorded them. ``initial`` is
    ``world.snapshot(b)`` taken before the rollout. Returns the path written (atomically)."""
    from drivediff.sim.log import EpisodeLog, write_log

    info = {"scenario": world.config.name, "source": world.scenario.source, "dt": world.dt,
            "seed": int(world.seeds[b]), **meta}
    log = EpisodeLog.from_recording(rec, b, world.road, info, initial=initial)
    if getattr(policy, "records", None):
        log.extras.update(plan_extras(policy, log.t, world.dt, b, log.num_slots))
    return write_log(path, log)
