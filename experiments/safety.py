"""``drivediff experiment safety``: what safety-constraint guidance during denoising buys.

Suite: dense highway, merge, intersection, roundabout, cut-in, lead braking. Methods:

=================  ==========================================================================
expert             the simulator's IDM/MOBIL drives the controlled vehicles
unguided           diffusion planner, decentralised, plain sampling, medoid candidate
guided             + cost-gradient guidance on x0 and cost-based candidate selection (+ braking fallback)
guided+corr        + the barrier correction on the last denoising steps (every layer on)
guided+corr-cen    every layer, centralised mode (one joint plan per group of controlled vehicles)
guided+corr-com    every layer, communication mode (neighbours' shared plans inpainted)
=================  ==========================================================================

Every cell (scenario x method, or an ablation point) runs ``episodes`` episodes as a batch of worlds. The
worlds' seeds depend on the run seed, the scenario and the episode index only, so every method meets the
same traffic (paired comparison); the sampling noise is seeded from the cell. Ablations (on
``ablation_scenarios``, by default merge and cut-in where the run has them; ``ablation_episodes`` 0: none):
guidance scale sweep, sampling steps, candidates, and each guidance layer off.

Per episode and controlled vehicle (``experiments.safety_metrics``): collision, off-road, share of steps
with projected TTC < 0.95 s and the minimum TTC, distance, comfort violation (nuPlan bounds), speed-limit
compliance, nuPlan-style score against the expert on the same episode, and the planner's latency.

Writes RUN/config.json, RUN/cells/*.json (resumable), RUN/episodes.csv, RUN/metrics.json, RUN/plots/*.png
and RUN/report.md.
"""

from __future__ import annotations

import csv
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from drivediff.errors import DrivediffError
from drivediff.experiments.runner import (
    Cell,
    cell_seed,
    check_backend,
    checkpoint_digest,
    find_cell,
    run_cells,
    t_interval,
    wilson,
    write_json,
)
from drivediff.io import atomic_write

# scenario name in the suite -> (catalog scenario, overrides, controlled vehicles)
SUITE = {
    "dense-highway": ("highway", {"traffic": {"count": 60, "spacing": 0.67}, "controlled": {"count": 4}}, 4),
    "merge": ("merge", {"controlled": {"count": 4}}, 4),
    "intersection": ("intersection", {"controlled": {"count": 4}}, 4),
    "roundabout": ("roundabout", {"controlled": {"count": 4}}, 4),
    "cut-in": ("cut-in", {}, 1),
    "lead-braking": ("lead-braking", {}, 1),
}
METHODS = {
    # name -> (policy, mode, guidance layers or None)
    "expert": ("idm", None, None),
    "unguided": ("diffusion", "decentralized", None),
    "guided": ("diffusion", "decentralized", {"correction": False}),
    "guided+corr": ("diffusion", "decentralized", {}),
    "guided+corr-cen": ("diffusion", "centralized", {}),
    "guided+corr-com": ("diffusion", "communication", {}),
}
LAYERS = ("gradient", "correction", "selection")
ABLATION_SCENARIOS = ("merge", "cut-in")  # the default ablation scenarios (those of them the run has)
ABLATION_EPISODES = 10  # default episodes per ablation cell (fewer when the main cells have fewer)


