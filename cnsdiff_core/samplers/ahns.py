"""AHNS (Lai et al. 2024): the candidate whose score is closest to beta * (s_ui + alpha)^(p+1),
so that users whose positive already scores high get harder negatives, adaptively."""
import torch

from ..settings import setting
from .base import BatchContext, NegativeBatch, Sampler, item_negative, score_candidates

GROUP = "Baseline samplers"


class AdaptiveHardnessSampler(Sampler):
    name = "ahns"
    label = "AHNS (adaptive hardness)"
    order = 50
    color = "#000000"  # Okabe-Ito black
    marker = "hexagon"
    settings = {
        "candidates": setting(32, "AHNS: uniform candidates per positive", group=GROUP, ge=1),
        "alpha": setting(1.0, "AHNS: alpha in the target score beta * (s_ui + alpha)^(p + 1)", group=GROUP),
        "beta": setting(0.1, "AHNS: beta in the target score beta * (s_ui + alpha)^(p + 1)", group=GROUP),
        "p": setting(-2.0, "AHNS: p in the target score; below -1 a higher positive score asks for a "
                           "harder negative", group=GROUP),
    }

    def sample(self, ctx: BatchContext) -> NegativeBatch:
        o = self.opts
        cands = ctx.pool.draw(ctx.users, o.candidates)  # (B, M)
        with torch.no_grad():
            s_neg = score_candidates(ctx.user_e, ctx.items_e[cands])  # (B, M)
            s_pos = (ctx.user_e * ctx.pos_e).sum(-1, keepdim=True)  # (B, 1)
            base = (s_pos + o.alpha).clamp(min=1e-2)  # the power is negative for p < -1
            target = o.beta * base.pow(o.p + 1)
            pick = (s_neg - target).abs().argmin(1, keepdim=True)
        return item_negative(ctx, cands.gather(1, pick)[:, 0])

    @classmethod
    def epoch_flops(cls, cfg, batch, n_batches, device_type):
        return {"candidate scoring": 2 * batch * getattr(cfg, cls.field("candidates")) * cfg.dim * n_batches}

    @classmethod
    def search_space(cls, trial) -> dict:
        return {**super().search_space(trial),
                cls.field("candidates"): trial.suggest_int(cls.field("candidates"), 4, 64, log=True),
                cls.field("alpha"): trial.suggest_float(cls.field("alpha"), 0.1, 10.0, log=True),
                cls.field("beta"): trial.suggest_float(cls.field("beta"), 0.01, 1.0, log=True),
                cls.field("p"): trial.suggest_float(cls.field("p"), -3.0, 0.0)}
