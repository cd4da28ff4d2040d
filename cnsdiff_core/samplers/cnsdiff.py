"""CNSDiff (Zhao et al. 2025): negatives synthesized by a diffusion model started from the
positive item, hardness picked over diffusion steps, mixed with a random negative on a Beta
schedule, plus a contrastive term. See METHOD.md for every default and for "the trap".

Its knobs are TrainConfig's own fields (the CNSDiff groups), not `settings` of this class: the
schedule and denoiser knobs also drive the diffusion package where no CNSDiff sampler runs (the
schedule lab, the Denoising page), the presets paper / reference / tuned are settings of this
method, and stored runs and documented commands name the fields as they are."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .. import fastops
from ..diffusion import DenoiserTrainer, synthesize_candidates
from ..settings import CAUSAL, LOSS_WEIGHTINGS, SCHEDULES, Config
from .base import BatchContext, NegativeBatch, Sampler, score_candidates


class CNSDiffSampler(Sampler):
    name = "cnsdiff"
    label = "CNSDiff (diffusion)"
    order = 60
    role = "method"
    color = "#D55E00"  # Okabe-Ito vermillion: the synthesized hue, shared by no other sampler
    marker = "x"
    synthesizes = True
    has_denoiser = True
    probe_alongside = False  # its candidates need the run's trained denoiser
    folded: bool | None = None  # synthesis path (synthesize_candidates): None = folded on a CPU

    def __init__(self, cfg: Config, device: torch.device) -> None:
        super().__init__(cfg, device)
        self.trainer = DenoiserTrainer(cfg, device)  # the denoiser, its schedule, loss weights, optimizer
        self.denoiser, self.sched = self.trainer.denoiser, self.trainer.sched
        self.steps = cfg.hardness_steps()
        self.stops = [cfg.stop_for(s) for s in self.steps]

    # --- synthesis ------------------------------------------------------------------------
    @torch.no_grad()
    def candidates(self, pos_e: torch.Tensor, user_e: torch.Tensor) -> torch.Tensor:
        """(B, d) positives -> (B, S, d) one candidate per hardness step."""
        cfg = self.cfg
        noise = torch.randn((len(self.steps),) + tuple(pos_e.shape), device=pos_e.device)
        user = user_e if cfg.condition_on_user else None
        return synthesize_candidates(self.denoiser, self.sched, pos_e, self.steps, self.stops, noise,
                                     user, cfg.reverse_from_T, cfg.posterior_noise, folded=self.folded)

    def ramp(self, epoch: int) -> float:
        """Where the mixing ramp stands at a 0-based epoch: 0 at epoch 0, 1 from epoch
        mix_ramp_epochs on, whatever the epoch budget (mix_ramp_epochs=0: over the configured
        budget, the reference behaviour, which early stopping cuts short)."""
        cfg = self.cfg
        span = cfg.mix_ramp_epochs if cfg.mix_ramp_epochs > 0 else max(cfg.epochs - 1, 1)
        return min(max(epoch / span, 0.0), 1.0)

    def mix_params(self, epoch: int) -> tuple[float, float]:
        """(a, b) of the mixing weight's Beta distribution at a 0-based epoch."""
        cfg = self.cfg
        progress = self.ramp(epoch)
        return (cfg.mix_a0 + (cfg.mix_a1 - cfg.mix_a0) * progress, cfg.mix_b0 + (cfg.mix_b1 - cfg.mix_b0) * progress)

    def mix_weights(self, n: int, epoch: int, device, conc: torch.Tensor | None = None) -> torch.Tensor:
        """lambda ~ Beta(a, b), (a, b) moving linearly from (a0, b0) at epoch 0 to (a1, b1) at epoch
        mix_ramp_epochs, then staying there. conc: (a, b) already on the device (set_epoch)."""
        if conc is None:
            conc = torch.tensor([float(v) for v in self.mix_params(epoch)], device=device)
        # what torch.distributions.Beta(a, b).sample((n,)) computes (the first coordinate of a
        # Dirichlet(a, b) draw, the same random numbers), without building the distribution objects
        return torch._sample_dirichlet(conc.expand(n, 2))[:, 0].clamp(min=self.cfg.min_mix)

    def set_epoch(self, epoch: int) -> None:
        """The epoch's (a, b) into a device buffer that sample() reads: no host-to-device copy inside
        a (graphed) training step."""
        values = torch.tensor([float(v) for v in self.mix_params(epoch)])
        if getattr(self, "_mix_conc", None) is None:
            self._mix_conc = values.to(self.device)
        else:
            self._mix_conc.copy_(values)
        self._mix_epoch = epoch

    def sample(self, ctx: BatchContext) -> NegativeBatch:
        cfg = self.cfg
        user_d, pos_d = ctx.user_e.detach(), ctx.pos_e.detach()
        cands = self.candidates(pos_d, user_d)  # (B, S, d)
        chosen = pick_hardest(cands, pos_d, user_d, cfg.min_distance)  # (B,)
        h = cands[torch.arange(len(chosen), device=cands.device), chosen]  # (B, d), no grad
        rand_e = ctx.items_e[ctx.rand_neg]  # (B, d), with grad
        conc = self._mix_conc if getattr(self, "_mix_epoch", None) == ctx.epoch else None
        lam = self.mix_weights(len(chosen), ctx.epoch, h.device, conc).unsqueeze(-1)  # (B, 1)
        neg = lam * h + (1 - lam) * rand_e
        extra, parts = None, {}
        if cfg.cl_weight > 0:
            negs = torch.cat([h, rand_e], 0)  # (2B, d)
            if 0 < cfg.cl_negatives < len(negs):
                negs = negs[torch.randperm(len(negs), device=negs.device)[: cfg.cl_negatives]]
            cl = contrastive_loss(ctx.pos_e, negs, cfg.cl_temperature)
            extra = cfg.cl_weight * cl
            parts["cl"] = cl.detach()
        if cfg.denoiser_joint:
            dl, dparts = self.trainer.loss(ctx.pos_e, ctx.env, ctx.user_e)
            extra = cfg.diff_weight * dl if extra is None else extra + cfg.diff_weight * dl
            parts.update(dparts)
        parts["lambda"] = lam.mean()
        return NegativeBatch(emb=neg, items=None, reg_items=ctx.rand_neg, extra_loss=extra,
                             candidates=cands, chosen=chosen, synthesized=h, parts=parts)

    # --- denoiser training --------------------------------------------------------------------
    def update(self, ctx: BatchContext) -> dict[str, float]:
        """Separate training (default): one step of the denoiser's own optimizer on detached
        positive embeddings, so the denoiser does not drag the recommender."""
        cfg = self.cfg
        if not cfg.train_denoiser or cfg.denoiser_joint:
            return {}
        _, parts = self.trainer.step(ctx.pos_e.detach(), ctx.env, ctx.user_e.detach())
        return parts

    def after_backward(self) -> None:
        # Joint mode: gradients reached the denoiser through the recommender's loss. The reference
        # code never steps this optimizer (train_denoiser=False), which is its bug 1.
        if self.cfg.denoiser_joint and self.cfg.train_denoiser:
            self.trainer.optimizer.step()
        self.trainer.optimizer.zero_grad(set_to_none=True)

    def state_dict(self) -> dict:
        return {"denoiser": self.denoiser.state_dict()}

    @classmethod
    def epoch_flops(cls, cfg, batch, n_batches, device_type):
        d, H = cfg.dim, cfg.denoiser_hidden
        steps = cfg.hardness_steps()
        lengths = [cfg.steps if cfg.reverse_from_T else s - cfg.stop_for(s) for s in steps]
        # CUDA runs the S chains batched for the longest chain's length, CPU each chain for its own
        # length (synthesize_candidates)
        n_den = len(steps) * max(lengths) if device_type == "cuda" else sum(lengths)
        per_call = 2 * batch * (d * H + H * d)
        m = cfg.cl_negatives if cfg.cl_negatives > 0 else 2 * batch
        return {"synthesis": n_den * per_call * n_batches, "contrastive": 3 * 2 * batch * m * d * n_batches,
                "denoiser update": 3 * per_call * n_batches}

    def load_state_dict(self, state: dict) -> None:
        if "denoiser" in state:
            self.denoiser.load_state_dict(state["denoiser"])

    @classmethod
    def search_space(cls, trial) -> dict:
        """lr and L2, then the schedule (family, scale), the hardness steps s in {start, start +
        stride, ..., T}, the reverse steps from s, the mixing ramp, the contrastive term and the
        causal term (its weight only when there is one). Ranges assume the default T = 20."""
        space = {**super().search_space(trial),
                 "schedule": trial.suggest_categorical("schedule", list(SCHEDULES)),
                 "noise_scale": trial.suggest_float("noise_scale", 0.05, 1.0, log=True),  # cosine breaks above 1
                 "hard_start": trial.suggest_int("hard_start", 1, 10),
                 "hard_stride": trial.suggest_int("hard_stride", 1, 8),
                 "denoise_steps": trial.suggest_int("denoise_steps", 0, 8),
                 "mix_a1": trial.suggest_float("mix_a1", 1.0, 9.0),  # the ramp ends at Beta(a1, 1)
                 "mix_ramp_epochs": trial.suggest_int("mix_ramp_epochs", 0, 40, step=5),
                 "loss_weighting": trial.suggest_categorical("loss_weighting", list(LOSS_WEIGHTINGS)),
                 "cl_weight": trial.suggest_float("cl_weight", 0.0, 1.0),
                 "cl_temperature": trial.suggest_float("cl_temperature", 0.1, 5.0, log=True),
                 "causal": trial.suggest_categorical("causal", list(CAUSAL))}
        # the two terms live on different scales: KL is O(1); the env-variance of per-t normalized
        # losses is O(1e-4), so its weight needs a range that can make it matter (separate names
        # keep each range its own distribution for the sampler)
        if space["causal"] == "kl":
            space["causal_weight"] = trial.suggest_float("kl_weight", 1e-3, 1.0, log=True)
        elif space["causal"] == "env-variance":
            space["causal_weight"] = trial.suggest_float("env_weight", 1e-2, 1e3, log=True)
        return space


