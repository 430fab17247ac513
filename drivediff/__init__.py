"""drivediff: multi-agent driving simulation with a CTDE diffusion planner.

Subpackages:
    drivediff.sim          Numba simulator core (no torch, no pygame)
    drivediff.env          PettingZoo / Gymnasium / batched environments
    drivediff.planner      diffusion planner (torch)
    drivediff.scenarios    scenario schema, road builders and the YAML catalog
    drivediff.agents       policies: IDM/MOBIL, ACC, CACC, diffusion
    drivediff.render       pygame renderer, replay viewer, exporters
    drivediff.experiments  platoon, safety evaluation, benchmarks
"""

from drivediff._version import __version__

__all__ = ["__version__"]
