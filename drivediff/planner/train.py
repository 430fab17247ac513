"""Training: centralised, on joint futures (the loss covers the focal vehicle and its neighbours).

    drivediff train --data DIR --out CKPT [--device cpu|cuda|auto] [--steps N] [--minutes M] [--init CKPT0]

Writes ``CKPT`` (inference checkpoint: EMA weights, normaliser, config), ``CKPT.train-state.pt`` (optimiser,
step, random state: an interrupted run resumes from it), ``CKPT.loss.csv`` and ``CKPT.loss.png``. Every file
is written atomically. ``--init`` fine-tunes an existing planner (its weights and normaliser) on new data.

Data-parallel training runs the same command under ``torchrun`` (PyTorch DDP: gloo on CPU, nccl on GPU):

    torchrun --nproc_per_node N -m drivediff.cli train --data DIR --out CKPT ...

Every rank reads the shards and fits the same normaliser; rank r draws its batches from windows r, r + N,
r + 2N, ... with its own noise stream, ``batch_size / N`` windows per step, so the global batch, the
learning-rate schedule and the loss curve stay those of a 1-process run. Gradients are averaged across
ranks (DDP), the logged loss is the all-rank mean, ranks stop together (step count or time budget), and
only rank 0 writes the checkpoint, the training state and the loss curve. Resuming works as in one process
(every rank reads ``CKPT.train-state.pt``), also with a different number of processes.
"""

from __future__ import annotations

import copy
import csv
import math
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from drivediff.errors import DrivediffError
from drivediff.io import atomic_write
from drivediff.planner.checkpoint import atomic_save, load_planner, save_checkpoint
from drivediff.planner.config import PlannerConfig
from drivediff.planner.data import load_shards
from drivediff.planner.denoiser import Denoiser
from drivediff.planner.dynamics import clip_controls
from drivediff.planner.normalizer import Normalizer
from drivediff.planner.schedulers import NoiseSchedule

COND_KEYS = ("agent_feat", "agent_mask", "lane_feat", "lane_mask")


@dataclass(frozen=True)
class TrainConfig:
    steps: int = 4000
    minutes: float = 9.0  # wall-clock budget; training stops at whichever comes first
    batch_size: int = 256
    lr: float = 1e-3
    weight_decay: float = 1e-4
    warmup: int = 200
    ema: float = 0.999
    save_every: int = 500
    seed: int = 0
    max_windows: int | None = None


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise DrivediffError("--device cuda requested but no CUDA device is available")
    if name not in ("cpu", "cuda"):
        raise DrivediffError(f"unknown device {name!r} (cpu, cuda, auto)")
    return torch.device(name)


def _dist_info() -> tuple[int, int]:
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))


RANK_STREAM = 1_000_003  # offset between the random streams of DDP ranks (rank 0 keeps the 1-process stream)


def _all_ranks_mean(value: float, dev: torch.device, world: int) -> float:
    import torch.distributed as dist

    t = torch.tensor([value], dtype=torch.float64 if dev.type == "cpu" else torch.float32, device=dev)
    dist.all_reduce(t)
    return float(t) / world


def _any_rank(flag: bool, dev: torch.device) -> bool:
    """True on every rank if ``flag`` is True on one: ranks stop together (a rank leaving early would
    leave the others waiting in the gradient all-reduce forever)."""
    import torch.distributed as dist

    t = torch.tensor([int(flag)], device=dev)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item())


