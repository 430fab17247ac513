"""The noise schedule shared by all schedulers: alpha_bar(t) for integer t in [0, T)."""

from __future__ import annotations

import math

import numpy as np
import torch


class NoiseSchedule:
    """Cumulative signal rates alpha_bar(t), t = 0..T-1 (t = 0 is nearly clean).

    ``cosine``: Nichol & Dhariwal (2021), s = 0.008, betas capped at 0.999. ``linear``: betas 1e-4..0.02
    scaled to T steps (Ho et al. 2020).
    """

    def __init__(self, num_timesteps: int = 100, kind: str = "cosine"):
        if num_timesteps < 2:
            raise ValueError("a schedule needs at least 2 timesteps")
        t = num_timesteps
        if kind == "cosine":
            s = 0.008
            f = np.cos((np.arange(t + 1) / t + s) / (1 + s) * math.pi / 2) ** 2
            betas = np.clip(1 - f[1:] / f[:-1], 0.0, 0.999)
        elif kind == "linear":
            scale = 1000 / t
            betas = np.linspace(scale * 1e-4, scale * 0.02, t)
        else:
            raise ValueError(f"unknown schedule {kind!r} (cosine, linear)")
        self.num_timesteps = t
        self.kind = kind
        self.alphas_cumprod = torch.as_tensor(np.cumprod(1.0 - betas), dtype=torch.float64)
        self.cache: dict = {}  # samplers' per-step coefficients, which depend on the schedule only

    def alpha_bar(self, t) -> torch.Tensor:
        """alpha_bar at integer timesteps t (tensor or int); t = -1 means clean (1.0)."""
        t = torch.as_tensor(t)
        ab = self.alphas_cumprod[t.clamp_min(0)]
        return torch.where(t < 0, torch.ones_like(ab), ab)

    def spaced(self, num_steps: int) -> list[int]:
        """``num_steps`` timesteps from T-1 down to 0, evenly spaced."""
        if not 1 <= num_steps <= self.num_timesteps:
            raise ValueError(f"num_steps must be in [1, {self.num_timesteps}], got {num_steps}")
        return [int(round(v)) for v in np.linspace(self.num_timesteps - 1, 0, num_steps)]

    def add_noise(self, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """x_t = sqrt(ab) x0 + sqrt(1 - ab) noise, with t (B,) broadcast over the trailing dims of x0."""
        ab = self.alpha_bar(t).to(x0.dtype).reshape(-1, *([1] * (x0.dim() - 1)))
        return ab.sqrt() * x0 + (1 - ab).sqrt() * noise


class _Scheduler:
    def __init__(self, schedule: NoiseSchedule):
        self.schedule = schedule
        self.timesteps: list[int] = []

    def set_timesteps(self, num_steps: int) -> None:
        self.timesteps = self.schedule.spaced(num_steps)

    def add_noise(self, x0, noise, t):
        return self.schedule.add_noise(x0, noise, t)

    def _prev(self, i: int) -> int:
        return self.timesteps[i + 1] if i + 1 < len(self.timesteps) else -1

    def _ab(self, t: int, like: torch.Tensor) -> torch.Tensor:
        return self.schedule.alpha_bar(t).to(like.dtype)
