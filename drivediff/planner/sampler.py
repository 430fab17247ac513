"""The sampling loop, written out as a plain function: denoiser -> (inpainting) -> (guidance) -> scheduler.

Several candidates are drawn per query (stacked on the batch axis); a *selector* then picks one per query.
Selectors are a small registry so that the safety issue's cost-based selection plugs in without touching
this loop: ``register_selector(name)(fn)`` with ``fn(plans, ctx) -> (Q,) int``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from drivediff.planner.schedulers import NoiseSchedule, make_scheduler


@dataclass(frozen=True)
class SamplerConfig:
    scheduler: str = "dpm"  # dpm | ddim | ddpm
    steps: int = 10
    candidates: int = 4
    eta: float = 0.0  # DDIM stochasticity
    selector: str = "medoid"


@dataclass
class Inpaint:
    """Known rows of x0 held fixed during denoising (communication mode: neighbours' shared plans).

    value: (B, A, D) normalised controls; mask: (B, A) bool, True where the row is known.
    """

    value: torch.Tensor
    mask: torch.Tensor


def repeat_cond(cond: dict, c: int) -> dict:
    """Repeat every (Q, ...) tensor of a condition C times along the batch axis -> (Q*C, ...)."""
    return {k: v.repeat_interleave(c, dim=0) if torch.is_tensor(v) else v for k, v in cond.items()}


@torch.no_grad()
def sample(model, schedule: NoiseSchedule, cond: dict, scfg: SamplerConfig, generator=None,
           inpaint: Inpaint | None = None, guidance: Callable | None = None) -> torch.Tensor:
    """Draw ``scfg.candidates`` plans per query.

    Args:
        model: the denoiser: ``model.prepare(cond, candidates)`` once, then ``model(x_t, t, prepared) -> x0``
            at every step (:class:`~drivediff.planner.denoiser.Denoiser`).
        cond: condition tensors of Q queries (already on the model's device).
        inpaint: optional known rows, per query (Q, ...) (repeated over candidates here).
        guidance: optional ``guidance(x0, t, i, cond) -> x0`` applied to every clean estimate (the safety
            issue's cost gradients); runs with gradients enabled if it needs them.

    Returns:
        (Q, C, A, D) normalised clean controls.
    """
    q = cond["agent_feat"].shape[0]
    c = scfg.candidates
    a = cond["agent_feat"].shape[1]
    d = model.cfg.control_dim
    condc = repeat_cond(cond, c) if guidance is not None else None  # the hook sees one row per candidate
    prepared = model.prepare(cond, c)  # the condition's share of the network, once for every step
    dev = cond["agent_feat"].device
    x = torch.randn((q * c, a, d), generator=generator, device=dev)
    known = None
    if inpaint is not None:
        known = (inpaint.value.repeat_interleave(c, 0), inpaint.mask.repeat_interleave(c, 0)[..., None])
        t0 = torch.full((q * c,), schedule.num_timesteps - 1, device=dev)
        x = torch.where(known[1], schedule.add_noise(known[0], x, t0).float(), x)
    sched = make_scheduler(scfg.scheduler, schedule, **({"eta": scfg.eta} if scfg.scheduler == "ddim" else {}))
    sched.set_timesteps(scfg.steps)
    x0 = x
    for i, t in enumerate(sched.timesteps):
        x0 = model(x, torch.tensor(t, device=dev), prepared)  # every row at the same noise level
        if known is not None:
            x0 = torch.where(known[1], known[0], x0)
        if guidance is not None:
            with torch.enable_grad():
                x0 = guidance(x0, t, i, condc)
        x = sched.step(x0, i, x, generator).float()
    return x.reshape(q, c, a, d) * cond["agent_mask"][:, None, :, None]


SELECTORS: dict[str, Callable] = {}


def register_selector(name: str):
    def wrap(fn):
        SELECTORS[name] = fn
        return fn
    return wrap


@register_selector("first")
def select_first(plans: torch.Tensor, ctx: dict) -> torch.Tensor:
    return torch.zeros(plans.shape[0], dtype=torch.long, device=plans.device)


@register_selector("medoid")
def select_medoid(plans: torch.Tensor, ctx: dict) -> torch.Tensor:
    """The candidate whose focal-vehicle plan is closest on average to the others' (the most typical one)."""
    focal = plans[:, :, 0]  # (Q, C, D)
    dist = torch.cdist(focal, focal)  # (Q, C, C)
    return dist.mean(dim=-1).argmin(dim=-1)


def select(name: str, plans: torch.Tensor, ctx: dict) -> torch.Tensor:
    try:
        fn = SELECTORS[name]
    except KeyError:
        raise ValueError(f"unknown selector {name!r}; registered: {sorted(SELECTORS)}") from None
    return fn(plans, ctx)
