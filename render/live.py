"""A live window on a running simulation: ``drivediff simulate ... --render`` and ``render_mode="human"``.

:class:`LiveWindow` shows a :class:`drivediff.sim.World` as it runs (Gymnasium's ``human`` mode: draw,
flip, wait for the frame rate). :func:`run_live` steps a world one step per frame in such a window and
records the run exactly as ``World.run(num_steps, record=True)`` would.

Window controls: space pause, tab / shift+tab follow the next / previous vehicle, f fit the road,
h heading-up, wheel zoom, 1 trails, 5 ids, esc or closing the window stops.
"""

from __future__ import annotations

import numpy as np
import pygame

from drivediff.errors import DrivediffError
from drivediff.render.renderer import Renderer, resolve_layers
from drivediff.render.replay import ZOOM_STEP
from drivediff.render.scene import TRAIL_SECONDS, TrailBuffer
from drivediff.render.world import world_camera, world_frame, world_hud
from drivediff.sim import layout as L

__all__ = ["LiveWindow", "policy_overlays", "run_live"]


class LiveWindow:
    """A window that shows world ``b`` of a live World.

    Args:
        size: window (width, height) [px].
        fps: frames per second :meth:`show` paces itself to (None or 0: as fast as possible).
        title: window title.

    Raises:
        DrivediffError: no window can be opened (no display; use ``SDL_VIDEODRIVER=dummy`` to run headless).
    """

    def __init__(self, size: tuple[int, int] = (1280, 720), fps: float | None = None, title: str = "drivediff"):
        try:
            pygame.display.init()
            self.screen = pygame.display.set_mode(tuple(int(v) for v in size))
        except pygame.error as e:
            raise DrivediffError(f"cannot open a window ({e}); run without --render, or export a log "
                                 "with `drivediff replay LOG --export out.mp4`") from None
        pygame.display.set_caption(title)
        self.fps = float(fps or 0.0)
        self.renderer = Renderer()
        self.clock = pygame.time.Clock()
        self.is_open = True
        self.paused = False
        self.follow: int | None = None  # slot; None: the default view
        self.zoom = 1.0
        self.heading_up = False
        self.layers = set(resolve_layers(None))

    # ----------------------------------------------------------------------------------------- public
    def show(self, world, b: int = 0, *, trails: TrailBuffer | None = None, overlays=None) -> bool:
        """Handle window events, draw world ``b``, flip and wait for the frame rate.

        Returns:
            False once the window has been closed (nothing is drawn then).
        """
        self.poll(world, b)
        if not self.is_open:
            return False
        frame = world_frame(world, b)
        if self.follow is not None and not frame["valid"][self.follow]:
            self.follow = None
        ov = dict(overlays or {})
        if trails is not None:
            ov["trails"], ov["trails_mask"] = trails.get()
        if self.follow is not None:
            ov["highlight"] = self.follow
        hud = world_hud(world, b, frame, self.follow)
        if self.paused:
            hud["lines"] = ["paused (space)"]
        cam = world_camera(world, frame, self.screen.get_size(), self.follow, self.zoom, self.heading_up)
        self.renderer.draw(self.screen, world.road, frame, camera=cam, layers=self.layers, overlays=ov, hud=hud)
        pygame.display.flip()
        self.clock.tick(self.fps)
        return True

    def poll(self, world=None, b: int = 0) -> bool:
        """Handle pending window events; returns whether the window is still open."""
        for ev in pygame.event.get():
            if ev.type == pygame.QUIT or (ev.type == pygame.KEYDOWN and ev.key == pygame.K_ESCAPE):
                self.close()
            elif ev.type == pygame.KEYDOWN:
                self._on_key(ev.key, getattr(ev, "mod", 0), world, b)
            elif ev.type == pygame.MOUSEWHEEL:
                self.zoom = float(np.clip(self.zoom * ZOOM_STEP ** ev.y, 0.05, 50.0))
        return self.is_open

    def close(self) -> None:
        if self.is_open:
            self.is_open = False
            pygame.display.quit()

    # ---------------------------------------------------------------------------------------- helpers
    def _on_key(self, key: int, mod: int, world, b: int) -> None:
        if key == pygame.K_SPACE:
            self.paused = not self.paused
        elif key == pygame.K_f:
            self.follow = None
        elif key == pygame.K_h:
            self.heading_up = not self.heading_up
        elif key in (pygame.K_1, pygame.K_5):
            self.layers ^= {"trails" if key == pygame.K_1 else "ids"}
        elif key == pygame.K_TAB and world is not None:
            self.follow = _next_slot(world_frame(world, b), self.follow, -1 if mod & pygame.KMOD_SHIFT else 1)


