"""Benchmarks: ``drivediff bench env``.

Environment throughput, side by side with highway-env in this process (observations and rewards included):

1. the highway-v0 configuration, one agent: highway-env's ``highway-v0`` (DiscreteMetaAction, Kinematics
   observation, 15 Hz simulation, 1 Hz policy: 15 simulation steps per environment step) against
   ``gym.make("drivediff/highway-v0", action_type="discrete", action_repeat=15)`` (the same 15 Hz
   simulation and 1 s control period), and drivediff's default (continuous actions, one 15 Hz step per
   environment step);
2. a 4-agent intersection through the PettingZoo parallel API on one core: highway-env's
   ``intersection-multi-agent-v0`` with 4 controlled vehicles (15 steps per environment step) against
   ``parallel_env(scenario="intersection", num_agents=4)`` with a 1 s control period (10 x 0.1 s steps,
   discrete meta-actions) and with the default 0.1 s period (continuous actions);
3. the batched API: ``VectorEnv`` with 256 worlds x 4 agents on one and on all threads (auto-reset
   included): the intersection, the highway at the catalog's density (51 vehicles), and lighter highways
   of 16, 8 and 4 vehicles at reset (the 4 agents with 12, 4 and no background vehicles): how the rate
   depends on the traffic each agent-step simulates.

Agents act with meta-action IDLE (drivediff) / a random action (highway-env) so that episodes run their
course. With IDLE an agent keeps its target speed and crashes into slower traffic; its slot then stays
empty until every agent of its world is done and the world resets. The batched rows are therefore also
measured (all threads) with a scripted keep-distance policy (``keep_distance_actions``, evaluated inside the
timed loop from the observations) whose agents rarely crash: a stand-in for a policy that has learned to
keep its distance. Rates: environment steps per second (one call to ``step``) and agent-steps per second
(live agents stepped per second; crashed, departed and finished agents are not counted), with the live
share of the agent slots. Wall-clock numbers depend on the machine and its load; the README records the
ones measured on the project's reference machine (2 cores).
"""

from __future__ import annotations

import json
import os
import sys
import time
import warnings

import numba
import numpy as np

INTERSECTION_AGENTS = 4
BATCH_WORLDS = 256
KEEP_GAP = (25.0, 50.0)  # [m] keep-distance policy: SLOWER under the first bumper gap, FASTER over the second
LIGHT_VEHICLES = (16, 8, 4)  # vehicles per world at reset of the lighter batched highways


def _timed(step, budget: float, min_steps: int = 3) -> tuple[float, int, int]:
    """Call ``step()`` (returns the agent-steps it did) for about ``budget`` seconds.

    Returns:
        (wall seconds, agent-steps, calls)
    """
    n = agents = 0
    t0 = time.perf_counter()
    while n < min_steps or time.perf_counter() - t0 < budget:
        agents += step()
        n += 1
    return time.perf_counter() - t0, agents, n


def _rates(wall: float, agent_steps: int, n: int, **extra) -> dict:
    return {"env_steps_per_s": n / wall, "agent_steps_per_s": agent_steps / wall, "env_steps": n, **extra}


# ---------------------------------------------------------------------------------------------- highway-env


def _highway_env(env_id: str, config: dict, budget: float) -> dict | None:
    try:
        import gymnasium as gym
        import highway_env  # noqa: F401
    except ImportError:
        return None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        env = gym.make(env_id, config=config)
        env.reset(seed=0)
        env.action_space.seed(0)
        agents = len(env.unwrapped.controlled_vehicles)

        def step():
            _, _, term, trunc, _ = env.step(env.action_space.sample())
            if term or trunc:
                env.reset()
            return agents

        wall, a, n = _timed(step, budget)
        cfg = env.unwrapped.config
        env.close()
    return _rates(wall, a, n, sim_steps_per_env_step=cfg["simulation_frequency"] // cfg["policy_frequency"],
                  agents=agents)


# ------------------------------------------------------------------------------------------------ drivediff


def _gym_rate(budget: float, **kwargs) -> dict:
    import gymnasium as gym

    import drivediff.env  # noqa: F401

    env = gym.make("drivediff/highway-v0", **kwargs).unwrapped
    env.reset(seed=0)
    discrete = env.core.discrete
    act = 1 if discrete else np.zeros(2, dtype=np.float32)

    def step():
        _, _, term, trunc, _ = env.step(act)
        if term or trunc:
            env.reset()
        return 1

    step()
    return _rates(*_timed(step, budget), sim_steps_per_env_step=env.config.action_repeat)


