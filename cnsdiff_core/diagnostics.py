"""False-hard-negative (FHN) and hardness diagnostics on a fixed probe of training triples.

METHOD.md: a chosen negative resolves to an item (itself, or for a synthesized vector its nearest
item by cosine among the user's non-training items); observed FHN = share of resolved negatives in
the user's held-out positives; lift = that over what uniform sampling gives; ground truth on
synthetic worlds; hardness = s(u, n) - s(u, i). Diagnostics never feed back into training.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from .data.dataset import Dataset
from .samplers import BatchContext, NegativePool, Sampler


@dataclass
class Probe:
    users: torch.Tensor  # (P,)
    pos: torch.Tensor  # (P,)
    rand_neg: torch.Tensor  # (P,)
    env: torch.Tensor  # (P,)
    row: torch.Tensor  # (P,) index of each triple's user among the probe users
    train_mask: torch.Tensor  # (n_probe_users, I) bool
    held_mask: torch.Tensor  # (n_probe_users, I) bool
    uniform_rate: float  # FHN rate uniform sampling would give on these triples


def make_probe(data: Dataset, pool: NegativePool, n_triples: int, device, seed: int = 12345,
               env: np.ndarray | None = None, max_users: int = 256) -> Probe:
    """A fixed sample of training triples from at most `max_users` users (bounded memory)."""
    rng = np.random.default_rng(seed)
    users_all = np.unique(data.train[:, 0])
    chosen_users = rng.choice(users_all, size=min(max_users, len(users_all)), replace=False)
    rows = np.flatnonzero(np.isin(data.train[:, 0], chosen_users))
    pick = rng.choice(rows, size=min(n_triples, len(rows)), replace=False)
    users = data.train[pick, 0]
    uniq, row = np.unique(users, return_inverse=True)
    I = data.n_items
    train_mask = np.zeros((len(uniq), I), dtype=bool)
    held_mask = np.zeros((len(uniq), I), dtype=bool)
    for arr, mask in ((data.train, train_mask), (data.held_out(), held_mask)):
        sel = np.isin(arr[:, 0], uniq)
        mask[np.searchsorted(uniq, arr[sel, 0]), arr[sel, 1]] = True
    n_train = train_mask.sum(1)
    n_held = (held_mask & ~train_mask).sum(1)
    uniform = float(np.mean(n_held[row] / np.maximum(I - n_train[row], 1)))
    u_t = torch.as_tensor(users, device=device)
    gen = torch.Generator(device=device).manual_seed(seed)  # never touches the global RNG
    rand_neg = pool.draw(u_t, 1, generator=gen)[:, 0]
    env_t = torch.as_tensor(env[pick] if env is not None else np.zeros(len(pick), np.int64), device=device)
    return Probe(u_t, torch.as_tensor(data.train[pick, 1], device=device), rand_neg, env_t,
                 torch.as_tensor(row, device=device), torch.as_tensor(train_mask, device=device),
                 torch.as_tensor(held_mask, device=device), uniform)


def resolve_to_items(vecs: torch.Tensor, items_e: torch.Tensor, train_mask_rows: torch.Tensor):
    """(P, d) vectors -> (P,) nearest item by cosine among non-training items, and 1 - cos."""
    cos = F.normalize(vecs, dim=-1) @ F.normalize(items_e, dim=-1).T  # (P, I)
    cos = cos.masked_fill(train_mask_rows, float("-inf"))
    best, idx = cos.max(1)
    return idx, 1 - best


@torch.no_grad()
def probe_diagnostics(samplers: dict[str, Sampler], probe: Probe, user_all: torch.Tensor,
                      items_e: torch.Tensor, layers: torch.Tensor | None, n_users: int, pool: NegativePool,
                      progress: float, truth=None, keep_raw: bool = False):
    """One row per sampler (and per CNSDiff step) with FHN, lift, hardness and distances.

    Returns (rows, raw) where raw holds per-triple arrays when keep_raw (for snapshots)."""
    user_e = user_all[probe.users]
    pos_e = items_e[probe.pos]
    s_pos = (user_e * pos_e).sum(-1)
    ctx = BatchContext(probe.users, probe.pos, probe.rand_neg, user_e, pos_e, items_e, layers, n_users,
                       progress, pool, probe.env)
    train_rows = probe.train_mask[probe.row]
    rows, raw = [], {}

    def summarize(name: str, step: int | None, vec: torch.Tensor, items: torch.Tensor | None) -> dict:
        synthesized = items is None
        dist = torch.zeros(len(vec), device=vec.device)
        if items is None:
            items, dist = resolve_to_items(vec, items_e, train_rows)
        hard = (user_e * vec).sum(-1) - s_pos
        fhn = probe.held_mask[probe.row, items].float()
        cos_pos = F.cosine_similarity(vec, pos_e, dim=-1)
        row = {"sampler": name, "step": -1 if step is None else step,
               "fhn": float(fhn.mean()), "fhn_lift": float(fhn.mean()) / max(probe.uniform_rate, 1e-12),
               "hardness_mean": float(hard.mean()), "hardness_q25": float(hard.quantile(0.25)),
               "hardness_median": float(hard.median()), "hardness_q75": float(hard.quantile(0.75)),
               "cos_to_pos": float(cos_pos.mean()), "nn_dist": float(dist.mean()),
               "norm_ratio": float((vec.norm(dim=-1) / pos_e.norm(dim=-1).clamp(min=1e-12)).mean())}
        if truth is not None:
            rel = truth.is_relevant(probe.users.cpu().numpy(), items.cpu().numpy())
            row["fhn_true"] = float(np.mean(rel))
        if keep_raw:
            key = name if step is None else f"{name}@{step}"
            raw[key] = {"items": items.cpu().numpy(), "hardness": hard.cpu().numpy(),
                        "nn_dist": dist.cpu().numpy(), "fhn": fhn.cpu().numpy().astype(bool),
                        "synthesized": np.array(synthesized),
                        "vec": vec.cpu().numpy().astype(np.float32)}
        return row

    for name, sampler in samplers.items():
        nb = sampler.sample(ctx)
        vec = nb.emb if nb.synthesized is None else nb.synthesized
        rows.append(summarize(name, None, vec.detach(), nb.items))
        if nb.candidates is not None:
            steps = getattr(sampler, "steps", [])
            for k, s in enumerate(steps):
                rows.append(summarize(name, s, nb.candidates[:, k], None))
    uniform_row = {"uniform_rate": probe.uniform_rate}
    for r in rows:
        r.update(uniform_row)
    if keep_raw:
        raw["_probe"] = {"users": probe.users.cpu().numpy(), "pos": probe.pos.cpu().numpy(),
                         "s_pos": s_pos.cpu().numpy()}
    return rows, raw
