"""Headless export of an episode log: every step rendered to MP4, GIF or a folder of PNG frames.

The format follows the output path: ``*.mp4`` (H.264 through imageio-ffmpeg), ``*.gif`` (Pillow, a
fixed palette, streamed frame by frame so memory stays flat), or a directory (an existing one, or a path
ending in ``/`` or without a suffix) of ``frame_00000.png`` ... Files are written under a temporary name
and renamed into place, so an interrupted export leaves no half-written video.

The camera and HUD are the viewer's initial view (:class:`~drivediff.render.replay.Replay`): the whole
road, or following the first controlled vehicle on a road too long to show whole.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pygame
from PIL import GifImagePlugin, Image

from drivediff.errors import DrivediffError
from drivediff.io import atomic_write
from drivediff.render import colors as C
from drivediff.render.renderer import Renderer, _check_size, resolve_layers, surface_to_array
from drivediff.render.replay import Replay
from drivediff.render.scene import LogScene

__all__ = ["ExportError", "export_format", "export_log", "render_log_frames"]

VIDEO_SUFFIXES = {".mp4": "mp4", ".gif": "gif"}


class ExportError(DrivediffError, ValueError):
    """An export path or option is unusable."""


def export_format(path: str | os.PathLike) -> str:
    """``mp4``, ``gif`` or ``png`` (a folder of frames) for an output path (give the path as typed: a
    trailing slash marks a folder)."""
    text = os.fspath(path)
    path = Path(text)
    if path.is_dir() or text.endswith(("/", os.sep)) or not path.suffix:
        return "png"
    fmt = VIDEO_SUFFIXES.get(path.suffix.lower())
    if fmt is None:
        raise ExportError(f"cannot export to {path}: use a .mp4 or .gif file, or a directory for PNG frames")
    return fmt


def render_log_frames(scene: LogScene, size: tuple[int, int] = (1280, 720), layers=None, title: str | None = None):
    """Yield every step of a log as an (H, W, 3) uint8 image (the viewer's initial view)."""
    replay = Replay(scene, size, name=title)
    if layers is not None:
        replay.state.layers = set(resolve_layers(layers))
    renderer = Renderer()
    surface = pygame.Surface(replay.size)
    for k in range(scene.num_steps):
        replay.seek(k)
        renderer.draw(surface, scene.road, scene.frame(k), camera=replay.camera(), layers=replay.state.layers,
                      overlays=replay.overlays(), hud=replay.hud())
        yield surface_to_array(surface)


def export_log(scene: LogScene, out: str | os.PathLike, *, fps: float | None = None,
               size: tuple[int, int] = (1280, 720), layers=None, title: str | None = None,
               progress: Callable[[int, int], None] | None = None) -> Path:
    """Render every step of a log and write it as a video, a GIF or PNG frames.

    Args:
        scene: the log.
        out: ``*.mp4``, ``*.gif``, or a directory for PNG frames.
        fps: frames per second of the video (default: the log's rate, i.e. real time). GIF frame delays
            are whole centiseconds, so a GIF's rate is rounded (10 Hz is exact, 15 Hz plays at 14.3).
        size: frame (width, height) [px]; even numbers for MP4 (H.264 with 4:2:0 colour).
        layers: enabled layers (default: all but ids).
        title: HUD title.
        progress: called as ``progress(frames_done, frames_total)`` after each frame.

    Returns:
        The path written.

    Raises:
        ExportError: unknown format, odd MP4 size, bad fps, an unwritable destination.
    """
    fmt = export_format(out)
    out = Path(out)
    size = _check_size(size)
    fps = float(fps) if fps is not None else 1.0 / scene.dt
    if not (np.isfinite(fps) and 0 < fps <= 1000):
        raise ExportError(f"fps must be a positive number (at most 1000), got {fps}")
    if fmt == "mp4" and (size[0] % 2 or size[1] % 2):
        raise ExportError(f"MP4 export needs an even width and height, got {size[0]}x{size[1]}")
    frames = render_log_frames(scene, size, layers, title)
    writer = {"mp4": _write_mp4, "gif": _write_gif, "png": _write_pngs}[fmt]
    total = scene.num_steps

    def counted():
        for i, f in enumerate(frames):
            yield f
            if progress is not None:
                progress(i + 1, total)

    try:
        return writer(out, counted(), size, fps)
    except OSError as e:
        raise ExportError(f"cannot write {out}: {e.strerror or e}") from None


# ------------------------------------------------------------------------------------------------ writers


def _atomic_path(out: Path, suffix: str, write: Callable[[Path], None]) -> Path:
    """Run ``write(tmp)`` on a temporary path next to ``out`` (ending in ``suffix``, for tools that pick
    the format by extension), then rename it into place."""
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{out.name}.", suffix=f".tmp{suffix}", dir=out.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        write(tmp)
        mask = os.umask(0)
        os.umask(mask)
        os.chmod(tmp, 0o666 & ~mask)
        os.replace(tmp, out)
    finally:
        if tmp.exists():
            tmp.unlink()
    return out


def _write_mp4(out: Path, frames, size, fps: float) -> Path:
    import imageio_ffmpeg

    def write(tmp: Path) -> None:
        gen = imageio_ffmpeg.write_frames(str(tmp), size, fps=fps, codec="libx264", pix_fmt_out="yuv420p",
                                          quality=None, macro_block_size=1, ffmpeg_log_level="error",
                                          output_params=["-preset", "superfast", "-crf", "23", "-f", "mp4"])
        gen.send(None)
        try:
            for f in frames:
                gen.send(np.ascontiguousarray(f))
        finally:
            gen.close()

    return _atomic_path(out, ".mp4", write)


def _palette() -> tuple[Image.Image, np.ndarray]:
    """The GIF palette: the renderer's named colours, a grey ramp (text) and a 6x6x6 colour cube; and a
    lookup table from 5-bit-per-channel RGB to palette index."""
    named = [getattr(C, n) for n in dir(C) if n.isupper() and isinstance(getattr(C, n), tuple)
             and len(getattr(C, n)) == 3 and all(isinstance(v, int) for v in getattr(C, n))]
    named += list(C.TRAIL_COLORS) + list(C.EVENT_COLORS.values())
    greys = [(v, v, v) for v in np.linspace(0, 255, 16).astype(int).tolist()]
    cube = [(r, g, b) for r in range(0, 256, 51) for g in range(0, 256, 51) for b in range(0, 256, 51)]
    pal = list(dict.fromkeys(named + greys + cube))[:256]
    pal_arr = np.array(pal, dtype=np.float64)
    levels = np.arange(32) * 8 + 4
    grid = np.stack(np.meshgrid(levels, levels, levels, indexing="ij"), axis=-1).reshape(-1, 3)
    lut = np.empty(len(grid), dtype=np.uint8)
    for a in range(0, len(grid), 4096):
        d = ((grid[a:a + 4096, None, :] - pal_arr[None]) ** 2).sum(-1)
        lut[a:a + 4096] = d.argmin(1)
    for i, (r, g, b) in enumerate(pal[:len(named)]):  # exact colours map to themselves
        lut[(r >> 3) << 10 | (g >> 3) << 5 | (b >> 3)] = i
    img = Image.new("P", (1, 1))
    img.putpalette([v for c in pal for v in c] + [0] * 3 * (256 - len(pal)))
    return img, lut


def _quantize(frame: np.ndarray, pal_img: Image.Image, lut: np.ndarray) -> Image.Image:
    f = frame.astype(np.uint16) >> 3
    im = Image.fromarray(lut[(f[..., 0] << 10) | (f[..., 1] << 5) | f[..., 2]])  # mode L
    im.putpalette(pal_img.getpalette())  # -> mode P
    return im


def _write_gif(out: Path, frames, size, fps: float) -> Path:
    pal_img, lut = _palette()
    delay_ms = max(20, int(round(100.0 / fps)) * 10)

    def write(fh) -> None:
        first = True
        for f in frames:
            im = _quantize(f, pal_img, lut)
            if first:
                header, _ = GifImagePlugin.getheader(im, None, {"loop": 0, "duration": delay_ms, "optimize": False})
                fh.write(b"".join(header))
                first = False
            fh.write(b"".join(GifImagePlugin.getdata(im, duration=delay_ms)))
        fh.write(b";")

    return atomic_write(out, write)


def _write_pngs(out: Path, frames, size, fps: float) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    for i, f in enumerate(frames):
        name = out / f"frame_{i:05d}.png"
        atomic_write(name, lambda fh, f=f: Image.fromarray(f).save(fh, format="PNG", compress_level=1))
    return out
