"""Query features against brute-force computations on real simulator states."""

import math

import numpy as np
import pytest

from drivediff.planner.config import PlannerConfig
from drivediff.planner.features import POS_SCALE, SNAPSHOT_FIELDS, LaneIndex, build_queries, to_world
from drivediff.sim import World


@pytest.fixture(scope="module")
def merge_world():
    w = World("merge", num_worlds=1, overrides={"controlled": {"count": 3}})
    w.reset(seed=2)
    w.run(60)
    return w


def test_neighbours_are_the_k_nearest_in_range(merge_world):
    w, cfg = merge_world, PlannerConfig(num_neighbors=4, sensor_range=40.0)
    st = w.state
    snaps = {k: np.repeat(getattr(st, k)[0][None], cfg.history + 1, axis=0) for k in SNAPSHOT_FIELDS}
    focal = np.nonzero(st.valid[0])[0][:6]
    q = build_queries(snaps, focal, LaneIndex.from_road(w.road), cfg)
    for qi, i in enumerate(focal):
        d = np.hypot(st.x[0] - st.x[0, i], st.y[0] - st.y[0, i])
        d[~st.valid[0]] = np.inf
        d[i] = np.inf
        expect = [j for j in np.argsort(d, kind="stable")[:4] if d[j] <= 40.0]
        got = [int(j) for j in q["agent_slot"][qi, 1:] if j >= 0]
        assert q["agent_slot"][qi, 0] == i
        assert got == expect
        assert q["agent_mask"][qi].sum() == 1 + len(expect)


def test_frames_states_and_history_masks(merge_world):
    w, cfg = merge_world, PlannerConfig()
    st = w.state
    snaps = {k: np.repeat(getattr(st, k)[0][None], cfg.history + 1, axis=0) for k in SNAPSHOT_FIELDS}
    snaps["valid"][0] = False  # the oldest snapshot is missing
    q = build_queries(snaps, np.array([0, 1]), LaneIndex.from_road(w.road), cfg)
    # the focal vehicle sits at the origin heading along +x
    np.testing.assert_allclose(q["agent_state"][:, 0, :3], 0.0, atol=1e-9)
    feat = q["agent_feat"]
    np.testing.assert_allclose(feat[:, 0, :4], [[0, 0, 1, 0]] * 2, atol=1e-6)
    # a neighbour's position maps back to the world through the frame
    for qi in range(2):
        j = int(q["agent_slot"][qi, 1])
        back = to_world(q["agent_state"][qi:qi + 1, 1:2, :2].astype(float), q["frame"][qi:qi + 1])[0, 0]
        np.testing.assert_allclose(back, [st.x[0, j], st.y[0, j]], atol=1e-4)
        assert feat[qi, 1, 0] == pytest.approx(q["agent_state"][qi, 1, 0] / POS_SCALE, abs=1e-6)
    hp = cfg.history
    hmask = feat[..., 7 + 5 * hp:7 + 6 * hp]
    assert (hmask[:, :, 0][q["agent_mask"]] == 0).all() and (hmask[:, :, 1:][q["agent_mask"]] == 1).all()


def test_lane_tokens_on_a_straight_highway():
    w = World("highway")
    w.reset(seed=0)
    cfg = PlannerConfig()
    st = w.state
    snaps = {k: np.repeat(getattr(st, k)[0][None], cfg.history + 1, axis=0) for k in SNAPSHOT_FIELDS}
    q = build_queries(snaps, np.array([0]), LaneIndex.from_road(w.road), cfg)
    assert q["lane_mask"][0].sum() == 4  # the four lanes of highway-v0
    pts = q["lane_feat"][0, :4, :4 * cfg.lane_points].reshape(4, cfg.lane_points, 4)
    lateral = np.sort(pts[:, :, 1].mean(axis=1) * POS_SCALE)
    ego_y = st.y[0, 0]
    np.testing.assert_allclose(lateral, np.sort(4.0 * np.arange(4) - ego_y), atol=0.05)
    np.testing.assert_allclose(pts[:, :, 2], 1.0, atol=1e-6)  # headings along the focal vehicle's
    span = pts[0, :, 0] * POS_SCALE
    assert span[0] == pytest.approx(-cfg.lane_behind, abs=1.0) and span[-1] == pytest.approx(cfg.lane_ahead, abs=1.0)
    assert math.isclose(q["lane_feat"][0, 0, -2], 30 / 30)  # speed limit / 30


