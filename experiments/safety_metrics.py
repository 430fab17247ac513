"""Safety, comfort and progress metrics of controlled vehicles in a recorded episode (plain numpy).

Definitions follow nuPlan's closed-loop metrics (shared/REFERENCES.md, "Safety and planning metrics"):

* **TTC** (``projected_ttc``): both the controlled vehicle and every other vehicle are projected at
  constant velocity and heading every 0.1 s up to 3 s; the TTC is the first projection time at which the
  boxes overlap (3 s cap: "no conflict within 3 s"; 0: already overlapping). As in nuPlan, steps at which
  the controlled vehicle is (nearly) stopped do not count, and neither do vehicles behind it closing in
  (the rear-ender's TTC is the follower's problem): a conflict counts only if the other box's centre is
  ahead of the controlled vehicle's rear axle line at the time of overlap.
* **Comfort** (``comfort``): longitudinal acceleration in [-4.05, 2.40] m/s^2, |lateral acceleration| <
  4.89 m/s^2, |yaw rate| < 0.95 rad/s, |yaw acceleration| < 1.93 rad/s^2, |longitudinal jerk| < 4.13 m/s^3,
  |jerk| < 8.37 m/s^3, on signals smoothed with a Savitzky-Golay filter (nuPlan filters before it
  differentiates; window 15 steps, order 2 at 10 Hz) -- a vehicle violates comfort if any bound is
  exceeded at any step.
* **Speed-limit compliance**: 1 - integral of overspeed / (2.23 m/s x duration), clipped to [0, 1].
* **Score** (``nuplan_score``): gates (no collision, no off-road, progress >= 0.2 of the expert's) times the
  weighted mean of progress relative to the expert (5, capped at 1), TTC never below 0.95 s (5), speed-limit
  compliance (4) and comfort (2). nuPlan's "at-fault" collision and driving-direction gates are not
  modelled: every collision of a controlled vehicle counts.
"""

from __future__ import annotations

import numpy as np

from drivediff.sim.geometry import boxes_overlap

TTC_THRESHOLD = 0.95  # [s] nuPlan
TTC_HORIZON = 3.0  # [s]
TTC_STEP = 0.1  # [s]
STOPPED = 0.5  # [m/s] below this the controlled vehicle's TTC is not evaluated
COMFORT_BOUNDS = {  # nuPlan ego comfort bounds
    "lon_accel_min": -4.05, "lon_accel_max": 2.40, "lat_accel": 4.89, "yaw_rate": 0.95, "yaw_accel": 1.93,
    "lon_jerk": 4.13, "jerk": 8.37,
}
OVERSPEED_NORM = 2.23  # [m/s] nuPlan's speed-limit violation normaliser
SCORE_WEIGHTS = {"progress": 5.0, "ttc": 5.0, "speed_limit": 4.0, "comfort": 2.0}


def savgol_coefficients(window: int, order: int, deriv: int, dt: float) -> np.ndarray:
    """Savitzky-Golay convolution weights: the ``deriv``-th derivative of the local polynomial fit at the
    window centre (window odd)."""
    half = window // 2
    t = np.arange(-half, half + 1, dtype=np.float64)
    vander = np.vander(t, order + 1, increasing=True)  # (W, order+1)
    pinv = np.linalg.pinv(vander)  # (order+1, W)
    fact = float(np.prod(np.arange(1, deriv + 1))) if deriv else 1.0
    return pinv[deriv] * fact / dt ** deriv


def savgol(x: np.ndarray, dt: float, window: int = 15, order: int = 2, deriv: int = 0) -> np.ndarray:
    """Savitzky-Golay filter (or derivative) along axis 0; edges use the mirrored signal."""
    x = np.asarray(x, dtype=np.float64)
    n = x.shape[0]
    window = min(window, n if n % 2 else n - 1)
    if window < order + 2:
        return np.gradient(x, dt, axis=0) if deriv == 1 else (x if deriv == 0 else np.zeros_like(x))
    half = window // 2
    w = savgol_coefficients(window, order, deriv, dt)
    pad = np.concatenate([2 * x[:1] - x[half:0:-1], x, 2 * x[-1:] - x[-2:-half - 2:-1]], axis=0)
    out = np.zeros_like(x)
    for k in range(window):
        out += w[k] * pad[k:k + n]
    return out


