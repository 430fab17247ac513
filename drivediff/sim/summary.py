"""Event counts and summary statistics of recorded rollouts (plain NumPy on (T, N) arrays)."""

from __future__ import annotations

import numpy as np


def onsets(flag: np.ndarray, valid: np.ndarray, initial: np.ndarray | None = None) -> np.ndarray:
    """(T, N) bool: True where ``flag`` switches on (from False, or from the slot becoming valid).

    ``initial`` (N,) is the flag before the first row (default False).
    """
    f = np.asarray(flag, bool) & np.asarray(valid, bool)
    prev = np.zeros_like(f)
    prev[1:] = f[:-1]
    if initial is not None:
        prev[0] = initial
    # a slot reused by a new vehicle starts fresh
    return f & ~prev


def episode_summary(arrays: dict[str, np.ndarray], dt: float) -> dict:
    """Counts and means of one episode: arrays are (T, N) log fields (``layout.LOG_FIELDS``)."""
    valid = arrays["valid"].astype(bool)
    vids = arrays["vid"][valid]
    coll_on = onsets(arrays["collided"], valid)
    off_on = onsets(arrays["offroad"], valid)
    ctrl = arrays["controlled"].astype(bool) & valid
    speed = arrays["speed"][valid]
    return {
        "steps": int(valid.shape[0]),
        "duration_s": float(valid.shape[0] * dt),
        "vehicles_max": int(valid.sum(axis=1).max()) if valid.size else 0,
        "vehicles_total": int(np.unique(vids).size),
        "collisions": int(coll_on.sum()),  # vehicles that collided (each counted once per crash)
        "controlled_collisions": int((coll_on & ctrl).sum()),
        "offroad_events": int(off_on.sum()),
        "offroad_vehicle_steps": int((arrays["offroad"].astype(bool) & valid).sum()),
        "mean_speed": float(speed.mean()) if speed.size else float("nan"),
        "distance_km": float(speed.sum() * dt / 1000.0),
    }
