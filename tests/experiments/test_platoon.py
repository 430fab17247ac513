"""Platoon experiments: metrics against hand computations, the string-stability theory against closed forms
and against the simulator, the controllers' policy path against the in-kernel path, the textbook results
(IDM ring waves, ACC string unstable, CACC stable above its bound), and the CLI end to end."""

import hashlib
import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest

from drivediff.agents.platoon import CCParams, make_controller
from drivediff.agents.rollout import run_policy
from drivediff.experiments import platoon_metrics as pm
from drivediff.experiments import platoon_theory as th
from drivediff.experiments.platoon import (
    METHODS,
    SCENARIOS,
    CellContext,
    Method,
    PlatoonConfig,
    constant_time_gap,
    make_cells,
    mean_ci,
    platoon_cell,
    platoon_layout,
    register_method,
)
from drivediff.experiments.runner import Cell
from drivediff.sim import World

# ------------------------------------------------------------------------------------------------- metrics


def test_norms_and_amplification_by_hand():
    z = np.array([[1.0, 2.0, 1.0], [-1.0, 1.0, 3.0]])  # T = 2 steps, 3 vehicles
    dt = 0.5
    np.testing.assert_allclose(pm.l2_norm(z, dt), [1.0, math.sqrt(2.5), math.sqrt(5.0)])
    np.testing.assert_allclose(pm.linf_norm(z), [1.0, 2.0, 3.0])
    ss = pm.string_stability(z, dt)
    np.testing.assert_allclose(ss["gamma_l2"], [math.sqrt(2.5), math.sqrt(2.0)])
    np.testing.assert_allclose(ss["gamma_linf"], [2.0, 1.5])
    assert ss["max_l2"] == pytest.approx(math.sqrt(2.5)) and ss["head_to_tail_l2"] == pytest.approx(math.sqrt(5))
    assert ss["head_to_tail_linf"] == pytest.approx(3.0) and not ss["stable_l2"] and not ss["stable_linf"]
    damped = pm.string_stability(np.array([[4.0, 2.0, 1.0], [0.0, 0.0, 0.0]]), 1.0)
    assert damped["stable_l2"] and damped["max_l2"] == pytest.approx(0.5)
    np.testing.assert_array_equal(pm.amplification(np.array([0.0, 0.0, 1.0])), [1.0, np.inf])
    # a vehicle without a leader (inf gap) contributes nothing to its norm
    np.testing.assert_allclose(pm.l2_norm(np.array([[np.inf], [2.0]]), 1.0), [2.0])


def test_spacing_error_and_idm_equilibrium():
    assert pm.spacing_error(20.0, 10.0, 1.0, 2.0) == pytest.approx(8.0)
    assert pm.idm_equilibrium_gap(10.0, 20.0, 1.0, 2.0, 4.0) == pytest.approx(12.0 / math.sqrt(15.0 / 16.0))
    assert np.isinf(pm.idm_equilibrium_gap(20.0, 20.0, 1.0, 2.0, 4.0))


def test_safety_comfort_flow_energy_by_hand():
    c = pm.comfort(np.array([[0.0], [1.0], [3.0]]), 0.5)
    assert c["jerk_rms"] == pytest.approx(math.sqrt(10.0)) and c["jerk_max"] == pytest.approx(4.0)
    gap = np.array([[np.inf, 5.0], [3.0, -1.0]])
    ttc = np.array([[np.inf, 2.0], [np.inf, 0.0]])
    coll = np.array([[False, False], [True, True]])
    s = pm.safety(gap, ttc, coll, vid=np.array([[4, 7], [4, 7]]))
    assert s == {"min_gap": -1.0, "min_ttc": 0.0, "collisions": 2}
    assert pm.safety(gap, ttc, coll, vid=np.array([[4, 4], [4, 4]]))["collisions"] == 1  # one vehicle
    speed = np.array([[1.0, 3.0], [2.0, 2.0]])
    assert pm.speed_spread(speed) == pytest.approx(0.5)
    # steps with fewer than two vehicles have no spread and are left out
    assert pm.speed_spread(speed, np.array([[True, True], [True, False]])) == pytest.approx(1.0)
    assert pm.mean_speed(speed) == pytest.approx(2.0)
    assert pm.edie_flow(np.array([[10.0, 10.0]]), 100.0) == pytest.approx(720.0)
    pos = np.array([[0.0, 5.0], [10.0, 15.0], [20.0, 1.0]])
    assert pm.crossings(pos, np.ones_like(pos, bool), 8.0) == 2
    assert pm.tractive_power(10.0, 1.0) == pytest.approx(10.0 * (1.0 + 9.81 * 0.01 + pm.DRAG * 100.0))
    assert pm.tractive_power(10.0, -2.0) == 0.0
    v = np.full((50, 1), 10.0)
    # at constant speed: the resistance force per unit mass times 1000 m
    assert pm.energy_per_km(v, np.zeros_like(v), 1.0) == pytest.approx(1000.0 * (9.81 * 0.01 + pm.DRAG * 100.0))