@dataclass(frozen=True)
class SafetyConfig:
    scenarios: tuple[str, ...] = tuple(SUITE)
    methods: tuple[str, ...] = tuple(METHODS)
    episodes: int = 20
    duration: float = 20.0  # [s] (shorter scenarios end at their own duration)
    checkpoint: str | None = None
    sampling_steps: int = 10
    candidates: int = 4
    # [s] every planner step: at 0.4 s a vehicle cutting in went unseen for up to 0.4 s, and 7 of 20 cut-in
    # episodes collided (0 of 20 at 0.2 s, same worlds)
    replan_every: float = 0.2
    scale: float = 1.0  # guidance scale of the guided methods
    # None: ABLATION_SCENARIOS among ``scenarios`` (a run narrowed to other scenarios has no ablations);
    # given: exactly these (empty: none)
    ablation_scenarios: tuple[str, ...] | None = None
    ablation_episodes: int | None = None  # None: as many as ``episodes``, at most ABLATION_EPISODES; 0: none
    scales: tuple[float, ...] = (0.0, 0.25, 0.5, 1.0, 2.0, 4.0)
    steps_sweep: tuple[int, ...] = (2, 5, 10, 20)
    candidates_sweep: tuple[int, ...] = (1, 2, 4, 8)
    layer_ablation: bool = True
    ttc_every: int = 1  # evaluate the projected TTC every k-th simulator step
    seed: int = 0
    quick: bool = False
    extra: dict = field(default_factory=dict)

    def __post_init__(self):
        for name, allowed, what in ((self.scenarios, SUITE, "scenarios"), (self.methods, METHODS, "methods"),
                                    (self.ablation_scenarios or (), SUITE, "ablation scenarios")):
            bad = sorted(set(name) - set(allowed))
            if bad:
                raise DrivediffError(f"unknown {what} {bad}; choose from {sorted(allowed)}")
        for name, allowed, what in ((self.scenarios, SUITE, "scenario"), (self.methods, METHODS, "method")):
            if not name:  # an empty --scenarios / --methods would run ablations only, or nothing
                raise DrivediffError(f"no {what}s chosen; choose at least one of {', '.join(allowed)}")
        if self.episodes < 1:
            raise DrivediffError(f"episodes must be at least 1, got {self.episodes}")
        if self.ablation_episodes is not None and self.ablation_episodes < 0:
            raise DrivediffError(f"ablation episodes must be 0 (no ablations) or more, got {self.ablation_episodes}")

    def ablations(self) -> tuple[tuple[str, ...], int]:
        """(scenarios, episodes per cell) of the ablation cells; no scenarios when there are none."""
        n = min(self.episodes, ABLATION_EPISODES) if self.ablation_episodes is None else self.ablation_episodes
        if self.ablation_scenarios is None:
            scenarios = tuple(s for s in ABLATION_SCENARIOS if s in self.scenarios)
        else:
            scenarios = tuple(self.ablation_scenarios)
        return (scenarios if n > 0 else ()), n

    @classmethod
    def quick_config(cls, **kw) -> SafetyConfig:
        base = {"scenarios": ("merge", "cut-in"), "episodes": 2, "duration": 5.0, "sampling_steps": 4,
                "candidates": 2, "ablation_episodes": 1, "scales": (0.0, 1.0), "steps_sweep": (2,),
                "candidates_sweep": (1,), "layer_ablation": False, "ttc_every": 2, "quick": True}
        # quick ablations on cut-in only, and only when the run has it
        base["ablation_scenarios"] = tuple(s for s in ("cut-in",) if s in kw.get("scenarios", base["scenarios"]))
        return cls(**{**base, **kw})


# ------------------------------------------------------------------------------------------------ cells
def _cells(cfg: SafetyConfig) -> list[Cell]:
    """Every cell of the run. A cell's params hold everything its rows depend on and nothing else: a rerun in
    the same run folder reuses a finished cell exactly when they match (the expert's cells survive a change of
    the planner's settings), and cells that load the checkpoint record its digest (weights retrained in place)."""
    common = {"duration": cfg.duration, "ttc_every": cfg.ttc_every, "run_seed": cfg.seed}
    digest = {}

    def planner(method: str, **kw) -> dict:
        """The planner's settings of a cell of ``method`` (none for the expert); ``kw`` overrides them."""
        policy, _, layers = METHODS[method]
        if policy != "diffusion":
            return {}
        if "sha256" not in digest:
            digest["sha256"] = checkpoint_digest(cfg.checkpoint)
        out = {"checkpoint": cfg.checkpoint, "checkpoint_sha256": digest["sha256"], "replan_every": cfg.replan_every,
               "steps": cfg.sampling_steps, "candidates": cfg.candidates}
        if layers is not None:
            out["scale"] = cfg.scale
        return {**out, **kw}

    cells = []
    for sc in cfg.scenarios:
        for m in cfg.methods:
            cells.append(Cell(f"main-{sc}-{m}", {"scenario": sc, "method": m, "episodes": cfg.episodes,
                                                 "group": "main", **common, **planner(m)}))
    ablation_scenarios, ablation_episodes = cfg.ablations()
    for sc in ablation_scenarios:
        ab = {"scenario": sc, "episodes": ablation_episodes, **common}
        gc = {**ab, "method": "guided+corr"}
        for s in cfg.scales:
            cells.append(Cell(f"scale-{sc}-{s:g}", {**gc, **planner("guided+corr", scale=s), "group": "scale",
                                                    "value": s}))
        for n in cfg.steps_sweep:
            cells.append(Cell(f"steps-{sc}-{n}", {**gc, **planner("guided+corr", steps=n), "group": "steps",
                                                  "value": n}))
        for n in cfg.candidates_sweep:
            cells.append(Cell(f"candidates-{sc}-{n}", {**gc, **planner("guided+corr", candidates=n),
                                                       "group": "candidates", "value": n}))
        if cfg.layer_ablation:
            for layer in LAYERS:
                cells.append(Cell(f"layer-{sc}-no-{layer}", {**gc, **planner("guided+corr"), "off": layer,
                                                             "group": "layers", "value": f"no {layer}"}))
            cells.append(Cell(f"layer-{sc}-expert", {**ab, "method": "expert", "group": "layers", "value": "expert"}))
    return cells


