"""Noise schedulers: DDPM for training (and ancestral sampling), DDIM and DPM-Solver++ for few-step sampling.

All share one interface, written for a denoiser that predicts the clean sample x0:

    sched.set_timesteps(num_steps)          # descending integer timesteps in [0, T)
    for i, t in enumerate(sched.timesteps):
        x0 = denoiser(x, t, cond)
        x = sched.step(x0, i, x, generator)  # x at the next (lower) noise level; x0 after the last step
    x_t = sched.add_noise(x0, noise, t)     # forward process (training)
"""

from drivediff.planner.schedulers.common import NoiseSchedule
from drivediff.planner.schedulers.ddim import DDIMScheduler
from drivediff.planner.schedulers.ddpm import DDPMScheduler
from drivediff.planner.schedulers.dpm_solver import DPMSolverScheduler

SCHEDULERS = {"ddpm": DDPMScheduler, "ddim": DDIMScheduler, "dpm": DPMSolverScheduler}


def make_scheduler(name: str, schedule: NoiseSchedule, **kwargs):
    try:
        return SCHEDULERS[name](schedule, **kwargs)
    except KeyError:
        raise ValueError(f"unknown scheduler {name!r}; choose from {sorted(SCHEDULERS)}") from None


__all__ = ["DDIMScheduler", "DDPMScheduler", "DPMSolverScheduler", "NoiseSchedule", "SCHEDULERS", "make_scheduler"]
