"""Public geometry helpers (validated wrappers around the simulator's kernels)."""

from __future__ import annotations

import numpy as np

from drivediff.sim.kernels.collision import box_overlap_many

__all__ = ["boxes_overlap", "box_polygon_corners"]


def _as_boxes(name: str, arr) -> np.ndarray:
    a = np.asarray(arr, dtype=np.float64)
    if a.ndim == 0 or a.shape[-1] != 5:
        raise ValueError(f"{name} must have shape (..., 5) holding [x, y, yaw, length, width]; got {a.shape}")
    if not np.all(np.isfinite(a)):
        raise ValueError(f"{name} contains NaN or inf")
    if np.any(a[..., 3:5] <= 0):
        raise ValueError(f"{name}: length and width must be positive")
    return a


def boxes_overlap(a, b) -> np.ndarray:
    """Whether oriented rectangles overlap (touching counts as overlap).

    Args:
        a, b: float arrays of shape (..., 5) holding ``[x, y, yaw, length, width]``: centre [m], heading
            [rad, CCW], full length and width [m]. Leading dimensions broadcast.

    Returns:
        bool array of the broadcast leading shape.

    This is the same separating-axis kernel the simulator uses for collision checks.
    """
    a = _as_boxes("a", a)
    b = _as_boxes("b", b)
    shape = np.broadcast_shapes(a.shape[:-1], b.shape[:-1])
    aa = np.ascontiguousarray(np.broadcast_to(a, shape + (5,)).reshape(-1, 5))
    bb = np.ascontiguousarray(np.broadcast_to(b, shape + (5,)).reshape(-1, 5))
    out = np.empty(aa.shape[0], dtype=np.bool_)
    box_overlap_many(aa, bb, out)
    return out.reshape(shape)


def box_polygon_corners(boxes) -> np.ndarray:
    """Corners of boxes ``(..., 5)`` as ``(..., 4, 2)``, counter-clockwise starting front-left."""
    b = _as_boxes("boxes", boxes)
    c, s = np.cos(b[..., 2]), np.sin(b[..., 2])
    hl, hw = 0.5 * b[..., 3], 0.5 * b[..., 4]
    signs = np.array([[1, 1], [-1, 1], [-1, -1], [1, -1]], dtype=np.float64)
    lx = signs[:, 0] * hl[..., None]
    ly = signs[:, 1] * hw[..., None]
    x = b[..., 0:1] + lx * c[..., None] - ly * s[..., None]
    y = b[..., 1:2] + lx * s[..., None] + ly * c[..., None]
    return np.stack([x, y], axis=-1)
