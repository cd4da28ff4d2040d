"""Full-ranking metrics (Recall, NDCG, Precision, Hit @K) and recommendation popularity.

Scores are computed for chunks of users and ranked with torch.topk; training items are masked.
Metric code is checked against hand-computed cases in tests/test_metrics.py.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch

from . import fastops

KS = (10, 20)


@dataclass
class EvalResult:
    metrics: dict[str, float]  # e.g. recall@20, ndcg@10, rec_pop@20, tail_share@20, users
    users: np.ndarray  # (n,) evaluated users (those with >= 1 test item)
    per_user: dict[str, np.ndarray]  # recall@20 / ndcg@20 per evaluated user, for paired tests
    top: np.ndarray | None = None  # (n, K) recommended items per evaluated user, when asked


def _group(pairs: np.ndarray, n_users: int) -> tuple[np.ndarray, np.ndarray]:
    """CSR-style (indptr, items) of pairs grouped by user."""
    order = np.argsort(pairs[:, 0], kind="stable")
    items = pairs[order, 1].astype(np.int64)
    indptr = np.concatenate([[0], np.cumsum(np.bincount(pairs[:, 0], minlength=n_users))])
    return indptr, items


def _rows(indptr: np.ndarray, items: np.ndarray, users: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(row index within the chunk, item) for every pair of the given users, vectorized."""
    starts, ends = indptr[users], indptr[users + 1]
    counts = ends - starts
    rows = np.repeat(np.arange(len(users)), counts)
    offsets = np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts)
    return rows, items[np.repeat(starts, counts) + offsets]


def long_tail_items(popularity: np.ndarray, head_share: float = 0.2) -> np.ndarray:
    """(I,) bool: items outside the `head_share` most popular ones."""
    n_head = int(np.ceil(len(popularity) * head_share))
    head = np.argsort(-popularity, kind="stable")[:n_head]
    tail = np.ones(len(popularity), dtype=bool)
    tail[head] = False
    return tail


