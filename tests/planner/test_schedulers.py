"""Schedulers: the forward process, and sampling with an oracle denoiser recovers the data."""

import numpy as np
import pytest
import torch

from drivediff.planner.schedulers import NoiseSchedule, make_scheduler


class OracleDenoiser(torch.nn.Module):
    """Exact posterior mean E[x0 | x_t] for data that is a uniform mixture of a few points."""

    def __init__(self, points: torch.Tensor, schedule: NoiseSchedule):
        super().__init__()
        self.points = points  # (P, D)
        self.schedule = schedule

    def forward(self, x, t, cond=None):
        ab = self.schedule.alpha_bar(t).to(x.dtype).reshape(-1, 1, 1)  # (B, 1, 1)
        diff = x[:, None, :] - ab.sqrt() * self.points[None]  # (B, P, D)
        logw = -(diff ** 2).sum(-1) / (2 * (1 - ab[:, :, 0]))
        w = torch.softmax(logw, dim=1)  # (B, P)
        return w @ self.points


@pytest.mark.parametrize("kind", ["cosine", "linear"])
def test_schedule_is_monotone_and_add_noise_has_the_right_moments(kind):
    sch = NoiseSchedule(100, kind)
    ab = sch.alphas_cumprod.numpy()
    assert np.all(np.diff(ab) < 0) and 0.9 < ab[0] <= 1.0 and ab[-1] < 0.05
    x0 = torch.full((200_000, 1), 2.0, dtype=torch.float64)
    t = torch.full((200_000,), 50)
    xt = sch.add_noise(x0, torch.randn_like(x0), t)
    assert xt.mean().item() == pytest.approx(2.0 * ab[50] ** 0.5, abs=0.01)
    assert xt.var().item() == pytest.approx(1 - ab[50], abs=0.01)
    assert sch.alpha_bar(-1).item() == 1.0


@pytest.mark.parametrize("name, steps", [("ddpm", 100), ("ddpm", 25), ("ddim", 10), ("ddim", 5), ("dpm", 10),
                                         ("dpm", 5)])
def test_sampling_with_an_oracle_denoiser_recovers_the_data(name, steps):
    torch.manual_seed(0)
    points = torch.tensor([[-1.5, 0.5, 1.0], [1.0, -1.0, 0.0], [0.5, 1.5, -1.0]], dtype=torch.float64)
    sch = NoiseSchedule(100, "cosine")
    oracle = OracleDenoiser(points, sch)
    s = make_scheduler(name, sch)
    s.set_timesteps(steps)
    x = torch.randn(3000, 3, dtype=torch.float64)
    gen = torch.Generator().manual_seed(1)
    for i, t in enumerate(s.timesteps):
        x0 = oracle(x, torch.full((len(x),), t))
        x = s.step(x0, i, x, gen)
    d = torch.cdist(x, points).min(dim=1).values
    assert d.max().item() < 1e-2  # every sample is one of the data points
    counts = torch.bincount(torch.cdist(x, points).argmin(dim=1), minlength=3).double() / len(x)
    assert torch.all((counts - 1 / 3).abs() < 0.06)  # in the right proportions


def test_ddim_is_deterministic_and_eta_adds_noise():
    sch = NoiseSchedule(100)
    points = torch.tensor([[0.0, 1.0]], dtype=torch.float64)
    oracle = OracleDenoiser(points, sch)
    outs = []
    for eta in (0.0, 0.0, 1.0):
        s = make_scheduler("ddim", sch, eta=eta)
        s.set_timesteps(10)
        x = torch.ones(4, 2, dtype=torch.float64)
        xs = []
        for i, t in enumerate(s.timesteps[:-1]):
            x = s.step(oracle(x, torch.full((4,), t)), i, x, torch.Generator().manual_seed(i))
            xs.append(x)
        outs.append(torch.stack(xs))
    assert torch.equal(outs[0], outs[1]) and not torch.allclose(outs[0], outs[2])


def test_bad_arguments():
    with pytest.raises(ValueError, match="unknown scheduler"):
        make_scheduler("euler", NoiseSchedule())
    with pytest.raises(ValueError, match="num_steps"):
        NoiseSchedule(100).spaced(0)
    with pytest.raises(ValueError, match="unknown schedule"):
        NoiseSchedule(100, "sqrt")


def _dpm_reference(schedule, timesteps, x, x0s):
    """DPM-Solver++(2M) written out in float64 NumPy from Lu et al. (2022): x_{t-1} = (sigma_p / sigma_t) x_t
    - alpha_p (e^-h - 1) D, D = x0 at the first step, else (1 + 1/2r) x0 - 1/2r x0_prev, r = h_prev / h."""
    ab = schedule.alphas_cumprod.numpy()
    lam = lambda a: 0.5 * (np.log(a) - np.log1p(-a))  # noqa: E731
    prev_x0 = prev_h = None
    for i, t in enumerate(timesteps):
        if i + 1 == len(timesteps):
            return x0s[i]
        tp = timesteps[i + 1]
        h = lam(ab[tp]) - lam(ab[t])
        d = x0s[i] if prev_x0 is None else (1 + 0.5 * prev_h / h) * x0s[i] - 0.5 * prev_h / h * prev_x0
        x = np.sqrt((1 - ab[tp]) / (1 - ab[t])) * x - np.sqrt(ab[tp]) * np.expm1(-h) * d
        prev_x0, prev_h = x0s[i], h


def test_dpm_solver_matches_the_written_out_update_and_its_coefficient_cache_keeps_step_counts_apart():
    """The solver's per-step coefficients are computed once per schedule and step count and kept on the
    schedule: every call, with any interleaving of step counts, must give the textbook update."""
    sch = NoiseSchedule(100, "cosine")
    rng = np.random.default_rng(0)
    for steps in (10, 5, 10, 7, 5):
        s = make_scheduler("dpm", sch)
        s.set_timesteps(steps)
        x = rng.normal(size=(6, 3))
        x0s = [rng.normal(size=(6, 3)) for _ in range(steps)]
        xt = torch.as_tensor(x)
        for i in range(steps):
            xt = s.step(torch.as_tensor(x0s[i]), i, xt)
        np.testing.assert_allclose(xt.numpy(), _dpm_reference(sch, s.timesteps, x, x0s), rtol=1e-10, atol=1e-12)
    assert {k[1] for k in sch.cache} == {tuple(sch.spaced(n)) for n in (10, 5, 7)}
