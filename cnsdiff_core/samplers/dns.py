"""DNS (Zhang et al. 2013): the highest-scored of M uniform candidates."""
import torch

from .base import BatchContext, NegativeBatch, Sampler, item_negative, score_candidates


class DynamicSampler(Sampler):
    name = "dns"

    def sample(self, ctx: BatchContext) -> NegativeBatch:
        cands = ctx.pool.draw(ctx.users, self.cfg.dns_candidates)  # (B, M)
        with torch.no_grad():
            scores = score_candidates(ctx.user_e, ctx.items_e[cands])
        items = cands.gather(1, scores.argmax(1, keepdim=True))[:, 0]
        return item_negative(ctx, items)

    @classmethod
    def search_space(cls, trial) -> dict:
        return {**super().search_space(trial),
                "dns_candidates": trial.suggest_int("dns_candidates", 2, 64, log=True)}
