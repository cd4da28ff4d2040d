"""MixGCF (Huang et al. 2021): positive mixing per layer, then hop mixing picks, per layer, the
mixed candidate the pooled user embedding scores highest; the negative is the mean over layers (a
synthetic vector). As in the original code, every hop is scored against the user's pooled (mean
over layers) embedding, not that hop's user embedding."""
import torch

from ..settings import setting
from .base import BatchContext, NegativeBatch, Sampler


class MixGCFSampler(Sampler):
    name = "mixgcf"
    label = "MixGCF (mixing)"
    order = 40
    color = "#CC79A7"  # Okabe-Ito reddish purple
    marker = "diamond-open"  # open: a synthesized vector, not an item
    needs_layers = True
    synthesizes = True
    settings = {"candidates": setting(64, "MixGCF: uniform candidates per positive, mixed with it per layer",
                                      group="Baseline samplers", ge=1)}

    def sample(self, ctx: BatchContext) -> NegativeBatch:
        B, M = ctx.users.shape[0], self.opts.candidates
        cands = ctx.pool.draw(ctx.users, M)  # (B, M)
        layers = ctx.layers  # (L+1, U+I, d)
        n_l = layers.shape[0]
        p_l = layers[:, ctx.n_users + ctx.pos].transpose(0, 1)  # (B, L+1, d)
        alpha = torch.rand(B, 1, n_l, device=layers.device)  # (B, 1, L+1)
        with torch.no_grad():
            u = layers[:, ctx.users].mean(0)  # (B, d) pooled user embedding
            c_l = layers[:, ctx.n_users + cands].permute(1, 2, 0, 3)  # (B, M, L+1, d)
            # score of a mixed candidate, without materializing the mix:
            # u.(a p + (1-a) c) = a (u.p) + (1-a) (u.c)
            s_up = torch.einsum("bd,bld->bl", u, p_l).unsqueeze(1)  # (B, 1, L+1)
            s_uc = torch.einsum("bd,bmld->bml", u, c_l)  # (B, M, L+1)
            best = (alpha * s_up + (1 - alpha) * s_uc).argmax(1)  # (B, L+1)
        chosen_items = cands.gather(1, best)  # (B, L+1)
        c_best = layers[torch.arange(n_l, device=layers.device).unsqueeze(0),
                        ctx.n_users + chosen_items]  # (B, L+1, d), with grad
        a = alpha[:, 0, :].unsqueeze(-1)  # (B, L+1, 1)
        neg = (a * p_l + (1 - a) * c_best).mean(1)  # (B, d)
        # the pre-mix candidate (hop-pooled chosen candidates, no positive mixing), for diagnostics
        return NegativeBatch(emb=neg, items=None, reg_items=chosen_items[:, 0],
                             synthesized=c_best.detach().mean(1))

    @classmethod
    def epoch_flops(cls, cfg, batch, n_batches, device_type):
        m = getattr(cfg, cls.field("candidates"))
        return {"candidate scoring": 2 * batch * m * cfg.dim * (cfg.layers + 1) * n_batches}

    @classmethod
    def search_space(cls, trial) -> dict:
        # hop mixing runs over the backbone's layers; `layers` is shared by every sampler, so it is
        # not a MixGCF knob here (MixGCF has no hop setting of its own)
        return {**super().search_space(trial),
                cls.field("candidates"): trial.suggest_int(cls.field("candidates"), 8, 128, log=True)}
