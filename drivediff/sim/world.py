"""The simulator's Python API: ``World`` steps B independent worlds of one scenario.

    >>> from drivediff.sim import World
    >>> world = World("highway", num_worlds=4)
    >>> state = world.reset(seed=0)
    >>> state = world.step()                 # one step, built-in behaviours
    >>> traj = world.run(600, record=True)   # 600 steps in one kernel call, recorded

Validation happens here, once, at the boundary: actions are checked for shape and finiteness, seeds and
world indices for range. The kernels trust what they get.

Randomness: each world owns independent numpy streams (initial placement, acceleration noise, arrivals,
V2V packet loss) seeded from ``SeedSequence(seed)``. A world's rollout is a function of its seed alone:
not of the number of worlds, the Numba thread count, or whether it was stepped one step at a time or
with ``run``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from drivediff.errors import ActionError, DrivediffError
from drivediff.sim import layout as L
from drivediff.sim.kernels.reset import BAD_LANE, write_world
from drivediff.sim.kernels.step import chunk_count, refresh_worlds, refresh_worlds_serial, step_worlds
from drivediff.sim.state import (
    NUM_SPAWN_RANDOMS,
    Behavior,
    SimState,
    alloc_record,
    alloc_scratch,
    alloc_state,
    record_to_dict,
)

__all__ = ["World"]

_CHUNK_ELEMENTS = 4_000_000  # bound on random numbers drawn per chunk of a long run
_AHEAD_STEPS = 64  # steps of random numbers ``step`` draws ahead per world and stream, in one call
_AHEAD_ELEMENTS = 1_000_000  # bound on the numbers held ahead per stream kind (fewer steps for many worlds)
SERIAL_WORLDS = 2  # up to this many worlds (in an environment, or reset at once) run on the calling thread


def _column_rows(fields: Sequence[str]) -> tuple[np.ndarray, ...]:
    """For placement columns named ``fields`` (``VEHICLE_FIELDS``): the state rows and column indices of the
    float, integer and flag fields (``lane`` is written from its own integer array)."""
    out = []
    for names in (L.FLOAT_FIELDS, L.INT_FIELDS, L.FLAG_FIELDS):
        pairs = [(names.index(f), k) for k, f in enumerate(fields) if f in names and f != "lane"]
        out += [np.array([r for r, _ in pairs], dtype=np.int64), np.array([k for _, k in pairs], dtype=np.int64)]
    if sum(len(a) for a in out[1::2]) != len(fields) - 1:
        raise DrivediffError("placement fields without a state row: " + ", ".join(
            f for f in fields if f not in L.FLOAT_FIELDS + L.INT_FIELDS + L.FLAG_FIELDS))
    return tuple(out)


class _Streams:
    """Independent random streams of one world: the children of ``SeedSequence(seed)`` (placement, noise,
    arrivals, packet loss, as ``spawn(4)`` would give them). Each child and its generator is built on first
    use: most scenarios never draw from some of them, and building one costs ~10 us on every reset."""

    def __init__(self, seed: int):
        self._seed = seed
        self.init = np.random.default_rng(self._child(0))
        self._gens: list[np.random.Generator | None] = [None, None, None]

    def _child(self, k: int) -> np.random.SeedSequence:
        return np.random.SeedSequence(self._seed, spawn_key=(k,))

    def _gen(self, k: int) -> np.random.Generator:
        g = self._gens[k]
        if g is None:
            g = self._gens[k] = np.random.default_rng(self._child(k + 1))
        return g

    @property
    def noise(self) -> np.random.Generator:
        return self._gen(0)

    @property
    def spawn(self) -> np.random.Generator:
        return self._gen(1)

    @property
    def loss(self) -> np.random.Generator:
        return self._gen(2)


class _Ahead:
    """Random inputs of one stream kind (noise, arrivals or packet loss) drawn ahead for every world.

    ``step`` takes one step's numbers per world from ``buf`` instead of calling each world's generator
    every step (a per-world Python call, ~1 us each). A generator yields the same sequence however its draws
    are split, and each stream is consumed by one kind of draw only, so a world's numbers are the same as
    drawn step by step: ``run`` takes what is left here before drawing more.
    """

    def __init__(self, num_worlds: int, shape: tuple[int, ...], draw):
        self.shape = shape
        self.depth = max(1, min(_AHEAD_STEPS, _AHEAD_ELEMENTS // max(1, num_worlds * math.prod(shape))))
        self.buf = None  # (B, depth, *shape), allocated on first use (most worlds have no noise or loss)
        self.pos = np.full(num_worlds, self.depth, dtype=np.int64)  # next unused step of each world (depth: none)
        self._draw = draw  # draw(world, steps) -> (steps, *shape) array from the world's stream
        self._rows = np.arange(num_worlds)

    def discard(self, worlds) -> None:
        """Forget what was drawn for these worlds (their streams were replaced)."""
        self.pos[worlds] = self.depth

    def take1(self, active: np.ndarray | None) -> np.ndarray:
        """(B, 1, *shape): one step's numbers of every (active) world; rows of inactive worlds are arbitrary."""
        use = self._rows if active is None else np.flatnonzero(active)
        if self.buf is None:
            self.buf = np.zeros((self.pos.shape[0], self.depth, *self.shape))
        for w in use[self.pos[use] >= self.depth]:
            self.buf[w] = self._draw(w, self.depth)
            self.pos[w] = 0
        out = self.buf[self._rows, np.minimum(self.pos, self.depth - 1)]
        self.pos[use] += 1
        return out[:, None]

    def take(self, t: int) -> np.ndarray:
        """(B, t, *shape): the next t steps' numbers of every world."""
        out = np.empty((self.pos.shape[0], t, *self.shape))
        for w in self._rows:
            p = int(self.pos[w])
            r = min(self.depth - p, t)
            if r > 0:
                out[w, :r] = self.buf[w, p:p + r]
            self.pos[w] = p + r
            if r < t:
                out[w, r:] = self._draw(w, t - r)
        return out


