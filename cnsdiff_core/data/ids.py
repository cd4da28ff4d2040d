"""Original user / item ids (any strings) mapped to dense indices and back."""
from __future__ import annotations

import re

import numpy as np
import pandas as pd

from .dataset import DataError

MAX_ID_CHARS = 256  # a longer user / item id is a wrong column or a corrupt file, not an id
# Ids live in fixed-width numpy strings (every id padded to the longest): refuse id tables beyond this.
MAX_ID_TABLE_BYTES = 512 * 1024**2
_INT_RE = re.compile(r"^[+-]?\d+$")


class IdMap:
    """Maps original ids (any strings) to dense indices 0..n-1 and back.

    The dense order is stable and independent of row order: ids are sorted numerically when all
    of them are integers (so ``0..n-1`` ids keep their values), lexically otherwise.
    """

    def __init__(self, ids):
        ids = np.asarray(ids, dtype=str)
        if len(np.unique(ids)) != len(ids):
            raise DataError("IdMap ids must be unique; pass the distinct ids.")
        self.ids = ids
        self._index = pd.Index(ids)

    @classmethod
    def from_values(cls, values) -> "IdMap":
        uniq = pd.unique(pd.Series(np.asarray(values, dtype=object)).astype(str))
        longest = int(pd.Series(uniq, dtype=object).str.len().max()) if len(uniq) else 0
        if longest > MAX_ID_CHARS:
            raise DataError(f"An id has {longest:,} characters (at most {MAX_ID_CHARS} are allowed); "
                            f"check that the user and item columns hold ids.")
        if len(uniq) * max(longest, 1) * 4 > MAX_ID_TABLE_BYTES:
            raise DataError(f"{len(uniq):,} distinct ids of up to {longest} characters are too many to "
                            f"hold; shorten the ids (e.g. number them) or subsample the data.")
        return cls(_stable_sort(np.asarray(uniq, dtype=str)))

    def __len__(self) -> int:
        return len(self.ids)

    def encode(self, values, missing: int = -1) -> np.ndarray:
        """(n,) int64 dense indices; ids not in the map become ``missing``."""
        vals = np.asarray(values, dtype=object).astype(str)
        idx = self._index.get_indexer(vals).astype(np.int64)
        if missing != -1:
            idx[idx < 0] = missing
        return idx

    def decode(self, indices) -> np.ndarray:
        return self.ids[np.asarray(indices, dtype=np.int64)]

    def is_identity(self) -> bool:
        """True when original ids are exactly the strings '0'..'n-1' in order."""
        return bool(np.array_equal(self.ids, np.arange(len(self.ids)).astype(str)))


def _stable_sort(uniq: np.ndarray) -> np.ndarray:
    if len(uniq) == 0:
        return uniq
    if all(_INT_RE.match(s) for s in uniq):
        try:
            nums = uniq.astype(np.int64)
        except (OverflowError, ValueError):
            return np.sort(uniq)
        return uniq[np.lexsort((uniq, nums))]
    return np.sort(uniq)
