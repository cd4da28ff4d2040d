"""Which interactions are positives: a rating threshold, and one row per (user, item) pair."""
from __future__ import annotations

import numpy as np
import pandas as pd

from .dataset import DataError


def infer_threshold(ratings: np.ndarray) -> float | None:
    """Default positive threshold for a rating column: None means every row is a positive."""
    r = np.asarray(ratings, dtype=np.float64)
    r = r[~np.isnan(r)]
    if len(r) == 0:
        return None
    uniq = np.unique(r)
    if set(uniq.tolist()) <= {-1.0, 0.0, 1.0}:
        return 1.0 if uniq.min() < 1 else None  # binary labels / weights
    if uniq.min() >= 0 and uniq.max() <= 5:
        return 4.0
    if uniq.min() >= 0 and uniq.max() <= 10:
        return 8.0
    if uniq.min() >= 0 and uniq.max() <= 100:
        return 80.0
    raise DataError(f"Ratings range from {uniq.min():g} to {uniq.max():g}, so no default positive "
                    f"threshold applies; pass threshold=.")


def to_positives(df: pd.DataFrame, threshold: float | None = None) -> tuple[pd.DataFrame, list[str]]:
    """Keep positive interactions and de-duplicate (user, item) pairs.

    With a rating column: rows with rating >= threshold are positives (default threshold: 4 on a
    1-5 scale, 8 on 1-10, 80 on 0-100; binary 0/1 labels keep the 1s; rows lacking a rating count
    as positives). Without a rating column every row is a positive. Duplicated pairs keep their
    earliest timestamp. Returns ``(frame, warnings)``.
    """
    warnings: list[str] = []
    out = df
    if "rating" in df.columns:
        r = df["rating"].to_numpy(dtype=np.float64)
        thr = infer_threshold(r) if threshold is None else float(threshold)
        if thr is not None:
            keep = np.isnan(r) | (r >= thr)
            dropped = int((~keep).sum())
            if dropped:
                warnings.append(f"{dropped:,} of {len(r):,} rows have rating below {thr:g} and are "
                                f"not positives.")
            out = df.loc[keep]
    elif threshold is not None:
        warnings.append(f"threshold={threshold:g} was ignored: the data has no rating column, so "
                        f"every row is a positive.")
    if len(out) == 0:
        raise DataError(f"No rating reaches the positive threshold {thr:g}; pass a lower threshold.")
    if "timestamp" in out.columns:
        out = out.sort_values("timestamp", kind="stable")
    dup = out.duplicated(subset=["user", "item"], keep="first")
    n_dup = int(dup.sum())
    if n_dup:
        warnings.append(f"Removed {n_dup:,} duplicated (user, item) pairs, keeping the first of each.")
        out = out.loc[~dup.to_numpy()]
    out = out.reset_index(drop=True)
    out.attrs = dict(df.attrs)
    return out, warnings
