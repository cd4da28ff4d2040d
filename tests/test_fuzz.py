"""Hostile input: random bytes, huge ids, millions of duplicates, wrong encodings and giant numbers
on every loader and on the config parsers. The only allowed outcomes are a loaded result or one
short sentence as DataError / ConfigError: never a hang (each call runs under an alarm), another
exception type, or a blow-up in memory (caps with clear messages).

Hypothesis counts every example it tries; `pytest tests/test_fuzz.py --hypothesis-show-statistics`
prints the numbers per test."""
from __future__ import annotations

import json
import re
import signal
import string
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cnsdiff_core.config import ConfigError, TrainConfig, parse_set_args, preset_config
from cnsdiff_core.data import DataError, load_dataset, validate_files
from cnsdiff_core.data.dataset import Dataset
from cnsdiff_core.data import FORMATS, load_split_folder, read_interactions, to_positives

CALL_SECONDS = 20  # a single load of a few-kB file taking longer than this is a hang
FAST = settings(max_examples=120, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                       HealthCheck.data_too_large])
SUFFIXES = (".txt", ".csv", ".tsv", ".inter", ".dat", "")


@contextmanager
def deadline(seconds: float = CALL_SECONDS):
    """Raise TimeoutError in the main thread when the block runs longer than `seconds`."""
    def alarm(signum, frame):
        raise TimeoutError(f"hung for more than {seconds} s")

    old = signal.signal(signal.SIGALRM, alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


def one_sentence(exc: Exception) -> None:
    msg = str(exc)
    assert msg.strip(), f"{type(exc).__name__} without a message"
    assert "\n" not in msg, f"multi-line message: {msg[:300]!r}"
    assert len(msg) <= 600, f"message of {len(msg)} characters: {msg[:200]!r}..."
    assert "Traceback" not in msg


def allowed(call, errors=(DataError,)):
    """Run call(); return its result, or None after checking a one-sentence allowed error."""
    try:
        with deadline():
            return call()
    except errors as exc:
        one_sentence(exc)
        return None


def check_frame(out) -> None:
    if out is None:
        return
    df, warnings = out
    assert isinstance(df, pd.DataFrame) and {"user", "item"} <= set(df.columns) and len(df) > 0
    assert all(isinstance(w, str) for w in warnings)
    if "timestamp" in df:
        assert df["timestamp"].dtype == np.int64
    if "rating" in df:
        assert np.isfinite(df["rating"].to_numpy(dtype=float)[~np.isnan(df["rating"].to_numpy(dtype=float))]).all()


def check_dataset(ds) -> None:
    if ds is None:
        return
    assert isinstance(ds, Dataset) and ds.n_users >= 1 and ds.n_items >= 1
    for arr in (ds.train, ds.valid, ds.test_iid, ds.test_ood):
        assert arr.ndim == 2 and arr.shape[1] == 2
        if len(arr):
            assert arr[:, 0].max() < ds.n_users and arr[:, 1].max() < ds.n_items and arr.min() >= 0


# --- strategies ---------------------------------------------------------------------------------------
GIANT = st.sampled_from(["1e308", "-1e308", "1e999", "inf", "-inf", "nan", "NaN", "9" * 400, "-" + "9" * 60,
                         "0x1F", "1_000", "١٢٣", "1e-400", "+", "-", "."])
ID = st.one_of(st.integers(-10**40, 10**40).map(str), st.text(string.ascii_letters + string.digits + "_-", min_size=1, max_size=12),
               st.sampled_from(["u" * 300, "9" * 4400, "é", "ユーザー", "\u00a0x", "\x0bz", '"q"', "#", "NULL", "None"]))
NUM = st.one_of(st.integers(-10**25, 10**25).map(str), st.floats(allow_nan=True, allow_infinity=True).map(repr), GIANT,
                st.sampled_from(["2020-01-01", "2020-13-45", "yesterday", "1700000000000", "", "0"]))
SEP = st.sampled_from([" ", "\t", ",", ";", "  ", " \t", "|"])


@st.composite
def table_text(draw) -> str:
    """Text shaped like an interaction table: optional header, rows of ids / numbers, odd separators."""
    sep = draw(SEP)
    n_cols = draw(st.integers(1, 6))
    lines = []
    if draw(st.booleans()):
        names = draw(st.lists(st.sampled_from(["user", "item", "rating", "timestamp", "user_id:token",
                                               "item_id:token", "rating:float", "timestamp:float", "x", ""]),
                              min_size=n_cols, max_size=n_cols))
        lines.append(sep.join(names))
    for _ in range(draw(st.integers(0, 25))):
        k = draw(st.integers(0, n_cols + 1))
        cells = [draw(ID) if j < 2 else draw(NUM) for j in range(k)]
        lines.append(sep.join(cells))
    end = draw(st.sampled_from(["\n", "\r\n", "\r"]))
    return end.join(lines) + draw(st.sampled_from(["", end]))


def write(path: Path, data: bytes | str, encoding: str = "utf-8") -> Path:
    path.write_bytes(data if isinstance(data, bytes) else data.encode(encoding, errors="surrogatepass"))
    return path


# --- read_interactions ------------------------------------------------------------------------------------
@FAST
@given(data=st.binary(max_size=3000), suffix=st.sampled_from(SUFFIXES), fmt=st.sampled_from(("auto", *FORMATS)))
def test_read_interactions_random_bytes(tmp_path, data, suffix, fmt):
    path = write(tmp_path / f"f{suffix}", data)
    check_frame(allowed(lambda: read_interactions(path, fmt=fmt)))


@FAST
@given(text=table_text(), suffix=st.sampled_from(SUFFIXES), fmt=st.sampled_from(("auto", *FORMATS)),
       encoding=st.sampled_from(["utf-8", "utf-8-sig", "latin-1", "utf-16", "utf-16-le", "cp1252"]))
def test_read_interactions_tables_in_any_encoding(tmp_path, text, suffix, fmt, encoding):
    try:
        raw = text.encode(encoding)
    except UnicodeEncodeError:
        raw = text.encode("utf-8")
    path = write(tmp_path / f"f{suffix}", raw)
    out = allowed(lambda: read_interactions(path, fmt=fmt))
    check_frame(out)
    if out is not None:  # and the next step of every loader
        check_frame(allowed(lambda: to_positives(out[0])))


@FAST
@given(text=table_text())
def test_validate_files_never_raises(tmp_path, text):
    path = write(tmp_path / "upload.csv", text)
    with deadline():
        verdicts = validate_files([path, tmp_path / "missing.txt", tmp_path])
    assert len(verdicts) == 3 and not verdicts[1]["ok"] and not verdicts[2]["ok"]
    for v in verdicts:
        assert isinstance(v["ok"], bool)
        if not v["ok"]:
            one_sentence(DataError(v["message"]))


# --- whole datasets: a file path, a split folder ----------------------------------------------------------
@settings(max_examples=60, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(text=table_text(), shift=st.sampled_from([None, "random", "popularity", "temporal", "exposure", "bogus"]),
       suffix=st.sampled_from((".txt", ".csv", ".inter")))
def test_load_dataset_from_a_hostile_file(tmp_path, text, shift, suffix):
    path = write(tmp_path / f"log{suffix}", text)
    check_dataset(allowed(lambda: load_dataset(str(path), shift)))


@settings(max_examples=60, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(train=table_text(), test=table_text(), extra=st.sampled_from(["", "shift.txt", "dataset.json", "items.csv"]),
       junk=st.binary(max_size=200))
def test_load_split_folder_hostile(tmp_path, train, test, extra, junk):
    folder = tmp_path / "split"
    folder.mkdir(exist_ok=True)
    for f in folder.iterdir():
        f.unlink()
    write(folder / "train.txt", train)
    write(folder / "test_ood.txt", test)
    if extra:
        write(folder / extra, junk)
    check_dataset(allowed(lambda: load_split_folder(folder)))
    check_dataset(allowed(lambda: load_dataset(str(folder))))


# --- scale: duplicates, huge ids, giant numbers -------------------------------------------------------
def test_two_million_duplicate_lines_load_to_one_pair(tmp_path):
    path = tmp_path / "dups.txt"
    path.write_bytes(b"7 9\n" * 2_000_000)
    with deadline(60):
        verdict = validate_files([path])[0]  # read_interactions + to_positives
    assert verdict["ok"] and verdict["rows"] == 2_000_000 and verdict["positives"] == 1
    assert any("1,999,999 duplicated" in w for w in verdict["warnings"])


@pytest.mark.slow
def test_two_million_duplicates_with_ratings_and_times(tmp_path):
    path = tmp_path / "dups.txt"
    path.write_bytes(b"7 9 1 1700000000\n" * 2_000_000)
    with deadline(120):
        df, _ = read_interactions(path)
        pos, warns = to_positives(df)
    assert len(df) == 2_000_000 and len(pos) == 1 and any("1,999,999" in w for w in warns)
    allowed(lambda: load_dataset(str(path)))


def test_a_dataset_of_duplicates_only_gives_a_sentence(tmp_path):
    path = write(tmp_path / "dups.txt", "7 9 1 1700000000\n" * 50_000)
    allowed(lambda: load_dataset(str(path)))  # one user, one item: nothing to split


def test_rows_cap_gives_a_sentence(tmp_path):
    path = tmp_path / "many.txt"
    path.write_bytes(b"".join(b"%d %d\n" % (i % 1000, i % 777) for i in range(50_000)))
    with pytest.raises(DataError, match="more than 10,000 rows") as err:
        read_interactions(path, max_rows=10_000)
    one_sentence(err.value)


def test_file_size_cap_gives_a_sentence(tmp_path, monkeypatch):
    import cnsdiff_core.data.loaders as loaders

    monkeypatch.setattr(loaders, "MAX_FILE_BYTES", 1000)
    path = write(tmp_path / "big.txt", "1 2\n" * 1000)
    with pytest.raises(DataError, match="more than this app reads") as err:
        read_interactions(path)
    one_sentence(err.value)


@pytest.mark.parametrize("line", [
    "u" * 5000 + " 1\n",  # a 5,000-character id
    "1 " + "9" * 100_000 + "\n",  # a 100,000-digit item id
])
def test_absurdly_long_ids_are_refused_before_they_cost_memory(tmp_path, line):
    # with numpy's fixed-width strings, one long id would pad every id of the file to its length
    body = "".join(f"{i} {i % 50}\n" for i in range(20_000)) + line
    path = write(tmp_path / "ids.txt", body)
    with pytest.raises(DataError, match="characters") as err:
        with deadline():
            load_dataset(str(path))
    one_sentence(err.value)


def test_huge_integer_ids_keep_their_identity(tmp_path):
    rows = [f"{10**30 + u} {2**70 + i}" for u in range(40) for i in range(u % 7, u % 7 + 12)]
    ds = allowed(lambda: load_dataset(str(write(tmp_path / "big_ids.txt", "\n".join(rows) + "\n")), "random"))
    check_dataset(ds)
    assert ds is not None and str(10**30) in set(ds.user_ids)


@pytest.mark.parametrize("value", ["1e308", "1e309", "-1e400", "nan", "inf", "9" * 5000, "0x10"])
@pytest.mark.parametrize("column", ["rating", "timestamp"])
def test_giant_numbers_in_number_columns(tmp_path, value, column):
    rows = ["user,item,rating,timestamp"] + [f"{u},{i},5,{1_600_000_000 + u * 100 + i}" for u in range(30) for i in range(8)]
    u, i, r, t = rows[5].split(",")
    rows[5] = ",".join([u, i, value if column == "rating" else r, value if column == "timestamp" else t])
    path = write(tmp_path / "nums.csv", "\n".join(rows) + "\n")
    check_frame(allowed(lambda: read_interactions(path)))
    check_dataset(allowed(lambda: load_dataset(str(path))))


@pytest.mark.parametrize("encoding,expect_ok", [("utf-16", True), ("utf-16-le", False), ("latin-1", False),
                                                ("cp1252", False), ("utf-8-sig", True)])
def test_wrong_encodings(tmp_path, encoding, expect_ok):
    text = "user,item\n" + "".join(f"usér{u},ítem{u % 5}\n" for u in range(50))
    path = write(tmp_path / "enc.csv", text.encode(encoding))
    out = allowed(lambda: read_interactions(path))
    assert (out is not None) == expect_ok
    if out is not None:
        assert "usér0" in set(out[0]["user"])


@pytest.mark.parametrize("text,suffix", [
    ("user item\n0 0 0", ".txt"),  # found by hypothesis: pandas made the surplus field an index
    ("user,item\n1,2,3\n", ".csv"),
    ("user_id:token\titem_id:token\n1\t2\t3\n", ".inter"),
    ("1 2 3 4 5\n1 2\n", ".txt"),
])
def test_rows_longer_than_the_header(tmp_path, text, suffix):
    path = write(tmp_path / f"f{suffix}", text)
    check_frame(allowed(lambda: read_interactions(path)))


def test_quoted_header_with_newlines_and_a_huge_column_name(tmp_path):
    path = write(tmp_path / "q.csv", '"a\nb","' + "c" * 100_000 + '"\n1,2\n')
    assert allowed(lambda: read_interactions(path)) is None


# --- config --------------------------------------------------------------------------------------------
FIELDS = [f for f in TrainConfig.__dataclass_fields__]
VALUES = st.one_of(st.none(), st.booleans(), st.integers(-10**30, 10**30), st.floats(allow_nan=True, allow_infinity=True),
                   st.text(max_size=40), GIANT, st.lists(st.integers(-10**12, 10**12), max_size=5),
                   st.dictionaries(st.text(max_size=5), st.integers(), max_size=2), st.binary(max_size=10))


@settings(max_examples=400, deadline=None, derandomize=True)
@given(updates=st.dictionaries(st.one_of(st.sampled_from(FIELDS), st.text(max_size=12)), VALUES, max_size=4))
def test_with_updates_hostile_values(updates):
    out = allowed(lambda: TrainConfig().with_updates(**{str(k): v for k, v in updates.items()}), (ConfigError,))
    if out is not None:
        out.validate()
        json.loads(out.to_json())  # a config that loads can be stored


@settings(max_examples=300, deadline=None, derandomize=True)
@given(items=st.lists(st.one_of(st.text(max_size=30), st.builds(lambda k, v: f"{k}={v}", st.sampled_from(FIELDS),
                                                                st.one_of(GIANT, st.text(max_size=20), NUM))),
                      max_size=5),
       preset=st.sampled_from(["paper", "reference", "tuned", "demo", "nope"]))
def test_parse_set_args_and_presets(items, preset):
    parsed = allowed(lambda: parse_set_args(items), (ConfigError,))
    if parsed is not None:
        assert isinstance(parsed, dict)
        allowed(lambda: preset_config(preset, **parsed), (ConfigError,))


JSONISH = st.recursive(st.one_of(st.none(), st.booleans(), st.integers(-10**40, 10**40), st.floats(), st.text(max_size=20)),
                       lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=4)),
                       max_leaves=20)


@settings(max_examples=300, deadline=None, derandomize=True)
@given(obj=st.one_of(JSONISH, st.dictionaries(st.sampled_from(FIELDS), JSONISH, max_size=6)),
       noise=st.sampled_from(["", "}", "\x00", "\ufeff", "garbage", "NaN", "Infinity"]))
def test_from_json_hostile_documents(obj, noise):
    text = json.dumps(obj) + noise
    allowed(lambda: TrainConfig.from_json(text), (ConfigError,))


@settings(max_examples=150, deadline=None, derandomize=True)
@given(data=st.binary(max_size=2000))
def test_from_json_random_bytes(data):
    text = data.decode("utf-8", errors="replace")
    allowed(lambda: TrainConfig.from_json(text), (ConfigError,))


# json.loads raises RecursionError for deep nesting and a plain ValueError for integers beyond
# 4,300 digits: TrainConfig.from_json turns both into a ConfigError.
@pytest.mark.parametrize("text", [
    pytest.param("[" * 100_000, id="nesting-100k-deep"),
    pytest.param('{"epochs": ' + "1" * 5000 + "}", id="5000-digit-int"),
])
def test_from_json_pathological_documents(text):
    allowed(lambda: TrainConfig.from_json(text), (ConfigError,))


@pytest.mark.parametrize("text", ["[" * 100_000, '{"epochs": ' + "1" * 5000 + "}", "{" * 50 + "x"])
def test_cli_config_file_gives_a_sentence(tmp_path, capsys, text):
    from cnsdiff_core.cli import main

    cfg = tmp_path / "cfg.json"
    cfg.write_text(text)
    assert main(["train", "--config", str(cfg), "--sampler", "rns"]) == 2
    err = [line.strip() for line in re.split(r"[\r\n]+", capsys.readouterr().err) if line.strip()]
    assert err and err[-1].startswith("error: ") and len(err[-1]) < 400
    assert not any("Traceback" in line for line in err)


def test_cli_refuses_a_huge_config_file(tmp_path, capsys):
    from cnsdiff_core.cli import main

    cfg = tmp_path / "cfg.json"
    cfg.write_bytes(b" " * (3 * 1024 * 1024) + b"{}")
    assert main(["train", "--config", str(cfg), "--sampler", "rns"]) == 2
    assert "larger than" in capsys.readouterr().err


@pytest.mark.parametrize("spec", ["n_users=" + "9" * 5000, "confounding=nan", "seed=1e999", "{" * 100_000,
                                  "n_users=4000000,n_items=4000000,interactions_per_user=500", "dim=" + "1" * 30])
def test_synthetic_specs(spec):
    allowed(lambda: load_dataset("synthetic:" + spec), (DataError,))


# --- paths: the folder import cannot leave its allowed folders -------------------------------------------
@pytest.fixture
def import_root(tmp_path, monkeypatch):
    allowed_dir = tmp_path / "allowed"
    (allowed_dir / "data").mkdir(parents=True)
    (allowed_dir / "data" / "train.txt").write_text("1 2\n1 3\n2 3\n")
    secret = tmp_path / "secret"
    secret.mkdir()
    (secret / "train.txt").write_text("root:x:0:0 secret\n")
    monkeypatch.setenv("CNSDIFF_IMPORT_ROOTS", str(allowed_dir))
    return allowed_dir, secret


@pytest.mark.parametrize("typed", ["{a}/../secret", "{a}/data/../../secret/train.txt", "{a}/../secret/train.txt",
                                   "{a}/data/../../../etc/passwd", "/etc/passwd", "~/../../etc", "{a}/\x00x"])
def test_import_paths_cannot_climb_out(import_root, typed):
    from cnsdiff_core.data.imports import allowed_import_path

    allowed_dir, _ = import_root
    with pytest.raises(DataError) as err:
        allowed_import_path(typed.format(a=allowed_dir))
    one_sentence(err.value)
    assert allowed_import_path(f"{allowed_dir}/data/../data") == (allowed_dir / "data").resolve()


def test_import_symlinks_cannot_lead_out(import_root):
    from cnsdiff_core.data.imports import allowed_import_path
    from ui.state import linkable_dataset

    allowed_dir, secret = import_root
    (allowed_dir / "link-to-secret").symlink_to(secret, target_is_directory=True)
    (allowed_dir / "file-link").symlink_to(secret / "train.txt")
    inner = allowed_dir / "innocent"
    inner.mkdir()
    (inner / "train.txt").symlink_to(secret / "train.txt")  # a folder that looks fine but links out
    (allowed_dir / "loop").symlink_to(allowed_dir / "loop")
    for typed in ("link-to-secret", "link-to-secret/train.txt", "file-link", "innocent", "loop"):
        with pytest.raises(DataError) as err:
            allowed_import_path(str(allowed_dir / typed))
        one_sentence(err.value)
    # a link that stays inside is fine
    (allowed_dir / "alias").symlink_to(allowed_dir / "data", target_is_directory=True)
    assert allowed_import_path(str(allowed_dir / "alias")) == (allowed_dir / "data").resolve()
    # links in URLs follow the same rule
    for typed in ("link-to-secret", "innocent", "file-link"):
        assert linkable_dataset(str(allowed_dir / typed)) == "is not a dataset this app may open"
    assert linkable_dataset(str(allowed_dir / "alias")) == ""
