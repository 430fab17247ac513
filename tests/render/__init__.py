"""Tests of drivediff.render, and their shared builders: a small road, hand-placed frames and a synthetic
episode log with known events and planner extras (no simulator, so no kernel compilation)."""

from __future__ import annotations

import numpy as np

from drivediff.sim import layout as L
from drivediff.sim.log import EpisodeLog
from drivediff.sim.road import LineType, Road, RoadBuilder, Straight

LANE_W = 4.0
DT = 0.1


def straight_road(length: float = 200.0, lanes: int = 2, junction_at: float | None = None) -> Road:
    """``lanes`` parallel eastbound lanes from x=0 to x=length, lane i centred on y = 4 i; optionally a
    20 m junction lane continuing lane 0 from x=length."""
    b = RoadBuilder()
    for i in range(lanes):
        b.add_lane(f"l{i}", Straight((0.0, i * LANE_W), (length, i * LANE_W)), width=LANE_W,
                   left_line=LineType.SOLID if i == lanes - 1 else LineType.DASHED,
                   right_line=LineType.SOLID if i == 0 else LineType.DASHED)
    for i in range(lanes - 1):
        b.neighbors(f"l{i + 1}", f"l{i}")
    if junction_at is not None:
        b.add_lane("j", Straight((length, 0.0), (length + 20.0, 0.0)), width=LANE_W, junction=True,
                   left_line=LineType.NONE, right_line=LineType.NONE)
        b.connect("l0", "j")
    return b.build()


def make_frame(vehicles: list[dict], num_slots: int | None = None) -> dict[str, np.ndarray]:
    """A frame from a list of vehicles (``x, y`` required; ``yaw``, ``length``, ``width``, ``speed``,
    ``controlled``, ``collided``, ``offroad`` optional); slots beyond the list are empty."""
    n = num_slots or len(vehicles)
    f = {k: np.zeros(n) for k in L.LOG_FLOATS}
    f.update({k: np.full(n, -1, np.int64) for k in L.LOG_INTS})
    f.update({k: np.zeros(n, bool) for k in L.LOG_FLAGS})
    f["length"][:], f["width"][:] = 5.0, 2.0
    f["gap"][:], f["ttc"][:] = np.inf, np.inf
    for i, v in enumerate(vehicles):
        f["valid"][i] = True
        f["vid"][i] = v.get("vid", i)
        for k, val in v.items():
            if k != "vid":
                f[k][i] = val
    return f


def synthetic_log(num_steps: int = 60, with_extras: bool = True) -> EpisodeLog:
    """Four slots on :func:`straight_road`, with known events.

    * slot 0: controlled, lane 0, from x=20 at 10 m/s; TTC 1.0 s at steps 25-29 (TTC event at 25);
    * slot 1: lane 0, from x=60 at 6 m/s; collided from step 30 on (collision event at 30);
    * slot 2: lane 1, from x=40 at 8 m/s; off-road at steps 40-44 (off-road event at 40);
    * slot 3: empty until step 20, then vehicle 7 on lane 1 from x=5 at 12 m/s.

    Planner extras (if asked): a plan, 3 candidates (costs 1, 5, 9; the cheapest chosen) and 2 predictions
    for slot 0 at every step.
    """
    t = np.arange(num_steps)
    n = 4
    a = {k: np.zeros((num_steps, n)) for k in L.LOG_FLOATS}
    a.update({k: np.full((num_steps, n), -1, np.int64) for k in L.LOG_INTS})
    a.update({k: np.zeros((num_steps, n), bool) for k in L.LOG_FLAGS})
    a["length"][:], a["width"][:] = 5.0, 2.0
    a["gap"][:], a["ttc"][:] = np.inf, np.inf
    for slot, (x0, v, lane) in enumerate([(20.0, 10.0, 0), (60.0, 6.0, 0), (40.0, 8.0, 1), (5.0, 12.0, 1)]):
        a["x"][:, slot] = x0 + v * DT * t
        a["y"][:, slot] = lane * LANE_W
        a["speed"][:, slot] = v
        a["lane"][:, slot] = lane
        a["vid"][:, slot] = slot
        a["valid"][:, slot] = True
    a["x"][:, 3] = 5.0 + 12.0 * DT * (t - 20)
    a["valid"][:20, 3] = False
    a["vid"][:20, 3] = -1
    a["vid"][20:, 3] = 7
    a["controlled"][:, 0] = True
    a["ttc"][25:30, 0] = 1.0
    a["gap"][:, 0] = a["x"][:, 1] - a["x"][:, 0] - 5.0
    a["leader"][:, 0] = 1
    a["collided"][30:, 1] = True
    a["offroad"][40:45, 2] = True
    log = EpisodeLog(t=t * DT, arrays=a, road=straight_road(), meta={"scenario": "synthetic", "dt": DT})
    if with_extras:
        log.extras.update(planner_extras(a))
    return log


def planner_extras(a: dict[str, np.ndarray], horizon: int = 8) -> dict[str, np.ndarray]:
    """Plans, candidates and predictions in the log-extras convention for slot 0 of :func:`synthetic_log`."""
    num_steps, n = a["x"].shape
    ahead = np.arange(1, horizon + 1) * 2.0  # 2 m apart
    x0, y0 = a["x"][:, 0], a["y"][:, 0]
    plans = np.zeros((num_steps, n, horizon, 2))
    plans[:, 0, :, 0] = x0[:, None] + ahead
    plans[:, 0, :, 1] = y0[:, None]
    plans_valid = np.zeros((num_steps, n), bool)
    plans_valid[:, 0] = True
    cands = np.zeros((num_steps, n, 3, horizon, 2))
    for c, dy in enumerate((0.0, 1.5, -1.5)):
        cands[:, 0, c, :, 0] = x0[:, None] + ahead
        cands[:, 0, c, :, 1] = y0[:, None] + dy * ahead / ahead[-1]
    costs = np.zeros((num_steps, n, 3))
    costs[:, 0] = (1.0, 5.0, 9.0)
    chosen = np.full((num_steps, n), -1, np.int64)
    chosen[:, 0] = 0
    preds = np.full((num_steps, n, 2, horizon, 2), np.nan)
    preds[:, 0, 0, :, 0] = a["x"][:, 1][:, None] + ahead
    preds[:, 0, 0, :, 1] = a["y"][:, 1][:, None]
    pred_valid = np.zeros((num_steps, n, 2), bool)
    pred_valid[:, 0, 0] = True
    return {"plans": plans, "plans_valid": plans_valid, "candidates": cands, "candidate_costs": costs,
            "candidate_chosen": chosen, "predictions": preds, "predictions_valid": pred_valid}
