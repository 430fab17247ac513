"""The denoiser: size, masking and permutation equivariance over neighbour tokens."""

import torch

from drivediff.planner.config import PlannerConfig
from drivediff.planner.denoiser import Denoiser


def _cond(cfg, b=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    mask = torch.ones(b, cfg.num_agents, dtype=torch.bool)
    mask[:, -2:] = False
    lane_mask = torch.ones(b, cfg.num_lanes, dtype=torch.bool)
    lane_mask[0] = False  # a query with no lane around: the null lane token keeps attention defined
    return {"agent_feat": torch.randn(b, cfg.num_agents, cfg.agent_feature_dim, generator=g),
            "agent_mask": mask, "lane_feat": torch.randn(b, cfg.num_lanes, cfg.lane_feature_dim, generator=g),
            "lane_mask": lane_mask}


def test_size_and_masking():
    cfg = PlannerConfig()
    model = Denoiser(cfg).eval()
    assert 250_000 <= model.num_parameters() <= 1_000_000
    cond = _cond(cfg)
    x = torch.randn(3, cfg.num_agents, cfg.control_dim)
    out = model(x, torch.tensor([5, 50, 99]), cond)
    assert out.shape == x.shape and torch.isfinite(out).all()
    assert (out[:, -2:] == 0).all()  # empty tokens give nothing
    # the content of empty tokens does not influence the others
    x2, cond2 = x.clone(), {k: v.clone() for k, v in cond.items()}
    x2[:, -2:] = 100.0
    cond2["agent_feat"][:, -2:] = -100.0
    torch.testing.assert_close(model(x2, torch.tensor([5, 50, 99]), cond2), out)


def test_neighbour_permutation_equivariance():
    torch.manual_seed(0)
    cfg = PlannerConfig()
    model = Denoiser(cfg).eval()
    with torch.no_grad():  # make the zero-initialised modulation non-trivial
        for blk in model.blocks:
            blk.mod.weight.normal_(0, 0.05)
    cond = _cond(cfg)
    x = torch.randn(3, cfg.num_agents, cfg.control_dim)
    t = torch.tensor([10, 20, 30])
    perm = torch.tensor([0, 3, 1, 2, 5, 4, 6, 7])
    out = model(x, t, cond)
    cond_p = {k: (v[:, perm] if k.startswith("agent") else v) for k, v in cond.items()}
    out_p = model(x[:, perm], t, cond_p)
    torch.testing.assert_close(out_p, out[:, perm], atol=1e-5, rtol=1e-5)
    # and the noise level matters
    assert not torch.allclose(model(x, torch.tensor([90, 90, 90]), cond), out)
