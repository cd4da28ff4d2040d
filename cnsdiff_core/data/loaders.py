"""Reading interaction files into tidy frames, and shared-format split folders into a `Dataset`.

Formats understood by `read_interactions`:

- ``whitespace``: ``user item [weight [timestamp]]`` one interaction a line (the shared benchmark
  format). Lines with a single field or more than four fields are skipped and counted in a
  warning; a line lacking the weight is accepted (it counts as a positive).
- ``csv`` / ``tsv``: a header row naming the columns (``user_col`` ... are configurable; common
  aliases such as ``user_id`` or ``itemId`` are recognised). A header-less file whose first row is
  all numbers is read positionally as ``user,item[,rating[,timestamp]]``, with a warning.
- ``inter``: RecBole atomic files, tab-separated with a typed header such as
  ``user_id:token<TAB>item_id:token<TAB>rating:float<TAB>timestamp:float``.

Every problem a user can cause raises `DataError` with one sentence naming the file, the line or
value, and what to do. Nothing here prints.
"""
from __future__ import annotations

import csv
import io
import json
import re
from pathlib import Path

import numpy as np
import pandas as pd

from .dataset import SHIFTS, DataError, Dataset

FORMATS = ("whitespace", "csv", "tsv", "inter")
MAX_FILE_BYTES = 4 * 1024**3  # larger files are refused as absurd for an interactive app
MAX_ID_CHARS = 256  # a longer user / item id is a wrong column or a corrupt file, not an id
# Ids live in fixed-width numpy strings (every id padded to the longest): refuse id tables beyond this.
MAX_ID_TABLE_BYTES = 512 * 1024**2

_ALIASES = {
    "user": ("user", "user_id", "userid", "uid", "user_idx", "reviewer_id", "reviewerid", "u"),
    "item": ("item", "item_id", "itemid", "iid", "item_idx", "movie_id", "movieid", "business_id",
             "video_id", "recipe_id", "product_id", "asin", "i"),
    "rating": ("rating", "ratings", "score", "stars", "weight", "label", "value"),
    "timestamp": ("timestamp", "time", "ts", "date", "datetime", "unix_time", "unixtime"),
}
_NOT_INTERACTIONS = {".json": "JSON", ".npz": "a NumPy archive", ".npy": "a NumPy array",
                     ".zip": "a zip archive (unpack it first)", ".gz": "compressed (decompress it first)",
                     ".bz2": "compressed (decompress it first)", ".xz": "compressed (decompress it first)",
                     ".parquet": "Parquet (export it as CSV)", ".xlsx": "an Excel workbook (export it as CSV)",
                     ".xls": "an Excel workbook (export it as CSV)", ".pkl": "a pickle (never loaded)",
                     ".pickle": "a pickle (never loaded)", ".pt": "a PyTorch file"}
_INT_RE = re.compile(r"^[+-]?\d+$")
_NUM_RE = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$")


def clip(text, limit: int = 40) -> str:
    """User-supplied text shown inside a one-line message: printable characters only, at most
    `limit` of them (a header cell or a file name can hold anything)."""
    out = "".join(ch if ch.isprintable() else "?" for ch in str(text)[: limit + 1])
    return out if len(out) <= limit else out[: limit - 1] + "…"


# ----------------------------------------------------------------------------- ids


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


# ----------------------------------------------------------------------------- reading


