"""The replay viewer driven by posted pygame events under the dummy video driver."""

from __future__ import annotations

import math

import numpy as np
import pygame
import pytest

from drivediff.render import colors as C
from drivediff.render.scene import LogScene
from drivediff.render.viewer import TIMELINE_H, Viewer

from . import DT, synthetic_log

SIZE = (800, 500)


@pytest.fixture
def viewer():
    v = Viewer(LogScene(synthetic_log()), SIZE, title="synthetic")
    v.tick(0.0)
    yield v
    v.close()


def key(v: Viewer, k: int, mod: int = 0, unicode: str = "") -> None:
    pygame.event.post(pygame.event.Event(pygame.KEYDOWN, key=k, mod=mod, unicode=unicode))
    v.tick(0.0)


def click(v: Viewer, pos, button: int = 1) -> None:
    pygame.event.post(pygame.event.Event(pygame.MOUSEBUTTONDOWN, pos=pos, button=button))
    pygame.event.post(pygame.event.Event(pygame.MOUSEBUTTONUP, pos=pos, button=button))
    v.tick(0.0)


def drag(v: Viewer, start, end) -> None:
    rel = (end[0] - start[0], end[1] - start[1])
    pygame.event.post(pygame.event.Event(pygame.MOUSEBUTTONDOWN, pos=start, button=1))
    pygame.event.post(pygame.event.Event(pygame.MOUSEMOTION, pos=end, rel=rel, buttons=(1, 0, 0)))
    pygame.event.post(pygame.event.Event(pygame.MOUSEBUTTONUP, pos=end, button=1))
    v.tick(0.0)


def screen_pixel(v: Viewer, x: float, y: float) -> tuple[int, int, int]:
    sx, sy = np.rint(v.replay.camera().to_screen(np.array([x, y]))).astype(int)
    return tuple(v.screen.get_at((int(sx), int(sy))))[:3]


def test_starts_paused_at_step_zero_fitting_the_road(viewer):
    st = viewer.state
    assert (st.step, st.playing, st.camera_mode) == (0, False, "fit")
    assert st.selected_vid == 0  # the controlled vehicle
    assert screen_pixel(viewer, 20.0, 0.0) == C.CONTROLLED


def test_play_pause_and_speed(viewer):
    key(viewer, pygame.K_SPACE)
    assert viewer.state.playing
    viewer.tick(0.5)  # 0.5 s of wall time at 1x and dt 0.1 s
    assert viewer.state.step == 5
    key(viewer, pygame.K_UP)
    key(viewer, pygame.K_UP)
    assert viewer.state.speed == 4.0
    viewer.tick(0.25)
    assert viewer.state.step == 15
    key(viewer, pygame.K_SPACE)
    viewer.tick(1.0)
    assert not viewer.state.playing and viewer.state.step == 15
    for _ in range(10):
        key(viewer, pygame.K_DOWN)
    assert viewer.state.speed == 0.1
    for _ in range(10):
        key(viewer, pygame.K_EQUALS)
    assert viewer.state.speed == 8.0


def test_playback_stops_at_the_end_and_restarts(viewer):
    key(viewer, pygame.K_SPACE)
    viewer.tick(100.0)
    assert viewer.state.step == viewer.scene.num_steps - 1 and not viewer.state.playing
    key(viewer, pygame.K_SPACE)
    assert viewer.state.playing and viewer.state.step == 0


def test_step_and_jump_keys(viewer):
    key(viewer, pygame.K_RIGHT)
    assert viewer.state.step == 1
    key(viewer, pygame.K_RIGHT, mod=pygame.KMOD_LSHIFT)
    assert viewer.state.step == 11
    key(viewer, pygame.K_LEFT)
    assert viewer.state.step == 10
    key(viewer, pygame.K_END)
    assert viewer.state.step == viewer.scene.num_steps - 1
    key(viewer, pygame.K_RIGHT)
    assert viewer.state.step == viewer.scene.num_steps - 1  # clamped
    key(viewer, pygame.K_HOME)
    assert viewer.state.step == 0
    key(viewer, pygame.K_LEFT)
    assert viewer.state.step == 0