def test_mean_ci():
    got = mean_ci([1.0, 2.0, 3.0])
    assert got["mean"] == 2.0 and got["n"] == 3
    np.testing.assert_allclose(got["ci95"], [2.0 - 4.303 / math.sqrt(3), 2.0 + 4.303 / math.sqrt(3)])
    assert math.isnan(mean_ci([5.0])["ci95"][0]) and mean_ci([None, float("nan")])["n"] == 0


# -------------------------------------------------------------------------------------------------- theory


def test_cacc_without_delay_is_first_order_and_always_stable():
    w = np.logspace(-3, 2, 50)
    for h in (0.05, 0.3, 1.0, 2.0):
        np.testing.assert_allclose(th.cacc_gamma(w, h, 0.0), 1.0 / (1.0 + 1j * w * h), rtol=1e-9)
        assert th.sup_gamma("cacc", h, 0.0) <= 1.0 + 1e-12
    assert th.min_time_gap("cacc", theta=0.0) == 0.0


def test_acc_closed_form_and_bound():
    w = np.logspace(-2, 1, 20)
    h, tau = 1.2, 0.5
    s = 1j * w
    np.testing.assert_allclose(th.acc_gamma(w, h, tau), (0.23 + 0.07 * s) / (tau * s**3 + s**2 + (0.07 + 0.23 * h) * s
                                                                             + 0.23))
    assert th.min_time_gap("acc", tau=0.0) == pytest.approx(th.acc_low_frequency_bound(), abs=2e-3)
    assert th.acc_low_frequency_bound() == pytest.approx((math.sqrt(0.07**2 + 0.46) - 0.07) / 0.23)


def test_cacc_bound_grows_with_delay_and_is_tight():
    hs = [th.min_time_gap("cacc", theta) for theta in (0.05, 0.1, 0.2, 0.3)]
    assert all(a < b for a, b in zip(hs[:-1], hs[1:], strict=True)) and hs[0] > 0
    h = hs[2]
    assert th.sup_gamma("cacc", 1.01 * h, 0.2) <= 1.0 + 1e-9 < th.sup_gamma("cacc", 0.99 * h, 0.2)
    # the simulator's discrete update converges to the continuous model as dt -> 0
    assert th.min_time_gap("cacc", 0.2, dt=0.01) == pytest.approx(h, rel=0.02)


@pytest.mark.parametrize("kind, h, theta, freq", [("cacc", 0.52, 0.2, 0.115), ("cacc", 1.0, 0.2, 0.2),
                                                  ("acc", 3.0, 0.0, 0.08)])
def test_simulated_sinusoid_amplification_matches_the_discrete_transfer_function(kind, h, theta, freq):
    """A small sinusoid of the leader's speed: in steady state each follower's acceleration amplitude is
    |Gamma(e^{jw dt})| times its predecessor's, the simulator's exact linear response."""
    ctx = CellContext(time_gap=h, delay=theta)
    lay = platoon_layout(SCENARIOS["sine"], METHODS[kind], ctx)
    dur = 150.0
    ov = {**lay.overrides, "duration": dur, "sim": {"v2v_delay": theta}, "road": {"length": 6000},
          "profile": {"type": "sinusoid", "mean": 27.78, "amplitude": 0.3, "frequency": freq, "start": 1.0}}
    world = World("platoon-sine", overrides=ov)
    world.reset(seed=0)
    rec = world.run(world.scenario.num_steps, record=True)
    t, acc = rec["t"], rec["accel"][0][:, lay.string]
    last = t > dur - 5.0 / freq
    om = 2 * math.pi * freq
    amp = 2 * np.abs((acc[last] * np.exp(-1j * om * t[last])[:, None]).mean(axis=0))
    ratios = amp[2:5] / amp[1:4]  # followers 2..4 (the leader broadcasts its realised, not a commanded, accel)
    want = abs(th.cacc_gamma_discrete(om, h, theta, world.dt) if kind == "cacc" else
               th.acc_gamma_discrete(om, h, world.dt, th.PLEXE_LAG))
    np.testing.assert_allclose(ratios, want, rtol=2e-3)


