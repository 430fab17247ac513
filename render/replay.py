"""Replay logic without a window: playback position, camera, selection, layers.

:class:`Replay` holds a :class:`ReplayState` and turns user actions (play, step, seek, follow, zoom, ...)
into state changes, and a state into what to draw (camera, overlays, HUD). The window-owning
:class:`~drivediff.render.viewer.Viewer` maps keys and mouse events onto these actions; the exporter uses
the same logic for its camera and HUD.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from drivediff.render.camera import Camera
from drivediff.render.renderer import DEFAULT_LAYERS, LAYERS, fit_camera, follow_camera, shows_whole
from drivediff.render.scene import Event, LogScene

__all__ = ["CAMERA_MODES", "Replay", "ReplayState", "SPEEDS"]

SPEEDS = (0.1, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0)  # playback speed multipliers
CAMERA_MODES = ("fit", "follow", "free")
ZOOM_STEP = 1.2  # per wheel notch


@dataclass
class ReplayState:
    """Everything the viewer shows that the user can change.

    Attributes:
        pos: playback position [steps] (fractional while playing); ``step`` is its integer part.
        playing: whether time advances.
        speed: playback speed multiplier (one of SPEEDS).
        camera_mode: ``fit`` (the whole road), ``follow`` (the selected vehicle) or ``free`` (panned/zoomed).
        selected_vid: id of the selected vehicle (None: none).
        heading_up: in follow mode, rotate the view so the followed vehicle points up.
        zoom: follow-camera zoom (1: FOLLOW_VIEW_HEIGHT metres shown vertically).
        free_camera: the camera of ``free`` mode.
        layers: enabled layers.
        running: False once the user asked to quit.
    """

    pos: float = 0.0
    playing: bool = False
    speed: float = 1.0
    camera_mode: str = "fit"
    selected_vid: int | None = None
    heading_up: bool = False
    zoom: float = 1.0
    free_camera: Camera | None = None
    layers: set[str] = field(default_factory=lambda: set(DEFAULT_LAYERS))
    show_help: bool = False
    running: bool = True

    @property
    def step(self) -> int:
        return int(math.floor(self.pos + 1e-9))


class Replay:
    """Playback and camera logic over a :class:`LogScene`.

    Args:
        scene: the log to show.
        size: size of the scene view (width, height) [px].
        name: title shown in the HUD (default: the scenario name from the log's metadata).
    """

    def __init__(self, scene: LogScene, size: tuple[int, int] = (1280, 720), name: str | None = None):
        self.scene = scene
        self.size = tuple(int(v) for v in size)
        self.name = name or str(scene.log.meta.get("scenario", "episode"))
        self.state = ReplayState()
        self._last_camera: Camera | None = None
        self._fit = fit_camera(scene.road, self.size)
        self._initial_view()

    def _initial_view(self) -> None:
        """Start like :func:`~drivediff.render.auto_camera`: the whole road, or following the first
        controlled vehicle on a road too long to show whole."""
        order = self.selectable(0)
        if order:
            self.state.selected_vid = int(self.scene.arrays["vid"][0, order[0]])
            if not shows_whole(self.scene.road, self.size):
                self.state.camera_mode = "follow"

    # ------------------------------------------------------------------------------------------- time
    @property
    def step(self) -> int:
        return self.scene.clamp(self.state.step)

    def seek(self, step: int) -> None:
        """Go to ``step`` (clamped to the log)."""
        self.state.pos = float(self.scene.clamp(step))

    def step_by(self, n: int) -> None:
        """Move ``n`` steps (pauses playback)."""
        self.state.playing = False
        self.seek(self.step + int(n))

    def jump_start(self) -> None:
        self.seek(0)

    def jump_end(self) -> None:
        self.state.playing = False
        self.seek(self.scene.num_steps - 1)

    def toggle_play(self) -> None:
        """Play or pause; playing from the last step restarts from the first."""
        if not self.state.playing and self.step >= self.scene.num_steps - 1:
            self.seek(0)
        self.state.playing = not self.state.playing

    def change_speed(self, direction: int) -> None:
        """Next faster (+1) or slower (-1) playback speed."""
        i = min(range(len(SPEEDS)), key=lambda j: abs(SPEEDS[j] - self.state.speed))
        self.state.speed = SPEEDS[int(np.clip(i + direction, 0, len(SPEEDS) - 1))]

    def advance(self, wall_dt: float) -> None:
        """Advance playback by ``wall_dt`` seconds of wall time."""
        if not self.state.playing:
            return
        end = self.scene.num_steps - 1
        self.state.pos = min(self.state.pos + wall_dt * self.state.speed / self.scene.dt, float(end))
        if self.state.pos >= end:
            self.state.playing = False

    def jump_event(self, direction: int = 1) -> Event | None:
        """Go to the next (+1) or previous (-1) event and select the vehicle involved."""
        ev = self.scene.next_event(self.step, direction)
        if ev is not None:
            self.state.playing = False
            self.seek(ev.step)
            self.state.selected_vid = ev.vid
        return ev

    # -------------------------------------------------------------------------------------- selection
    def selectable(self, k: int | None = None) -> list[int]:
        """Slots with a vehicle at step ``k``: controlled vehicles first, then by vehicle id."""
        k = self.step if k is None else k
        f = self.scene.frame(k)
        idx = np.flatnonzero(f["valid"])
        key = np.lexsort((f["vid"][idx], ~f["controlled"][idx].astype(bool)))
        return idx[key].tolist()

    def selected_slot(self) -> int | None:
        vid = self.state.selected_vid
        return None if vid is None else self.scene.slot_of(vid, self.step)

    def select(self, vid: int | None, follow: bool = True) -> None:
        """Select vehicle ``vid`` (and follow it)."""
        self.state.selected_vid = None if vid is None else int(vid)
        if follow and vid is not None:
            self.state.camera_mode = "follow"

    def cycle_selection(self, direction: int = 1) -> None:
        """Select and follow the next (+1) or previous (-1) vehicle on the road."""
        order = self.selectable()
        if not order:
            return
        vids = [int(self.scene.arrays["vid"][self.step, i]) for i in order]
        cur = self.state.selected_vid
        i = (vids.index(cur) + direction) % len(vids) if cur in vids else (0 if direction > 0 else -1)
        self.select(vids[i])

    def pick(self, screen_xy: tuple[float, float]) -> int | None:
        """The vehicle id under a point of the scene view (within 1 m of its box), or None."""
        cam = self.camera()
        wx, wy = cam.to_world(np.asarray(screen_xy, dtype=np.float64))
        f = self.scene.frame(self.step)
        dx, dy = wx - f["x"], wy - f["y"]
        c, s = np.cos(f["yaw"]), np.sin(f["yaw"])
        lon, lat = np.abs(c * dx + s * dy) - f["length"] / 2, np.abs(-s * dx + c * dy) - f["width"] / 2
        dist = np.hypot(np.maximum(lon, 0), np.maximum(lat, 0))
        dist = np.where(f["valid"], dist, np.inf)
        if not dist.size:
            return None
        i = int(np.argmin(dist))
        return int(f["vid"][i]) if dist[i] <= max(1.0, 6.0 / cam.scale) else None

    # ----------------------------------------------------------------------------------------- camera
    def fit(self) -> None:
        self.state.camera_mode = "fit"

    def follow(self) -> None:
        """Follow the selected vehicle (or the first on the road if none is selected)."""
        if self.state.selected_vid is None:
            self.cycle_selection(1)
        if self.state.selected_vid is not None:
            self.state.camera_mode = "follow"

    def toggle_heading_up(self) -> None:
        self.state.heading_up = not self.state.heading_up

    def zoom_by(self, factor: float, anchor: tuple[float, float] | None = None) -> None:
        """Zoom: the follow camera zooms about the followed vehicle, the others about ``anchor`` [px]."""
        if self.state.camera_mode == "follow":
            self.state.zoom = float(np.clip(self.state.zoom * factor, 0.05, 50.0))
            return
        self.state.free_camera = self.camera().zoomed(factor, anchor)
        self.state.camera_mode = "free"

    def pan(self, dx: float, dy: float) -> None:
        """Drag the picture by (dx, dy) pixels (leaves fit/follow for the free camera)."""
        self.state.free_camera = self.camera().panned(dx, dy)
        self.state.camera_mode = "free"

    def camera(self) -> Camera:
        """The camera of the current state and step."""
        st = self.state
        if st.camera_mode == "free" and st.free_camera is not None:
            cam = st.free_camera
        elif st.camera_mode == "follow":
            slot = self.selected_slot()
            if slot is None:  # the vehicle has left (or not yet entered): stay where it was last seen
                cam = self._last_camera or self._fit
            else:
                cam = follow_camera(self.scene.frame(self.step), slot, self.size, st.zoom, st.heading_up)
        else:
            cam = self._fit
        self._last_camera = cam
        return cam

    # ------------------------------------------------------------------------------------------ layers
    def toggle_layer(self, name: str) -> None:
        if name not in LAYERS:
            raise ValueError(f"unknown layer {name!r}; layers are {list(LAYERS)}")
        self.state.layers ^= {name}

    # ---------------------------------------------------------------------------------- what to draw
    def overlays(self) -> dict:
        """Overlays of the current step for the enabled layers."""
        k = self.step
        on = self.state.layers
        ov = self.scene.overlays(k) if on & {"plans", "candidates", "predictions"} else {}
        if "trails" in on:
            ov["trails"], ov["trails_mask"] = self.scene.trails(k)
        slot = self.selected_slot()
        if slot is not None:
            ov["highlight"] = slot
        return ov

    def hud(self) -> dict:
        k = self.step
        slot = self.selected_slot()
        speed = float(self.scene.arrays["speed"][k, slot]) if slot is not None else None
        return {"title": self.name, "time": float(self.scene.t[k]), "step": k, "num_steps": self.scene.num_steps,
                "speed": speed}

