"""Off-screen rendering of known scenes, checked pixel by pixel at computed screen positions."""

from __future__ import annotations

import math

import numpy as np
import pygame
import pytest

from drivediff.render import Camera, Renderer, RenderError, render_frame
from drivediff.render import colors as C
from drivediff.render.renderer import auto_camera, resolve_layers

from . import make_frame, straight_road

SIZE = (320, 240)


@pytest.fixture(scope="module")
def road():
    return straight_road(junction_at=200.0)


def cam_at(x: float, y: float, scale: float = 10.0, rotation: float = 0.0) -> Camera:
    return Camera((x, y), scale, rotation, SIZE)


def pixel(img: np.ndarray, cam: Camera, x: float, y: float) -> tuple[int, int, int]:
    """The colour drawn at world point (x, y)."""
    sx, sy = np.rint(cam.to_screen(np.array([x, y]))).astype(int)
    assert 0 <= sx < img.shape[1] and 0 <= sy < img.shape[0], "point off screen"
    return tuple(int(v) for v in img[sy, sx])


def test_image_shape_dtype_and_headless(road):
    pygame.display.quit()
    img = render_frame(road, make_frame([{"x": 50.0, "y": 0.0}]), size=SIZE)
    assert img.shape == (240, 320, 3) and img.dtype == np.uint8
    assert not pygame.display.get_init()  # off-screen rendering needs no window or video driver


def test_vehicle_drawn_where_it_is_with_y_up(road):
    cam = cam_at(50.0, 2.0)
    f = make_frame([{"x": 45.0, "y": 0.0}, {"x": 55.0, "y": 4.0, "controlled": True}])
    img = render_frame(road, f, size=SIZE, camera=cam)
    assert pixel(img, cam, 45.0, 0.0) == C.BACKGROUND_VEHICLE
    assert pixel(img, cam, 55.0, 4.0) == C.CONTROLLED
    assert pixel(img, cam, 45.0, -1.6) == C.ASPHALT  # beyond the 2 m width, on the lane
    assert pixel(img, cam, 50.0, 0.0) == C.ASPHALT  # between the two vehicles
    # y up: the northern vehicle is higher on screen
    assert cam.to_screen(np.array([55.0, 4.0]))[1] < cam.to_screen(np.array([45.0, 0.0]))[1]
    assert img[120 - 20, 160 + 50].tolist() == list(C.CONTROLLED)  # (55, 4) is 50 px right, 20 px up


def test_vehicle_orientation_follows_yaw(road):
    cam = cam_at(50.0, 2.0)
    img = render_frame(road, make_frame([{"x": 50.0, "y": 2.0, "yaw": math.pi / 2}]), size=SIZE, camera=cam)
    assert pixel(img, cam, 50.0, 2.0 - 1.7) == C.BACKGROUND_VEHICLE  # along the 5 m length (north-south)
    assert pixel(img, cam, 50.0 + 1.7, 2.0) != C.BACKGROUND_VEHICLE  # across the 2 m width
    # the heading mark sits in the front (northern) half
    assert pixel(img, cam, 50.0, 2.0 + 1.2) == C.HEADING_MARK
    assert pixel(img, cam, 50.0, 2.0 - 1.2) == C.BACKGROUND_VEHICLE


@pytest.mark.parametrize(("flags", "color"), [
    ({"collided": True}, C.COLLIDED),
    ({"offroad": True}, C.OFFROAD),
    ({"controlled": True, "collided": True}, C.COLLIDED),
    ({"controlled": True, "offroad": True}, C.OFFROAD),
    ({"controlled": True}, C.CONTROLLED),
])
def test_role_colours(road, flags, color):
    cam = cam_at(50.0, 2.0)
    img = render_frame(road, make_frame([{"x": 50.0, "y": 0.0, **flags}]), size=SIZE, camera=cam)
    assert pixel(img, cam, 50.0, 0.0) == color


def test_empty_slots_are_not_drawn(road):
    cam = cam_at(50.0, 2.0)
    f = make_frame([{"x": 50.0, "y": 0.0}], num_slots=3)
    f["x"][1:], f["y"][1:] = 55.0, 4.0  # stale positions in empty slots
    img = render_frame(road, f, size=SIZE, camera=cam)
    assert pixel(img, cam, 55.0, 4.0) == C.ASPHALT


def test_road_markings_and_junction(road):
    cam = cam_at(100.0, 2.0, scale=10.0)
    img = render_frame(road, make_frame([]), size=SIZE, camera=cam)
    assert pixel(img, cam, 100.0, 0.0) == C.ASPHALT  # lane centre
    assert pixel(img, cam, 100.0, -2.0) == C.MARKING  # outer solid edge of lane 0
    assert pixel(img, cam, 100.0, 6.0) == C.MARKING  # outer solid edge of lane 1
    assert pixel(img, cam, 100.0, 12.0) == C.BACKGROUND
    dashed = [pixel(img, cam, x, 2.0) for x in np.arange(90.0, 110.0, 0.5)]
    assert C.MARKING in dashed and C.ASPHALT in dashed  # dashes and gaps between the lanes
    cam = cam_at(210.0, 0.0)
    img = render_frame(road, make_frame([]), size=SIZE, camera=cam)
    assert pixel(img, cam, 210.0, 0.0) == C.JUNCTION


