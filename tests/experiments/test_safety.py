"""The safety-guided planning evaluation end to end (--quick), with the shipped planner."""

import json
import math
import re
from dataclasses import replace

import numpy as np
import pytest

from drivediff.errors import DrivediffError
from drivediff.experiments.runner import t95
from drivediff.experiments.safety import METHODS, SafetyConfig, _cells, _fmt, make_world, report, summarize

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
    assert "Ablations on cut-in, 1 episode per cell." in report
    for c in metrics["cells"].values():  # shares, scores and rates: intervals within [0, 1] around the value
        for k in ("collision_rate", "offroad_rate", "comfort_violation_rate", "speed_limit_score", "score",
                  "ttc_below_share"):
            lo, hi = c[k + "_ci95"]
            if c["episodes"] == 1 and k not in ("collision_rate", "offroad_rate"):
                assert math.isnan(lo) and math.isnan(hi)  # no t-interval from one episode
                continue
            assert 0.0 <= lo <= c[k] <= hi <= 1.0, (k, c[k], lo, hi)
    _assert_printed_intervals_hold_their_values(report)


PRINTED = re.compile(r"(-?[\d.]+) \[(-?[\d.]+), (-?[\d.]+)\]")


def _assert_printed_intervals_hold_their_values(text: str) -> int:
    found = PRINTED.findall(text)
    for v, lo, hi in found:
        assert float(lo) <= float(v) <= float(hi), f"{v} [{lo}, {hi}]"
    return len(found)


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
    with pytest.raises(DrivediffError, match="unknown scenarios"):
        SafetyConfig(scenarios=("nowhere",))
    for kw, fragment in (({"scenarios": ()}, "no scenarios chosen"), ({"methods": ()}, "no methods chosen"),
                         ({"ablation_episodes": -1}, "ablation episodes must be 0"), ({"episodes": 0}, "episodes")):
        with pytest.raises(DrivediffError, match=fragment):
            SafetyConfig(**kw)
    # an existing run folder is left as it was: the configuration is checked before anything is written
    out = tmp_path / "x"
    out.mkdir()
    (out / "config.json").write_text("{}")
    for args, fragment in ((("--scenarios", "merge,nowhere"), "nowhere"), (("--scenarios", ""), "no scenarios chosen"),
                           (("--methods", ","), "no methods chosen")):
        r = cli("experiment", "safety", "--quick", *args, "--out", str(out))
        assert r.returncode != 0 and fragment in r.stderr and "Traceback" not in r.stderr, r.stderr[-2000:]
        assert [p.name for p in out.iterdir()] == ["config.json"] and (out / "config.json").read_text() == "{}"


def _ablation_cells(cfg: SafetyConfig) -> set:
    return {(c.params["scenario"], c.params["episodes"]) for c in _cells(cfg) if c.params["group"] != "main"}


def test_ablations_follow_the_chosen_scenarios_and_can_be_switched_off():
    # the full suite: merge and cut-in, 10 episodes per cell
    assert _ablation_cells(SafetyConfig()) == {("merge", 10), ("cut-in", 10)}
    # the review's small run: ablations only where the run is, with no more episodes than its main cells
    small = SafetyConfig(scenarios=("cut-in",), methods=("expert", "guided+corr"), episodes=1)
    assert _ablation_cells(small) == {("cut-in", 1)}
    off = replace(small, ablation_episodes=0)
    assert [c.key for c in _cells(off)] == ["main-cut-in-expert", "main-cut-in-guided+corr"]
    assert "No ablations (0 ablation episodes)." in report(summarize([]), off)
    assert _ablation_cells(SafetyConfig(scenarios=("dense-highway",), methods=("expert",))) == set()
    assert _ablation_cells(SafetyConfig.quick_config(scenarios=("merge",))) == set()
    # asked for explicitly: exactly these
    explicit = SafetyConfig(scenarios=("cut-in",), methods=("expert",), ablation_scenarios=("merge",),
                            ablation_episodes=3)
    assert _ablation_cells(explicit) == {("merge", 3)}
    assert _ablation_cells(replace(explicit, ablation_scenarios=())) == set()


