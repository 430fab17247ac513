"""``drivediff bench planner``: latency of the diffusion planner's replanning cycle.

For 1, 8 and 32 controlled vehicles (decentralised mode: one query per vehicle, all queries of a cycle in
one batch), 5 and 10 sampling steps: the wall time of a full replanning cycle (features, sampling of
every candidate, rollout, selection) on one CPU thread (torch and the simulator's Numba kernels), and on
the GPU when one is present. Each configuration is timed without guidance and with every safety-guidance
layer on (cost gradients on x0, barrier correction, cost-based selection), so the cost of guidance is read
off side by side.
"""

from __future__ import annotations

import numpy as np
import torch

from drivediff.agents.diffusion import DiffusionPolicy
from drivediff.planner.guidance import GuidanceConfig
from drivediff.planner.sampler import SamplerConfig
from drivediff.sim import World


def _cycle_latencies(checkpoint, vehicles: int, steps: int, candidates: int, device: str, cycles: int,
                     guided: bool = False) -> np.ndarray:
    world = World("highway", num_worlds=1, overrides={"controlled": {"count": vehicles}})
    world.reset(seed=0)
    pol = DiffusionPolicy(checkpoint, mode="decentralized", device=device, replan_every=0.2,
                          sampler=SamplerConfig(steps=steps, candidates=candidates),
                          guidance=GuidanceConfig() if guided else None)
    pol.reset(world)
    m = pol.replan_steps
    for _ in range(m * (cycles + 2)):
        world.step(pol.act(world))
    return np.asarray(pol.latencies[2:])  # the first cycles warm up allocators


def run_planner_bench(checkpoint=None, quick: bool = False, candidates: int = 4) -> dict:
    import numba

    threads, sim_threads = torch.get_num_threads(), numba.get_num_threads()
    torch.set_num_threads(1)
    # one core for everything: the simulator stepping the (single) world between replans would otherwise
    # keep a second thread spinning beside the planner's
    numba.set_num_threads(1)
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    rows = []
    try:
        for device in devices:
            for vehicles in ([1, 8] if quick else [1, 8, 32]):
                for steps in (5, 10):
                    for guided in (False, True):
                        lat = _cycle_latencies(checkpoint, vehicles, steps, candidates, device, 3 if quick else 30,
                                               guided)
                        rows.append({"device": device, "vehicles": vehicles, "sampling_steps": steps,
                                     "candidates": candidates, "guidance": guided,
                                     "cycle_ms_mean": 1000 * float(lat.mean()),
                                     "cycle_ms_p95": 1000 * float(np.percentile(lat, 95)),
                                     "per_vehicle_ms": 1000 * float(lat.mean()) / vehicles})
    finally:
        torch.set_num_threads(threads)
        numba.set_num_threads(sim_threads)
    return {"rows": rows, "torch_threads": 1, "torch": torch.__version__}


def print_planner_bench(res: dict, console) -> None:
    from rich.table import Table

    t = Table(title="diffusion planner: one replanning cycle (decentralised, one CPU thread)")
    for col in ("device", "vehicles", "steps", "candidates", "guidance", "mean [ms]", "p95 [ms]", "per vehicle [ms]"):
        t.add_column(col, justify="right")
    for r in res["rows"]:
        t.add_row(r["device"], str(r["vehicles"]), str(r["sampling_steps"]), str(r["candidates"]),
                  "on" if r["guidance"] else "off",
                  f"{r['cycle_ms_mean']:.1f}", f"{r['cycle_ms_p95']:.1f}", f"{r['per_vehicle_ms']:.2f}")
    console.print(t)


if __name__ == "__main__":
    import sys

    from rich.console import Console

    print_planner_bench(run_planner_bench(sys.argv[1] if len(sys.argv) > 1 else None, quick=True), Console())
