"""``drivediff experiment planner``: closed-loop and open-loop evaluation of the diffusion planner.

Closed loop, on merge, highway and intersection with several controlled vehicles, for the IDM/MOBIL
expert and the planner in decentralised, centralised and communication modes: collision rate (episodes
in which a controlled vehicle collides), off-road rate (episodes in which one leaves the drivable area),
progress (distance driven per controlled vehicle, and relative to the expert on the same seeds), mean
speed, planning latency. Open loop, on held-out expert windows: ADE / FDE of the focal vehicle's plan
(the chosen candidate, rolled out) against the expert's future positions.

Writes RUN/config.json, RUN/cells/*.json (resumable), RUN/episodes.csv, RUN/metrics.json, RUN/report.md.
"""

from __future__ import annotations

import csv
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from drivediff.experiments.runner import (
    Cell,
    cell_seed,
    check_backend,
    checkpoint_digest,
    find_cell,
    run_cells,
    wilson,
    write_json,
)
from drivediff.io import atomic_write

METHODS = ("idm", "decentralized", "centralized", "communication")


@dataclass(frozen=True)
class PlannerEvalConfig:
    scenarios: tuple[str, ...] = ("merge", "highway", "intersection")
    methods: tuple[str, ...] = METHODS
    agents: int = 4  # controlled vehicles per world
    episodes: int = 8  # worlds (seeds) per cell
    duration: float = 20.0  # [s]
    checkpoint: str | None = None
    sampling_steps: int = 10
    candidates: int = 4
    replan_every: float = 0.4  # [s]
    openloop_windows: int = 300
    guidance: float | None = None  # safety guidance scale for the planner (None: unguided, this table)
    seed: int = 0

    def __post_init__(self):
        bad = set(self.methods) - set(METHODS)
        if bad:
            raise ValueError(f"unknown methods {sorted(bad)}; choose from {METHODS}")

    @classmethod
    def quick(cls, **kw) -> PlannerEvalConfig:
        return cls(**{"scenarios": ("merge", "intersection"), "episodes": 2, "duration": 6.0,
                      "openloop_windows": 40, "sampling_steps": 5, "candidates": 2, **kw})


def _rollout_closed(cell: Cell, seed: int, record_plans: bool = False):
    """A closed-loop cell's episodes as one batch of worlds: (world, policy, recording, initial snapshots)."""
    from drivediff.agents import make_policy
    from drivediff.agents.rollout import run_policy
    from drivediff.planner.sampler import SamplerConfig
    from drivediff.sim import World

    p = cell.params
    world = World(p["scenario"], num_worlds=p["episodes"], overrides={"controlled": {"count": p["agents"]}})
    # every method meets the same traffic: world seeds depend on the run seed and the scenario only
    world_seed = cell_seed(p["run_seed"], f"world-{p['scenario']}")
    world.reset(seed=[world_seed + k for k in range(p["episodes"])])
    if p["method"] == "idm":
        pol = make_policy("idm")
    else:
        guidance = None
        if p.get("guidance") is not None:
            from drivediff.planner.guidance import GuidanceConfig

            guidance = GuidanceConfig(scale=p["guidance"])
        pol = make_policy("diffusion", checkpoint=p["checkpoint"], mode=p["method"], seed=seed,
                          replan_every=p["replan_every"], guidance=guidance, record=record_plans,
                          sampler=SamplerConfig(steps=p["sampling_steps"], candidates=p["candidates"]))
    pol.reset(world)
    initial = [world.snapshot(b) for b in range(world.num_worlds)]
    return world, pol, run_policy(world, pol, int(round(p["duration"] / world.dt))), initial


def closed_loop_cell(cell: Cell, seed: int) -> list[dict]:
    p = cell.params
    world, pol, rec, initial = _rollout_closed(cell, seed)
    start = (np.stack([s["x"][0] for s in initial]), np.stack([s["y"][0] for s in initial]))
    lat = np.asarray(getattr(pol, "latencies", None) or [], dtype=np.float64) * 1000.0  # the expert: none
    lat_mean = float(lat.mean()) if lat.size else float("nan")
    lat_p95 = float(np.percentile(lat, 95)) if lat.size else float("nan")
    rows = []
    for b in range(p["episodes"]):
        rows.append(episode_metrics(rec, b, p["agents"], world.dt, start) | {
            "scenario": p["scenario"], "method": p["method"], "episode": b, "seed": int(world.seeds[b]),
            "latency_ms_mean": lat_mean, "latency_ms_p95": lat_p95})
    return rows


def episode_log(cfg: PlannerEvalConfig, key: str, episode: int, path: Path) -> Path:
    """Rerun one closed-loop cell of a run in this process and write one episode's log (with the plans) for
    the replay viewer; the cell is deterministic given the run seed and its key."""
    from drivediff.agents.rollout import write_episode_log

    cell = find_cell([c for c in _cells(cfg) if c.key.startswith("closed-")], key, episode, "episodes")
    world, pol, rec, initial = _rollout_closed(cell, cell_seed(cfg.seed, key), record_plans=True)
    meta = {"experiment": "planner", "cell": key, "episode": episode, "method": cell.params["method"],
            "policy": "idm" if cell.params["method"] == "idm" else "diffusion"}
    return write_episode_log(path, world, pol, rec, initial[episode], episode, meta)