def _row(episode: int, method: str, **kw) -> dict:
    """One controlled vehicle's metrics in one episode, as safety_cell writes them."""
    return {"scenario": "cut-in", "method": method, "group": "main", "value": "", "episode": episode, "vehicle": 0,
            "steps": 50, "collided": False, "offroad": False, "offroad_steps": 0, "distance_m": 100.0,
            "ttc_evaluated": 50, "ttc_below": 0, "min_ttc": 3.0, "speed_limit_score": 1.0, "overspeed_steps": 0,
            "live_steps": 50, "comfort_violation": False, "latency_ms_mean": math.nan, "latency_ms_p95": math.nan,
            "fallbacks": 0, **kw}


def test_intervals_stay_in_range_and_rates_get_wilson_intervals():
    """Two episodes: one with a comfort violation, over-speeding and low TTCs, one clean; no collision."""
    rows = [_row(0, "expert"), _row(1, "expert"),
            _row(0, "guided+corr", comfort_violation=True, speed_limit_score=0.75, ttc_below=2),
            _row(1, "guided+corr", collided=True, distance_m=60.0)]
    cells = summarize(rows)["cells"]
    c = cells["main/cut-in/guided+corr"]
    assert c["comfort_violation_rate"] == 0.5 and c["speed_limit_score"] == 0.875
    for k in ("comfort_violation_rate", "speed_limit_score", "score", "ttc_below_share"):
        lo, hi = c[k + "_ci95"]
        assert 0.0 <= lo <= c[k] <= hi <= 1.0, (k, lo, hi)
    # Wilson by hand (z = 1.96, n = 2): 0 events -> [0, z^2 / (n + z^2)] = [0, 0.658] (a normal interval: [0, 0]);
    # 1 event -> 1/2 -+ z sqrt(1/4 / n + z^2 / (4 n^2)) / (1 + z^2 / n)
    z = 1.96
    assert c["offroad_rate"] == 0.0 and c["offroad_rate_ci95"] == pytest.approx([0.0, z * z / (2 + z * z)])
    assert cells["main/cut-in/expert"]["collision_rate_ci95"] == pytest.approx([0.0, 0.65763], abs=1e-5)
    half = z * math.sqrt(0.25 / 2 + z * z / 16) / (1 + z * z / 2)
    assert c["collision_rate"] == 0.5 and c["collision_rate_ci95"] == pytest.approx([0.5 - half, 0.5 + half])
    text = report(summarize(rows), SafetyConfig(scenarios=("cut-in",), methods=("expert", "guided+corr"),
                                                episodes=2))
    assert "0.00 [0.00, 0.66]" in text and "0.500 [0.000, 1.000]" in text  # no collision; comfort
    assert _assert_printed_intervals_hold_their_values(text) >= 14


def test_t_quantiles_match_scipy_and_never_narrow_the_interval():
    stats = pytest.importorskip("scipy.stats")
    for df in range(1, 31):
        assert t95(df) == pytest.approx(stats.t.ppf(0.975, df), abs=6e-4), df
    for df in [*range(31, 130), 200, 1000]:  # between and beyond the table: the df tabulated below (a larger t)
        assert stats.t.ppf(0.975, df) - 5e-4 <= t95(df) <= stats.t.ppf(0.975, df) + 0.025, df
    assert math.isnan(t95(0))


def test_a_printed_interval_holds_its_printed_value():
    assert _fmt(1.16, [1.156, 1.164]) == "1.16 [1.16, 1.16]"  # was "1.16 [1.2, 1.2]"
    assert _fmt(0.125, [0.0, 0.37]) == "0.125 [0.000, 0.370]"
    assert _fmt(0.02, [0.0, 0.059]) == "0.020 [0.000, 0.059]"
    assert _fmt(237.4, [200.2, 274.9]) == "237 [200, 275]" and _fmt(math.nan, [0, 1]) == "-"
    assert _fmt(0.5, [math.nan, math.nan]) == "0.500"
    assert _fmt(0.0004, [0.0, 0.0011]) == "0.000400 [0.000000, 0.001100]"  # not "0.000"


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