def make_world(scenario: str, episodes: int, run_seed: int):
    """The suite scenario's batch of worlds, seeded by (run seed, scenario, episode) only."""
    from drivediff.sim import World

    name, overrides, _ = SUITE[scenario]
    world = World(name, num_worlds=episodes, overrides=overrides or None)
    base = cell_seed(run_seed, f"world-{scenario}")
    world.reset(seed=[base + k for k in range(episodes)])
    return world


def make_method(p: dict, seed: int, record: bool = False):
    from drivediff.agents import make_policy
    from drivediff.planner.guidance import GuidanceConfig
    from drivediff.planner.sampler import SamplerConfig

    policy, mode, layers = METHODS[p["method"]]
    if policy == "idm":
        return make_policy("idm")
    guidance = None
    if layers is not None:
        kw = dict(layers)
        if p.get("off"):
            kw[p["off"]] = False
        guidance = GuidanceConfig(scale=p["scale"], **kw)
    return make_policy("diffusion", checkpoint=p["checkpoint"], mode=mode, seed=seed, replan_every=p["replan_every"],
                       sampler=SamplerConfig(steps=p["steps"], candidates=p["candidates"]), guidance=guidance,
                       record=record)


def _rollout_cell(cell: Cell, seed: int, record_plans: bool = False):
    """A cell's episodes as one batch of worlds: (world, policy, recording, initial snapshot per world)."""
    from drivediff.agents.rollout import run_policy

    p = cell.params
    world = make_world(p["scenario"], p["episodes"], p["run_seed"])
    policy = make_method(p, seed, record=record_plans)
    policy.reset(world)
    initial = [world.snapshot(b) for b in range(world.num_worlds)]
    steps = int(round(min(p["duration"], world.config.duration) / world.dt))
    return world, policy, run_policy(world, policy, steps), initial


def safety_cell(cell: Cell, seed: int) -> list[dict]:
    """Run one cell: its episodes as a batch of worlds; one row per (episode, controlled vehicle)."""
    from drivediff.experiments.safety_metrics import vehicle_metrics

    p = cell.params
    world, policy, rec, _ = _rollout_cell(cell, seed)
    lanes = world.road.lane_speed
    agents = SUITE[p["scenario"]][2]
    lat = getattr(policy, "latencies", [])
    queries = getattr(policy, "queries", [])
    # planning cost per vehicle-plan: each replanning cycle plans for every controlled vehicle of every world
    per_plan = np.asarray([t / max(q, 1) for t, q in zip(lat, queries, strict=False)]) * 1000.0
    lat_row = {"latency_ms_mean": float(per_plan.mean()) if per_plan.size else float("nan"),
               "latency_ms_p95": float(np.percentile(per_plan, 95)) if per_plan.size else float("nan"),
               "fallbacks": int(getattr(policy, "fallbacks", 0))}
    rows = []
    for b in range(p["episodes"]):
        for slot in range(agents):
            m = vehicle_metrics(rec, b, slot, world.dt, lanes, p["ttc_every"])
            if m.get("steps", 0) == 0:
                continue
            rows.append({"scenario": p["scenario"], "method": p["method"], "group": p["group"],
                         "value": p.get("value", ""), "episode": b, "vehicle": slot, **m, **lat_row})
    return rows


def load_config(run_dir: Path) -> SafetyConfig:
    """The configuration a run folder was made with (its ``config.json``)."""
    from drivediff.experiments.runner import load_run_config

    return load_run_config(run_dir, SafetyConfig, "safety")


