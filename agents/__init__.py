"""Policies that drive the controlled vehicles of a World.

A policy has ``reset(world)`` (take control of the world's controlled vehicles) and ``act(world)``, which
returns (B, N, 2) actions [acceleration m/s^2, steering rad] for ``world.step``.

    ExpertPolicy      the simulator's own IDM/MOBIL drives them (the reference "expert")
    DiffusionPolicy   the CTDE diffusion planner (decentralised, centralised, communication modes)
    IDMPolicy, ACCPolicy, CACCPolicy
                      car-following controllers for platoons, as numpy policies or switched into the
                      simulator's in-kernel behaviours (``drivediff.agents.platoon``)
"""

from drivediff.agents.base import ExpertPolicy, Policy, make_policy
from drivediff.agents.platoon import ACCPolicy, CACCPolicy, CCParams, IDMPolicy, make_controller

__all__ = ["ACCPolicy", "CACCPolicy", "CCParams", "ExpertPolicy", "IDMPolicy", "Policy", "make_controller",
           "make_policy"]
