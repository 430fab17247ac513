"""What a vehicle sees: ego-centric query tensors for the denoiser (plain NumPy, vectorised over queries).

A *query* is built for one focal vehicle from its local observation only: the focal vehicle and its K
nearest vehicles within sensor range (current state and short history, in the focal frame: x forward,
y left) and the lanes around it (centreline points ahead and behind). The same code builds training
windows from recorded traffic (``drivediff.planner.data``) and the conditions of the decentralised
planner at run time (``drivediff.agents.diffusion``).

Tensors of a batch of Q queries (A = 1 + K agents, Lt lanes, H horizon steps, Hp history steps):

================  ====================  =========================================================
name              shape                 content
================  ====================  =========================================================
agent_feat        (Q, A, F_a) float32   see :meth:`PlannerConfig.agent_feature_dim`
agent_mask        (Q, A) bool           agent token holds a vehicle (token 0 is the focal vehicle)
agent_slot        (Q, A) int64          the vehicle's slot in its world (-1: empty token)
agent_state       (Q, A, 5) float32     x, y, yaw, speed, length in the focal frame (rollout start)
lane_feat         (Q, Lt, F_l) float32  see :meth:`PlannerConfig.lane_feature_dim`
lane_mask         (Q, Lt) bool
frame             (Q, 3) float64        focal x, y, yaw in the world (to map plans back)
================  ====================  =========================================================
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from drivediff.planner.config import PlannerConfig
from drivediff.sim import layout as L
from drivediff.sim.jit import kernel

SNAPSHOT_FIELDS = ("x", "y", "yaw", "speed", "length", "width", "valid", "vid", "accel", "steer")
SPEED_SCALE = 30.0  # [m/s] speeds and limits are divided by this
POS_SCALE = 50.0  # [m] positions are divided by this


@dataclass(frozen=True)
class LaneIndex:
    """Coarse lane samples of a road for nearest-lane searches, and the fine centrelines to sample."""

    pts: np.ndarray  # (P, 2) coarse points, grouped by lane
    starts: np.ndarray  # (L+1,) CSR offsets of each lane's coarse points
    s: np.ndarray  # (P,) arc length of each coarse point on its lane
    length: np.ndarray  # (L,)
    width: np.ndarray  # (L,)
    speed: np.ndarray  # (L,)
    junction: np.ndarray  # (L,) bool
    coarse_cos: np.ndarray  # (P,) cos and sin of the lane heading at each coarse point
    coarse_sin: np.ndarray
    lane_of: np.ndarray  # (P,) lane of each coarse point
    fine_all: np.ndarray  # (F, 3) every lane's fine centreline, concatenated
    fine_starts: np.ndarray  # (L+1,) CSR offsets into fine_all
    fine_key: np.ndarray  # (F,) arc length plus a per-lane offset: increasing over all lanes (one searchsorted)
    fine_base: np.ndarray  # (L,) that offset

    @classmethod
    def from_road(cls, road, spacing: float = 2.0) -> LaneIndex:
        a = road.arrays
        pts, s_all, starts, fine_s, fine_xyh = [], [], [0], [], []
        for lane in range(road.num_lanes):
            i0, i1 = a.lane_i[lane, L.L_PT], a.lane_i[lane + 1, L.L_PT]
            p = a.pts[i0:i1]
            step = max(1, int(round(spacing / a.lane_f[lane, L.L_DS])))
            idx = np.unique(np.r_[np.arange(0, len(p), step), len(p) - 1])
            pts.append(p[idx, :2])
            s_all.append(p[idx, L.P_S])
            starts.append(starts[-1] + len(idx))
            fine_s.append(p[:, L.P_S])
            fine_xyh.append(p[:, [L.P_X, L.P_Y, L.P_H]])
        starts = np.array(starts)
        coarse_h = np.concatenate([np.interp(s, fs, xyh[:, 2])
                                   for s, fs, xyh in zip(s_all, fine_s, fine_xyh, strict=True)])
        fine_starts = np.r_[0, np.cumsum([len(fs) for fs in fine_s])]
        base = np.r_[0.0, np.cumsum([fs[-1] + 1.0 for fs in fine_s])][:-1]
        key = np.concatenate([fs + b for fs, b in zip(fine_s, base, strict=True)])
        return cls(pts=np.concatenate(pts), starts=starts, s=np.concatenate(s_all), length=road.lane_len.copy(),
                   width=road.lane_width.copy(), speed=road.lane_speed.copy(),
                   junction=np.asarray(road.junction, dtype=bool), coarse_cos=np.cos(coarse_h),
                   coarse_sin=np.sin(coarse_h), lane_of=np.repeat(np.arange(road.num_lanes), np.diff(starts)),
                   fine_all=np.concatenate(fine_xyh), fine_starts=fine_starts, fine_key=key, fine_base=base)


def _to_frame(x, y, frame):
    """World points (..., ) -> focal frame, frame (Q, 3) broadcast on the leading axis."""
    fx, fy, fh = frame[:, 0], frame[:, 1], frame[:, 2]
    shape = (-1,) + (1,) * (np.ndim(x) - 1)
    c, s = np.cos(fh).reshape(shape), np.sin(fh).reshape(shape)
    dx, dy = x - fx.reshape(shape), y - fy.reshape(shape)
    return dx * c + dy * s, -dx * s + dy * c


def _wrap(a):
    return (a + np.pi) % (2 * np.pi) - np.pi


def select_neighbors(cur: dict, focal: np.ndarray, cfg: PlannerConfig, must_include=None) -> np.ndarray:
    """Slots of the agent tokens (Q, A): the focal vehicle, then the K nearest valid vehicles within
    sensor range (-1 where fewer). ``must_include`` (Q, M) slots are placed first after the focal one
    (used by the centralised mode to put all controlled vehicles in one query)."""
    q = len(focal)
    a = cfg.num_agents
    valid = cur["valid"].astype(bool)
    dx = cur["x"][None, :] - cur["x"][focal][:, None]
    dy = cur["y"][None, :] - cur["y"][focal][:, None]
    dist = np.hypot(dx, dy)
    dist[:, ~valid] = np.inf
    dist[np.arange(q), focal] = np.inf
    dist[dist > cfg.sensor_range] = np.inf
    slots = np.full((q, a), -1, dtype=np.int64)
    slots[:, 0] = focal
    first = 1
    if must_include is not None:
        m = must_include.shape[1]
        slots[:, 1:1 + m] = must_include
        rows = np.repeat(np.arange(q), m)
        cols = must_include.reshape(-1)
        ok = cols >= 0
        dist[rows[ok], cols[ok]] = np.inf
        first = 1 + m
    k = a - first
    if k > 0 and dist.shape[1] > 0:
        kk = min(k, dist.shape[1])
        near = np.argpartition(dist, kk - 1, axis=1)[:, :kk] if kk < dist.shape[1] else \
            np.tile(np.arange(dist.shape[1]), (q, 1))
        d_near = np.take_along_axis(dist, near, axis=1)
        order = np.argsort(d_near, axis=1, kind="stable")
        near = np.take_along_axis(near, order, axis=1)
        d_near = np.take_along_axis(d_near, order, axis=1)
        near[~np.isfinite(d_near)] = -1
        slots[:, first:first + kk] = near
    return slots


@kernel
def _nearest_along(px, py, hc, hs, x, y, yaw, out):
    """Per point k: the nearest coarse lane point whose lane runs within 90 degrees of yaw[k] (-1: none).
    A scan over every coarse point (thousands on a long highway) with the heading test only for the
    points that would improve the best distance."""
    for k in range(len(x)):
        c, s = np.cos(yaw[k]), np.sin(yaw[k])
        best = np.inf
        out[k] = -1
        for p in range(len(px)):
            d = (px[p] - x[k]) ** 2 + (py[p] - y[k]) ** 2
            if d < best and hc[p] * c + hs[p] * s >= 0.0:
                best = d
                out[k] = p


def lane_relative(lanes: LaneIndex, x: np.ndarray, y: np.ndarray, yaw: np.ndarray):
    """Signed lateral offset [m] (left positive) and heading error [rad] of points with headings relative to
    the nearest lane centreline running within 90 degrees of their heading. Inputs and outputs (M,)."""
    j = np.empty(len(x), dtype=np.int64)
    _nearest_along(lanes.pts[:, 0], lanes.pts[:, 1], lanes.coarse_cos, lanes.coarse_sin,
                   np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64),
                   np.asarray(yaw, dtype=np.float64), j)
    ok = j >= 0
    j = np.maximum(j, 0)
    lane = lanes.lane_of[j]
    # the nearest fine centreline point among the 12 around the coarse point's arc length
    first, end = lanes.fine_starts[lane], lanes.fine_starts[lane + 1]
    i = np.searchsorted(lanes.fine_key, lanes.s[j] + lanes.fine_base[lane]) - first
    i = np.clip(i, 1, end - first - 1)
    lo = first + np.maximum(i - 6, 0)
    win = lo[:, None] + np.arange(12)[None, :]
    inside = win < np.minimum(first + i + 6, end)[:, None]
    pts = lanes.fine_all[np.where(inside, win, lo[:, None])]  # (M, 12, 3)
    dd = np.where(inside, (pts[..., 0] - x[:, None]) ** 2 + (pts[..., 1] - y[:, None]) ** 2, np.inf)
    p = pts[np.arange(len(x)), np.argmin(dd, axis=1)]
    off = np.where(ok, -(x - p[:, 0]) * np.sin(p[:, 2]) + (y - p[:, 1]) * np.cos(p[:, 2]), 0.0)
    err = np.where(ok, _wrap(yaw - p[:, 2]), 0.0)
    return off, err, ok


def agent_features(snaps: dict, slots: np.ndarray, frame: np.ndarray, cfg: PlannerConfig,
                   lanes: LaneIndex | None = None):
    """Agent tokens from snapshots (Hp+1, N) arrays (oldest first, the last row is now).

    Returns agent_feat (Q, A, F_a), agent_mask (Q, A), agent_state (Q, A, 5).
    """
    hp = cfg.history
    take = np.where(slots >= 0, slots, 0)
    present = (slots >= 0) & snaps["valid"][-1][take].astype(bool)
    vid_now = snaps["vid"][-1][take]
    x = snaps["x"][:, take]  # (Hp+1, Q, A)
    y = snaps["y"][:, take]
    yaw = snaps["yaw"][:, take]
    speed = snaps["speed"][:, take]
    hist_ok = snaps["valid"][:, take].astype(bool) & (snaps["vid"][:, take] == vid_now[None]) & present[None]
    x = np.moveaxis(x, 0, -1)  # (Q, A, Hp+1)
    y = np.moveaxis(y, 0, -1)
    yaw = np.moveaxis(yaw, 0, -1)
    speed = np.moveaxis(speed, 0, -1)
    hist_ok = np.moveaxis(hist_ok, 0, -1)
    fx, fy = _to_frame(x, y, frame)
    fh = _wrap(yaw - frame[:, 2][:, None, None])
    length = snaps["length"][-1][take]
    width = snaps["width"][-1][take]
    cur = np.stack([fx[..., -1] / POS_SCALE, fy[..., -1] / POS_SCALE, np.cos(fh[..., -1]), np.sin(fh[..., -1]),
                    speed[..., -1] / SPEED_SCALE, length / 5.0, width / 2.0], axis=-1)
    hist = np.stack([fx[..., :hp] / POS_SCALE, fy[..., :hp] / POS_SCALE, np.cos(fh[..., :hp]),
                     np.sin(fh[..., :hp]), speed[..., :hp] / SPEED_SCALE], axis=-1)  # (Q, A, Hp, 5)
    hmask = hist_ok[..., :hp]
    hist = np.where(hmask[..., None], hist, 0.0).reshape(*slots.shape, 5 * hp)
    is_focal = np.zeros(slots.shape)
    is_focal[:, 0] = 1.0
    # what the vehicle is doing now, and where it is relative to its lane (lane keeping needs both)
    acc_now = snaps["accel"][-1][take] / 3.0
    # current lateral acceleration from the applied steering: v^2 sin(beta) / (L/2)
    sb = np.sin(np.arctan(0.5 * np.tan(snaps["steer"][-1][take])))
    v_now = snaps["speed"][-1][take]
    steer_now = np.clip(v_now ** 2 * sb / (0.5 * np.maximum(snaps["length"][-1][take], 0.5)), -8, 8) / 3.0
    rel = np.zeros(slots.shape + (2,))
    if lanes is not None:
        pm = present.reshape(-1)
        off, err, ok = lane_relative(lanes, snaps["x"][-1][take].reshape(-1)[pm], snaps["y"][-1][take].reshape(-1)[pm],
                                     snaps["yaw"][-1][take].reshape(-1)[pm])
        flat = rel.reshape(-1, 2)
        flat[pm] = np.stack([np.where(ok, np.clip(off / 2.0, -3, 3), 0.0), np.where(ok, err / 0.2, 0.0)], axis=-1)
    feat = np.concatenate([cur, hist, hmask.astype(float), present[..., None].astype(float),
                           is_focal[..., None], acc_now[..., None], steer_now[..., None], rel], axis=-1)
    feat = np.where(present[..., None], feat, 0.0).astype(np.float32)
    state = np.stack([fx[..., -1], fy[..., -1], fh[..., -1], speed[..., -1], length], axis=-1)
    state = np.where(present[..., None], state, 0.0).astype(np.float32)
    return feat, present, state


@kernel
def _nearest_per_lane(px, py, starts, fx, fy, best, arg):
    """For every query q and lane l: the squared distance from (fx[q], fy[q]) to the lane's nearest coarse
    point and that point's index (first of equals)."""
    for q in range(len(fx)):
        for lane in range(len(starts) - 1):
            b = np.inf
            a = starts[lane]
            for p in range(starts[lane], starts[lane + 1]):
                d = (px[p] - fx[q]) ** 2 + (py[p] - fy[q]) ** 2
                if d < b:
                    b = d
                    a = p
            best[q, lane] = b
            arg[q, lane] = a