def episode_log(cfg: SafetyConfig, key: str, episode: int, path: Path) -> Path:
    """Rerun one cell of a run in this process and write one of its episodes as a log for the viewer (with
    the planner's plans, candidates and predictions). Cells are deterministic given the run seed and their
    key, so this is the episode the run measured: no worker ever ships episode logs."""
    from drivediff.agents.rollout import write_episode_log

    cell = find_cell(_cells(cfg), key, episode, "episodes")
    world, policy, rec, initial = _rollout_cell(cell, cell_seed(cfg.seed, key), record_plans=True)
    meta = {"experiment": "safety", "cell": key, "episode": episode, "method": cell.params["method"],
            "policy": METHODS[cell.params["method"]][0]}
    return write_episode_log(path, world, policy, rec, initial[episode], episode, meta)


# --------------------------------------------------------------------------------------------- summary
# 95% intervals over episodes. Rates of episodes (collision, off-road: yes or no per episode): Wilson score
# intervals, which stay in [0, 1] and are not [0, 0] when no episode had the event. Per-episode values:
# Student-t intervals, clipped to the range the quantity lives in (shares and scores in [0, 1], progress
# >= 0): clipping drops only values the quantity cannot take, so the coverage is the t-interval's, and with
# few episodes the t-quantile (12.7 at 2 episodes) keeps it honest where 1.96 standard errors were not
RATES = (("collision_rate", "collision"), ("offroad_rate", "offroad"))
PER_EPISODE = (("progress_m", "distance", 0.0, math.inf), ("progress_vs_expert", "progress_rel", 0.0, math.inf),
               ("comfort_violation_rate", "comfort", 0.0, 1.0), ("speed_limit_score", "speed_limit", 0.0, 1.0),
               ("score", "score", 0.0, 1.0), ("ttc_below_share", "ttc_share", 0.0, 1.0))
INTERVALS = ("Brackets: 95% intervals over episodes: Wilson score intervals for the collision and off-road rates "
             "(shares of episodes), Student-t intervals of the per-episode values for the other columns, clipped to "
             "the range of the quantity ([0, 1] for shares and scores; none from a single episode; zero width when "
             "every episode had the same value).")


def _episodes(rows: list[dict]) -> dict:
    """Group vehicle rows into episodes: (scenario, group, value, method, episode) -> rows."""
    out: dict = {}
    for r in rows:
        out.setdefault((r["scenario"], r["group"], str(r["value"]), r["method"], r["episode"]), []).append(r)
    return out


