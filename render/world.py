"""Rendering a live :class:`drivediff.sim.World` (environments' ``rgb_array`` mode, the live window)."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from drivediff.render.camera import Camera
from drivediff.render.renderer import FRAME_FIELDS, RenderError, auto_camera, default_renderer, follow_camera
from drivediff.render.scene import TrailBuffer

__all__ = ["render_world", "world_frame", "world_hud"]


def world_frame(world, b: int = 0) -> dict[str, np.ndarray]:
    """The renderer's fields of world ``b``'s current state, each (N,) (views, not copies)."""
    if not 0 <= int(b) < world.num_worlds:
        raise RenderError(f"world index {b} is out of range: the World has {world.num_worlds} worlds")
    st = world.state
    return {k: getattr(st, k)[b] for k in FRAME_FIELDS}


def world_hud(world, b: int, frame: Mapping[str, np.ndarray], follow: int | None) -> dict:
    """HUD of a live world: time, step and the followed vehicle's speed."""
    step = int(world.state.step[b])
    speed = float(frame["speed"][follow]) if follow is not None and frame["valid"][follow] else None
    return {"time": step * world.dt, "step": step, "speed": speed, "title": world.config.name}


def world_camera(world, frame, size, follow: int | None, zoom: float = 1.0, heading_up: bool = False) -> Camera:
    """Follow slot ``follow`` if it holds a vehicle, else the default view of the road."""
    if follow is not None and bool(frame["valid"][follow]):
        return follow_camera(frame, follow, size, zoom=zoom, heading_up=heading_up)
    return auto_camera(world.road, frame, size)


def render_world(world, b: int = 0, *, size: tuple[int, int] = (1280, 720), follow: int | None = None,
                 trails=None, overlays: Mapping | None = None, layers=None) -> np.ndarray:
    """Render world ``b`` of a live World as an (H, W, 3) uint8 image (Gymnasium's ``rgb_array``).

    Args:
        world: a reset :class:`drivediff.sim.World`.
        b: which world.
        size: image (width, height) [px].
        follow: slot of a vehicle to centre on (outlined); None: the default view (the whole road, or
            the first controlled vehicle on roads too long to show whole).
        trails: a :class:`~drivediff.render.scene.TrailBuffer` fed with this world's steps, or an
            (N, K, 2) array of past positions (oldest first).
        overlays: further overlays (see :func:`~drivediff.render.render_frame`).
        layers: enabled layers (see :func:`~drivediff.render.render_frame`).
    """
    if follow is not None and not 0 <= int(follow) < world.max_vehicles:
        raise RenderError(f"follow={follow} is not a vehicle slot (0..{world.max_vehicles - 1})")
    frame = world_frame(world, b)
    ov = dict(overlays or {})
    if isinstance(trails, TrailBuffer):
        ov["trails"], ov["trails_mask"] = trails.get()
    elif trails is not None:
        ov["trails"] = trails
    if follow is not None:
        ov.setdefault("highlight", int(follow))
    cam = world_camera(world, frame, size, follow)
    hud = world_hud(world, b, frame, follow)
    return default_renderer().render(world.road, frame, size=size, camera=cam, layers=layers, overlays=ov, hud=hud)
