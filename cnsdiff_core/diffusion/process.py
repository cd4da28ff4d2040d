"""The reverse process: chains of `ScheduleTensors.step` from a noised positive back towards
step r, for the CNSDiff sampler (batched candidates, during training), the schedule lab (the
same candidates for a probe) and the app's denoising stepper (one recorded trajectory).
"""
from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import torch

from .denoiser import Denoiser
from .schedule import ScheduleTensors


@contextmanager
def _eval_mode(module: torch.nn.Module):
    was_training = module.training
    module.eval()
    try:
        yield module
    finally:
        module.train(was_training)


def reverse_chain(denoiser: Denoiser, sched: ScheduleTensors, zs: torch.Tensor, s: int, r: int,
                  user: torch.Tensor | None = None, reverse_from_T: bool = False,
                  posterior_noise: bool = False, generator: torch.Generator | None = None,
                  record: bool = False):
    """Run the reverse process from step s down to step r, one `sched.step` at a time. zs: (B, d).

    With `reverse_from_T` the timesteps fed to the denoiser run T..1 whatever s was (the
    reference code's behaviour, METHOD.md item 2). Returns z_r, or (z_r, records) when `record`,
    records being (t, z_t, z0_hat, z_{t-1}) per step.
    """
    x = zs
    records = []
    for t in sched.timesteps(s, r, reverse_from_T):
        tt = torch.full((x.shape[0],), t, dtype=torch.long, device=x.device)
        z0_hat = denoiser(x, tt, user)
        noise = (torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
                 if posterior_noise and t > 1 else None)
        x_prev = sched.step(z0_hat, tt, x, noise)
        if record:
            records.append((t, x, z0_hat, x_prev))
        x = x_prev
    return (x, records) if record else x


@torch.no_grad()
def synthesize_candidates(denoiser: Denoiser, sched: ScheduleTensors, z0: torch.Tensor,
                          steps: list[int], stops: list[int], noise: torch.Tensor,
                          user: torch.Tensor | None = None, reverse_from_T: bool = False,
                          posterior_noise: bool = False, generator=None,
                          folded: bool | None = None) -> torch.Tensor:
    """(B, d) positives -> (B, S, d) candidates: noise to each s, denoise down to its stop r, with
    the denoiser in eval mode (no dropout; its mode is restored after).

    noise: (S, B, d) standard normal, one draw per step (from the caller, for reproducibility).
    folded=False: all S chains run as one (S*B, d) batch, one denoiser call and one `sched.step`
    per reverse step (few, large kernels: the GPU's way); a chain that has reached its stop keeps
    its state. folded=True: each chain on its own through `Denoiser.folded`, so its state stays in
    cache (the CPU's way). None: folded on a CPU. Both give what reverse_chain gives for each step
    (with posterior_noise: the same distribution, from different draws).
    """
    with _eval_mode(denoiser):
        if folded if folded is not None else z0.device.type == "cpu":
            return _folded_candidates(denoiser, sched, z0, steps, stops, noise, user, reverse_from_T,
                                      posterior_noise, generator)
        return _batched_candidates(denoiser, sched, z0, steps, stops, noise, user, reverse_from_T,
                                   posterior_noise, generator)


def _batched_candidates(denoiser, sched, z0, steps, stops, noise, user, reverse_from_T, posterior_noise, generator):
    S, B, d = len(steps), z0.shape[0], z0.shape[1]
    # built with fills on the device (no host-to-device copy: capturable in a CUDA graph)
    s_row = torch.cat([torch.full((B,), s, dtype=torch.long, device=z0.device) for s in steps])  # (S*B,)
    r_row = torch.cat([torch.full((B,), r, dtype=torch.long, device=z0.device) for r in stops])
    t_max = sched.steps if reverse_from_T else max(steps)  # bound of the steps fed: no sync to find it
    x = sched.add_noise(z0.repeat(S, 1), s_row, noise.reshape(S * B, d))  # (S*B, d)
    u = None if user is None else user.repeat(S, 1)
    if reverse_from_T:  # the reference code's chain: T..1 whatever s was (METHOD.md item 2)
        schedule_t = [torch.full_like(s_row, t) for t in sched.timesteps(0, 0, True)]
        active = [None] * len(schedule_t)
    else:
        n_iter = max(s - r for s, r in zip(steps, stops))
        schedule_t = [(s_row - k).clamp(min=1) for k in range(n_iter)]
        active = [(s_row - k) > r_row for k in range(n_iter)]
    for t, act in zip(schedule_t, active):
        z0_hat = denoiser(x, t, u, t_max=t_max)
        eps = (torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
               if posterior_noise else None)
        x_prev = sched.step(z0_hat, t, x, eps)
        x = x_prev if act is None else torch.where(act.unsqueeze(-1), x_prev, x)
    return x.view(S, B, d).transpose(0, 1)  # (B, S, d)


def _folded_candidates(denoiser, sched, z0, steps, stops, noise, user, reverse_from_T, posterior_noise, generator):
    t_max = sched.steps if reverse_from_T else max(steps)
    step = denoiser.folded(sched, t_max, user)
    out = torch.empty((z0.shape[0], len(steps), z0.shape[1]), dtype=z0.dtype)
    sqrt_abar, sqrt_one_minus = sched.sqrt_abar.tolist(), sched.sqrt_one_minus_abar.tolist()
    for k, (s, r) in enumerate(zip(steps, stops)):
        # add_noise(z0, s, noise[k]) with the two coefficients as scalars: the same float32 products
        x = (z0 * sqrt_abar[s]).add_(noise[k] * sqrt_one_minus[s])
        for t in sched.timesteps(s, r, reverse_from_T):
            eps = torch.randn(x.shape, generator=generator, dtype=x.dtype) if posterior_noise and t > 1 else None
            x = step(x, t, eps)
        out[:, k] = x
    return out


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
    sch = sched.schedule
    out: list[TrajectoryStep] = []
    z0b, nb = z0.unsqueeze(0), noise.unsqueeze(0)
    for t in range(0, s + 1):
        zt = sched.add_noise(z0b, t, nb)[0]
        out.append(TrajectoryStep(t, "forward", zt.cpu().numpy(), None, 0.0, 0.0,
                                  float(sch.betas[t]), float(sch.alphas_cumprod[t])))
    zs = sched.add_noise(z0b, s, nb)
    ub = None if user is None else user.unsqueeze(0)
    with _eval_mode(denoiser):
        x, recs = reverse_chain(denoiser, sched, zs, s, r, ub, reverse_from_T, record=True)
    for t, xt, z0_hat, mean in recs:
        out.append(TrajectoryStep(t - 1, "reverse", mean[0].cpu().numpy(), z0_hat[0].cpu().numpy(),
                                  float(sched.coef1[t]), float(sched.coef2[t]),
                                  float(sch.betas[t]), float(sch.alphas_cumprod[t - 1])))
    return out
