"""Episode logs: one versioned, self-contained ``.npz`` file per episode.

A log holds per-step arrays of shape (T, N) for every field of ``layout.LOG_FIELDS`` (``x, y, yaw,
speed, accel, steer, length, width, gap, ttc, lane, vid, behavior, leader, valid, controlled, collided,
offroad``), the time ``t`` (T,), the road geometry (so the viewer needs no scenario), metadata (JSON) and
optional extras (``extra_*`` arrays, e.g. the diffusion planner's plans and candidates).

Files are written to a temporary name in the same directory and renamed into place, so a crash never
leaves a half-written log. ``read_log`` rejects a missing file, a truncated or corrupted file, an unknown
format version or a missing field with a :class:`~drivediff.errors.LogError` that says which.
"""

from __future__ import annotations

import json
import os
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from drivediff._version import __version__
from drivediff.errors import LogError
from drivediff.io import atomic_write
from drivediff.sim import layout as L
from drivediff.sim.road import Road, RoadArrays

FORMAT = "drivediff-log"
FORMAT_VERSION = 1

__all__ = ["EpisodeLog", "read_log", "write_log", "FORMAT_VERSION"]


@dataclass
class EpisodeLog:
    """One episode of one world.

    Attributes:
        t: (T,) time of each step [s].
        arrays: field name -> (T, N) array, for every field of ``layout.LOG_FIELDS``.
        road: the road.
        meta: scenario, seed, dt, package version, ... (JSON-serialisable).
        extras: optional named arrays (``plans``: (T, N, H, 2), ``candidates``, ...).
    """

    t: np.ndarray
    arrays: dict[str, np.ndarray]
    road: Road
    meta: dict = field(default_factory=dict)
    extras: dict[str, np.ndarray] = field(default_factory=dict)

    @property
    def num_steps(self) -> int:
        return int(self.t.shape[0])

    @property
    def num_slots(self) -> int:
        return int(self.arrays["x"].shape[1])

    def __getitem__(self, name: str) -> np.ndarray:
        return self.arrays[name]

    @classmethod
    def from_recording(cls, rec: dict[str, np.ndarray], b: int, road: Road, meta: dict,
                       initial: dict[str, np.ndarray] | None = None, t0: float = 0.0) -> EpisodeLog:
        """A log of world ``b`` from ``World.run(..., record=True)`` output, optionally prefixed by the
        initial state (``World.snapshot(b)``) at time ``t0``."""
        arrays = {k: rec[k][b] for k in L.LOG_FIELDS}
        t = np.asarray(rec["t"], dtype=np.float64)
        if initial is not None:
            arrays = {k: np.concatenate([initial[k], arrays[k]], axis=0) for k in L.LOG_FIELDS}
            t = np.concatenate([[t0], t])
        return cls(t=t, arrays=arrays, road=road, meta=dict(meta))


def write_log(path: str | os.PathLike, log: EpisodeLog) -> Path:
    """Write ``log`` to ``path`` atomically (temporary file + rename). Returns the path."""
    path = Path(path)
    if path.suffix != ".npz":
        path = path.with_suffix(path.suffix + ".npz") if path.suffix else path.with_suffix(".npz")
    meta = dict(log.meta)
    meta.setdefault("package_version", __version__)
    payload: dict[str, np.ndarray] = {
        "format": np.array(FORMAT),
        "format_version": np.array(FORMAT_VERSION),
        "meta_json": np.array(json.dumps(meta, default=_json_default)),
        "t": np.asarray(log.t, dtype=np.float64),
    }
    for k in L.LOG_FIELDS:
        payload[f"step_{k}"] = np.asarray(log.arrays[k])
    payload.update(log.road.to_dict())
    for k, v in log.extras.items():
        payload[f"extra_{k}"] = np.asarray(v)
    return atomic_write(path, lambda fh: np.savez_compressed(fh, **payload))


def _json_default(o):
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    raise TypeError(f"not JSON-serialisable: {type(o).__name__}")


def read_log(path: str | os.PathLike) -> EpisodeLog:
    """Read and validate an episode log."""
    path = Path(path)
    if not path.exists():
        raise LogError(f"log file not found: {path}")
    if not path.is_file():
        raise LogError(f"not a file: {path}")
    try:
        with np.load(path, allow_pickle=False) as z:
            data = {k: z[k] for k in z.files}
    except ValueError as e:
        # numpy's messages about pickles suggest loading the file unsafely: not advice to pass on
        why = str(e)
        if "Object arrays" in why:
            raise LogError(f"{path}: holds pickled Python objects, which drivediff does not load") from None
        if "allow_pickle" in why:
            why = "not an .npz archive"
        raise LogError(f"{path}: not a readable drivediff log (truncated or corrupted file: {why})") from None
    except (zipfile.BadZipFile, EOFError, OSError) as e:
        raise LogError(f"{path}: not a readable drivediff log (truncated or corrupted file: {e})") from None
    if "format" not in data or str(data["format"]) != FORMAT:
        raise LogError(f"{path}: not a drivediff episode log (no '{FORMAT}' marker)")
    version = int(data.get("format_version", -1))
    if version != FORMAT_VERSION:
        raise LogError(f"{path}: log format version {version} is not supported (this drivediff reads "
                       f"version {FORMAT_VERSION})")
    missing = [k for k in ("t", "meta_json") if k not in data]
    missing += [f"step_{k}" for k in L.LOG_FIELDS if f"step_{k}" not in data]
    missing += [f"road_{k}" for k in RoadArrays._fields if f"road_{k}" not in data]
    missing += [k for k in ("road_lane_names", "road_polygon_wkb") if k not in data]
    if missing:
        raise LogError(f"{path}: log is missing field(s): {', '.join(missing)}")
    t = data["t"]
    arrays = {k: data[f"step_{k}"] for k in L.LOG_FIELDS}
    shapes = {k: v.shape for k, v in arrays.items()}
    bad = [k for k, s in shapes.items() if len(s) != 2 or s[0] != t.shape[0] or s != shapes["x"]]
    if bad:
        raise LogError(f"{path}: field(s) {', '.join(bad)} do not have shape (T, N) = "
                       f"({t.shape[0]}, {shapes['x'][1] if len(shapes['x']) == 2 else '?'})")
    try:
        meta = json.loads(str(data["meta_json"]))
        road = Road.from_dict(data)
    except (ValueError, KeyError) as e:
        raise LogError(f"{path}: corrupted metadata or road: {e}") from None
    extras = {k[len("extra_"):]: v for k, v in data.items() if k.startswith("extra_")}
    return EpisodeLog(t=t, arrays=arrays, road=road, meta=meta, extras=extras)