def lane_features(lanes: LaneIndex, frame: np.ndarray, cfg: PlannerConfig):
    """Lane tokens around each focal vehicle: (Q, Lt, F_l) features and (Q, Lt) mask. The Lt nearest lanes
    whose centreline passes within ``lane_range``, nearest first, each sampled at ``lane_points`` points
    from ``lane_behind`` behind to ``lane_ahead`` ahead of the focal vehicle's projection."""
    q = frame.shape[0]
    lt, npts = cfg.num_lanes, cfg.lane_points
    nl = len(lanes.length)
    best = np.empty((q, nl))
    arg = np.empty((q, nl), dtype=np.int64)
    _nearest_per_lane(lanes.pts[:, 0], lanes.pts[:, 1], lanes.starts, np.ascontiguousarray(frame[:, 0]),
                      np.ascontiguousarray(frame[:, 1]), best, arg)
    order = np.argsort(best, axis=1, kind="stable")[:, :lt]  # (Q, k) nearest lanes first
    k = order.shape[1]
    mask = np.zeros((q, lt), dtype=bool)
    mask[:, :k] = np.take_along_axis(best, order, axis=1) <= cfg.lane_range ** 2
    near = np.take_along_axis(arg, order, axis=1)  # (Q, k) nearest coarse point of each lane
    offsets = np.linspace(-cfg.lane_behind, cfg.lane_ahead, npts)
    s = np.clip(lanes.s[near][..., None] + offsets, 0.0, lanes.length[order][..., None])  # (Q, k, P)
    # one interpolation over all lanes' fine centrelines: arc lengths shifted by a per-lane offset, held
    # within the lane's own points (np.interp's end behaviour on a single lane)
    first, last = lanes.fine_starts[order], lanes.fine_starts[order + 1] - 1
    key = np.clip(s + lanes.fine_base[order][..., None], lanes.fine_key[first][..., None],
                  lanes.fine_key[last][..., None])
    fine = lanes.fine_all
    px, py, ph = (np.interp(key, lanes.fine_key, fine[:, c]) for c in range(3))
    lx, ly = _to_frame(px, py, frame)
    lh = ph - frame[:, 2][:, None, None]
    pts = np.stack([lx / POS_SCALE, ly / POS_SCALE, np.cos(lh), np.sin(lh)], axis=-1).reshape(q, k, 4 * npts)
    feat = np.zeros((q, lt, cfg.lane_feature_dim), dtype=np.float32)
    feat[:, :k] = np.concatenate([pts, (lanes.width[order] / 4.0)[..., None],
                                  (lanes.speed[order] / SPEED_SCALE)[..., None],
                                  lanes.junction[order][..., None].astype(float)], axis=-1)
    feat[~mask] = 0.0
    return feat, mask