def pick_hardest(cands: torch.Tensor, pos_e: torch.Tensor, user_e: torch.Tensor,
                 min_distance: float = 0.0) -> torch.Tensor:
    """(B,) index of the highest-scored of (B, S, d) candidates whose distance to the positive
    respects the floor min_distance (relative to the positive's norm); if none does, the farthest."""
    scores = score_candidates(user_e, cands)  # (B, S)
    if min_distance > 0:
        dist = (cands - pos_e.unsqueeze(1)).norm(dim=-1) / pos_e.norm(dim=-1, keepdim=True).clamp(min=1e-12)
        ok = dist >= min_distance
        scores = torch.where(ok, scores, torch.full_like(scores, float("-inf")))
        none_ok = ~ok.any(1)
        return torch.where(none_ok, dist.argmax(1), scores.argmax(1))
    return scores.argmax(1)


def contrastive_loss(anchor: torch.Tensor, negatives: torch.Tensor, temperature: float) -> torch.Tensor:
    """-mean cos(e_i, e_i + 0.01 noise)/tau + mean logsumexp_n cos(e_i, n)/tau over the batch's
    synthesized and random negatives. anchor: (B, d), negatives: (N, d)."""
    a = F.normalize(anchor, dim=-1)
    pos = F.normalize(anchor + 0.01 * torch.randn_like(anchor), dim=-1)
    pos_logit = (a * pos).sum(-1) / temperature  # (B,)
    # 1/tau goes on the N negatives before the product instead of on the (B, N) logits
    n = F.normalize(negatives, dim=-1) / temperature
    if 1 / temperature < 80:  # exp cannot overflow float32: no max to subtract (the (B, N) passes it costs)
        if fastops.enabled() and a.device.type == "cpu":
            lse_mean = _MeanLogSumExp.apply(a, n)  # the same numbers, two (B, N) blocks fewer
        else:
            lse_mean = fastops.linear(a, n).exp().sum(1).log().mean()  # (B, N) logits = a n^T, in [-1/tau, 1/tau]
    else:
        lse_mean = torch.logsumexp(fastops.linear(a, n), dim=1).mean()
    return -pos_logit.mean() + lse_mean


