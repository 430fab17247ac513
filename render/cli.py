"""Bodies of the render commands of the ``drivediff`` CLI (imported lazily by ``drivediff/cli.py``).

    drivediff replay LOG                          open the replay viewer on an episode log
    drivediff replay LOG --export out.mp4         render every frame to MP4 / GIF / a folder of PNGs
"""

from __future__ import annotations

import time
from pathlib import Path

from rich.console import Console

from drivediff.errors import DrivediffError, LogError
from drivediff.render.scene import LogScene
from drivediff.sim.log import read_log

__all__ = ["load_scene", "parse_size", "replay"]


def parse_size(text: str) -> tuple[int, int]:
    """``"1280x720"`` -> (1280, 720)."""
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise DrivediffError(f"size must look like 1280x720, got {text!r}") from None
    if w < 16 or h < 16:
        raise DrivediffError(f"size must be at least 16x16 pixels, got {text!r}")
    return w, h


def load_scene(log: str | Path) -> LogScene:
    """Read and check an episode log for display.

    Raises:
        LogError: missing, truncated, foreign or unknown-version file; empty log; malformed planner extras.
    """
    path = Path(log)
    if path.is_dir():
        raise LogError(f"{path} is a directory; give an episode log file (.npz)")
    return LogScene(read_log(path))


def replay(log: Path, export: str | Path | None = None, fps: float | None = None, size=(1280, 720),
           console: Console | None = None) -> int:
    """``drivediff replay LOG [--export PATH] [--fps F]``: open the viewer, or export headlessly.

    Args:
        log: the episode log (``.npz``).
        export: write the frames to ``*.mp4``, ``*.gif`` or a directory of PNGs (an existing one, a path
            without a suffix, or one ending in ``/``) instead of opening a window.
        fps: export: frames per second (default: the log's rate, real time); viewer: refresh rate
            (default 60).
        size: frame / window (width, height) [px].
        console: where progress and the summary go (default: stderr).

    Returns:
        The exit status (0).

    Raises:
        DrivediffError: a bad log (LogError), a bad export path or size, no display for the viewer.
    """
    console = console or Console(stderr=True)
    path = Path(log)
    scene = load_scene(path)
    title = f"{scene.log.meta.get('scenario', 'episode')} - {path.name}"
    if fps is not None and not fps > 0:
        raise DrivediffError(f"--fps must be positive, got {fps}")
    if export is not None:
        return _export(scene, export, fps, size, title, console)
    from drivediff.render.viewer import Viewer

    Viewer(scene, size, fps=fps or 60.0, title=title).run()
    return 0


def _export(scene: LogScene, out: str | Path, fps, size, title: str, console: Console) -> int:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from drivediff.render.export import export_format, export_log

    fmt = export_format(out)
    t0 = time.perf_counter()
    columns = (TextColumn("exporting"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    with Progress(*columns, console=console, transient=True) as prog:
        task = prog.add_task("export", total=scene.num_steps)
        path = export_log(scene, out, fps=fps, size=size, title=title,
                          progress=lambda done, total: prog.update(task, completed=done))
    wall = time.perf_counter() - t0
    what = {"mp4": "MP4 video", "gif": "GIF", "png": "PNG frames"}[fmt]
    console.print(f"wrote {scene.num_steps} frames ({size[0]}x{size[1]}) as {what} to {path} in {wall:.1f} s",
                  highlight=False)
    return 0