def _unwrap(yaw: np.ndarray) -> np.ndarray:
    return np.unwrap(yaw, axis=0)


def comfort(speed: np.ndarray, accel: np.ndarray, yaw: np.ndarray, dt: float) -> dict:
    """Comfort signals and violations of one vehicle's (T,) trajectory (only its valid stretch)."""
    if speed.shape[0] < 3:
        return {"violation": False, **{f"max_{k}": 0.0 for k in ("lon_accel", "lat_accel", "yaw_rate", "yaw_accel",
                                                                 "lon_jerk", "jerk")}, "min_lon_accel": 0.0}
    yaw = _unwrap(yaw)
    v = savgol(speed, dt)
    lon = savgol(accel, dt)
    yaw_rate = savgol(yaw, dt, deriv=1)
    yaw_acc = savgol(yaw_rate, dt, deriv=1)
    lat = v * yaw_rate
    lon_jerk = savgol(lon, dt, deriv=1)
    lat_jerk = savgol(lat, dt, deriv=1)
    jerk = np.hypot(lon_jerk, lat_jerk)
    b = COMFORT_BOUNDS
    out = {"min_lon_accel": float(lon.min()), "max_lon_accel": float(lon.max()),
           "max_lat_accel": float(np.abs(lat).max()), "max_yaw_rate": float(np.abs(yaw_rate).max()),
           "max_yaw_accel": float(np.abs(yaw_acc).max()), "max_lon_jerk": float(np.abs(lon_jerk).max()),
           "max_jerk": float(jerk.max())}
    out["violation"] = bool(out["min_lon_accel"] < b["lon_accel_min"] or out["max_lon_accel"] > b["lon_accel_max"]
                            or out["max_lat_accel"] > b["lat_accel"] or out["max_yaw_rate"] > b["yaw_rate"]
                            or out["max_yaw_accel"] > b["yaw_accel"] or out["max_lon_jerk"] > b["lon_jerk"]
                            or out["max_jerk"] > b["jerk"])
    return out


def projected_ttc(rec: dict, b: int, slot: int, every: int = 1, horizon: float = TTC_HORIZON,
                  step: float = TTC_STEP, reach: float = 60.0) -> np.ndarray:
    """(T,) constant-velocity projected TTC [s] of vehicle ``slot`` in world ``b`` (``horizon`` when no
    conflict within it; NaN at steps where it is not evaluated: invalid or stopped). ``every``: evaluate
    every k-th step only (NaN elsewhere)."""
    x, y, yaw, v = (rec[k][b] for k in ("x", "y", "yaw", "speed"))
    ln, wd, valid = rec["length"][b], rec["width"][b], rec["valid"][b].astype(bool)
    t_n = x.shape[0]
    taus = np.arange(1, int(round(horizon / step)) + 1) * step
    out = np.full(t_n, np.nan)
    for t in range(0, t_n, every):
        if not valid[t, slot] or v[t, slot] < STOPPED:
            continue
        others = valid[t].copy()
        others[slot] = False
        d = np.hypot(x[t] - x[t, slot], y[t] - y[t, slot])
        others &= d < reach + v[t, slot] * horizon
        idx = np.nonzero(others)[0]
        if idx.size == 0:
            out[t] = horizon
            continue
        tt = np.concatenate([[0.0], taus])[:, None]  # (S, 1)
        ego = np.stack(np.broadcast_arrays(x[t, slot] + v[t, slot] * np.cos(yaw[t, slot]) * tt,
                                           y[t, slot] + v[t, slot] * np.sin(yaw[t, slot]) * tt,
                                           yaw[t, slot], ln[t, slot], wd[t, slot]), axis=-1)  # (S, 1, 5)
        oth = np.stack(np.broadcast_arrays(x[t, idx] + v[t, idx] * np.cos(yaw[t, idx]) * tt,
                                           y[t, idx] + v[t, idx] * np.sin(yaw[t, idx]) * tt,
                                           yaw[t, idx], ln[t, idx], wd[t, idx]), axis=-1)  # (S, M, 5)
        hit = boxes_overlap(ego, oth)  # (S, M)
        # only conflicts ahead: at the first overlap with a vehicle, its centre is in front of the controlled
        # vehicle's rear axle line
        ahead = ((oth[..., 0] - ego[..., 0]) * np.cos(yaw[t, slot]) + (oth[..., 1] - ego[..., 1])
                 * np.sin(yaw[t, slot])) > -0.25 * ln[t, slot]
        first = np.argmax(hit, axis=0)  # (M,)
        cols = np.arange(idx.size)
        counts = hit[first, cols] & ahead[first, cols]
        out[t] = float(tt[first[counts].min(), 0]) if counts.any() else horizon
    return out


