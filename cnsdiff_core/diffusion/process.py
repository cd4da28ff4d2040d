"""Forward noising, reverse denoising, negative synthesis and the denoiser's objective.

These functions are shared by the CNSDiff sampler (batched, during training), the app's
denoising stepper (one recorded trajectory) and the schedule lab (denoiser refit).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

import torch.nn.functional as F

from .. import fastops
from .denoiser import Denoiser, timestep_embedding
from .schedule import ScheduleTensors


def reverse_chain(denoiser: Denoiser, sched: ScheduleTensors, zs: torch.Tensor, s: int, r: int,
                  user: torch.Tensor | None = None, reverse_from_T: bool = False,
                  posterior_noise: bool = False, generator: torch.Generator | None = None,
                  record: bool = False):
    """Run the reverse process from step s down to step r. zs: (B, d).

    With `reverse_from_T` the timesteps fed to the denoiser run T..1 whatever s was (the
    reference code's behaviour, METHOD.md item 2). Returns z_r, or (z_r, records) when `record`.
    """
    x = zs
    records = []
    ts = list(range(sched.steps, 0, -1)) if reverse_from_T else list(range(s, r, -1))
    for t in ts:
        tt = torch.full((x.shape[0],), t, dtype=torch.long, device=x.device)
        z0_hat = denoiser(x, tt, user)
        mean = sched.posterior_mean(z0_hat, x, tt)
        if posterior_noise and t > 1:
            noise = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
            mean = mean + torch.exp(0.5 * sched.post_log_var[t]) * noise
        if record:
            records.append((t, x, z0_hat, mean))
        x = mean
    return (x, records) if record else x


def synthesize_candidates(denoiser: Denoiser, sched: ScheduleTensors, z0: torch.Tensor,
                          steps: list[int], stops: list[int], noise: torch.Tensor,
                          user: torch.Tensor | None = None, reverse_from_T: bool = False,
                          posterior_noise: bool = False, generator=None,
                          folded: bool | None = None) -> torch.Tensor:
    """(B, d) positives -> (B, S, d) candidates: noise to each s, denoise down to its stop r.

    noise: (S, B, d) standard normal, one draw per step (from the caller, for reproducibility).
    On CUDA all S chains run as one (S*B, d) batch, one denoiser call per reverse step (few, large
    kernels); a chain that has reached its stop keeps its state. On CPU an eval-mode denoiser runs
    each chain on its own with the layers folded into a few in-place operations
    (`_cpu_candidates`), so a chain's state stays in cache. Both give what reverse_chain gives for
    each step (with posterior_noise: the same distribution, from different draws). folded: force
    the one (True) or the other (False) path; None: folded on a CPU.
    """
    if (z0.device.type == "cpu" if folded is None else folded) and not denoiser.training:
        return _cpu_candidates(denoiser, sched, z0, steps, stops, noise, user, reverse_from_T,
                               posterior_noise, generator)
    S, B, d = len(steps), z0.shape[0], z0.shape[1]
    # built with fills on the device (no host-to-device copy: capturable in a CUDA graph)
    s_row = torch.cat([torch.full((B,), s, dtype=torch.long, device=z0.device) for s in steps])  # (S*B,)
    r_row = torch.cat([torch.full((B,), r, dtype=torch.long, device=z0.device) for r in stops])
    t_max = sched.steps if reverse_from_T else max(steps)  # bound of the steps fed: no sync to find it
    x = sched.add_noise(z0.repeat(S, 1), s_row, noise.reshape(S * B, d))  # (S*B, d)
    u = None if user is None else user.repeat(S, 1)
    if reverse_from_T:  # the reference code's chain: T..1 whatever s was (METHOD.md item 2)
        schedule_t = [torch.full_like(s_row, t) for t in range(sched.steps, 0, -1)]
        active = [None] * len(schedule_t)
    else:
        n_iter = max(s - r for s, r in zip(steps, stops))
        schedule_t = [(s_row - k).clamp(min=1) for k in range(n_iter)]
        active = [(s_row - k) > r_row for k in range(n_iter)]
    for t, act in zip(schedule_t, active):
        z0_hat = denoiser(x, t, u, t_max=t_max)
        mean = sched.posterior_mean(z0_hat, x, t)
        if posterior_noise:
            eps = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
            mean = mean + torch.where((t > 1).unsqueeze(-1), torch.exp(0.5 * sched.post_log_var[t]).unsqueeze(-1) * eps,
                                      torch.zeros_like(eps))
        x = mean if act is None else torch.where(act.unsqueeze(-1), mean, x)
    return x.view(S, B, d).transpose(0, 1)  # (B, S, d)


@torch.no_grad()
def _cpu_candidates(denoiser, sched, z0, steps, stops, noise, user, reverse_from_T, posterior_noise, generator):
    """synthesize_candidates on CPU: one chain at a time, the denoiser unrolled (eval mode: no dropout).

    Per reverse step: h = z/||z|| -> pre = h W_h + table[t] (+ user term) -> tanh -> z0_hat =
    pre W_o + b_o -> z_{t-1} = c1[t] z0_hat + c2[t] z_t. Rearranged for the CPU: 1/||z|| is applied
    after the matmul, time embedding and hidden bias come from one (t_max + 1, H) table, and
    tanh(a) = 2 sigmoid(2a) - 1 with the 2s and the -1 folded into the weights (torch's CPU tanh is
    about 5x slower than its sigmoid), c1 folded into the output matmul: about six passes over a
    (B, d) block, which stays in cache, instead of about fifteen over (S*B, d).
    """
    d = z0.shape[1]
    t_max = sched.steps if reverse_from_T else max(steps)
    W = denoiser.hidden.weight
    td = denoiser.time_dim
    table = 2 * (denoiser.time_proj(timestep_embedding(torch.arange(t_max + 1), td)) @ W[:, d:d + td].T
                 + denoiser.hidden.bias)  # (t_max + 1, H), doubled for the sigmoid form of tanh
    w_h = 2 * W[:, :d].T  # (d, H)
    w_o = denoiser.out.weight.T  # (H, d)
    b_o = denoiser.out.bias - w_o.sum(0)  # the -1 of 2 sigmoid - 1, through the output layer
    w_o = 2 * w_o
    u_term = None
    if denoiser.condition_on_user:
        if user is None:
            raise ValueError("this denoiser is conditioned on the user; pass the user embedding.")
        u_term = 2 * F.linear(F.normalize(user, dim=-1), W[:, d + td:])  # (B, H), the same at every step
    c1, c2 = sched.coef1.tolist(), sched.coef2.tolist()
    std = torch.exp(0.5 * sched.post_log_var).tolist()
    # the output matmul's c1[t] * w_o, once per step value (fastops.addmm: bit for bit torch.addmm)
    w_o_scaled = {t: (w_o * c1[t]).T for t in range(1, t_max + 1)}
    out = torch.empty((z0.shape[0], len(steps), d), dtype=z0.dtype)
    sqrt_abar, sqrt_one_minus = sched.sqrt_abar.tolist(), sched.sqrt_one_minus_abar.tolist()
    for k, (s, r) in enumerate(zip(steps, stops)):
        # add_noise(z0, s, noise[k]) with the two coefficients as scalars: the same float32 products
        x = (z0 * sqrt_abar[s]).add_(noise[k] * sqrt_one_minus[s])
        for t in (range(sched.steps, 0, -1) if reverse_from_T else range(s, r, -1)):
            inv_norm = x.norm(dim=-1, keepdim=True).clamp_min_(1e-12).reciprocal_()
            pre = fastops.mm(x, w_h).mul_(inv_norm).add_(table[t])
            if u_term is not None:
                pre.add_(u_term)
            x = fastops.addmm(x, pre.sigmoid_(), w_o, beta=c2[t], alpha=c1[t],
                              b_scaled_t=w_o_scaled[t]).add_(b_o, alpha=c1[t])
            if posterior_noise and t > 1:
                x.add_(torch.randn(x.shape, generator=generator, dtype=x.dtype), alpha=std[t])
        out[:, k] = x
    return out


def denoiser_loss(denoiser: Denoiser, sched: ScheduleTensors, z0: torch.Tensor, weights: torch.Tensor,
                  causal: str = "none", causal_weight: float = 0.0, env: torch.Tensor | None = None,
                  n_envs: int = 1, user: torch.Tensor | None = None,
                  generator: torch.Generator | None = None) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Denoiser objective on detached (or joint) positive embeddings z0: (B, d).

    Returns (loss, parts). Reconstruction: w(t) * mean_d (z_0 - f(z_t, t))^2 with t uniform in 1..T.
    causal='kl': reference KL(N(f(z_t,t), var_t) || N(z_{t-1}, var_{t-1})) (no environment in it);
    'env-variance': variance across environments of the per-environment loss (V-REx), on losses
    made comparable first (`env_variance`); env: (B,) ints.
    """
    B = z0.shape[0]
    t = torch.randint(1, sched.steps + 1, (B,), device=z0.device, generator=generator)
    eps = torch.randn(z0.shape, device=z0.device, generator=generator)
    zt = sched.add_noise(z0, t, eps)
    z0_hat = denoiser(zt, t, user, t_max=sched.steps)
    mse = ((z0 - z0_hat) ** 2).mean(-1)  # (B,)
    loss = (weights[t] * mse).mean()
    parts = {"denoise": loss.detach()}  # 0-d tensors: callers sync when they need a number
    if causal == "kl" and causal_weight > 0:
        z_prev = sched.add_noise(z0, t - 1, eps)  # same eps; t-1 = 0 gives z_0
        var_t = torch.exp(sched.post_log_var[t])
        var_prev = torch.where(t - 1 > 0, torch.exp(sched.post_log_var[(t - 1).clamp(min=1)]),
                               torch.ones_like(var_t))
        kl = 0.5 * (torch.log(var_prev / var_t).unsqueeze(-1)
                    + (var_t.unsqueeze(-1) + (z0_hat - z_prev) ** 2) / var_prev.unsqueeze(-1) - 1)
        reg = kl.mean()
        loss = loss + causal_weight * reg
        parts["causal"] = reg.detach()
    elif causal == "env-variance" and causal_weight > 0 and env is not None:
        reg = env_variance(mse, t, env, n_envs, sched.steps)
        loss = loss + causal_weight * reg  # one environment in the batch: the variance is 0
        parts["causal"] = reg.detach()
    return loss, parts


def env_variance(per: torch.Tensor, t: torch.Tensor, env: torch.Tensor, n_envs: int, steps: int) -> torch.Tensor:
    """V-REx term: variance across the environments present of the mean per-t-normalized loss.

    The raw reconstruction loss of one row depends mostly on its timestep t (and the SNR weight
    multiplies that), so environment means of raw losses differ by the luck of which t each
    environment drew. Each row's loss is therefore divided by the batch's mean loss at the same t
    (detached), which is 1 on average whatever t: environments that are identically distributed
    get means near 1 and a variance near 0, and only a difference between environments remains.
    per, t, env: (B,). Computed without a host sync."""
    dev = per.device
    ones = torch.ones_like(per)
    t_sum = torch.zeros(steps + 1, device=dev).index_add_(0, t, per.detach())
    t_cnt = torch.zeros(steps + 1, device=dev).index_add_(0, t, ones)
    ratio = per / (t_sum / t_cnt.clamp(min=1)).clamp(min=1e-12)[t]
    sums = torch.zeros(n_envs, device=dev).index_add_(0, env, ratio)
    counts = torch.zeros(n_envs, device=dev).index_add_(0, env, ones)
    present = counts > 0
    n_present = present.sum().clamp(min=1)
    env_means = torch.where(present, sums / counts.clamp(min=1), torch.zeros_like(sums))
    mean_of_means = env_means.sum() / n_present
    return torch.where(present, (env_means - mean_of_means) ** 2, torch.zeros_like(sums)).sum() / n_present


@dataclass
class TrajectoryStep:
    t: int
    phase: str  # 'forward' or 'reverse'
    z: np.ndarray  # (d,) state at this step
    z0_hat: np.ndarray | None  # denoiser's prediction (reverse only)
    coef1: float
    coef2: float
    beta: float
    alphabar: float


@torch.no_grad()
def denoise_trajectory(denoiser: Denoiser, sched: ScheduleTensors, z0: torch.Tensor, s: int, r: int,
                       noise: torch.Tensor, user: torch.Tensor | None = None,
                       reverse_from_T: bool = False) -> list[TrajectoryStep]:
    """Record one positive's path: forward z_1..z_s with one noise draw, then reverse s -> r.

    z0: (d,), noise: (d,). Used by the app's denoising stepper; the numbers of each DDPM update
    (coef1 * z0_hat + coef2 * z_t) are kept so the page can write the formula out.
    """
    denoiser.eval()
    sch = sched.schedule
    out: list[TrajectoryStep] = []
    z0b, nb = z0.unsqueeze(0), noise.unsqueeze(0)
    for t in range(0, s + 1):
        zt = sched.add_noise(z0b, t, nb)[0]
        out.append(TrajectoryStep(t, "forward", zt.cpu().numpy(), None, 0.0, 0.0,
                                  float(sch.betas[t]), float(sch.alphas_cumprod[t])))
    zs = sched.add_noise(z0b, s, nb)
    ub = None if user is None else user.unsqueeze(0)
    x, recs = reverse_chain(denoiser, sched, zs, s, r, ub, reverse_from_T, record=True)
    for t, xt, z0_hat, mean in recs:
        out.append(TrajectoryStep(t - 1, "reverse", mean[0].cpu().numpy(), z0_hat[0].cpu().numpy(),
                                  float(sched.coef1[t]), float(sched.coef2[t]),
                                  float(sch.betas[t]), float(sch.alphas_cumprod[t - 1])))
    return out
