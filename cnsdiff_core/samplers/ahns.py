"""AHNS (Lai et al. 2024): the candidate whose score is closest to beta * (s_ui + alpha)^(p+1),
so that users whose positive already scores high get harder negatives, adaptively."""
import torch

from .base import BatchContext, NegativeBatch, Sampler, item_negative, score_candidates


class AdaptiveHardnessSampler(Sampler):
    name = "ahns"

    def sample(self, ctx: BatchContext) -> NegativeBatch:
        cfg = self.cfg
        cands = ctx.pool.draw(ctx.users, cfg.ahns_candidates)  # (B, M)
        with torch.no_grad():
            s_neg = score_candidates(ctx.user_e, ctx.items_e[cands])  # (B, M)
            s_pos = (ctx.user_e * ctx.pos_e).sum(-1, keepdim=True)  # (B, 1)
            base = (s_pos + cfg.ahns_alpha).clamp(min=1e-2)  # the power is negative for p < -1
            target = cfg.ahns_beta * base.pow(cfg.ahns_p + 1)
            pick = (s_neg - target).abs().argmin(1, keepdim=True)
        return item_negative(ctx, cands.gather(1, pick)[:, 0])

    @classmethod
    def search_space(cls, trial) -> dict:
        return {**super().search_space(trial),
                "ahns_candidates": trial.suggest_int("ahns_candidates", 4, 64, log=True),
                "ahns_alpha": trial.suggest_float("ahns_alpha", 0.1, 10.0, log=True),
                "ahns_beta": trial.suggest_float("ahns_beta", 0.01, 1.0, log=True),
                "ahns_p": trial.suggest_float("ahns_p", -3.0, 0.0)}
