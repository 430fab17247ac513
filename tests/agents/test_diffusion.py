"""The diffusion policy with the shipped checkpoint: decentralised, centralised and communication modes in
closed loop, V2V delivery of shared plans, guidance, determinism and the command line."""

import subprocess
import sys

import numpy as np
import pytest

from drivediff.agents.diffusion import DiffusionPolicy
from drivediff.agents.rollout import run_policy
from drivediff.planner.guidance import GuidanceConfig
from drivediff.planner.sampler import SamplerConfig
from drivediff.sim import World

FAST = SamplerConfig(steps=4, candidates=2)


def _world(scenario="merge", worlds=2, controlled=3, seed=0):
    w = World(scenario, num_worlds=worlds, overrides={"controlled": {"count": controlled}})
    w.reset(seed=seed)
    return w


@pytest.mark.parametrize("mode", ["decentralized", "centralized", "communication"])
def test_modes_drive_every_controlled_vehicle(mode):
    w = _world()
    pol = DiffusionPolicy(mode=mode, sampler=FAST, seed=1)
    pol.reset(w)
    x0 = w.state.x[:, :3].copy()
    rec = run_policy(w, pol, 24)  # 2.4 s: 6 replanning cycles
    assert len(pol.latencies) == 6 and all(q == 6 for q in pol.queries)  # 2 worlds x 3 vehicles each cycle
    assert (pol.plans.start[:, :3] >= 0).all()
    acc = rec["accel"][:, :, :3]
    assert np.isfinite(acc).all() and (np.abs(acc) > 0).any()  # the planner, not a frozen default, drives
    assert (w.state.x[:, :3] - x0 > 20.0).all()  # every controlled vehicle made progress
    assert not rec["collided"][:, :, :3].any() and not rec["offroad"][:, :, :3].any()


def test_same_seed_same_rollout_and_other_seed_differs():
    runs = []
    for seed in (3, 3, 4):
        w = _world(worlds=1)
        pol = DiffusionPolicy(sampler=FAST, seed=seed)
        pol.reset(w)
        runs.append(run_policy(w, pol, 16)["x"][0, :, :3])
    np.testing.assert_array_equal(runs[0], runs[1])
    assert not np.array_equal(runs[0], runs[2])


def test_decentralised_queries_see_only_the_sensor_range():
    w = _world("highway", worlds=1, controlled=4)
    pol = DiffusionPolicy(sampler=FAST, record=True)
    pol.reset(w)
    run_policy(w, pol, 4)
    rec = pol.records[-1]
    st = w.state
    r = pol.cfg.sensor_range
    for (b, slot), preds in rec.predictions.items():  # neighbours the focal vehicle planned for
        start = preds[:, 0]  # first planned point of each neighbour, near where it was at planning time
        d = np.hypot(start[:, 0] - st.x[b, slot], start[:, 1] - st.y[b, slot])
        assert (d < r + 10.0).all()


