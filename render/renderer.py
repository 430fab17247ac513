"""The renderer: state arrays of one time step (plus overlays) -> an RGB image.

:func:`render_frame` is the pure entry point: ``(road, frame) -> (H, W, 3) uint8``. It reads arrays only
(never simulator objects) and runs headless: pygame draws onto an off-screen surface, no window or video
driver is needed. :class:`Renderer` does the drawing onto any pygame surface (the viewer and the live
window draw straight into their window) and owns the caches that make it fast: the pre-rendered road
layer, rendered text, the HUD panel.

Layers (names for ``layers``): ``road``, ``vehicles``, ``trails``, ``plans``, ``candidates``,
``predictions``, ``ids``, ``hud``. All but ``ids`` are on by default.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Iterable, Mapping

import numpy as np
import pygame

from drivediff.errors import DrivediffError
from drivediff.render import colors as C
from drivediff.render.camera import Camera
from drivediff.render.roadlayer import RoadLayer, road_geometry
from drivediff.sim.road import Road

__all__ = [
    "DEFAULT_LAYERS",
    "FRAME_FIELDS",
    "LAYERS",
    "RenderError",
    "Renderer",
    "auto_camera",
    "fit_camera",
    "follow_camera",
    "render_frame",
    "resolve_layers",
    "shows_whole",
    "vehicle_roles",
    "visible_slots",
]

FRAME_FIELDS = ("x", "y", "yaw", "length", "width", "valid", "controlled", "collided", "offroad", "vid", "speed")
LAYERS = ("road", "vehicles", "trails", "plans", "candidates", "predictions", "ids", "hud")
DEFAULT_LAYERS = frozenset(LAYERS) - {"ids"}
MIN_FIT_SCALE = 2.0  # [px/m] below this, auto_camera follows a vehicle instead of fitting the road
FOLLOW_VIEW_HEIGHT = 90.0  # [m] of road shown vertically by the follow camera at zoom 1


class RenderError(DrivediffError, ValueError):
    """Arrays or options given to the renderer are malformed."""


# ------------------------------------------------------------------------------------------------ inputs


def resolve_layers(layers: Iterable[str] | Mapping[str, bool] | None) -> frozenset[str]:
    """The set of enabled layers.

    Args:
        layers: None (the defaults), an iterable of layer names (exactly those), or a mapping
            ``{name: on}`` applied over the defaults.
    """
    if layers is None:
        return DEFAULT_LAYERS
    if isinstance(layers, Mapping):
        names, out = set(layers), set(DEFAULT_LAYERS)
        out |= {k for k, v in layers.items() if v}
        out -= {k for k, v in layers.items() if not v}
    else:
        names = out = set(layers)
    unknown = sorted(names - set(LAYERS))
    if unknown:
        raise RenderError(f"unknown layer(s) {unknown}; layers are {list(LAYERS)}")
    return frozenset(out)


def check_frame(frame: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Validate one step's arrays: every field of ``FRAME_FIELDS`` present, all of shape (N,)."""
    missing = [k for k in FRAME_FIELDS if k not in frame]
    if missing:
        raise RenderError(f"frame is missing field(s) {missing}; a frame needs {list(FRAME_FIELDS)}")
    out = {k: np.asarray(frame[k]) for k in frame}
    n = out["x"].shape
    bad = [k for k in FRAME_FIELDS if out[k].ndim != 1 or out[k].shape != n]
    if bad:
        raise RenderError(f"frame field(s) {bad} do not have the shape {n} of 'x' (one value per vehicle slot)")
    return out


def vehicle_roles(frame: Mapping[str, np.ndarray]) -> np.ndarray:
    """(N,) int role of each slot (``colors.ROLE_*``): collided > off-road > controlled > background."""
    role = np.where(np.asarray(frame["controlled"], bool), C.ROLE_CONTROLLED, C.ROLE_BACKGROUND)
    role = np.where(np.asarray(frame["offroad"], bool), C.ROLE_OFFROAD, role)
    return np.where(np.asarray(frame["collided"], bool), C.ROLE_COLLIDED, role)


