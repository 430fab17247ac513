"""Rendering the real simulator: render_world, the live window (``simulate --render``), and a log of a
real crash through the viewer and the exporter."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pygame
import pytest
from PIL import Image

from drivediff.render import TrailBuffer, render_world
from drivediff.render import colors as C
from drivediff.render.export import export_log
from drivediff.render.live import LiveWindow, policy_overlays, run_live
from drivediff.render.scene import LogScene
from drivediff.render.viewer import Viewer
from drivediff.sim import Behavior, World
from drivediff.sim import layout as L
from drivediff.sim.log import EpisodeLog

SIZE = (320, 240)
CRASH_STEPS = 70


def crash_world() -> World:
    """lead-braking with the controlled vehicle (slot 0) accelerating into the braking leader."""
    w = World("lead-braking", num_worlds=1)
    w.reset(seed=0)
    w.set_behavior(Behavior.EXTERNAL, slots=[0])
    return w


def crash_actions(w: World) -> np.ndarray:
    a = np.zeros((1, w.max_vehicles, 2))
    a[0, 0, 0] = 3.0  # m/s^2, no steering
    return a


@pytest.fixture(scope="module")
def crash_log() -> EpisodeLog:
    w = crash_world()
    initial = w.snapshot(0)
    rec = w.run(CRASH_STEPS, record=True, actions=crash_actions(w))
    return EpisodeLog.from_recording(rec, 0, w.road, {"scenario": "lead-braking", "dt": w.dt}, initial=initial)


def test_run_live_records_what_run_records():
    live, ref = World("merge", num_worlds=2), World("merge", num_worlds=2)
    live.reset(seed=3)
    ref.reset(seed=3)
    rec = run_live(live, 15, fps=0, size=SIZE)
    want = ref.run(15, record=True)
    assert set(rec) == set(want) == set(L.LOG_FIELDS) | {"t"}
    for k in want:
        assert rec[k].dtype == want[k].dtype and rec[k].shape == want[k].shape, k
        np.testing.assert_array_equal(rec[k], want[k], err_msg=k)
    assert not pygame.display.get_init()  # the window is closed afterwards


class AcceleratingPolicy:
    """The Policy protocol (reset/act): slot 0 accelerates; it keeps a plan record like the diffusion
    policy's, so the live window has plans to draw."""

    name = "accelerate"

    def __init__(self):
        self.records = []

    def reset(self, world) -> None:
        world.set_behavior(Behavior.EXTERNAL, slots=[0])

    def act(self, world) -> np.ndarray:
        x, y = float(world.state.x[0, 0]), float(world.state.y[0, 0])
        plan = np.stack([x + np.arange(1, 9) * 3.0, np.full(8, y)], axis=1)
        self.records.append(SimpleNamespace(plans={(0, 0): plan, (1, 0): plan + 100}, candidates={},
                                            predictions={}))
        return crash_actions(world)


def test_run_live_with_a_policy():
    w, ref = World("lead-braking", num_worlds=1), crash_world()
    w.reset(seed=0)
    pol = AcceleratingPolicy()
    pol.reset(w)
    rec = run_live(w, 30, fps=0, policy=pol, size=SIZE)
    want = ref.run(30, record=True, actions=crash_actions(ref))
    for k in want:
        np.testing.assert_array_equal(rec[k], want[k], err_msg=k)
    ov = policy_overlays(pol, 0)
    assert list(ov["plans"]) == [0] and ov["plans"][0][0, 0] == pytest.approx(rec["x"][0, -2, 0] + 3.0)
    assert policy_overlays(object(), 0) == {} and policy_overlays(None, 0) == {}


def test_simulate_render_command():
    from drivediff.cli import main

    assert main(["simulate", "merge", "--steps", "5", "--render"]) == 0
    assert not pygame.display.get_init()


def test_closing_the_window_ends_the_run_early():
    w = World("merge", num_worlds=1)
    w.reset(seed=0)
    pygame.display.init()
    pygame.event.post(pygame.event.Event(pygame.QUIT))
    rec = run_live(w, 50, fps=0, size=SIZE)
    assert rec["x"].shape == (1, 0, w.max_vehicles) and rec["t"].shape == (0,)
    assert int(w.state.step[0]) == 0


