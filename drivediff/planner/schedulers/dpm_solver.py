"""DPM-Solver++(2M) (Lu et al. 2022), the multistep second-order solver in data (x0) prediction form."""

from __future__ import annotations

import torch

from drivediff.planner.schedulers.common import _Scheduler


class DPMSolverScheduler(_Scheduler):
    def set_timesteps(self, num_steps: int) -> None:
        super().set_timesteps(num_steps)
        self._prev_x0 = None
        self._prev_h = None

    def _lambda(self, ab: torch.Tensor) -> torch.Tensor:
        return 0.5 * (torch.log(ab) - torch.log1p(-ab))  # log(alpha / sigma)

    def step(self, x0: torch.Tensor, i: int, x_t: torch.Tensor, generator=None) -> torch.Tensor:
        t, tp = self.timesteps[i], self._prev(i)
        if i == 0:
            self._prev_x0, self._prev_h = None, None
        if tp < 0:
            return x0
        ab_t, ab_p = self._ab(t, x_t), self._ab(tp, x_t)
        h = self._lambda(ab_p) - self._lambda(ab_t)
        d = x0
        if self._prev_x0 is not None:  # second order from the previous data prediction
            r = self._prev_h / h
            d = (1 + 0.5 / r) * x0 - (0.5 / r) * self._prev_x0
        sigma_ratio = ((1 - ab_p) / (1 - ab_t)).sqrt()
        x = sigma_ratio * x_t - ab_p.sqrt() * torch.expm1(-h) * d
        self._prev_x0, self._prev_h = x0, h
        return x
