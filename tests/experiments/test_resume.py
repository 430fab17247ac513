"""Resuming a run folder: a finished cell is reused only when everything that determined its rows (its params,
the run seed, the experiment's context) is what the new run would compute it with; otherwise it is recomputed,
and the first progress call says how many cells were reused and how many recomputed."""

import csv
import json
import math
import shutil
from dataclasses import replace

from drivediff.experiments import planner_eval, safety, sweep_demo
from drivediff.experiments.runner import Cell, run_cells

STALE = "recomputed: made with other settings"


def _main(main, cfg, out, **kw):
    """Run an experiment; returns its progress calls."""
    calls = []
    main(cfg, out, progress=lambda *a: calls.append(a), **kw)
    return calls


def _stamps(out):
    return {p.name: p.stat().st_mtime_ns for p in (out / "cells").glob("*.json")}


def _csv(path):
    return list(csv.DictReader(path.open()))


# the expert on cut-in: simulator only, a couple of seconds a run
SAFETY = safety.SafetyConfig(scenarios=("cut-in",), methods=("expert",), episodes=1, duration=2.0,
                             ablation_episodes=0)


def test_safety_rerun_reuses_identical_cells_and_recomputes_cells_of_other_settings(tmp_path):
    out = tmp_path / "run"
    assert _main(safety.main, SAFETY, out)[0] == (0, 1, "starting")
    stamps = _stamps(out)
    first = _csv(out / "episodes.csv")
    # the same settings again: nothing computed
    assert _main(safety.main, SAFETY, out) == [(1, 1, "resuming")]
    assert _stamps(out) == stamps and _csv(out / "episodes.csv") == first
    # the review's case: other episodes and duration in the same folder; the old cell must not be reported
    changed = replace(SAFETY, episodes=2, duration=3.0)
    calls = _main(safety.main, changed, out)
    assert calls[0] == (0, 1, f"0 reused, 1 {STALE}") and calls[-1] == (1, 1, "main-cut-in-expert")
    assert _stamps(out) != stamps
    rows = _csv(out / "episodes.csv")
    safety.main(changed, tmp_path / "fresh")
    assert rows == _csv(tmp_path / "fresh" / "episodes.csv")  # what a fresh run with the new settings gives
    assert sorted(r["episode"] for r in rows) == ["0", "1"]
    assert float(rows[0]["distance_m"]) > float(first[0]["distance_m"])  # 3 s of driving, not 2
    assert "2 episodes per cell, 3 s" in (out / "report.md").read_text()


def test_planner_guidance_and_weights_retrained_in_place_recompute_the_cells_they_shape(tmp_path):
    """The review's case (`--guidance 1.0` on an unguided run folder), and a checkpoint rewritten at the same
    path: only the cells whose rows depend on the change are recomputed."""
    from drivediff.planner.checkpoint import default_checkpoint, load_planner, save_checkpoint

    ckpt = tmp_path / "planner.pt"
    shutil.copy(default_checkpoint(), ckpt)
    cfg = planner_eval.PlannerEvalConfig(scenarios=("merge",), methods=("idm", "decentralized"), agents=2,
                                         episodes=1, duration=1.0, openloop_windows=4, sampling_steps=2,
                                         candidates=1, checkpoint=str(ckpt))
    out = tmp_path / "run"
    planner_eval.main(cfg, out)
    stamps = _stamps(out)
    guided = replace(cfg, guidance=1.0)
    assert _main(planner_eval.main, guided, out)[0] == (2, 3, f"2 reused, 1 {STALE}")
    after = _stamps(out)
    assert {k for k in stamps if after[k] != stamps[k]} == {"closed-merge-decentralized.json"}
    assert json.loads((out / "cells" / "closed-merge-decentralized.json").read_text())["params"]["guidance"] == 1.0
    assert "safety guidance at scale 1.0" in (out / "report.md").read_text()
    # the same file name, other weights: the planner's cells are redone, the expert's is not
    shipped = load_planner(ckpt)
    save_checkpoint(ckpt, shipped.cfg, shipped.model, shipped.normalizer, {**shipped.meta, "marker": "retrained"})
    assert _main(planner_eval.main, guided, out)[0] == (1, 3, f"1 reused, 2 {STALE}")
    again = _stamps(out)
    assert {k for k in after if again[k] != after[k]} == {"closed-merge-decentralized.json", "open-merge.json"}


# a real sweep whose cell params do not name the run seed (it reaches the cells only through their seeds)
SWEEP = sweep_demo.SweepDemoConfig(scenarios=("merge",), blocks=1, worlds_per_cell=1, steps=20, seed=5)


def test_another_run_seed_recomputes_even_where_the_params_do_not_show_it(tmp_path):
    out = tmp_path / "run"
    first = sweep_demo.main(SWEEP, out, workers=1)
    other = replace(SWEEP, seed=6)
    calls = _main(sweep_demo.main, other, out, workers=1)
    assert calls[0] == (0, 1, f"0 reused, 1 {STALE}")
    rows = sweep_demo.main(other, out, workers=1)
    assert rows == sweep_demo.main(other, tmp_path / "fresh", workers=1) and rows != first
    # a result file without the record (written before it was kept): it cannot be vouched for, so it is redone
    path = out / "cells" / "merge-0.json"
    stored = json.loads(path.read_text())
    path.write_text(json.dumps({k: v for k, v in stored.items() if k not in ("run_seed", "context")}))
    assert _main(sweep_demo.main, other, out, workers=1)[0] == (0, 1, f"0 reused, 1 {STALE}")
    assert json.loads(path.read_text())["run_seed"] == 6


def test_settings_compare_as_json_stores_them(tmp_path):
    """Tuples come back from the cell file as lists, NaN as NaN, 1.0 may be given as 1: still the same cell.
    The context is compared too."""
    def cells(extra):
        return [Cell("merge-0", {"scenario": "merge", "worlds": 1, "steps": 10, "crash_marker": None, **extra})]

    out = tmp_path / "run"
    extra = {"scales": (0.5, 1.0), "limit": math.nan, "nested": {"gap": (1.0, 2.0)}}
    first = run_cells(out, cells(extra), sweep_demo.demo_cell, 3, context={"weights": (1, 2)})
    calls = []
    again = run_cells(out, cells({**extra, "scales": [0.5, 1], "nested": {"gap": [1, 2.0]}}), sweep_demo.demo_cell, 3,
                      progress=lambda *a: calls.append(a), context={"weights": [1.0, 2]})
    assert calls == [(1, 1, "resuming")] and again == first
    calls.clear()
    run_cells(out, cells(extra), sweep_demo.demo_cell, 3, progress=lambda *a: calls.append(a),
              context={"weights": (1, 3)})
    assert calls[0] == (0, 1, f"0 reused, 1 {STALE}")