@torch.no_grad()
def evaluate(score_fn: Callable[[torch.Tensor], torch.Tensor], train: np.ndarray, test: np.ndarray,
             n_users: int, n_items: int, device: torch.device | str = "cpu", ks=KS,
             popularity: np.ndarray | None = None, batch_users: int = 1024,
             return_top: bool = False) -> EvalResult:
    """Rank all items for every user with a test item; score_fn(users (C,)) -> (C, I) scores.

    Everything per chunk stays on the device (scores, masking, top-k, hits, the metric sums, in
    float64 as Python's floats were): the host waits once, at the end."""
    device = torch.device(device)
    ks = tuple(sorted(ks))
    kmax = min(max(ks), n_items)
    if len(test):  # a pair given twice is one held-out item (the counts below are taken from the pairs)
        keys = test[:, 0].astype(np.int64) * n_items + test[:, 1]
        unique = np.unique(keys)
        if len(unique) != len(keys):
            test = np.stack([unique // n_items, unique % n_items], axis=1)
    test_users = np.unique(test[:, 0]) if len(test) else np.zeros(0, dtype=np.int64)
    tr_ptr, tr_items = _group(train, n_users)
    te_ptr, te_items = _group(test, n_users) if len(test) else (np.zeros(n_users + 1, np.int64), test[:, 1])
    pop = np.bincount(train[:, 1], minlength=n_items) if popularity is None else popularity
    pop_t = torch.as_tensor(pop, dtype=torch.float32, device=device)
    tail_t = torch.as_tensor(long_tail_items(pop), device=device)
    disc = 1.0 / torch.log2(torch.arange(kmax, device=device, dtype=torch.float32) + 2)  # (K,)
    names = [f"{m}@{k}" for k in ks for m in ("recall", "ndcg", "precision", "hit", "rec_pop", "tail_share")]
    sums = torch.zeros(len(names), dtype=torch.float64, device=device)
    per_recall, per_ndcg, tops = [], [], []
    # bound the (C, I) score and truth blocks to ~32M entries whatever the catalogue size
    batch_users = max(1, min(batch_users, 32_000_000 // max(n_items, 1)))
    # the (row, item) pairs to mask and to hit, for all evaluated users at once, moved to the
    # device once; each chunk of users takes a contiguous slice of them
    seen_at, seen_row, seen_item = _pairs_on(device, tr_ptr, tr_items, test_users, batch_users)
    true_at, true_row, true_item = _pairs_on(device, te_ptr, te_items, test_users, batch_users)
    users_t = torch.as_tensor(test_users, device=device)
    for c, start in enumerate(range(0, len(test_users), batch_users)):
        users = users_t[start:start + batch_users]
        C = len(users)
        scores = score_fn(users).float()  # (C, I)
        a, b = seen_at[c], seen_at[c + 1]
        scores[seen_row[a:b], seen_item[a:b]] = float("-inf")
        top = torch.topk(scores, kmax, dim=1).indices  # (C, K)
        if return_top:
            tops.append(top)
        a, b = true_at[c], true_at[c + 1]
        truth = torch.zeros(C, n_items, dtype=torch.bool, device=device)
        truth[true_row[a:b], true_item[a:b]] = True
        # held-out items per user, counted from the pairs (a row sum of the (C, I) block took 40% of
        # a Food validation); the same integers
        n_true = torch.bincount(true_row[a:b], minlength=C).float()  # (C,)
        hits = truth.gather(1, top).float()  # (C, K)
        chunk = []
        for k in ks:
            h = hits[:, :k]
            nh = h.sum(1)
            recall = nh / n_true
            dcg = (h * disc[:k]).sum(1)
            ideal_len = n_true.clamp(max=k).long()
            idcg = torch.cumsum(disc[:k], 0)[ideal_len - 1]
            ndcg = dcg / idcg
            chunk += [recall.sum(), ndcg.sum(), (nh / k).sum(), (nh > 0).float().sum(),
                      pop_t[top[:, :k]].mean(1).sum(), tail_t[top[:, :k]].float().mean(1).sum()]
            if k == ks[-1]:
                per_recall.append(recall)
                per_ndcg.append(ndcg)
        sums += torch.stack(chunk).double()
    n = max(len(test_users), 1)
    metrics = {key: val / n for key, val in zip(names, sums.tolist())}
    metrics["users"] = float(len(test_users))
    kk = ks[-1]
    per_user = {f"recall@{kk}": torch.cat(per_recall).cpu().numpy() if per_recall else np.zeros(0),
                f"ndcg@{kk}": torch.cat(per_ndcg).cpu().numpy() if per_ndcg else np.zeros(0)}
    return EvalResult(metrics, test_users, per_user, torch.cat(tops).cpu().numpy() if tops else None)


def _pairs_on(device, indptr: np.ndarray, items: np.ndarray, users: np.ndarray, chunk: int):
    """(offsets per chunk on the host, row within its chunk, item) of every pair of `users`."""
    rows, its = _rows(indptr, items, users)
    rows = rows % chunk  # users are taken in order, `chunk` at a time: the row within the chunk
    ends = np.cumsum(indptr[users + 1] - indptr[users])
    at = [0] + [int(ends[min(c + chunk, len(users)) - 1]) for c in range(0, len(users), chunk)]
    return at, torch.as_tensor(rows, device=device), torch.as_tensor(its, device=device)


def embedding_scorer(user_e: torch.Tensor, item_e: torch.Tensor) -> Callable[[torch.Tensor], torch.Tensor]:
    return lambda users: fastops.mm(user_e[users], item_e.T)  # on a CPU: oneDNN, the same scores


def popularity_scorer(popularity: np.ndarray, device="cpu") -> Callable[[torch.Tensor], torch.Tensor]:
    """MostPop: every user gets the items ranked by training popularity."""
    pop = torch.as_tensor(popularity, dtype=torch.float32, device=device)
    return lambda users: pop.unsqueeze(0).expand(len(users), -1).clone()


def paired_test(a: np.ndarray, b: np.ndarray) -> dict[str, float]:
    """Wilcoxon signed-rank and paired t-test of two per-user metric arrays on the same users."""
    from scipy import stats

    diff = np.asarray(a, dtype=float) - np.asarray(b, dtype=float)
    out = {"n_users": float(len(diff)), "mean_diff": float(diff.mean()) if len(diff) else 0.0}
    if len(diff) < 2 or np.allclose(diff, 0):
        out.update(wilcoxon_p=1.0, ttest_p=1.0)
        return out
    out["wilcoxon_p"] = float(stats.wilcoxon(a, b, zero_method="zsplit").pvalue)
    out["ttest_p"] = float(stats.ttest_rel(a, b).pvalue)
    return out
