"""Turning one positive interaction log into a `Dataset` with IID and OOD test sets.

Every split is deterministic for a seed and shares these rules:

- the log is de-duplicated first (counted in the notes);
- one random interaction of every user and of every item is locked into training, so a split
  never empties a user or an item out of the training set (temporal OOD parts excepted: a user
  who only appears late cannot be trained on);
- the in-distribution part is split train 5 : valid 1 : test 2 by default (``iid_ratios``);
- held-out pairs that are also training pairs are removed, and held-out pairs whose user or item
  has no training interaction are dropped; OOD-test pairs that are also validation or IID-test
  pairs are dropped from the OOD test; all are counted in ``notes`` and in
  ``dataset.split_meta`` (an extra attribute, see below).

Shifts:

- ``popularity``: the OOD test is drawn so that its items are close to uniform in popularity: at
  most ``cap`` interactions per item (``cap=None`` picks the smallest cap that fills
  ``ood_frac`` of the log), like the Yelp2018 benchmark construction.
- ``temporal``: the OOD test is the latest ``ood_frac`` of the log by timestamp (ties at the cut
  all go to the OOD side, so every OOD timestamp is >= every in-distribution one).
- ``exposure``: the OOD test is a separately collected set under random exposure (``random_test``);
  the log gives the in-distribution parts.
- ``random``: the no-shift control: the "OOD" test is just a further random slice of
  ``ood_frac`` of the log, so IID and OOD metrics should agree up to noise.

Each returned Dataset carries an extra attribute ``split_meta`` (a dict: shift parameters,
counts dropped, and per-split time ranges when timestamps exist). It is not a dataclass field, so
copies made with ``dataclasses.replace`` lose it; `shift_report` works without it.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .dataset import SHIFTS, DataError, Dataset

DEFAULT_RATIOS = (5, 1, 2)


@dataclass
class InteractionLog:
    """One positive interaction log with dense ids (the input of every split)."""

    pairs: np.ndarray  # (n, 2) int64 dense (user, item)
    n_users: int
    n_items: int
    times: np.ndarray | None = None  # (n,) int64 timestamps
    user_ids: np.ndarray | None = None
    item_ids: np.ndarray | None = None
    item_titles: np.ndarray | None = None
    name: str = "log"
    source: str = ""
    notes: list[str] = field(default_factory=list)
    truth: object = None


def as_log(log, times=None, n_users=None, n_items=None, name="log") -> InteractionLog:
    """Accept an `InteractionLog` or an (n, 2) array of dense pairs."""
    if isinstance(log, InteractionLog):
        lg = log
    else:
        pairs = np.asarray(log)
        if pairs.ndim != 2 or pairs.shape[1] != 2:
            raise DataError(f"Interaction pairs must have shape (n, 2), got {pairs.shape}.")
        pairs = pairs.astype(np.int64)
        nu = int(pairs[:, 0].max()) + 1 if n_users is None and len(pairs) else int(n_users or 0)
        ni = int(pairs[:, 1].max()) + 1 if n_items is None and len(pairs) else int(n_items or 0)
        lg = InteractionLog(pairs, nu, ni, None if times is None else np.asarray(times), name=name)
    p = np.asarray(lg.pairs, dtype=np.int64).reshape(-1, 2)
    if len(p) == 0:
        raise DataError(f"Log {lg.name!r} has no interactions to split; load a non-empty log.")
    if p.min() < 0 or p[:, 0].max() >= lg.n_users or p[:, 1].max() >= lg.n_items:
        raise DataError(f"Log {lg.name!r} has ids outside [0, n_users) x [0, n_items); "
                        f"map ids to dense indices first.")
    if lg.times is not None and len(lg.times) != len(p):
        raise DataError(f"Log {lg.name!r} has {len(lg.times)} timestamps for {len(p)} pairs; "
                        f"give one timestamp per interaction.")
    lg.pairs = p
    if lg.times is not None:
        lg.times = np.asarray(lg.times, dtype=np.int64)
    return lg


# ----------------------------------------------------------------------------- helpers


def _keys(pairs: np.ndarray, n_items: int) -> np.ndarray:
    return pairs[:, 0].astype(np.int64) * np.int64(max(n_items, 1)) + pairs[:, 1]


def _dedupe(lg: InteractionLog, notes: list[str]) -> tuple[np.ndarray, np.ndarray | None]:
    """Unique pairs (earliest timestamp kept), in a canonical order."""
    p, t = lg.pairs, lg.times
    order = np.lexsort((t, _keys(p, lg.n_items))) if t is not None else \
        np.argsort(_keys(p, lg.n_items), kind="stable")
    k = _keys(p, lg.n_items)[order]
    first = np.ones(len(k), dtype=bool)
    first[1:] = k[1:] != k[:-1]
    idx = order[first]
    if len(idx) < len(p):
        notes.append(f"Removed {len(p) - len(idx):,} duplicated (user, item) pairs from the log.")
    idx.sort()
    return p[idx], (None if t is None else t[idx])


def _lock(pairs: np.ndarray, candidates: np.ndarray, rng) -> np.ndarray:
    """Bool mask over ``pairs``: one random candidate row per user and per item."""
    lock = np.zeros(len(pairs), dtype=bool)
    if len(candidates) == 0:
        return lock
    perm = rng.permutation(candidates)
    for col in (0, 1):
        _, first = np.unique(pairs[perm, col], return_index=True)
        lock[perm[first]] = True
    return lock


def _ratios(iid_ratios) -> tuple[float, float]:
    r = np.asarray(iid_ratios, dtype=np.float64)
    if r.shape != (3,) or (r < 0).any() or r[0] <= 0:
        raise DataError(f"iid_ratios must be three non-negative numbers train:valid:test with "
                        f"train > 0, got {tuple(iid_ratios)}.")
    return float(r[1] / r.sum()), float(r[2] / r.sum())


def _check_frac(ood_frac: float) -> float:
    f = float(ood_frac)
    if not 0 < f < 0.9:
        raise DataError(f"ood_frac must be between 0 and 0.9, got {ood_frac}.")
    return f


def _iid_split(part: np.ndarray, pairs: np.ndarray, rng, valid_share, test_share):
    """Split row indices ``part`` into train/valid/test, locking one row per user and item."""
    lock = _lock(pairs, part, rng)
    free = part[~lock[part]]
    free = rng.permutation(free)
    n_valid = min(int(round(valid_share * len(part))), len(free))
    n_test = min(int(round(test_share * len(part))), len(free) - n_valid)
    valid = np.sort(free[:n_valid])
    test = np.sort(free[n_valid:n_valid + n_test])
    train = np.sort(np.concatenate([part[lock[part]], free[n_valid + n_test:]]))
    return train, valid, test


def _time_range(t):
    return None if t is None or len(t) == 0 else (int(t.min()), int(t.max()))


def _assemble(lg: InteractionLog, pairs, times, train, held: dict, shift: str, notes: list[str],
              meta: dict) -> Dataset:
    """Build the Dataset: clean held-out sets against training and record what was dropped.

    ``train``: row indices into ``pairs``; ``held``: split name -> (pairs, times or None) for
    valid, test_iid and test_ood.
    """
    tr = pairs[train]
    train_keys = np.unique(_keys(tr, lg.n_items))
    has_u = np.zeros(lg.n_users, dtype=bool)
    has_u[tr[:, 0]] = True
    has_i = np.zeros(lg.n_items, dtype=bool)
    has_i[tr[:, 1]] = True
    dropped = dict(meta.pop("dropped_before", {}))
    overlap = {}
    out, out_t = {}, {}
    for split_name in ("valid", "test_iid", "test_ood"):
        arr, t = held[split_name]
        arr = np.asarray(arr, dtype=np.int64).reshape(-1, 2)
        k = _keys(arr, lg.n_items)
        _, first = np.unique(k, return_index=True)
        dup = len(arr) - len(first)
        first.sort()
        arr, k = arr[first], k[first]
        t = None if t is None else np.asarray(t)[first]
        in_train = np.isin(k, train_keys)
        known = has_u[arr[:, 0]] & has_i[arr[:, 1]]
        keep = known & ~in_train
        overlap[split_name] = int(in_train.sum())
        n_drop = int((~known & ~in_train).sum())
        dropped[split_name] = dropped.get(split_name, 0) + n_drop
        label = {"valid": "validation", "test_iid": "IID-test", "test_ood": "OOD-test"}[split_name]
        if dup:
            notes.append(f"Removed {dup:,} duplicated {label} pairs.")
        if overlap[split_name]:
            notes.append(f"Removed {overlap[split_name]:,} {label} pairs that are also training pairs.")
        if n_drop:
            notes.append(f"Dropped {n_drop:,} {label} pairs whose user or item has no training "
                         f"interaction.")
        out[split_name] = arr[keep]
        out_t[split_name] = None if t is None else t[keep]
    # an OOD-test pair that is also a validation or IID-test pair is not out of distribution
    # (METHOD.md, evaluation protocol): drop it from the OOD test and count it
    ood_k = _keys(out["test_ood"], lg.n_items)
    also = np.isin(ood_k, np.concatenate([_keys(out["valid"], lg.n_items), _keys(out["test_iid"], lg.n_items)]))
    n_also = int(also.sum())
    if n_also:
        notes.append(f"Removed {n_also:,} OOD-test pairs that are also validation or IID-test pairs.")
        out["test_ood"] = out["test_ood"][~also]
        out_t["test_ood"] = None if out_t["test_ood"] is None else out_t["test_ood"][~also]
    meta = dict(meta)
    meta["dropped_unknown"] = dropped
    meta["removed_in_train"] = overlap
    meta["ood_also_heldout"] = n_also
    if times is not None:
        meta["time_ranges"] = {"train": _time_range(times[train]),
                               **{k: _time_range(v) for k, v in out_t.items()}}
    ds = Dataset(name=lg.name, shift=shift, n_users=lg.n_users, n_items=lg.n_items, train=tr,
                 valid=out["valid"], test_iid=out["test_iid"], test_ood=out["test_ood"],
                 train_time=None if times is None else times[train].astype(np.int64),
                 user_ids=lg.user_ids, item_ids=lg.item_ids, item_titles=lg.item_titles,
                 truth=lg.truth, notes=list(lg.notes) + notes, source=lg.source)
    ds.split_meta = meta
    return ds


def _rows(pairs, times, rows):
    return pairs[rows], (None if times is None else times[rows])


# ----------------------------------------------------------------------------- splits


def popularity_split(log, seed: int = 0, ood_frac: float = 0.15, cap: int | None = None,
                     iid_ratios=DEFAULT_RATIOS) -> Dataset:
    """OOD test with items close to uniform in popularity (at most ``cap`` pairs per item)."""
    lg = as_log(log)
    frac = _check_frac(ood_frac)
    vs, ts = _ratios(iid_ratios)
    notes: list[str] = []
    pairs, times = _dedupe(lg, notes)
    rng = np.random.default_rng([seed, 1])
    n = len(pairs)
    lock = _lock(pairs, np.arange(n), rng)
    free = rng.permutation(np.flatnonzero(~lock))
    # rank of each free row within its item, in random order
    items = pairs[free, 1]
    order = np.argsort(items, kind="stable")
    sorted_items = items[order]
    starts = np.searchsorted(sorted_items, sorted_items, side="left")
    rank = np.empty(len(free), dtype=np.int64)
    rank[order] = np.arange(len(free)) - starts
    avail = np.bincount(items, minlength=lg.n_items)
    target = int(round(frac * n))
    if cap is None:
        lo, hi = 1, max(int(avail.max()) if len(avail) else 1, 1)
        while lo < hi:  # smallest cap whose capped total reaches the target
            mid = (lo + hi) // 2
            if np.minimum(avail, mid).sum() >= target:
                hi = mid
            else:
                lo = mid + 1
        c = lo
    else:
        c = int(cap)
        if c < 1:
            raise DataError(f"cap must be a positive number of interactions per item, got {cap}.")
    below = rank < c - 1
    level = np.flatnonzero(rank == c - 1)
    need = max(target - int(below.sum()), 0)
    chosen = np.concatenate([np.flatnonzero(below), rng.permutation(level)[:need]])
    if len(chosen) > target:  # explicit cap larger than needed: subsample uniformly
        chosen = rng.permutation(chosen)[:target]
    ood_rows = np.sort(free[chosen])
    is_ood = np.zeros(n, dtype=bool)
    is_ood[ood_rows] = True
    train, valid, test = _iid_split(np.flatnonzero(~is_ood), pairs, rng, vs, ts)
    notes.insert(0, f"Popularity split (seed {seed}): OOD test = {len(ood_rows):,} interactions "
                    f"with at most {c} per item; in-distribution part split train:valid:test "
                    f"{':'.join(str(x) for x in iid_ratios)}.")
    meta = {"shift": "popularity", "seed": seed, "ood_frac": frac, "cap": c}
    return _assemble(lg, pairs, times, train, {"valid": _rows(pairs, times, valid),
                     "test_iid": _rows(pairs, times, test), "test_ood": _rows(pairs, times, ood_rows)},
                     "popularity", notes, meta)


def temporal_split(log, seed: int = 0, ood_frac: float = 0.15, iid_ratios=DEFAULT_RATIOS) -> Dataset:
    """OOD test = the latest ``ood_frac`` of the log; IID parts random from the earlier period."""
    lg = as_log(log)
    if lg.times is None:
        raise DataError(f"A temporal split needs timestamps and log {lg.name!r} has none; "
                        f"choose the popularity or random shift.")
    frac = _check_frac(ood_frac)
    vs, ts = _ratios(iid_ratios)
    notes: list[str] = []
    pairs, times = _dedupe(lg, notes)
    rng = np.random.default_rng([seed, 2])
    n = len(pairs)
    if n < 2:
        raise DataError(f"Log {lg.name!r} has a single distinct interaction, too few for a temporal "
                        f"split; load a larger log.")
    st = np.sort(times)
    k = min(max(int(round(frac * n)), 1), n - 1)
    cut = st[n - k]
    late = times >= cut
    if late.all() or late.sum() > max(2 * k, n // 2):  # too many ties at the cut: try strictly later
        alt = times > cut
        if alt.any() and not alt.all():
            late, cut = alt, st[np.searchsorted(st, cut, side="right")]
    if late.all() or not late.any():
        raise DataError(f"Timestamps of log {lg.name!r} do not vary enough to hold out the latest "
                        f"{frac:.0%}; choose another shift.")
    ood_rows = np.flatnonzero(late)
    train, valid, test = _iid_split(np.flatnonzero(~late), pairs, rng, vs, ts)
    notes.insert(0, f"Temporal split (seed {seed}): OOD test = the {len(ood_rows):,} interactions "
                    f"at or after timestamp {int(cut)}; earlier part split train:valid:test "
                    f"{':'.join(str(x) for x in iid_ratios)}.")
    meta = {"shift": "temporal", "seed": seed, "ood_frac": frac, "cut": int(cut)}
    return _assemble(lg, pairs, times, train, {"valid": _rows(pairs, times, valid),
                     "test_iid": _rows(pairs, times, test), "test_ood": _rows(pairs, times, ood_rows)},
                     "temporal", notes, meta)


def exposure_split(log, random_test, seed: int = 0, iid_ratios=DEFAULT_RATIOS) -> Dataset:
    """OOD test = positives collected under random exposure (``random_test``, dense (m, 2))."""
    lg = as_log(log)
    if random_test is None:
        raise DataError(f"An exposure split needs a test set collected under random exposure, and "
                        f"none was given for {lg.name!r}; choose another shift.")
    rt = np.asarray(random_test, dtype=np.int64).reshape(-1, 2) if len(random_test) else \
        np.zeros((0, 2), dtype=np.int64)
    if len(rt) and (rt.min() < 0 or rt[:, 0].max() >= lg.n_users or rt[:, 1].max() >= lg.n_items):
        raise DataError("The random-exposure test set has ids outside the log's id range; map it "
                        "with the same id maps as the log.")
    vs, ts = _ratios(iid_ratios)
    notes: list[str] = []
    pairs, times = _dedupe(lg, notes)
    rng = np.random.default_rng([seed, 3])
    train, valid, test = _iid_split(np.arange(len(pairs)), pairs, rng, vs, ts)
    notes.insert(0, f"Exposure split (seed {seed}): OOD test = {len(rt):,} positives observed under "
                    f"random exposure; the log is split train:valid:test "
                    f"{':'.join(str(x) for x in iid_ratios)}.")
    meta = {"shift": "exposure", "seed": seed}
    return _assemble(lg, pairs, times, train, {"valid": _rows(pairs, times, valid),
                     "test_iid": _rows(pairs, times, test), "test_ood": (rt, None)},
                     "exposure", notes, meta)


def random_split(log, seed: int = 0, ood_frac: float = 0.15, iid_ratios=DEFAULT_RATIOS) -> Dataset:
    """No-shift control: the 'OOD' test is one more random slice of the log."""
    lg = as_log(log)
    frac = _check_frac(ood_frac)
    vs, ts = _ratios(iid_ratios)
    notes: list[str] = []
    pairs, times = _dedupe(lg, notes)
    rng = np.random.default_rng([seed, 4])
    n = len(pairs)
    lock = _lock(pairs, np.arange(n), rng)
    free = rng.permutation(np.flatnonzero(~lock))
    ood_rows = np.sort(free[: int(round(frac * n))])
    is_ood = np.zeros(n, dtype=bool)
    is_ood[ood_rows] = True
    train, valid, test = _iid_split(np.flatnonzero(~is_ood), pairs, rng, vs, ts)
    notes.insert(0, f"Random split (seed {seed}): no shift; the 'OOD' test is a further random "
                    f"{frac:.0%} slice, a control where IID and OOD results should agree.")
    meta = {"shift": "random", "seed": seed, "ood_frac": frac}
    return _assemble(lg, pairs, times, train, {"valid": _rows(pairs, times, valid),
                     "test_iid": _rows(pairs, times, test), "test_ood": _rows(pairs, times, ood_rows)},
                     "random", notes, meta)


def given_split(log, shift: str, valid=None, test_iid=None, test_ood=None, seed: int = 0,
                valid_share: float = 0.1, test_share: float = 0.2, dropped_before: dict | None = None,
                extra_notes: list[str] | None = None) -> Dataset:
    """Keep splits that a source already provides; carve the missing IID ones from the log.

    ``log`` is the training log; ``valid`` / ``test_iid`` / ``test_ood`` are dense (m, 2) arrays
    or None. A missing validation set is carved as ``valid_share`` of the log, a missing IID test
    as ``test_share`` (random, seeded, one pair per user and item locked in training). A missing
    OOD test stays empty.
    """
    if shift not in SHIFTS:
        raise DataError(f"Shift {shift!r} is unknown; use one of {', '.join(SHIFTS)}.")
    lg = as_log(log)
    notes: list[str] = list(extra_notes or [])
    pairs, times = _dedupe(lg, notes)
    rng = np.random.default_rng([seed, 5])
    vs = valid_share if valid is None else 0.0
    ts = test_share if test_iid is None else 0.0
    if vs or ts:
        train, cv, ct = _iid_split(np.arange(len(pairs)), pairs, rng, vs, ts)
    else:
        train, cv, ct = np.arange(len(pairs)), np.zeros(0, np.int64), np.zeros(0, np.int64)
    if valid is None:
        notes.append(f"No validation file: carved a random {vs:.0%} of the training interactions "
                     f"as validation (seed {seed}).")
    if test_iid is None:
        notes.append(f"No IID test file: carved a random {ts:.0%} of the training interactions as "
                     f"the IID test (seed {seed}).")
    empty = (np.zeros((0, 2), np.int64), None)
    held = {"valid": _rows(pairs, times, cv) if valid is None else (valid, None),
            "test_iid": _rows(pairs, times, ct) if test_iid is None else (test_iid, None),
            "test_ood": empty if test_ood is None else (test_ood, None)}
    if test_ood is None:
        notes.append("No OOD test file: the OOD test set is empty.")
    meta = {"shift": shift, "seed": seed, "given": [k for k, v in
            (("valid", valid), ("test_iid", test_iid), ("test_ood", test_ood)) if v is not None],
            "dropped_before": dict(dropped_before or {})}
    return _assemble(lg, pairs, times, train, held, shift, notes, meta)


# the names used in the docs and the registry
popularity = popularity_split
temporal = temporal_split
exposure = exposure_split
random = random_split


def split(log, shift: str, seed: int = 0, random_test=None, **kw) -> Dataset:
    """Dispatch to the split for ``shift`` (one of SHIFTS)."""
    if shift not in SHIFTS:
        raise DataError(f"Shift {shift!r} is unknown; use one of {', '.join(SHIFTS)}.")
    if shift == "exposure":
        return exposure_split(log, random_test, seed=seed, **kw)
    return {"popularity": popularity_split, "temporal": temporal_split,
            "random": random_split}[shift](log, seed=seed, **kw)
