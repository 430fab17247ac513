"""The denoiser: ``forward(x_t, t, cond) -> x0``, a small transformer over agent tokens.

Each agent token (the focal vehicle and its K neighbours, in the focal frame) carries its noisy future
controls and its condition features (current state, history); tokens attend to each other (the joint
plan) and to lane tokens (the road), and every block is modulated by the noise level (adaptive layer norm
with zero-initialised gates, as in DiT). The network knows nothing about the noise schedule: ``t`` is just
an index it embeds.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from drivediff.planner.config import PlannerConfig


def timestep_embedding(t: torch.Tensor, dim: int) -> torch.Tensor:
    """Sinusoidal embedding of (B,) timesteps -> (B, dim)."""
    half = dim // 2
    freqs = torch.exp(-math.log(10000.0) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
    args = t.float()[:, None] * freqs[None]
    return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)


def _mlp(d_in: int, d_hidden: int, d_out: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(d_in, d_hidden), nn.GELU(), nn.Linear(d_hidden, d_out))


class Block(nn.Module):
    """Self-attention over agents, cross-attention to lanes, feed-forward; noise-level modulation."""

    def __init__(self, d: int, heads: int, ff_mult: int, dropout: float):
        super().__init__()
        self.norm1 = nn.LayerNorm(d, elementwise_affine=False)
        self.attn = nn.MultiheadAttention(d, heads, dropout=dropout, batch_first=True)
        self.norm2 = nn.LayerNorm(d)
        self.cross = nn.MultiheadAttention(d, heads, dropout=dropout, batch_first=True)
        self.norm3 = nn.LayerNorm(d, elementwise_affine=False)
        self.ff = _mlp(d, ff_mult * d, d)
        self.mod = nn.Linear(d, 6 * d)
        nn.init.zeros_(self.mod.weight)
        nn.init.zeros_(self.mod.bias)

    def forward(self, x, agent_pad, lanes, lane_pad, temb):
        shift1, scale1, gate1, shift3, scale3, gate3 = self.mod(temb)[:, None].chunk(6, dim=-1)
        h = self.norm1(x) * (1 + scale1) + shift1
        x = x + gate1 * self.attn(h, h, h, key_padding_mask=agent_pad, need_weights=False)[0]
        h = self.norm2(x)
        x = x + self.cross(h, lanes, lanes, key_padding_mask=lane_pad, need_weights=False)[0]
        h = self.norm3(x) * (1 + scale3) + shift3
        return x + gate3 * self.ff(h)


class Denoiser(nn.Module):
    """x0 prediction for the normalised controls of every agent token.

    Args (forward):
        x_t: (B, A, 2H) noisy normalised controls.
        t: (B,) integer timesteps.
        cond: dict with ``agent_feat`` (B, A, F_a), ``agent_mask`` (B, A) bool, ``lane_feat`` (B, Lt, F_l),
            ``lane_mask`` (B, Lt) bool.

    Returns:
        (B, A, 2H) predicted clean controls (zero for empty agent tokens).
    """

    def __init__(self, cfg: PlannerConfig):
        super().__init__()
        d = cfg.d_model
        self.cfg = cfg
        self.agent_in = _mlp(cfg.control_dim + cfg.agent_feature_dim, 2 * d, d)
        self.lane_in = _mlp(cfg.lane_feature_dim, 2 * d, d)
        self.null_lane = nn.Parameter(torch.zeros(1, 1, d))  # always attendable: queries with no lane nearby
        self.time = _mlp(d, 2 * d, d)
        self.blocks = nn.ModuleList([Block(d, cfg.num_heads, cfg.ff_mult, cfg.dropout) for _ in range(cfg.num_layers)])
        self.out_norm = nn.LayerNorm(d)
        self.out = nn.Linear(d, cfg.control_dim)

    def forward(self, x_t: torch.Tensor, t: torch.Tensor, cond: dict) -> torch.Tensor:
        b = x_t.shape[0]
        agent_mask = cond["agent_mask"]
        x = self.agent_in(torch.cat([x_t, cond["agent_feat"]], dim=-1))
        lanes = torch.cat([self.null_lane.expand(b, -1, -1), self.lane_in(cond["lane_feat"])], dim=1)
        lane_pad = torch.cat([torch.zeros(b, 1, dtype=torch.bool, device=x.device), ~cond["lane_mask"]], dim=1)
        temb = self.time(timestep_embedding(t.reshape(-1).expand(b) if t.numel() == 1 else t, self.cfg.d_model))
        agent_pad = ~agent_mask
        for blk in self.blocks:
            x = blk(x, agent_pad, lanes, lane_pad, temb)
        return self.out(self.out_norm(x)) * agent_mask[..., None]

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())
