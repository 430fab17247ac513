"""What the viewer and the exporter show of an episode log: frames, trails, planner overlays, events.

:class:`LogScene` wraps an :class:`~drivediff.sim.log.EpisodeLog` and answers, per step ``k``: the
frame (:meth:`LogScene.frame`), the history trails (:meth:`LogScene.trails`), the planner overlays read
from the log's extras (:meth:`LogScene.overlays`), and the episode's events (collisions, off-road
events, TTC violations) for the timeline.

Planner extras (all optional; written by the planner into ``EpisodeLog.extras``):

=====================  ===================  ================================================
name                   shape                meaning
=====================  ===================  ================================================
``plans``              (T, N, H, 2)         world xy of each vehicle's executed plan [m]
``plans_valid``        (T, N) bool          which plans exist (default: finite ones)
``candidates``         (T, N, C, H, 2)      the sampler's candidate plans [m]
``candidate_costs``    (T, N, C)            their costs (default: 0)
``candidate_chosen``   (T, N) int           index of the chosen candidate (-1: none)
``predictions``        (T, N, M, H, 2)      predicted neighbour trajectories [m]
``predictions_valid``  (T, N, M) bool       which predictions exist (default: finite ones)
=====================  ===================  ================================================

:class:`TrailBuffer` keeps the same trails for a live simulation, one step at a time.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from drivediff.errors import LogError
from drivediff.render.renderer import FRAME_FIELDS
from drivediff.sim.log import EpisodeLog

__all__ = ["Event", "LogScene", "TrailBuffer", "TTC_THRESHOLD", "TRAIL_SECONDS"]

TTC_THRESHOLD = 1.5  # [s] a TTC below this is a violation
TRAIL_SECONDS = 3.0  # [s] of history drawn as trails
EVENT_KINDS = ("collision", "offroad", "ttc")


@dataclass(frozen=True)
class Event:
    """Something worth jumping to: a vehicle starts colliding, leaves the road or falls below the TTC
    threshold at ``step``."""

    step: int
    kind: str  # one of EVENT_KINDS
    slot: int
    vid: int


def _onsets(flag: np.ndarray, valid: np.ndarray, vid: np.ndarray) -> np.ndarray:
    """(T, N) True where a flag switches on for a vehicle (a slot taken over by a new vehicle starts anew)."""
    f = flag & valid
    prev = np.zeros_like(f)
    prev[1:] = f[:-1] & (vid[1:] == vid[:-1])
    return f & ~prev


class LogScene:
    """An episode log prepared for display.

    Args:
        log: the episode log.
        ttc_threshold: TTC below which a step counts as a violation [s].
        trail_seconds: history shown as trails [s].

    Raises:
        LogError: the log has no steps, or its planner extras have inconsistent shapes.
    """

    def __init__(self, log: EpisodeLog, ttc_threshold: float = TTC_THRESHOLD, trail_seconds: float = TRAIL_SECONDS):
        if log.num_steps == 0:
            raise LogError("the log has no steps")
        self.log = log
        self.road = log.road
        self.t = np.asarray(log.t, dtype=np.float64)
        self.dt = _log_dt(log)
        self.arrays = {k: np.asarray(v) for k, v in log.arrays.items()}
        self.valid = self.arrays["valid"].astype(bool)
        self.trail_len = max(2, int(round(trail_seconds / self.dt)) + 1)
        self.extras = _check_extras(log.extras, self.num_steps, self.num_slots)
        self.events = _find_events(self.arrays, ttc_threshold)

    @property
    def num_steps(self) -> int:
        return int(self.t.shape[0])

    @property
    def num_slots(self) -> int:
        return int(self.arrays["x"].shape[1])

    @property
    def has_planner_data(self) -> bool:
        return bool(self.extras)

    def clamp(self, k: int) -> int:
        return int(min(max(int(k), 0), self.num_steps - 1))

    def frame(self, k: int) -> dict[str, np.ndarray]:
        """Every log field at step ``k``, each (N,)."""
        return {name: a[k] for name, a in self.arrays.items()}

    def trails(self, k: int) -> tuple[np.ndarray, np.ndarray]:
        """History up to step ``k``: (N, K, 2) positions [m], oldest first, and an (N, K) mask of points that
        belong to the vehicle now in the slot."""
        k0 = max(0, k - self.trail_len + 1)
        xy = np.stack([self.arrays["x"][k0:k + 1], self.arrays["y"][k0:k + 1]], axis=-1).transpose(1, 0, 2)
        vid = self.arrays["vid"]
        mask = (self.valid[k0:k + 1] & (vid[k0:k + 1] == vid[k][None, :])).T
        return xy, mask

    def overlays(self, k: int) -> dict:
        """Planner overlays of step ``k`` in :func:`~drivediff.render.render_frame`'s format."""
        e, out = self.extras, {}
        valid = self.valid[k]
        if "plans" in e:
            ok = e["plans_valid"][k] & valid
            out["plans"] = {int(i): e["plans"][k, i] for i in np.flatnonzero(ok)}
        if "candidates" in e:
            ok = e["candidates_valid"][k] & valid
            out["candidates"] = {int(i): (e["candidates"][k, i], e["candidate_costs"][k, i],
                                          int(e["candidate_chosen"][k, i])) for i in np.flatnonzero(ok)}
        if "predictions" in e:
            pv = e["predictions_valid"][k]
            ok = pv.any(axis=1) & valid
            out["predictions"] = {int(i): e["predictions"][k, i][pv[i]] for i in np.flatnonzero(ok)}
        return out

    def next_event(self, k: int, direction: int = 1) -> Event | None:
        """The first event strictly after (direction=1) or before (-1) step ``k``."""
        if direction > 0:
            later = [e for e in self.events if e.step > k]
            return later[0] if later else None
        earlier = [e for e in self.events if e.step < k]
        return earlier[-1] if earlier else None

    def slot_of(self, vid: int, k: int) -> int | None:
        """The slot of vehicle ``vid`` at step ``k`` (None if it is not on the road then)."""
        hit = np.flatnonzero((self.arrays["vid"][k] == vid) & self.valid[k])
        return int(hit[0]) if hit.size else None


