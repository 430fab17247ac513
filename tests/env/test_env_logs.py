"""Episodes of the environments, recorded and written as logs the replay viewer opens."""

from __future__ import annotations

import gymnasium
import numpy as np
import pytest
from PIL import Image

import drivediff.env as de
from drivediff.errors import DrivediffError
from drivediff.render import colors as C
from drivediff.render.cli import replay
from drivediff.render.scene import LogScene
from drivediff.render.viewer import Viewer
from drivediff.sim.log import read_log


def test_parallel_env_episode_opens_in_the_viewer(tmp_path):
    env = de.parallel_env(scenario="merge", num_agents=2, record_log=True, action_repeat=2)
    env.reset(seed=3)
    rng = np.random.default_rng(0)
    steps = 0
    while env.agents and steps < 12:
        env.step({a: rng.uniform(-0.3, 0.3, 2).astype(np.float32) for a in env.agents})
        steps += 1
    path = env.save_log(tmp_path / "pz.npz", meta={"note": "test"})
    log = read_log(path)
    assert len(log.t) == 1 + 2 * steps  # the reset state, then every simulation step (action_repeat 2)
    np.testing.assert_allclose(np.diff(log.t), env.core.world.dt)
    st = env.core.world.state
    np.testing.assert_array_equal(log.arrays["x"][-1], st.x[0])  # the last frame is the world now
    assert log.meta["scenario"] == "merge" and log.meta["note"] == "test" and log.meta["agents"] == [0, 1]
    # the viewer and the headless export take it like any simulate log
    v = Viewer(LogScene(log), (640, 360), title="env")
    v.tick(0.0)
    v.close()
    gif = tmp_path / "pz.gif"
    assert replay(path, export=str(gif), size=(640, 360)) == 0
    with Image.open(gif) as im:
        assert im.n_frames == len(log.t)
        first = np.asarray(im.convert("RGB"))
    assert (first == C.CONTROLLED).all(axis=-1).any()  # the agents' vehicles are drawn as controlled


def test_a_new_episode_starts_a_new_log(tmp_path):
    env = gymnasium.make("drivediff/highway-v0", record_log=True)
    env.reset(seed=0)
    for _ in range(5):
        env.step(np.zeros(2, dtype=np.float32))
    env.reset(seed=1)
    env.step(np.zeros(2, dtype=np.float32))
    log = read_log(env.unwrapped.save_log(tmp_path / "g.npz"))
    assert len(log.t) == 2


def test_recording_errors_are_clear(tmp_path):
    env = de.parallel_env(scenario="merge", num_agents=1)
    env.reset(seed=0)
    with pytest.raises(DrivediffError, match="record_log=True"):
        env.save_log(tmp_path / "x.npz")
    assert not (tmp_path / "x.npz").exists()
    with pytest.raises(DrivediffError, match="record_log records one world"):
        de.VectorEnv("merge", num_worlds=4, record_log=True)