def load_config(run_dir: Path) -> PlannerEvalConfig:
    """The configuration a run folder was made with (its ``config.json``)."""
    from drivediff.experiments.runner import load_run_config

    return load_run_config(run_dir, PlannerEvalConfig, "planner")


def episode_metrics(rec: dict, b: int, agents: int, dt: float, start=None) -> dict:
    """Outcome of the controlled vehicles (slots 0..agents-1) of world b."""
    valid = rec["valid"][b][:, :agents]
    coll = rec["collided"][b][:, :agents] & valid
    off = rec["offroad"][b][:, :agents] & valid
    speed = np.where(valid, rec["speed"][b][:, :agents], 0.0)
    dist = speed.sum(axis=0) * dt  # distance driven by each controlled vehicle while on the road
    return {"collision": bool(coll.any()), "collided_vehicles": int(coll.any(axis=0).sum()),
            "offroad": bool(off.any()), "offroad_vehicles": int(off.any(axis=0).sum()),
            "progress_m": float(dist.mean()), "mean_speed": float(speed.sum() / max(valid.sum(), 1)),
            "vehicle_km": float(dist.sum() / 1000.0)}


def open_loop_cell(cell: Cell, seed: int) -> list[dict]:
    """ADE / FDE of the focal plan on fresh expert windows of one scenario."""
    import torch

    from drivediff.planner.checkpoint import default_checkpoint, load_planner
    from drivediff.planner.data import collect_episode
    from drivediff.planner.dynamics import clip_controls, plan_states
    from drivediff.planner.sampler import SamplerConfig, sample, select
    from drivediff.planner.schedulers import NoiseSchedule

    p = cell.params
    planner = load_planner(p["checkpoint"] or default_checkpoint())
    cfg = planner.cfg
    data = collect_episode(p["scenario"], 1_000_000 + seed, cfg, num_worlds=2, perturb_prob=0.0)
    n = min(p["windows"], len(data["fut_ctrl"]))
    idx = np.random.default_rng(seed).choice(len(data["fut_ctrl"]), n, replace=False)
    cond = {k: torch.as_tensor(data[k][idx]) for k in ("agent_feat", "agent_mask", "lane_feat", "lane_mask")}
    scfg = SamplerConfig(steps=p["sampling_steps"], candidates=p["candidates"])
    schedule = NoiseSchedule(cfg.train_timesteps, cfg.schedule)
    z = sample(planner.model, schedule, cond, scfg, torch.Generator().manual_seed(seed))
    ctrl = clip_controls(planner.normalizer.decode(z), cfg)
    state = torch.as_tensor(data["agent_state"][idx])
    from drivediff.sim import World

    dt = World(p["scenario"]).dt
    m = int(round(cfg.plan_dt / dt))
    states = plan_states(state[:, None].expand(-1, ctrl.shape[1], -1, -1), ctrl, dt, m, steer_max=cfg.steer_max)
    chosen = select(scfg.selector, z, {}).numpy()
    xy = states[np.arange(n), chosen, 0, :, :2].numpy()  # focal
    truth = data["fut_xy"][idx, 0]
    err = np.linalg.norm(xy - truth, axis=-1)
    best = np.linalg.norm(states[:, :, 0, :, :2].numpy() - truth[:, None], axis=-1)
    return [{"scenario": p["scenario"], "method": "open-loop", "windows": n, "ade": float(err.mean()),
             "fde": float(err[:, -1].mean()), "min_ade_over_candidates": float(best.mean(axis=-1).min(axis=1).mean())}]


def _cells(cfg: PlannerEvalConfig) -> list[Cell]:
    """Every cell of the run. A cell's params hold everything its rows depend on and nothing else: a rerun in
    the same run folder reuses a finished cell exactly when they match (the expert's cells survive a change of
    the planner's settings), and cells that load the checkpoint record its digest (weights retrained in place)."""
    planner = {"checkpoint": cfg.checkpoint, "checkpoint_sha256": checkpoint_digest(cfg.checkpoint),
               "sampling_steps": cfg.sampling_steps, "candidates": cfg.candidates}
    cells = [Cell(f"closed-{sc}-{m}", {"scenario": sc, "method": m, "agents": cfg.agents, "episodes": cfg.episodes,
                                       "duration": cfg.duration, "run_seed": cfg.seed,
                                       **({} if m == "idm" else {"replan_every": cfg.replan_every,
                                                                 "guidance": cfg.guidance, **planner})})
             for sc in cfg.scenarios for m in cfg.methods]
    cells += [Cell(f"open-{sc}", {"scenario": sc, "windows": cfg.openloop_windows, **planner}) for sc in cfg.scenarios]
    return cells


def _dispatch(cell: Cell, seed: int) -> list[dict]:
    return open_loop_cell(cell, seed) if cell.key.startswith("open-") else closed_loop_cell(cell, seed)


