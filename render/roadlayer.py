"""The static road layer: drivable area, junction areas and lane markings, drawn once per camera scale.

:func:`road_geometry` turns a :class:`~drivediff.sim.road.Road` into what drawing needs (world
coordinates, computed once per road and cached): the drivable-area polygon, the junction area (the union
of junction lanes' strips), solid lane lines as polylines and dashed lane lines as short segments.

:class:`RoadLayer` keeps a pre-rendered surface of the road around the current view (the view plus half a
screen on each side) for one scale and rotation; panning within that margin costs one blit. A camera
whose rotation changes every frame (heading-up) draws the road straight onto the frame instead.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass

import numpy as np
import pygame
import shapely
from shapely.geometry import LineString

from drivediff.render import colors as C
from drivediff.render.camera import Camera
from drivediff.sim.road import LineType, Road

__all__ = ["RoadGeometry", "RoadLayer", "draw_road", "road_geometry"]

DASH_ON = 3.0  # dash length [m]
DASH_PERIOD = 9.0  # dash + gap [m]
MARKING_WIDTH = 0.15  # [m]
MIN_SCALE_DASHES = 1.2  # [px/m] below this dashed lines are not drawn (they would blur into grey)
MIN_SCALE_LINES = 0.4  # [px/m] below this no lane lines at all
SIMPLIFY = 0.02  # [m] tolerance when simplifying outlines and lines for drawing


@dataclass(frozen=True)
class RoadGeometry:
    """A road in the form the renderer draws (world coordinates, metres).

    Attributes:
        area: drivable area (shapely Polygon or MultiPolygon).
        junction: area of junction lanes within the drivable area (may be empty).
        solid: solid lane lines (shapely MultiLineString, simplified to SIMPLIFY metres).
        dashes: (K, 2, 2) dashed lane lines as segments [start/end, xy].
        bounds: (xmin, ymin, xmax, ymax) of the drivable area.
    """

    area: object
    junction: object
    solid: object
    dashes: np.ndarray
    bounds: tuple[float, float, float, float]


_GEOMETRY_CACHE: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def road_geometry(road: Road) -> RoadGeometry:
    """The drawable geometry of ``road`` (computed once per road object)."""
    geom = _GEOMETRY_CACHE.get(road)
    if geom is None:
        geom = _build_geometry(road)
        _GEOMETRY_CACHE[road] = geom
    return geom


def _boundary(road: Road, lane: int, side: int) -> np.ndarray:
    """(P, 2) left (side=+1) or right (side=-1) edge of a lane."""
    p = road.lane_points(lane)
    h = road.lane_headings(lane)
    half = 0.5 * float(road.lane_width[lane]) * side
    return p + half * np.stack([-np.sin(h), np.cos(h)], axis=1)


def _line_types(road: Road, lane: int) -> tuple[int, int]:
    """(left, right) marking of a lane; a line shared with a neighbour is drawn once, as the left line of
    the right-hand lane, with the stronger of the two types."""
    left = int(road.left_line[lane])
    right_nb = int(road.lane_left[lane])
    if right_nb >= 0:
        left = max(left, int(road.right_line[right_nb]))
    right = int(road.right_line[lane]) if int(road.lane_right[lane]) < 0 else LineType.NONE
    return left, right


def _dash_segments(line: np.ndarray) -> np.ndarray:
    """(K, 2, 2) dashes along a polyline, DASH_ON long every DASH_PERIOD metres."""
    seg = np.hypot(*np.diff(line, axis=0).T)
    s = np.concatenate([[0.0], np.cumsum(seg)])
    if s[-1] < 1e-6:
        return np.zeros((0, 2, 2))
    start = np.arange(0.0, s[-1], DASH_PERIOD)
    end = np.minimum(start + DASH_ON, s[-1])
    pts = [np.stack([np.interp(v, s, line[:, 0]), np.interp(v, s, line[:, 1])], axis=1) for v in (start, end)]
    return np.stack(pts, axis=1)


def _build_geometry(road: Road) -> RoadGeometry:
    solid, dashes, strips = [], [], []
    for lane in range(road.num_lanes):
        for side, kind in zip((1, -1), _line_types(road, lane), strict=True):
            if kind == LineType.SOLID:
                solid.append(_boundary(road, lane, side))
            elif kind == LineType.DASHED:
                dashes.append(_dash_segments(_boundary(road, lane, side)))
        if road.junction[lane]:
            pts = road.lane_points(lane)
            if len(pts) >= 2:
                strips.append(LineString(pts).buffer(0.5 * float(road.lane_width[lane]), cap_style="flat"))
    junction = shapely.intersection(shapely.union_all(strips), road.polygon) if strips else shapely.Polygon()
    lines = shapely.MultiLineString([LineString(p) for p in solid if len(p) >= 2])
    return RoadGeometry(area=road.polygon.simplify(SIMPLIFY), junction=junction.simplify(SIMPLIFY),
                        solid=lines.simplify(SIMPLIFY),
                        dashes=np.concatenate(dashes) if dashes else np.zeros((0, 2, 2)),
                        bounds=tuple(float(v) for v in road.polygon.bounds))


# ------------------------------------------------------------------------------------------------ drawing


def _polygons(geom) -> list:
    """The polygons of a (clipped) shapely geometry."""
    if geom.is_empty:
        return []
    if geom.geom_type == "Polygon":
        return [geom]
    return [g for g in getattr(geom, "geoms", []) if g.geom_type == "Polygon" and not g.is_empty]


def _parts(geom) -> list:
    """The parts of a (clipped) shapely geometry."""
    if geom.is_empty:
        return []
    return list(getattr(geom, "geoms", [geom]))


def _fill(surface: pygame.Surface, ring, color, camera: Camera) -> None:
    pts = np.asarray(ring.coords)
    if len(pts) >= 3:
        pygame.draw.polygon(surface, color, np.rint(camera.to_screen(pts)).tolist())


def _draw_areas(surface: pygame.Surface, geom: RoadGeometry, camera: Camera, box) -> None:
    area = _polygons(shapely.clip_by_rect(geom.area, *box))
    junction = _polygons(shapely.clip_by_rect(geom.junction, *box)) if not geom.junction.is_empty else []
    for poly in area:
        _fill(surface, poly.exterior, C.ASPHALT, camera)
    for poly in junction:
        _fill(surface, poly.exterior, C.JUNCTION, camera)
        for hole in poly.interiors:
            _fill(surface, hole, C.ASPHALT, camera)
    for poly in area:  # holes of the drivable area are never drivable, whatever was drawn over them
        for hole in poly.interiors:
            _fill(surface, hole, C.BACKGROUND, camera)


def _draw_markings(surface: pygame.Surface, geom: RoadGeometry, camera: Camera, box) -> None:
    if camera.scale < MIN_SCALE_LINES:
        return
    width = max(1, int(round(MARKING_WIDTH * camera.scale)))
    for line in _parts(shapely.clip_by_rect(geom.solid, *box)):
        pts = np.asarray(line.coords)
        if len(pts) >= 2:
            pygame.draw.lines(surface, C.MARKING, False, np.rint(camera.to_screen(pts)).tolist(), width)
    if camera.scale < MIN_SCALE_DASHES or not len(geom.dashes):
        return
    xmin, ymin, xmax, ymax = box
    d = geom.dashes
    inside = ((d[..., 0] >= xmin) & (d[..., 0] <= xmax) & (d[..., 1] >= ymin) & (d[..., 1] <= ymax)).any(axis=1)
    for a, c in np.rint(camera.to_screen(d[inside])).tolist():
        pygame.draw.line(surface, C.MARKING, a, c, width)


def draw_road(surface: pygame.Surface, geom: RoadGeometry, camera: Camera) -> None:
    """Draw the whole road layer (ground, drivable area, junctions, markings) over ``surface``.

    Only what lies in the camera's view is drawn (geometry is clipped in world coordinates first, so that
    zooming far in stays cheap).
    """
    surface.fill(C.BACKGROUND)
    box = camera.view_bounds(margin_px=4.0)
    _draw_areas(surface, geom, camera, box)
    _draw_markings(surface, geom, camera, box)


class RoadLayer:
    """A cached, pre-rendered road around the view; :meth:`blit` draws the road for a camera."""

    def __init__(self):
        self._surface: pygame.Surface | None = None
        self._cache_cam: Camera | None = None
        self._geom: RoadGeometry | None = None
        self._last_rotation: float | None = None
        self.rebuilds = 0  # how often the cached surface was redrawn (for tests and the benchmark)

    def invalidate(self) -> None:
        self._cache_cam = None

    def blit(self, target: pygame.Surface, geom: RoadGeometry, camera: Camera) -> None:
        """Draw the road for ``camera`` onto ``target`` (whose size is ``camera.size``)."""
        steady = self._last_rotation == camera.rotation
        self._last_rotation = camera.rotation
        if not steady and camera.rotation != 0.0:
            draw_road(target, geom, camera)  # rotating camera: a cache would be rebuilt every frame
            return
        src = self._source_rect(geom, camera)
        if src is None:
            self._rebuild(geom, camera)
            src = self._source_rect(geom, camera)
        target.blit(self._surface, (0, 0), src)

    def _source_rect(self, geom: RoadGeometry, camera: Camera) -> pygame.Rect | None:
        """Where the camera's view lies in the cached surface, or None if it is not (all) there."""
        cc = self._cache_cam
        if (cc is None or geom is not self._geom or cc.scale != camera.scale or cc.rotation != camera.rotation):
            return None
        x0, y0 = np.rint(cc.offset - camera.offset).astype(int).tolist()
        w, h = camera.size
        if x0 < 0 or y0 < 0 or x0 + w > cc.size[0] or y0 + h > cc.size[1]:
            return None
        return pygame.Rect(x0, y0, w, h)

    def _rebuild(self, geom: RoadGeometry, camera: Camera) -> None:
        w, h = camera.size
        big = (2 * w, 2 * h)
        if self._surface is None or self._surface.get_size() != big:
            self._surface = pygame.Surface(big)
            if pygame.display.get_init() and pygame.display.get_surface() is not None:
                self._surface = self._surface.convert()  # the window's pixel format: the fastest blits
        self._cache_cam = camera.with_(size=big)
        self._geom = geom
        draw_road(self._surface, geom, self._cache_cam)
        self.rebuilds += 1
