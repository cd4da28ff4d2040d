"""DNS (Zhang et al. 2013): the highest-scored of M uniform candidates."""
import torch

from ..settings import setting
from .base import BatchContext, NegativeBatch, Sampler, item_negative, score_candidates


class DynamicSampler(Sampler):
    name = "dns"
    label = "DNS (hardest of M)"
    order = 30
    role = "hard"
    color = "#009E73"  # Okabe-Ito bluish green
    marker = "triangle-up"
    settings = {"candidates": setting(32, "DNS: uniform candidates M per positive; the highest-scored one "
                                          "is the negative", group="Baseline samplers", ge=1)}

    def sample(self, ctx: BatchContext) -> NegativeBatch:
        cands = ctx.pool.draw(ctx.users, self.opts.candidates)  # (B, M)
        with torch.no_grad():
            scores = score_candidates(ctx.user_e, ctx.items_e[cands])
        items = cands.gather(1, scores.argmax(1, keepdim=True))[:, 0]
        return item_negative(ctx, items)

    @classmethod
    def epoch_flops(cls, cfg, batch, n_batches, device_type):
        return {"candidate scoring": 2 * batch * getattr(cfg, cls.field("candidates")) * cfg.dim * n_batches}

    @classmethod
    def search_space(cls, trial) -> dict:
        return {**super().search_space(trial),
                cls.field("candidates"): trial.suggest_int(cls.field("candidates"), 2, 64, log=True)}
