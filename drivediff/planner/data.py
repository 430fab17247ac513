"""Training data: expert traffic rolled out in the simulator, cut into ego-centric windows.

``collect`` runs IDM/MOBIL traffic (driver parameters randomised per vehicle) on catalog scenarios and
writes one shard per (scenario, episode): for every sampled focal vehicle and time, the query tensors of
``drivediff.planner.features`` plus the future of every agent token over the horizon:

================  ======================  ===================================================
fut_ctrl          (M, A, H, 2) float32    acceleration, lateral acceleration [m/s^2] per planner step
fut_mask          (M, A, H) bool          the agent exists (same vehicle) at that future step
fut_xy            (M, A, H, 2) float32    future positions in the focal frame [m]
================  ======================  ===================================================

Shards are written atomically; one already present is kept when it was made with the same settings
(``shard_state``), so an interrupted collection resumes.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import zipfile
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from drivediff.errors import DrivediffError
from drivediff.io import atomic_write
from drivediff.planner.config import PlannerConfig
from drivediff.planner.features import SNAPSHOT_FIELDS, LaneIndex, _to_frame, build_queries

DEFAULT_SCENARIOS = ("highway", "merge", "intersection", "roundabout", "cut-in", "lead-braking")
WINDOW_KEYS = ("agent_feat", "agent_mask", "agent_slot", "agent_state", "lane_feat", "lane_mask", "fut_ctrl",
               "fut_mask", "fut_xy")


def substeps(sim_dt: float, plan_dt: float) -> int:
    """Simulator steps per planner step; the ratio must be an integer."""
    m = plan_dt / sim_dt
    if abs(m - round(m)) > 1e-6 or round(m) < 1:
        raise DrivediffError(f"the planner step {plan_dt} s is not a whole number of simulator steps of {sim_dt} s")
    return int(round(m))


def randomize_drivers(world, rng: np.random.Generator) -> None:
    """Randomise the IDM/MOBIL parameters of every vehicle (expert diversity for training)."""
    st = world.state
    shape = st.v0.shape
    st.v0[:] *= rng.uniform(0.85, 1.15, shape)
    st.time_gap[:] *= rng.uniform(0.7, 1.3, shape)
    st.a_comf[:] *= rng.uniform(0.7, 1.2, shape)
    st.politeness[:] = rng.uniform(0.0, 0.5, shape)


def perturb(world, rng: np.random.Generator, prob: float, max_offset: float = 1.5, max_heading: float = 0.06):
    """Displace random vehicles sideways and turn them a little (DART-style noise injection): their
    lane-tracking controller then demonstrates the recovery the planner must learn, which expert data
    without perturbations never shows. Vehicles in junctions, changing lanes or with a vehicle close beside
    them are left alone. Returns the (B, N) mask of displaced vehicles and their lateral offsets [m] and
    heading changes [rad] (zero elsewhere)."""
    st = world.state
    pick = st.valid & ~st.collided & (rng.random(st.valid.shape) < prob) & (st.lane >= 0) & (st.speed > 5.0)
    pick &= st.target_lane == st.lane
    junction = np.asarray(world.road.junction)[np.maximum(st.lane, 0)]
    pick &= ~junction
    offset = np.zeros(st.valid.shape)
    dyaw = np.zeros(st.valid.shape)
    for b, i in zip(*np.nonzero(pick), strict=True):
        near = np.hypot(st.x[b] - st.x[b, i], st.y[b] - st.y[b, i]) < 8.0
        near[i] = False
        if (near & st.valid[b]).any():
            pick[b, i] = False
            continue
        offset[b, i] = rng.uniform(-max_offset, max_offset)
        dyaw[b, i] = rng.uniform(-max_heading, max_heading)
        st.x[b, i] -= offset[b, i] * np.sin(st.yaw[b, i])
        st.y[b, i] += offset[b, i] * np.cos(st.yaw[b, i])
        st.yaw[b, i] += dyaw[b, i]
    world.refresh()
    return pick, offset, dyaw


def rewrite_drift_history(rec: dict, at: int, moved: np.ndarray, offset: np.ndarray, dyaw: np.ndarray, span: int,
                          dt: float) -> None:
    """Make a displacement look like a slow drift in the record. Index ``at`` is the recorded state at the
    moment of the displacement; it becomes the displaced state itself, and the ``span`` steps before it the
    path the vehicle would have followed had it been drifting at the heading error ``dyaw`` to arrive at
    ``offset`` (heading turned by ``dyaw`` throughout). A window starting at ``at`` then sees exactly the
    state the expert recovered from, with the past of a vehicle that drifted off its lane centre -- what the
    planner meets in closed loop -- instead of a jump. ``rec["jump"]`` flags (in place) both ends of the
    rewritten stretch, so that no window's future runs through it."""
    lo = max(at - span, 0)
    for b, i in zip(*np.nonzero(moved), strict=True):
        r = np.arange(lo, at + 1)
        yaw = rec["yaw"][b, r, i]
        lateral = offset[b, i] - (at - r) * dt * rec["speed"][b, r, i] * np.sin(dyaw[b, i])
        rec["x"][b, r, i] -= lateral * np.sin(yaw)
        rec["y"][b, r, i] += lateral * np.cos(yaw)
        rec["yaw"][b, r, i] = yaw + dyaw[b, i]
        rec["jump"][b, lo, i] = True
        rec["jump"][b, at, i] = True