def _decode(path: Path) -> str:
    if not path.exists():
        raise DataError(f"File {path} does not exist; check the path.")
    if path.is_dir():
        raise DataError(f"{path} is a folder, not a file; pass an interaction file.")
    size = path.stat().st_size
    if size == 0:
        raise DataError(f"File {path.name} is empty; upload a file with one interaction per line.")
    if size > MAX_FILE_BYTES:
        raise DataError(f"File {path.name} is {size / 1024**3:.1f} GiB, more than this app reads "
                        f"(4 GiB); subsample it first.")
    ext = path.suffix.lower()
    if ext in _NOT_INTERACTIONS:
        raise DataError(f"File {path.name} is {_NOT_INTERACTIONS[ext]}, not an interaction table; "
                        f"upload a .txt, .csv, .tsv or .inter file.")
    raw = path.read_bytes()
    if raw.startswith((b"\xff\xfe", b"\xfe\xff")):
        try:
            text = raw.decode("utf-16")
        except UnicodeDecodeError:
            raise DataError(f"File {path.name} has a UTF-16 mark but is not valid UTF-16; "
                            f"save it as UTF-8 text.") from None
    else:
        if b"\x00" in raw[: 1 << 20]:
            raise DataError(f"File {path.name} looks binary (it contains NUL bytes); "
                            f"upload a plain-text interaction file.")
        try:
            text = raw.decode("utf-8-sig")
        except UnicodeDecodeError as e:
            line = raw[: e.start].count(b"\n") + 1
            raise DataError(f"File {path.name} is not UTF-8 text (bad byte at line {line}); "
                            f"save it as UTF-8.") from None
    if "\x00" in text:
        raise DataError(f"File {path.name} contains NUL characters; upload a plain-text file.")
    # only \n, \r\n and \r end lines (as in the parser); other separators would shift line numbers
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    if not text.strip():
        raise DataError(f"File {path.name} holds only blank lines; upload a file with interactions.")
    return text


def _first_line(text: str) -> str:
    for line in text.splitlines():
        if line.strip():
            return line
    return ""


def _has_alias(tokens, key, configured):
    names = {configured.lower(), *_ALIASES[key]}
    return any(t.strip().strip('"').lower() in names for t in tokens)


def _detect(path: Path, text: str, user_col: str, item_col: str) -> str:
    ext = path.suffix.lower()
    first = _first_line(text)
    if ext == ".inter" or re.search(r":(token|float|token_seq|float_seq)\b", first):
        return "inter"
    if ext == ".csv":
        return "csv"
    if ext == ".tsv":
        return "tsv"
    if "\t" in first and len(first.split("\t")) >= 2 and not _all_numeric(first.split("\t")):
        return "tsv"
    if "," in first and len(first.split(",")) >= 2:
        return "csv"
    return "whitespace"


def detect_format(path, user_col: str = "user", item_col: str = "item") -> str:
    """The format `read_interactions(path, fmt='auto')` would use."""
    path = Path(path)
    return _detect(path, _decode(path), user_col, item_col)


def _all_numeric(tokens) -> bool:
    toks = [t.strip().strip('"') for t in tokens if t.strip()]
    return bool(toks) and all(_NUM_RE.match(t) for t in toks)


def _line_count(text: str) -> int:
    return text.count("\n") + (0 if text.endswith("\n") else 1)


_READ_KW = dict(dtype=str, keep_default_na=False, na_values=[""], skip_blank_lines=False,
                engine="c")


def _read_whitespace(text: str, name: str, max_rows: int, warnings: list[str]):
    cols = ["user", "item", "rating", "timestamp"]
    df = pd.read_csv(io.StringIO(text), sep=r"\s+", header=None, names=cols, on_bad_lines="skip",
                     quoting=csv.QUOTE_NONE, nrows=max_rows + 2, **_READ_KW)
    n_lines = _line_count(text)
    # a first line with more than four fields makes pandas take the extra ones as an index: redo
    # line by line as for any over-long line
    implicit_index = not isinstance(df.index, pd.RangeIndex)
    if (len(df) != n_lines or implicit_index) and len(df) <= max_rows:
        # some lines had more than four fields and were skipped: redo line by line for exact
        # line numbers (only happens for malformed files).
        rows, bad = [], []
        for no, line in enumerate(text.split("\n")[:n_lines], 1):
            parts = line.split()
            if len(parts) > 4:
                bad.append(no)
                parts = []
            rows.append(parts + [None] * (4 - len(parts)))
        df = pd.DataFrame(rows, columns=cols, dtype=object)
        if bad:
                warnings.append(f"{name}: skipped {len(bad):,} line(s) with more than four fields "
                            f"(first: line {bad[0]}).")
    df = df.astype(object).where(df.notna(), None)
    if df["timestamp"].isna().all():
        df = df.drop(columns="timestamp")
    if "rating" in df and df["rating"].isna().all():
        df = df.drop(columns="rating")
    return df, 1