def _next_slot(frame, current: int | None, direction: int) -> int | None:
    """The next valid slot after ``current``, controlled vehicles first."""
    idx = np.flatnonzero(frame["valid"])
    if not idx.size:
        return None
    order = idx[np.lexsort((idx, ~frame["controlled"][idx].astype(bool)))].tolist()
    if current not in order:
        return order[0 if direction > 0 else -1]
    return order[(order.index(current) + direction) % len(order)]


def _record_buffers(world, num_steps: int) -> dict[str, np.ndarray]:
    b, n = world.num_worlds, world.max_vehicles
    out = {k: np.zeros((b, num_steps, n)) for k in L.LOG_FLOATS}
    out.update({k: np.zeros((b, num_steps, n), np.int64) for k in L.LOG_INTS})
    out.update({k: np.zeros((b, num_steps, n), np.bool_) for k in L.LOG_FLAGS})
    return out


def policy_overlays(policy, b: int) -> dict:
    """Planner overlays of world ``b`` from a policy's latest plan record, if it keeps any.

    A policy that records (``policy.records``, a list whose items have dict attributes ``plans``
    ``{(b, slot): (H, 2)}``, ``candidates`` ``{(b, slot): ((C, H, 2), (C,), chosen)}`` and ``predictions``
    ``{(b, slot): (M, H, 2)}``, as the diffusion policy does) gets its latest plans drawn; others none.
    """
    records = getattr(policy, "records", None)
    if not records:
        return {}
    rec = records[-1]
    out = {}
    for name in ("plans", "candidates", "predictions"):
        items = getattr(rec, name, None) or {}
        out[name] = {slot: v for (wb, slot), v in items.items() if wb == b}
    return out


def run_live(world, num_steps: int, fps: float | None = None, *, policy=None, size: tuple[int, int] = (1280, 720),
             b: int = 0) -> dict:
    """Step ``world`` one step per frame in a window and record the run.

    Args:
        world: a reset :class:`drivediff.sim.World` (all its worlds are stepped; world ``b`` is shown).
        num_steps: steps to simulate.
        fps: frames (= steps) per second; None: real time (1 / dt); 0: as fast as possible.
        policy: drives the controlled vehicles (``policy.act(world)`` -> (B, N, 2) actions each step,
            after ``policy.reset(world)``); None: the world's built-in behaviours. Its latest plans are
            drawn (see :func:`policy_overlays`).
        size: window (width, height) [px].
        b: the world shown.

    Returns:
        What ``world.run(num_steps, record=True)`` returns: a (B, T, N) array per field of
        ``layout.LOG_FIELDS`` plus ``t`` (T,) [s]; T < num_steps if the window was closed early.
    """
    if not isinstance(num_steps, int | np.integer) or num_steps < 0:
        raise DrivediffError(f"num_steps must be a non-negative integer, got {num_steps!r}")
    rate = 1.0 / world.dt if fps is None else float(fps)
    window = LiveWindow(size, rate, title=f"drivediff - {world.config.name}")
    rec = _record_buffers(world, int(num_steps))
    trails = TrailBuffer(world.max_vehicles, int(round(TRAIL_SECONDS / world.dt)) + 1)
    t0 = int(world.state.step[0])
    done = 0
    try:
        trails.push(world_frame(world, b))
        while done < num_steps and window.show(world, b, trails=trails, overlays=policy_overlays(policy, b)):
            if window.paused:
                continue
            world.step(None if policy is None else policy.act(world))
            for k, arr in rec.items():
                arr[:, done] = getattr(world.state, k)
            trails.push(world_frame(world, b))
            done += 1
        if done == num_steps:
            window.show(world, b, trails=trails, overlays=policy_overlays(policy, b))  # the final state
    finally:
        window.close()
    out = {k: v[:, :done] for k, v in rec.items()}
    out["t"] = (t0 + 1 + np.arange(done)) * world.dt
    return out
