"""drivediff environments: PettingZoo, Gymnasium, a batched vector API and a highway-env bridge.

    parallel_env(**kw)   PettingZoo ParallelEnv for a catalog scenario or scenario file (``drivediff.env.parallel``)
    env(**kw)            the AEC version, through PettingZoo's parallel_to_aec converter
    DrivediffEnv         Gymnasium single-agent env; ids ``drivediff/<scenario>-v0`` are registered on import
    VectorEnv            B worlds x A agents per call, numpy arrays in and out (``drivediff.env.vector``)
    EnvConfig            the options all of them share (``drivediff.env.config``)
    highway_bridge       highway-env scenes -> drivediff scenarios; drivediff policies driving highway-env

Observations are documented in ``drivediff.env.observation``, rewards in ``drivediff.env.rewards``.
Importing this package registers the Gymnasium ids and nothing else: the simulator (Numba) loads on first use.
"""

from __future__ import annotations

import importlib

from drivediff.env.gym import register_envs

__all__ = ["DrivediffEnv", "DrivediffParallelEnv", "EnvConfig", "ObservationConfig", "RewardConfig", "VectorEnv",
           "env", "parallel_env", "register_envs"]

_LAZY = {
    "DrivediffEnv": "drivediff.env.gym",
    "DrivediffParallelEnv": "drivediff.env.parallel",
    "env": "drivediff.env.parallel",
    "parallel_env": "drivediff.env.parallel",
    "VectorEnv": "drivediff.env.vector",
    "EnvConfig": "drivediff.env.config",
    "ObservationConfig": "drivediff.env.config",
    "RewardConfig": "drivediff.env.config",
}


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'drivediff.env' has no attribute {name!r}")


register_envs()
