"""How large the distribution shift between training and each test set of a Dataset is."""
from __future__ import annotations

import numpy as np

from .dataset import Dataset

def _gini(x: np.ndarray) -> float:
    x = np.sort(np.asarray(x, dtype=np.float64))
    if len(x) == 0 or x.sum() == 0:
        return 0.0
    n = len(x)
    return float((2 * np.arange(1, n + 1) - n - 1).dot(x) / (n * x.sum()))

def _kl(test_items: np.ndarray, train_pop: np.ndarray) -> float | None:
    """KL(P_test || P_train) of item frequency distributions (finite: test items are in train)."""
    if len(test_items) == 0:
        return None
    q = train_pop / train_pop.sum()
    c = np.bincount(test_items, minlength=len(train_pop)).astype(np.float64)
    p = c / c.sum()
    m = p > 0
    qm = np.maximum(q[m], 1e-12)
    return float((p[m] * np.log(p[m] / qm)).sum())

def shift_report(dataset: Dataset) -> dict:
    """How large the distribution shift between training and each test set is.

    Keys: counts per split; ``mean_train_pop_{valid,test_iid,test_ood}`` (mean training
    popularity of held-out items, per interaction); ``pop_ratio_ood_vs_iid``;
    ``kl_test_iid`` / ``kl_test_ood`` = KL(test item distribution || train item distribution)
    in nats; ``longtail_share_*`` (share of held-out interactions on the 80% least popular items);
    ``gini_train``; ``user_overlap_ood`` (share of OOD-test users also in IID test);
    ``time_ranges`` when timestamps exist; ``dropped`` counts when the split recorded them.
    """
    ds = dataset
    pop = ds.item_popularity().astype(np.float64)
    order = np.argsort(pop, kind="stable")
    tail = np.zeros(ds.n_items, dtype=bool)
    tail[order[: int(0.8 * ds.n_items)]] = True
    rep: dict = {"name": ds.name, "shift": ds.shift, "n_users": ds.n_users, "n_items": ds.n_items,
                 "counts": {k: int(len(getattr(ds, k))) for k in ("train", "valid", "test_iid", "test_ood")}}
    for split_name in ("valid", "test_iid", "test_ood"):
        arr = getattr(ds, split_name)
        rep[f"mean_train_pop_{split_name}"] = float(pop[arr[:, 1]].mean()) if len(arr) else None
        rep[f"longtail_share_{split_name}"] = float(tail[arr[:, 1]].mean()) if len(arr) else None
    rep["mean_train_pop_train"] = float(pop[ds.train[:, 1]].mean()) if len(ds.train) else None
    a, b = rep["mean_train_pop_test_ood"], rep["mean_train_pop_test_iid"]
    rep["pop_ratio_ood_vs_iid"] = (a / b) if a is not None and b else None
    rep["kl_test_iid"] = _kl(ds.test_iid[:, 1], pop) if pop.sum() else None
    rep["kl_test_ood"] = _kl(ds.test_ood[:, 1], pop) if pop.sum() else None
    rep["gini_train"] = _gini(pop)
    iid_users = np.unique(ds.test_iid[:, 0])
    ood_users = np.unique(ds.test_ood[:, 0])
    rep["user_overlap_ood"] = float(np.isin(ood_users, iid_users).mean()) if len(ood_users) else None
    meta = getattr(ds, "split_meta", None) or {}
    if "time_ranges" in meta:
        rep["time_ranges"] = meta["time_ranges"]
    elif ds.train_time is not None and len(ds.train_time):
        rep["time_ranges"] = {"train": (int(ds.train_time.min()), int(ds.train_time.max()))}
    if "dropped_unknown" in meta:
        rep["dropped"] = {"unknown_user_or_item": meta["dropped_unknown"],
                          "also_in_train": meta["removed_in_train"],
                          "ood_also_valid_or_iid": int(meta.get("ood_also_heldout", 0))}
    return rep
