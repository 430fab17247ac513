"""DDIM (Song et al. 2021): deterministic (eta = 0) or stochastic few-step sampling."""

from __future__ import annotations

import torch

from drivediff.planner.schedulers.common import _Scheduler


class DDIMScheduler(_Scheduler):
    def __init__(self, schedule, eta: float = 0.0):
        super().__init__(schedule)
        self.eta = eta

    def step(self, x0: torch.Tensor, i: int, x_t: torch.Tensor, generator=None) -> torch.Tensor:
        t, tp = self.timesteps[i], self._prev(i)
        ab_t, ab_p = self._ab(t, x_t), self._ab(tp, x_t)
        if tp < 0:
            return x0
        eps = (x_t - ab_t.sqrt() * x0) / (1 - ab_t).sqrt()
        sigma = self.eta * ((1 - ab_p) / (1 - ab_t) * (1 - ab_t / ab_p)).clamp_min(0).sqrt()
        x = ab_p.sqrt() * x0 + (1 - ab_p - sigma ** 2).clamp_min(0).sqrt() * eps
        if self.eta > 0:
            x = x + sigma * torch.randn(x_t.shape, generator=generator, dtype=x_t.dtype, device=x_t.device)
        return x