# ------------------------------------------------------------------------------------------------ cameras


def follow_camera(frame: Mapping[str, np.ndarray], slot: int, size: tuple[int, int], zoom: float = 1.0,
                  heading_up: bool = False) -> Camera:
    """A camera centred on vehicle ``slot`` showing about FOLLOW_VIEW_HEIGHT / zoom metres vertically."""
    x, y, yaw = (float(frame[k][slot]) for k in ("x", "y", "yaw"))
    rot = math.pi / 2 - yaw if heading_up else 0.0
    return Camera((x, y), size[1] / FOLLOW_VIEW_HEIGHT * zoom, rot, tuple(size))


def fit_camera(road: Road, size: tuple[int, int]) -> Camera:
    """The camera that shows the whole road."""
    return Camera.fit(road_geometry(road).bounds, size)


def shows_whole(road: Road, size: tuple[int, int]) -> bool:
    """Whether the whole road fits on screen with vehicles still visible (at MIN_FIT_SCALE px/m or more)."""
    return fit_camera(road, size).scale >= MIN_FIT_SCALE


def auto_camera(road: Road, frame: Mapping[str, np.ndarray] | None, size: tuple[int, int]) -> Camera:
    """The default view: the whole road, or, for a road too long to show whole with vehicles still
    visible (a highway), a camera following the first controlled (else the first valid) vehicle."""
    fit = fit_camera(road, size)
    if fit.scale >= MIN_FIT_SCALE or frame is None:
        return fit
    slot = _first_slot(frame)
    return fit if slot is None else follow_camera(frame, slot, size)


def _first_slot(frame: Mapping[str, np.ndarray]) -> int | None:
    valid = np.asarray(frame["valid"], bool)
    for mask in (valid & np.asarray(frame["controlled"], bool), valid):
        idx = np.flatnonzero(mask)
        if idx.size:
            return int(idx[0])
    return None


def visible_slots(frame: Mapping[str, np.ndarray], cam: Camera) -> np.ndarray:
    """Indices of the valid vehicles whose box may touch the screen (those that get drawn)."""
    valid = np.asarray(frame["valid"], bool)
    xy = cam.to_screen(np.stack([frame["x"], frame["y"]], axis=-1))
    r = 0.6 * np.hypot(frame["length"], frame["width"]) * cam.scale + 2
    w, h = cam.size
    on = (xy[:, 0] > -r) & (xy[:, 0] < w + r) & (xy[:, 1] > -r) & (xy[:, 1] < h + r)
    return np.flatnonzero(valid & on & np.isfinite(xy).all(axis=1))


# ------------------------------------------------------------------------------------------------ helpers


def _box_points(f: Mapping[str, np.ndarray], idx: np.ndarray, local: np.ndarray) -> np.ndarray:
    """World points (n, P, 2) of vehicle-frame points ``local`` (P, 2), given as fractions of (length,
    width), for the vehicles ``idx``."""
    x, y, yaw = f["x"][idx], f["y"][idx], f["yaw"][idx]
    lx = local[None, :, 0] * f["length"][idx, None]
    ly = local[None, :, 1] * f["width"][idx, None]
    c, s = np.cos(yaw)[:, None], np.sin(yaw)[:, None]
    return np.stack([x[:, None] + c * lx - s * ly, y[:, None] + s * lx + c * ly], axis=-1)


_BOX = np.array([[0.5, 0.5], [-0.5, 0.5], [-0.5, -0.5], [0.5, -0.5]])
_ARROW = np.array([[0.44, 0.0], [0.14, 0.3], [0.14, -0.3]])
_SCREEN_LIMIT = 1e5  # screen coordinates are clipped to +-this before going to pygame (int32 safety)


def _to_int(pts: np.ndarray) -> list:
    return np.clip(np.rint(pts), -_SCREEN_LIMIT, _SCREEN_LIMIT).astype(np.int64).tolist()


