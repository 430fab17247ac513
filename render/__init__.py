"""Rendering and scenario replay for drivediff (pygame-ce).

* :func:`render_frame` ``(road, frame, ...) -> (H, W, 3) uint8``: a pure function from one step's state
  arrays (plus overlays: trails, plans, candidate plans, predictions) to an image, off-screen.
* :func:`render_world` the same for a live :class:`drivediff.sim.World`.
* :mod:`drivediff.render.live`: ``run_live`` (``drivediff simulate ... --render``) and
  :class:`~drivediff.render.live.LiveWindow` for environments' ``render_mode="human"``.
* :mod:`drivediff.render.viewer`: the replay viewer (``drivediff replay LOG``).
* :mod:`drivediff.render.export`: headless export of a log to MP4, GIF or PNG frames.

Environments follow Gymnasium's conventions: ``render_mode="rgb_array"`` returns ``render_world(...)``;
``render_mode="human"`` draws into a :class:`~drivediff.render.live.LiveWindow` and returns None.

Everything works without a display under ``SDL_VIDEODRIVER=dummy``; off-screen rendering needs no video
driver at all.
"""

from __future__ import annotations

import os

os.environ.setdefault("PYGAME_HIDE_SUPPORT_PROMPT", "1")

from drivediff.render.camera import Camera  # noqa: E402
from drivediff.render.renderer import (  # noqa: E402
    DEFAULT_LAYERS,
    FRAME_FIELDS,
    LAYERS,
    Renderer,
    RenderError,
    auto_camera,
    follow_camera,
    render_frame,
)
from drivediff.render.scene import LogScene, TrailBuffer  # noqa: E402
from drivediff.render.world import render_world  # noqa: E402

__all__ = [
    "DEFAULT_LAYERS",
    "FRAME_FIELDS",
    "LAYERS",
    "Camera",
    "LogScene",
    "RenderError",
    "Renderer",
    "TrailBuffer",
    "auto_camera",
    "follow_camera",
    "render_frame",
    "render_world",
]