def masked_loss(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean squared error over the valid (agent, step, channel) entries. mask: (B, A, D) float."""
    return ((pred - target) ** 2 * mask).sum() / mask.sum().clamp_min(1.0)


class Batches:
    """Random batches of windows as tensors (each DDP rank samples from its own shard of the data)."""

    def __init__(self, data: dict, normalizer: Normalizer, cfg: PlannerConfig, device, rank=0, world=1, seed=0):
        n = len(data["fut_ctrl"])
        idx = np.arange(n)[rank::world]
        self.cond = {k: torch.as_tensor(data[k][idx]).to(device) for k in COND_KEYS}
        ctrl = torch.as_tensor(data["fut_ctrl"][idx]).to(device)
        self.x0 = normalizer.encode(clip_controls(ctrl, cfg))
        fut = torch.as_tensor(data["fut_mask"][idx]).to(device) & self.cond["agent_mask"][..., None]
        if cfg.basis:  # coefficients summarise the whole horizon: only agents known throughout count
            mask = fut.all(dim=-1, keepdim=True).expand(-1, -1, cfg.control_dim)
        else:
            mask = fut.repeat_interleave(2, dim=-1)  # both channels per step
        self.mask = mask.float()
        self.n = len(idx)
        self.gen = torch.Generator(device="cpu").manual_seed(seed + RANK_STREAM * rank)

    def sample(self, batch_size: int):
        i = torch.randint(0, self.n, (batch_size,), generator=self.gen).to(self.x0.device)
        return {k: v[i] for k, v in self.cond.items()}, self.x0[i], self.mask[i]


def _write_curve(path: Path, rows: list[dict]) -> None:
    def write_csv(fh):
        w = csv.DictWriter(fh, fieldnames=["step", "loss", "lr", "seconds"])
        w.writeheader()
        w.writerows(rows)

    atomic_write(path, write_csv, binary=False)
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(6, 3.5))
        ax.plot([r["step"] for r in rows], [r["loss"] for r in rows])
        ax.set_yscale("log")
        ax.set_xlabel("step")
        ax.set_ylabel("denoising loss (x0 MSE, normalised)")
        ax.grid(alpha=0.3)
        fig.tight_layout()
        atomic_write(Path(str(path)[:-4] + ".png"), lambda fh: fig.savefig(fh, dpi=100, format="png"))
        plt.close(fig)
    except ImportError:
        pass


def train(data_dir: Path, out: Path, cfg: PlannerConfig | None = None, tcfg: TrainConfig | None = None,
          device: str = "auto", progress: Callable[[int, int, float], None] | None = None,
          init: Path | None = None) -> dict:
    """Train (or resume training) a planner; returns a summary dict.

    init: fine-tune: start from this checkpoint's weights, normaliser and configuration (a fresh optimiser
    and learning-rate schedule of ``tcfg.steps``) instead of a random network. An interrupted fine-tuning
    resumes from its own training state like any run.
    """
    cfg = cfg or PlannerConfig()
    tcfg = tcfg or TrainConfig()
    out = Path(out)
    rank, world = _dist_info()
    dev = pick_device(device)
    ddp = world > 1
    if ddp:
        import torch.distributed as dist

        if dev.type == "cuda":
            dev = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
            torch.cuda.set_device(dev)
        dist.init_process_group("nccl" if dev.type == "cuda" else "gloo")
    torch.manual_seed(tcfg.seed)
    state_path = Path(str(out) + ".train-state.pt")
    resume = torch.load(state_path, map_location="cpu", weights_only=True) if state_path.exists() else None
    start = None
    if resume is not None:
        cfg = PlannerConfig.from_dict(dict(resume["config"]))
    elif init is not None:
        start = load_planner(init, "cpu")
        cfg = start.cfg
    data = load_shards(data_dir, tcfg.max_windows)
    whole = data["fut_mask"].all(axis=-1) & data["agent_mask"]  # agents whose future is known throughout
    if resume is not None:
        normalizer = Normalizer.from_state(resume["normalizer"])
    elif start is not None:  # the network's inputs and outputs keep the scale it was trained with
        normalizer = start.normalizer
    else:
        normalizer = Normalizer.fit(data["fut_ctrl"], whole, cfg.control_basis())
    normalizer.to(dev)
    model = Denoiser(cfg).to(dev)
    if start is not None:
        model.load_state_dict(start.model.state_dict())
    ema = copy.deepcopy(model).eval()
    opt = torch.optim.AdamW(model.parameters(), lr=tcfg.lr, weight_decay=tcfg.weight_decay)
    step, curve, elapsed0 = 0, [], 0.0
    if resume is not None:
        model.load_state_dict(resume["model"])
        ema.load_state_dict(resume["ema"])
        opt.load_state_dict(resume["optimizer"])
        step, curve, elapsed0 = int(resume["step"]), list(resume["curve"]), float(resume["seconds"])
    net = model
    if ddp:
        from torch.nn.parallel import DistributedDataParallel

        net = DistributedDataParallel(model, device_ids=[dev.index] if dev.type == "cuda" else None)
    batches = Batches(data, normalizer, cfg, dev, rank, world, tcfg.seed + step)
    schedule = NoiseSchedule(cfg.train_timesteps, cfg.schedule)
    # each rank draws its own noise levels and noise (rank 0's are those of a 1-process run)
    gen = torch.Generator(device="cpu").manual_seed(tcfg.seed * 7 + step + RANK_STREAM * rank)
    t_start = time.perf_counter()
    per_rank = max(1, tcfg.batch_size // world)

    def lr_at(k):
        warm = min(1.0, (k + 1) / tcfg.warmup)
        return tcfg.lr * warm * 0.5 * (1 + math.cos(math.pi * min(k / max(tcfg.steps, 1), 1.0)))

    init_meta = None  # what a fine-tuned planner started from (kept across resumes in the training state)
    if resume is not None:
        init_meta = resume.get("init")
    elif start is not None:
        init_meta = {"checkpoint": Path(init).name, "steps": int(start.meta.get("steps", 0)),
                     "windows": int(start.meta.get("windows", 0))}

    def save_all():
        if rank != 0:
            return
        meta = {"steps": step, "windows": int(len(data["fut_ctrl"])), "train": asdict(tcfg), "init": init_meta,
                "seconds": elapsed0 + time.perf_counter() - t_start, "final_loss": curve[-1]["loss"] if curve else None}
        save_checkpoint(out, cfg, ema, normalizer, meta)
        atomic_save({"config": cfg.to_dict(), "model": model.state_dict(), "ema": ema.state_dict(),
                     "optimizer": opt.state_dict(), "step": step, "curve": curve, "init": init_meta,
                     "seconds": elapsed0 + time.perf_counter() - t_start,
                     "normalizer": normalizer.state()}, state_path)
        _write_curve(Path(str(out) + ".loss.csv"), curve)

    model.train()
    running = None
    while step < tcfg.steps:
        over = elapsed0 + time.perf_counter() - t_start > 60.0 * tcfg.minutes
        if ddp:
            over = _any_rank(over, dev)
        if over:
            break
        cond, x0, mask = batches.sample(per_rank)
        t = torch.randint(0, schedule.num_timesteps, (per_rank,), generator=gen).to(dev)
        noise = torch.randn(x0.shape, generator=gen).to(dev)
        x_t = schedule.add_noise(x0, noise, t).float()
        for g in opt.param_groups:
            g["lr"] = lr_at(step)
        loss = masked_loss(net(x_t, t, cond), x0, mask)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        with torch.no_grad():
            # warmed-up EMA decay: a plain 0.999 would leave e^-1 of the random initial weights in the
            # average after 1000 steps, and short runs would ship a planner biased by them
            decay = min(tcfg.ema, (1.0 + step) / (10.0 + step))
            for pe, pm in zip(ema.parameters(), model.parameters(), strict=True):
                pe.lerp_(pm, 1.0 - decay)
        step += 1
        lv = float(loss.detach())
        if ddp:  # the curve shows the loss of the whole (all-rank) batch
            lv = _all_ranks_mean(lv, dev, world)
        running = lv if running is None else 0.98 * running + 0.02 * lv
        if step % 25 == 0 or step == 1 or step == tcfg.steps:
            curve.append({"step": step, "loss": running, "lr": lr_at(step),
                          "seconds": round(elapsed0 + time.perf_counter() - t_start, 2)})
        if progress is not None and rank == 0:
            progress(step, tcfg.steps, running)
        if step % tcfg.save_every == 0:
            save_all()
    save_all()
    if ddp:
        import torch.distributed as dist

        dist.destroy_process_group()
    return {"steps": step, "loss": running, "windows": int(len(data["fut_ctrl"])), "parameters": model.num_parameters(),
            "seconds": elapsed0 + time.perf_counter() - t_start, "checkpoint": str(out), "rank": rank}
