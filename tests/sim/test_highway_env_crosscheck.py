"""Car-following against highway-env 1.12's IDMVehicle on the same two-vehicle set-up.

highway-env runs in a fresh process: creating its intersection-v0 changes IDMVehicle's class constants
for the whole process. Both simulators integrate the same equations with the same explicit Euler scheme
and time step (15 Hz), so the only difference is floating-point evaluation order (FMA contraction,
library pow); trajectories agree to ~1e-9 m over 40 s and we allow 1e-6 m.
"""

import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from drivediff.sim import World

from .helpers import scenario

pytest.importorskip("highway_env")

STEPS = 600
DT = 1 / 15

SCRIPT = textwrap.dedent(f"""
    import json, numpy as np
    from highway_env.road.road import Road, RoadNetwork
    from highway_env.vehicle.behavior import IDMVehicle
    net = RoadNetwork.straight_road_network(lanes=1, length=10000, speed_limit=30)
    road = Road(network=net, np_random=np.random.RandomState(0))
    lane = net.get_lane(("0", "1", 0))
    lead = IDMVehicle(road, lane.position(100, 0), 0, 20.0, target_speed=22.0, enable_lane_change=False)
    fol = IDMVehicle(road, lane.position(60, 0), 0, 28.0, target_speed=29.0, enable_lane_change=False)
    assert IDMVehicle.DELTA == 4.0 and IDMVehicle.DISTANCE_WANTED == 10.0
    road.vehicles += [lead, fol]
    out = []
    for _ in range({STEPS}):
        road.act()
        road.step({DT!r})
        out.append([lead.position[0], lead.speed, fol.position[0], fol.speed])
    print(json.dumps(out))
""")


def test_two_vehicle_car_following_matches_highway_env():
    out = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, check=True)
    he = np.array(json.loads(out.stdout.strip().splitlines()[-1]))
    # highway-env semantics: centre-to-centre gap, s0 = 5 m + vehicle length, |a| <= 6 m/s^2, delta 4
    idm = {"s0": 10.0, "delta": 4.0, "a": 3.0, "b": 5.0, "time_gap": 1.5}
    sc = scenario(road={"type": "highway", "lanes": 1, "length": 10000, "speed_limit": 30}, dt=DT,
                  sim={"center_gap": True, "max_brake": 6.0, "max_accel": 6.0},
                  vehicles=[{"lane": "lane0", "s": 100, "speed": 20.0, "mobil": {"enabled": False},
                             "idm": {"desired_speed": 22.0, **idm}},
                            {"lane": "lane0", "s": 60, "speed": 28.0, "mobil": {"enabled": False},
                             "idm": {"desired_speed": 29.0, **idm}}])
    w = World(sc)
    w.reset(seed=0)
    rec = w.run(STEPS, record=True)
    ours = np.stack([rec["x"][0, :, 0], rec["speed"][0, :, 0], rec["x"][0, :, 1], rec["speed"][0, :, 1]], axis=1)
    # the follower brakes hard at first (clipped at -6 m/s^2), then settles behind the leader
    assert he[:, 3].min() < 21.5 and np.abs(np.diff(he[:, 3])).max() > 0.39
    np.testing.assert_allclose(ours, he, atol=1e-6, rtol=0)
