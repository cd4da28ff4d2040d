"""Noise schedules for diffusion in item-embedding space (pure maths, numpy in / torch out).

Convention: arrays have length T+1 and index 0 is the clean embedding (beta_0 = 0,
alphabar_0 = 1), so step t in 1..T means what METHOD.md means by "step t".
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from ..settings import SCHEDULES, ConfigError

MAX_BETA = 0.999


def schedule_betas(kind: str, steps: int, scale: float = 0.1, beta_min: float = 1e-4,
                   beta_max: float = 0.02) -> np.ndarray:
    """(T,) betas for steps 1..T.

    linear:     beta_t linearly spaced in [scale*beta_min, scale*beta_max].
    linear-var: 1 - alphabar_t linearly spaced in that range (DiffRec), betas derived from it.
    cosine:     Nichol & Dhariwal (2021) eq. 17, betas multiplied by `scale` and clipped.
    """
    if kind not in SCHEDULES:
        raise ConfigError(f"schedule={kind!r} is invalid: use one of {', '.join(SCHEDULES)}.")
    if int(steps) < 1:
        raise ConfigError(f"steps={steps!r} is invalid: it must be an integer >= 1.")
    if not (0 < beta_min <= beta_max < 1):
        raise ConfigError(f"beta bounds [{beta_min}, {beta_max}] are invalid: need 0 < beta_min <= beta_max < 1.")
    if not (0 < scale):
        raise ConfigError(f"noise_scale={scale!r} is invalid: it must be positive.")
    lo, hi = scale * beta_min, scale * beta_max
    if kind == "linear":
        betas = np.linspace(lo, hi, steps, dtype=np.float64)
    elif kind == "linear-var":
        variance = np.linspace(lo, hi, steps, dtype=np.float64)  # 1 - alphabar_t
        abar = 1.0 - variance
        prev = np.concatenate([[1.0], abar[:-1]])
        betas = np.minimum(1.0 - abar / prev, MAX_BETA)
    else:
        s = 0.008
        f = lambda t: math.cos((t / steps + s) / (1 + s) * math.pi / 2) ** 2  # noqa: E731
        betas = np.array([min(1 - f(t + 1) / f(t), MAX_BETA) for t in range(steps)]) * scale
    if not (np.all(betas > 0) and np.all(betas < 1)):
        raise ConfigError(f"schedule {kind} with scale {scale} gives betas outside (0, 1); lower noise_scale or beta_max.")
    return np.minimum(betas, MAX_BETA)


@dataclass(frozen=True)
class NoiseSchedule:
    """Derived tensors of a schedule, computed once. Index t = 0..T (0 = clean)."""

    kind: str
    steps: int
    betas: np.ndarray  # (T+1,)
    alphas_cumprod: np.ndarray  # (T+1,)
    posterior_variance: np.ndarray  # (T+1,), entry 0 unused
    posterior_log_variance_clipped: np.ndarray
    posterior_mean_coef1: np.ndarray  # multiplies the predicted z_0
    posterior_mean_coef2: np.ndarray  # multiplies z_t

    @classmethod
    def create(cls, kind: str = "linear-var", steps: int = 20, scale: float = 0.1,
               beta_min: float = 1e-4, beta_max: float = 0.02) -> "NoiseSchedule":
        b = schedule_betas(kind, steps, scale, beta_min, beta_max)
        betas = np.concatenate([[0.0], b])
        abar = np.cumprod(1.0 - betas)
        abar_prev = np.concatenate([[1.0], abar[:-1]])
        with np.errstate(divide="ignore", invalid="ignore"):
            # DDPM eq. 7: posterior q(z_{t-1} | z_t, z_0)
            post_var = np.where(np.arange(steps + 1) > 0, betas * (1 - abar_prev) / (1 - abar), 0.0)
            coef1 = np.where(np.arange(steps + 1) > 0, betas * np.sqrt(abar_prev) / (1 - abar), 1.0)
            coef2 = np.where(np.arange(steps + 1) > 0, (1 - abar_prev) * np.sqrt(1 - betas) / (1 - abar), 0.0)
        clip_from = post_var[2] if steps >= 2 else b[0]
        log_var = np.log(np.concatenate([[clip_from, clip_from], post_var[2:]]))
        return cls(kind, steps, betas, abar, post_var, log_var, coef1, coef2)

    @classmethod
    def from_config(cls, cfg) -> "NoiseSchedule":
        return cls.create(cfg.schedule, cfg.steps, cfg.noise_scale, cfg.beta_min, cfg.beta_max)

    # --- curves for the schedule lab -----------------------------------------------------------
    def snr(self) -> np.ndarray:
        """(T+1,) alphabar / (1 - alphabar); inf at t = 0."""
        with np.errstate(divide="ignore"):
            return self.alphas_cumprod / (1 - self.alphas_cumprod)

    def noise_std(self) -> np.ndarray:
        """(T+1,) standard deviation of the noise in z_t: sqrt(1 - alphabar_t)."""
        return np.sqrt(1 - self.alphas_cumprod)

    def loss_weights(self, normalize: bool = True, kind: str = "snr-diff") -> np.ndarray:
        """(T+1,) per-t weight of the denoiser loss; entry 0 unused.

        'snr-diff': w(t) = SNR(t-1) - SNR(t) for t >= 2 and w(1) = w(2) (SNR(0) is infinite);
        'snr-diff-ref': the same with w(1) = 1, as DiffRec and the reference code have it: against
        weights of 28..9e4 that gives t = 1 almost nothing once normalized (an artefact kept for
        the reference and paper presets); 'uniform': 1 for every t.
        normalize: scale w(1..T) to mean 1."""
        snr = self.snr()
        w = np.ones(self.steps + 1)
        if kind != "uniform" and self.steps >= 2:
            w[2:] = snr[1:-1] - snr[2:]
            if kind == "snr-diff":
                w[1] = w[2]
        w[0] = 0.0
        if normalize:
            w[1:] = w[1:] / w[1:].mean()
        return w

    def curves(self) -> dict[str, np.ndarray]:
        t = np.arange(self.steps + 1)
        return {"t": t[1:], "beta": self.betas[1:], "alphabar": self.alphas_cumprod[1:],
                "snr": self.snr()[1:], "noise_std": self.noise_std()[1:]}

    def tensors(self, device: torch.device | str = "cpu") -> "ScheduleTensors":
        return ScheduleTensors(self, device)


class ScheduleTensors:
    """The schedule's arrays as float32 tensors on one device, plus the process maths."""

    def __init__(self, schedule: NoiseSchedule, device) -> None:
        self.schedule = schedule
        self.steps = schedule.steps
        as_t = lambda a: torch.as_tensor(np.asarray(a, dtype=np.float32), device=device)  # noqa: E731
        self.sqrt_abar = as_t(np.sqrt(schedule.alphas_cumprod))
        self.sqrt_one_minus_abar = as_t(np.sqrt(1 - schedule.alphas_cumprod))
        self.coef1 = as_t(schedule.posterior_mean_coef1)
        self.coef2 = as_t(schedule.posterior_mean_coef2)
        self.post_var = as_t(schedule.posterior_variance)
        self.post_log_var = as_t(schedule.posterior_log_variance_clipped)

    def add_noise(self, z0: torch.Tensor, t: torch.Tensor | int, noise: torch.Tensor) -> torch.Tensor:
        """Forward process q(z_t | z_0) (DDPM eq. 4); `noise` comes from the caller. z0: (..., d)."""
        t = _as_index(t, z0)
        return self.sqrt_abar[t].unsqueeze(-1) * z0 + self.sqrt_one_minus_abar[t].unsqueeze(-1) * noise

    def posterior_mean(self, z0_hat: torch.Tensor, zt: torch.Tensor, t: torch.Tensor | int) -> torch.Tensor:
        """Mean of q(z_{t-1} | z_t, z_0 = z0_hat) (DDPM eq. 7)."""
        t = _as_index(t, zt)
        return self.coef1[t].unsqueeze(-1) * z0_hat + self.coef2[t].unsqueeze(-1) * zt

    def step(self, z0_hat: torch.Tensor, t: torch.Tensor | int, zt: torch.Tensor,
             noise: torch.Tensor | None = None) -> torch.Tensor:
        """One reverse step z_t -> z_{t-1}, as diffusers' DDPMScheduler.step does it for a model that
        predicts z_0: the posterior mean c1[t] z0_hat + c2[t] z_t (DDPM eq. 7), plus sigma_t * noise
        where t > 1 when `noise` (standard normal, drawn by the caller) is given.

        t: one step for every row, or a (B,) tensor of steps. The CNSDiff sampler, the trajectory
        recorder and the schedule lab all step through here (the folded CPU path is this step with
        the denoiser's layers folded in, `Denoiser.folded`)."""
        mean = self.posterior_mean(z0_hat, zt, t)
        if noise is None:
            return mean
        t = _as_index(t, zt)
        std = torch.exp(0.5 * self.post_log_var[t]).unsqueeze(-1)
        return mean + torch.where((t > 1).unsqueeze(-1), std * noise, torch.zeros_like(noise))

    def timesteps(self, s: int, r: int, reverse_from_T: bool = False) -> range:
        """The steps t a reverse chain from s to r feeds the denoiser: s, s-1, ..., r+1; with
        `reverse_from_T` T..1 whatever s was (the reference code's behaviour, METHOD.md item 2)."""
        return range(self.steps, 0, -1) if reverse_from_T else range(s, r, -1)


def _as_index(t, like: torch.Tensor) -> torch.Tensor:
    if isinstance(t, int):
        return torch.full(like.shape[:-1], t, dtype=torch.long, device=like.device)
    return t
