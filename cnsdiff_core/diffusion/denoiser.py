"""The MLP denoiser f_theta(z_t, t) that predicts z_0 (reference architecture, METHOD.md)."""
from __future__ import annotations

import math

import torch
from torch import nn
import torch.nn.functional as F

from .. import fastops


def timestep_embedding(t: torch.Tensor, dim: int = 64, max_period: float = 10000.0) -> torch.Tensor:
    """(B,) integer steps -> (B, dim) sinusoidal embedding (Vaswani et al. 2017, sec. 3.5)."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
    args = t.float().unsqueeze(-1) * freqs  # (B, half)
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    if dim % 2:
        emb = torch.cat([emb, torch.zeros_like(emb[:, :1])], dim=-1)
    return emb


class Denoiser(nn.Module):
    """normalize(z_t) -> dropout -> [ . , W_t emb(t) (, e_u)] -> Linear + tanh -> Linear -> z0_hat."""

    def __init__(self, dim: int = 64, hidden: int = 64, time_dim: int = 64, dropout: float = 0.5,
                 condition_on_user: bool = False) -> None:
        super().__init__()
        self.time_dim = time_dim
        self.condition_on_user = condition_on_user
        self.time_proj = nn.Linear(time_dim, time_dim)
        in_dim = dim + time_dim + (dim if condition_on_user else 0)
        self.hidden = nn.Linear(in_dim, hidden)
        self.out = nn.Linear(hidden, dim)
        self.dropout = nn.Dropout(dropout)
        for layer in (self.time_proj, self.hidden, self.out):
            nn.init.xavier_normal_(layer.weight)
            nn.init.normal_(layer.bias, std=0.001)

    def _dropout(self, h: torch.Tensor) -> torch.Tensor:
        p = self.dropout.p
        if not self.training or p == 0 or h.device.type != "cpu":
            return self.dropout(h)
        # the same inverted dropout; on CPU a uniform draw and a comparison is about 3x faster than
        # the bernoulli_ draw F.dropout makes (a third of the denoiser's update time)
        return h * (torch.rand_like(h) >= p).to(h.dtype) * (1.0 / (1.0 - p))

    def forward(self, zt: torch.Tensor, t: torch.Tensor, user: torch.Tensor | None = None,
                t_max: int | None = None) -> torch.Tensor:
        # zt: (B, d); t: (B,) long; user: (B, d) or None; t_max: an upper bound of t (callers that
        # know it pass it: no host sync to find it).
        # Same maths as Linear(cat[h, W_t emb(t), u]) but the time part is computed once per step
        # value (a (t_max+1, hidden) table) instead of once per row: no (B, d+64) concatenation.
        h = self._dropout(F.normalize(zt, dim=-1))
        d = zt.shape[-1]
        W = self.hidden.weight  # (H, d + time_dim [+ d])
        if t_max is None:
            t_max = int(t.max()) if t.numel() else 0
        steps = torch.arange(t_max + 1, device=zt.device)
        time_table = self.time_proj(timestep_embedding(steps, self.time_dim)) @ W[:, d:d + self.time_dim].T
        pre = fastops.linear(h, W[:, :d], self.hidden.bias) + time_table[t]  # (B, H)
        if self.condition_on_user:
            if user is None:
                raise ValueError("this denoiser is conditioned on the user; pass the user embedding.")
            pre = pre + F.linear(F.normalize(user, dim=-1), W[:, d + self.time_dim:])
        return fastops.linear(torch.tanh(pre), self.out.weight, self.out.bias)
