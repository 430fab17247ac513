"""Long runs of every catalog scenario: background traffic never collides nor leaves the road.

A collision among IDM/MOBIL vehicles at these densities is a bug in the behaviour models, not noise.
"""

import numpy as np
import pytest

from drivediff.scenarios import catalog_names
from drivediff.sim import World
from drivediff.sim.summary import episode_summary


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(catalog_names()))
def test_no_collisions_or_offroad_over_long_runs(name):
    world = World(name, num_worlds=16)
    world.reset(seed=2024)
    rec = world.run(4000, record=True)
    for b in range(world.num_worlds):
        s = episode_summary({k: rec[k][b] for k in rec if k != "t"}, world.dt)
        assert s["collisions"] == 0, (name, b, s)
        assert s["offroad_vehicle_steps"] == 0, (name, b, s)
    moving = rec["speed"][rec["valid"]]
    assert np.isfinite(moving).all() and moving.max() <= 40.0


def test_short_runs_of_every_scenario_are_clean():
    for name in catalog_names():
        world = World(name, num_worlds=2)
        world.reset(seed=1)
        rec = world.run(400, record=True)
        assert not (rec["collided"] & rec["valid"]).any(), name
        assert not (rec["offroad"] & rec["valid"]).any(), name
