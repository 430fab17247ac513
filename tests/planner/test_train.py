"""Training: the loss decreases on a tiny dataset, runs resume, checkpoints load with weights_only."""

import pickle

import numpy as np
import pytest
import torch

from drivediff.errors import CheckpointError
from drivediff.planner.checkpoint import load_planner, read_checkpoint_dict
from drivediff.planner.config import PlannerConfig
from drivediff.planner.data import collect, load_shards
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


def test_loss_decreases_and_training_resumes(tiny_data, tmp_path):
    torch.manual_seed(0)
    ckpt = tmp_path / "p.pt"
    r1 = train(tiny_data, ckpt, TINY, TrainConfig(steps=150, batch_size=64, lr=3e-3, warmup=10, save_every=50),
               device="cpu")
    state = torch.load(str(ckpt) + ".train-state.pt", weights_only=True)
    curve = [row["loss"] for row in state["curve"]]  # running mean of the loss
    assert r1["steps"] == 150 and curve[-1] < 0.6 * curve[0]
    # asking for more steps continues from step 150, not from scratch
    r2 = train(tiny_data, ckpt, TINY, TrainConfig(steps=180, batch_size=64, lr=3e-3, warmup=10, save_every=50),
               device="cpu")
    state2 = torch.load(str(ckpt) + ".train-state.pt", weights_only=True)
    steps2 = [r["step"] for r in state2["curve"]]
    assert r2["steps"] == 180 and steps2[:len(curve)] == [r["step"] for r in state["curve"]] and steps2[-1] == 180
    assert (tmp_path / "p.pt.loss.csv").exists() and (tmp_path / "p.pt.loss.png").stat().st_size > 1000
    planner = load_planner(ckpt)
    assert planner.cfg == TINY and planner.meta["steps"] == 180


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
    with pytest.raises(CheckpointError, match="weights_only"):
        read_checkpoint_dict(tmp_path / "evil.pt")
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