# -------------------------------------------------------------------- policy path == in-kernel path


def _braking_runs(controller, overrides, steps=150, **kw):
    out = []
    for in_kernel in (True, False):
        world = World("platoon", num_worlds=2, overrides=overrides)
        world.reset(seed=3)
        pol = make_controller(controller, slots=np.arange(1, 8), in_kernel=in_kernel, **kw)
        pol.reset(world)
        out.append(world.run(steps, record=True) if in_kernel else run_policy(world, pol, steps))
    return out


@pytest.mark.parametrize("controller, sim, kw", [
    ("idm", {}, {}),
    ("acc", {}, {"params": CCParams(time_gap=0.8)}),
    ("cacc", {"v2v_delay": 0.2}, {"params": CCParams(time_gap=0.8, lag=0.5)}),
    ("cacc", {"v2v_delay": 0.0}, {"params": CCParams(time_gap=1.0, lag=0.0)}),
    ("cacc", {"v2v_delay": 0.1, "v2v_loss": 1.0}, {"params": CCParams(time_gap=0.8)}),  # nothing ever received
])
def test_policy_path_matches_the_in_kernel_behaviour(controller, sim, kw):
    kernel, policy = _braking_runs(controller, {"sim": sim}, **kw)
    assert np.abs(kernel["accel"]).max() > 3.0  # the leader's braking reached the followers
    for field in ("x", "y", "speed", "accel", "steer"):
        np.testing.assert_allclose(policy[field], kernel[field], atol=1e-9, rtol=0, err_msg=field)


def test_cacc_policy_honours_packet_loss():
    """With half the packets lost the trajectories change (the statistics, not the draws, are the simulator's)."""
    sim = {"v2v_delay": 0.1, "v2v_loss": 0.5}
    kernel, policy = _braking_runs("cacc", {"sim": sim}, params=CCParams(time_gap=0.8))
    lossless = _braking_runs("cacc", {"sim": {"v2v_delay": 0.1}}, params=CCParams(time_gap=0.8))[0]
    assert np.abs(policy["accel"] - lossless["accel"]).max() > 1e-3
    assert np.abs(kernel["accel"] - lossless["accel"]).max() > 1e-3


def test_policy_steering_keeps_the_ring_lane():
    ov = {"traffic": {"idm": {"noise": 0.0}, "speed": [5.0, 5.0]}}
    runs = []
    for in_kernel in (True, False):
        world = World("ring", overrides=ov)
        world.reset(seed=1)
        pol = make_controller("cacc", slots=np.arange(0, 22, 2), params=CCParams(time_gap=1.0), in_kernel=in_kernel)
        pol.reset(world)
        runs.append(world.run(150, record=True) if in_kernel else run_policy(world, pol, 150))
    for field in ("x", "y", "yaw", "steer"):
        np.testing.assert_allclose(runs[1][field], runs[0][field], atol=1e-9, rtol=0)


# ------------------------------------------------------------------------------------- textbook results


def _cell(**kw) -> Cell:
    p = {"scenario": "braking", "method": "cacc", "time_gap": 0.6, "delay": 0.0, "loss": 0.0, "penetration": 0,
         "base_seed": 11, "trace": False, "seeds": 1, "dt": 0.1, "standstill": 2.0, "kp": 0.2, "kd": 0.7, "lag": 0.5,
         "ring_duration": 300.0, "ring_warmup": 100.0, "merge_share": 0.5, "merge_duration": 60.0,
         "merge_warmup": 10.0, "in_kernel": True}
    p.update(kw)
    return Cell("test", p)


