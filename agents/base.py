"""The policy protocol and the IDM/MOBIL expert."""

from __future__ import annotations

from typing import Protocol

import numpy as np

from drivediff.sim import Behavior


class Policy(Protocol):
    name: str

    def reset(self, world) -> None: ...

    def act(self, world) -> np.ndarray: ...


class ExpertPolicy:
    """The controlled vehicles drive with the simulator's IDM/MOBIL (in-kernel, the data's expert)."""

    name = "idm"

    def reset(self, world) -> None:
        slots = np.arange(world.num_controlled)
        world.set_behavior(Behavior.IDM, slots)

    def act(self, world) -> np.ndarray:
        return np.zeros((world.num_worlds, world.max_vehicles, 2))


def make_policy(name: str, **kwargs) -> Policy:
    """``idm`` or ``diffusion`` (kwargs go to DiffusionPolicy: checkpoint, mode, ...)."""
    if name == "idm":
        return ExpertPolicy()
    if name == "diffusion":
        from drivediff.agents.diffusion import DiffusionPolicy

        return DiffusionPolicy(**kwargs)
    from drivediff.errors import DrivediffError

    raise DrivediffError(f"unknown policy {name!r} (idm, diffusion)")
