"""Shared fixtures of the planner tests."""

import pytest

from drivediff.sim.road import RoadBuilder, Straight


@pytest.fixture(scope="module")
def road():
    """A straight two-lane road (lanes 4 m apart, x from -100 to 400 m): the guidance tests' drivable area."""
    b = RoadBuilder()
    b.add_lane("r", Straight((-100, 0), (400, 0)))
    b.add_lane("l", Straight((-100, 4), (400, 4)))
    b.neighbors("l", "r")
    return b.build()
