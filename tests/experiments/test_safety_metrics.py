"""Safety metrics against closed-form cases and shapely."""

import numpy as np
import pytest
import shapely

from drivediff.experiments.safety_metrics import (
    comfort,
    nuplan_score,
    projected_ttc,
    savgol,
    speed_limit_compliance,
    vehicle_metrics,
)


def test_savgol_is_exact_on_quadratics():
    dt = 0.1
    t = np.arange(60) * dt
    x = 3.0 + 2.0 * t - 0.7 * t ** 2
    np.testing.assert_allclose(savgol(x, dt)[7:-7], x[7:-7], atol=1e-9)
    np.testing.assert_allclose(savgol(x, dt, deriv=1)[7:-7], 2.0 - 1.4 * t[7:-7], atol=1e-9)
    lin = 1.0 + 4.0 * t  # linear signals are exact to the edges (odd reflection)
    np.testing.assert_allclose(savgol(lin, dt, deriv=1), 4.0, atol=1e-9)


def test_comfort_bounds():
    dt, n = 0.1, 100
    cruise = comfort(np.full(n, 20.0), np.zeros(n), np.zeros(n), dt)
    assert not cruise["violation"] and cruise["max_lat_accel"] < 1e-9
    v = np.maximum(20.0 - 6.0 * dt * np.arange(n), 0.0)  # -6 m/s^2 is beyond nuPlan's -4.05
    brake = comfort(v, np.gradient(v, dt), np.zeros(n), dt)
    assert brake["violation"] and brake["min_lon_accel"] < -4.05
    # a steady turn at 15 m/s with yaw rate 0.4 rad/s: lateral 6 m/s^2 > 4.89
    turn = comfort(np.full(n, 15.0), np.zeros(n), 0.4 * dt * np.arange(n), dt)
    assert turn["violation"] and turn["max_lat_accel"] == pytest.approx(6.0, rel=1e-6)
    gentle = comfort(np.full(n, 15.0), np.zeros(n), 0.1 * dt * np.arange(n), dt)
    assert not gentle["violation"]


def _rec(xs, ys, yaws, speeds, length=5.0, width=2.0):
    """(1, T, N) recording of straight constant-velocity motion from the given initial states."""
    xs, ys, yaws, speeds = (np.atleast_1d(np.asarray(a, dtype=float)) for a in (xs, ys, yaws, speeds))
    n, t = xs.size, 30
    tt = np.arange(t)[:, None] * 0.1
    rec = {"x": xs + speeds * np.cos(yaws) * tt, "y": ys + speeds * np.sin(yaws) * tt,
           "yaw": np.broadcast_to(yaws, (t, n)).copy(), "speed": np.broadcast_to(speeds, (t, n)).copy(),
           "length": np.full((t, n), length), "width": np.full((t, n), width), "valid": np.ones((t, n), bool)}
    return {k: v[None] for k, v in rec.items()}


def _first_overlap_shapely(rec, a, b, horizon=3.0, step=0.1):
    """Reference: first constant-velocity projection time at which shapely says the boxes intersect."""
    def poly(i, tau):
        x = rec["x"][0, 0, i] + rec["speed"][0, 0, i] * np.cos(rec["yaw"][0, 0, i]) * tau
        y = rec["y"][0, 0, i] + rec["speed"][0, 0, i] * np.sin(rec["yaw"][0, 0, i]) * tau
        box = shapely.geometry.box(-2.5, -1.0, 2.5, 1.0)
        return shapely.affinity.translate(shapely.affinity.rotate(box, rec["yaw"][0, 0, i], use_radians=True), x, y)
    for k in range(int(round(horizon / step)) + 1):
        pa, pb = poly(a, k * step), poly(b, k * step)
        if pa.intersects(pb):  # counts if b's centre is ahead of a's rear axle line then
            ahead = ((pb.centroid.x - pa.centroid.x) * np.cos(rec["yaw"][0, 0, a])
                     + (pb.centroid.y - pa.centroid.y) * np.sin(rec["yaw"][0, 0, a])) > -1.25
            return k * step if ahead else horizon
    return horizon


