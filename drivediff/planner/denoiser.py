"""The denoiser: ``forward(x_t, t, cond) -> x0``, a small transformer over agent tokens.

Each agent token (the focal vehicle and its K neighbours, in the focal frame) carries its noisy future
controls and its condition features (current state, history); tokens attend to each other (the joint
plan) and to lane tokens (the road), and every block is modulated by the noise level (adaptive layer norm
with zero-initialised gates, as in DiT). The network knows nothing about the noise schedule: ``t`` is just
an index it embeds.

Sampling calls the network 5-20 times on the same condition, for several candidates of every query. What
depends on the condition alone is therefore computed once per query by :meth:`Denoiser.prepare` (the lane
tokens and their cross-attention keys and values, the condition's share of the agent embedding), and
every denoising step then runs only on the noisy controls; candidates of one query share the cached
lane keys. ``forward`` with a plain condition dict is ``prepare`` with one candidate followed by the same
steps, so training and sampling run the same code.

Empty agent tokens (fewer than K neighbours within sensor range) are not computed: the per-token layers
(embedding, projections, layer norms, feed-forward) run on the present tokens only, packed into one
(P, d) matrix, and only attention sees them in their (rows, agents) layout. An empty token cannot change
a present one (attention masks it as a key), so this is the same network at a fraction of the cost: on the
8-vehicle highway scene of ``drivediff bench planner`` 55% of the tokens are present.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
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


def _split(x: torch.Tensor, parts: int, h: int) -> torch.Tensor:
    """(B, T, parts * d) projections -> (parts, B * h, T, d / h): every head of every row a batch entry
    (one copy for all parts)."""
    b, t, pd = x.shape
    return x.reshape(b, t, parts, h, pd // (parts * h)).permute(2, 0, 3, 1, 4).reshape(parts, b * h, t, -1)


def _merge(x: torch.Tensor, h: int) -> torch.Tensor:
    """(B * h, T, dh) -> (B, T, h * dh)."""
    bh, t, dh = x.shape
    return x.reshape(bh // h, h, t, dh).transpose(1, 2).reshape(bh // h, t, h * dh)


def _bias(keep: torch.Tensor, h: int) -> torch.Tensor:
    """(B, L) keys to attend to -> (B * h, 1, L) additive attention bias (0 or -inf)."""
    bias = torch.zeros(keep.shape, device=keep.device).masked_fill(~keep, float("-inf"))
    return bias.repeat_interleave(h, dim=0)[:, None, :]


def attend(q: torch.Tensor, k_t: torch.Tensor, v: torch.Tensor, bias: torch.Tensor, dropout: float = 0.0):
    """Softmax attention: (N, T, dh) queries, (N, dh, L) transposed keys, (N, L, dh) values, (N, 1, L)
    additive bias. Written out because PyTorch's fused CPU attention kernels (and its softmax) cost several
    times more than these few operations on sequences of 7-8 tokens."""
    s = torch.baddbmm(bias, q, k_t, alpha=q.shape[-1] ** -0.5)
    e = torch.exp(s - s.amax(dim=-1, keepdim=True))
    w = e / e.sum(dim=-1, keepdim=True)
    if dropout > 0:
        w = F.dropout(w, dropout)
    return torch.bmm(w, v)


@dataclass
class PreparedCondition:
    """What the denoiser computes once per query and reuses at every denoising step.

    Rows of the noisy input are ``Q * repeats`` (the candidates of a query are consecutive rows, as made by
    ``repeat_interleave``); attention tensors are head-major (row * heads + head).
    """

    repeats: int
    agent_mask: torch.Tensor  # (Q*R, A) bool
    agent_bias: torch.Tensor  # (Q*R*h, 1, A) attention bias: 0 for present agents, -inf for empty tokens
    agent_cond: torch.Tensor  # (P, 2d) the condition's share of the first agent-embedding layer, per present token
    lane_kv: list  # per block: transposed keys (Q*h, dh, 1 + Lt) and values (Q*h, 1 + Lt, dh) of the lanes
    lane_bias: torch.Tensor  # (Q*h, 1, 1 + Lt) the same for the lane tokens (the null lane first)
    index: torch.Tensor | None  # (P,) flat index (row * A + agent) of the present tokens; None: all present
    token_row: torch.Tensor  # (P,) the row of each present token

    def pack(self, x: torch.Tensor) -> torch.Tensor:
        """(Q*R, A, c) -> (P, c): the present tokens."""
        x = x.reshape(-1, x.shape[-1])
        return x if self.index is None else x.index_select(0, self.index)

    def unpack(self, x: torch.Tensor) -> torch.Tensor:
        """(P, c) -> (Q*R, A, c), zeros at the empty tokens."""
        n, a = self.agent_mask.shape
        if self.index is not None:
            x = x.new_zeros((n * a, x.shape[-1])).index_copy_(0, self.index, x)
        return x.reshape(n, a, -1)


class Block(nn.Module):
    """Self-attention over agents, cross-attention to lanes, feed-forward; noise-level modulation.

    The attention weights live in ``nn.MultiheadAttention`` modules (packed in-projection, out-projection);
    the forward pass uses them directly so that the lane keys and values can be cached across steps.
    """

    def __init__(self, d: int, heads: int, ff_mult: int, dropout: float):
        super().__init__()
        self.heads = heads
        self.dropout = dropout
        self.norm1 = nn.LayerNorm(d, elementwise_affine=False)
        self.attn = nn.MultiheadAttention(d, heads, dropout=dropout, batch_first=True)
        self.norm2 = nn.LayerNorm(d)
        self.cross = nn.MultiheadAttention(d, heads, dropout=dropout, batch_first=True)
        self.norm3 = nn.LayerNorm(d, elementwise_affine=False)
        self.ff = _mlp(d, ff_mult * d, d)
        self.mod = nn.Linear(d, 6 * d)
        nn.init.zeros_(self.mod.weight)
        nn.init.zeros_(self.mod.bias)

    def lane_kv(self, lanes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Cross-attention keys (transposed) and values of the lane tokens (B, Lt, d)."""
        d = lanes.shape[-1]
        k, v = _split(F.linear(lanes, self.cross.in_proj_weight[d:], self.cross.in_proj_bias[d:]), 2, self.heads)
        return k.transpose(1, 2).contiguous(), v

    def forward(self, x: torch.Tensor, temb: torch.Tensor, pc: PreparedCondition, lane_kv) -> torch.Tensor:
        """x (P, d) present agent tokens, temb (B or 1, d), lane_kv: this block's entry of ``pc.lane_kv``."""
        d = x.shape[-1]
        h = self.heads
        p = self.dropout if self.training else 0.0
        mod = self.mod(temb)
        if mod.shape[0] > 1:  # a noise level per row (training)
            mod = mod.index_select(0, pc.token_row)
        shift1, scale1, gate1, shift3, scale3, gate3 = mod.chunk(6, dim=-1)
        # self-attention over the agent tokens of each row
        y = self.norm1(x) * (1 + scale1) + shift1
        q, k, v = _split(pc.unpack(F.linear(y, self.attn.in_proj_weight, self.attn.in_proj_bias)), 3, h)
        y = pc.pack(_merge(attend(q, k.transpose(1, 2), v, pc.agent_bias, p), h))
        x = x + gate1 * self.attn.out_proj(y)
        # cross-attention to the lanes: the candidates of a query share its cached keys and values
        y = pc.unpack(F.linear(self.norm2(x), self.cross.in_proj_weight[:d], self.cross.in_proj_bias[:d]))
        q = _split(y.reshape(-1, pc.repeats * y.shape[1], d), 1, h)[0]
        k_t, v = lane_kv
        y = pc.pack(_merge(attend(q, k_t, v, pc.lane_bias, p), h))
        x = x + self.cross.out_proj(y)
        y = self.norm3(x) * (1 + scale3) + shift3
        return x + gate3 * self.ff(y)


