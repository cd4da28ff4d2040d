"""PNS: items drawn with probability proportional to popularity ** 0.75 (word2vec-style)."""
from .base import BatchContext, NegativeBatch, Sampler, item_negative


class PopularitySampler(Sampler):
    name = "pns"

    def sample(self, ctx: BatchContext) -> NegativeBatch:
        items = ctx.pool.draw(ctx.users, 1, weighted=True)[:, 0]
        return item_negative(ctx, items)