def test_lane_relative_features_match_the_simulator_lane_frame():
    """Offset and heading error to the nearest same-direction lane equal the simulator's (d, yaw - heading)
    for vehicles driving in their lanes."""
    from drivediff.planner.features import lane_relative

    w = World("roundabout", num_worlds=1)
    w.reset(seed=3)
    w.run(150)
    st = w.state
    idx = np.nonzero(st.valid[0] & (np.abs(st.d[0]) < 1.0))[0]
    lanes = LaneIndex.from_road(w.road)
    off, err, ok = lane_relative(lanes, st.x[0, idx], st.y[0, idx], st.yaw[0, idx])
    assert ok.all() and len(idx) > 5
    heading = np.array([np.interp(st.s[0, i], w.road.arrays.pts[w.road._pt_slice(st.lane[0, i]), 2],
                                  w.road.lane_headings(st.lane[0, i])) for i in idx])
    np.testing.assert_allclose(off, st.d[0, idx], atol=0.05)
    np.testing.assert_allclose(err, (st.yaw[0, idx] - heading + np.pi) % (2 * np.pi) - np.pi, atol=0.02)
    # a vehicle driving against the lane direction finds no lane
    off2, err2, ok2 = lane_relative(lanes, st.x[0, idx[:1]], st.y[0, idx[:1]], st.yaw[0, idx[:1]] + np.pi)
    assert not ok2[0] or abs(err2[0]) < np.pi / 2


def _lane_tokens_reference(road, frame, cfg):
    """Lane tokens by brute force, one query and one lane at a time: distance to every centreline sample,
    the Lt nearest lanes within range, each sampled by arc length with np.interp on its own centreline."""
    from drivediff.sim import layout as L

    a = road.arrays
    idx = LaneIndex.from_road(road, spacing=2.0)  # the same coarse samples the planner searches
    offsets = np.linspace(-cfg.lane_behind, cfg.lane_ahead, cfg.lane_points)
    out = []
    for fx, fy, fh in frame:
        per_lane = []
        for lane in range(road.num_lanes):
            i0, i1 = a.lane_i[lane, L.L_PT], a.lane_i[lane + 1, L.L_PT]
            seg = slice(idx.starts[lane], idx.starts[lane + 1])
            d2 = (idx.pts[seg, 0] - fx) ** 2 + (idx.pts[seg, 1] - fy) ** 2
            per_lane.append((d2.min(), lane, idx.s[seg][int(np.argmin(d2))], i0, i1))
        tokens = []
        for d2, lane, s0, i0, i1 in sorted(per_lane, key=lambda r: (r[0], r[1]))[:cfg.num_lanes]:
            if d2 > cfg.lane_range ** 2:
                break
            p = a.pts[i0:i1]
            s = np.clip(s0 + offsets, 0.0, road.lane_len[lane])
            px, py, ph = (np.interp(s, p[:, L.P_S], p[:, c]) for c in (L.P_X, L.P_Y, L.P_H))
            dx, dy = px - fx, py - fy
            lx, ly = dx * np.cos(fh) + dy * np.sin(fh), -dx * np.sin(fh) + dy * np.cos(fh)
            tokens.append((d2, np.stack([lx, ly, np.cos(ph - fh), np.sin(ph - fh)], axis=-1)))
        out.append(tokens)
    return out


@pytest.mark.parametrize("scenario", ["intersection", "roundabout"])
def test_lane_tokens_match_a_brute_force_reference(scenario):
    from drivediff.planner.features import lane_features

    w = World(scenario, num_worlds=1)
    w.reset(seed=1)
    w.run(50)
    st = w.state
    idx = np.nonzero(st.valid[0])[0][:12]
    frame = np.stack([st.x[0, idx], st.y[0, idx], st.yaw[0, idx]], axis=1).astype(np.float64)
    cfg = PlannerConfig()
    feat, mask = lane_features(LaneIndex.from_road(w.road), frame, cfg)
    ref = _lane_tokens_reference(w.road, frame, cfg)
    checked = 0
    for qi, tokens in enumerate(ref):
        assert mask[qi].sum() == len(tokens)
        d2 = [t[0] for t in tokens]
        for k, (_, pts) in enumerate(tokens):
            if any(abs(d2[k] - d2[j]) < 1e-6 for j in range(len(d2)) if j != k):
                continue  # lanes at the same distance (branches from one point) may come in either order
            got = feat[qi, k, :4 * cfg.lane_points].reshape(cfg.lane_points, 4)
            np.testing.assert_allclose(got[:, :2] * POS_SCALE, pts[:, :2], atol=1e-3)
            np.testing.assert_allclose(got[:, 2:], pts[:, 2:], atol=1e-5)
            checked += 1
    assert checked >= 20
