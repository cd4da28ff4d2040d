"""The MLP denoiser f_theta(z_t, t) that predicts z_0 (reference architecture, METHOD.md), and its
folded form for fast reverse chains on a CPU."""
from __future__ import annotations

import math
from typing import TYPE_CHECKING

import torch
from torch import nn
import torch.nn.functional as F

from .. import fastops

if TYPE_CHECKING:
    from .schedule import ScheduleTensors

TIME_DIM = 64  # width of the timestep embedding (the reference architecture's)


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

    def __init__(self, dim: int = 64, hidden: int = 64, time_dim: int = TIME_DIM, dropout: float = 0.5,
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

    @classmethod
    def from_config(cls, cfg) -> "Denoiser":
        """The denoiser a run's config describes (dim, denoiser_hidden, denoiser_dropout,
        condition_on_user), freshly initialized from torch's global RNG."""
        return cls(cfg.dim, cfg.denoiser_hidden, TIME_DIM, cfg.denoiser_dropout, cfg.condition_on_user)

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

    @torch.no_grad()
    def folded(self, sched: ScheduleTensors, t_max: int, user: torch.Tensor | None = None) -> "FoldedStep":
        """These layers and the schedule's reverse step (`ScheduleTensors.step`) folded into a few
        in-place CPU operations per step, for steps 1..t_max and a fixed batch of users (eval mode:
        no dropout). tests/test_schedule.py checks it equals the plain module step by step.

        Per step: h = z/||z|| -> pre = h W_h + table[t] (+ user term) -> tanh -> z0_hat = pre W_o +
        b_o -> z_{t-1} = c1[t] z0_hat + c2[t] z_t. Rearranged: 1/||z|| is applied after the matmul,
        the time embedding and hidden bias come from one (t_max + 1, H) table, tanh(a) = 2 sigmoid(2a)
        - 1 with the 2s and the -1 folded into the weights (torch's CPU tanh is about 5x slower than
        its sigmoid), c1 folded into the output matmul: about six passes over a (B, d) block, which
        stays in cache."""
        d, td = self.out.out_features, self.time_dim
        W = self.hidden.weight
        table = 2 * (self.time_proj(timestep_embedding(torch.arange(t_max + 1), td)) @ W[:, d:d + td].T
                     + self.hidden.bias)  # (t_max + 1, H), doubled for the sigmoid form of tanh
        w_o = self.out.weight.T  # (H, d)
        b_o = self.out.bias - w_o.sum(0)  # the -1 of 2 sigmoid - 1, through the output layer
        u_term = None
        if self.condition_on_user:
            if user is None:
                raise ValueError("this denoiser is conditioned on the user; pass the user embedding.")
            u_term = 2 * F.linear(F.normalize(user, dim=-1), W[:, d + td:])  # (B, H), the same at every step
        return FoldedStep(table, 2 * W[:, :d].T, 2 * w_o, b_o, u_term, sched.coef1.tolist(), sched.coef2.tolist(),
                          torch.exp(0.5 * sched.post_log_var).tolist(), t_max)


class FoldedStep:
    """`Denoiser.folded`: call it with z_t (B, d) and a step t to get z_{t-1} (a new tensor)."""

    def __init__(self, table, w_h, w_o, b_o, u_term, c1: list[float], c2: list[float], std: list[float],
                 t_max: int | None = None) -> None:
        self.table, self.w_h, self.w_o, self.b_o, self.u_term = table, w_h, w_o, b_o, u_term
        self.c1, self.c2, self.std = c1, c2, std
        # the output matmul's c1[t] * w_o, once per step value: fastops.addmm is then bit for bit
        # torch.addmm (which scales that operand by alpha), on oneDNN
        t_max = len(c1) - 1 if t_max is None else t_max
        self.w_o_scaled = {t: (w_o * c1[t]).T for t in range(1, t_max + 1)}

    @torch.no_grad()
    def __call__(self, x: torch.Tensor, t: int, noise: torch.Tensor | None = None) -> torch.Tensor:
        """noise: standard normal (B, d), added times sigma_t where t > 1 (posterior sampling)."""
        inv_norm = x.norm(dim=-1, keepdim=True).clamp_min_(1e-12).reciprocal_()
        pre = fastops.mm(x, self.w_h).mul_(inv_norm).add_(self.table[t])
        if self.u_term is not None:
            pre.add_(self.u_term)
        x = fastops.addmm(x, pre.sigmoid_(), self.w_o, beta=self.c2[t], alpha=self.c1[t],
                          b_scaled_t=self.w_o_scaled.get(t)).add_(self.b_o, alpha=self.c1[t])
        if noise is not None and t > 1:
            x.add_(noise, alpha=self.std[t])
        return x