def test_projected_ttc_matches_shapely_and_closed_form():
    # rear-end approach: 20 m bumper to bumper, closing at 10 m/s -> 2.0 s
    rec = _rec([0.0, 25.0], [0.0, 0.0], [0.0, 0.0], [20.0, 10.0])
    ttc = projected_ttc(rec, 0, 0)
    assert ttc[0] == pytest.approx(2.0, abs=1e-9)
    assert ttc[0] == pytest.approx(_first_overlap_shapely(rec, 0, 1))
    # the vehicle in front is not threatened by the one behind (its TTC is the follower's)
    assert projected_ttc(rec, 0, 1)[0] == pytest.approx(3.0)
    # crossing paths at an angle, several random configurations, against shapely
    rng = np.random.default_rng(1)
    hits = 0
    for _ in range(20):  # paths crossing at (cx, 0), the other vehicle arriving around the same time
        yaw_b, va, vb, cx = rng.uniform(0.5, 2.6), rng.uniform(8, 15), rng.uniform(6, 14), rng.uniform(15, 35)
        tb = cx / va + rng.uniform(-0.6, 0.6)
        rec = _rec([0.0, cx - vb * tb * np.cos(yaw_b)], [0.0, -vb * tb * np.sin(yaw_b)], [0.0, yaw_b], [va, vb])
        hits += _first_overlap_shapely(rec, 0, 1) < 3.0
        assert projected_ttc(rec, 0, 0)[0] == pytest.approx(_first_overlap_shapely(rec, 0, 1))
    assert hits >= 5  # the configurations include real conflicts


def test_projected_ttc_skips_stopped_and_invalid():
    rec = _rec([0.0, 10.0], [0.0, 0.0], [0.0, 0.0], [0.0, 0.0])
    assert np.isnan(projected_ttc(rec, 0, 0)).all()
    rec = _rec([0.0, 100.0], [0.0, 0.0], [0.0, 0.0], [10.0, 10.0])
    rec["valid"][0, :, 0] = False
    assert np.isnan(projected_ttc(rec, 0, 0)).all()


def test_speed_limit_compliance():
    score, share = speed_limit_compliance(np.full(10, 20.0), np.full(10, 25.0), 0.1)
    assert score == 1.0 and share == 0.0
    # 2.23 m/s over for half of the time: 1 - 0.5
    speed = np.concatenate([np.full(5, 27.23), np.full(5, 20.0)])
    score, share = speed_limit_compliance(speed, np.full(10, 25.0), 0.1)
    assert score == pytest.approx(0.5) and share == pytest.approx(0.5)


def test_vehicle_metrics_and_score():
    rec = _rec([0.0, 60.0], [0.0, 0.0], [0.0, 0.0], [20.0, 20.0])
    rec.update({"collided": np.zeros((1, 30, 2), bool), "offroad": np.zeros((1, 30, 2), bool),
                "lane": np.zeros((1, 30, 2), int), "accel": np.zeros((1, 30, 2))})
    m = vehicle_metrics(rec, 0, 0, 0.1, np.array([30.0]))
    assert m["distance_m"] == pytest.approx(20.0 * 0.1 * 30) and m["ttc_below"] == 0 and not m["comfort_violation"]
    assert nuplan_score(m, m["distance_m"]) == pytest.approx(1.0)
    assert nuplan_score(m, 2 * m["distance_m"]) == pytest.approx((5 * 0.5 + 5 + 4 + 2) / 16)
    rec["collided"][0, 10:, 0] = True
    m2 = vehicle_metrics(rec, 0, 0, 0.1, np.array([30.0]))
    assert m2["collided"] and nuplan_score(m2, m["distance_m"]) == 0.0
    assert m2["distance_m"] == pytest.approx(20.0 * 0.1 * 10)  # no progress counted after the crash
