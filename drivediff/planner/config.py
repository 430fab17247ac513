"""Planner configuration: one frozen dataclass, saved in every checkpoint."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields


@dataclass(frozen=True)
class PlannerConfig:
    """What the planner sees, what it generates, and the network that denoises it.

    Time: the planner works at ``plan_dt`` (0.2 s); each planned control is held for
    ``plan_dt / sim_dt`` simulator steps.
    """

    # time
    plan_dt: float = 0.2  # [s] planner step
    horizon: int = 20  # planned control steps (4 s)
    history: int = 5  # past states per agent (1 s), besides the current one
    basis: int = 7  # cubic B-spline coefficients per control channel (0: diffuse the raw steps)
    # scene tokens
    num_neighbors: int = 7  # K nearest vehicles besides the focal one
    sensor_range: float = 60.0  # [m] neighbours farther away are not seen
    num_lanes: int = 6  # lane tokens
    lane_points: int = 10  # points per lane token
    lane_behind: float = 10.0  # [m] lane tokens start this far behind the focal vehicle's projection
    lane_ahead: float = 40.0  # [m] ... and end this far ahead
    lane_range: float = 30.0  # [m] lanes whose centreline passes farther away are ignored
    # dynamics limits of the plans (match the simulator's). The second control channel is the lateral
    # acceleration a_lat = v^2 * curvature [m/s^2]: unlike the steering angle it has a similar scale at every
    # speed; the rollout turns it into steering at the current speed.
    accel_min: float = -6.0  # [m/s^2]
    accel_max: float = 4.0  # [m/s^2]
    lat_acc_max: float = 8.0  # [m/s^2]
    steer_max: float = 0.6  # [rad]
    # denoiser
    d_model: int = 96
    num_layers: int = 3
    num_heads: int = 4
    ff_mult: int = 3
    dropout: float = 0.0
    # diffusion
    train_timesteps: int = 100
    schedule: str = "cosine"

    def __post_init__(self):
        if self.horizon < 2 or self.history < 1:
            raise ValueError("horizon must be >= 2 and history >= 1")
        if self.d_model % self.num_heads:
            raise ValueError(f"d_model ({self.d_model}) must be divisible by num_heads ({self.num_heads})")
        if not self.accel_min < 0 < self.accel_max:
            raise ValueError("accel_min < 0 < accel_max is required")
        if self.basis and not 4 <= self.basis <= self.horizon:
            raise ValueError(f"basis must be 0 or between 4 and the horizon ({self.horizon})")

    @property
    def num_agents(self) -> int:
        """Agent tokens per query: the focal vehicle and its K neighbours."""
        return 1 + self.num_neighbors

    @property
    def control_dim(self) -> int:
        """Numbers diffused per agent: 2 x basis coefficients (or 2 x horizon raw steps)."""
        return 2 * (self.basis or self.horizon)

    def control_basis(self):
        """(H, K) B-spline basis, or None for raw steps."""
        from drivediff.planner.basis import bspline_basis

        return bspline_basis(self.horizon, self.basis) if self.basis else None

    @property
    def agent_feature_dim(self) -> int:
        """Per agent: current (x, y, cos, sin, speed, length, width), history (x, y, cos, sin, speed) per
        past step, history mask per past step, present, is_focal, current acceleration and steering, lateral
        offset and heading error relative to the nearest lane."""
        return 7 + 6 * self.history + 2 + 4

    @property
    def lane_feature_dim(self) -> int:
        """Per lane token: (x, y, cos, sin) per point, width, speed limit, junction flag."""
        return 4 * self.lane_points + 3

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> PlannerConfig:
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown planner config keys: {sorted(unknown)}")
        return cls(**d)
