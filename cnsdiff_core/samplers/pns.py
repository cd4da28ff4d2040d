"""PNS: items drawn with probability proportional to popularity ** 0.75 (word2vec-style)."""
from .base import BatchContext, NegativeBatch, Sampler, item_negative


class PopularitySampler(Sampler):
    name = "pns"

    def sample(self, ctx: BatchContext) -> NegativeBatch:
        items = ctx.pool.draw(ctx.users, 1, weighted=True)[:, 0]
        return item_negative(ctx, items)

    @classmethod
    def search_space(cls, trial) -> dict:
        return {**super().search_space(trial), "pns_power": trial.suggest_float("pns_power", 0.0, 1.0)}
