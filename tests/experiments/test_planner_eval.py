"""`drivediff experiment planner --quick` end to end with the shipped planner, and rerunning one episode."""

import csv
import json

import numpy as np
import pytest

from drivediff.experiments.planner_eval import METHODS, PlannerEvalConfig, wilson

from . import cli
from . import quick_run as quick_run_folder


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    return quick_run_folder(tmp_path_factory, "planner")


def test_quick_run_writes_closed_and_open_loop_results(quick_run):
    cfg = PlannerEvalConfig.quick()
    metrics = json.loads((quick_run / "metrics.json").read_text())
    assert set(metrics["closed_loop"]) == {f"{sc}/{m}" for sc in cfg.scenarios for m in METHODS}
    for key, v in metrics["closed_loop"].items():
        assert v["episodes"] == cfg.episodes
        assert 0 <= v["collision_rate"] <= 1 and v["collision_ci95"][0] <= v["collision_rate"] <= v["collision_ci95"][1]
        assert v["progress_m"] > 0
        if key.endswith("/idm"):
            assert v["progress_vs_expert"] == pytest.approx(1.0)
    for sc in cfg.scenarios:
        ol = metrics["open_loop"][sc]
        assert ol["windows"] > 0 and 0 < ol["min_ade_over_candidates"] <= ol["ade"] < 10.0
    assert "| merge | decentralized |" in (quick_run / "report.md").read_text()


def test_every_method_meets_the_same_worlds(quick_run):
    rows = [r for r in csv.DictReader((quick_run / "episodes.csv").open()) if r["method"] in METHODS]
    for sc in PlannerEvalConfig.quick().scenarios:
        seeds = {m: [r["seed"] for r in rows if r["scenario"] == sc and r["method"] == m] for m in METHODS}
        assert len({tuple(s) for s in seeds.values()}) == 1, seeds


def test_a_closed_loop_episode_is_rerun_exactly(quick_run, tmp_path):
    from drivediff.sim.log import read_log

    rows = list(csv.DictReader((quick_run / "episodes.csv").open()))
    row = next(r for r in rows if r.get("cell") == "closed-merge-decentralized" and r["episode"] == "0")
    path = tmp_path / "ep.npz"
    r = cli("experiment", "planner", "--out", str(quick_run), "--log-episode", "closed-merge-decentralized:0",
             "--log", str(path))
    assert r.returncode == 0, r.stderr[-2000:]
    log = read_log(path)
    agents = PlannerEvalConfig.quick().agents
    valid = log.arrays["valid"][1:, :agents].astype(bool)
    assert bool((log.arrays["collided"][1:, :agents].astype(bool) & valid).any()) == (row["collision"] == "True")
    dist = (np.where(valid, log.arrays["speed"][1:, :agents], 0.0).sum(axis=0) * log.meta["dt"]).mean()
    assert dist == pytest.approx(float(row["progress_m"]), rel=1e-9)
    assert log.extras["plans_valid"][:, :agents].any()


def test_wilson_interval():
    lo, hi = wilson(0, 8)
    assert lo == 0.0 and hi == pytest.approx(0.3244, abs=1e-3)  # the "3/n" rule's neighbourhood
    lo, hi = wilson(4, 8)
    assert lo < 0.5 < hi and hi - 0.5 == pytest.approx(0.5 - lo)


def test_a_method_without_planning_latencies_summarises_quietly():
    """The expert plans nothing: its latency is NaN, without numpy's 'Mean of empty slice' warning."""
    import math
    import warnings

    from drivediff.experiments.planner_eval import summarize

    row = {"scenario": "merge", "collision": False, "offroad": False, "progress_m": 10.0, "mean_speed": 5.0}
    rows = [{**row, "method": "idm", "latency_ms_mean": math.nan, "latency_ms_p95": math.nan},
            {**row, "method": "decentralized", "latency_ms_mean": 30.0, "latency_ms_p95": 40.0}]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = summarize(rows, PlannerEvalConfig(scenarios=("merge",), methods=("idm", "decentralized")))
    assert math.isnan(out["closed_loop"]["merge/idm"]["latency_ms_mean"])
    assert out["closed_loop"]["merge/decentralized"]["latency_ms_p95"] == 40.0