def summarize(rows: list[dict]) -> dict:
    """Per-cell aggregates with 95% intervals over episodes; the score is against the expert on the same
    episode (main group) or the main expert cell of the scenario (ablations)."""
    from drivediff.experiments.safety_metrics import nuplan_score

    expert = {}  # (scenario, episode, vehicle) -> distance
    for r in rows:
        if r["method"] == "expert":
            expert.setdefault((r["scenario"], r["episode"], r["vehicle"]), r["distance_m"])
    cells: dict = {}
    for (sc, group, value, method, ep), vs in _episodes(rows).items():
        key = f"{group}/{sc}/{method}" + (f"/{value}" if group != "main" else "")
        c = cells.setdefault(key, {"scenario": sc, "group": group, "method": method, "value": value, "eps": []})
        km = sum(v["distance_m"] for v in vs) / 1000.0
        scores = [nuplan_score(v, expert.get((sc, ep, v["vehicle"]), v["distance_m"])) for v in vs]
        rel = [v["distance_m"] / expert[(sc, ep, v["vehicle"])] for v in vs
               if expert.get((sc, ep, v["vehicle"]), 0) > 1e-6]
        c["eps"].append({
            "collision": any(v["collided"] for v in vs), "collisions": sum(v["collided"] for v in vs), "km": km,
            "offroad": any(v["offroad"] for v in vs),
            "offroad_steps": sum(v["offroad_steps"] for v in vs), "steps": sum(v["steps"] for v in vs),
            "ttc_below": sum(v["ttc_below"] for v in vs), "ttc_eval": sum(v["ttc_evaluated"] for v in vs),
            "min_ttc": min(v["min_ttc"] for v in vs), "distance": float(np.mean([v["distance_m"] for v in vs])),
            "progress_rel": float(np.mean(rel)) if rel else float("nan"),
            "comfort": float(np.mean([v["comfort_violation"] for v in vs])),
            "speed_limit": float(np.mean([v["speed_limit_score"] for v in vs])),
            "overspeed_steps": sum(v["overspeed_steps"] for v in vs), "live_steps": sum(v["live_steps"] for v in vs),
            "score": float(np.nanmean(scores)), "lat_mean": vs[0]["latency_ms_mean"],
            "lat_p95": vs[0]["latency_ms_p95"],
            "fallbacks": vs[0]["fallbacks"]})
    out = {}
    for key, c in cells.items():
        eps = c.pop("eps")
        km = sum(e["km"] for e in eps)
        steps = max(sum(e["steps"] for e in eps), 1)
        live = max(sum(e["live_steps"] for e in eps), 1)
        ttc_eval = max(sum(e["ttc_eval"] for e in eps), 1)
        m = {**c, "episodes": len(eps)}
        for e in eps:
            e["ttc_share"] = e["ttc_below"] / max(e["ttc_eval"], 1)
        for name, col in RATES:
            k = sum(bool(e[col]) for e in eps)
            m[name] = k / len(eps)
            m[name + "_ci95"] = list(wilson(k, len(eps)))
        for name, col, lo, hi in PER_EPISODE:
            mean, a, b = t_interval([e[col] for e in eps], lo, hi)
            m[name] = mean
            m[name + "_ci95"] = [a, b]
        m["collisions_per_1000km"] = 1000.0 * sum(e["collisions"] for e in eps) / km if km > 0 else float("nan")
        m["offroad_step_share"] = sum(e["offroad_steps"] for e in eps) / steps
        m["overspeed_step_share"] = sum(e["overspeed_steps"] for e in eps) / live
        m["ttc_below_share_pooled"] = sum(e["ttc_below"] for e in eps) / ttc_eval
        mins = np.array([e["min_ttc"] for e in eps])
        m["min_ttc_quantiles"] = {q: float(np.quantile(mins, q / 100)) for q in (5, 25, 50)}
        for name, col in (("latency_ms_mean", "lat_mean"), ("latency_ms_p95", "lat_p95")):
            lat = np.array([e[col] for e in eps], dtype=float)
            m[name] = float(lat[np.isfinite(lat)].mean()) if np.isfinite(lat).any() else float("nan")  # expert: none
        m["fallbacks"] = int(eps[0]["fallbacks"])
        out[key] = m
    return {"cells": out, "targets": targets(out)}


def _suite_mean(cells: dict, method: str, metric: str) -> float:
    vals = [c[metric] for c in cells.values() if c["group"] == "main" and c["method"] == method]
    return float(np.nanmean(vals)) if vals else float("nan")


def targets(cells: dict) -> dict:
    """The issue's targets, evaluated on the main suite (means over scenarios)."""
    g = {m: {k: _suite_mean(cells, m, k) for k in ("collision_rate", "progress_m", "score", "offroad_step_share",
                                                   "overspeed_step_share")} for m in METHODS}
    out = {"suite_means": g}
    un, gc, ex = g["unguided"], g["guided+corr"], g["expert"]
    if not math.isnan(un["collision_rate"]) and not math.isnan(gc["collision_rate"]):
        out["collision_ratio_guided_corr_vs_unguided"] = (gc["collision_rate"] / un["collision_rate"]
                                                          if un["collision_rate"] > 0 else float("nan"))
        out["collisions_at_most_one_fifth"] = bool(gc["collision_rate"] <= un["collision_rate"] / 5.0)
        out["progress_change_vs_unguided"] = gc["progress_m"] / un["progress_m"] - 1.0 if un["progress_m"] else None
        # "progress within 5% of unguided": safety may cost at most 5% of the progress. Unguided episodes end at
        # their first collision, so guided planning can make more progress; that is not counted against it
        out["progress_within_5pct"] = bool((out["progress_change_vs_unguided"] or 0.0) >= -0.05)
        if not math.isnan(ex["collision_rate"]):
            out["no_worse_than_expert"] = bool(gc["collision_rate"] <= ex["collision_rate"])
        out["offroad_step_share_le_1pct"] = bool(gc["offroad_step_share"] <= 0.01)
        out["overspeed_step_share_le_1pct"] = bool(gc["overspeed_step_share"] <= 0.01)
    cen, dec = g["guided+corr-cen"]["score"], gc["score"]
    if not (math.isnan(cen) or math.isnan(dec)) and cen > 0:
        out["decentralized_vs_centralized_score"] = dec / cen
        out["decentralized_within_10pct"] = bool(dec >= 0.9 * cen)
    return out