def _resolve(df: pd.DataFrame, name: str, fmt: str, want: dict, warnings: list[str]) -> pd.DataFrame:
    """Pick and rename the user/item/rating/timestamp columns of a headed table."""
    lower = {c.strip().lower(): c for c in df.columns}
    out = {}
    for key, configured in want.items():
        col = None
        if configured in df.columns:
            col = configured
        elif configured.lower() in lower:
            col = lower[configured.lower()]
        elif configured == key:  # default name: try the usual aliases
            for alias in _ALIASES[key]:
                if alias in lower:
                    col = lower[alias]
                    break
        if col is None:
            if key in ("user", "item"):
                shown = ", ".join(clip(c) for c in df.columns[:8])
                raise DataError(f"{name} has no {key} column {clip(configured)!r} (columns: {shown}); "
                                f"pass {key}_col= with the right name.")
            if configured != key:
                raise DataError(f"{name} has no {key} column {clip(configured)!r}; check {key}_col=.")
            continue
        out[key] = df[col]
    return pd.DataFrame(out)


def _read_table(text, name, fmt, sep, want, max_rows, warnings):
    first = _first_line(text)
    tokens = first.split(sep) if sep != r"\s+" else first.split()
    headerless = _all_numeric(tokens)
    kw = dict(_READ_KW)
    if headerless:
        n = len(tokens)
        if n < 2 or n > 4:
            raise DataError(f"{name} has no header and {n} column(s); add a header row "
                            f"(user,item,rating,timestamp).")
        cols = ["user", "item", "rating", "timestamp"][:n]
        df = pd.read_csv(io.StringIO(text), sep=sep, header=None, names=cols, on_bad_lines="skip",
                         nrows=max_rows + 2, **kw)
        warnings.append(f"{name}: no header row, so columns were read as {', '.join(cols)}.")
        offset = 1
    else:
        if fmt == "inter":
            header = [h.split(":", 1)[0].strip() for h in first.split("\t")]
            text = text[text.index(first) + len(first):].lstrip("\r\n")
            df = pd.read_csv(io.StringIO(text), sep="\t", header=None, names=header,
                             on_bad_lines="skip", nrows=max_rows + 2, quoting=csv.QUOTE_NONE, **kw)
        else:
            df = pd.read_csv(io.StringIO(text), sep=sep, header=0, on_bad_lines="skip",
                             nrows=max_rows + 2, **kw)
        if not isinstance(df.index, pd.RangeIndex):  # pandas made the surplus fields an index
            names = ", ".join(clip(c, 20) for c in df.columns[:8])
            raise DataError(f"{name}: the first row has more fields than the header names ({names}); "
                            f"name every column in the header or remove the extra fields.")
        df = _resolve(df, name, fmt, want, warnings)
        offset = 2
    expected = _line_count(text) - (0 if headerless or fmt == "inter" else 1)
    if len(df) < min(expected, max_rows + 1):
        warnings.append(f"{name}: skipped {expected - len(df):,} line(s) with too many fields.")
    df = df.astype(object).where(df.notna(), None)
    return df, offset


def read_interactions(path, fmt: str = "auto", user_col: str = "user", item_col: str = "item",
                      rating_col: str = "rating", time_col: str = "timestamp",
                      max_rows: int = 20_000_000) -> tuple[pd.DataFrame, list[str]]:
    """Read one interaction file into ``(frame, warnings)``.

    The frame has str columns ``user`` and ``item`` and, when the file has them, float ``rating``
    and int64 ``timestamp`` (seconds; date strings are converted). ``frame.attrs['format']`` is
    the format used. Raises `DataError` for unreadable input.
    """
    path = Path(path)
    name = path.name if path.name.isprintable() and len(path.name) <= 120 else clip(path.name, 120)
    if fmt not in ("auto", *FORMATS):
        raise DataError(f"Format {clip(fmt)!r} is unknown; use auto, {', '.join(FORMATS)}.")
    if int(max_rows) < 1:
        raise DataError(f"max_rows must be at least 1, got {max_rows}.")
    text = _decode(path)
    if fmt == "auto":
        fmt = _detect(path, text, user_col, item_col)
    warnings: list[str] = []
    want = {"user": user_col, "item": item_col, "rating": rating_col, "timestamp": time_col}
    try:
        if fmt == "whitespace":
            first = _first_line(text).split()
            if (_has_alias(first, "user", user_col) and _has_alias(first, "item", item_col)):
                df, offset = _read_table(text, name, fmt, r"\s+", want, max_rows, warnings)
            else:
                df, offset = _read_whitespace(text, name, max_rows, warnings)
        else:
            sep = {"csv": ",", "tsv": "\t", "inter": "\t"}[fmt]
            df, offset = _read_table(text, name, fmt, sep, want, max_rows, warnings)
    except DataError:
        raise
    except (pd.errors.ParserError, pd.errors.EmptyDataError, ValueError, csv.Error) as e:
        msg = str(e).strip().splitlines()[0][:120] if str(e).strip() else type(e).__name__
        raise DataError(f"{name} could not be parsed as {fmt} ({msg}); check the format.") from None
    if len(df) > max_rows:
        raise DataError(f"{name} has more than {max_rows:,} rows; subsample it or raise max_rows.")
    return _finish(df, name, fmt, offset, warnings), warnings