class _MeanLogSumExp(torch.autograd.Function):
    """mean_i log sum_j exp(a_i . n_j) on a CPU, for logits that cannot overflow.

    Forward: the plain expression's operations (one product, on oneDNN; exp; row sums; log; mean),
    the exponentials computed in place. Backward: what autograd computes through that expression,
    operation for operation (softmax weights E_ij * (g / B) / s_i, then g_a = P n and g_n = P^T a
    on MKL, as autograd's matmul backward takes them), written over the saved exponentials: no
    new (B, N) block. tests/test_fastops.py compares it with autograd."""

    @staticmethod
    def forward(ctx, a, n):
        e = fastops.linear(a.detach(), n.detach()).exp_()  # (B, N)
        s = e.sum(1)
        ctx.save_for_backward(a, n, e, s)
        ctx.used = False
        return s.log().mean()

    @staticmethod
    def backward(ctx, g):
        if ctx.used:
            raise RuntimeError("the contrastive term's backward overwrites its saved block; it runs once per forward")
        ctx.used = True
        a, n, e, s = ctx.saved_tensors
        p = e.mul_((g.expand(len(s)) / len(s) / s).unsqueeze(1))  # dL/dlogits, (B, N)
        ga = p.mm(n) if ctx.needs_input_grad[0] else None  # (B, d)
        gn = p.t().mm(a) if ctx.needs_input_grad[1] else None  # (N, d)
        return ga, gn
