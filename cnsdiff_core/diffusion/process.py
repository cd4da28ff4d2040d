"""Forward noising, reverse denoising, negative synthesis and the denoiser's objective.

These functions are shared by the CNSDiff sampler (batched, during training), the app's
denoising stepper (one recorded trajectory) and the schedule lab (denoiser refit).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from .denoiser import Denoiser
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
                          posterior_noise: bool = False, generator=None) -> torch.Tensor:
    """(B, d) positives -> (B, S, d) candidates: noise to each s, denoise down to its stop r.

    noise: (S, B, d) standard normal, one draw per step (from the caller, for reproducibility).
    All S chains run as one (S*B, d) batch, one denoiser call per reverse step; a chain that has
    reached its stop keeps its state (same result as running reverse_chain per step).
    """
    S, B, d = len(steps), z0.shape[0], z0.shape[1]
    s_row = torch.as_tensor(steps, device=z0.device).repeat_interleave(B)  # (S*B,)
    r_row = torch.as_tensor(stops, device=z0.device).repeat_interleave(B)
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
        z0_hat = denoiser(x, t, u)
        mean = sched.posterior_mean(z0_hat, x, t)
        if posterior_noise:
            eps = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
            mean = mean + torch.where((t > 1).unsqueeze(-1), torch.exp(0.5 * sched.post_log_var[t]).unsqueeze(-1) * eps,
                                      torch.zeros_like(eps))
        x = mean if act is None else torch.where(act.unsqueeze(-1), mean, x)
    return x.view(S, B, d).transpose(0, 1)  # (B, S, d)


def denoiser_loss(denoiser: Denoiser, sched: ScheduleTensors, z0: torch.Tensor, weights: torch.Tensor,
                  causal: str = "none", causal_weight: float = 0.0, env: torch.Tensor | None = None,
                  n_envs: int = 1, user: torch.Tensor | None = None,
                  generator: torch.Generator | None = None) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Denoiser objective on detached (or joint) positive embeddings z0: (B, d).

    Returns (loss, parts). Reconstruction: w(t) * mean_d (z_0 - f(z_t, t))^2 with t uniform in 1..T.
    causal='kl': reference KL(N(f(z_t,t), var_t) || N(z_{t-1}, var_{t-1})); 'env-variance':
    variance across environments of the per-environment loss (V-REx), env: (B,) ints.
    """
    B = z0.shape[0]
    t = torch.randint(1, sched.steps + 1, (B,), device=z0.device, generator=generator)
    eps = torch.randn(z0.shape, device=z0.device, generator=generator)
    zt = sched.add_noise(z0, t, eps)
    z0_hat = denoiser(zt, t, user)
    per = weights[t] * ((z0 - z0_hat) ** 2).mean(-1)  # (B,)
    loss = per.mean()
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
        sums = torch.zeros(n_envs, device=z0.device).index_add_(0, env, per)
        counts = torch.zeros(n_envs, device=z0.device).index_add_(0, env, torch.ones_like(per))
        present = counts > 0
        # variance over the environments present in the batch, computed without a host sync
        n_present = present.sum().clamp(min=1)
        env_means = torch.where(present, sums / counts.clamp(min=1), torch.zeros_like(sums))
        mean_of_means = env_means.sum() / n_present
        reg = torch.where(present, (env_means - mean_of_means) ** 2, torch.zeros_like(sums)).sum() / n_present
        loss = loss + causal_weight * reg  # one environment in the batch: the variance is 0
        parts["causal"] = reg.detach()
    return loss, parts


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