def test_the_drawn_scene_follows_the_step(viewer):
    key(viewer, pygame.K_RIGHT, mod=pygame.KMOD_SHIFT)
    key(viewer, pygame.K_RIGHT, mod=pygame.KMOD_SHIFT)  # step 20: vehicle 0 at x = 20 + 10 * 2 = 40
    assert screen_pixel(viewer, 40.0, 0.0) == C.CONTROLLED
    key(viewer, pygame.K_RIGHT, mod=pygame.KMOD_SHIFT)  # step 30: vehicle 1 has collided
    assert screen_pixel(viewer, 60.0 + 6.0 * 3.0, 0.0) == C.COLLIDED


def test_seek_by_clicking_and_dragging_the_timeline(viewer):
    y = SIZE[1] - 18
    click(viewer, (viewer.step_x(30), y))
    assert viewer.state.step == 30
    pygame.event.post(pygame.event.Event(pygame.MOUSEBUTTONDOWN, pos=(viewer.step_x(10), y), button=1))
    pygame.event.post(pygame.event.Event(pygame.MOUSEMOTION, pos=(viewer.step_x(44), y), rel=(0, 0),
                                         buttons=(1, 0, 0)))
    viewer.tick(0.0)
    assert viewer.state.step == 44
    pygame.event.post(pygame.event.Event(pygame.MOUSEBUTTONUP, pos=(viewer.step_x(44), y), button=1))
    viewer.tick(0.0)
    assert viewer.replay.state.camera_mode == "fit"  # the timeline drag did not pan the scene


