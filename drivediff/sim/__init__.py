"""The Numba traffic simulator core. Imports neither torch nor pygame.

    World            B worlds of one scenario: reset / step / run
    SimState         struct-of-arrays state (NamedTuple of (B, N) arrays)
    Behavior         how a vehicle is driven (IDM, EXTERNAL, META, PROFILE, ACC, CACC, ...)
    Road             lanes, topology, conflict points, drivable area
    boxes_overlap    oriented-rectangle overlap (the collision kernel)
"""

from drivediff.sim.geometry import boxes_overlap
from drivediff.sim.road import Road, RoadBuilder
from drivediff.sim.state import Behavior, SimParams, SimState
from drivediff.sim.world import World

__all__ = ["Behavior", "Road", "RoadBuilder", "SimParams", "SimState", "World", "boxes_overlap"]
