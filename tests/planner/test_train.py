"""Training: the loss decreases on a tiny dataset, runs resume, checkpoints load with weights_only."""

import pickle

import numpy as np
import pytest
import torch

from drivediff.errors import CheckpointError
from drivediff.planner.checkpoint import load_planner, read_checkpoint_dict
from drivediff.planner.config import PlannerConfig
from drivediff.planner.data import collect, load_shards, rewrite_drift_history
from drivediff.planner.features import POS_SCALE
from drivediff.planner.train import TrainConfig, train

TINY = PlannerConfig(d_model=32, num_layers=1, num_heads=2, ff_mult=2)


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    out = tmp_path_factory.mktemp("data")
    paths = collect(["merge"], 1, out, TINY, num_worlds=2)
    assert len(paths) == 1
    # a second collect call finds the shard and writes nothing new (resumable)
    mtime = paths[0].stat().st_mtime_ns
    collect(["merge"], 1, out, TINY, num_worlds=2)
    assert paths[0].stat().st_mtime_ns == mtime
    return out


def test_windows_are_consistent(tiny_data):
    data = load_shards(tiny_data)
    n = len(data["fut_ctrl"])
    assert n > 100
    assert data["fut_ctrl"].shape == (n, TINY.num_agents, TINY.horizon, 2)
    assert data["agent_mask"][:, 0].all() and data["fut_mask"][:, 0].all()  # the focal vehicle's future is whole
    assert not data["fut_mask"][~data["agent_mask"]].any()
    # planned accelerations of the expert stay within the simulator's limits
    a = data["fut_ctrl"][..., 0][data["fut_mask"]]
    assert a.min() >= -9.0 - 1e-6 and a.max() <= 6.0 + 1e-6


def test_drift_history_rewrite():
    """A displaced vehicle's recent past is rewritten into the drift that would have brought it there."""
    t, n, dt = 30, 3, 0.1
    rec = {"x": np.tile(20.0 * dt * np.arange(t)[:, None], (1, n))[None], "y": np.zeros((1, t, n)),
           "yaw": np.zeros((1, t, n)), "speed": np.full((1, t, n), 20.0), "jump": np.zeros((1, t, n), bool)}
    before = {k: v.copy() for k, v in rec.items()}
    moved = np.zeros((1, n), bool)
    moved[0, 1] = True
    offset, dyaw = np.full((1, n), 0.5), np.full((1, n), 0.02)
    rewrite_drift_history(rec, 19, moved, offset, dyaw, 10, dt)
    y = rec["y"][0, :, 1]
    assert y[19] == pytest.approx(0.5)  # the displaced state itself
    assert y[18] == pytest.approx(0.5 - 20.0 * dt * np.sin(0.02))
    np.testing.assert_allclose(np.diff(y[9:20]), 20.0 * dt * np.sin(0.02))  # a steady drift
    assert (y[:9] == 0).all() and (y[20:] == 0).all() and (rec["yaw"][0, 9:20, 1] == 0.02).all()
    assert rec["jump"][0, 9, 1] and rec["jump"][0, 19, 1] and rec["jump"].sum() == 2
    for k in ("x", "y", "yaw"):  # the others are untouched
        np.testing.assert_array_equal(rec[k][0, :, [0, 2]], before[k][0, :, [0, 2]])


def test_focal_histories_show_no_displacement_jumps(tiny_data):
    """Perturbations are injected while collecting, yet no focal vehicle's history shows a jump: a window
    either starts after the drift-shaped rewrite or its future excludes it."""
    data = load_shards(tiny_data)
    hp = TINY.history
    feat = data["agent_feat"][:, 0]
    hist = feat[:, 7:7 + 5 * hp].reshape(-1, hp, 5)
    xy = np.concatenate([hist[..., :2], feat[:, None, :2]], axis=1) * POS_SCALE  # oldest first, then now
    ok = feat[:, 7 + 5 * hp:7 + 6 * hp].astype(bool).all(axis=1)  # whole history known
    assert ok.sum() > 100
    # a displacement at one step shows as a pair of opposite second differences of the positions (a spike);
    # without the rewrite about 8% of these windows have one (measured), with it none
    dd = np.diff(xy, n=2, axis=1)[ok]
    n1, n0 = np.linalg.norm(dd[:, 1:], axis=-1), np.linalg.norm(dd[:, :-1], axis=-1)
    spike = ((dd[:, 1:] * dd[:, :-1]).sum(-1) < -0.5 * n1 * n0) & (n1 > 0.3) & (n0 > 0.3)
    assert not spike.any()
    # and vehicles off their lane centre by more than half a metre are in the data (the recoveries)
    assert (np.abs(feat[:, -2]) * 2.0 > 0.5).sum() > 20


def test_recoveries_start_at_the_displaced_state(tiny_data):
    """Windows begin at the very state a vehicle was displaced to -- off its lane centre while still
    pointing along the lane, what closed-loop drift produces -- and their future returns toward the centre."""
    data = load_shards(tiny_data)
    feat = data["agent_feat"][:, 0]
    off, err = feat[:, -2] * 2.0, feat[:, -1] * 0.2  # lane offset [m] (left +), heading error [rad]
    npt = TINY.lane_points
    lane = data["lane_feat"][:, 0]  # the nearest lane's centreline in the focal frame
    lx, ly, lsin = lane[:, 0:4 * npt:4] * POS_SCALE, lane[:, 1:4 * npt:4] * POS_SCALE, lane[:, 3:4 * npt:4]
    sel = (np.abs(off) > 0.5) & (np.abs(err) < 0.03) & (np.abs(lsin).max(axis=1) < 0.2)
    assert sel.sum() >= 10
    k = int(round(1.0 / TINY.plan_dt)) - 1  # one second ahead
    x1, y1 = data["fut_xy"][sel, 0, k, 0], data["fut_xy"][sel, 0, k, 1]
    lane_y = np.array([np.interp(x, a, b) for x, a, b in zip(x1, lx[sel], ly[sel], strict=True)])
    closer = np.abs(y1 - lane_y) < np.abs(off[sel])
    assert closer.mean() > 0.8