def test_follow_by_tab_and_by_click(viewer):
    key(viewer, pygame.K_TAB)  # the controlled vehicle was selected; tab moves to the next one
    assert viewer.state.camera_mode == "follow"
    first = viewer.state.selected_vid
    key(viewer, pygame.K_TAB, mod=pygame.KMOD_SHIFT)
    assert viewer.state.selected_vid == 0 and first != 0
    cam = viewer.replay.camera()
    assert cam.center == (20.0, 0.0)
    viewer.tick(0.0)
    mid = (SIZE[0] // 2, (SIZE[1] - TIMELINE_H) // 2)
    assert tuple(viewer.screen.get_at(mid))[:3] == C.CONTROLLED
    key(viewer, pygame.K_f)
    assert viewer.state.camera_mode == "fit"
    target = np.rint(viewer.replay.camera().to_screen(np.array([40.0, 4.0]))).astype(int)  # vehicle 2
    click(viewer, tuple(target.tolist()))
    assert viewer.state.selected_vid == 2 and viewer.state.camera_mode == "follow"
    assert viewer.replay.camera().center == (40.0, 4.0)
    key(viewer, pygame.K_RIGHT)
    assert viewer.replay.camera().center == pytest.approx((40.8, 4.0))  # the camera moves with it


def test_heading_up_zoom_and_pan(viewer):
    key(viewer, pygame.K_c)
    assert viewer.state.camera_mode == "follow"
    key(viewer, pygame.K_h)
    assert viewer.replay.camera().rotation == pytest.approx(math.pi / 2)  # yaw 0 -> pointing up
    scale = viewer.replay.camera().scale
    pygame.event.post(pygame.event.Event(pygame.MOUSEWHEEL, x=0, y=2, flipped=False))
    viewer.tick(0.0)
    assert viewer.replay.camera().scale == pytest.approx(scale * 1.2 ** 2)
    key(viewer, pygame.K_h)
    key(viewer, pygame.K_f)
    before = viewer.replay.camera()
    drag(viewer, (400, 200), (450, 180))
    after = viewer.replay.camera()
    assert viewer.state.camera_mode == "free"
    assert after.center[0] == pytest.approx(before.center[0] - 50 / before.scale)
    assert after.center[1] == pytest.approx(before.center[1] - 20 / before.scale)
    pygame.event.post(pygame.event.Event(pygame.MOUSEWHEEL, x=0, y=-1, flipped=False))
    viewer.tick(0.0)
    assert viewer.replay.camera().scale == pytest.approx(after.scale / 1.2)


def test_layer_toggles(viewer):
    key(viewer, pygame.K_RIGHT, mod=pygame.KMOD_SHIFT)  # step 10: the controlled vehicle has a trail
    key(viewer, pygame.K_c)
    key(viewer, pygame.K_PLUS)  # speed, not a layer
    trail_px = screen_pixel(viewer, 20.0 + 10.0 * 0.5, 0.0)
    plan_px = screen_pixel(viewer, 30.0 + 14.0, 0.0)  # 14 m ahead of the vehicle, on its plan
    assert trail_px == C.TRAIL_COLORS[C.ROLE_CONTROLLED]
    assert plan_px == C.PLAN
    for k, name in ((pygame.K_1, "trails"), (pygame.K_2, "plans"), (pygame.K_3, "candidates"),
                    (pygame.K_4, "predictions")):
        key(viewer, k)
        assert name not in viewer.state.layers
    assert screen_pixel(viewer, 25.0, 0.0) != C.TRAIL_COLORS[C.ROLE_CONTROLLED]
    assert screen_pixel(viewer, 44.0, 0.0) != C.PLAN
    assert "ids" not in viewer.state.layers
    key(viewer, pygame.K_5)
    assert "ids" in viewer.state.layers
    key(viewer, pygame.K_1)
    assert "trails" in viewer.state.layers


def test_event_markers_and_jumps(viewer):
    kinds = [(e.step, e.kind, e.vid) for e in viewer.scene.events]
    assert kinds == [(25, "ttc", 0), (30, "collision", 1), (40, "offroad", 2)]
    key(viewer, pygame.K_RIGHTBRACKET)
    assert viewer.state.step == 25 and viewer.state.selected_vid == 0
    key(viewer, pygame.K_RIGHTBRACKET)
    assert viewer.state.step == 30 and viewer.state.selected_vid == 1
    key(viewer, pygame.K_PAGEDOWN)
    assert viewer.state.step == 40 and viewer.state.selected_vid == 2
    key(viewer, pygame.K_RIGHTBRACKET)
    assert viewer.state.step == 40  # no later event
    key(viewer, pygame.K_LEFTBRACKET)
    assert viewer.state.step == 30
    # the markers are drawn on the timeline in the event colours
    track_top = SIZE[1] - 20
    for step, color in ((30, C.EVENT_COLORS["collision"]), (40, C.EVENT_COLORS["offroad"]),
                        (25, C.EVENT_COLORS["ttc"])):
        x = viewer.step_x(step)
        column = [tuple(viewer.screen.get_at((x, y)))[:3] for y in range(track_top - 20, track_top)]
        assert color in column


def test_info_panel(viewer):
    key(viewer, pygame.K_RIGHTBRACKET)  # the TTC event of vehicle 0 at step 25
    lines = "\n".join(viewer.info_lines())
    assert "vehicle 0" in lines and "controlled" in lines
    assert "speed 10.00 m/s" in lines and "TTC 1.00 s" in lines
    assert f"gap to leader {60.0 + 6.0 * 2.5 - 20.0 - 10.0 * 2.5 - 5.0:.1f} m" in lines
    key(viewer, pygame.K_RIGHTBRACKET)  # vehicle 1 collides at step 30
    assert "collided" in "\n".join(viewer.info_lines())
    key(viewer, pygame.K_HOME)
    viewer.replay.select(7)  # vehicle 7 enters at step 20
    assert viewer.info_lines()[1] == "not on the road at this step"


def test_help_and_quit(viewer):
    key(viewer, pygame.K_SLASH, unicode="?")
    assert viewer.state.show_help
    key(viewer, pygame.K_F1)
    assert not viewer.state.show_help
    key(viewer, pygame.K_ESCAPE)
    assert not viewer.state.running


def test_run_returns_when_the_window_is_closed():
    v = Viewer(LogScene(synthetic_log(20, with_extras=False)), SIZE)
    pygame.event.post(pygame.event.Event(pygame.KEYDOWN, key=pygame.K_SPACE, mod=0, unicode=" "))
    pygame.event.post(pygame.event.Event(pygame.QUIT))
    v.run()
    assert not v.state.running and v.state.playing
    assert not pygame.display.get_init()


def test_playback_rate_uses_the_log_dt(viewer):
    assert viewer.scene.dt == DT
