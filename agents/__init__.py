"""Policies that drive the controlled vehicles of a World.

A policy has ``reset(world)`` (take control of the world's controlled vehicles) and ``act(world)``, which
returns (B, N, 2) actions [acceleration m/s^2, steering rad] for ``world.step``.

    ExpertPolicy      the simulator's own IDM/MOBIL drives them (the reference "expert")
    DiffusionPolicy   the CTDE diffusion planner (decentralised, centralised, communication modes)
"""

from drivediff.agents.base import ExpertPolicy, Policy, make_policy

__all__ = ["ExpertPolicy", "Policy", "make_policy"]
