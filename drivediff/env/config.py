"""Environment options: frozen dataclasses, validated once, shared by every environment API.

:class:`EnvConfig` holds what the PettingZoo, Gymnasium and batched environments have in common (scenario,
agents, action type, control period, observation and reward options). The factories
(``drivediff.env.parallel_env(...)`` and friends) take the same names as keyword arguments; nested
options may be given as mappings (``observation={"num_neighbors": 4}``). Unknown names are errors.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from typing import Any

import numpy as np

from drivediff.errors import DrivediffError

__all__ = ["ACTION_TYPES", "EnvConfig", "ObservationConfig", "RewardConfig", "make_config"]

ACTION_TYPES = ("continuous", "discrete")
RENDER_MODES = (None, "rgb_array", "human")


def _positive(name: str, value, integer: bool = False) -> None:
    if integer:
        ok = isinstance(value, int | np.integer) and not isinstance(value, bool)
    else:
        ok = isinstance(value, int | float | np.integer | np.floating) and not isinstance(value, bool)
    if not ok or value <= 0 or (not integer and not math.isfinite(value)):
        kind = "a positive integer" if integer else "a positive number"
        raise DrivediffError(f"{name} must be {kind}, got {value!r}")


@dataclass(frozen=True)
class ObservationConfig:
    """What each agent observes (the layout is documented in ``drivediff.env.observation``)."""

    num_neighbors: int = 8  # K nearest vehicles observed
    neighbor_range: float = 80.0  # [m] vehicles farther away are not observed; position scale
    lane_points: int = 8  # M centreline points per lane (current, left, right)
    lane_spacing: float = 6.0  # [m] between lane points, the first at the ego's own arc length
    speed_scale: float = 40.0  # [m/s] speeds are divided by this
    accel_scale: float = 5.0  # [m/s^2] accelerations are divided by this
    goal_scale: float = 1000.0  # [m] remaining route distance is divided by this

    def __post_init__(self):
        _positive("observation.num_neighbors", self.num_neighbors, integer=True)
        _positive("observation.lane_points", self.lane_points, integer=True)
        for name in ("neighbor_range", "lane_spacing", "speed_scale", "accel_scale", "goal_scale"):
            _positive(f"observation.{name}", getattr(self, name))


@dataclass(frozen=True)
class RewardConfig:
    """Weights of the reward terms (reward = sum of weight x term; terms in ``drivediff.env.rewards``).

    Rate terms (progress, comfort) are integrated over the control period, so an episode's return does
    not depend on the control frequency; event terms (collision, offroad, goal) count once.
    """

    progress: float = 1.0  # per second driven at the lane's speed limit along the lane
    collision: float = -10.0
    offroad: float = -10.0
    comfort: float = -0.5  # per second at the comfort references below
    goal: float = 10.0  # reaching the end of the route (leaving the road through an exit)
    jerk_ref: float = 4.13  # [m/s^3] nuPlan comfort bound on longitudinal jerk
    lat_accel_ref: float = 4.89  # [m/s^2] nuPlan comfort bound on lateral acceleration

    def __post_init__(self):
        for f in fields(self):
            v = getattr(self, f.name)
            if not isinstance(v, int | float) or not math.isfinite(v):
                raise DrivediffError(f"reward.{f.name} must be a finite number, got {v!r}")
        _positive("reward.jerk_ref", self.jerk_ref)
        _positive("reward.lat_accel_ref", self.lat_accel_ref)


@dataclass(frozen=True)
class EnvConfig:
    """Options shared by every drivediff environment.

    Attributes:
        scenario: catalog name, YAML path, ScenarioConfig or CompiledScenario.
        num_agents: controlled vehicles (None: the scenario's count, or 1 when it has none).
        action_type: ``"continuous"`` ([acceleration, steering] in [-1, 1]) or ``"discrete"``
            (highway-env meta-actions: 0 lane left, 1 idle, 2 lane right, 3 faster, 4 slower).
        action_repeat: simulation steps per environment step (the action is held).
        max_steps: environment steps before truncation (None: the scenario's duration).
        accel_range: [m/s^2] acceleration at action -1 and +1 (highway-env ContinuousAction default).
        steer_range: [rad] steering at action -1 and +1 (highway-env ContinuousAction default).
        target_speeds: [m/s] speeds of the discrete meta-actions (None: see ``default_target_speeds``).
        offroad_terminal: an agent that leaves the drivable area is terminated.
        remove_departed: the vehicle of an agent that crashed or went off-road is removed from the world.
        observation: :class:`ObservationConfig`.
        reward: :class:`RewardConfig`.
        render_mode: None, ``"rgb_array"`` or ``"human"``.
        render_size: (width, height) of rendered frames [px].
        record_log: keep every simulation step of the current episode, so that ``save_log(path)`` writes an
            episode log the replay viewer opens (single-world environments: PettingZoo, Gymnasium).
    """

    scenario: Any = "highway"
    num_agents: int | None = None
    action_type: str = "continuous"
    action_repeat: int = 1
    max_steps: int | None = None
    accel_range: tuple[float, float] = (-5.0, 5.0)
    steer_range: tuple[float, float] = (-math.pi / 4, math.pi / 4)
    target_speeds: tuple[float, ...] | None = None
    offroad_terminal: bool = True
    remove_departed: bool = True
    observation: ObservationConfig = field(default_factory=ObservationConfig)
    reward: RewardConfig = field(default_factory=RewardConfig)
    render_mode: str | None = None
    render_size: tuple[int, int] = (1280, 720)
    record_log: bool = False

    def __post_init__(self):
        if self.num_agents is not None:
            _positive("num_agents", self.num_agents, integer=True)
        if self.action_type not in ACTION_TYPES:
            raise DrivediffError(f"action_type must be one of {ACTION_TYPES}, got {self.action_type!r}")
        _positive("action_repeat", self.action_repeat, integer=True)
        if self.max_steps is not None:
            _positive("max_steps", self.max_steps, integer=True)
        for name in ("accel_range", "steer_range"):
            lo, hi = _pair(name, getattr(self, name))
            if not lo < hi:
                raise DrivediffError(f"{name} must be (low, high) with low < high, got {getattr(self, name)!r}")
        if self.target_speeds is not None:
            ts = tuple(float(v) for v in self.target_speeds)
            if len(ts) < 2 or any(b <= a for a, b in zip(ts[:-1], ts[1:], strict=True)) or ts[0] < 0:
                raise DrivediffError("target_speeds must be at least two increasing non-negative speeds [m/s], "
                                     f"got {self.target_speeds!r}")
        if self.render_mode not in RENDER_MODES:
            raise DrivediffError(f"render_mode must be one of {RENDER_MODES}, got {self.render_mode!r}")


def _pair(name: str, value) -> tuple[float, float]:
    try:
        lo, hi = (float(v) for v in value)
    except (TypeError, ValueError):
        raise DrivediffError(f"{name} must be a pair of numbers (low, high), got {value!r}") from None
    return lo, hi


def _sub(cls, value, name: str):
    if isinstance(value, cls):
        return value
    if not isinstance(value, Mapping):
        raise DrivediffError(f"{name} must be a {cls.__name__} or a mapping of its fields, got {value!r}")
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(value) - known)
    if unknown:
        raise DrivediffError(f"unknown {name} option(s) {unknown}; allowed: {sorted(known)}")
    return cls(**value)


def make_config(config: EnvConfig | None = None, **kwargs) -> EnvConfig:
    """An :class:`EnvConfig` from keyword arguments (unknown names raise), optionally on top of ``config``."""
    known = {f.name for f in fields(EnvConfig)}
    unknown = sorted(set(kwargs) - known)
    if unknown:
        raise DrivediffError(f"unknown environment option(s) {unknown}; allowed: {sorted(known)}")
    if "observation" in kwargs:
        kwargs["observation"] = _sub(ObservationConfig, kwargs["observation"], "observation")
    if "reward" in kwargs:
        kwargs["reward"] = _sub(RewardConfig, kwargs["reward"], "reward")
    for name in ("accel_range", "steer_range", "render_size"):
        if name in kwargs:
            kwargs[name] = tuple(kwargs[name])
    if "target_speeds" in kwargs and kwargs["target_speeds"] is not None:
        kwargs["target_speeds"] = tuple(float(v) for v in kwargs["target_speeds"])
    return replace(config, **kwargs) if config is not None else EnvConfig(**kwargs)
