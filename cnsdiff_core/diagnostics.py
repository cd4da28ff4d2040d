"""False-hard-negative (FHN) and hardness diagnostics on a fixed probe of training triples.

What is measured (METHOD.md, "False hard negatives: how we measure them"):

- **The negative that is trained on.** For item samplers (RNS, PNS, DNS, AHNS) that is the item;
  for CNSDiff the mixed vector ``lam * h + (1 - lam) * e_random`` that enters BPR; for MixGCF its
  positive- and hop-mixed vector. The pre-mix candidate (CNSDiff's synthesized ``h``, MixGCF's
  hop-pooled candidate before positive mixing) is reported in its own row (``step = PRE_MIX``),
  beside the trained-on one, never instead of it; CNSDiff's per-step candidates get a row per step.
- **Resolution rule** (``RESOLUTION``): a vector resolves to the item nearest to it by Euclidean
  distance over *all* items, training items included. Euclidean, not cosine, because the score is
  an inner product and a vector's norm matters to it; all items, so that a vector that is a
  near-copy of the user's own training positive resolves to it and is counted as such
  (``own_positive``: "collapse onto the positive", the trap of METHOD.md made a number) instead of
  being silently re-resolved to a neighbour. ``own_train`` counts any training item of the user.
- **Observed FHN** = share of resolved negatives that are among the user's held-out positives
  (validation + IID test + OOD test), with a Wilson 95% interval (``fhn_lo``, ``fhn_hi``).
- **Nulls.** Item samplers are compared with uniform sampling (``uniform_rate``, and ``fhn_lift``
  = observed / uniform). A vector is compared with a *matched null*: its positive moved by the same
  Euclidean distance in a uniformly random direction, resolved by the same rule (``fhn_null`` with
  its interval; ``null_ratio`` = observed / null). Vectors placed next to a positive inherit the
  positive's neighbourhood, which uniform sampling ignores.
- **Ground truth** (synthetic worlds only): ``fhn_true`` = share of resolved negatives the user
  truly prefers under the simulator's preference model, with its Wilson interval.
- **Hardness** = s(u, negative) - s(u, positive); ``nn_dist`` = Euclidean distance of a vector to
  the item it resolves to, relative to the positive's norm (0 for items).

Diagnostics never feed back into training.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from .data.dataset import Dataset
from .samplers import BatchContext, NegativePool, Sampler

TRAINED = -1  # step code of the row for the negative that enters the loss
PRE_MIX = -2  # step code of the row for a vector sampler's candidate before mixing
RESOLUTION = ("a vector resolves to its nearest item by Euclidean distance over all items "
              "(training items included, so collapse onto the user's own positive is counted)")
Z95 = 1.959963984540054


def wilson(k: float, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval of a binomial proportion k / n ((nan, nan) when n == 0)."""
    if n <= 0:
        return float("nan"), float("nan")
    p = k / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    # rounding can leave the bound a hair beyond p at k = 0 or k = n; the interval always holds p
    return min(max(0.0, centre - half), p), max(min(1.0, centre + half), p)


def _keys(users: np.ndarray, items: np.ndarray, n_items: int) -> np.ndarray:
    return users.astype(np.int64) * n_items + items.astype(np.int64)


def _member(sorted_keys: torch.Tensor, keys: torch.Tensor) -> torch.Tensor:
    if len(sorted_keys) == 0:
        return torch.zeros_like(keys, dtype=torch.bool)
    idx = torch.searchsorted(sorted_keys, keys).clamp(max=len(sorted_keys) - 1)
    return sorted_keys[idx] == keys