def _nice_length(meters: float) -> float:
    """The largest 1-2-5 x 10^k length not above ``meters``."""
    k = 10.0 ** math.floor(math.log10(max(meters, 1e-6)))
    return max(m * k for m in (1, 2, 5) if m * k <= meters)


def _runs(mask: np.ndarray) -> list[tuple[int, int]]:
    """[start, stop) index ranges of the True runs of a 1-D mask."""
    m = np.concatenate([[False], mask, [False]]).astype(np.int8)
    d = np.flatnonzero(np.diff(m))
    return list(zip(d[::2].tolist(), d[1::2].tolist(), strict=True))


# ------------------------------------------------------------------------------------------------ renderer


class Renderer:
    """Draws frames; keeps the caches (road layer, text) between calls.

    Args:
        font_size: pixel size of the HUD font.
    """

    def __init__(self, font_size: int = 18):
        if not pygame.font.get_init():
            pygame.font.init()
        self.font = pygame.font.Font(None, font_size + 4)
        self.small_font = pygame.font.Font(None, font_size)
        self.road_layer = RoadLayer()
        self._text: OrderedDict = OrderedDict()
        self._panels: dict[tuple[int, int], pygame.Surface] = {}
        self._surface: pygame.Surface | None = None

    # -------------------------------------------------------------------------------------------- public
    def render(self, road: Road, frame: Mapping[str, np.ndarray], *, size: tuple[int, int] = (1280, 720),
               camera: Camera | None = None, layers=None, overlays: Mapping | None = None,
               hud: Mapping | None = None) -> np.ndarray:
        """Draw off-screen and return the image as an (H, W, 3) uint8 array (see :func:`render_frame`)."""
        size = _check_size(size)
        if self._surface is None or self._surface.get_size() != size:
            self._surface = pygame.Surface(size)
        self.draw(self._surface, road, frame, camera=camera, layers=layers, overlays=overlays, hud=hud)
        return surface_to_array(self._surface)

    def draw(self, surface: pygame.Surface, road: Road, frame: Mapping[str, np.ndarray], *,
             camera: Camera | None = None, layers=None, overlays: Mapping | None = None,
             hud: Mapping | None = None) -> Camera:
        """Draw a frame onto ``surface`` (the whole of it). Returns the camera used."""
        f = check_frame(frame)
        size = surface.get_size()
        cam = auto_camera(road, f, size) if camera is None else camera.with_(size=size)
        on = resolve_layers(layers)
        ov = dict(overlays or {})
        if "road" in on:
            self.road_layer.blit(surface, road_geometry(road), cam)
        else:
            surface.fill(C.BACKGROUND)
        roles = vehicle_roles(f)
        shown = visible_slots(f, cam)
        self._draw_overlays(surface, f, cam, on, ov, roles)
        if "vehicles" in on:
            self._draw_vehicles(surface, f, cam, roles, shown, ov.get("highlight"))
        if "ids" in on:
            self._draw_ids(surface, f, cam, shown)
        if "hud" in on and hud is not None:
            self._draw_hud(surface, cam, hud)
        return cam

    # ------------------------------------------------------------------------------------------ vehicles
    def _draw_vehicles(self, surface, f, cam: Camera, roles: np.ndarray, idx: np.ndarray, highlight) -> None:
        if not idx.size:
            return
        idx = idx[np.argsort(roles[idx], kind="stable")]  # important roles on top
        boxes = _to_int(cam.to_screen(_box_points(f, idx, _BOX)))
        big = cam.scale * np.minimum(f["length"][idx], 2 * f["width"][idx]) >= 7
        arrows = _to_int(cam.to_screen(_box_points(f, idx, _ARROW))) if big.any() else None
        colors = [C.ROLE_COLORS[r] for r in roles[idx].tolist()]
        draw_poly = pygame.draw.polygon
        for k, (box, color) in enumerate(zip(boxes, colors, strict=True)):
            draw_poly(surface, color, box)
            if big[k]:
                draw_poly(surface, C.EDGE, box, 1)
                draw_poly(surface, C.HEADING_MARK, arrows[k])
        if highlight is not None and 0 <= int(highlight) < len(f["x"]) and bool(f["valid"][int(highlight)]):
            ring = _BOX + np.sign(_BOX) * 0.12
            pts = _to_int(cam.to_screen(_box_points(f, np.array([int(highlight)]), ring))[0])
            draw_poly(surface, C.SELECTED, pts, max(2, int(round(0.15 * cam.scale))))

    def _draw_ids(self, surface, f, cam: Camera, idx: np.ndarray) -> None:
        xy = cam.to_screen(np.stack([f["x"][idx], f["y"][idx]], axis=-1))
        off = 0.5 * np.hypot(f["length"][idx], f["width"][idx]) * cam.scale
        for (sx, sy), o, vid in zip(xy.tolist(), off.tolist(), f["vid"][idx].tolist(), strict=True):
            surface.blit(self.text(str(vid), C.TEXT, small=True), (int(sx + 0.5 * o), int(sy - o - 10)))

    # ------------------------------------------------------------------------------------------ overlays
    def _draw_overlays(self, surface, f, cam: Camera, on, ov: dict, roles: np.ndarray) -> None:
        valid = np.asarray(f["valid"], bool)
        if "trails" in on and ov.get("trails") is not None:
            self._draw_trails(surface, cam, ov["trails"], ov.get("trails_mask"), roles, valid)
        width = float(np.clip(0.25 * cam.scale, 1, 3))
        if "predictions" in on and ov.get("predictions"):
            for _slot, paths in _valid_items(ov["predictions"], valid):
                for path in np.asarray(paths, float).reshape(-1, *np.shape(paths)[-2:]):
                    self._polyline(surface, cam, path, C.PREDICTION, width, end_dot=True)
        if "candidates" in on and ov.get("candidates"):
            for _slot, cand in _valid_items(ov["candidates"], valid):
                self._draw_candidates(surface, cam, cand, width)
        if "plans" in on and ov.get("plans"):
            for slot, plan in _valid_items(ov["plans"], valid):
                start = np.array([[f["x"][slot], f["y"][slot]]])
                path = np.concatenate([start, np.asarray(plan, float).reshape(-1, 2)])
                self._polyline(surface, cam, path, C.PLAN, float(np.clip(0.4 * cam.scale, 2, 5)), end_dot=True)

    def _draw_trails(self, surface, cam: Camera, trails, mask, roles: np.ndarray, valid: np.ndarray) -> None:
        tr = np.asarray(trails, dtype=np.float64)
        if tr.ndim != 3 or tr.shape[0] != roles.shape[0] or tr.shape[2] != 2:
            raise RenderError(f"overlays['trails'] must have shape (N={roles.shape[0]}, K, 2); got {tr.shape}")
        if tr.shape[1] < 2:
            return
        ok = np.isfinite(tr).all(axis=-1)
        if mask is not None:
            ok &= np.asarray(mask, bool).reshape(tr.shape[:2])
        width = int(np.clip(round(0.3 * cam.scale), 1, 4))
        scr = cam.to_screen(tr)
        lo, hi = np.where(ok[..., None], scr, np.inf).min(axis=1), np.where(ok[..., None], scr, -np.inf).max(axis=1)
        w, h = cam.size
        idx = np.flatnonzero(valid & (hi[:, 0] >= 0) & (lo[:, 0] <= w) & (hi[:, 1] >= 0) & (lo[:, 1] <= h))
        pts = _to_int(scr[idx])
        for k, i in enumerate(idx.tolist()):
            color = C.TRAIL_COLORS[roles[i]]
            if ok[i].all():
                pygame.draw.lines(surface, color, False, pts[k], width)
                continue
            for a, b in _runs(ok[i]):
                if b - a >= 2:
                    pygame.draw.lines(surface, color, False, pts[k][a:b], width)

    def _draw_candidates(self, surface, cam: Camera, cand, width: float) -> None:
        paths, costs, chosen = cand
        paths, costs = np.asarray(paths, float), np.asarray(costs, float).reshape(-1)
        if paths.ndim != 3 or paths.shape[-1] != 2 or costs.shape != paths.shape[:1]:
            raise RenderError(f"candidates must be (paths (C, H, 2), costs (C,), chosen); got paths {paths.shape}, "
                              f"costs {costs.shape}")
        cols = C.cost_colors(costs)
        order = np.argsort(-np.nan_to_num(costs, nan=np.inf, posinf=1e300), kind="stable")
        for c in order.tolist():  # dearest first, cheapest on top
            if c != chosen:
                self._polyline(surface, cam, paths[c], cols[c], max(1.0, width - 1))
        if chosen is not None and 0 <= int(chosen) < len(paths):
            bold = float(np.clip(0.45 * cam.scale, 3, 6))
            self._polyline(surface, cam, paths[int(chosen)], C.CHOSEN_OUTLINE, bold + 2)
            self._polyline(surface, cam, paths[int(chosen)], cols[int(chosen)], bold)

    @staticmethod
    def _polyline(surface, cam: Camera, path: np.ndarray, color, width: float, end_dot: bool = False) -> None:
        path = path[np.isfinite(path).all(axis=1)]
        if len(path) < 2:
            return
        pts = _to_int(cam.to_screen(path))
        w = max(1, int(round(width)))
        pygame.draw.lines(surface, color, False, pts, w)
        if end_dot:
            pygame.draw.circle(surface, color, pts[-1], w + 1)

    # ----------------------------------------------------------------------------------------------- HUD
    def text(self, s: str, color=C.TEXT, small: bool = False) -> pygame.Surface:
        """A rendered line of text (cached)."""
        key = (s, color, small)
        surf = self._text.get(key)
        if surf is None:
            surf = (self.small_font if small else self.font).render(s, True, color)
            self._text[key] = surf
            if len(self._text) > 4096:
                self._text.popitem(last=False)
        else:
            self._text.move_to_end(key)
        return surf

    def panel(self, surface, rect: pygame.Rect) -> None:
        """A translucent dark box."""
        key = (rect.w, rect.h)
        p = self._panels.get(key)
        if p is None:
            p = pygame.Surface(key)
            p.fill(C.PANEL)
            p.set_alpha(C.PANEL_ALPHA)
            self._panels[key] = p
        surface.blit(p, rect.topleft)

    def _draw_hud(self, surface, cam: Camera, hud: Mapping) -> None:
        lines = _hud_lines(hud)
        rows = [self.text(s) for s in lines]
        bar_m = _nice_length(cam.meters(150))
        bar_px = int(round(bar_m * cam.scale))
        label = self.text(f"{bar_m:g} m", small=True)
        w = max([r.get_width() for r in rows] + [bar_px + label.get_width() + 8]) + 16
        h = 10 + sum(r.get_height() + 2 for r in rows) + 18
        self.panel(surface, pygame.Rect(8, 8, w, h))
        y = 14
        for r in rows:
            surface.blit(r, (16, y))
            y += r.get_height() + 2
        y += 6
        pygame.draw.line(surface, C.SCALE_BAR, (16, y), (16 + bar_px, y), 2)
        for x in (16, 16 + bar_px):
            pygame.draw.line(surface, C.SCALE_BAR, (x, y - 4), (x, y + 4), 2)
        surface.blit(label, (24 + bar_px, y - label.get_height() // 2))


def _hud_lines(hud: Mapping) -> list[str]:
    lines = []
    if hud.get("title"):
        lines.append(str(hud["title"]))
    parts = []
    if hud.get("time") is not None:
        parts.append(f"t = {float(hud['time']):.2f} s")
    if hud.get("step") is not None:
        total = hud.get("num_steps")
        parts.append(f"step {int(hud['step'])}" + (f" / {int(total) - 1}" if total else ""))
    if parts:
        lines.append("   ".join(parts))
    speed = hud.get("speed")
    if speed is not None and np.isfinite(speed):
        lines.append(f"speed {float(speed):.1f} m/s ({3.6 * float(speed):.0f} km/h)")
    lines.extend(str(s) for s in hud.get("lines", ()))
    return lines


def _valid_items(d: Mapping, valid: np.ndarray):
    """(slot, value) pairs of an overlay dict whose slot holds a vehicle."""
    n = valid.shape[0]
    for slot, v in d.items():
        s = int(slot)
        if 0 <= s < n and valid[s] and v is not None:
            yield s, v


def _check_size(size) -> tuple[int, int]:
    try:
        w, h = (int(v) for v in size)
    except (TypeError, ValueError):
        raise RenderError(f"size must be (width, height) in pixels, got {size!r}") from None
    if not (16 <= w <= 8192 and 16 <= h <= 8192):
        raise RenderError(f"size must be between 16 and 8192 pixels per side, got {w}x{h}")
    return w, h


def surface_to_array(surface: pygame.Surface) -> np.ndarray:
    """(H, W, 3) uint8 copy of a surface's pixels."""
    w, h = surface.get_size()
    return np.frombuffer(pygame.image.tobytes(surface, "RGB"), dtype=np.uint8).reshape(h, w, 3)


# ------------------------------------------------------------------------------------------- entry point

_RENDERER: Renderer | None = None


def default_renderer() -> Renderer:
    """The module's shared renderer (its caches serve every :func:`render_frame` call)."""
    global _RENDERER
    if _RENDERER is None:
        _RENDERER = Renderer()
    return _RENDERER


def render_frame(road: Road, frame: Mapping[str, np.ndarray], *, size: tuple[int, int] = (1280, 720),
                 camera: Camera | None = None, layers=None, overlays: Mapping | None = None,
                 hud: Mapping | None = None) -> np.ndarray:
    """Render one time step of a scene to an RGB image, off-screen.

    World coordinates are metres, x east, y north (drawn up), yaw counter-clockwise from +x.

    Args:
        road: the road (drawn from a cached layer per camera scale).
        frame: arrays of one step, each (N,) over vehicle slots: ``x, y`` [m], ``yaw`` [rad],
            ``length, width`` [m], ``valid, controlled, collided, offroad`` (bool), ``vid`` (int),
            ``speed`` [m/s] (e.g. ``{k: log[k][t] for k in FRAME_FIELDS}``). Extra keys are ignored.
        size: image (width, height) [px].
        camera: the view; None: :func:`auto_camera` (the whole road, or following the first controlled
            vehicle when the road is too long to show whole, e.g. a highway).
        layers: enabled layers: None (all but ``ids``), names, or ``{name: bool}`` over the defaults; names
            are ``road, vehicles, trails, plans, candidates, predictions, ids, hud``.
        overlays: optional dict, every key optional:

            * ``trails``: (N, K, 2) past positions of each slot [m], oldest first; ``trails_mask``: (N, K)
              bool marks the points to draw (default: all finite points). Drawn in the slot's role colour,
              faded.
            * ``plans``: ``{slot: (H, 2)}`` executed plan of a controlled vehicle, world xy [m]; drawn
              from the vehicle's position.
            * ``candidates``: ``{slot: (paths (C, H, 2), costs (C,), chosen int)}`` the diffusion sampler's
              candidate plans, coloured by cost (cheapest green, dearest red); ``chosen`` (-1 or None:
              none) is drawn bold with a white outline.
            * ``predictions``: ``{slot: (M, H, 2)}`` predicted trajectories of neighbours [m].
            * ``highlight``: a slot to outline (the selected / followed vehicle).

            Entries of slots that are not valid are skipped; non-finite points are dropped.
        hud: None (no HUD) or a dict with any of ``time`` [s], ``step``, ``num_steps``, ``speed`` [m/s] of
            the followed vehicle, ``title``, ``lines`` (extra text); a scale bar is always part of the HUD.

    Returns:
        (H, W, 3) uint8 image.

    Raises:
        RenderError: missing frame fields, mismatched shapes, unknown layers, a bad size.
    """
    return default_renderer().render(road, frame, size=size, camera=camera, layers=layers, overlays=overlays,
                                     hud=hud)