def _finish(df: pd.DataFrame, name: str, fmt: str, offset: int, warnings: list[str]) -> pd.DataFrame:
    line_no = df.index.to_numpy() + offset
    blank = df.isna().all(axis=1).to_numpy()
    ui_missing = (df["user"].isna() | df["item"].isna()).to_numpy() & ~blank
    if ui_missing.any():
        bad = line_no[ui_missing]
        shown = ", ".join(str(x) for x in bad[:3])
        warnings.append(f"{name}: skipped {len(bad):,} malformed line(s) lacking a user or an item "
                        f"(line {shown}{', ...' if len(bad) > 3 else ''}).")
    keep = ~(blank | ui_missing)
    df = df.loc[keep].reset_index(drop=True)
    line_no = line_no[keep]
    if len(df) == 0:
        raise DataError(f"{name} contains no readable interactions; expect 'user item' per line "
                        f"or a header with user and item columns.")
    out = pd.DataFrame({"user": df["user"].astype(str).str.strip().to_numpy(dtype=object),
                        "item": df["item"].astype(str).str.strip().to_numpy(dtype=object)})
    for col in ("user", "item"):
        lengths = out[col].str.len().to_numpy()
        if len(lengths) and lengths.max() > MAX_ID_CHARS:
            j = int(np.argmax(lengths))
            raise DataError(f"{name} line {line_no[j]}: the {col} id has {int(lengths[j]):,} characters "
                            f"(at most {MAX_ID_CHARS}); check that this column holds ids.")
    if "rating" in df:
        raw = df["rating"]
        vals = pd.to_numeric(raw, errors="coerce")
        bad = vals.isna().to_numpy() & raw.notna().to_numpy()
        if bad.any():
            j = int(np.flatnonzero(bad)[0])
            what = "the third field (weight)" if fmt == "whitespace" else "rating"
            raise DataError(f"{name} line {line_no[j]}: {what} {str(raw.iloc[j])[:30]!r} is not a "
                            f"number; fix that row or choose another rating column.")
        vals = vals.astype(np.float64)
        if not np.isfinite(vals.to_numpy()[raw.notna().to_numpy()]).all():
            raise DataError(f"{name} has infinite ratings; fix those rows.")
        missing = int(raw.isna().sum())
        if missing:
            first = int(line_no[np.flatnonzero(raw.isna().to_numpy())[0]])
            warnings.append(f"{name}: {missing:,} line(s) lack the rating/weight (first: line "
                            f"{first}); they are read as positives.")
        out["rating"] = vals.to_numpy()
    if "timestamp" in df:
        out["timestamp"] = _parse_times(df["timestamp"], name, line_no, warnings)
    out.attrs["format"] = fmt
    return out


def _parse_times(raw: pd.Series, name: str, line_no: np.ndarray, warnings: list[str]) -> np.ndarray:
    if raw.isna().any():
        j = int(np.flatnonzero(raw.isna().to_numpy())[0])
        raise DataError(f"{name} line {line_no[j]} has no timestamp; fill it or drop the "
                        f"timestamp column.")
    nums = pd.to_numeric(raw, errors="coerce")
    if not nums.isna().any():
        arr = nums.to_numpy(dtype=np.float64)
        if not np.isfinite(arr).all() or np.abs(arr).max() > 1e15:
            raise DataError(f"{name} has timestamps out of range; use Unix seconds.")
        if np.abs(arr).max() > 1e11:  # milliseconds
            arr = arr / 1000.0
            warnings.append(f"{name}: timestamps look like milliseconds and were converted to seconds.")
        return np.floor(arr).astype(np.int64)
    try:
        dt = pd.to_datetime(raw.astype(str), errors="raise", utc=True, format="mixed")
    except (ValueError, TypeError, OverflowError):
        bad = nums.isna().to_numpy()
        j = int(np.flatnonzero(bad)[0])
        raise DataError(f"{name} line {line_no[j]}: timestamp {str(raw.iloc[j])[:30]!r} is neither "
                        f"a number nor a date; use Unix seconds or ISO dates.") from None
    secs = (dt - pd.Timestamp("1970-01-01", tz="UTC")) // pd.Timedelta(seconds=1)
    return np.asarray(secs, dtype=np.int64)


