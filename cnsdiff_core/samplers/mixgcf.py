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
            # score of a mixed candidate, without materializing the mix:
            # u.(a p + (1-a) c) = a (u.p) + (1-a) (u.c)
            s_up = torch.einsum("bd,bld->bl", u, p_l).unsqueeze(1)  # (B, 1, L+1)
            s_uc = candidate_scores(layers, u, ctx.n_users + cands)  # (B, M, L+1)
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


def candidate_scores(layers: torch.Tensor, u: torch.Tensor, rows: torch.Tensor, chunk: int = 64) -> torch.Tensor:
    """(B, M, L+1) inner products of each user's pooled embedding `u` (B, d) with the per-layer
    embeddings (`layers`, (L+1, N, d)) of its M candidate rows (`rows`, (B, M)).

    On a GPU one gather and one batched product. On a CPU the same batched product runs over
    blocks of `chunk` users whose gathered candidates (chunk x M x (L+1) x d) stay in cache and
    under malloc's mmap threshold; gathering all of them at once (134 MB per Food batch at M = 64)
    made the scoring 90% of a MixGCF epoch. Every block gives the same bits as the whole (the
    products are per user), which tests/test_samplers.py checks."""
    n_l, n, d = layers.shape
    B, M = rows.shape
    if layers.device.type != "cpu":
        return torch.einsum("bd,bmld->bml", u, layers[:, rows].permute(1, 2, 0, 3))
    flat = layers.reshape(n_l * n, d)
    idx = (rows.unsqueeze(-1) + torch.arange(n_l, device=rows.device) * n).view(B, M * n_l)
    out = torch.empty(B, M * n_l, 1, dtype=layers.dtype)
    buf = torch.empty(min(chunk, B) * M * n_l, d, dtype=layers.dtype)
    for s in range(0, B, chunk):
        e = min(B, s + chunk)
        c = torch.index_select(flat, 0, idx[s:e].reshape(-1), out=buf[:(e - s) * M * n_l])
        torch.bmm(c.view(e - s, M * n_l, d), u[s:e].unsqueeze(-1), out=out[s:e])
    return out.view(B, M, n_l)