def _log_dt(log: EpisodeLog) -> float:
    dt = log.meta.get("dt")
    if isinstance(dt, int | float) and dt > 0:
        return float(dt)
    d = np.diff(np.asarray(log.t, float))
    d = d[d > 0]
    return float(np.median(d)) if d.size else 0.1


def _find_events(a: dict[str, np.ndarray], ttc_threshold: float) -> list[Event]:
    valid, vid = a["valid"].astype(bool), a["vid"]
    flags = {
        "collision": a["collided"].astype(bool),
        "offroad": a["offroad"].astype(bool),
        "ttc": np.isfinite(a["ttc"]) & (a["ttc"] < ttc_threshold) & (a["ttc"] >= 0) & ~a["collided"].astype(bool),
    }
    events = []
    for kind in EVENT_KINDS:
        steps, slots = np.nonzero(_onsets(flags[kind], valid, vid))
        events += [Event(int(t), kind, int(i), int(vid[t, i])) for t, i in zip(steps, slots, strict=True)]
    rank = {k: r for r, k in enumerate(EVENT_KINDS)}
    return sorted(events, key=lambda e: (e.step, rank[e.kind], e.slot))


# ------------------------------------------------------------------------------------------ planner extras


def _expect(extras: dict, name: str, shape: tuple, what: str) -> np.ndarray:
    """An extra array checked against ``shape`` (None entries are free)."""
    a = np.asarray(extras[name])
    if a.ndim != len(shape) or any(s is not None and s != d for s, d in zip(shape, a.shape, strict=True)):
        want = "(" + ", ".join("?" if s is None else str(s) for s in shape) + ")"
        raise LogError(f"log extra '{name}' has shape {a.shape}; expected {want} ({what})")
    return a


def _check_extras(extras: dict, t: int, n: int) -> dict[str, np.ndarray]:
    """The planner extras in canonical form (masks filled in, non-finite entries masked out)."""
    out: dict[str, np.ndarray] = {}
    if "plans" in extras:
        p = _expect(extras, "plans", (t, n, None, 2), "T, N, horizon, xy").astype(np.float64)
        ok = np.isfinite(p).all(axis=(2, 3))
        if "plans_valid" in extras:
            ok &= _expect(extras, "plans_valid", (t, n), "T, N").astype(bool)
        out.update(plans=p, plans_valid=ok)
    if "candidates" in extras:
        c = _expect(extras, "candidates", (t, n, None, None, 2), "T, N, candidates, horizon, xy").astype(np.float64)
        nc = c.shape[2]
        costs = (_expect(extras, "candidate_costs", (t, n, nc), "T, N, candidates").astype(np.float64)
                 if "candidate_costs" in extras else np.zeros((t, n, nc)))
        chosen = (_expect(extras, "candidate_chosen", (t, n), "T, N").astype(np.int64)
                  if "candidate_chosen" in extras else np.full((t, n), -1, np.int64))
        out.update(candidates=c, candidate_costs=costs, candidate_chosen=chosen,
                   candidates_valid=np.isfinite(c).all(axis=(3, 4)).any(axis=2))
    if "predictions" in extras:
        p = _expect(extras, "predictions", (t, n, None, None, 2), "T, N, modes, horizon, xy").astype(np.float64)
        ok = np.isfinite(p).all(axis=(3, 4))
        if "predictions_valid" in extras:
            ok &= _expect(extras, "predictions_valid", (t, n, p.shape[2]), "T, N, modes").astype(bool)
        out.update(predictions=p, predictions_valid=ok)
    return out


# ------------------------------------------------------------------------------------------------ trails


class TrailBuffer:
    """Recent positions of every vehicle slot of a live world, for the ``trails`` overlay.

    Args:
        num_slots: N.
        length: K, points kept per slot (the current position included).
    """

    def __init__(self, num_slots: int, length: int = 31):
        self.length = int(length)
        self._xy = np.zeros((self.length, num_slots, 2))
        self._vid = np.full((self.length, num_slots), -1, dtype=np.int64)
        self._valid = np.zeros((self.length, num_slots), dtype=bool)
        self._count = 0

    def push(self, frame: dict[str, np.ndarray]) -> None:
        """Append one step (``x, y, valid, vid`` of a frame, each (N,))."""
        i = self._count % self.length
        self._xy[i, :, 0] = frame["x"]
        self._xy[i, :, 1] = frame["y"]
        self._vid[i] = frame["vid"]
        self._valid[i] = frame["valid"]
        self._count += 1

    def get(self) -> tuple[np.ndarray, np.ndarray]:
        """(N, K, 2) positions, oldest first, and the (N, K) mask of points of the slot's current vehicle."""
        k = min(self._count, self.length)
        order = (np.arange(self._count - k, self._count) % self.length) if k else np.zeros(0, np.int64)
        xy, vid, valid = self._xy[order], self._vid[order], self._valid[order]
        mask = valid & (vid == vid[-1][None, :]) if k else valid
        return xy.transpose(1, 0, 2), mask.T

    def clear(self) -> None:
        self._count = 0


def frame_of(arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The renderer's fields of a dict of (N,) arrays (a step of a log or a world's state)."""
    return {k: arrays[k] for k in FRAME_FIELDS}
