"""The scenario file schema (pydantic). Every model forbids unknown keys.

A scenario file is YAML::

    name: highway
    dt: 0.0667             # simulation step [s]
    duration: 40.0         # episode length [s]
    road: {type: highway, lanes: 4, length: 3000}
    traffic: {count: 50, speed: [21, 24]}
    controlled: {count: 1, speed: 25}
    vehicles: []           # explicitly placed vehicles
    inflows: []            # vehicles entering open roads

Units: metres, seconds, m/s, m/s^2, radians; inflow rates in vehicles per hour.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

PositiveFloat = Annotated[float, Field(gt=0)]
NonNegFloat = Annotated[float, Field(ge=0)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _check_range(v):
    """A value or a [low, high] range (low <= high)."""
    if isinstance(v, list | tuple):
        if len(v) != 2:
            raise ValueError("a range is [low, high]")
        lo, hi = float(v[0]), float(v[1])
        if lo > hi:
            raise ValueError(f"range low {lo} is above high {hi}")
        return (lo, hi)
    return (float(v), float(v))


Range = tuple[float, float]


# ------------------------------------------------------------------------------------------------ roads


class HighwayRoad(_Strict):
    """Straight multi-lane road along +x; lane 0 is the rightmost (y = 0), lane k at y = k * lane_width."""

    type: Literal["highway"]
    lanes: Annotated[int, Field(ge=1, le=8)] = 4
    length: Annotated[float, Field(gt=50, le=50000)] = 3000.0
    lane_width: Annotated[float, Field(ge=2.5, le=6)] = 4.0
    speed_limit: Annotated[float, Field(gt=0, le=60)] = 30.0


class MergeRoad(_Strict):
    """Highway with an on-ramp joining through an acceleration lane that ends (vehicles must merge)."""

    type: Literal["merge"]
    lanes: Annotated[int, Field(ge=1, le=6)] = 2
    before: Annotated[float, Field(gt=20, le=5000)] = 250.0  # highway before the merge area
    merge_length: Annotated[float, Field(gt=20, le=1000)] = 200.0  # acceleration lane (real ones: 200-300 m)
    after: Annotated[float, Field(gt=20, le=5000)] = 300.0
    ramp_length: Annotated[float, Field(gt=20, le=2000)] = 150.0  # straight ramp part
    ramp_bend: Annotated[float, Field(gt=20, le=500)] = 80.0  # sine-shaped part joining the highway
    lane_width: Annotated[float, Field(ge=2.5, le=6)] = 4.0
    speed_limit: Annotated[float, Field(gt=0, le=60)] = 30.0
    ramp_speed_limit: Annotated[float, Field(gt=0, le=60)] = 20.0


class IntersectionRoad(_Strict):
    """Four-way junction; the east-west road has priority; left turns yield to oncoming traffic."""

    type: Literal["intersection"]
    access_length: Annotated[float, Field(gt=20, le=2000)] = 100.0
    lane_width: Annotated[float, Field(ge=2.5, le=6)] = 4.0
    right_turn_radius: Annotated[float, Field(gt=3, le=50)] = 9.0
    speed_limit: Annotated[float, Field(gt=0, le=40)] = 15.0
    turn_speed_limit: Annotated[float, Field(gt=0, le=40)] = 8.0


class RoundaboutRoad(_Strict):
    """Single-lane counter-clockwise roundabout with four legs; circulating traffic has priority."""

    type: Literal["roundabout"]
    radius: Annotated[float, Field(ge=10, le=100)] = 20.0
    access_length: Annotated[float, Field(gt=20, le=2000)] = 100.0
    lane_width: Annotated[float, Field(ge=2.5, le=6)] = 4.0
    speed_limit: Annotated[float, Field(gt=0, le=40)] = 15.0
    ring_speed_limit: Annotated[float, Field(gt=0, le=40)] = 9.0


class RingRoad(_Strict):
    """Single-lane closed ring (Sugiyama et al. 2008)."""

    type: Literal["ring"]
    length: Annotated[float, Field(ge=30, le=5000)] = 230.0
    lane_width: Annotated[float, Field(ge=2.5, le=6)] = 4.0
    speed_limit: Annotated[float, Field(gt=0, le=60)] = 30.0


RoadConfig = Annotated[HighwayRoad | MergeRoad | IntersectionRoad | RoundaboutRoad | RingRoad,
                       Field(discriminator="type")]


# ---------------------------------------------------------------------------------------------- drivers


class IDMConfig(_Strict):
    """IDM parameters. Defaults: highway-env 1.12 IDMVehicle (shared/REFERENCES.md)."""

    desired_speed: tuple[float, float] | None = None  # v0 [m/s] or range; None: the initial speed
    time_gap: PositiveFloat = 1.5  # T [s]
    s0: NonNegFloat = 5.0  # jam distance, bumper to bumper [m]
    a: PositiveFloat = 3.0  # maximum acceleration [m/s^2]
    b: PositiveFloat = 5.0  # comfortable deceleration [m/s^2]
    delta: tuple[float, float] = (3.5, 4.5)  # exponent or range (highway-env randomises 3.5-4.5)
    coolness: Annotated[float, Field(ge=0, lt=1)] = 0.0  # Enhanced IDM c (0: plain IDM; 0.99 published)
    noise: NonNegFloat = 0.0  # acceleration noise std [m/s^2]

    @field_validator("desired_speed", "delta", mode="before")
    @classmethod
    def _ranges(cls, v):
        return None if v is None else _check_range(v)

    @field_validator("delta")
    @classmethod
    def _delta_positive(cls, v):
        if v[0] <= 0:
            raise ValueError("delta must be positive")
        return v

    @field_validator("desired_speed")
    @classmethod
    def _v0_positive(cls, v):
        if v is not None and v[0] <= 0:
            raise ValueError("desired_speed must be positive")
        return v


class MOBILConfig(_Strict):
    """MOBIL lane changes. Defaults: highway-env 1.12."""

    enabled: bool = True
    politeness: Annotated[float, Field(ge=0, le=1)] = 0.0
    min_gain: NonNegFloat = 0.2  # [m/s^2]
    max_braking: PositiveFloat = 2.0  # [m/s^2]


class SizeConfig(_Strict):
    length: Annotated[float, Field(gt=0.5, le=30)] = 5.0
    width: Annotated[float, Field(gt=0.5, le=5)] = 2.0


class CCConfig(_Strict):
    """ACC / CACC parameters (Milanes & Shladover ACC; Ploeg CACC with Plexe defaults)."""

    time_gap: PositiveFloat = 0.5  # h [s]
    standstill: NonNegFloat = 2.0  # r [m]
    kp: NonNegFloat = 0.2
    kd: NonNegFloat = 0.7
    lag: NonNegFloat = 0.5  # actuator lag tau [s]


Behaviour = Literal["idm", "constant_speed", "controlled", "profile", "acc", "cacc"]


class TrafficConfig(_Strict):
    """Background vehicles placed at reset."""

    count: Annotated[int, Field(ge=0, le=5000)] = 0
    spawn: tuple[str, ...] | None = None  # spawn areas of the road; None: all
    placement: Literal["sequential", "random", "even"] = "random"
    spacing: PositiveFloat = 1.0  # sequential placement: spacing multiplier (1 / highway-env density)
    speed: tuple[float, float] = (20.0, 25.0)
    idm: IDMConfig = IDMConfig()
    mobil: MOBILConfig = MOBILConfig()
    size: SizeConfig = SizeConfig()
    behavior: Behaviour = "idm"

    @field_validator("speed", mode="before")
    @classmethod
    def _speed_range(cls, v):
        return _check_range(v)


class ControlledConfig(_Strict):
    """Controlled vehicles (agents). ``behavior`` is how they drive when no policy is given."""

    count: Annotated[int, Field(ge=0, le=256)] = 0
    spawn: tuple[str, ...] | None = None
    speed: tuple[float, float] = (25.0, 25.0)
    spacing: PositiveFloat = 2.0  # sequential placement spacing (highway-env ego_spacing)
    behavior: Behaviour = "idm"
    idm: IDMConfig = IDMConfig()
    mobil: MOBILConfig = MOBILConfig()
    size: SizeConfig = SizeConfig()
    cc: CCConfig = CCConfig()

    @field_validator("speed", mode="before")
    @classmethod
    def _speed_range(cls, v):
        return _check_range(v)


class VehicleConfig(_Strict):
    """One explicitly placed vehicle."""

    lane: str
    s: float  # [m] along the lane
    speed: NonNegFloat = 0.0
    d: float = 0.0  # lateral offset, left positive [m]
    behavior: Behaviour = "idm"
    controlled: bool = False
    route: tuple[str, ...] = ()  # lanes to take at the next lane ends
    idm: IDMConfig = IDMConfig()
    mobil: MOBILConfig = MOBILConfig()
    size: SizeConfig = SizeConfig()
    cc: CCConfig = CCConfig()
    lane_change_at: NonNegFloat | None = None  # scripted lane change time [s]
    lane_change_to: Literal["left", "right"] = "left"


class InflowConfig(_Strict):
    """Vehicles entering at the start of a lane (Bernoulli arrivals every step)."""

    lane: str
    rate: Annotated[float, Field(ge=0, le=7200)]  # [veh/h]
    speed: tuple[float, float] = (15.0, 20.0)
    routes: tuple[tuple[str, ...], ...] | None = None  # None: the road's routes from this lane
    idm: IDMConfig = IDMConfig()
    mobil: MOBILConfig = MOBILConfig()
    size: SizeConfig = SizeConfig()

    @field_validator("speed", mode="before")
    @classmethod
    def _speed_range(cls, v):
        return _check_range(v)


class ProfileConfig(_Strict):
    """Speed profile of ``profile`` vehicles: piecewise-linear knots or a sinusoid."""

    type: Literal["knots", "sinusoid"] = "knots"
    knots: tuple[tuple[float, float], ...] = ()  # (time [s], speed [m/s]), times increasing
    mean: NonNegFloat = 20.0  # sinusoid mean speed
    amplitude: NonNegFloat = 0.0  # [m/s]
    frequency: NonNegFloat = 0.2  # [Hz]
    start: NonNegFloat = 0.0  # sinusoid starts at this time [s]

    @field_validator("knots")
    @classmethod
    def _knots_increasing(cls, v):
        ts = [k[0] for k in v]
        if any(b <= a for a, b in zip(ts[:-1], ts[1:], strict=True)):
            raise ValueError("knot times must increase")
        if any(k[1] < 0 for k in v):
            raise ValueError("knot speeds must be >= 0")
        return v


class SimConfig(_Strict):
    """Simulator options."""

    center_gap: bool = False  # IDM gaps centre to centre, as highway-env measures them
    offroad_tol: NonNegFloat = 0.1  # [m]
    max_accel: PositiveFloat = 6.0  # [m/s^2]
    max_brake: PositiveFloat = 9.0  # [m/s^2]
    allow_reverse: bool = False
    v2v_loss: Annotated[float, Field(ge=0, le=1)] = 0.0  # CACC packet loss probability
    v2v_delay: NonNegFloat = 0.0  # CACC V2V delay [s]


class ScenarioConfig(_Strict):
    """A whole scenario."""

    name: str
    description: str = ""
    dt: Annotated[float, Field(gt=0.001, le=1.0)] = 0.1
    duration: Annotated[float, Field(gt=0, le=36000)] = 40.0
    road: RoadConfig
    traffic: TrafficConfig = TrafficConfig()
    controlled: ControlledConfig = ControlledConfig()
    vehicles: tuple[VehicleConfig, ...] = ()
    inflows: tuple[InflowConfig, ...] = ()
    profile: ProfileConfig | None = None
    sim: SimConfig = SimConfig()
    max_vehicles: Annotated[int, Field(ge=1, le=20000)] | None = None  # slots; None: count + headroom

    @model_validator(mode="after")
    def _profile_needed(self):
        uses = self.traffic.behavior == "profile" or self.controlled.behavior == "profile" or any(
            v.behavior == "profile" for v in self.vehicles)
        if uses and self.profile is None:
            raise ValueError("a vehicle has behavior 'profile' but the scenario has no 'profile' section")
        return self

    @property
    def num_steps(self) -> int:
        return int(round(self.duration / self.dt))
