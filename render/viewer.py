"""The scenario replay viewer: a pygame window on an episode log (``drivediff replay LOG``).

Controls (also shown with ``?`` / F1):

==========================  =====================================================
space                       play / pause
left / right                step back / forward (shift: 10 steps)
up / down, + / -            playback speed (0.1x ... 8x)
home / end                  jump to the start / end
] / [ , page down / up      next / previous event (collision, off-road, TTC)
tab / shift+tab             select and follow the next / previous vehicle
click a vehicle             select and follow it
f                           fit the whole scene
c                           follow the selected vehicle
h                           heading-up (follow mode)
wheel, drag                 zoom, pan
1 2 3 4 5 (or t p k r i)    layers: trails, plans, candidates, predictions, ids
timeline click / drag       seek
esc, q                      quit
==========================  =====================================================

:class:`Viewer` owns the window and the clock; the playback and camera logic is
:class:`~drivediff.render.replay.Replay`, which tests drive through posted pygame events.
"""

from __future__ import annotations

import math

import numpy as np
import pygame

from drivediff.errors import DrivediffError
from drivediff.render import colors as C
from drivediff.render.renderer import Renderer
from drivediff.render.replay import ZOOM_STEP, Replay
from drivediff.render.scene import EVENT_KINDS, TTC_THRESHOLD, LogScene

__all__ = ["Viewer", "HELP"]

TIMELINE_H = 58  # [px] height of the timeline bar under the scene
TRACK_MARGIN = 16  # [px] left/right margin of the timeline track
DRAG_THRESHOLD = 4  # [px] a press that moves less than this is a click

LAYER_KEYS = {
    pygame.K_1: "trails", pygame.K_t: "trails",
    pygame.K_2: "plans", pygame.K_p: "plans",
    pygame.K_3: "candidates", pygame.K_k: "candidates",
    pygame.K_4: "predictions", pygame.K_r: "predictions",
    pygame.K_5: "ids", pygame.K_i: "ids",
}

HELP = (
    "space play/pause   left/right step (shift x10)   up/down speed   home/end start/end",
    "] [ next/previous event   tab select+follow   click vehicle: follow   f fit   c follow   h heading-up",
    "wheel zoom   drag pan   1-5 layers: trails, plans, candidates, predictions, ids   ? help   esc quit",
)


def _open_window(size: tuple[int, int], title: str) -> pygame.Surface:
    try:
        pygame.display.init()
        screen = pygame.display.set_mode(size)
    except pygame.error as e:
        raise DrivediffError(f"cannot open a window ({e}); to render without a display use "
                             "--export out.mp4|out.gif|DIR/") from None
    pygame.display.set_caption(title)
    return screen