def test_default_camera_fits_the_road(road):
    size = (1280, 720)
    img = render_frame(road, make_frame([{"x": 100.0, "y": 0.0}]), size=size)
    cam = auto_camera(road, None, size)
    x0, y0, x1, y1 = road.bounds
    corners = cam.to_screen(np.array([[x0, y0], [x1, y1]]))
    assert (corners >= 0).all() and (corners[:, 0] <= size[0]).all() and (corners[:, 1] <= size[1]).all()
    assert pixel(img, cam, 100.0, 0.0) == C.BACKGROUND_VEHICLE


def test_long_road_default_camera_follows_the_controlled_vehicle():
    long_road = straight_road(length=3000.0)
    f = make_frame([{"x": 300.0, "y": 0.0}, {"x": 2000.0, "y": 4.0, "controlled": True}])
    cam = auto_camera(long_road, f, SIZE)
    assert cam.center == (2000.0, 4.0)
    img = render_frame(long_road, f, size=SIZE)
    assert img[SIZE[1] // 2, SIZE[0] // 2].tolist() == list(C.CONTROLLED)


def test_heading_up_camera_points_the_vehicle_up(road):
    yaw = 0.3
    cam = cam_at(50.0, 2.0, rotation=math.pi / 2 - yaw)
    img = render_frame(road, make_frame([{"x": 50.0, "y": 2.0, "yaw": yaw}]), size=SIZE, camera=cam)
    assert img[120 - 12, 160].tolist() == list(C.HEADING_MARK)  # the front is up the screen
    assert img[120 + 20, 160].tolist() == list(C.BACKGROUND_VEHICLE)  # 2 m down: the rear of the car
    assert img[120, 160 + 16].tolist() != list(C.BACKGROUND_VEHICLE)  # 1.6 m to the side: not the car


def plan_overlays(f):
    plan = np.stack([np.linspace(52.0, 70.0, 10), np.zeros(10)], axis=1)
    cands = np.stack([np.stack([np.linspace(52.0, 70.0, 10), np.full(10, dy)], axis=1) for dy in (4.0, -4.0, 8.0)])
    preds = np.stack([np.linspace(40.0, 48.0, 6), np.full(6, 4.0)], axis=1)[None]
    return {"plans": {0: plan}, "candidates": {0: (cands, np.array([5.5, 1.0, 10.0]), 1)},
            "predictions": {0: preds}}


def test_overlays_present_when_enabled_and_absent_when_not(road):
    cam = cam_at(55.0, 2.0)
    f = make_frame([{"x": 50.0, "y": 0.0, "controlled": True}])
    ov = plan_overlays(f)
    img = render_frame(road, f, size=SIZE, camera=cam, overlays=ov)
    assert pixel(img, cam, 65.0, 0.0) == C.PLAN
    assert pixel(img, cam, 65.0, 4.0) == C.CANDIDATE_MID  # cost 5.5 of 1..10: half-way, yellow
    assert pixel(img, cam, 65.0, -4.0) == C.CANDIDATE_LOW  # the chosen (cheapest) one, bold
    assert pixel(img, cam, 65.0, -4.0 + 0.25) in (C.CANDIDATE_LOW, C.CHOSEN_OUTLINE)
    assert pixel(img, cam, 65.0, 8.0) == C.CANDIDATE_HIGH
    assert pixel(img, cam, 44.0, 4.0) == C.PREDICTION
    off = render_frame(road, f, size=SIZE, camera=cam, overlays=ov,
                       layers={"plans": False, "candidates": False, "predictions": False})
    for x, y in ((65.0, 0.0), (65.0, 4.0), (65.0, -4.0), (44.0, 4.0)):
        assert pixel(off, cam, x, y) in (C.ASPHALT, C.MARKING, C.BACKGROUND)


def test_overlays_of_empty_slots_are_skipped(road):
    cam = cam_at(55.0, 2.0)
    f = make_frame([{"x": 50.0, "y": 0.0}], num_slots=2)
    ov = {"plans": {1: np.stack([np.linspace(52.0, 70.0, 10), np.zeros(10)], axis=1)}}
    img = render_frame(road, f, size=SIZE, camera=cam, overlays=ov)
    assert pixel(img, cam, 65.0, 0.0) == C.ASPHALT


def test_trails_in_faded_role_colour_with_mask(road):
    cam = cam_at(50.0, 2.0)
    f = make_frame([{"x": 50.0, "y": 0.0, "controlled": True}, {"x": 60.0, "y": 4.0}])
    k = 11
    trails = np.zeros((2, k, 2))
    trails[0, :, 0] = np.linspace(30.0, 50.0, k)
    trails[1, :, 0] = np.linspace(40.0, 60.0, k)
    trails[1, :, 1] = 4.0
    mask = np.ones((2, k), bool)
    mask[1, :6] = False  # slot 1's older points belong to a previous vehicle
    img = render_frame(road, f, size=SIZE, camera=cam, overlays={"trails": trails, "trails_mask": mask})
    assert pixel(img, cam, 40.0, 0.0) == C.TRAIL_COLORS[C.ROLE_CONTROLLED]
    assert pixel(img, cam, 54.0, 4.0) == C.TRAIL_COLORS[C.ROLE_BACKGROUND]
    assert pixel(img, cam, 44.0, 4.0) != C.TRAIL_COLORS[C.ROLE_BACKGROUND]  # masked out
    off = render_frame(road, f, size=SIZE, camera=cam, overlays={"trails": trails}, layers={"trails": False})
    assert pixel(off, cam, 40.0, 0.0) == C.ASPHALT


def test_ids_and_hud_layers(road):
    cam = cam_at(50.0, 2.0)
    f = make_frame([{"x": 50.0, "y": 0.0, "vid": 42}])
    hud = {"time": 1.5, "step": 15, "speed": 12.0}
    base = render_frame(road, f, size=SIZE, camera=cam)
    ids = render_frame(road, f, size=SIZE, camera=cam, layers={"ids": True})
    label = (slice(60, 120), slice(160, 220))  # above and to the right of the vehicle
    assert (ids[label] != base[label]).any() and (ids[label] == C.TEXT).all(axis=-1).any()
    with_hud = render_frame(road, f, size=SIZE, camera=cam, hud=hud)
    corner = (slice(8, 40), slice(8, 120))
    assert (with_hud[corner] != base[corner]).any()
    hidden = render_frame(road, f, size=SIZE, camera=cam, hud=hud, layers={"hud": False})
    assert np.array_equal(hidden, base)


def test_selected_vehicle_is_outlined(road):
    cam = cam_at(50.0, 2.0)
    f = make_frame([{"x": 50.0, "y": 0.0}])
    img = render_frame(road, f, size=SIZE, camera=cam, overlays={"highlight": 0})
    ring = [pixel(img, cam, 50.0 + dx, 0.0) for dx in np.arange(2.5, 3.4, 0.1)]
    assert C.SELECTED in ring


def test_cached_road_layer_matches_a_fresh_draw_after_panning(road):
    r = Renderer()
    f = make_frame([{"x": 50.0, "y": 0.0}])
    cam = cam_at(50.0, 2.0)
    r.render(road, f, size=SIZE, camera=cam)
    panned = cam.panned(30, -20)  # a whole number of pixels: the cache is reused exactly
    img = r.render(road, f, size=SIZE, camera=panned)
    assert r.road_layer.rebuilds == 1
    fresh = Renderer().render(road, f, size=SIZE, camera=panned)
    assert np.array_equal(img, fresh)
    r.render(road, f, size=SIZE, camera=cam.zoomed(1.5))
    assert r.road_layer.rebuilds == 2  # a new scale redraws the layer


def test_bad_input_is_a_clear_error(road):
    f = make_frame([{"x": 50.0, "y": 0.0}])
    with pytest.raises(RenderError, match="missing field"):
        render_frame(road, {k: v for k, v in f.items() if k != "yaw"})
    bad = dict(f, speed=np.zeros(3))
    with pytest.raises(RenderError, match="speed"):
        render_frame(road, bad)
    with pytest.raises(RenderError, match="unknown layer"):
        render_frame(road, f, layers={"traffic"})
    with pytest.raises(RenderError, match="size"):
        render_frame(road, f, size=(0, 100))
    with pytest.raises(RenderError, match="trails"):
        render_frame(road, f, overlays={"trails": np.zeros((5, 3, 2))})
    with pytest.raises(ValueError, match="scale"):
        Camera(scale=0.0)


def test_layers_resolution():
    assert resolve_layers(None) == resolve_layers({}) and "ids" not in resolve_layers(None)
    assert resolve_layers({"ids": True, "trails": False}) == resolve_layers(None) - {"trails"} | {"ids"}
    assert resolve_layers(["road"]) == {"road"}


def test_camera_round_trip_and_zoom_anchor():
    cam = Camera((10.0, -5.0), 7.0, 0.4, (640, 480))
    pts = np.array([[0.0, 0.0], [12.5, -3.0], [-100.0, 40.0]])
    assert np.allclose(cam.to_world(cam.to_screen(pts)), pts)
    z = cam.zoomed(2.0, anchor=(100.0, 50.0))
    assert np.allclose(z.to_world(np.array([100.0, 50.0])), cam.to_world(np.array([100.0, 50.0])))
    assert z.scale == pytest.approx(14.0)
    p = cam.panned(25, -10)
    assert np.allclose(p.to_screen(pts) - cam.to_screen(pts), [25, -10])
