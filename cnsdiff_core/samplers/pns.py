"""PNS: items drawn with probability proportional to popularity ** 0.75 (word2vec-style)."""
from ..settings import setting
from .base import BatchContext, NegativeBatch, Sampler, item_negative


class PopularitySampler(Sampler):
    name = "pns"
    label = "PNS (popularity^0.75)"
    order = 20
    color = "#E69F00"  # Okabe-Ito orange
    marker = "square"
    settings = {"power": setting(0.75, "PNS draws items with probability popularity ** power (0 = uniform)",
                                 group="Baseline samplers", ge=0)}

    def sample(self, ctx: BatchContext) -> NegativeBatch:
        items = ctx.pool.draw(ctx.users, 1, power=self.opts.power)[:, 0]
        return item_negative(ctx, items)

    @classmethod
    def search_space(cls, trial) -> dict:
        return {**super().search_space(trial), cls.field("power"): trial.suggest_float(cls.field("power"), 0.0, 1.0)}