def _parallel_rate(budget: float, **kwargs) -> dict:
    from drivediff.env import parallel_env

    env = parallel_env(scenario="intersection", num_agents=INTERSECTION_AGENTS, **kwargs)
    env.reset(seed=0)
    act = 1 if env.core.discrete else np.zeros(2, dtype=np.float32)

    def step():
        if not env.agents:
            env.reset()
        live = env.agents
        env.step(dict.fromkeys(live, act))
        return len(live)

    step()
    return _rates(*_timed(step, budget), sim_steps_per_env_step=env.config.action_repeat)


def keep_distance_actions(obs: np.ndarray, layout) -> np.ndarray:
    """Meta-actions of a scripted policy whose agents survive: SLOWER (4) when the bumper gap to the vehicle
    ahead in lane is under ``KEEP_GAP[0]``, FASTER (3) over ``KEEP_GAP[1]`` or with none in range, IDLE (1)
    between. It reads the (B, A, D) observations only, as a learned policy would."""
    col = layout.names.index("ego.leader_gap")
    gap = obs[..., col] * layout.scale[col]
    return np.where(gap < KEEP_GAP[0], 4, np.where(gap > KEEP_GAP[1], 3, 1))


def _vector_rate(budget: float, scenario: str, num_worlds: int, policy: str = "idle") -> dict:
    """Batched rate with meta-actions IDLE (``policy="idle"``) or ``keep_distance_actions``."""
    from drivediff.env import VectorEnv

    envs = VectorEnv(scenario, num_worlds=num_worlds, num_agents=INTERSECTION_AGENTS, copy=False,
                     action_type="discrete")
    envs.reset(seed=0)
    idle = np.ones((num_worlds, INTERSECTION_AGENTS), dtype=np.int64)
    keep = policy == "keep_distance"

    def step():
        live = int(envs.core.alive.sum())
        envs.step(keep_distance_actions(envs.core.obs, envs.layout) if keep else idle)
        return live

    step()
    wall, agents, n = _timed(step, budget)
    return _rates(wall, agents, n, num_worlds=num_worlds, agents=INTERSECTION_AGENTS, policy=policy,
                  live_share=agents / (n * num_worlds * INTERSECTION_AGENTS),
                  vehicles_per_world=float(envs.world.state.valid.sum(1).mean()))


def run_env_bench(quick: bool = False, with_highway_env: bool = True, progress=None) -> dict:
    """Run every environment benchmark; returns a JSON-serialisable dict (see the module docstring)."""

    def note(msg):
        if progress is not None:
            progress.print(f"[dim]{msg}[/]")

    budget = 1.0 if quick else 4.0
    threads = numba.config.NUMBA_NUM_THREADS
    res: dict = {"machine": {"cpus": os.cpu_count(), "numba_threads": threads, "numba": numba.__version__}}
    numba.set_num_threads(1)
    note("highway-v0 configuration, 1 agent, one thread")
    res["highway_v0"] = {
        "drivediff_1s_period": _gym_rate(budget, action_type="discrete", action_repeat=15),
        "drivediff_default": _gym_rate(budget),
        "highway_env": _highway_env("highway-v0", {}, budget) if with_highway_env else None,
    }
    note("4-agent intersection, PettingZoo parallel API, one thread")
    res["intersection_parallel"] = {
        "drivediff_1s_period": _parallel_rate(budget, action_type="discrete", action_repeat=10),
        "drivediff_default": _parallel_rate(budget),
        "highway_env": _highway_env("intersection-multi-agent-v0", {"controlled_vehicles": INTERSECTION_AGENTS},
                                    budget) if with_highway_env else None,
    }
    numba.set_num_threads(threads)
    nb = 32 if quick else BATCH_WORLDS
    note(f"batched: {nb} worlds x {INTERSECTION_AGENTS} agents, {threads} threads")
    from drivediff.scenarios import load_scenario

    cases = [("intersection", "intersection"), ("highway", "highway")]
    # n vehicles at reset: the catalog's controlled vehicle and n - 1 traffic vehicles, 4 of them agents
    cases += [(f"highway_{n}", load_scenario("highway", overrides={"traffic": {"count": n - 1}}))
              for n in LIGHT_VEHICLES]
    res["batched"] = {"threads": threads}
    for key, scenario in cases:
        res["batched"][key] = _vector_rate(budget, scenario, nb)
        res["batched"][key]["keep_distance"] = _vector_rate(budget, scenario, nb, policy="keep_distance")
        numba.set_num_threads(1)
        res["batched"][key]["one_thread"] = _vector_rate(budget, scenario, nb)
        numba.set_num_threads(threads)
    return res