class Denoiser(nn.Module):
    """x0 prediction for the normalised controls of every agent token.

    Args (forward):
        x_t: (B, A, 2H) noisy normalised controls.
        t: (B,) integer timesteps, or one timestep (a scalar or (1,)) shared by every row.
        cond: dict with ``agent_feat`` (B, A, F_a), ``agent_mask`` (B, A) bool, ``lane_feat`` (B, Lt, F_l),
            ``lane_mask`` (B, Lt) bool; or a :class:`PreparedCondition` from :meth:`prepare`.

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

    def prepare(self, cond: dict, repeats: int = 1) -> PreparedCondition:
        """Everything that depends on the condition of Q queries only, for inputs of Q * ``repeats`` rows
        (each query's candidates consecutive)."""
        b = cond["agent_feat"].shape[0]
        nc = self.cfg.control_dim
        lanes = torch.cat([self.null_lane.expand(b, -1, -1), self.lane_in(cond["lane_feat"])], dim=1)
        lane_keep = torch.cat([torch.ones(b, 1, dtype=torch.bool, device=lanes.device), cond["lane_mask"]], dim=1)
        h = self.cfg.num_heads
        first = self.agent_in[0]
        mask = cond["agent_mask"].repeat_interleave(repeats, dim=0) if repeats > 1 else cond["agent_mask"]
        a = mask.shape[1]
        flat = mask.reshape(-1)
        full = bool(flat.all())
        present = torch.arange(flat.numel(), device=flat.device) if full else torch.nonzero(flat).flatten()
        token_row = present // a
        # the condition's share of the first layer, once per query token, then a copy for every present token
        # of the query's candidates
        agent_cond = F.linear(cond["agent_feat"], first.weight[:, nc:], first.bias).reshape(-1, first.out_features)
        agent_cond = agent_cond.index_select(0, (token_row // repeats) * a + present % a)  # (P, 2d)
        return PreparedCondition(repeats=repeats, agent_mask=mask, agent_bias=_bias(mask, h), agent_cond=agent_cond,
                                 lane_kv=[blk.lane_kv(lanes) for blk in self.blocks], lane_bias=_bias(lane_keep, h),
                                 index=None if full else present, token_row=token_row)

    def forward(self, x_t: torch.Tensor, t: torch.Tensor, cond: dict | PreparedCondition) -> torch.Tensor:
        pc = cond if isinstance(cond, PreparedCondition) else self.prepare(cond)
        first = self.agent_in[0]
        h = F.linear(pc.pack(x_t), first.weight[:, :self.cfg.control_dim]) + pc.agent_cond  # (P, 2d)
        x = self.agent_in[2](self.agent_in[1](h))
        t = torch.as_tensor(t, device=x_t.device).reshape(-1)
        temb = self.time(timestep_embedding(t, self.cfg.d_model))  # (B, d), or (1, d) shared by every row
        for blk, lane_kv in zip(self.blocks, pc.lane_kv, strict=True):
            x = blk(x, temb, pc, lane_kv)
        return pc.unpack(self.out(self.out_norm(x)))

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())
