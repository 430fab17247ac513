"""The renderer's palette: one place for every colour, as (R, G, B) tuples of 0-255.

Roles (``ROLE_*``) index ``ROLE_COLORS``; the pixel tests read these constants, so changing a colour here
changes what the tests expect.
"""

from __future__ import annotations

import numpy as np

Color = tuple[int, int, int]

BACKGROUND: Color = (38, 46, 40)  # off-road ground
ASPHALT: Color = (74, 76, 82)  # drivable area
JUNCTION: Color = (88, 90, 98)  # drivable area of junction lanes (intersections, roundabout entries)
MARKING: Color = (228, 228, 222)  # lane lines
EDGE: Color = (30, 30, 34)  # outline of vehicles

# vehicle roles, in priority order (a collided controlled vehicle is drawn as collided)
ROLE_BACKGROUND, ROLE_CONTROLLED, ROLE_OFFROAD, ROLE_COLLIDED = range(4)
ROLE_NAMES = ("background", "controlled", "off-road", "collided")
BACKGROUND_VEHICLE: Color = (205, 208, 214)
CONTROLLED: Color = (52, 150, 255)
OFFROAD: Color = (255, 150, 30)
COLLIDED: Color = (236, 48, 48)
ROLE_COLORS: tuple[Color, ...] = (BACKGROUND_VEHICLE, CONTROLLED, OFFROAD, COLLIDED)
HEADING_MARK: Color = (24, 26, 30)
SELECTED: Color = (255, 226, 0)  # outline of the selected / followed vehicle

# overlays
PLAN: Color = (0, 232, 214)  # executed plan of a controlled vehicle
PREDICTION: Color = (206, 96, 255)  # predicted neighbour trajectories
CANDIDATE_LOW: Color = (70, 214, 96)  # cheapest candidate
CANDIDATE_MID: Color = (250, 216, 60)
CANDIDATE_HIGH: Color = (236, 70, 60)  # most expensive candidate
CHOSEN_OUTLINE: Color = (255, 255, 255)
TRAIL_FADE = 0.45  # trails are the role colour blended this far toward the asphalt

# text and panels
TEXT: Color = (240, 240, 240)
TEXT_DIM: Color = (170, 172, 178)
PANEL: Color = (16, 18, 22)
PANEL_ALPHA = 190
SCALE_BAR: Color = (240, 240, 240)

# timeline
TIMELINE_TRACK: Color = (90, 94, 102)
TIMELINE_DONE: Color = (52, 150, 255)
TIMELINE_KNOB: Color = (255, 255, 255)
EVENT_COLORS: dict[str, Color] = {"collision": COLLIDED, "offroad": OFFROAD, "ttc": (250, 216, 60)}


def blend(a: Color, b: Color, t: float) -> Color:
    """``a`` moved a fraction ``t`` toward ``b``."""
    return tuple(int(round(x + (y - x) * t)) for x, y in zip(a, b, strict=True))  # type: ignore[return-value]


TRAIL_COLORS: tuple[Color, ...] = tuple(blend(c, ASPHALT, TRAIL_FADE) for c in ROLE_COLORS)


def cost_colors(costs: np.ndarray) -> list[Color]:
    """Colours of candidate plans by cost: cheapest green, median yellow, dearest red.

    Args:
        costs: (C,) costs; non-finite costs get the dearest colour.

    Returns:
        C colours.
    """
    c = np.asarray(costs, dtype=np.float64).reshape(-1)
    finite = np.isfinite(c)
    if not finite.any():
        return [CANDIDATE_HIGH] * c.size
    lo, hi = float(c[finite].min()), float(c[finite].max())
    u = np.where(finite, (c - lo) / (hi - lo) if hi > lo else 0.0, 1.0)
    out = []
    for v in u:
        out.append(blend(CANDIDATE_LOW, CANDIDATE_MID, 2 * v) if v < 0.5
                   else blend(CANDIDATE_MID, CANDIDATE_HIGH, 2 * v - 1))
    return out
