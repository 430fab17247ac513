"""``drivediff bench render``: rendering and export speed.

Scenes: 100 vehicles at 10 Hz for 40 s (400 steps), simulated by the real simulator: the highway scenario
(99 background + 1 controlled vehicle on 4 lanes) and a 600 m ring road. Measured:

* frame rate of :func:`~drivediff.render.render_frame` at 1280x720 with 3 s trails, image array included:
  (a) the ring, whole road in view (all 100 vehicles drawn with outlines and heading marks), (b) the
  highway with a camera keeping all 100 vehicles in view (zoomed out) and (c) the highway's default view
  (following the controlled vehicle, as the viewer and the exporter show it);
* the time to export the 40 s episode to MP4 and to GIF (``drivediff replay LOG --export``).

Targets (issue 6): above 60 frames/s; export of a 40 s episode at 10 Hz under 30 s.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np

from drivediff.render.camera import Camera

__all__ = ["print_render_bench", "run_render_bench"]

FPS_TARGET = 60.0
EXPORT_TARGET_S = 30.0
SIZE = (1280, 720)


SCENES = {
    "highway": ("highway", {"dt": 0.1, "traffic": {"count": 99}}),  # + 1 controlled vehicle
    "ring": ("ring", {"dt": 0.1, "road": {"length": 600.0}, "traffic": {"count": 100}}),
}


def _episode(num_steps: int, scene: str = "highway"):
    """A LogScene of 100 vehicles at 10 Hz: ``highway`` (4 lanes, 3 km) or ``ring`` (600 m ring road)."""
    from drivediff.render.scene import LogScene
    from drivediff.sim import World
    from drivediff.sim.log import EpisodeLog

    name, overrides = SCENES[scene]
    world = World(name, num_worlds=1, overrides=overrides)
    world.reset(seed=0)
    initial = world.snapshot(0)
    rec = world.run(num_steps - 1, record=True)
    log = EpisodeLog.from_recording(rec, 0, world.road, {"scenario": f"{scene}-100", "dt": world.dt},
                                    initial=initial)
    return LogScene(log)


def _fps(scene, frames: int, camera_of) -> dict:
    """Mean and worst frame time of render_frame over ``frames`` steps of the scene."""
    from drivediff.render import render_frame
    from drivediff.render.renderer import visible_slots

    times, counts = [], []
    steps = np.linspace(scene.trail_len, scene.num_steps - 1, frames).astype(int)
    for k in steps:
        frame = scene.frame(k)
        trails, mask = scene.trails(k)
        hud = {"time": float(scene.t[k]), "step": int(k), "speed": float(frame["speed"][0])}
        cam = camera_of(frame)
        t0 = time.perf_counter()
        render_frame(scene.road, frame, size=SIZE, camera=cam, overlays={"trails": trails, "trails_mask": mask},
                     hud=hud)
        times.append(time.perf_counter() - t0)
        counts.append(int(visible_slots(frame, cam).size))
    t = np.array(times[1:] or times)  # the first frame builds the road layer
    return {"frames": len(t), "vehicles": int(np.median(counts)), "ms_mean": 1e3 * float(t.mean()),
            "ms_p95": 1e3 * float(np.percentile(t, 95)), "fps": float(1.0 / t.mean())}


class _AllInView:
    """A camera that keeps every vehicle in view: the scale that fits the first frame's vehicles with room
    to spare (fixed afterwards, as a user's zoom would be), centred on the vehicles."""

    def __init__(self):
        self.scale: float | None = None

    def __call__(self, frame) -> Camera:
        v = frame["valid"].astype(bool)
        x, y = frame["x"][v], frame["y"][v]
        box = (x.min() - 5, y.min() - 5, x.max() + 5, y.max() + 5)
        cam = Camera.fit(box, SIZE)
        if self.scale is None:
            self.scale = 0.8 * cam.scale
        return cam.with_(scale=self.scale)


def _export_time(scene, suffix: str) -> dict:
    from drivediff.render.export import export_log

    with tempfile.TemporaryDirectory(prefix="drivediff-bench-") as tmp:
        out = Path(tmp) / f"bench{suffix}"
        t0 = time.perf_counter()
        export_log(scene, out, size=SIZE)
        wall = time.perf_counter() - t0
        mb = out.stat().st_size / 1e6
    return {"frames": scene.num_steps, "seconds": wall, "fps": scene.num_steps / wall, "mb": mb}


def run_render_bench(quick: bool = False) -> dict:
    """Measure rendering and export speed.

    Args:
        quick: 60 steps instead of 400 and fewer frames (a smoke run; export times are for 6 s of log).

    Returns:
        ``{"render": {"all_in_view": {...}, "follow": {...}}, "export": {"mp4": {...}, "gif": {...}},
        "episode": {...}, "targets": {...}}`` with frame times [ms], fps and export seconds.
    """
    from drivediff.render.renderer import auto_camera

    steps = 60 if quick else 400
    t0 = time.perf_counter()
    scene = _episode(steps)
    sim_s = time.perf_counter() - t0
    ring = _episode(steps, "ring")
    frames = 30 if quick else 200
    render = {
        "ring_whole": _fps(ring, frames, lambda f: auto_camera(ring.road, f, SIZE)),
        "all_in_view": _fps(scene, frames, _AllInView()),
        "follow": _fps(scene, frames, lambda f: auto_camera(scene.road, f, SIZE)),
    }
    export = {fmt: _export_time(scene, f".{fmt}") for fmt in ("mp4", "gif")}
    return {
        "episode": {"scenario": "highway, 100 vehicles", "steps": steps, "dt": scene.dt,
                    "duration_s": steps * scene.dt, "size": f"{SIZE[0]}x{SIZE[1]}", "sim_s": sim_s},
        "render": render,
        "export": export,
        "targets": {"fps": FPS_TARGET, "export_s_for_40s": EXPORT_TARGET_S},
        "quick": quick,
    }


def print_render_bench(results: dict, console) -> None:
    """Print the results of :func:`run_render_bench` as tables on a rich console."""
    from rich.table import Table

    ep = results["episode"]
    t = Table(title=f"render_frame {ep['size']} with 3 s trails (target > {FPS_TARGET:.0f} fps)")
    for col in ("view", "vehicles drawn", "ms/frame", "p95 ms", "fps", "target"):
        t.add_column(col, justify="right" if col != "view" else "left")
    names = {"ring_whole": "ring road, 100 vehicles, whole road", "all_in_view": "highway, all 100 in view",
             "follow": "highway, default view (follow)"}
    for key, r in results["render"].items():
        ok = "ok" if r["fps"] >= FPS_TARGET else "MISSED"
        t.add_row(names.get(key, key), str(r["vehicles"]), f"{r['ms_mean']:.2f}", f"{r['ms_p95']:.2f}",
                  f"{r['fps']:.0f}", ok)
    console.print(t)
    scale = 40.0 / ep["duration_s"]
    e = Table(title=f"export: {ep['scenario']}, {ep['duration_s']:.0f} s at {1 / ep['dt']:.0f} Hz, {ep['size']} "
                    f"(target < {EXPORT_TARGET_S:.0f} s for 40 s)")
    for col in ("format", "frames", "seconds", "frames/s", "size MB", "per 40 s", "target"):
        e.add_column(col, justify="right" if col != "format" else "left")
    for fmt, r in results["export"].items():
        per40 = r["seconds"] * scale
        e.add_row(fmt.upper(), str(r["frames"]), f"{r['seconds']:.1f}", f"{r['fps']:.0f}", f"{r['mb']:.1f}",
                  f"{per40:.1f}", "ok" if per40 < EXPORT_TARGET_S else "MISSED")
    console.print(e)