# ---------------------------------------------------------------------------------------------- output
METRIC_COLUMNS = (("collision_rate", "collision rate"), ("collisions_per_1000km", "coll./1000 veh-km"),
                  ("offroad_rate", "off-road rate"), ("ttc_below_share", "TTC<0.95 s share"),
                  ("progress_vs_expert", "progress vs expert"), ("comfort_violation_rate", "comfort viol."),
                  ("speed_limit_score", "speed-limit score"), ("score", "score"))


def _fmt(v, ci=None) -> str:
    """``v`` to about three significant digits (no decimals from 100 on, at most 3 unless it would print as
    zero), its interval to the same decimals: rounding to one grid keeps lo <= v <= hi, so the printed
    interval holds the printed value."""
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    d = 2 if v == 0 or not math.isfinite(v) else max(0, 2 - math.floor(math.log10(abs(v))))
    d = min(d, 3 if abs(v) >= 5e-4 else 6)  # at most 3 decimals, unless the value would print as 0.000
    s = f"{v:.{d}f}"
    if ci is not None and not any(math.isnan(x) for x in ci):
        s += f" [{ci[0]:.{d}f}, {ci[1]:.{d}f}]"
    return s


def _ablation_note(cfg: SafetyConfig) -> str:
    scenarios, episodes = cfg.ablations()
    if scenarios:
        return f"Ablations on {', '.join(scenarios)}, {episodes} episode{'s' if episodes > 1 else ''} per cell."
    if episodes == 0:
        return "No ablations (0 ablation episodes)."
    if cfg.ablation_scenarios is None:
        return f"No ablations (they run on {' and '.join(ABLATION_SCENARIOS)}, and this run has neither)."
    return "No ablations (no ablation scenarios)."


def report(metrics: dict, cfg: SafetyConfig) -> str:
    cells = metrics["cells"]
    lines = ["# Safety-guided planning evaluation", "",
             f"{cfg.episodes} episodes per cell, {cfg.duration:g} s (or the scenario's own length), "
             f"{cfg.sampling_steps} sampling steps, {cfg.candidates} candidates, guidance scale {cfg.scale:g}, "
             f"replanning every {cfg.replan_every:g} s. {_ablation_note(cfg)} {INTERVALS} Rates are shares "
             "of episodes in which any controlled vehicle collided / left the road; TTC is nuPlan's constant-velocity "
             "projection; latency is planning time per vehicle-plan (all plans of a cycle batched).", ""]
    head = ("| scenario | method | " + " | ".join(h for _, h in METRIC_COLUMNS)
            + " | min TTC p5 [s] | latency ms mean / p95 |")
    lines += [head, "|" + "---|" * (len(METRIC_COLUMNS) + 4)]
    for c in cells.values():
        if c["group"] != "main":
            continue
        vals = " | ".join(_fmt(c[k], c.get(k + "_ci95")) for k, _ in METRIC_COLUMNS)
        lat = "-" if math.isnan(c["latency_ms_mean"]) else f"{c['latency_ms_mean']:.1f} / {c['latency_ms_p95']:.1f}"
        lines.append(f"| {c['scenario']} | {c['method']} | {vals} | {c['min_ttc_quantiles'][5]:.2f} | {lat} |")
    t = metrics["targets"]
    lines += ["", "## Suite means and targets", "",
              "| method | collision rate | progress [m] | score | off-road steps | over-speed steps |",
              "|---|---|---|---|---|---|"]
    for m, g in t["suite_means"].items():
        if not math.isnan(g["collision_rate"]):
            lines.append(f"| {m} | {_fmt(g['collision_rate'])} | {_fmt(g['progress_m'])} | {_fmt(g['score'])} | "
                         f"{g['offroad_step_share']:.2%} | {g['overspeed_step_share']:.2%} |")
    lines += [""] + [f"- {k}: {v}" for k, v in t.items() if k != "suite_means"]
    for group, title in (("scale", "Guidance scale sweep"), ("steps", "Sampling steps"), ("candidates", "Candidates"),
                         ("layers", "Guidance layers")):
        sel = [c for c in cells.values() if c["group"] == group]
        if not sel:
            continue
        lines += ["", f"## Ablation: {title}", "",
                  "| scenario | setting | collision rate | off-road rate | progress [m] | score | latency ms mean |",
                  "|---|---|---|---|---|---|---|"]
        for c in sel:
            lines.append(f"| {c['scenario']} | {c['value']} | {_fmt(c['collision_rate'])} | "
                         f"{_fmt(c['offroad_rate'])} | {_fmt(c['progress_m'])} | {_fmt(c['score'])} | "
                         f"{_fmt(c['latency_ms_mean'])} |")
    return "\n".join(lines) + "\n"


