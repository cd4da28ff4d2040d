"""Reading interaction files into tidy frames: one loader object per file format.

Each format (`FORMAT_LOADERS`) knows the file names it owns, how sure it is that a file is its
own (`detect`), how to read it (`read`) and how to describe itself to a user (`describe`); adding
a format is adding one object here. Formats understood by `read_interactions`:

- ``whitespace``: ``user item [weight [timestamp]]`` one interaction a line (the shared benchmark
  format). Lines with a single field or more than four fields are skipped and counted in a
  warning; a line lacking the weight is accepted (it counts as a positive).
- ``csv`` / ``tsv``: a header row naming the columns (``user_col`` ... are configurable; common
  aliases such as ``user_id`` or ``itemId`` are recognised). A header-less file whose first row is
  all numbers is read positionally as ``user,item[,rating[,timestamp]]``, with a warning.
- ``inter``: RecBole atomic files, tab-separated with a typed header such as
  ``user_id:token<TAB>item_id:token<TAB>rating:float<TAB>timestamp:float``.

Every problem a user can cause raises `DataError` with one sentence naming the file, the line or
value, and what to do. Nothing here prints. Split folders are read in `folders.py`, ids mapped in
`ids.py`, positives kept in `positives.py`.
"""
from __future__ import annotations

import csv
import io
import re
from pathlib import Path

import numpy as np
import pandas as pd

from .dataset import DataError, clip
from .ids import MAX_ID_CHARS

MAX_FILE_BYTES = 4 * 1024**3  # larger files are refused as absurd for an interactive app

COLUMN_ALIASES = {
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
_NUM_RE = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$")
_READ_KW = dict(dtype=str, keep_default_na=False, na_values=[""], skip_blank_lines=False,
                engine="c")


# ----------------------------------------------------------------------------- the formats
class Format:
    """One file format: `detect` says how sure it is that a file is its own (0 = not at all; the
    highest answer wins, so a typed RecBole header (4) beats a file name (3), which beats a guess
    from the content (1-2)); `read` returns (raw frame with user/item[/rating/timestamp] columns,
    line number of its first row)."""

    name = ""
    extensions: tuple[str, ...] = ()  # the first one is its usual name
    describe = ""  # for the import page: what such a file looks like
    rating_name = "rating"  # how a bad rating is named in a message
    typed_header = False  # a header of name:type cells (RecBole)

    def detect(self, suffix: str, first: str) -> int:
        return 3 if suffix in self.extensions else 0

    def read(self, text: str, name: str, want: dict, max_rows: int, warnings: list[str]):
        raise NotImplementedError


class Whitespace(Format):
    name, extensions = "whitespace", (".txt", ".dat")
    describe = "whitespace `user item [rating] [timestamp]`"
    rating_name = "the third field (weight)"

    def detect(self, suffix, first):
        return 0  # the fallback: whatever no other format claims

    def read(self, text, name, want, max_rows, warnings):
        first = _first_line(text).split()
        if _has_alias(first, "user", want["user"]) and _has_alias(first, "item", want["item"]):
            return _read_table(text, name, self, r"\s+", want, max_rows, warnings)
        return _read_whitespace(text, name, max_rows, warnings)


class Delimited(Format):
    """A table with a header row (or all-number rows read positionally), cells split by `sep`."""

    def __init__(self, name: str, sep: str, extension: str, describe: str, guess: int) -> None:
        self.name, self.sep, self.extensions, self.describe, self.guess = name, sep, (extension,), describe, guess

    def detect(self, suffix, first):
        if suffix in self.extensions:
            return 3
        cells = first.split(self.sep)
        tabbed = self.sep != "\t" or not _all_numeric(cells)  # all-number tab rows read as whitespace
        return self.guess if self.sep in first and len(cells) >= 2 and tabbed else 0

    def read(self, text, name, want, max_rows, warnings):
        return _read_table(text, name, self, self.sep, want, max_rows, warnings)


class Inter(Delimited):
    typed_header = True

    def __init__(self) -> None:
        super().__init__("inter", "\t", ".inter", "a RecBole `.inter` file", 0)

    def detect(self, suffix, first):
        return 4 if suffix in self.extensions or re.search(r":(token|float|token_seq|float_seq)\b", first) else 0


FORMAT_LOADERS: dict[str, Format] = {f.name: f for f in (
    Whitespace(),
    Delimited("csv", ",", ".csv", "CSV with a header", guess=1),
    Delimited("tsv", "\t", ".tsv", "TSV with a header", guess=2),
    Inter())}
FORMATS = tuple(FORMAT_LOADERS)
# file names read as interactions: every format's usual extension first, then the others
INTERACTION_SUFFIXES = tuple(dict.fromkeys([f.extensions[0] for f in FORMAT_LOADERS.values()]
                                           + [e for f in FORMAT_LOADERS.values() for e in f.extensions]))


def formats_text() -> str:
    """'CSV with a header, ..., or a RecBole `.inter` file' for the import page."""
    parts = [f.describe for f in FORMAT_LOADERS.values()]
    return ", ".join(parts[:-1]) + " or " + parts[-1]


# ----------------------------------------------------------------------------- reading
def read_text(path: Path) -> str:
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
                        f"upload a {_usual_names()} file.")
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



