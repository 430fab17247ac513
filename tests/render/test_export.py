"""Headless export (GIF, MP4, PNG frames) read back, and `replay` on good and bad logs."""

from __future__ import annotations

import io
import zipfile

import imageio_ffmpeg
import numpy as np
import pygame
import pytest
from PIL import Image
from rich.console import Console

from drivediff.errors import DrivediffError, LogError
from drivediff.render import colors as C
from drivediff.render.cli import load_scene, parse_size, replay
from drivediff.render.export import ExportError, export_log
from drivediff.render.scene import LogScene
from drivediff.sim.log import write_log

from . import synthetic_log

SIZE = (320, 200)
STEPS = 12


@pytest.fixture(scope="module")
def log_path(tmp_path_factory):
    return write_log(tmp_path_factory.mktemp("logs") / "synthetic.npz", synthetic_log(STEPS))


def quiet() -> Console:
    return Console(file=io.StringIO(), width=200)


def test_gif_has_one_frame_per_step(log_path, tmp_path):
    out = tmp_path / "out.gif"
    assert replay(log_path, export=out, size=SIZE, console=quiet()) == 0
    with Image.open(out) as im:
        assert im.n_frames == STEPS and im.size == SIZE
        assert im.info["duration"] == 100  # 10 Hz log -> 100 ms per frame
        im.seek(STEPS - 1)
        last = np.asarray(im.convert("RGB"))
    assert (last == C.CONTROLLED).all(axis=-1).any()  # the palette keeps the renderer's colours exact
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.gif"]  # no temporary files left


def test_mp4_has_one_frame_per_step(log_path, tmp_path):
    out = tmp_path / "sub" / "out.mp4"
    export_log(load_scene(log_path), out, size=SIZE, fps=5)
    reader = imageio_ffmpeg.read_frames(str(out))
    meta = next(reader)
    frames = [np.frombuffer(f, np.uint8).reshape(SIZE[1], SIZE[0], 3) for f in reader]
    assert tuple(meta["size"]) == SIZE and meta["fps"] == pytest.approx(5.0)
    assert len(frames) == STEPS
    assert sorted(p.name for p in out.parent.iterdir()) == ["out.mp4"]


def test_png_frames_with_planner_overlays(log_path, tmp_path):
    out = tmp_path / "frames"
    progress = []
    export_log(load_scene(log_path), out, size=SIZE, progress=lambda done, total: progress.append((done, total)))
    files = sorted(out.glob("frame_*.png"))
    assert [f.name for f in files] == [f"frame_{i:05d}.png" for i in range(STEPS)]
    assert progress[-1] == (STEPS, STEPS) and len(progress) == STEPS
    img = np.asarray(Image.open(files[5]).convert("RGB"))
    assert img.shape == (SIZE[1], SIZE[0], 3)
    for color in (C.PLAN, C.PREDICTION, C.CANDIDATE_HIGH):  # the recorded planner data is drawn
        assert (img == color).all(axis=-1).any(), color


def test_a_trailing_slash_means_a_folder_of_frames(log_path, tmp_path):
    replay(log_path, export=f"{tmp_path}/frames.v1/", size=SIZE, console=quiet())
    assert len(list((tmp_path / "frames.v1").glob("frame_*.png"))) == STEPS


def test_export_layers(log_path, tmp_path):
    export_log(load_scene(log_path), tmp_path / "f", size=SIZE, layers={"plans": False, "candidates": False})
    img = np.asarray(Image.open(tmp_path / "f" / "frame_00005.png").convert("RGB"))
    assert not (img == C.PLAN).all(axis=-1).any() and (img == C.PREDICTION).all(axis=-1).any()


def test_export_runs_without_a_window(log_path, tmp_path):
    pygame.display.quit()
    export_log(load_scene(log_path), tmp_path / "x.gif", size=SIZE)
    assert not pygame.display.get_init()


def test_bad_export_targets(log_path, tmp_path):
    scene = load_scene(log_path)
    with pytest.raises(ExportError, match=r"\.mp4 or \.gif"):
        export_log(scene, tmp_path / "out.avi", size=SIZE)
    with pytest.raises(ExportError, match="even"):
        export_log(scene, tmp_path / "out.mp4", size=(321, 200))
    with pytest.raises(ExportError, match="fps"):
        export_log(scene, tmp_path / "out.gif", size=SIZE, fps=0)
    assert list(tmp_path.iterdir()) == []


def test_missing_truncated_foreign_and_unknown_version_logs(log_path, tmp_path):
    with pytest.raises(LogError, match="not found"):
        replay(tmp_path / "nope.npz", console=quiet())
    truncated = tmp_path / "truncated.npz"
    truncated.write_bytes(log_path.read_bytes()[:2000])
    with pytest.raises(LogError, match="truncated"):
        replay(truncated, console=quiet())
    with pytest.raises(LogError, match="directory"):
        replay(tmp_path, console=quiet())
    newer = tmp_path / "newer.npz"
    with np.load(log_path) as z:
        data = {k: z[k] for k in z.files}
    data["format_version"] = np.array(99)
    np.savez(newer, **data)
    with pytest.raises(LogError, match="version 99"):
        replay(newer, console=quiet())
    foreign = tmp_path / "foreign.npz"
    with zipfile.ZipFile(foreign, "w") as z:
        z.writestr("x.npy", b"")
    with pytest.raises(LogError):
        replay(foreign, console=quiet())


def test_malformed_planner_extras_are_a_clear_error():
    log = synthetic_log(STEPS)
    log.extras["plans"] = log.extras["plans"][:, :2]
    with pytest.raises(LogError, match=r"'plans' has shape \(12, 2, 8, 2\); expected \(12, 4, \?, 2\)"):
        LogScene(log)
    log = synthetic_log(STEPS)
    log.extras["candidate_costs"] = np.zeros((STEPS, 4, 5))
    with pytest.raises(LogError, match="candidate_costs"):
        LogScene(log)


def test_planner_extras_are_optional_and_partial():
    log = synthetic_log(STEPS, with_extras=False)
    assert LogScene(log).overlays(3) == {}
    log.extras["candidates"] = synthetic_log(STEPS).extras["candidates"]  # no costs, no choice recorded
    ov = LogScene(log).overlays(3)
    paths, costs, chosen = ov["candidates"][0]
    assert paths.shape == (3, 8, 2) and np.all(costs == 0) and chosen == -1


def test_replay_options(log_path, tmp_path):
    assert parse_size("640x360") == (640, 360)
    with pytest.raises(DrivediffError, match="1280x720"):
        parse_size("big")
    with pytest.raises(DrivediffError, match="fps"):
        replay(log_path, export=tmp_path / "x.gif", fps=-1, console=quiet())
    assert list(tmp_path.iterdir()) == []
