"""Episode logs: round trip, atomic writes, and clear errors for bad files."""

import zipfile

import numpy as np
import pytest

from drivediff.errors import LogError
from drivediff.sim import World
from drivediff.sim import layout as L
from drivediff.sim.log import EpisodeLog, read_log, write_log


@pytest.fixture(scope="module")
def log():
    w = World("roundabout")
    w.reset(seed=3)
    initial = w.snapshot(0)
    rec = w.run(50, record=True)
    return EpisodeLog.from_recording(rec, 0, w.road, {"scenario": "roundabout", "seed": 3, "dt": w.dt},
                                     initial=initial)


def test_round_trip(tmp_path, log):
    log.extras["plans"] = np.random.default_rng(0).normal(size=(51, 4, 8, 2))
    path = write_log(tmp_path / "ep.npz", log)
    back = read_log(path)
    assert back.num_steps == 51 and back.t[0] == 0.0
    for k in L.LOG_FIELDS:
        np.testing.assert_array_equal(back[k], log[k])
        assert back[k].shape == (51, log.num_slots)
    assert back.meta["scenario"] == "roundabout" and "package_version" in back.meta
    np.testing.assert_array_equal(back.extras["plans"], log.extras["plans"])
    # the road comes back complete: same lanes, same geometry, same drivable area
    assert back.road.lane_names == log.road.lane_names
    np.testing.assert_array_equal(back.road.arrays.pts, log.road.arrays.pts)
    assert back.road.polygon.equals(log.road.polygon)
    assert list(tmp_path.iterdir()) == [path]  # no temporary files left


def test_truncated_corrupted_and_missing(tmp_path, log):
    path = write_log(tmp_path / "ep.npz", log)
    data = path.read_bytes()
    (tmp_path / "trunc.npz").write_bytes(data[: len(data) // 2])
    with pytest.raises(LogError, match="truncated or corrupted"):
        read_log(tmp_path / "trunc.npz")
    (tmp_path / "junk.npz").write_bytes(b"not a zip file at all")
    with pytest.raises(LogError, match="truncated or corrupted"):
        read_log(tmp_path / "junk.npz")
    with pytest.raises(LogError, match="not found"):
        read_log(tmp_path / "nothing.npz")
    # pickled objects are refused, without numpy's advice on loading them unsafely
    np.savez(tmp_path / "pickled.npz", format=np.array("x"), obj=np.array([{"a": 1}], dtype=object))
    with pytest.raises(LogError, match="pickled Python objects") as err:
        read_log(tmp_path / "pickled.npz")
    assert "allow_pickle" not in str(err.value)


def _rewrite(src, dst, drop=(), replace=None):
    with np.load(src) as z:
        d = {k: z[k] for k in z.files if k not in drop}
    d.update(replace or {})
    np.savez(dst, **d)


def test_unknown_version_foreign_file_and_missing_field(tmp_path, log):
    path = write_log(tmp_path / "ep.npz", log)
    _rewrite(path, tmp_path / "v9.npz", replace={"format_version": np.array(9)})
    with pytest.raises(LogError, match="version 9 is not supported"):
        read_log(tmp_path / "v9.npz")
    np.savez(tmp_path / "foreign.npz", x=np.zeros(3))
    with pytest.raises(LogError, match="not a drivediff episode log"):
        read_log(tmp_path / "foreign.npz")
    _rewrite(path, tmp_path / "nospeed.npz", drop=("step_speed", "road_pts"))
    with pytest.raises(LogError, match="missing field.*step_speed.*road_pts"):
        read_log(tmp_path / "nospeed.npz")
    _rewrite(path, tmp_path / "shape.npz", replace={"step_gap": np.zeros((3, 2))})
    with pytest.raises(LogError, match="gap"):
        read_log(tmp_path / "shape.npz")


def test_failed_write_leaves_nothing(tmp_path, log, monkeypatch):
    target = tmp_path / "ep.npz"
    write_log(target, log)
    before = target.read_bytes()

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(np, "savez_compressed", boom)
    with pytest.raises(OSError, match="disk full"):
        write_log(target, log)
    assert target.read_bytes() == before  # the old file is intact
    assert [p.name for p in tmp_path.iterdir()] == ["ep.npz"]
    assert zipfile.is_zipfile(target)