class Viewer:
    """A window on an episode log.

    Args:
        scene: the log.
        size: window (width, height) [px]; the scene gets all but the timeline bar.
        fps: window refresh rate [frames/s].
        title: window and HUD title.
    """

    def __init__(self, scene: LogScene, size: tuple[int, int] = (1280, 720), fps: float = 60.0,
                 title: str | None = None):
        w, h = (int(v) for v in size)
        if w < 320 or h < 240:
            raise DrivediffError(f"the viewer window must be at least 320x240 pixels, got {w}x{h}")
        self.fps = float(fps)
        self.screen = _open_window((w, h), f"drivediff replay - {title or 'episode'}")
        self.scene_rect = pygame.Rect(0, 0, w, h - TIMELINE_H)
        self.scene_surface = self.screen.subsurface(self.scene_rect)
        self.replay = Replay(scene, self.scene_rect.size, name=title)
        self.renderer = Renderer()
        self.clock = pygame.time.Clock()
        self._press: tuple[int, int] | None = None
        self._dragging = False
        self._scrubbing = False
        self._track = pygame.Rect(TRACK_MARGIN, h - 20, w - 2 * TRACK_MARGIN, 6)
        self._markers = self._marker_surface()

    @property
    def state(self):
        """The :class:`~drivediff.render.replay.ReplayState` (step, playing, camera mode, layers, ...)."""
        return self.replay.state

    @property
    def scene(self) -> LogScene:
        return self.replay.scene

    # ------------------------------------------------------------------------------------------ loop
    def run(self) -> None:
        """Show the log until the window is closed."""
        try:
            while self.state.running:
                self.tick(self.clock.tick(self.fps) / 1000.0)
        finally:
            self.close()

    def tick(self, wall_dt: float) -> None:
        """One frame: handle pending events, advance playback by ``wall_dt`` seconds, draw, flip."""
        self.process_events()
        self.replay.advance(wall_dt)
        if self.state.running:
            self.draw()
            pygame.display.flip()

    def process_events(self) -> None:
        for ev in pygame.event.get():
            self.handle_event(ev)

    def close(self) -> None:
        pygame.display.quit()

    # --------------------------------------------------------------------------------------- events
    def handle_event(self, ev: pygame.event.Event) -> None:
        """Apply one pygame event to the viewer's state."""
        if ev.type == pygame.QUIT:
            self.state.running = False
        elif ev.type == pygame.KEYDOWN:
            self._on_key(ev.key, getattr(ev, "mod", 0), getattr(ev, "unicode", ""))
        elif ev.type == pygame.MOUSEWHEEL:
            self._on_wheel(ev)
        elif ev.type == pygame.MOUSEBUTTONDOWN and ev.button == 1:
            self._on_press(ev.pos)
        elif ev.type == pygame.MOUSEMOTION:
            self._on_motion(ev.pos, getattr(ev, "rel", (0, 0)))
        elif ev.type == pygame.MOUSEBUTTONUP and ev.button == 1:
            self._on_release(ev.pos)

    def _on_key(self, key: int, mod: int, char: str) -> None:
        r, shift = self.replay, bool(mod & pygame.KMOD_SHIFT)
        actions = {
            pygame.K_SPACE: r.toggle_play,
            pygame.K_RIGHT: lambda: r.step_by(10 if shift else 1),
            pygame.K_LEFT: lambda: r.step_by(-10 if shift else -1),
            pygame.K_UP: lambda: r.change_speed(1), pygame.K_DOWN: lambda: r.change_speed(-1),
            pygame.K_PLUS: lambda: r.change_speed(1), pygame.K_EQUALS: lambda: r.change_speed(1),
            pygame.K_KP_PLUS: lambda: r.change_speed(1),
            pygame.K_MINUS: lambda: r.change_speed(-1), pygame.K_KP_MINUS: lambda: r.change_speed(-1),
            pygame.K_HOME: r.jump_start, pygame.K_END: r.jump_end,
            pygame.K_RIGHTBRACKET: lambda: r.jump_event(1), pygame.K_PAGEDOWN: lambda: r.jump_event(1),
            pygame.K_LEFTBRACKET: lambda: r.jump_event(-1), pygame.K_PAGEUP: lambda: r.jump_event(-1),
            pygame.K_TAB: lambda: r.cycle_selection(-1 if shift else 1),
            pygame.K_f: r.fit, pygame.K_c: r.follow, pygame.K_h: r.toggle_heading_up,
            pygame.K_F1: self._toggle_help, pygame.K_SLASH: self._toggle_help,
            pygame.K_ESCAPE: self._quit, pygame.K_q: self._quit,
        }
        if key in LAYER_KEYS:
            r.toggle_layer(LAYER_KEYS[key])
        elif key in actions:
            actions[key]()
        elif char == "?":
            self._toggle_help()

    def _toggle_help(self) -> None:
        self.state.show_help = not self.state.show_help

    def _quit(self) -> None:
        self.state.running = False

    def _on_wheel(self, ev) -> None:
        pos = pygame.mouse.get_pos()
        anchor = pos if self.scene_rect.collidepoint(pos) else None
        self.replay.zoom_by(ZOOM_STEP ** float(ev.y), anchor)

    def _on_press(self, pos) -> None:
        if self._in_timeline(pos):
            self._scrubbing = True
            self.replay.state.playing = False
            self.replay.seek(self._step_at(pos[0]))
        elif self.scene_rect.collidepoint(pos):
            self._press, self._dragging = tuple(pos), False

    def _on_motion(self, pos, rel) -> None:
        if self._scrubbing:
            self.replay.seek(self._step_at(pos[0]))
        elif self._press is not None:
            if not self._dragging and math.dist(pos, self._press) >= DRAG_THRESHOLD:
                self._dragging = True
                rel = (pos[0] - self._press[0], pos[1] - self._press[1])
            if self._dragging:
                self.replay.pan(*rel)

    def _on_release(self, pos) -> None:
        if self._press is not None and not self._dragging:
            vid = self.replay.pick(pos)
            if vid is not None:
                self.replay.select(vid)
        self._press, self._dragging, self._scrubbing = None, False, False

    # ------------------------------------------------------------------------------------- timeline
    def _in_timeline(self, pos) -> bool:
        return pos[1] >= self.scene_rect.bottom

    def _step_at(self, x: float) -> int:
        """The step under timeline position ``x`` [px]."""
        u = (x - self._track.left) / max(self._track.width, 1)
        return self.scene.clamp(round(u * (self.scene.num_steps - 1)))

    def step_x(self, step: int) -> int:
        """Timeline position [px] of ``step``."""
        n = max(self.scene.num_steps - 1, 1)
        return int(round(self._track.left + step / n * self._track.width))

    def _marker_surface(self) -> pygame.Surface:
        """The static part of the timeline: track and event markers."""
        w = self.screen.get_width()
        surf = pygame.Surface((w, TIMELINE_H))
        surf.fill(C.PANEL)
        tr = self._track.move(0, -self.scene_rect.bottom)
        pygame.draw.rect(surf, C.TIMELINE_TRACK, tr)
        for row, kind in enumerate(EVENT_KINDS):
            color = C.EVENT_COLORS[kind]
            for step in sorted({e.step for e in self.scene.events if e.kind == kind}):
                x = self.step_x(step)
                pygame.draw.line(surf, color, (x, tr.top - 4 - 5 * row), (x, tr.top - 9 - 5 * row), 2)
        return surf

    def _draw_timeline(self) -> None:
        top = self.scene_rect.bottom
        self.screen.blit(self._markers, (0, top))
        k = self.replay.step
        x = self.step_x(k)
        pygame.draw.rect(self.screen, C.TIMELINE_DONE, (self._track.left, self._track.top, x - self._track.left,
                                                       self._track.height))
        pygame.draw.circle(self.screen, C.TIMELINE_KNOB, (x, self._track.centery), 7)
        st, sc = self.state, self.scene
        status = "playing" if st.playing else "paused"
        n = {kind: sum(e.kind == kind for e in sc.events) for kind in EVENT_KINDS}
        text = (f"{status}  {sc.t[k]:.2f} s / {sc.t[-1]:.2f} s   step {k} / {sc.num_steps - 1}   "
                f"speed {st.speed:g}x   camera {st.camera_mode}{' (heading-up)' if st.heading_up else ''}   "
                f"events: {n['collision']} collisions, {n['offroad']} off-road, {n['ttc']} TTC < {TTC_THRESHOLD:g} s")
        self.screen.blit(self.renderer.text(text, C.TEXT, small=True), (TRACK_MARGIN, top + 8))

    # ------------------------------------------------------------------------------------------ draw
    def draw(self) -> None:
        """Draw the scene, the info panel, the timeline (and the help) into the window surface."""
        r = self.replay
        k = r.step
        self.renderer.draw(self.scene_surface, self.scene.road, self.scene.frame(k), camera=r.camera(),
                           layers=self.state.layers, overlays=r.overlays(), hud=r.hud())
        self._draw_info()
        self._draw_timeline()
        if self.state.show_help:
            self._draw_help()

    def info_lines(self) -> list[str]:
        """The info panel's text for the selected vehicle."""
        vid = self.state.selected_vid
        if vid is None:
            return []
        slot = self.replay.selected_slot()
        if slot is None:
            return [f"vehicle {vid}", "not on the road at this step"]
        a, k = self.scene.arrays, self.replay.step
        role = "controlled" if a["controlled"][k, slot] else "background"
        flags = [s for s, on in (("collided", a["collided"][k, slot]), ("off-road", a["offroad"][k, slot])) if on]
        lane = int(a["lane"][k, slot])
        names = self.scene.road.lane_names
        gap, ttc = float(a["gap"][k, slot]), float(a["ttc"][k, slot])
        return [
            f"vehicle {vid} (slot {slot})",
            f"role: {role}" + (f", {', '.join(flags)}" if flags else ""),
            f"speed {a['speed'][k, slot]:.2f} m/s ({3.6 * a['speed'][k, slot]:.0f} km/h)",
            f"acceleration {a['accel'][k, slot]:+.2f} m/s^2",
            f"gap to leader {gap:.1f} m" if np.isfinite(gap) else "gap to leader: none",
            f"TTC {ttc:.2f} s" if np.isfinite(ttc) else "TTC: not closing",
            f"lane {names[lane] if 0 <= lane < len(names) else '-'}",
        ]

    def _draw_info(self) -> None:
        lines = self.info_lines()
        if not lines:
            return
        rows = [self.renderer.text(s) for s in lines]
        w = max(r.get_width() for r in rows) + 20
        h = sum(r.get_height() + 2 for r in rows) + 14
        x = self.scene_rect.right - w - 8
        self.renderer.panel(self.scene_surface, pygame.Rect(x, 8, w, h))
        y = 15
        for r in rows:
            self.scene_surface.blit(r, (x + 10, y))
            y += r.get_height() + 2

    def _draw_help(self) -> None:
        rows = [self.renderer.text(s) for s in HELP]
        w = max(r.get_width() for r in rows) + 24
        h = sum(r.get_height() + 4 for r in rows) + 16
        rect = pygame.Rect(0, 0, w, h)
        rect.center = self.scene_rect.center
        self.renderer.panel(self.scene_surface, rect)
        y = rect.top + 10
        for r in rows:
            self.scene_surface.blit(r, (rect.left + 12, y))
            y += r.get_height() + 4
