"""boxes_overlap against shapely on random and edge-case pairs."""

import math

import numpy as np
import pytest
import shapely

from drivediff.sim.geometry import box_polygon_corners, boxes_overlap


def _shapely_boxes(boxes):
    return shapely.polygons(box_polygon_corners(boxes))


def test_random_pairs_agree_with_shapely():
    rng = np.random.default_rng(0)
    n = 20000
    a = np.column_stack([rng.uniform(-4, 4, n), rng.uniform(-4, 4, n), rng.uniform(-4, 4, n),
                         rng.uniform(0.5, 8, n), rng.uniform(0.5, 3, n)])
    b = np.column_stack([rng.uniform(-4, 4, n), rng.uniform(-4, 4, n), rng.uniform(-4, 4, n),
                         rng.uniform(0.5, 8, n), rng.uniform(0.5, 3, n)])
    ours = boxes_overlap(a, b)
    ref = shapely.intersects(_shapely_boxes(a), _shapely_boxes(b))
    assert ours.dtype == bool and ours.shape == (n,)
    # both outcomes are well represented, and every pair agrees
    assert 0.2 < ours.mean() < 0.8
    np.testing.assert_array_equal(ours, ref)


def test_near_misses_and_near_hits_agree_with_shapely():
    """Pairs placed within millimetres of touching, in every orientation."""
    rng = np.random.default_rng(1)
    n = 4000
    a = np.column_stack([np.zeros(n), np.zeros(n), rng.uniform(-math.pi, math.pi, n), np.full(n, 5.0),
                         np.full(n, 2.0)])
    direction = rng.uniform(-math.pi, math.pi, n)
    b = np.column_stack([np.cos(direction), np.sin(direction), rng.uniform(-math.pi, math.pi, n),
                         np.full(n, 5.0), np.full(n, 2.0)])
    # move b along the direction until shapely says the boxes just separate, then +-1 mm
    poly_a = _shapely_boxes(a)
    for k in range(n):
        lo, hi = 0.0, 12.0
        for _ in range(50):
            mid = 0.5 * (lo + hi)
            bb = b[k].copy()
            bb[:2] *= mid
            if shapely.intersects(poly_a[k], _shapely_boxes(bb)):
                lo = mid
            else:
                hi = mid
        b[k, :2] *= lo + (1e-3 if k % 2 else -1e-3)
    expected = np.arange(n) % 2 == 0  # -1 mm: overlapping; +1 mm: separated
    np.testing.assert_array_equal(boxes_overlap(a, b), expected)
    np.testing.assert_array_equal(shapely.intersects(poly_a, _shapely_boxes(b)), expected)


def test_edge_cases():
    car = [0.0, 0.0, 0.0, 5.0, 2.0]
    # identical boxes overlap
    assert boxes_overlap(car, car)
    # exactly touching (axis aligned, exactly representable): touching counts as overlap
    assert boxes_overlap(car, [5.0, 0.0, 0.0, 5.0, 2.0])
    assert boxes_overlap(car, [0.0, 2.0, 0.0, 5.0, 2.0])
    assert not boxes_overlap(car, [5.0 + 1e-9, 0.0, 0.0, 5.0, 2.0])
    # yaw near +-pi is the same box
    for yaw in (math.pi, -math.pi, math.pi - 1e-12, 3 * math.pi):
        assert boxes_overlap([0, 0, yaw, 5, 2], [4.9, 0, 0, 5, 2])
        assert not boxes_overlap([0, 0, yaw, 5, 2], [5.1, 0, 0, 5, 2])
    # a long thin box crossing a square without containing a corner of it (needs the box's own axes)
    assert boxes_overlap([0, 0, math.pi / 4, 20, 0.5], [0, 0, 0, 2, 2])
    # separated only along an axis of the second box
    assert not boxes_overlap([0, 0, 0, 2, 2], [2.6, 2.6, math.pi / 4, 2, 2])


def test_broadcasting():
    a = np.zeros((3, 1, 5))
    a[..., 3:] = [5.0, 2.0]
    b = np.zeros((1, 4, 5))
    b[..., 0] = [0.0, 4.0, 6.0, 20.0]
    b[..., 3:] = [5.0, 2.0]
    out = boxes_overlap(a, b)
    assert out.shape == (3, 4)
    np.testing.assert_array_equal(out[0], [True, True, False, False])


@pytest.mark.parametrize("bad, msg", [
    (np.zeros((3, 4)), "shape"),
    ([0, 0, 0, 5.0, float("nan")], "NaN"),
    ([0, 0, 0, -5.0, 2.0], "positive"),
])
def test_bad_input_is_rejected(bad, msg):
    with pytest.raises(ValueError, match=msg):
        boxes_overlap(bad, [0, 0, 0, 5, 2])
