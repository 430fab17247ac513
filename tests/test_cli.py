"""The drivediff command: exit codes, messages, files. Run in a subprocess, as users run it."""

import json
import os
import subprocess
import sys

import pytest

from drivediff.sim.log import read_log


def run(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "drivediff.cli", *args], capture_output=True, text=True,
                          cwd=cwd, env=dict(os.environ, COLUMNS="200"))


def test_help_and_scenarios():
    out = run("--help")
    assert out.returncode == 0 and "simulate" in out.stdout and "bench" in out.stdout
    out = run("scenarios")
    assert out.returncode == 0
    for name in ("highway", "merge", "intersection", "roundabout", "ring", "platoon", "cut-in", "lead-braking"):
        assert name in out.stdout


def test_simulate_writes_a_log_and_prints_a_summary(tmp_path):
    out = run("simulate", "intersection", "--seed", "2", "--steps", "150", "--log", str(tmp_path / "ep"))
    assert out.returncode == 0, out.stderr
    for word in ("collisions", "off-road events", "mean speed", "wall time", "vehicles"):
        assert word in out.stdout
    log = read_log(tmp_path / "ep.npz")
    assert log.num_steps == 151 and log.meta["seed"] == 2 and log.meta["scenario"] == "intersection"


@pytest.mark.parametrize("args, fragment", [
    (("simulate", "nope"), "unknown scenario 'nope'"),
    (("simulate", "merge", "--set", "traffic.count=lots"), "traffic.count"),
    (("simulate", "merge", "--set", "traffic.colour=red"), "unknown field"),
    (("simulate", "missing/dir/x.yaml"), "not found"),
    (("simulate", "merge", "--steps", "5", "--duration", "3"), "not both"),
    (("simulate", "merge", "--seed", "-1"), "--seed"),  # option bounds (typer's bundled click)
    (("simulate",), "Missing argument"),
])
def test_bad_input_exits_nonzero_without_traceback(args, fragment):
    out = run(*args)
    assert out.returncode == 2
    assert fragment in out.stderr
    assert "Traceback" not in out.stderr and "Traceback" not in out.stdout


def test_bad_scenario_file(tmp_path):
    p = tmp_path / "s.yaml"
    p.write_text("name: x\nroad: {type: highway, lanes: 99}\n")
    out = run("simulate", str(p))
    assert out.returncode == 2 and str(p) in out.stderr and "road.highway.lanes" in out.stderr
    assert "Traceback" not in out.stderr


def test_unwritable_log_path(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    out = run("simulate", "ring", "--steps", "5", "--log", str(blocker / "sub" / "ep.npz"))
    assert out.returncode == 2 and f"{blocker} is a file" in out.stderr and "Traceback" not in out.stderr
    out = run("simulate", "ring", "--steps", "5", "--log", str(tmp_path))
    assert out.returncode == 2 and "is a folder" in out.stderr and "Traceback" not in out.stderr


@pytest.mark.parametrize("args, fragment", [
    (("simulate", "merge", "--duration", "0"), "--duration must be a positive number of seconds"),
    (("simulate", "merge", "--duration", "nan"), "got nan"),
    (("simulate", "nope", "--log", "{dir}/new/ep.npz"), "unknown scenario 'nope'"),  # and makes no folder
    (("simulate", "merge", "--mode", "centralized", "--no-guidance"), "--mode, --guidance/--no-guidance: options"),
    (("simulate", "merge", "--mode", "decentralized"), "--mode: options of the diffusion planner"),
    (("simulate", "ring", "--policy", "diffusion"), "ring has no controlled vehicles"),
    (("demo", "--out", "{file}"), "{file} is a file"),
    (("collect", "merge", "--episodes", "1", "--out", "{file}/shards"), "{file} is a file"),
    (("experiment", "planner", "--quick", "--out", "{file}"), "{file} is a file"),
    (("train", "--data", "{dir}", "--out", "{dir}/p.pt"), "no training shards"),
    (("bench", "train", "--procs", "0"), "at least 1"),
])
def test_bad_paths_and_options_fail_before_any_work(tmp_path, args, fragment):
    """Each fails in seconds, before running anything, and writes nothing."""
    blocker = tmp_path / "file"
    blocker.write_text("x")
    work = tmp_path / "work"
    work.mkdir()
    fill = {"{file}": str(blocker), "{dir}": str(work)}

    def sub(text):
        for k, v in fill.items():
            text = text.replace(k, v)
        return text

    out = run(*map(sub, args))
    assert out.returncode == 2, out.stderr
    assert sub(fragment) in out.stderr and "Traceback" not in out.stderr
    assert blocker.read_text() == "x" and not any(work.iterdir())


def test_python_dash_m_drivediff_is_the_command():
    out = subprocess.run([sys.executable, "-m", "drivediff", "simulate", "nope"], capture_output=True, text=True)
    assert out.returncode == 2 and "unknown scenario 'nope'" in out.stderr


def test_bench_sim_json_quick():
    out = run("bench", "sim", "--quick", "--json", "--no-highway-env")
    assert out.returncode == 0, out.stderr
    res = json.loads(out.stdout)
    assert res["highway_v0"]["drivediff_vehicle_steps_per_s"] > 0
    assert [r["vehicles"] for r in res["scaling"]] == [11, 101]
    assert res["start"]["warm_s"] > 0


def test_bench_env_json_quick():
    out = run("bench", "env", "--quick", "--json", "--no-highway-env")
    assert out.returncode == 0, out.stderr
    res = json.loads(out.stdout)
    assert res["intersection_parallel"]["drivediff_1s_period"]["sim_steps_per_env_step"] == 10
    assert res["highway_v0"]["drivediff_default"]["env_steps_per_s"] > 0
    b = res["batched"]
    for key in ("intersection", "highway", "highway_16", "highway_8", "highway_4"):
        assert b[key]["num_worlds"] == 32 and b[key]["agent_steps_per_s"] > 0
        assert b[key]["one_thread"]["agent_steps_per_s"] > 0
        assert b[key]["policy"] == "idle" and b[key]["keep_distance"]["policy"] == "keep_distance"
        assert 0.0 < b[key]["live_share"] <= 1.0 and 0.0 < b[key]["keep_distance"]["live_share"] <= 1.0
    # agents only: nothing leaves the world but crashed agents, so at most the 4 vehicles placed at reset
    assert b["highway_4"]["vehicles_per_world"] <= 4 < b["highway_16"]["vehicles_per_world"]


def test_small_safety_run_resumes_and_keeps_the_units(tmp_path):
    """--ablation-episodes 0 keeps a run to its main cells; a rerun says what it reused; table headers keep
    their units (rich markup would read "[m]" as a style)."""
    args = ("experiment", "safety", "--scenarios", "cut-in", "--methods", "expert", "--episodes", "1",
            "--ablation-episodes", "0", "--out", str(tmp_path / "run"))
    first = run(*args)
    assert first.returncode == 0, first.stderr
    assert "progress [m]" in first.stdout
    assert [p.name for p in (tmp_path / "run" / "cells").iterdir()] == ["main-cut-in-expert.json"]
    again = run(*args)
    assert again.returncode == 0 and "cells: 1 of 1 already done in the output folder" in again.stderr
    changed = run(*args[:-4], "--seed", "1", *args[-4:])
    assert changed.returncode == 0 and "0 reused, 1 recomputed: made with other settings" in changed.stderr