def _usual_names() -> str:
    names = [f.extensions[0] for f in FORMAT_LOADERS.values()]
    return ", ".join(names[:-1]) + " or " + names[-1]


def _first_line(text: str) -> str:
    for line in text.splitlines():
        if line.strip():
            return line
    return ""


def _has_alias(tokens, key, configured):
    names = {configured.lower(), *COLUMN_ALIASES[key]}
    return any(t.strip().strip('"').lower() in names for t in tokens)


def detect_format(path, user_col: str = "user", item_col: str = "item") -> str:
    """The format `read_interactions(path, fmt='auto')` would use."""
    path = Path(path)
    return _detect(path, read_text(path))


def _detect(path: Path, text: str) -> str:
    suffix, first = path.suffix.lower(), _first_line(text)
    scores = {name: f.detect(suffix, first) for name, f in FORMAT_LOADERS.items()}
    best = max(scores.values())
    return next(name for name, s in scores.items() if s == best) if best > 0 else "whitespace"


def _all_numeric(tokens) -> bool:
    toks = [t.strip().strip('"') for t in tokens if t.strip()]
    return bool(toks) and all(_NUM_RE.match(t) for t in toks)


def _line_count(text: str) -> int:
    return text.count("\n") + (0 if text.endswith("\n") else 1)


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


def _resolve(df: pd.DataFrame, name: str, want: dict) -> pd.DataFrame:
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
            for alias in COLUMN_ALIASES[key]:
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


def _read_table(text, name, fmt: Format, sep, want, max_rows, warnings):
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
        if fmt.typed_header:
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
        df = _resolve(df, name, want)
        offset = 2
    expected = _line_count(text) - (0 if headerless or fmt.typed_header else 1)
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
    text = read_text(path)
    loader = FORMAT_LOADERS[_detect(path, text) if fmt == "auto" else fmt]
    fmt = loader.name
    warnings: list[str] = []
    want = {"user": user_col, "item": item_col, "rating": rating_col, "timestamp": time_col}
    try:
        df, offset = loader.read(text, name, want, max_rows, warnings)
    except DataError:
        raise
    except (pd.errors.ParserError, pd.errors.EmptyDataError, ValueError, csv.Error) as e:
        msg = str(e).strip().splitlines()[0][:120] if str(e).strip() else type(e).__name__
        raise DataError(f"{name} could not be parsed as {fmt} ({msg}); check the format.") from None
    if len(df) > max_rows:
        raise DataError(f"{name} has more than {max_rows:,} rows; subsample it or raise max_rows.")
    return _finish(df, name, loader, offset, warnings), warnings


def _finish(df: pd.DataFrame, name: str, fmt: Format, offset: int, warnings: list[str]) -> pd.DataFrame:
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
            what = fmt.rating_name
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
    out.attrs["format"] = fmt.name
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