def test_render_world_follows_and_colours_a_real_crash():
    w = crash_world()
    trails = TrailBuffer(w.max_vehicles, 20)
    for _ in range(CRASH_STEPS):
        w.step(crash_actions(w))
        trails.push({k: getattr(w.state, k)[0] for k in ("x", "y", "valid", "vid")})
    assert w.state.collided[0, 0]
    img = render_world(w, 0, size=SIZE, follow=0, trails=trails)
    assert img.shape == (SIZE[1], SIZE[0], 3)
    assert img[SIZE[1] // 2, SIZE[0] // 2].tolist() == list(C.COLLIDED)  # centred on the crashed vehicle
    leader = int(np.flatnonzero(w.state.collided[0] & (np.arange(w.max_vehicles) != 0))[0])
    cam_scale = SIZE[1] / 90.0
    dx = (w.state.x[0, leader] - w.state.x[0, 0]) * cam_scale
    dy = (w.state.y[0, leader] - w.state.y[0, 0]) * cam_scale
    assert img[int(round(SIZE[1] / 2 - dy)), int(round(SIZE[0] / 2 + dx))].tolist() == list(C.COLLIDED)
    behind = img[SIZE[1] // 2, SIZE[0] // 2 - 30]  # 11 m behind: the vehicle's own trail
    assert behind.tolist() == list(C.TRAIL_COLORS[C.ROLE_COLLIDED])


def test_live_window_show_and_close():
    w = World("merge", num_worlds=1)
    w.reset(seed=0)
    win = LiveWindow(SIZE, fps=0)
    assert win.show(w)
    pygame.event.post(pygame.event.Event(pygame.KEYDOWN, key=pygame.K_TAB, mod=0, unicode="\t"))
    assert win.show(w) and win.follow is not None
    pygame.event.post(pygame.event.Event(pygame.QUIT))
    assert not win.show(w) and not win.is_open


def test_viewer_jumps_to_the_real_collision(crash_log):
    scene = LogScene(crash_log)
    crashes = [e for e in scene.events if e.kind == "collision"]
    assert crashes and {e.vid for e in crashes} >= {0}
    v = Viewer(scene, (640, 400))
    try:
        while v.state.step < crashes[0].step:
            pygame.event.post(pygame.event.Event(pygame.KEYDOWN, key=pygame.K_RIGHTBRACKET, mod=0, unicode="]"))
            v.tick(0.0)
        assert v.state.step == crashes[0].step
        slot = v.replay.selected_slot()
        assert scene.arrays["collided"][v.state.step, slot]
        pygame.event.post(pygame.event.Event(pygame.KEYDOWN, key=pygame.K_c, mod=0, unicode="c"))
        v.tick(0.0)
        centre = (320, (400 - 58) // 2)
        assert tuple(v.screen.get_at(centre))[:3] == C.COLLIDED
    finally:
        v.close()


def test_export_of_a_simulated_log(crash_log, tmp_path):
    out = export_log(LogScene(crash_log), tmp_path / "crash.gif", size=SIZE)
    with Image.open(out) as im:
        assert im.n_frames == CRASH_STEPS + 1
        im.seek(CRASH_STEPS)
        last = np.asarray(im.convert("RGB"))
    assert (last == C.COLLIDED).all(axis=-1).sum() > 20


def test_render_bench_smoke():
    import io

    from rich.console import Console

    from drivediff.render.bench import print_render_bench, run_render_bench

    r = run_render_bench(quick=True)
    assert set(r["render"]) == {"ring_whole", "all_in_view", "follow"}
    assert r["render"]["ring_whole"]["vehicles"] == 100 and r["render"]["all_in_view"]["vehicles"] == 100
    assert all(v["fps"] > 0 for v in r["render"].values())
    assert {k: v["frames"] for k, v in r["export"].items()} == {"mp4": 60, "gif": 60}
    out = io.StringIO()
    print_render_bench(r, Console(file=out, width=150))
    assert "ring road" in out.getvalue() and "GIF" in out.getvalue()