def speed_limit_compliance(speed: np.ndarray, limit: np.ndarray, dt: float) -> tuple[float, float]:
    """(nuPlan compliance score in [0, 1], share of steps above the limit) of one vehicle's valid steps."""
    if speed.size == 0:
        return 1.0, 0.0
    over = np.maximum(speed - limit, 0.0)
    score = 1.0 - over.sum() * dt / (OVERSPEED_NORM * speed.size * dt)
    return float(np.clip(score, 0.0, 1.0)), float((over > 1e-3).mean())


def vehicle_metrics(rec: dict, b: int, slot: int, dt: float, lane_speed: np.ndarray, ttc_every: int = 1) -> dict:
    """Metrics of one controlled vehicle over its valid steps in world ``b``."""
    valid = rec["valid"][b][:, slot].astype(bool)
    n = int(valid.sum())
    if n == 0:
        return {"steps": 0}
    coll = rec["collided"][b][:, slot].astype(bool) & valid
    off = rec["offroad"][b][:, slot].astype(bool) & valid
    # while not collided: a vehicle stopped by a crash drives no further and its comfort is moot
    live = valid & ~np.maximum.accumulate(coll)
    speed = rec["speed"][b][:, slot]
    lane = rec["lane"][b][:, slot]
    limit = np.where(lane >= 0, lane_speed[np.maximum(lane, 0)], np.inf)
    ttc = projected_ttc(rec, b, slot, every=ttc_every)[live]
    evaluated = ttc[~np.isnan(ttc)]
    sl_score, over_share = speed_limit_compliance(speed[live], limit[live], dt)
    cm = comfort(speed[live], rec["accel"][b][:, slot][live], rec["yaw"][b][:, slot][live], dt)
    return {
        "steps": n, "collided": bool(coll.any()), "offroad": bool(off.any()), "offroad_steps": int(off.sum()),
        "distance_m": float(speed[live].sum() * dt), "mean_speed": float(speed[live].mean()) if live.any() else 0.0,
        "ttc_evaluated": int(evaluated.size), "ttc_below": int((evaluated < TTC_THRESHOLD).sum()),
        "min_ttc": float(evaluated.min()) if evaluated.size else TTC_HORIZON,
        "speed_limit_score": sl_score, "overspeed_steps": int(round(over_share * live.sum())),
        "live_steps": int(live.sum()),
        "comfort_violation": cm["violation"], "max_lat_accel": cm["max_lat_accel"], "max_jerk": cm["max_jerk"],
        "min_lon_accel": cm["min_lon_accel"],
    }


def nuplan_score(m: dict, expert_distance: float) -> float:
    """nuPlan-style score of one vehicle's metrics (``vehicle_metrics``) given the expert's distance on the
    same episode."""
    if m.get("steps", 0) == 0:
        return float("nan")
    ratio = m["distance_m"] / expert_distance if expert_distance > 1e-6 else 1.0
    gate = (not m["collided"]) and (not m["offroad"]) and ratio >= 0.2
    if not gate:
        return 0.0
    w = SCORE_WEIGHTS
    ttc_ok = 1.0 if m["ttc_below"] == 0 else 0.0
    parts = {"progress": min(ratio, 1.0), "ttc": ttc_ok, "speed_limit": m["speed_limit_score"],
             "comfort": 0.0 if m["comfort_violation"] else 1.0}
    return float(sum(w[k] * parts[k] for k in w) / sum(w.values()))


__all__ = ["comfort", "projected_ttc", "speed_limit_compliance", "vehicle_metrics", "nuplan_score", "savgol",
           "COMFORT_BOUNDS", "TTC_THRESHOLD"]