@dataclass
class Probe:
    users: torch.Tensor  # (P,)
    pos: torch.Tensor  # (P,)
    rand_neg: torch.Tensor  # (P,)
    env: torch.Tensor  # (P,)
    train_keys: torch.Tensor  # sorted user * I + item of every training pair
    held_keys: torch.Tensor  # sorted user * I + item of every held-out pair not in training
    n_items: int
    uniform_rate: float  # FHN rate uniform sampling over non-training items gives on these triples

    def head(self, n: int) -> "Probe":
        """The first n triples (a random subset of users: the probe is in random order)."""
        return Probe(self.users[:n], self.pos[:n], self.rand_neg[:n], self.env[:n], self.train_keys,
                     self.held_keys, self.n_items, self.uniform_rate)

    def is_train(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        return _member(self.train_keys, users.long() * self.n_items + items.long())

    def is_held(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        return _member(self.held_keys, users.long() * self.n_items + items.long())


def make_probe(data: Dataset, pool: NegativePool, n_triples: int, device, seed: int = 12345,
               env: np.ndarray | None = None) -> Probe:
    """A fixed sample of `n_triples` training triples, spread over users: one triple from each of
    as many distinct users as possible (so the triples are close to independent for the Wilson
    intervals), then more triples of the same users only when there are fewer users than triples."""
    rng = np.random.default_rng(seed)
    train = data.train
    order = rng.permutation(len(train))
    _, first = np.unique(train[order, 0], return_index=True)  # one random row per user
    first_rows = order[first]
    rng.shuffle(first_rows)
    pick = first_rows[:n_triples]
    if len(pick) < n_triples:
        rest = np.setdiff1d(np.arange(len(train)), pick, assume_unique=True)
        pick = np.concatenate([pick, rng.choice(rest, size=min(n_triples - len(pick), len(rest)), replace=False)])
    users = train[pick, 0]
    I = data.n_items
    train_keys = np.unique(_keys(train[:, 0], train[:, 1], I))
    held = data.held_out()
    held_keys = np.unique(_keys(held[:, 0], held[:, 1], I))
    held_keys = held_keys[~np.isin(held_keys, train_keys)]
    n_train = np.bincount(train[:, 0], minlength=data.n_users)
    n_held = np.bincount(held_keys // I, minlength=data.n_users)
    uniform = float(np.mean(n_held[users] / np.maximum(I - n_train[users], 1))) if len(users) else 0.0
    u_t = torch.as_tensor(users, device=device)
    gen = torch.Generator(device=device).manual_seed(seed)  # never touches the global RNG
    rand_neg = pool.draw(u_t, 1, generator=gen)[:, 0]
    env_t = torch.as_tensor(env[pick] if env is not None else np.zeros(len(pick), np.int64), device=device)
    return Probe(u_t, torch.as_tensor(train[pick, 1], device=device), rand_neg, env_t,
                 torch.as_tensor(train_keys, device=device), torch.as_tensor(held_keys, device=device), I, uniform)


def resolve_to_items(vecs: torch.Tensor, items_e: torch.Tensor, chunk: int = 1024):
    """(P, d) vectors -> (P,) nearest item by Euclidean distance over all items, and that distance.

    argmin_i ||v - e_i||^2 = argmin_i (||e_i||^2 - 2 v.e_i): one matrix product per chunk of rows."""
    sq = (items_e * items_e).sum(-1)  # (I,)
    idx, dist = [], []
    for start in range(0, len(vecs), chunk):
        v = vecs[start:start + chunk]
        d2 = torch.addmm(sq.unsqueeze(0), v, items_e.T, alpha=-2)  # (C, I) = ||e||^2 - 2 v.e
        best, j = d2.min(1)
        idx.append(j)
        dist.append((best + (v * v).sum(-1)).clamp(min=0).sqrt())
    if not idx:
        return torch.zeros(0, dtype=torch.long, device=vecs.device), torch.zeros(0, device=vecs.device)
    return torch.cat(idx), torch.cat(dist)


def matched_null(vecs: torch.Tensor, anchors: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Each anchor moved by its vector's distance to it, in a uniformly random direction."""
    direction = F.normalize(torch.randn(vecs.shape, device=vecs.device, generator=generator), dim=-1)
    return anchors + (vecs - anchors).norm(dim=-1, keepdim=True) * direction


def _rate(name: str, hits: torch.Tensor) -> dict[str, float]:
    n = int(hits.numel())
    k = float(hits.float().sum()) if n else 0.0
    lo, hi = wilson(k, n)
    return {name: k / n if n else float("nan"), f"{name}_lo": lo, f"{name}_hi": hi}


@torch.no_grad()
def measure_negatives(probe: Probe, user_e: torch.Tensor, pos_e: torch.Tensor, items_e: torch.Tensor,
                      vec: torch.Tensor, items: torch.Tensor | None, truth=None,
                      generator: torch.Generator | None = None) -> tuple[dict, dict]:
    """The measures of the module doc for one set of probe negatives (one per probe triple).

    vec: (P, d) the negatives' vectors; items: (P,) their items for item samplers, None for
    synthesized vectors (resolved by RESOLUTION, with the matched null drawn from `generator`).
    Returns (row, per-triple arrays)."""
    synthesized = items is None
    s_pos = (user_e * pos_e).sum(-1)
    pos_norm = pos_e.norm(dim=-1).clamp(min=1e-12)
    dist = torch.zeros(len(vec), device=vec.device)
    if synthesized:
        items, dist = resolve_to_items(vec, items_e)
        dist = dist / pos_norm
    held = probe.is_held(probe.users, items)
    hard = (user_e * vec).sum(-1) - s_pos
    row = {"synthesized": synthesized, "n": int(len(vec)), **_rate("fhn", held),
           "own_positive": float((items == probe.pos).float().mean()) if len(vec) else float("nan"),
           "own_train": float(probe.is_train(probe.users, items).float().mean()) if len(vec) else float("nan"),
           "hardness_mean": float(hard.mean()), "hardness_q25": float(hard.quantile(0.25)),
           "hardness_median": float(hard.median()), "hardness_q75": float(hard.quantile(0.75)),
           "cos_to_pos": float(F.cosine_similarity(vec, pos_e, dim=-1).mean()), "nn_dist": float(dist.mean()),
           "norm_ratio": float((vec.norm(dim=-1) / pos_norm).mean()), "uniform_rate": probe.uniform_rate}
    row["fhn_lift"] = row["fhn"] / max(probe.uniform_rate, 1e-12)
    if synthesized:
        gen = generator if generator is not None else torch.Generator(device=vec.device).manual_seed(4242)
        null_items, _ = resolve_to_items(matched_null(vec, pos_e, gen), items_e)
        row |= _rate("fhn_null", probe.is_held(probe.users, null_items))
        row["null_ratio"] = row["fhn"] / row["fhn_null"] if row["fhn_null"] > 0 else float("nan")
    else:
        row |= {"fhn_null": float("nan"), "fhn_null_lo": float("nan"), "fhn_null_hi": float("nan"),
                "null_ratio": float("nan")}
    if truth is not None:
        rel = truth.is_relevant(probe.users.cpu().numpy(), items.cpu().numpy())
        row |= _rate("fhn_true", torch.as_tensor(rel))
    else:
        row |= {"fhn_true": float("nan"), "fhn_true_lo": float("nan"), "fhn_true_hi": float("nan")}
    arrays = {"items": items.cpu().numpy(), "hardness": hard.cpu().numpy(), "nn_dist": dist.cpu().numpy(),
              "fhn": held.cpu().numpy().astype(bool), "synthesized": np.array(synthesized)}
    if synthesized:  # an item sampler's vector is its item's embedding: the item index says it all
        arrays["vec"] = vec.cpu().numpy().astype(np.float32)
    return row, arrays


def vector_kind(step: int) -> str:
    return "negative" if step == TRAINED else "pre-mix" if step == PRE_MIX else "step"


@torch.no_grad()
def probe_diagnostics(samplers: dict[str, Sampler], probe: Probe, user_all: torch.Tensor,
                      items_e: torch.Tensor, layers: torch.Tensor | None, n_users: int, pool: NegativePool,
                      epoch: int, truth=None, keep_raw: bool = False, null_seed: int = 4242,
                      main: str | None = None, side_triples: int | None = None):
    """One row per sampler for its trained-on negative, one per pre-mix candidate (vector
    samplers) and one per CNSDiff step, with FHN (interval, collapse share, null), hardness and
    distances (see the module doc).

    Cost control: the run's own sampler (`main`) is measured on the whole probe; the other
    samplers (shown for comparison) and the per-step candidates on its first `side_triples`
    triples (None: the whole probe). Every row carries its `n`, so its interval is honest.
    Resolving vectors against every item is the expensive part (one (P, I) product each).

    Returns (rows, raw) where raw holds per-triple arrays when keep_raw (for snapshots), keyed by
    series name ('dns', 'cnsdiff', 'cnsdiff@premix', 'cnsdiff@10', ...)."""
    n_side = len(probe.users) if side_triples is None else min(int(side_triples), len(probe.users))
    side = probe.head(n_side)
    user_full = user_all[probe.users]
    pos_full = items_e[probe.pos]
    gen = torch.Generator(device=items_e.device).manual_seed(null_seed)
    rows, raw = [], {}

    def measure(name: str, step: int, pr: Probe, vec: torch.Tensor, items: torch.Tensor | None) -> None:
        n = len(pr.users)
        row, arrays = measure_negatives(pr, user_full[:n], pos_full[:n], items_e, vec[:n],
                                        None if items is None else items[:n], truth, gen)
        rows.append({"sampler": name, "step": step, "vector": vector_kind(step)} | row)
        if keep_raw and n == len(probe.users):  # snapshots keep whole-probe series only
            raw[series_key(name, step)] = arrays

    for name, sampler in samplers.items():
        own = main is None or name == main
        pr = probe if own or keep_raw else side
        n = len(pr.users)
        ctx = BatchContext(pr.users, pr.pos, pr.rand_neg, user_full[:n], pos_full[:n], items_e, layers, n_users,
                           epoch, pool, pr.env)
        nb = sampler.sample(ctx)
        measure(name, TRAINED, pr, nb.emb.detach(), nb.items)
        if nb.synthesized is not None and nb.items is None:
            measure(name, PRE_MIX, pr, nb.synthesized.detach(), None)
        if nb.candidates is not None:
            for k, s in enumerate(getattr(sampler, "steps", [])):
                measure(name, s, probe if keep_raw else side, nb.candidates[:, k], None)
    if keep_raw:
        raw["_probe"] = {"users": probe.users.cpu().numpy(), "pos": probe.pos.cpu().numpy(),
                         "s_pos": (user_full * pos_full).sum(-1).cpu().numpy()}
    return rows, raw


def series_key(sampler: str, step: int) -> str:
    """'dns' (trained-on negative), 'cnsdiff@premix' (pre-mix candidate), 'cnsdiff@10' (a step)."""
    step = int(step)
    if step == TRAINED:
        return sampler
    if step == PRE_MIX:
        return f"{sampler}@premix"
    return f"{sampler}@{step}"


def parse_series_key(key: str) -> tuple[str, int]:
    """Inverse of series_key: 'cnsdiff@14' -> ('cnsdiff', 14); 'dns' -> ('dns', TRAINED)."""
    base, _, step = key.partition("@")
    if not step:
        return base, TRAINED
    return base, PRE_MIX if step == "premix" else int(step)


def _num(v) -> float | None:
    try:
        v = float(v)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(v) else v


def fhn_summary(rows, sampler: str, epoch: int | None = None) -> dict:
    """The FHN figures of one sampler at one diagnosed epoch (the selected one; the last diagnosed
    epoch when `epoch` is None or was not diagnosed), as `train --json` reports them:
    observed (the trained-on negative) and observed_ci [low, high], own_positive, synthesized
    (the pre-mix rate of vector samplers, None for item samplers), synthesized_own_positive,
    null (matched null of the synthesized vector where defined, else None), lift (over uniform),
    uniform, true and true_ci on synthetic worlds, n (probe triples), epoch. {} without rows."""
    import pandas as pd

    diag = pd.DataFrame(rows)
    if diag.empty or "sampler" not in diag:
        return {}
    mine = diag[diag["sampler"] == sampler]
    if mine.empty:
        return {}
    epochs = mine["epoch"].unique() if "epoch" in mine else []
    if "epoch" in mine:
        ep = int(epoch) if epoch is not None and int(epoch) in epochs else int(max(epochs))
        mine = mine[mine["epoch"] == ep]
    else:
        ep = None
    trained = mine[mine["step"] == TRAINED]
    premix = mine[mine["step"] == PRE_MIX]
    if trained.empty:
        return {}
    t = trained.iloc[-1]
    out = {"epoch": ep, "n": int(t.get("n", 0) or 0), "observed": _num(t["fhn"]),
           "observed_ci": [_num(t.get("fhn_lo")), _num(t.get("fhn_hi"))],
           "own_positive": _num(t.get("own_positive")), "lift": _num(t.get("fhn_lift")),
           "uniform": _num(t.get("uniform_rate")), "synthesized": None, "synthesized_own_positive": None,
           "null": _num(t.get("fhn_null"))}
    if not premix.empty:
        p = premix.iloc[-1]
        out |= {"synthesized": _num(p["fhn"]), "synthesized_ci": [_num(p.get("fhn_lo")), _num(p.get("fhn_hi"))],
                "synthesized_own_positive": _num(p.get("own_positive")), "null": _num(p.get("fhn_null"))}
    true = _num(t.get("fhn_true"))
    if true is not None:
        out |= {"true": true, "true_ci": [_num(t.get("fhn_true_lo")), _num(t.get("fhn_true_hi"))]}
    return out