def test_cacc_is_string_stable_just_above_its_bound_and_unstable_clearly_below():
    """V2V delay 0.2 s, Plexe lag 0.5 s. dt = 0.01 s: the simulator's update then has the continuous model's
    bound within 1% (at 0.1 s its bound is 9% lower, see platoon_theory)."""
    theta, dt = 0.2, 0.01
    h_min = th.min_time_gap("cacc", theta)
    assert h_min == pytest.approx(0.866, abs=2e-3)
    above = platoon_cell(_cell(time_gap=1.1 * h_min, delay=theta, dt=dt), 0)[0]
    below = platoon_cell(_cell(time_gap=0.6 * h_min, delay=theta, dt=dt), 0)[0]
    assert above["string_stable"] and above["gamma_max_l2_accel"] < 0.99 and above["collisions"] == 0
    assert not below["string_stable"] and below["gamma_max_l2_accel"] > 1.02 and below["gamma_max_l2_spacing"] > 1.02
    assert np.all(np.diff(below["gamma_l2_accel"][1:]) > 0)  # the amplification grows along the platoon


def test_acc_is_string_unstable_at_a_short_gap_where_cacc_is_stable():
    acc = platoon_cell(_cell(method="acc", time_gap=0.6), 0)[0]
    cacc = platoon_cell(_cell(method="cacc", time_gap=0.6), 0)[0]
    assert cacc["string_stable"] and cacc["collisions"] == 0
    assert not acc["string_stable"] and (acc["collisions"] > 0 or acc["gamma_max_l2_accel"] > 1.0)
    # and ACC follows its own bound (2.66 s): unstable at 2 s, stable at 3 s
    assert platoon_cell(_cell(method="acc", time_gap=2.0), 0)[0]["gamma_max_l2_accel"] > 1.05
    assert platoon_cell(_cell(method="acc", time_gap=3.0), 0)[0]["string_stable"]


def test_idm_ring_forms_stop_and_go_waves():
    world = World("ring", num_worlds=2)
    world.reset(seed=5)
    rec = world.run(3000, record=True)
    for b in range(2):
        start = pm.speed_spread(rec["speed"][b, 100:300])  # 10-30 s: the uniform flow of the even start
        late = pm.speed_spread(rec["speed"][b, 1000:])
        assert start < 0.6 and late > 1.5 and late > 4 * start
        assert (rec["speed"][b, 1000:] < 1.0).mean() > 0.2  # vehicles stop in the waves
    row = platoon_cell(_cell(scenario="ring", method="idm", time_gap=None), 0)[0]
    assert row["speed_spread"] > 1.5 and row["collisions"] == 0 and 1.5 < row["mean_speed"] < 4.0


# --------------------------------------------------------------------------------------- sweep, registry


def test_sweep_skips_axes_a_method_does_not_have():
    cfg = PlatoonConfig.quick_config(scenarios=("braking", "cut-in", "ring"))
    cells = make_cells(cfg)
    keys = [c.key for c in cells]
    assert len(keys) == len(set(keys))
    idm = [c for c in cells if c.params["method"] == "idm"]
    assert len(idm) == 3 and all(c.params["time_gap"] is None for c in idm)
    acc = [c for c in cells if c.params["method"] == "acc"]
    assert {c.params["delay"] for c in acc} == {0.0} and {c.params["loss"] for c in acc} == {0.0}
    grid = [c for c in cells if c.params["method"] == "cacc" and c.params["scenario"] == "braking"]
    assert len(grid) == 2 * 2 * 2 + 1  # h x delay x loss, plus the nominal point
    with pytest.raises(Exception, match="unknown method 'nope'"):
        PlatoonConfig(methods=("nope",))


def test_a_registered_method_joins_the_sweep():
    """The extension point for the planner: a method whose policy drives the platoon (here the CACC policy)."""
    from drivediff.agents.platoon import CACCPolicy

    m = Method("cacc-np", "CACC through the numpy policy", ("time_gap", "delay", "loss"),
               METHODS["cacc"].vehicle, constant_time_gap,
               lambda world, slots, ctx: CACCPolicy(slots, params=ctx.cc, seed=ctx.seed))
    register_method(m)
    try:
        cells = make_cells(PlatoonConfig.quick_config(scenarios=("sine",), methods=("cacc-np",)))
        assert cells and all(c.params["method"] == "cacc-np" for c in cells)
        # a method that does not say it never loads the planner gets --checkpoint (and its digest) in its cells
        assert all("checkpoint" in c.params and c.params["checkpoint_sha256"] for c in cells)
        mine = platoon_cell(_cell(scenario="sine", method="cacc-np", delay=0.1), 0)[0]
        ref = platoon_cell(_cell(scenario="sine", method="cacc", delay=0.1), 0)[0]
        for k in ("gamma_max_l2_accel", "min_gap", "jerk_rms", "energy"):
            assert mine[k] == pytest.approx(ref[k], rel=1e-9)
    finally:
        METHODS.pop("cacc-np")


