"""RNS: one uniform random item the user has not trained on."""
from .base import BatchContext, NegativeBatch, Sampler, item_negative


class RandomSampler(Sampler):
    name = "rns"
    label = "RNS (uniform)"
    order = 10
    role = "uniform"
    color = "#56B4E9"  # Okabe-Ito sky blue
    marker = "circle"

    def sample(self, ctx: BatchContext) -> NegativeBatch:
        return item_negative(ctx, ctx.rand_neg)
