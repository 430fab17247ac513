"""The safety-guided planning evaluation end to end (--quick), with the shipped planner."""

import json

import numpy as np
import pytest

from drivediff.experiments.safety import METHODS, SafetyConfig, make_world

from . import cli
from . import quick_run as quick_run_folder


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    return quick_run_folder(tmp_path_factory, "safety")


def test_quick_run_writes_the_run_folder(quick_run):
    cfg = SafetyConfig.quick_config()
    for name in ("config.json", "episodes.csv", "metrics.json", "report.md", "plots/collision_rate.png",
                 "plots/scale_sweep.png", "plots/score.png"):
        assert (quick_run / name).stat().st_size > 0, name
    metrics = json.loads((quick_run / "metrics.json").read_text())
    main_cells = {k: v for k, v in metrics["cells"].items() if v["group"] == "main"}
    assert len(main_cells) == len(cfg.scenarios) * len(METHODS)
    for c in main_cells.values():
        assert c["episodes"] == cfg.episodes
        assert 0.0 <= c["collision_rate"] <= 1.0 and 0.0 <= c["offroad_rate"] <= 1.0
        assert c["progress_m"] > 0
        if c["method"] == "expert":
            assert np.isnan(c["latency_ms_mean"])
            assert c["progress_vs_expert"] == pytest.approx(1.0)
        else:
            assert c["latency_ms_mean"] > 0
    assert set(metrics["targets"]["suite_means"]) == set(METHODS)
    report = (quick_run / "report.md").read_text()
    assert "| merge | guided+corr |" in report and "Guidance scale sweep" in report


def test_rerun_resumes_without_redoing_cells(quick_run):
    cells = sorted((quick_run / "cells").glob("*.json"))
    before = {p.name: p.stat().st_mtime_ns for p in cells}
    r = cli("experiment", "safety", "--quick", "--out", str(quick_run))
    assert r.returncode == 0, r.stderr[-2000:]
    assert {p.name: p.stat().st_mtime_ns for p in (quick_run / "cells").glob("*.json")} == before
    # a damaged cell result is redone, and only that one
    victim = cells[0]
    victim.write_text("{not json")
    r = cli("experiment", "safety", "--quick", "--out", str(quick_run))
    assert r.returncode == 0
    after = {p.name: p.stat().st_mtime_ns for p in (quick_run / "cells").glob("*.json")}
    assert after[victim.name] != before[victim.name]
    assert all(after[k] == v for k, v in before.items() if k != victim.name)
    json.loads(victim.read_text())


def test_methods_meet_the_same_traffic():
    """World seeds depend on the scenario and the episode, not the method (paired comparison)."""
    a, b = make_world("merge", 2, 0), make_world("merge", 2, 0)
    np.testing.assert_array_equal(a.state.x, b.state.x)
    c = make_world("merge", 2, 1)
    assert not np.array_equal(a.state.x, c.state.x)


def test_bad_input_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="unknown scenarios"):
        SafetyConfig(scenarios=("nowhere",))
    r = cli("experiment", "safety", "--quick", "--scenarios", "merge,nowhere", "--out", str(tmp_path / "x"))
    assert r.returncode != 0 and "nowhere" in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "x" / "metrics.json").exists()


def test_an_episode_of_the_run_is_rerun_exactly_and_opens_in_the_viewer(quick_run, tmp_path):
    """`--log-episode KEY:EPISODE` reruns one cell in-process and writes that episode's log, plans included:
    the same episode the sweep measured (its collision and distance agree with the run's row)."""
    import csv

    from drivediff.render.scene import LogScene
    from drivediff.render.viewer import Viewer
    from drivediff.sim.log import read_log

    rows = list(csv.DictReader((quick_run / "episodes.csv").open()))
    row = next(r for r in rows if r["cell"] == "main-cut-in-unguided" and r["episode"] == "1")
    path = tmp_path / "ep.npz"
    r = cli("experiment", "safety", "--out", str(quick_run), "--log-episode", "main-cut-in-unguided:1",
             "--log", str(path))
    assert r.returncode == 0, r.stderr[-2000:]
    log = read_log(path)
    slot = int(row["vehicle"])
    assert bool(log.arrays["collided"][:, slot].any()) == (row["collided"] == "True")
    valid, coll = log.arrays["valid"][1:, slot].astype(bool), log.arrays["collided"][1:, slot].astype(bool)
    live = valid & ~np.maximum.accumulate(coll & valid)  # the metric's "driving" steps (frame 0: initial)
    dist = float(log.arrays["speed"][1:, slot][live].sum() * log.meta["dt"])
    assert dist == pytest.approx(float(row["distance_m"]), rel=1e-6, abs=1e-6)
    assert log.extras["plans_valid"][:, slot].any() and log.meta["cell"] == "main-cut-in-unguided"
    v = Viewer(LogScene(log), (640, 360), title="episode")
    v.tick(0.0)
    v.close()
    bad = cli("experiment", "safety", "--out", str(quick_run), "--log-episode", "main-nowhere-x:0")
    assert bad.returncode != 0 and "main-nowhere-x" in bad.stderr and "Traceback" not in bad.stderr
