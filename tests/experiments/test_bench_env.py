"""The batched bench's keep-distance policy: what it decides, and that its agents survive where IDLE's crash."""

from __future__ import annotations

import numpy as np

from drivediff.env import VectorEnv
from drivediff.env.kernels import EV_COLLISION, IDLE
from drivediff.experiments.bench_env import KEEP_GAP, keep_distance_actions
from drivediff.scenarios import load_scenario


def test_keep_distance_reads_the_leader_gap_in_metres():
    envs = VectorEnv("highway", num_worlds=1, num_agents=3, action_type="discrete")
    layout = envs.layout
    col = layout.names.index("ego.leader_gap")
    obs = np.zeros((1, 3, layout.dim), dtype=np.float32)
    gaps = np.array([KEEP_GAP[0] - 1.0, 0.5 * (KEEP_GAP[0] + KEEP_GAP[1]), KEEP_GAP[1] + 1.0])
    obs[0, :, col] = gaps / layout.scale[col]
    np.testing.assert_array_equal(keep_distance_actions(obs, layout), [[4, IDLE, 3]])  # SLOWER, IDLE, FASTER


def test_keep_distance_agents_survive_where_idle_agents_crash():
    """16-vehicle highway (the bench's row), 16 worlds x 4 agents, 400 steps (27 s) from the same seed."""
    scen = load_scenario("highway", overrides={"traffic": {"count": 15}})
    result = {}
    for policy in ("idle", "keep_distance"):
        envs = VectorEnv(scen, num_worlds=16, num_agents=4, action_type="discrete")
        obs, _ = envs.reset(seed=0)
        live = crashes = 0
        for _ in range(400):
            acts = keep_distance_actions(obs, envs.layout) if policy == "keep_distance" else \
                np.full((16, 4), IDLE, dtype=np.int64)
            live += int(envs.core.alive.sum())
            obs, _, _, _, info = envs.step(acts)
            crashes += int((info["event"] == EV_COLLISION).sum())
        result[policy] = (live / (400 * 16 * 4), crashes)
    (idle_live, idle_crashes), (keep_live, keep_crashes) = result["idle"], result["keep_distance"]
    assert idle_crashes >= 20 and idle_live < 0.85  # measured: 35 collisions, 75% of the slots live
    assert keep_crashes <= idle_crashes // 4 and keep_live > 0.9  # measured: 2 collisions, 97% live