def to_plan_steps(rec: dict, initial: dict, m: int) -> dict:
    """Recording (T, N) arrays at simulator resolution (plus the initial state) -> planner resolution.

    States are taken every m steps; the control of planner step k is the mean realised acceleration and
    steering over the m simulator steps from planner time k to k+1.
    """
    full = {k: np.concatenate([initial[k], rec[k]], axis=0) for k in SNAPSHOT_FIELDS}
    t = full["x"].shape[0]
    n_plan = (t - 1) // m + 1
    idx = np.arange(n_plan) * m
    track = {k: full[k][idx] for k in SNAPSHOT_FIELDS}
    # a flagged record (a displaced state, see rewrite_drift_history) shows at the planner step that contains it
    jump = np.concatenate([np.zeros_like(initial["x"], dtype=bool), rec.get("jump", np.zeros_like(rec["x"], bool))])
    track["jump"] = np.zeros((n_plan,) + jump.shape[1:], dtype=bool)
    for k in range(1, n_plan):
        track["jump"][k] = jump[(k - 1) * m + 1:k * m + 1].any(axis=0)
    acc = full["accel"][1:1 + (n_plan - 1) * m].reshape(n_plan - 1, m, -1).mean(axis=1)
    # lateral acceleration: mean speed x mean yaw rate over the planner step (v^2 x path curvature)
    dt_plan = plan_dt_of(rec, m)
    yaw_rate = _wrap(np.diff(track["yaw"], axis=0)) / dt_plan
    v_mid = 0.5 * (track["speed"][1:] + track["speed"][:-1])
    track["ctrl"] = np.stack([acc, v_mid * yaw_rate], axis=-1)  # (T'-1, N, 2)
    return track


def plan_dt_of(rec: dict, m: int) -> float:
    t = np.asarray(rec["t"]) if "t" in rec else None
    if t is None or len(t) < 2:
        raise DrivediffError("the recording needs its time axis 't'")
    return float(t[1] - t[0]) * m


def _wrap(a):
    return (a + np.pi) % (2 * np.pi) - np.pi


