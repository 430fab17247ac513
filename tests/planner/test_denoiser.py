"""The denoiser: size, masking and permutation equivariance over neighbour tokens."""

import pytest
import torch

from drivediff.planner.config import PlannerConfig
from drivediff.planner.denoiser import Denoiser


def _cond(cfg, b=3, seed=0, empty="last2"):
    """empty: which agent tokens are empty: "last2", "none" (every token present) or "ragged" (a different
    number per row, down to the focal vehicle alone)."""
    g = torch.Generator().manual_seed(seed)
    mask = torch.ones(b, cfg.num_agents, dtype=torch.bool)
    if empty == "last2":
        mask[:, -2:] = False
    elif empty == "ragged":
        mask[:, 1:] = torch.rand(b, cfg.num_agents - 1, generator=g) < 0.5
        mask[0, 1:] = False
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


def _reference_block(blk, x, agent_pad, lanes, lane_pad, temb):
    """The block written with torch's own nn.MultiheadAttention calls (the layers' modules, the textbook
    path), to check the cached, hand-written attention against."""
    shift1, scale1, gate1, shift3, scale3, gate3 = blk.mod(temb)[:, None].chunk(6, dim=-1)
    h = blk.norm1(x) * (1 + scale1) + shift1
    x = x + gate1 * blk.attn(h, h, h, key_padding_mask=agent_pad, need_weights=False)[0]
    h = blk.norm2(x)
    x = x + blk.cross(h, lanes, lanes, key_padding_mask=lane_pad, need_weights=False)[0]
    h = blk.norm3(x) * (1 + scale3) + shift3
    return x + gate3 * blk.ff(h)


def _reference_forward(model, x_t, t, cond):
    from drivediff.planner.denoiser import timestep_embedding

    b = x_t.shape[0]
    x = model.agent_in(torch.cat([x_t, cond["agent_feat"]], dim=-1))
    lanes = torch.cat([model.null_lane.expand(b, -1, -1), model.lane_in(cond["lane_feat"])], dim=1)
    lane_pad = torch.cat([torch.zeros(b, 1, dtype=torch.bool), ~cond["lane_mask"]], dim=1)
    temb = model.time(timestep_embedding(t, model.cfg.d_model))
    for blk in model.blocks:
        x = _reference_block(blk, x, ~cond["agent_mask"], lanes, lane_pad, temb)
    return model.out(model.out_norm(x)) * cond["agent_mask"][..., None]


def _nontrivial(cfg, seed=0):
    torch.manual_seed(seed)
    model = Denoiser(cfg).eval()
    with torch.no_grad():  # the zero-initialised modulation and null lane would hide mistakes
        for blk in model.blocks:
            blk.mod.weight.normal_(0, 0.05)
            blk.mod.bias.normal_(0, 0.05)
        model.null_lane.normal_()
    return model


@pytest.mark.parametrize("empty", ["last2", "none", "ragged"])
def test_forward_matches_torch_multihead_attention(empty):
    """The packed forward (per-token layers on the present tokens only) against the textbook padded one."""
    cfg = PlannerConfig()
    model = _nontrivial(cfg)
    cond = _cond(cfg, b=5, empty=empty)
    x = torch.randn(5, cfg.num_agents, cfg.control_dim)
    t = torch.tensor([3, 17, 40, 77, 99])
    with torch.no_grad():
        torch.testing.assert_close(model(x, t, cond), _reference_forward(model, x, t, cond), atol=2e-5, rtol=1e-4)


def test_a_prepared_condition_gives_the_plain_call():
    """Sampling prepares the condition once for all candidates and steps; the result is the plain call on
    the condition repeated per candidate."""
    from drivediff.planner.sampler import repeat_cond

    cfg = PlannerConfig()
    model = _nontrivial(cfg, seed=1)
    cond = _cond(cfg, b=3, seed=2, empty="ragged")
    c = 4
    x = torch.randn(3 * c, cfg.num_agents, cfg.control_dim)
    with torch.no_grad():
        prepared = model.prepare(cond, c)
        for t in (2, 55, 98):
            plain = model(x, torch.full((3 * c,), t), repeat_cond(cond, c))
            torch.testing.assert_close(model(x, torch.tensor(t), prepared), plain, atol=2e-5, rtol=1e-4)
    # and gradients flow to the noisy input through the prepared path (classifier guidance)
    xg = x.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(model(xg, torch.tensor(30), prepared).square().sum(), xg)
    assert torch.isfinite(grad).all() and grad.abs().sum() > 0