def test_loss_decreases_and_training_resumes(tiny_data, tmp_path):
    torch.manual_seed(0)
    ckpt = tmp_path / "p.pt"
    r1 = train(tiny_data, ckpt, TINY, TrainConfig(steps=150, batch_size=64, lr=3e-3, warmup=10, save_every=50),
               device="cpu")
    state = torch.load(str(ckpt) + ".train-state.pt", weights_only=True)
    curve = [row["loss"] for row in state["curve"]]  # running mean of the loss
    assert r1["steps"] == 150 and curve[-1] < 0.6 * curve[0]
    # the shipped (EMA) weights follow the trained ones even after a short run: no leftover of the random init
    ema = torch.cat([v.flatten() for k, v in state["ema"].items() if v.is_floating_point()])
    live = torch.cat([v.flatten() for k, v in state["model"].items() if v.is_floating_point()])
    assert float((ema - live).norm() / live.norm()) < 0.1
    # asking for more steps continues from step 150, not from scratch
    r2 = train(tiny_data, ckpt, TINY, TrainConfig(steps=180, batch_size=64, lr=3e-3, warmup=10, save_every=50),
               device="cpu")
    state2 = torch.load(str(ckpt) + ".train-state.pt", weights_only=True)
    steps2 = [r["step"] for r in state2["curve"]]
    assert r2["steps"] == 180 and steps2[:len(curve)] == [r["step"] for r in state["curve"]] and steps2[-1] == 180
    assert (tmp_path / "p.pt.loss.csv").exists() and (tmp_path / "p.pt.loss.png").stat().st_size > 1000
    planner = load_planner(ckpt)
    assert planner.cfg == TINY and planner.meta["steps"] == 180


def test_fine_tuning_starts_from_the_given_planner(tiny_data, tmp_path):
    base = tmp_path / "base.pt"
    train(tiny_data, base, TINY, TrainConfig(steps=60, batch_size=64, lr=3e-3, warmup=10, save_every=200),
          device="cpu")
    first = load_planner(base)
    # with a zero learning rate the fine-tuned planner is the one it started from (weights and normaliser)
    same = tmp_path / "same.pt"
    train(tiny_data, same, None, TrainConfig(steps=5, batch_size=64, lr=0.0, warmup=1, save_every=200),
          device="cpu", init=base)
    again = load_planner(same)
    for (k, a), b in zip(first.model.state_dict().items(), again.model.state_dict().values(), strict=True):
        torch.testing.assert_close(b, a, msg=k)
    torch.testing.assert_close(again.normalizer.mean, first.normalizer.mean)
    assert again.cfg == TINY and again.meta["init"] == {"checkpoint": "base.pt", "steps": 60,
                                                       "windows": first.meta["windows"]}
    # and training on from there starts at the base planner's loss, not at a random network's
    tuned = tmp_path / "tuned.pt"
    cfg = TrainConfig(steps=10, batch_size=64, lr=1e-3, warmup=1, save_every=200)
    train(tiny_data, tuned, None, cfg, device="cpu", init=base)
    fresh = tmp_path / "fresh.pt"
    train(tiny_data, fresh, TINY, cfg, device="cpu")

    def first_loss(path):
        return torch.load(str(path) + ".train-state.pt", weights_only=True)["curve"][0]["loss"]

    assert first_loss(tuned) < 0.7 * first_loss(fresh)


def test_bad_checkpoints_give_clear_errors(tmp_path, tiny_data):
    with pytest.raises(CheckpointError, match="not found"):
        load_planner(tmp_path / "missing.pt")
    (tmp_path / "junk.pt").write_bytes(b"\x00\x01garbage")
    with pytest.raises(CheckpointError, match="not a loadable"):
        load_planner(tmp_path / "junk.pt")
    torch.save({"weights": torch.zeros(3)}, tmp_path / "foreign.pt")
    with pytest.raises(CheckpointError, match="not a drivediff planner checkpoint"):
        load_planner(tmp_path / "foreign.pt")

    class Evil:
        def __reduce__(self):
            return (print, ("executed!",))

    with open(tmp_path / "evil.pt", "wb") as fh:
        pickle.dump({"format": "drivediff-planner", "x": Evil()}, fh)
    with pytest.raises(CheckpointError, match="not a loadable.*weights_only=True") as err:
        read_checkpoint_dict(tmp_path / "evil.pt")
    assert "weights_only=False" not in str(err.value) and "trust" not in str(err.value)  # torch's unsafe advice
    # a truncated real checkpoint
    ckpt = tmp_path / "p.pt"
    train(tiny_data, ckpt, TINY, TrainConfig(steps=2, batch_size=8, save_every=1), device="cpu")
    data = ckpt.read_bytes()
    (tmp_path / "trunc.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="not a loadable"):
        load_planner(tmp_path / "trunc.pt")
    # a checkpoint whose weights do not fit its config
    obj = read_checkpoint_dict(ckpt)
    obj["config"]["d_model"] = 64
    torch.save(obj, tmp_path / "mismatch.pt")
    with pytest.raises(CheckpointError, match="does not match"):
        load_planner(tmp_path / "mismatch.pt")
    np.testing.assert_array_equal(ckpt.stat().st_mode & 0o644, 0o644)