def windows_from_track(track: dict, lanes: LaneIndex, cfg: PlannerConfig, rng: np.random.Generator,
                       stride: int = 2, max_focal: int = 6) -> dict | None:
    """Training windows from one world's planner-resolution track."""
    hp, h = cfg.history, cfg.horizon
    n_t = track["x"].shape[0]
    out = {k: [] for k in WINDOW_KEYS}
    # every planner step at which vehicles were displaced is used (their recoveries are the rare, valuable
    # demonstrations), besides every ``stride``-th step
    ticks = sorted(set(range(hp, n_t - h, stride)) | {t for t in np.nonzero(track["jump"].any(axis=1))[0]
                                                      if hp <= t < n_t - h})
    for tau in ticks:
        snaps = {k: track[k][tau - hp:tau + 1] for k in SNAPSHOT_FIELDS}
        vid = track["vid"][tau]
        valid = track["valid"][tau].astype(bool)
        fut_vid = track["vid"][tau:tau + h + 1]
        whole = valid & (track["valid"][tau:tau + h + 1].astype(bool) & (fut_vid == vid)).all(axis=0)
        whole &= ~track["jump"][tau + 1:tau + h + 1].any(axis=0)  # no displacement inside the focal's future
        cand = np.nonzero(whole)[0]
        if cand.size == 0:
            continue
        displaced = cand[track["jump"][tau][cand]]  # just displaced: always a focal vehicle
        rest = cand[~track["jump"][tau][cand]]
        k = max(min(max_focal, cand.size) - displaced.size, 0)
        focal = np.concatenate([displaced[:max_focal], rng.choice(rest, size=min(k, rest.size), replace=False)])
        q = build_queries(snaps, focal, lanes, cfg)
        slots = q["agent_slot"]
        take = np.where(slots >= 0, slots, 0)
        ctrl = track["ctrl"][tau:tau + h][:, take]  # (H, Q, A, 2)
        fut_ok = (track["valid"][tau + 1:tau + h + 1][:, take].astype(bool)
                  & (track["vid"][tau + 1:tau + h + 1][:, take] == track["vid"][tau][take][None])
                  & q["agent_mask"][None])
        fut_ok &= ~np.cumsum(track["jump"][tau + 1:tau + h + 1][:, take], axis=0).astype(bool)
        fx, fy = _to_frame(np.moveaxis(track["x"][tau + 1:tau + h + 1][:, take], 0, -1),
                           np.moveaxis(track["y"][tau + 1:tau + h + 1][:, take], 0, -1), q["frame"])
        out["fut_ctrl"].append(np.moveaxis(ctrl, 0, 2).astype(np.float32))
        out["fut_mask"].append(np.moveaxis(fut_ok, 0, 2))
        out["fut_xy"].append(np.stack([fx, fy], axis=-1).astype(np.float32))
        for k in ("agent_feat", "agent_mask", "agent_slot", "agent_state", "lane_feat", "lane_mask"):
            out[k].append(q[k])
    if not out["fut_ctrl"]:
        return None
    return {k: np.concatenate(v, axis=0) for k, v in out.items()}


def collect_episode(scenario: str, seed: int, cfg: PlannerConfig, num_worlds: int = 4, duration: float | None = None,
                    perturb_prob: float = 0.2, perturb_every: float = 1.0) -> dict | None:
    """Roll out ``num_worlds`` worlds of expert traffic (with DART-style displacements every
    ``perturb_every`` seconds, each vehicle with probability ``perturb_prob``) and cut them into windows."""
    from drivediff.sim import World

    world = World(scenario, num_worlds=num_worlds)
    m = substeps(world.dt, cfg.plan_dt)
    world.reset(seed=seed * num_worlds)
    rng = np.random.default_rng(seed + 7919)
    randomize_drivers(world, rng)
    world.refresh()
    initial = {k: getattr(world.state, k)[:, None].copy() for k in SNAPSHOT_FIELDS}
    steps = int(round((duration or world.config.duration) / world.dt))
    steps -= steps % m
    chunk = max(m, int(round(perturb_every / world.dt)) // m * m)
    parts, events, done = [], [], 0
    while done < steps:
        n = min(chunk, steps - done)
        part = world.run(n, record=True)
        parts.append(part)
        done += n
        if perturb_prob > 0 and done < steps:
            events.append((done, *perturb(world, rng, perturb_prob)))
    rec = {k: np.concatenate([p[k] for p in parts], axis=1) for k in parts[0] if k != "t"}
    rec["t"] = np.concatenate([p["t"] for p in parts])
    rec["jump"] = np.zeros_like(rec["valid"])
    for done_at, moved, offset, dyaw in events:  # recorded index done_at - 1 is the state that was displaced
        rewrite_drift_history(rec, done_at - 1, moved, offset, dyaw, cfg.history * m, world.dt)
    lanes = LaneIndex.from_road(world.road)
    parts = []
    for b in range(num_worlds):
        world_rec = {k: (rec[k] if k == "t" else rec[k][b]) for k in rec}
        track = to_plan_steps(world_rec, {k: v[b] for k, v in initial.items()}, m)
        w = windows_from_track(track, lanes, cfg, rng)
        if w is not None:
            parts.append(w)
    if not parts:
        return None
    return {k: np.concatenate([p[k] for p in parts], axis=0) for k in WINDOW_KEYS}


def shard_path(out: Path, scenario: str, episode: int) -> Path:
    return Path(out) / f"{Path(scenario).stem}-{episode:05d}.npz"


def save_shard(path: Path, windows: dict, meta: dict) -> None:
    extra = {f"meta_{k}": np.array(v) for k, v in meta.items()}
    atomic_write(path, lambda fh: np.savez_compressed(fh, **windows, **extra))


def shard_meta(scenario, episode: int, seed: int, num_worlds: int, cfg: PlannerConfig) -> dict:
    """What determines a shard's windows, stored in it (``meta_*`` arrays) and checked when a collection
    resumes: the planner configuration as a digest of its fields."""
    digest = hashlib.sha256(json.dumps(dataclasses.asdict(cfg), sort_keys=True).encode()).hexdigest()[:16]
    return {"scenario": str(scenario), "episode": int(episode), "seed": int(seed), "num_worlds": int(num_worlds),
            "config": digest}


def shard_state(path: Path, meta: dict) -> bool | None:
    """None: no shard at ``path``; True: a shard made with ``meta``; False: one made with other settings, or
    unreadable (to be redone). Shards from before the worlds and the configuration were recorded are judged
    on what they record."""
    if not path.exists():
        return None
    try:
        with np.load(path, allow_pickle=False) as z:
            stored = {k[len("meta_"):]: z[k].item() for k in z.files if k.startswith("meta_")}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError):
        return False
    return "seed" in stored and all(stored[k] == v for k, v in meta.items() if k in stored)