def test_communication_holds_neighbours_to_their_shared_plans():
    """In communication mode a focal vehicle's prediction of a controlled neighbour is that neighbour's own
    plan (received over V2V, shifted by its age); decentralised, it is the model's guess."""
    errors = {}
    for mode in ("communication", "decentralized"):
        w = _world("merge", worlds=1, controlled=6)  # close enough to be each other's neighbours
        pol = DiffusionPolicy(mode=mode, sampler=FAST, record=True, seed=2)
        pol.reset(w)
        run_policy(w, pol, 12)  # replannings at steps 0, 4 and 8, the later ones with shared plans
        first, second = pol.records[-2], pol.records[-1]
        shift = int((second.step[0] - first.step[0]) // pol.m)  # planner steps between the two
        err = []
        for (b, i), preds in second.predictions.items():
            plan_i = second.plans[(b, i)]
            for (bj, j), plan_j_old in first.plans.items():
                if j == i or bj != b:
                    continue
                # the prediction row whose start is closest to where j's old plan put it now
                k = np.argmin(np.linalg.norm(preds[:, 0] - plan_j_old[shift], axis=-1))
                if np.linalg.norm(preds[k, 0] - plan_j_old[shift]) > 3.0:
                    continue  # j is not among i's neighbours
                err.append(np.linalg.norm(preds[k, :-shift] - plan_j_old[shift:], axis=-1).mean())
            assert plan_i.shape == (pol.cfg.horizon, 2)
        assert err, mode
        errors[mode] = float(np.mean(err))
    assert errors["communication"] < 0.5, errors
    assert errors["decentralized"] > 2 * errors["communication"], errors


def test_v2v_delay_and_loss_decide_what_arrives():
    w = _world("merge", worlds=1, controlled=3)
    pol = DiffusionPolicy(mode="communication", sampler=FAST, v2v_delay=0.3)
    pol.reset(w)
    run_policy(w, pol, 2)  # planned at step 0, broadcast: arrives at step 3
    p = pol.plans
    assert (p.sent_start[0, :3] == 0).all() and (p.sent_arrival[0, :3] == 3).all()
    assert (p.shared_start[0, :3] == -1).all()  # nothing received yet
    run_policy(w, pol, 3)  # the replanning at step 4 promotes the arrived plans
    assert (p.shared_start[0, :3] == 0).all()
    lossy = DiffusionPolicy(mode="communication", sampler=FAST, v2v_loss=1.0)
    w2 = _world("merge", worlds=1, controlled=3)
    lossy.reset(w2)
    run_policy(w2, lossy, 9)
    assert (lossy.plans.sent_start[0, :3] == -1).all() and (lossy.plans.shared_start[0, :3] == -1).all()


def test_guided_policy_stays_clear_in_dense_traffic():
    w = World("highway", num_worlds=2, overrides={"controlled": {"count": 4}})
    w.reset(seed=5)
    pol = DiffusionPolicy(sampler=FAST, guidance=GuidanceConfig(), seed=0)
    pol.reset(w)
    rec = run_policy(w, pol, 90)  # 6 s
    assert not rec["collided"][:, :, :4].any() and not rec["offroad"][:, :, :4].any()
    assert pol.fallbacks == 0 or pol.fallbacks < len(pol.latencies)


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "drivediff.cli", *args], capture_output=True, text=True, timeout=600)


def test_spacing_and_cruise_context_follow_the_simulators_leaders():
    """The guidance context gives each row its leader as the simulator tracks it (row, gap along the lane,
    speed), and the cruise speed is the leader's speed averaged exponentially over cruise_window."""
    from drivediff.experiments.platoon import PlatoonConfig, build, make_cells

    cfg = PlatoonConfig(scenarios=("ring",), methods=("diffusion",), seeds=2, ring_penetration=(2,))
    w, lay, *_ = build(make_cells(cfg)[0].params, 0)  # the ring with 2 planner vehicles (slots 0 and 1)
    assert w.num_controlled == 2
    g = GuidanceConfig(w_gap=4.0, gap_max=45.0, w_cruise=3.0, cruise_window=2.0)
    pol = DiffusionPolicy(sampler=FAST, guidance=g, seed=0)
    pol.reset(w)
    st = w.state
    ema = None
    rate = w.dt / g.cruise_window
    for _ in range(12):
        ahead = np.take_along_axis(st.speed, np.maximum(st.leader[:, :2], 0), axis=1)
        ema = ahead.copy() if ema is None else ema + (ahead - ema) * rate
        w.step(pol.act(w))
    np.testing.assert_allclose(pol.mean_speed, ema, rtol=1e-12)
    assert (st.leader[:, :2] >= 0).all()
    specs = pol._queries(w, np.arange(2))
    q = pol._build(specs)
    owners = [b for b, *_ in specs]
    import torch

    ctx = pol._guidance_context(w, specs, q, owners, torch.as_tensor(q["agent_state"]), None)
    for qi, (b, focal, *_) in enumerate(specs):
        lead = int(st.leader[b, focal[0]])
        assert ctx.leader_gap[qi, 0].item() == pytest.approx(st.gap[b, focal[0]], rel=1e-6)
        assert ctx.leader_speed[qi, 0].item() == pytest.approx(st.speed[b, lead], rel=1e-6)
        row = int(ctx.leader[qi, 0])
        assert row >= 0 and q["agent_slot"][qi, row] == lead  # the nearest ahead is in the query
        assert ctx.cruise_speed[qi, 0].item() == pytest.approx(pol.mean_speed[b, focal[0]], rel=1e-6)