def build_queries(snaps: dict, focal: np.ndarray, lanes: LaneIndex, cfg: PlannerConfig,
                  must_include: np.ndarray | None = None) -> dict:
    """Query tensors for focal slots ``focal`` (Q,) of one world from its snapshots (Hp+1, N)."""
    focal = np.asarray(focal, dtype=np.int64)
    cur = {k: v[-1] for k, v in snaps.items()}
    frame = np.stack([cur["x"][focal], cur["y"][focal], cur["yaw"][focal]], axis=1).astype(np.float64)
    slots = select_neighbors(cur, focal, cfg, must_include)
    feat, present, state = agent_features(snaps, slots, frame, cfg, lanes)
    lane_feat, lane_mask = lane_features(lanes, frame, cfg)
    slots = np.where(present, slots, -1)
    return {"agent_feat": feat, "agent_mask": present, "agent_slot": slots, "agent_state": state,
            "lane_feat": lane_feat, "lane_mask": lane_mask, "frame": frame}


def to_world(xy: np.ndarray, frame: np.ndarray) -> np.ndarray:
    """Points (Q, ..., 2) in the focal frame -> world frame."""
    shape = (-1,) + (1,) * (xy.ndim - 2)
    c = np.cos(frame[:, 2]).reshape(shape)
    s = np.sin(frame[:, 2]).reshape(shape)
    x = xy[..., 0] * c - xy[..., 1] * s + frame[:, 0].reshape(shape)
    y = xy[..., 0] * s + xy[..., 1] * c + frame[:, 1].reshape(shape)
    return np.stack([x, y], axis=-1)