def plots(metrics: dict, out: Path) -> list[Path]:
    """Bar charts per metric and method (main suite), and the guidance-scale curve of collisions vs progress."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cells = [c for c in metrics["cells"].values() if c["group"] == "main"]
    written = []
    scenarios = sorted({c["scenario"] for c in cells})
    methods = [m for m in METHODS if any(c["method"] == m for c in cells)]
    for key, label in METRIC_COLUMNS:
        fig, ax = plt.subplots(figsize=(max(6, 1.3 * len(scenarios)), 3.6))
        width = 0.8 / max(len(methods), 1)
        for k, m in enumerate(methods):
            ys = [next((c[key] for c in cells if c["scenario"] == s and c["method"] == m), np.nan) for s in scenarios]
            ax.bar(np.arange(len(scenarios)) + k * width, ys, width, label=m)
        ax.set_xticks(np.arange(len(scenarios)) + 0.4 - width / 2, scenarios)
        ax.set_ylabel(label)
        ax.legend(fontsize=7, ncol=3)
        ax.grid(axis="y", alpha=0.3)
        fig.tight_layout()
        path = out / "plots" / f"{key}.png"
        atomic_write(path, lambda fh, fig=fig: fig.savefig(fh, dpi=100, format="png"))
        plt.close(fig)
        written.append(path)
    scale = [c for c in metrics["cells"].values() if c["group"] == "scale"]
    if scale:
        fig, ax = plt.subplots(figsize=(5, 3.6))
        for sc in sorted({c["scenario"] for c in scale}):
            pts = sorted((float(c["value"]), c["progress_m"], c["collision_rate"])
                         for c in scale if c["scenario"] == sc)
            ax.plot([p[1] for p in pts], [p[2] for p in pts], "o-", label=sc)
            for s, x, y in pts:
                ax.annotate(f"{s:g}", (x, y), fontsize=7)
        ax.set_xlabel("progress per controlled vehicle [m]")
        ax.set_ylabel("collision rate")
        ax.set_title("guidance scale sweep")
        ax.legend(fontsize=7)
        ax.grid(alpha=0.3)
        fig.tight_layout()
        path = out / "plots" / "scale_sweep.png"
        atomic_write(path, lambda fh: fig.savefig(fh, dpi=100, format="png"))
        plt.close(fig)
        written.append(path)
    return written


def main(cfg: SafetyConfig, out: Path, workers: int = 1, backend: str = "local", progress=None,
         ray_address: str | None = None) -> dict:
    out = Path(out)
    check_backend(backend)  # the configuration was checked when it was made: nothing is written before both
    cells = _cells(cfg)
    write_json(out / "config.json", asdict(cfg))
    rows = run_cells(out, cells, safety_cell, cfg.seed, backend=backend, workers=workers, progress=progress,
                     ray_address=ray_address, context={"experiment": "safety"})
    if rows:
        fields = list(dict.fromkeys(k for r in rows for k in r))

        def write_csv(fh):
            w = csv.DictWriter(fh, fieldnames=fields)
            w.writeheader()
            w.writerows(rows)

        atomic_write(out / "episodes.csv", write_csv, binary=False)
    metrics = summarize(rows)
    write_json(out / "metrics.json", metrics)
    plots(metrics, out)
    atomic_write(out / "report.md", lambda fh: fh.write(report(metrics, cfg)), binary=False)
    return metrics


__all__ = ["SafetyConfig", "SUITE", "METHODS", "main", "summarize", "safety_cell", "episode_log"]
