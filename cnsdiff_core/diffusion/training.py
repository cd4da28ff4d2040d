"""Training the denoiser: its objective (reconstruction, per-t weights, causal term) and one
training loop step, shared by the CNSDiff sampler (one step per batch, on detached embeddings) and
the schedule lab's refit (on a run's frozen embeddings)."""
from __future__ import annotations

import torch

from .denoiser import Denoiser
from .schedule import NoiseSchedule, ScheduleTensors


class DenoiserTrainer:
    """A fresh denoiser shaped by `cfg`, its schedule, per-t loss weights and Adam optimizer.

    `loss` is the objective (denoiser_loss with cfg's causal term, environments only for
    causal='env-variance', the user only when conditioned); `step` is one optimizer step on it."""

    def __init__(self, cfg, device: torch.device | str = "cpu", lr: float | None = None) -> None:
        self.cfg = cfg
        self.schedule = NoiseSchedule.from_config(cfg)
        self.sched = self.schedule.tensors(device)
        self.weights = torch.as_tensor(self.schedule.loss_weights(cfg.normalize_snr_weights, cfg.loss_weighting),
                                       dtype=torch.float32, device=device)
        self.denoiser = Denoiser.from_config(cfg).to(device)
        # a graphed training step (cuda_graph on a GPU) needs Adam's capturable form
        capturable = bool(getattr(cfg, "cuda_graph", False)) and torch.device(device).type == "cuda"
        self.optimizer = torch.optim.Adam(self.denoiser.parameters(), lr=lr or cfg.denoiser_lr, capturable=capturable)

    def loss(self, z0: torch.Tensor, env: torch.Tensor | None = None, user: torch.Tensor | None = None,
             generator: torch.Generator | None = None) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        cfg = self.cfg
        return denoiser_loss(self.denoiser, self.sched, z0, self.weights, cfg.causal, cfg.causal_weight,
                             env if cfg.causal == "env-variance" else None, cfg.n_envs,
                             user if cfg.condition_on_user else None, generator)

    def step(self, z0: torch.Tensor, env: torch.Tensor | None = None, user: torch.Tensor | None = None,
             generator: torch.Generator | None = None) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """One optimizer step in train mode (dropout on) on positives z0: (B, d). Returns (loss, parts)."""
        self.denoiser.train()
        loss, parts = self.loss(z0, env, user, generator)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        return loss, parts


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
    z0_hat = denoiser(zt, t, user, t_max=sched.steps)  # a fixed table size: no sync
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