class World:
    """B independent worlds of one scenario, stepped by Numba kernels.

    Args:
        scenario: catalog name, path to a YAML file, ScenarioConfig or CompiledScenario.
        num_worlds: B.
        overrides: nested mapping merged into the scenario config (e.g. ``{"controlled": {"count": 4}}``).
        max_vehicles: vehicle slots per world (default: the scenario's).
    """

    def __init__(self, scenario="highway", num_worlds: int = 1, overrides: dict | None = None,
                 max_vehicles: int | None = None):
        from drivediff.scenarios import get_scenario  # the core uses scenarios only through the loader

        if not isinstance(num_worlds, int | np.integer) or num_worlds < 1:
            raise DrivediffError(f"num_worlds must be a positive integer, got {num_worlds!r}")
        self.scenario = get_scenario(scenario, overrides)
        self.config = self.scenario.config
        self.road = self.scenario.road
        self.params = self.scenario.params
        self.inflow = self.scenario.inflow
        self.num_worlds = int(num_worlds)
        self.max_vehicles = int(max_vehicles or self.scenario.max_vehicles)
        if self.max_vehicles < self.scenario.initial_count:
            raise DrivediffError(f"max_vehicles={self.max_vehicles} is below the {self.scenario.initial_count} "
                                 "vehicles the scenario places at reset")
        self.num_inflows = int(self.inflow.lane.shape[0])
        self._profile = self.scenario.profile
        self.state: SimState = alloc_state(self.num_worlds, self.max_vehicles, len(self._profile),
                                           self.params.v2v_delay_steps)
        self.scratch = alloc_scratch(self.num_worlds, self.max_vehicles, self.road.num_lanes)
        self._streams: list[_Streams | None] = [None] * self.num_worlds
        self._seeds = np.full(self.num_worlds, -1, dtype=np.int64)
        self._zero_actions = np.zeros((self.num_worlds, self.max_vehicles, 2))
        fields = self.scenario.vehicle_fields
        self._columns = _column_rows(fields)
        self._s_d = fields.index("s"), fields.index("d")
        self._fresh = alloc_state(1, self.max_vehicles, len(self._profile), self.params.v2v_delay_steps)
        b, n, k = self.num_worlds, self.max_vehicles, self.num_inflows
        self._noise = _Ahead(b, (n,), lambda w, t: self._streams[w].noise.standard_normal((t, n)))
        self._spawn = _Ahead(b, (k, NUM_SPAWN_RANDOMS),
                             lambda w, t: self._streams[w].spawn.random((t, k, NUM_SPAWN_RANDOMS)))
        self._loss = _Ahead(b, (n,), lambda w, t: self._streams[w].loss.random((t, n)))
        self._all = np.ones(self.num_worlds, dtype=np.bool_)
        self._no_record = alloc_record(self.num_worlds, 0, self.max_vehicles)
        self._is_reset = False

    # ------------------------------------------------------------------------------------------ properties
    @property
    def dt(self) -> float:
        return self.params.dt

    @property
    def time(self) -> np.ndarray:
        """(B,) episode time of each world [s]."""
        return self.state.step * self.dt

    @property
    def num_controlled(self) -> int:
        """Controlled vehicles per world; they occupy slots 0..num_controlled-1 after reset."""
        return self.scenario.num_controlled

    @property
    def seeds(self) -> np.ndarray:
        return self._seeds.copy()

    @property
    def steps_per_chunk(self) -> int:
        """Steps ``run`` simulates per kernel call (it draws their random inputs at once, up to
        ``_CHUNK_ELEMENTS`` numbers)."""
        per_step = self.num_worlds * max(1, self.max_vehicles, self.num_inflows * NUM_SPAWN_RANDOMS)
        return max(1, min(_CHUNK_ELEMENTS // per_step, 2048))

    def _has_noise(self) -> bool:
        return bool(np.any(self.state.noise > 0))

    # --------------------------------------------------------------------------------------------- reset
    def reset(self, seed: int | Sequence[int] | None = None, worlds: Sequence[int] | None = None) -> SimState:
        """Place the scenario's initial vehicles.

        Args:
            seed: one seed (world b gets ``seed + b``), one seed per reset world, or None (fresh entropy).
            worlds: indices of the worlds to reset (default: all). Others keep running untouched.
        """
        idx = self._world_indices(worlds)
        seeds = self._resolve_seeds(seed, idx)
        st = self.state
        for b, s in zip(idx, seeds, strict=True):
            streams = _Streams(int(s))
            self._streams[b] = streams
            self._seeds[b] = s
            self._write_world(int(b), *self.scenario.sample_columns(streams.init))
        for ahead in (self._noise, self._spawn, self._loss):
            ahead.discard(idx)
        st.profile[idx] = self._profile[None, :]
        refresh = refresh_worlds_serial if idx.size <= SERIAL_WORLDS else refresh_worlds
        refresh(self.road.arrays, st.packed, self.scratch, self.params, idx)
        self._is_reset = True
        return st

    def _world_indices(self, worlds) -> np.ndarray:
        """(k,) int64 indices of ``worlds`` (default all), each in range and named once (parallel kernels
        handle one world per thread)."""
        idx = np.arange(self.num_worlds) if worlds is None else np.asarray(worlds, dtype=np.int64).reshape(-1)
        if idx.size and (idx.min() < 0 or idx.max() >= self.num_worlds):
            raise DrivediffError(f"world indices must be in [0, {self.num_worlds}); got {idx.tolist()}")
        if idx.size > 1 and np.unique(idx).size != idx.size:
            raise DrivediffError(f"world indices must not repeat; got {idx.tolist()}")
        return idx

    def _resolve_seeds(self, seed, idx: np.ndarray) -> np.ndarray:
        if seed is None:
            return np.random.SeedSequence().generate_state(idx.size, dtype=np.uint32).astype(np.int64)
        if np.ndim(seed) == 0:
            if not isinstance(seed, int | np.integer) or seed < 0:
                raise DrivediffError(f"seed must be a non-negative integer, got {seed!r}")
            return int(seed) + idx
        seeds = np.asarray(seed)
        if seeds.shape != idx.shape or not np.issubdtype(seeds.dtype, np.integer) or np.any(seeds < 0):
            raise DrivediffError(f"seed must be one non-negative integer or one per reset world ({idx.size})")
        return seeds.astype(np.int64)

    def _write_world(self, b: int, cols: np.ndarray, lanes: np.ndarray, route: np.ndarray) -> None:
        """Put the vehicles of ``CompiledScenario.sample_columns`` into world b's first slots (one kernel
        call, ``kernels.reset.write_world``; then the lateral offsets, in NumPy as ``Road.positions``)."""
        st = self.state
        n = lanes.shape[0]
        if n > self.max_vehicles:
            raise DrivediffError(f"the scenario placed {n} vehicles but the world has {self.max_vehicles} slots")
        road = self.road
        first, length = road._pt_first
        s_row, d_row = self._s_d
        if write_world(st.packed, self._fresh.packed, b, cols, self._columns, s_row, lanes, route, road._pt_columns,
                       first, length) == BAD_LANE:
            raise IndexError(f"lane indices must be in [0, {road.num_lanes}); got {lanes.min()}..{lanes.max()}")
        d = cols[d_row]
        if d.any():
            x, y, h = st.x[b, :n], st.y[b, :n], st.yaw[b, :n]
            st.x[b, :n], st.y[b, :n] = x - d * np.sin(h), y + d * np.cos(h)

    # ---------------------------------------------------------------------------------------- randomness
    def step_inputs(self, num_steps: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The random inputs (noise, arrivals, packet loss) of the next ``num_steps`` steps of every world,
        drawn as ``step`` (one step) or one chunk of ``run`` would draw them; for callers that run
        ``kernels.step.step_chunk`` themselves. ``num_steps`` must not exceed ``steps_per_chunk``."""
        if not 1 <= num_steps <= self.steps_per_chunk:
            raise DrivediffError(f"num_steps must be in [1, {self.steps_per_chunk}], got {num_steps}")
        return self._draw(1, None) if num_steps == 1 else self._draw(num_steps)

    def _draw(self, t: int, active: np.ndarray | None = None):
        """Random inputs for ``t`` steps: noise (B, t, N|0), arrivals (B, t, K, 6), packet loss (B, t, N|0).
        Worlds not in ``active`` (one step only) take nothing, so their streams stay where they are."""
        b, k = self.num_worlds, self.num_inflows
        noisy = self._has_noise()
        lossy = self.params.v2v_loss > 0
        if t == 1:
            noise = self._noise.take1(active) if noisy else np.zeros((b, 1, 0))
            spawn = self._spawn.take1(active) if k else np.zeros((b, 1, 0, NUM_SPAWN_RANDOMS))
            loss = self._loss.take1(active) if lossy else np.zeros((b, 1, 0))
            return noise, spawn, loss
        if active is not None:
            raise DrivediffError("only single steps take an active mask")
        noise = self._noise.take(t) if noisy else np.zeros((b, t, 0))
        spawn = self._spawn.take(t) if k else np.zeros((b, t, 0, NUM_SPAWN_RANDOMS))
        loss = self._loss.take(t) if lossy else np.zeros((b, t, 0))
        return noise, spawn, loss

    # ---------------------------------------------------------------------------------------------- step
    def _check_reset(self) -> None:
        if not self._is_reset:
            raise DrivediffError("call reset() before step() or run()")

    def check_actions(self, actions) -> np.ndarray:
        """Validate (B, N, 2) [acceleration m/s^2, steering rad] actions; returns a float64 array."""
        a = np.asarray(actions, dtype=np.float64)
        want = (self.num_worlds, self.max_vehicles, 2)
        if a.shape != want:
            raise ActionError(f"actions must have shape {want} (worlds, vehicle slots, [accel, steer]); "
                              f"got {a.shape}")
        bad = ~np.isfinite(a) & (self.state.behavior == Behavior.EXTERNAL)[..., None] & self.state.valid[..., None]
        if bad.any():
            w, i, _ = np.argwhere(bad)[0]
            raise ActionError(f"action of world {w}, vehicle slot {i} is not finite: {a[w, i].tolist()}")
        return np.where(np.isfinite(a), a, 0.0)

    def step(self, actions=None, active=None) -> SimState:
        """Advance every (active) world by one step.

        Args:
            actions: (B, N, 2) acceleration [m/s^2] and steering [rad] of EXTERNAL vehicles; other
                vehicles ignore theirs. None: zeros.
            active: (B,) bool, the worlds to advance (default all); inactive worlds draw no randomness.
        """
        self._check_reset()
        acts = self._zero_actions if actions is None else self.check_actions(actions)
        act = self._all if active is None else np.asarray(active, dtype=np.bool_).reshape(self.num_worlds)
        noise, spawn, loss = self._draw(1, None if active is None else act)
        step_worlds(self.road.arrays, self.state.packed, self.scratch, self.params, self.inflow, acts, noise,
                    spawn, loss, act, 1, self._no_record, False, chunk_count(self.num_worlds))
        return self.state

    def run(self, num_steps: int, record: bool = False, actions=None, progress=None) -> dict | None:
        """Advance all worlds ``num_steps`` steps, one kernel call per chunk of steps.

        Args:
            num_steps: steps to simulate.
            record: return the state after every step: a dict of (B, T, N) arrays (``layout.LOG_FIELDS``)
                plus ``t`` (T,) [s].
            actions: fixed (B, N, 2) actions for EXTERNAL vehicles (default zeros).
            progress: optional callable ``progress(steps_done)`` called after each chunk.
        """
        self._check_reset()
        if not isinstance(num_steps, int | np.integer) or num_steps < 0:
            raise DrivediffError(f"num_steps must be a non-negative integer, got {num_steps!r}")
        acts = self._zero_actions if actions is None else self.check_actions(actions)
        chunk = max(1, min(num_steps, self.steps_per_chunk))
        parts = []
        t0 = int(self.state.step[0])
        done = 0
        while done < num_steps:
            t = min(chunk, num_steps - done)
            noise, spawn, loss = self._draw(t)
            rec = alloc_record(self.num_worlds, t, self.max_vehicles) if record else self._no_record
            step_worlds(self.road.arrays, self.state.packed, self.scratch, self.params, self.inflow, acts,
                        noise, spawn, loss, self._all, t, rec, record, chunk_count(self.num_worlds))
            if record:
                parts.append(record_to_dict(rec))
            done += t
            if progress is not None:
                progress(done)
        if not record:
            return None
        if parts:
            result = {k: np.concatenate([p[k] for p in parts], axis=1) for k in parts[0]}
        else:
            empty = record_to_dict(alloc_record(self.num_worlds, 0, self.max_vehicles))
            result = empty
        result["t"] = (t0 + 1 + np.arange(num_steps)) * self.dt
        return result

    # ------------------------------------------------------------------------------------------- helpers
    def refresh(self, worlds=None) -> SimState:
        """Recompute collision and off-road flags, the occupancy index and the leader/gap/TTC metrics
        after editing ``state`` by hand (positions, lanes, validity)."""
        self._check_reset()
        idx = self._world_indices(worlds)
        refresh_worlds(self.road.arrays, self.state.packed, self.scratch, self.params, idx)
        return self.state

    def snapshot(self, b: int = 0) -> dict[str, np.ndarray]:
        """The current state of world b as (1, N) arrays of the log fields (for recording step by step)."""
        return {name: getattr(self.state, name)[b][None].copy() for name in L.LOG_FIELDS}

    def set_behavior(self, behavior: Behavior, slots, worlds=None) -> None:
        """Switch how the given vehicle slots are driven (e.g. controlled vehicles to EXTERNAL)."""
        w = slice(None) if worlds is None else np.asarray(worlds)
        self.state.behavior[w, slots] = int(behavior)
        if behavior in (Behavior.EXTERNAL, Behavior.META):
            self.state.target_lane[w, slots] = self.state.lane[w, slots]

    def summary(self, b: int = 0) -> dict:
        st = self.state
        v = st.valid[b]
        return dict(step=int(st.step[b]), time=float(st.step[b] * self.dt), vehicles=int(v.sum()),
                    collided=int(st.collided[b][v].sum()), offroad=int(st.offroad[b][v].sum()),
                    mean_speed=float(st.speed[b][v].mean()) if v.any() else math.nan)

