"""The safety-guided planning evaluation end to end (--quick), with the shipped planner."""

import json
import subprocess
import sys

import numpy as np
import pytest

from drivediff.experiments.safety import METHODS, SafetyConfig, make_world


def _cli(*args, timeout=900):
    return subprocess.run([sys.executable, "-m", "drivediff.cli", *args], capture_output=True, text=True,
                          timeout=timeout)


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("safety")
    r = _cli("experiment", "safety", "--quick", "--out", str(out))
    assert r.returncode == 0, r.stderr[-2000:]
    return out


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
    r = _cli("experiment", "safety", "--quick", "--out", str(quick_run))
    assert r.returncode == 0, r.stderr[-2000:]
    assert {p.name: p.stat().st_mtime_ns for p in (quick_run / "cells").glob("*.json")} == before
    # a damaged cell result is redone, and only that one
    victim = cells[0]
    victim.write_text("{not json")
    r = _cli("experiment", "safety", "--quick", "--out", str(quick_run))
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
    r = _cli("experiment", "safety", "--quick", "--scenarios", "merge,nowhere", "--out", str(tmp_path / "x"))
    assert r.returncode != 0 and "nowhere" in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "x" / "metrics.json").exists()
