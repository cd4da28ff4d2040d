"""One training step of the denoiser on a CPU with its gradients written out by hand.

`denoiser_loss` + `loss.backward()` records some forty autograd nodes for a two-layer MLP and a
loss over (B,) rows; on a CPU, where each node costs its own pass and bookkeeping, that is most of
the step. `fused_denoiser_grads` runs the same forward operations in the same order (the same random
draws: t, the noise, the dropout mask), except tanh, computed as 2 sigmoid(2a) - 1 (torch's CPU
tanh is ten times slower than its sigmoid; the two agree to float rounding), and then the chain
rule in a dozen products and passes. Loss and gradients differ from autograd's by float rounding
(the order of a few sums); tests/test_fastops.py compares them.

Used by the CNSDiff sampler for its separate denoiser update on a CPU (not in joint mode, where the
loss is part of the recommender's graph).
"""
from __future__ import annotations

import functools

import torch
import torch.nn.functional as F

from .. import fastops
from .denoiser import Denoiser, timestep_embedding
from .schedule import ScheduleTensors


@torch.no_grad()
def fused_denoiser_grads(denoiser: Denoiser, sched: ScheduleTensors, z0: torch.Tensor, weights: torch.Tensor,
                         causal: str = "none", causal_weight: float = 0.0, env: torch.Tensor | None = None,
                         n_envs: int = 1, user: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """denoiser_loss(...) on detached z0 (B, d), its gradients accumulated into the denoiser's
    parameters' .grad (as loss.backward() would). Returns the loss parts (0-d tensors)."""
    B, d = z0.shape
    T = sched.steps
    td = denoiser.time_dim
    # --- forward: denoiser_loss and Denoiser.forward, operation for operation ------------------
    t = torch.randint(1, T + 1, (B,), device=z0.device)
    eps = torch.randn(z0.shape, device=z0.device)
    zt = sched.add_noise(z0, t, eps)
    h = F.normalize(zt, dim=-1)
    p = denoiser.dropout.p
    if denoiser.training and p > 0:  # Denoiser._dropout's draw: (h * keep) * 1/(1-p), in one pass after it
        h = torch.where(torch.rand_like(h) >= p, h * (1.0 / (1.0 - p)), 0.0)
    W = denoiser.hidden.weight  # (H, d + td [+ d])
    emb = _embedding(T, td, z0.device)  # (T+1, td), the same values Denoiser.forward computes
    proj = denoiser.time_proj(emb)  # (T+1, td)
    w_t = W[:, d:d + td]
    table = proj @ w_t.T  # (T+1, H)
    pre = fastops.linear(h, W[:, :d], denoiser.hidden.bias) + table[t]
    un = None
    if denoiser.condition_on_user:
        if user is None:
            raise ValueError("this denoiser is conditioned on the user; pass the user embedding.")
        un = F.normalize(user, dim=-1)
        pre = pre + F.linear(un, W[:, d + td:])
    a = pre.mul_(2).sigmoid_().mul_(2).sub_(1)  # tanh(pre) = 2 sigmoid(2 pre) - 1 (CPU tanh: 10x slower), (B, H)
    w_o = denoiser.out.weight  # (d, H)
    z0_hat = fastops.linear(a, w_o, denoiser.out.bias)
    mse = ((z0 - z0_hat) ** 2).mean(-1)  # (B,)
    w_row = weights[t]
    loss = (w_row * mse).mean()
    parts = {"denoise": loss}
    g_mse = w_row / B  # d loss / d mse
    g_kl = None
    if causal == "kl" and causal_weight > 0:
        z_prev = sched.add_noise(z0, t - 1, eps)
        var_t = torch.exp(sched.post_log_var[t])
        var_prev = torch.where(t - 1 > 0, torch.exp(sched.post_log_var[(t - 1).clamp(min=1)]),
                               torch.ones_like(var_t))
        gap = z0_hat - z_prev
        kl = 0.5 * (torch.log(var_prev / var_t).unsqueeze(-1)
                    + (var_t.unsqueeze(-1) + gap ** 2) / var_prev.unsqueeze(-1) - 1)
        parts["causal"] = kl.mean()
        g_kl = gap.div_(var_prev.unsqueeze(-1)).mul_(causal_weight / (B * d))  # d(cw * mean kl)/d z0_hat
    elif causal == "env-variance" and causal_weight > 0 and env is not None:
        reg, g_reg = _env_variance_and_grad(mse, t, env, n_envs, T)
        parts["causal"] = reg
        g_mse = g_mse + causal_weight * g_reg
    # --- backward -------------------------------------------------------------------------------
    g_out = (z0_hat - z0).mul_((g_mse * (2.0 / d)).unsqueeze(-1))  # (B, d): d loss / d z0_hat
    if g_kl is not None:
        g_out.add_(g_kl)
    g_w_o = fastops.mm(g_out.T, a)  # (d, H)
    g_b_o = g_out.sum(0)
    g_pre = fastops.mm(g_out, w_o).mul_(1 - a * a)  # (B, H), through tanh
    g_w_h = fastops.mm(g_pre.T, h)  # (H, d)
    g_b_h = g_pre.sum(0)
    g_table = torch.zeros((T + 1, g_pre.shape[1]), dtype=g_pre.dtype, device=g_pre.device).index_add_(0, t, g_pre)
    g_w_t = g_table.T @ proj  # (H, td)
    g_proj = g_table @ w_t  # (T+1, td)
    pieces = [g_w_h, g_w_t]
    if un is not None:
        pieces.append(fastops.mm(g_pre.T, un))
    _accumulate(denoiser.hidden.weight, torch.cat(pieces, 1))
    _accumulate(denoiser.hidden.bias, g_b_h)
    _accumulate(denoiser.out.weight, g_w_o)
    _accumulate(denoiser.out.bias, g_b_o)
    _accumulate(denoiser.time_proj.weight, g_proj.T @ emb)
    _accumulate(denoiser.time_proj.bias, g_proj.sum(0))
    return parts


@functools.lru_cache(maxsize=8)
def _embedding(steps: int, dim: int, device: torch.device) -> torch.Tensor:
    return timestep_embedding(torch.arange(steps + 1, device=device), dim)


def _accumulate(param: torch.Tensor, grad: torch.Tensor) -> None:
    if param.grad is None:
        param.grad = grad.contiguous()
    else:
        param.grad.add_(grad)


def _env_variance_and_grad(per: torch.Tensor, t: torch.Tensor, env: torch.Tensor, n_envs: int, steps: int):
    """process.env_variance (the same operations) and its gradient with respect to `per` (B,).

    With m_t the detached per-t mean, c_e the count and mu_e the mean ratio of environment e, P the
    environments present and mu their mean: d reg / d per_i = 2 (mu_e - mu) / (P c_e m_t) for row i
    in environment e at step t (the derivative through mu sums to zero)."""
    dev = per.device
    ones = torch.ones_like(per)
    t_sum = torch.zeros(steps + 1, device=dev).index_add_(0, t, per)
    t_cnt = torch.zeros(steps + 1, device=dev).index_add_(0, t, ones)
    m_row = (t_sum / t_cnt.clamp(min=1)).clamp(min=1e-12)[t]
    ratio = per / m_row
    sums = torch.zeros(n_envs, device=dev).index_add_(0, env, ratio)
    counts = torch.zeros(n_envs, device=dev).index_add_(0, env, ones)
    present = counts > 0
    n_present = present.sum().clamp(min=1)
    env_means = torch.where(present, sums / counts.clamp(min=1), torch.zeros_like(sums))
    mean_of_means = env_means.sum() / n_present
    dev_e = torch.where(present, env_means - mean_of_means, torch.zeros_like(sums))
    reg = (dev_e ** 2).sum() / n_present
    g_env = 2 * dev_e / n_present / counts.clamp(min=1)  # (n_envs,)
    return reg, g_env[env] / m_row