def test_simulate_with_the_planner_writes_plans_into_the_log(tmp_path):
    from drivediff.sim.log import read_log

    log = tmp_path / "m.npz"
    r = _cli("simulate", "merge", "--policy", "diffusion", "--steps", "12", "--set", "controlled.count=2",
             "--sampling-steps", "4", "--candidates", "2", "--log", str(log))
    assert r.returncode == 0, r.stderr[-2000:]
    assert "planning" in r.stdout
    ep = read_log(log)
    assert ep.extras["plans_valid"][:, :2].all() and ep.meta["policy"] == "diffusion"
    assert ep.meta["guidance"] == 1.0
    bad = _cli("simulate", "merge", "--policy", "diffusion", "--mode", "telepathic", "--steps", "2")
    assert bad.returncode != 0 and "telepathic" in bad.stderr and "Traceback" not in bad.stderr
    missing = _cli("simulate", "merge", "--policy", "diffusion", "--checkpoint", str(tmp_path / "none.pt"),
                   "--steps", "2")
    assert missing.returncode != 0 and "none.pt" in missing.stderr and "Traceback" not in missing.stderr


def _ring_cruise_run(g: GuidanceConfig, steps: int = 12) -> tuple:
    """Two planner vehicles on the ring for ``steps`` steps. Returns the policy and, from the state before the
    last step, the NumPy average of their own speeds (cruise_window), their speeds, gaps and leaders' speeds."""
    from drivediff.experiments.platoon import PlatoonConfig, build, make_cells

    cfg = PlatoonConfig(scenarios=("ring",), methods=("diffusion",), seeds=2, ring_penetration=(2,))
    w, *_ = build(make_cells(cfg)[0].params, 0)
    pol = DiffusionPolicy(sampler=FAST, guidance=g, seed=0)
    pol.reset(w)
    st = w.state
    ema = None
    for _ in range(steps):
        own = st.speed[:, :2].copy()
        ema = own if ema is None else ema + (own - ema) * (w.dt / g.cruise_window)
        gap = st.gap[:, :2].copy()
        lead = st.leader[:, :2].copy()
        v_lead = np.take_along_axis(st.speed, np.maximum(lead, 0), axis=1)
        w.step(pol.act(w))
    assert (lead >= 0).all()
    return pol, ema, own, gap, v_lead


def test_cruise_target_of_the_own_speed_with_a_catch_up_term():
    """cruise_reference="own": U averages the vehicle's own speed; cruise_catch adds up to that much speed for
    an open gap, linear between the cruise_gaps (the PI-with-saturation target of Stern et al. 2018),
    recomputed here in NumPy from the simulator's speeds and gaps."""
    g = GuidanceConfig(w_cruise=3.0, cruise_window=2.0, cruise_reference="own", cruise_catch=1.5,
                       cruise_gaps=(5.0, 12.0))
    pol, ema, _, gap, _ = _ring_cruise_run(g)
    np.testing.assert_allclose(pol.mean_speed, ema, rtol=1e-12)
    want = ema + 1.5 * np.clip((gap - 5.0) / 7.0, 0.0, 1.0)
    np.testing.assert_allclose(pol.cruise_target, want, rtol=1e-12)
    assert ((gap > 5.0) & (gap < 12.0)).any() or (gap >= 12.0).any()  # the catch-up term is exercised
    with pytest.raises(ValueError, match="cruise_reference"):
        GuidanceConfig(cruise_reference="ahead")
    with pytest.raises(ValueError, match="cruise_gaps"):
        GuidanceConfig(cruise_gaps=(30.0, 7.0))


def test_cruise_target_saturates_to_the_leaders_speed_close_behind_it():
    """cruise_follow_gap: below max(4 m, 2 dv) of gap the cruise speed is the leader's, blending back to the
    catch-up target over cruise_follow_band metres (the saturation of Stern et al. 2018), recomputed in NumPy."""
    g = GuidanceConfig(w_cruise=3.0, cruise_window=2.0, cruise_reference="own", cruise_catch=1.5,
                       cruise_gaps=(5.0, 12.0), cruise_follow_gap=4.0, cruise_follow_band=4.0)
    pol, ema, own, gap, v_lead = _ring_cruise_run(g)
    alpha = np.clip((gap - np.maximum(4.0, 2.0 * (v_lead - own))) / 4.0, 0.0, 1.0)
    target = ema + 1.5 * np.clip((gap - 5.0) / 7.0, 0.0, 1.0)
    np.testing.assert_allclose(pol.cruise_target, alpha * target + (1.0 - alpha) * v_lead, rtol=1e-12)
    assert ((alpha > 0) & (alpha < 1)).any()  # the blend is exercised
    assert not np.allclose(v_lead, target)
    with pytest.raises(ValueError, match="cruise_follow"):
        GuidanceConfig(cruise_follow_band=0.0)