def collect(scenarios: Sequence[str], episodes: int, out: Path, cfg: PlannerConfig | None = None, seed: int = 0,
            num_worlds: int = 4, progress: Callable[[int, int, str], None] | None = None) -> list[Path]:
    """Write ``episodes`` shards per scenario into ``out`` (keeping shards already there that were made with
    the same settings, ``shard_state``)."""
    cfg = cfg or PlannerConfig()
    out = Path(out)
    written = []
    jobs = [(sc, e) for sc in scenarios for e in range(episodes)]
    for done, (sc, e) in enumerate(jobs):
        path = shard_path(out, sc, e)
        meta = shard_meta(sc, e, seed, num_worlds, cfg)
        if not shard_state(path, meta):
            windows = collect_episode(sc, seed * 100_003 + e, cfg, num_worlds)
            if windows is not None:
                save_shard(path, windows, meta)
            else:  # no windows with these settings: a shard made with others must not stay
                path.unlink(missing_ok=True)
        if path.exists():
            written.append(path)
        if progress is not None:
            progress(done + 1, len(jobs), str(sc))
    return written


def shard_files(data_dir: Path) -> list[Path]:
    """The shards of a collection (``*.npz`` in ``data_dir``); an error when there are none."""
    files = sorted(Path(data_dir).glob("*.npz"))
    if not files:
        raise DrivediffError(f"no training shards (*.npz) in {data_dir}: run `drivediff collect` first")
    return files


def load_shards(data_dir: Path, max_windows: int | None = None) -> dict:
    """Concatenate every shard of a collection (``*.npz`` in ``data_dir``)."""
    files = shard_files(data_dir)
    parts = []
    for f in files:
        try:
            with np.load(f, allow_pickle=False) as z:
                parts.append({k: z[k] for k in WINDOW_KEYS})
        except (OSError, ValueError, KeyError) as e:
            raise DrivediffError(f"{f}: not a readable training shard ({e})") from None
    data = {k: np.concatenate([p[k] for p in parts], axis=0) for k in WINDOW_KEYS}
    if max_windows is not None and len(data["fut_ctrl"]) > max_windows:
        idx = np.random.default_rng(0).choice(len(data["fut_ctrl"]), max_windows, replace=False)
        data = {k: v[idx] for k, v in data.items()}
    return data
