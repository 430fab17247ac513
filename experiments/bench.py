"""Benchmarks: ``drivediff bench sim``.

Simulator throughput in vehicle-steps per second (vehicles on the road x simulation steps / wall time):

1. the highway-v0 configuration (4 lanes, 50 vehicles + 1 controlled, IDM + MOBIL, 15 Hz) in
   highway-env (its simulation loop: ``road.act(); road.step(1/15)``, which is what ``env.step`` runs
   per frame) and in drivediff (one world, one thread), side by side in this process;
2. batched worlds (256 x 51 vehicles) on one and on all threads;
3. large worlds (10 to 1,000 vehicles on one highway): the cost per vehicle-step should stay flat;
4. cold start (Numba compiles every kernel into an empty cache) and warm start (kernels load from the
   cache), each in a fresh process.

Wall-clock numbers depend on the machine; the README records the ones measured on the project's
reference machine (2 cores).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numba

SIM_HZ = 15


def _drivediff_rate(scenario, overrides, num_worlds, steps, threads, repeats=3):
    """Best-of-``repeats`` vehicle-steps/s of ``World.run`` (vehicles counted after each run)."""
    from drivediff.sim import World

    numba.set_num_threads(threads)
    world = World(scenario, num_worlds=num_worlds, overrides=overrides)
    world.reset(seed=0)
    world.run(5)  # compile / warm caches
    best = 0.0
    for r in range(repeats):
        world.reset(seed=r)
        n0 = world.state.valid.sum()
        t0 = time.perf_counter()
        world.run(steps)
        wall = time.perf_counter() - t0
        vehicles = 0.5 * (n0 + world.state.valid.sum())
        best = max(best, vehicles * steps / wall)
    numba.set_num_threads(numba.config.NUMBA_NUM_THREADS)
    return best


def _drivediff_step_rate(steps=300):
    """vehicle-steps/s when stepping one world one ``World.step()`` call at a time (Python API)."""
    from drivediff.sim import World

    numba.set_num_threads(1)
    world = World("highway")
    world.reset(seed=0)
    world.step()
    n0 = world.state.valid.sum()
    t0 = time.perf_counter()
    for _ in range(steps):
        world.step()
    wall = time.perf_counter() - t0
    numba.set_num_threads(numba.config.NUMBA_NUM_THREADS)
    return 0.5 * (n0 + world.state.valid.sum()) * steps / wall


def _highway_env_rate(steps):
    """vehicle-steps/s of highway-env's highway-v0 simulation loop (default config: 4 lanes, 50 + 1
    vehicles, 15 Hz). None if highway-env is not installed."""
    try:
        import gymnasium as gym
        import highway_env  # noqa: F401
    except ImportError:
        return None
    env = gym.make("highway-v0")
    env.reset(seed=0)
    road = env.unwrapped.road
    dt = 1.0 / env.unwrapped.config["simulation_frequency"]
    n = len(road.vehicles)
    t0 = time.perf_counter()
    for _ in range(steps):
        road.act()
        road.step(dt)
    wall = time.perf_counter() - t0
    env.close()
    return n * steps / wall, int(env.unwrapped.config["simulation_frequency"]), n


_START_SCRIPT = """
import time
t0 = time.perf_counter()
from drivediff.sim import World
w = World("highway")
w.reset(seed=0)
w.step()
print(time.perf_counter() - t0)
"""


def _start_time(cache_dir: str) -> float:
    env = dict(os.environ, NUMBA_CACHE_DIR=cache_dir)
    out = subprocess.run([sys.executable, "-c", _START_SCRIPT], env=env, capture_output=True, text=True,
                         check=True)
    return float(out.stdout.strip().splitlines()[-1])


def run_sim_bench(quick: bool = False, with_highway_env: bool = True, cold: bool = True,
                  progress=None) -> dict:
    """Run every simulator benchmark; returns a JSON-serialisable dict."""

    def note(msg):
        if progress is not None:
            progress.print(f"[dim]{msg}[/]")

    steps = 150 if quick else 600
    res: dict = {"machine": {"cpus": os.cpu_count(), "numba_threads": numba.config.NUMBA_NUM_THREADS,
                             "numba": numba.__version__}}
    note("highway-v0 configuration: drivediff, 1 world, 1 thread")
    dd = _drivediff_rate("highway", None, 1, steps, threads=1)
    he = None
    if with_highway_env:
        note("highway-v0: highway-env (this takes a while: it is slow)")
        he = _highway_env_rate(30 if quick else 150)
    res["highway_v0"] = {
        "drivediff_vehicle_steps_per_s": dd,
        "drivediff_step_api_vehicle_steps_per_s": _drivediff_step_rate(100 if quick else 300),
        "highway_env_vehicle_steps_per_s": None if he is None else he[0],
        "highway_env_sim_hz": None if he is None else he[1],
        "highway_env_vehicles": None if he is None else he[2],
        "ratio": None if he is None else dd / he[0],
    }
    note("batched worlds: 256 x highway-v0")
    nb = 32 if quick else 256
    res["batched"] = {
        "num_worlds": nb,
        "vehicle_steps_per_s_1_thread": _drivediff_rate("highway", None, nb, steps // 4, threads=1, repeats=1),
        "vehicle_steps_per_s_all_threads": _drivediff_rate("highway", None, nb, steps // 4,
                                                           threads=numba.config.NUMBA_NUM_THREADS, repeats=1),
        "threads": numba.config.NUMBA_NUM_THREADS,
    }
    note("large worlds: 10 to 1,000 vehicles")
    res["scaling"] = []
    for count in ([10, 100] if quick else [10, 100, 300, 1000]):
        length = max(1000.0, count * 22.0 + 1500.0)
        ov = {"traffic": {"count": count}, "road": {"length": length}}
        rate = _drivediff_rate("highway", ov, 1, steps // 2, threads=1, repeats=2)
        res["scaling"].append({"vehicles": count + 1, "vehicle_steps_per_s": rate,
                               "ns_per_vehicle_step": 1e9 / rate})
    if cold and not quick:
        note("cold start (compiling every kernel in an empty cache) and warm start")
        with tempfile.TemporaryDirectory() as tmp:
            res["start"] = {"cold_s": _start_time(tmp), "warm_s": _start_time(tmp)}
    else:
        cache = os.environ.get("NUMBA_CACHE_DIR", str(Path(".numba_cache").resolve()))
        res["start"] = {"cold_s": None, "warm_s": _start_time(cache)}
    return res


def print_sim_bench(res: dict, console) -> None:
    from rich.table import Table

    hv = res["highway_v0"]
    t = Table(title="highway-v0 configuration (4 lanes, 51 vehicles, IDM + MOBIL, 15 Hz), one world, one thread")
    t.add_column("simulator")
    t.add_column("vehicle-steps/s", justify="right")
    t.add_column("vs highway-env", justify="right")
    if hv["highway_env_vehicle_steps_per_s"]:
        t.add_row("highway-env (road.act + road.step)", f"{hv['highway_env_vehicle_steps_per_s']:,.0f}", "1x")
    ratio = f"{hv['ratio']:,.0f}x" if hv["ratio"] else "-"
    t.add_row("drivediff World.run", f"{hv['drivediff_vehicle_steps_per_s']:,.0f}", ratio)
    step_ratio = (f"{hv['drivediff_step_api_vehicle_steps_per_s'] / hv['highway_env_vehicle_steps_per_s']:,.0f}x"
                  if hv["highway_env_vehicle_steps_per_s"] else "-")
    t.add_row("drivediff World.step (one call per step)", f"{hv['drivediff_step_api_vehicle_steps_per_s']:,.0f}",
              step_ratio)
    console.print(t)
    b = res["batched"]
    t = Table(title=f"batched: {b['num_worlds']} worlds x 51 vehicles")
    t.add_column("threads")
    t.add_column("vehicle-steps/s", justify="right")
    t.add_row("1", f"{b['vehicle_steps_per_s_1_thread']:,.0f}")
    t.add_row(str(b["threads"]), f"{b['vehicle_steps_per_s_all_threads']:,.0f}")
    console.print(t)
    t = Table(title="large worlds (one world, one thread)")
    t.add_column("vehicles", justify="right")
    t.add_column("vehicle-steps/s", justify="right")
    t.add_column("ns / vehicle-step", justify="right")
    for row in res["scaling"]:
        t.add_row(str(row["vehicles"]), f"{row['vehicle_steps_per_s']:,.0f}", f"{row['ns_per_vehicle_step']:.0f}")
    console.print(t)
    s = res["start"]
    cold = "-" if s["cold_s"] is None else f"{s['cold_s']:.1f} s"
    console.print(f"start (import, build World, reset, first step): cold {cold}, warm {s['warm_s']:.2f} s")


if __name__ == "__main__":
    print(json.dumps(run_sim_bench(quick="--quick" in sys.argv), indent=2))