def _fmt(r: dict | None, key: str) -> str:
    return "-" if r is None else f"{r[key]:,.0f}"


def print_env_bench(res: dict, console) -> None:
    from rich.table import Table

    hv = res["highway_v0"]
    t = Table(title="highway-v0 configuration, 1 agent (observation and reward included), one thread")
    for col in ("environment", "sim steps / env step", "env steps/s", "vs highway-env"):
        t.add_column(col, justify="left" if col == "environment" else "right")
    he = hv["highway_env"]
    if he:
        t.add_row("highway-env highway-v0", str(he["sim_steps_per_env_step"]), _fmt(he, "env_steps_per_s"), "1x")
    for label, key in (("drivediff/highway-v0, 1 s period (meta-actions)", "drivediff_1s_period"),
                       ("drivediff/highway-v0, default (continuous)", "drivediff_default")):
        r = hv[key]
        ratio = f"{r['env_steps_per_s'] / he['env_steps_per_s']:,.0f}x" if he else "-"
        t.add_row(label, str(r["sim_steps_per_env_step"]), _fmt(r, "env_steps_per_s"), ratio)
    console.print(t)
    ip = res["intersection_parallel"]
    t = Table(title=f"{INTERSECTION_AGENTS}-agent intersection, PettingZoo parallel API, one thread")
    for col in ("environment", "sim steps / env step", "env steps/s", "agent-steps/s", "vs highway-env"):
        t.add_column(col, justify="left" if col == "environment" else "right")
    he = ip["highway_env"]
    if he:
        t.add_row("highway-env intersection-multi-agent-v0", str(he["sim_steps_per_env_step"]),
                  _fmt(he, "env_steps_per_s"), _fmt(he, "agent_steps_per_s"), "1x")
    for label, key in (("drivediff parallel_env, 1 s period (meta-actions)", "drivediff_1s_period"),
                       ("drivediff parallel_env, default 0.1 s (continuous)", "drivediff_default")):
        r = ip[key]
        ratio = f"{r['env_steps_per_s'] / he['env_steps_per_s']:,.0f}x" if he else "-"
        t.add_row(label, str(r["sim_steps_per_env_step"]), _fmt(r, "env_steps_per_s"), _fmt(r, "agent_steps_per_s"),
                  ratio)
    console.print(t)
    b = res["batched"]
    t = Table(title=f"batched VectorEnv, {b['intersection']['num_worlds']} worlds x {INTERSECTION_AGENTS} agents "
                    "(one simulation step per env step, auto-reset included)")
    nt = b["threads"]
    for col in ("scenario", "vehicles / world", "IDLE, 1 thread: agent-steps/s", f"IDLE, {nt} threads: env steps/s",
                "agent-steps/s", "live", f"keep distance, {nt} threads: agent-steps/s", "live"):
        t.add_column(col, justify="left" if col == "scenario" else "right")
    rows = [("intersection", "intersection"), ("highway", "highway (catalog density)")]
    rows += [(f"highway_{n}", f"highway, {n} vehicles at reset") for n in LIGHT_VEHICLES]
    for key, label in rows:
        r = b[key]
        k = r["keep_distance"]
        t.add_row(label, f"{r['vehicles_per_world']:.0f}", _fmt(r["one_thread"], "agent_steps_per_s"),
                  _fmt(r, "env_steps_per_s"), _fmt(r, "agent_steps_per_s"), f"{r['live_share']:.0%}",
                  _fmt(k, "agent_steps_per_s"), f"{k['live_share']:.0%}")
    console.print(t)


if __name__ == "__main__":
    print(json.dumps(run_env_bench(quick="--quick" in sys.argv, with_highway_env="--no-highway-env" not in sys.argv),
                     indent=2))
