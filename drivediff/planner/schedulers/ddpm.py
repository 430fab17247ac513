"""DDPM (Ho et al. 2020): ancestral sampling from the posterior q(x_prev | x_t, x0)."""

from __future__ import annotations

import torch

from drivediff.planner.schedulers.common import _Scheduler


class DDPMScheduler(_Scheduler):
    """Ancestral sampler; with fewer steps than T it samples the posterior between spaced timesteps."""

    def step(self, x0: torch.Tensor, i: int, x_t: torch.Tensor, generator=None) -> torch.Tensor:
        t, tp = self.timesteps[i], self._prev(i)
        ab_t, ab_p = self._ab(t, x_t), self._ab(tp, x_t)
        if tp < 0:
            return x0
        alpha = ab_t / ab_p
        mean = (ab_p.sqrt() * (1 - alpha) * x0 + alpha.sqrt() * (1 - ab_p) * x_t) / (1 - ab_t)
        var = (1 - ab_p) / (1 - ab_t) * (1 - alpha)
        noise = torch.randn(x_t.shape, generator=generator, dtype=x_t.dtype, device=x_t.device)
        return mean + var.sqrt() * noise