# ----------------------------------------------------------------------------- positives


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


# ----------------------------------------------------------------------------- split folders

KNOWN_SHIFTS = {"food": "temporal", "yelp2018": "popularity", "coat": "exposure", "kuairec": "exposure"}
_ROLE_STEMS = {"train": ("train",), "valid": ("valid_iid", "valid", "val", "validation"),
               "test_iid": ("test_iid",), "test_ood": ("test_ood", "test")}
_EXTS = (".txt", ".csv", ".tsv", ".inter", ".dat")


def _find(folder: Path, role: str) -> Path | None:
    for stem in _ROLE_STEMS[role]:
        for ext in _EXTS:
            p = folder / f"{stem}{ext}"
            if p.is_file():
                return p
    return None


def _declared_shift(folder: Path, key: str, notes: list[str]) -> str:
    if key in KNOWN_SHIFTS:
        return KNOWN_SHIFTS[key]
    declared = None
    if (folder / "shift.txt").is_file():
        declared = (folder / "shift.txt").read_text(encoding="utf-8", errors="replace").strip().lower()
        where = "shift.txt"
    elif (folder / "dataset.json").is_file():
        try:
            meta = json.loads((folder / "dataset.json").read_text(encoding="utf-8"))
        except (ValueError, UnicodeDecodeError):
            raise DataError(f"{folder.name}/dataset.json is not valid JSON; fix it or remove it.") from None
        declared = str(meta.get("shift", "")).strip().lower() if isinstance(meta, dict) else ""
        where = "dataset.json"
    if declared is None or declared == "":
        notes.append("The folder does not declare its shift (no shift.txt or dataset.json), so it "
                     "is labelled 'random' (no known shift); add shift.txt naming one of "
                     f"{', '.join(SHIFTS)} to label it.")
        return "random"
    if declared not in SHIFTS:
        raise DataError(f"{folder.name}/{where} declares shift {clip(declared)!r}; use one of "
                        f"{', '.join(SHIFTS)}.")
    return declared


def _read_pos(path: Path, notes: list[str]) -> pd.DataFrame:
    df, warns = read_interactions(path)
    pos, warns2 = to_positives(df)
    notes.extend(w if w.startswith(path.name) else f"{path.name}: {w}" for w in warns + warns2)
    return pos


def _item_titles(folder: Path, items: IdMap, notes: list[str]) -> np.ndarray | None:
    for fname in ("items.csv", "items.tsv"):
        p = folder / fname
        if p.is_file():
            sep = "," if fname.endswith(".csv") else "\t"
            try:
                meta = pd.read_csv(io.StringIO(_decode(p)), sep=sep, dtype=str, keep_default_na=False)
            except (pd.errors.ParserError, ValueError) as e:
                raise DataError(f"{fname} could not be parsed ({str(e).splitlines()[0][:80]}); "
                                f"use a header 'item,title'.") from None
            lower = {c.strip().lower(): c for c in meta.columns}
            icol = next((lower[a] for a in _ALIASES["item"] if a in lower), None)
            tcol = next((lower[a] for a in ("title", "name", "label") if a in lower), None)
            if icol is None or tcol is None:
                raise DataError(f"{fname} needs columns 'item' and 'title' (found: "
                                f"{', '.join(clip(c) for c in meta.columns[:6])}); rename them.")
            idx = items.encode(meta[icol].str.strip())
            titles = np.full(len(items), "", dtype=object)
            ok = idx >= 0
            titles[idx[ok]] = meta[tcol].to_numpy(dtype=object)[ok]
            if (~ok).sum():
                notes.append(f"{fname}: {int((~ok).sum()):,} items are not in the training data and "
                             f"were ignored.")
            return titles.astype(str)
    return None