def test_join_through_the_policies_matches_the_in_kernel_run():
    """The whole join manoeuvre (gap opening, the joiner handed to the method mid-run) gives the same numbers
    whether CACC runs in the kernel or as a numpy policy."""
    kernel = platoon_cell(_cell(scenario="join", delay=0.1), 0)[0]
    policy = platoon_cell(_cell(scenario="join", delay=0.1, in_kernel=False), 0)[0]
    for k in ("gamma_max_l2_accel", "gamma_max_l2_spacing", "min_gap", "min_ttc", "jerk_rms", "energy"):
        assert policy[k] == pytest.approx(kernel[k], rel=1e-9), k


def test_cut_in_and_join_manoeuvres_run():
    cut = platoon_cell(_cell(scenario="cut-in", delay=0.1), 0)[0]
    join = platoon_cell(_cell(scenario="join", delay=0.1), 0)[0]
    assert cut["collisions"] == 0 and cut["min_gap"] < 8.0  # the intruder landed in a 15 m gap
    assert join["collisions"] == 0 and join["string_stable"]
    merge = platoon_cell(_cell(scenario="merge", method="cacc", delay=0.1), 0)[0]
    assert merge["equipped"] > 3 and merge["throughput"] > 500


# --------------------------------------------------------------------------------------------------- CLI


def _cli(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "drivediff.cli", *args], capture_output=True, text=True,
                          cwd=cwd, env=dict(os.environ, COLUMNS="200"))


def test_quick_experiment_end_to_end_and_resume(tmp_path):
    out = tmp_path / "run"
    res = _cli("experiment", "platoon", "--quick", "--out", str(out))
    assert res.returncode == 0, res.stderr[-3000:]
    for name in ("config.json", "metrics.json", "runs.csv", "report.md", "plots/ring_time_space.png",
                 "plots/braking_signals.png", "plots/braking_amplification.png", "plots/cacc_gamma_vs_time_gap.png"):
        assert (out / name).is_file(), name
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["theory"]["cacc_h_min"]["0.20"]["continuous"] == pytest.approx(0.866, abs=2e-3)
    report = (out / "report.md").read_text()
    assert "## ring" in report and "## braking" in report and "h_min" in report
    cells = sorted((out / "cells").glob("*.json"))
    assert len(cells) == len(make_cells(PlatoonConfig.quick_config()))
    stamps = {p.name: p.stat().st_mtime_ns for p in cells}
    (out / "metrics.json").unlink()
    again = _cli("experiment", "platoon", "--quick", "--out", str(out))
    assert again.returncode == 0, again.stderr[-3000:]
    assert {p.name: p.stat().st_mtime_ns for p in (out / "cells").glob("*.json")} == stamps  # nothing redone
    assert (out / "metrics.json").is_file()
    # one world of one cell, rerun and written as a log for the viewer: the very world the sweep measured
    import csv

    from drivediff.sim.log import read_log

    key = next(c.key for c in make_cells(PlatoonConfig.quick_config()) if c.key.startswith("braking__cacc"))
    row = next(r for r in csv.DictReader((out / "runs.csv").open()) if r["cell"] == key and r["world"] == "1")
    res = _cli("experiment", "platoon", "--out", str(out), "--log-episode", f"{key}:1")
    assert res.returncode == 0, res.stderr[-3000:]
    log = read_log(out / "logs" / f"{key}-1.npz")
    speed, valid = log.arrays["speed"][1:], log.arrays["valid"][1:].astype(bool)
    assert float(speed[valid].mean()) == pytest.approx(float(row["mean_speed"]), rel=1e-9)
    assert log.meta["cell"] == key and log.meta["seed"] == int(row["seed"])


@pytest.mark.parametrize("args, fragment", [
    (("--methods", "idm,nope"), "unknown method 'nope'"),
    (("--scenarios", "highway"), "unknown scenario 'highway'"),
    (("--seeds", "0"), "seeds must be at least 1"),
    (("--methods", "diffusion", "--checkpoint", "nowhere.pt"), "checkpoint nowhere.pt does not exist"),
])
def test_bad_experiment_input_exits_cleanly(tmp_path, args, fragment):
    res = _cli("experiment", "platoon", "--quick", "--out", str(tmp_path / "r"), *args)
    assert res.returncode == 2 and fragment in res.stderr
    assert "Traceback" not in res.stderr and not (tmp_path / "r").exists()


