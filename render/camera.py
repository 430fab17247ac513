"""The camera: how world metres map to screen pixels.

World coordinates are metres with x east, y north (y up) and yaw counter-clockwise; the screen has its
origin at the top-left corner with y down. A :class:`Camera` puts the world point ``center`` at the middle
of the screen, scales by ``scale`` pixels per metre and rotates the world by ``rotation`` radians
counter-clockwise first (``rotation = pi/2 - yaw`` draws a vehicle of heading ``yaw`` pointing up:
"heading-up").

    screen_x = W/2 + scale * ( cos(r) (x - cx) - sin(r) (y - cy))
    screen_y = H/2 - scale * ( sin(r) (x - cx) + cos(r) (y - cy))
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np

__all__ = ["Camera", "MIN_SCALE", "MAX_SCALE"]

MIN_SCALE = 0.05  # [px/m]
MAX_SCALE = 200.0  # [px/m]


@dataclass(frozen=True)
class Camera:
    """A view of the world.

    Attributes:
        center: world point drawn at the centre of the screen [m].
        scale: pixels per metre.
        rotation: counter-clockwise rotation of the world on screen [rad] (0: north up).
        size: screen (width, height) [px].
    """

    center: tuple[float, float] = (0.0, 0.0)
    scale: float = 8.0
    rotation: float = 0.0
    size: tuple[int, int] = (1280, 720)

    def __post_init__(self):
        if not (math.isfinite(self.scale) and self.scale > 0):
            raise ValueError(f"camera scale must be a positive number of pixels per metre, got {self.scale}")
        if not all(math.isfinite(v) for v in (*self.center, self.rotation)):
            raise ValueError(f"camera centre and rotation must be finite, got {self.center}, {self.rotation}")

    # ------------------------------------------------------------------------------------------ factories
    @classmethod
    def fit(cls, bounds: tuple[float, float, float, float], size: tuple[int, int] = (1280, 720),
            margin: float = 0.04, rotation: float = 0.0) -> Camera:
        """The camera that shows the world box ``bounds`` (xmin, ymin, xmax, ymax) [m] whole, north up.

        Args:
            bounds: the box to show [m].
            size: screen (width, height) [px].
            margin: empty border as a fraction of the screen on each side.
            rotation: rotation of the view [rad]; the fit is computed for the rotated box.
        """
        xmin, ymin, xmax, ymax = (float(v) for v in bounds)
        cx, cy = 0.5 * (xmin + xmax), 0.5 * (ymin + ymax)
        c, s = abs(math.cos(rotation)), abs(math.sin(rotation))
        w, h = max(xmax - xmin, 1.0), max(ymax - ymin, 1.0)
        rw, rh = c * w + s * h, s * w + c * h
        usable = (size[0] * (1 - 2 * margin), size[1] * (1 - 2 * margin))
        scale = min(usable[0] / rw, usable[1] / rh)
        return cls((cx, cy), float(np.clip(scale, MIN_SCALE, MAX_SCALE)), rotation, tuple(size))

    def with_(self, **kw) -> Camera:
        """A copy with some fields changed (``center``, ``scale``, ``rotation``, ``size``)."""
        if "scale" in kw:
            kw["scale"] = float(np.clip(kw["scale"], MIN_SCALE, MAX_SCALE))
        return replace(self, **kw)

    def zoomed(self, factor: float, anchor: tuple[float, float] | None = None) -> Camera:
        """Zoomed by ``factor`` keeping the world point under screen pixel ``anchor`` fixed (default: centre)."""
        new = self.with_(scale=self.scale * factor)
        if anchor is None:
            return new
        wx, wy = self.to_world(np.array(anchor, dtype=np.float64))
        ax, ay = new.to_world(np.array(anchor, dtype=np.float64))
        return new.with_(center=(float(new.center[0] + wx - ax), float(new.center[1] + wy - ay)))

    def panned(self, dx: float, dy: float) -> Camera:
        """Moved so that the picture shifts by (dx, dy) screen pixels (a drag)."""
        c0 = self.to_world(np.array([self.size[0] / 2 - dx, self.size[1] / 2 - dy]))
        return self.with_(center=(float(c0[0]), float(c0[1])))

    # ------------------------------------------------------------------------------------------ transforms
    @property
    def matrix(self) -> np.ndarray:
        """(2, 2) linear part of world -> screen (rotation, scale and the y flip)."""
        c, s = math.cos(self.rotation), math.sin(self.rotation)
        k = self.scale
        return np.array([[k * c, -k * s], [-k * s, -k * c]])

    @property
    def offset(self) -> np.ndarray:
        """(2,) screen position of the world origin [px]."""
        return np.array([self.size[0] / 2, self.size[1] / 2]) - self.matrix @ np.asarray(self.center, float)

    def to_screen(self, xy: np.ndarray) -> np.ndarray:
        """World points (..., 2) [m] -> screen points (..., 2) [px, float]."""
        xy = np.asarray(xy, dtype=np.float64)
        return xy @ self.matrix.T + self.offset

    def to_world(self, pxy: np.ndarray) -> np.ndarray:
        """Screen points (..., 2) [px] -> world points (..., 2) [m]."""
        pxy = np.asarray(pxy, dtype=np.float64)
        return (pxy - self.offset) @ np.linalg.inv(self.matrix).T

    def view_bounds(self, margin_px: float = 0.0) -> tuple[float, float, float, float]:
        """Axis-aligned world box (xmin, ymin, xmax, ymax) [m] that covers the screen plus a margin."""
        w, h = self.size
        m = margin_px
        corners = self.to_world(np.array([[-m, -m], [w + m, -m], [w + m, h + m], [-m, h + m]], dtype=np.float64))
        return (float(corners[:, 0].min()), float(corners[:, 1].min()),
                float(corners[:, 0].max()), float(corners[:, 1].max()))

    def meters(self, pixels: float) -> float:
        """A screen length [px] in metres."""
        return pixels / self.scale