def load_split_folder(folder, name: str | None = None, seed: int = 0) -> Dataset:
    """Load a folder of pre-split files (the shared benchmark format) into a Dataset.

    Files: ``train.txt`` and any of ``valid_iid.txt``, ``test_iid.txt``, ``test.txt`` or
    ``test_ood.txt`` (= OOD test); ``.csv``/``.tsv``/``.inter`` variants are read too, and
    ``items.csv`` (item,title) gives titles. Given splits are kept; a missing validation set is
    carved as a seeded random 10% of train, a missing IID test as 20% (both noted). Ids are mapped
    through the training file (integer ids keep their order, so 0..n-1 ids stay unchanged); held-out
    pairs with an unknown user or item, or that are training pairs, are dropped and counted.

    Shift: food=temporal, yelp2018=popularity, coat=exposure, kuairec=exposure; otherwise from
    ``shift.txt`` or ``dataset.json`` ({"shift": ...}); undeclared folders are labelled 'random'
    (no known shift) with a note. A folder without ``train.txt`` but with ``test_iid.txt`` and an
    OOD test (KuaiRec here) trains on the de-duplicated IID log, carving validation and IID test
    (train 5 : valid 1 : test 2) from it: a construction of ours, noted as such.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"Dataset folder {folder} does not exist; check the path or set "
                        f"CNSDIFF_DATA_ROOT.")
    key = (name or folder.name).lower()
    notes: list[str] = []
    files = {role: _find(folder, role) for role in _ROLE_STEMS}
    shift = _declared_shift(folder, key, notes)
    constructed = False
    if files["train"] is None:
        if files["test_iid"] is None or files["test_ood"] is None:
            raise DataError(f"Folder {folder} has no train.txt; add train.txt (user item per line) "
                            f"or both test_iid.txt and test_ood.txt.")
        constructed = True
        train_df = _read_pos(files["test_iid"], notes)
        notes.insert(0, f"No training file: training, validation and IID test are carved from the "
                        f"de-duplicated {files['test_iid'].name} (train 5 : valid 1 : test 2, seed "
                        f"{seed}) and {files['test_ood'].name} is the OOD test; this construction "
                        f"is ours, not the paper's.")
    else:
        train_df = _read_pos(files["train"], notes)
    users = IdMap.from_values(train_df["user"].to_numpy())
    items = IdMap.from_values(train_df["item"].to_numpy())
    pairs = np.stack([users.encode(train_df["user"]), items.encode(train_df["item"])], axis=1)
    times = train_df["timestamp"].to_numpy(np.int64) if "timestamp" in train_df else None
    held, dropped = {}, {}
    for role in ("valid", "test_iid", "test_ood"):
        if constructed and role != "test_ood":
            held[role] = None
            continue
        p = files[role]
        if p is None:
            held[role] = None
            continue
        df = _read_pos(p, notes)
        arr = np.stack([users.encode(df["user"]), items.encode(df["item"])], axis=1)
        ok = (arr >= 0).all(axis=1)
        n_bad = int((~ok).sum())
        if n_bad:
            notes.append(f"{p.name}: dropped {n_bad:,} of {len(arr):,} pairs whose user or item has "
                         f"no training interaction.")
        dropped[role] = n_bad
        held[role] = arr[ok]
    from .splits import InteractionLog, given_split

    log = InteractionLog(pairs=pairs, n_users=len(users), n_items=len(items), times=times,
                         user_ids=users.ids, item_ids=items.ids,
                         item_titles=_item_titles(folder, items, notes), name=name or folder.name,
                         source=str(folder))
    shares = (1 / 8, 2 / 8) if constructed else (0.1, 0.2)
    ds = given_split(log, shift, valid=held["valid"], test_iid=held["test_iid"],
                     test_ood=held["test_ood"], seed=seed, valid_share=shares[0],
                     test_share=shares[1], dropped_before=dropped, extra_notes=notes)
    if constructed:  # the generic "no validation file" notes would mislead here
        ds.notes = [n for n in ds.notes if not n.startswith(("No validation file", "No IID test file"))]
    return ds