def test_planner_methods_carry_the_cell_settings_into_the_policy():
    """diffusion / diffusion-comm: the time gap and standstill distance become the guidance's spacing
    objective, the V2V delay and loss the policy's channel; nothing is hard-coded per method."""
    from drivediff.experiments.platoon import METHODS, CellContext

    ctx = CellContext(time_gap=0.9, delay=0.2, loss=0.25, standstill=3.0)
    pol = METHODS["diffusion-comm"].policy(None, np.arange(3), ctx)
    assert pol.mode == "communication" and pol.v2v_delay == 0.2 and pol.v2v_loss == 0.25
    assert pol.guidance.w_gap > 0 and pol.guidance.time_gap == 0.9 and pol.guidance.standstill == 3.0
    assert METHODS["diffusion"].policy(None, np.arange(3), ctx).mode == "decentralized"
    assert METHODS["diffusion"].vehicle(ctx, {"cruise": 30.0})["controlled"] is True
    assert pol.guidance.gap_max == 0 and pol.guidance.w_cruise == 0  # a set point on the platoon manoeuvres
    assert pol.guidance.road_fallback
    ring = METHODS["diffusion"].policy(None, np.arange(1), CellContext(kind="ring"))
    assert ring.guidance.gap_max > 0 and ring.guidance.w_cruise > 0  # the jam-absorbing band on the ring


def test_planner_methods_load_the_configured_checkpoint(tmp_path):
    """--checkpoint reaches the planner of every cell (a fine-tuned planner, say)."""
    from drivediff.experiments.platoon import METHODS, CellContext, PlatoonConfig, make_cells
    from drivediff.planner.checkpoint import default_checkpoint, load_planner, save_checkpoint

    shipped = load_planner(default_checkpoint())
    ckpt = tmp_path / "other.pt"
    save_checkpoint(ckpt, shipped.cfg, shipped.model, shipped.normalizer, {**shipped.meta, "marker": "other"})
    cfg = PlatoonConfig(scenarios=("braking",), methods=("diffusion",), checkpoint=str(ckpt), seeds=1)
    p = make_cells(cfg)[0].params
    assert p["checkpoint"] == str(ckpt)
    # the weights themselves identify the cell (a run folder resumed with a retrained checkpoint redoes it);
    # cells of the classical controllers do not depend on them
    assert p["checkpoint_sha256"] == hashlib.sha256(ckpt.read_bytes()).hexdigest()
    classical = make_cells(PlatoonConfig(scenarios=("braking",), methods=("idm", "cacc"), checkpoint=str(ckpt)))
    assert not any("checkpoint" in k for c in classical for k in c.params)
    pol = METHODS["diffusion"].policy(None, np.arange(2), CellContext(checkpoint=p["checkpoint"]))
    assert pol.planner.meta["marker"] == "other"


@pytest.mark.slow
def test_one_planner_vehicle_dissolves_the_ring_wave():
    """Issue target: one diffusion planner vehicle of 22 (decentralised, the ring objective as guidance costs)
    cuts the ring's speed spread by at least half against all-IDM, without collisions and without slowing the
    ring; measured after the wave has had time to dissolve (120-240 s), on the experiment's own seeds."""
    from drivediff.experiments.runner import cell_seed

    cfg = PlatoonConfig(scenarios=("ring",), methods=("idm", "diffusion"), time_gaps=(0.6,), delays=(0.1,),
                        losses=(0.0,), grid_scenarios=(), seeds=2, ring_penetration=(1,), ring_duration=240.0,
                        ring_warmup=120.0)
    rows = {c.key: platoon_cell(c, cell_seed(cfg.seed, c.key)) for c in make_cells(cfg)}
    idm, planner = rows["ring__idm"], rows["ring__diffusion__h0.60__k1"]
    for a, b in zip(idm, planner, strict=True):
        assert a["seed"] == b["seed"]  # the same worlds
        assert b["collisions"] == 0
        assert b["speed_spread"] <= 0.5 * a["speed_spread"], (a["speed_spread"], b["speed_spread"])
        assert b["mean_speed"] >= a["mean_speed"]
        assert a["speed_spread"] > 1.5  # the IDM ring does form the wave on these seeds