def _mean_finite(values) -> float:
    """Mean of the finite values; NaN without a warning when there are none (the expert plans nothing)."""
    x = [float(v) for v in values if v is not None and np.isfinite(v)]
    return float(np.mean(x)) if x else float("nan")


def summarize(rows: list[dict], cfg: PlannerEvalConfig) -> dict:
    closed = [r for r in rows if r.get("method") in METHODS]
    out = {"closed_loop": {}, "open_loop": {}}
    for sc in cfg.scenarios:
        expert = [r for r in closed if r["scenario"] == sc and r["method"] == "idm"]
        exp_prog = np.mean([r["progress_m"] for r in expert]) if expert else np.nan
        for m in cfg.methods:
            rs = [r for r in closed if r["scenario"] == sc and r["method"] == m]
            if not rs:
                continue
            n = len(rs)
            k_col = sum(r["collision"] for r in rs)
            k_off = sum(r["offroad"] for r in rs)
            prog = float(np.mean([r["progress_m"] for r in rs]))
            out["closed_loop"][f"{sc}/{m}"] = {
                "episodes": n, "collision_rate": k_col / n, "collision_ci95": wilson(k_col, n),
                "offroad_rate": k_off / n, "offroad_ci95": wilson(k_off, n), "progress_m": prog,
                "progress_vs_expert": prog / exp_prog if exp_prog else float("nan"),
                "mean_speed": float(np.mean([r["mean_speed"] for r in rs])),
                "latency_ms_mean": _mean_finite([r["latency_ms_mean"] for r in rs]),
                "latency_ms_p95": _mean_finite([r["latency_ms_p95"] for r in rs])}
    for r in rows:
        if r.get("method") == "open-loop":
            out["open_loop"][r["scenario"]] = {k: r[k] for k in ("windows", "ade", "fde", "min_ade_over_candidates")}
    return out


def report(metrics: dict, cfg: PlannerEvalConfig) -> str:
    lines = ["# Diffusion planner: closed-loop and open-loop evaluation", "",
             f"{cfg.agents} controlled vehicles per world, {cfg.episodes} worlds (seeds) per cell, "
             f"{cfg.duration:.0f} s episodes, {cfg.sampling_steps} sampling steps, {cfg.candidates} candidates, "
             f"replanning every {cfg.replan_every} s, "
             + ("unguided sampling" if cfg.guidance is None else f"safety guidance at scale {cfg.guidance}")
             + ". Every method meets the same worlds (seeds). Rates: share of episodes in which any controlled vehicle "
             "collided / left the road (95% Wilson interval).", "",
             "| scenario | method | collision rate | off-road rate | progress [m] | vs expert | mean speed [m/s] | "
             "planning [ms] mean / p95 |", "|---|---|---|---|---|---|---|---|"]
    for key, v in metrics["closed_loop"].items():
        sc, m = key.split("/")
        lat = "-" if np.isnan(v["latency_ms_mean"]) else f"{v['latency_ms_mean']:.0f} / {v['latency_ms_p95']:.0f}"
        lines.append(f"| {sc} | {m} | {v['collision_rate']:.2f} [{v['collision_ci95'][0]:.2f}, "
                     f"{v['collision_ci95'][1]:.2f}] | {v['offroad_rate']:.2f} [{v['offroad_ci95'][0]:.2f}, "
                     f"{v['offroad_ci95'][1]:.2f}] | {v['progress_m']:.0f} | {v['progress_vs_expert']:.2f} | "
                     f"{v['mean_speed']:.1f} | {lat} |")
    lines += ["", "Open loop (focal vehicle, chosen candidate vs the expert's future, 4 s):", "",
              "| scenario | windows | ADE [m] | FDE [m] | best-of-candidates ADE [m] |", "|---|---|---|---|---|"]
    for sc, v in metrics["open_loop"].items():
        lines.append(f"| {sc} | {v['windows']} | {v['ade']:.2f} | {v['fde']:.2f} | "
                     f"{v['min_ade_over_candidates']:.2f} |")
    return "\n".join(lines) + "\n"


def main(cfg: PlannerEvalConfig, out: Path, workers: int = 1, backend: str = "local", progress=None) -> dict:
    out = Path(out)
    check_backend(backend)  # before anything is written to the run folder
    cells = _cells(cfg)
    write_json(out / "config.json", asdict(cfg))
    rows = run_cells(out, cells, _dispatch, cfg.seed, backend=backend, workers=workers, progress=progress,
                     context={"experiment": "planner"})
    closed = [r for r in rows if r.get("method") in METHODS]
    if closed:
        def write_csv(fh):
            w = csv.DictWriter(fh, fieldnames=list(closed[0].keys()))
            w.writeheader()
            w.writerows(closed)

        atomic_write(out / "episodes.csv", write_csv, binary=False)
    metrics = summarize(rows, cfg)
    write_json(out / "metrics.json", metrics)
    atomic_write(out / "report.md", lambda fh: fh.write(report(metrics, cfg)), binary=False)
    return metrics


__all__ = ["PlannerEvalConfig", "main", "summarize", "wilson", "episode_metrics"]
