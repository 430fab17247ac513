"""DPM-Solver++(2M) (Lu et al. 2022), the multistep second-order solver in data (x0) prediction form."""

from __future__ import annotations

import torch

from drivediff.planner.schedulers.common import _Scheduler


class DPMSolverScheduler(_Scheduler):
    def set_timesteps(self, num_steps: int) -> None:
        super().set_timesteps(num_steps)
        self._prev_x0 = None

    def _lambda(self, ab: torch.Tensor) -> torch.Tensor:
        return 0.5 * (torch.log(ab) - torch.log1p(-ab))  # log(alpha / sigma)

    def _coefficients(self, like: torch.Tensor) -> list:
        """Per step: ``(sigma_ratio, data_coef, second)`` with ``second`` the weights ``(a, b)`` of the
        second-order data term ``a x0 - b x0_prev`` (None at the first step), or None at the last step
        (which returns x0). They depend on the schedule and the step count only, so they are computed once
        (0-dim tensors of x's dtype) and kept on the schedule: one replanning cycle at 10 steps otherwise
        spends ~1 ms on these scalars."""
        key = ("dpm", tuple(self.timesteps), like.dtype, like.device)
        if key not in self.schedule.cache:
            coefs, prev_h = [], None
            for i, t in enumerate(self.timesteps):
                tp = self._prev(i)
                if tp < 0:
                    coefs.append(None)
                    continue
                ab_t, ab_p = self._ab(t, like), self._ab(tp, like)
                h = self._lambda(ab_p) - self._lambda(ab_t)
                second = None
                if prev_h is not None:
                    r = prev_h / h
                    second = (1 + 0.5 / r, 0.5 / r)
                coefs.append((((1 - ab_p) / (1 - ab_t)).sqrt(), ab_p.sqrt() * torch.expm1(-h), second))
                prev_h = h
            self.schedule.cache[key] = coefs
        return self.schedule.cache[key]

    def step(self, x0: torch.Tensor, i: int, x_t: torch.Tensor, generator=None) -> torch.Tensor:
        coef = self._coefficients(x_t)[i]
        if i == 0:
            self._prev_x0 = None
        if coef is None:
            return x0
        sigma_ratio, data_coef, second = coef
        d = x0
        if second is not None and self._prev_x0 is not None:  # second order from the previous data prediction
            d = second[0] * x0 - second[1] * self._prev_x0
        self._prev_x0 = x0
        return sigma_ratio * x_t - data_coef * d
