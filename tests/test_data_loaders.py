"""Reading files, id maps, positives, split folders, the registry and file validation."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cnsdiff_core.data import (SHIFTS, DataError, Dataset, IdMap, detect_format, list_datasets,
                               load_dataset, load_split_folder, read_interactions, to_positives,
                               validate_files)
from cnsdiff_core.data.registry import SAMPLE_WORLD, data_root_path

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "sample_data" / "examples"
SHARED = data_root_path()


def _write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def _pairs(df: pd.DataFrame) -> set:
    return set(zip(df["user"], df["item"]))


# ----------------------------------------------------------------------------- formats


def test_shipped_examples_parse_to_the_same_rows():
    frames = {}
    for name in ("ratings.csv", "ratings.inter", "ratings.txt"):
        df, _ = read_interactions(EXAMPLES / name)
        frames[name] = df
    assert frames["ratings.csv"].attrs["format"] == "csv"
    assert frames["ratings.inter"].attrs["format"] == "inter"
    assert frames["ratings.txt"].attrs["format"] == "whitespace"
    ref = frames["ratings.csv"]
    assert len(ref) == 2580 and list(ref.columns) == ["user", "item", "rating", "timestamp"]
    for df in frames.values():
        pd.testing.assert_frame_equal(df.reset_index(drop=True), ref.reset_index(drop=True),
                                      check_dtype=False)
    pos = {n: to_positives(df)[0] for n, df in frames.items()}
    assert len(pos["ratings.csv"]) == 1968
    assert _pairs(pos["ratings.csv"]) == _pairs(pos["ratings.inter"]) == _pairs(pos["ratings.txt"])


def test_every_format_gives_the_same_pairs(tmp_path):
    rows = [("alice", "i10", 5, 100), ("bob", "i2", 3, 200), ("alice", "i2", 4, 300), ("carol", "i10", 1, 50)]
    files = {
        "a.csv": "user,item,rating,timestamp\n" + "".join(f"{u},{i},{r},{t}\n" for u, i, r, t in rows),
        "b.tsv": "user\titem\trating\ttimestamp\n" + "".join(f"{u}\t{i}\t{r}\t{t}\n" for u, i, r, t in rows),
        "c.inter": "user_id:token\titem_id:token\trating:float\ttimestamp:float\n"
                   + "".join(f"{u}\t{i}\t{r}\t{t}\n" for u, i, r, t in rows),
        "d.txt": "".join(f"{u} {i} {r} {t}\n" for u, i, r, t in rows),
        "e.dat": "userId,movieId,rating,timestamp\n" + "".join(f"{u},{i},{r},{t}\n" for u, i, r, t in rows),
        "f.txt": "user item rating timestamp\n" + "".join(f"{u}  {i}\t{r} {t}\n" for u, i, r, t in rows),
    }
    expected_fmt = {"a.csv": "csv", "b.tsv": "tsv", "c.inter": "inter", "d.txt": "whitespace",
                    "e.dat": "csv", "f.txt": "whitespace"}
    want = {("alice", "i10"), ("alice", "i2")}
    for name, text in files.items():
        p = _write(tmp_path / name, text)
        assert detect_format(p) == expected_fmt[name], name
        df, _ = read_interactions(p)
        assert df["timestamp"].tolist() == [100, 200, 300, 50], name
        assert df["rating"].tolist() == [5.0, 3.0, 4.0, 1.0], name
        assert _pairs(to_positives(df)[0]) == want, name


def test_configurable_columns_and_dates(tmp_path):
    p = _write(tmp_path / "x.csv", "who,what,stars,when\nu1,a,5,2024-01-02\nu2,b,2,2024-01-01T12:00:00\n")
    df, _ = read_interactions(p, user_col="who", item_col="what", rating_col="stars", time_col="when")
    assert df["user"].tolist() == ["u1", "u2"]
    assert df["timestamp"].tolist() == [1704153600, 1704110400]
    with pytest.raises(DataError, match=r"x\.csv has no user column 'user'.*user_col="):
        read_interactions(p)


def test_headerless_csv_is_read_positionally_with_a_warning(tmp_path):
    df, warns = read_interactions(_write(tmp_path / "h.csv", "1,2,5\n3,4,1\n"))
    assert df[["user", "item"]].values.tolist() == [["1", "2"], ["3", "4"]]
    assert any("no header" in w for w in warns)


def test_yelp_quirk_lines_warn_and_lose_nothing_else(tmp_path):
    p = _write(tmp_path / "train.txt", "0\n0 1\n0 1631 1\n0 6177 1\n\n1 5 1\n")
    df, warns = read_interactions(p)
    assert df[["user", "item"]].values.tolist() == [["0", "1"], ["0", "1631"], ["0", "6177"], ["1", "5"]]
    assert any("malformed" in w and "line 1" in w for w in warns)
    assert any("lack the rating/weight" in w and "line 2" in w for w in warns)
    assert len(warns) == 2
    pos, _ = to_positives(df)
    assert len(pos) == 4  # the weightless line is a positive


def test_lines_with_too_many_fields_are_skipped_and_located(tmp_path):
    df, warns = read_interactions(_write(tmp_path / "t.txt", "0 1 1\n0 2 1 5 9 9\n1 3 1\n"))
    assert df[["user", "item"]].values.tolist() == [["0", "1"], ["1", "3"]]
    assert any("more than four fields" in w and "line 2" in w for w in warns)


def test_to_positives_thresholds_and_dedupe():
    df = pd.DataFrame({"user": ["a", "a", "b", "b", "c"], "item": ["x", "y", "x", "y", "x"],
                       "rating": [5.0, 3.0, 4.0, 1.0, 2.0]})
    pos, warns = to_positives(df)
    assert _pairs(pos) == {("a", "x"), ("b", "x")}
    assert any("below 4" in w for w in warns)
    assert _pairs(to_positives(df, threshold=2)[0]) == {("a", "x"), ("a", "y"), ("b", "x"), ("c", "x")}
    binary = df.assign(rating=[1.0, 0.0, 1.0, 0.0, 0.0])
    assert _pairs(to_positives(binary)[0]) == {("a", "x"), ("b", "x")}
    implicit = df.drop(columns="rating")
    assert len(to_positives(implicit)[0]) == 5
    assert any("ignored" in w for w in to_positives(implicit, threshold=3)[1])
    dup = pd.DataFrame({"user": ["a", "a", "a"], "item": ["x", "x", "y"], "timestamp": [30, 10, 20]})
    pos, warns = to_positives(dup)
    assert len(pos) == 2 and pos.loc[pos["item"] == "x", "timestamp"].item() == 10
    assert any("Removed 1 duplicated" in w for w in warns)
    with pytest.raises(DataError, match="no default positive threshold.*threshold="):
        to_positives(df.assign(rating=[500.0, 3.0, 4.0, 1.0, 2.0]))


# ----------------------------------------------------------------------------- ids


def test_idmap_string_ids_roundtrip_and_integer_order():
    m = IdMap.from_values(["bob", "alice", "bob", "zoë", "17"])
    assert list(m.ids) == ["17", "alice", "bob", "zoë"]
    assert m.encode(["zoë", "alice", "nobody"]).tolist() == [3, 1, -1]
    assert list(m.decode([0, 2])) == ["17", "bob"]
    ints = IdMap.from_values(["10", "9", "0", "100", "2"])
    assert list(ints.ids) == ["0", "2", "9", "10", "100"]  # numeric, not lexical
    ident = IdMap.from_values([str(i) for i in (3, 1, 0, 2, 2)])
    assert ident.is_identity() and ident.encode(["2"]).tolist() == [2]


# ids as read from text files: no control characters (numpy's str arrays drop trailing NULs)
@settings(max_examples=60, deadline=None, derandomize=True)
@given(st.lists(st.text(alphabet=st.characters(blacklist_categories=("Cc", "Cs")), min_size=1, max_size=6)
                .filter(lambda s: s.strip() == s), min_size=1, max_size=40))
def test_idmap_roundtrip_property(values):
    m = IdMap.from_values(values)
    idx = m.encode(values)
    assert (idx >= 0).all() and len(m) == len(set(values))
    assert list(m.decode(idx)) == list(values)
    assert list(IdMap.from_values(values[::-1]).ids) == list(m.ids)  # order-independent


# ----------------------------------------------------------------------------- bad input


def test_bad_inputs_raise_one_sentence_data_errors(tmp_path):
    cases = [
        (tmp_path / "missing.txt", None, r"missing\.txt does not exist"),
        (tmp_path / "empty.txt", b"", r"empty\.txt is empty"),
        (tmp_path / "blank.txt", b"\n \n\n", r"blank\.txt holds only blank lines"),
        (tmp_path / "bin.txt", bytes(range(256)) * 4, r"bin\.txt looks binary"),
        (tmp_path / "latin.txt", "0 caf\xe9 1\n".encode("latin-1"), r"latin\.txt is not UTF-8 text .*line 1"),
        (tmp_path / "nocol.csv", b"a,b\n1,2\n", r"nocol\.csv has no user column"),
        (tmp_path / "badr.csv", b"user,item,rating\nu,i,5\nu,j,good\n", r"badr\.csv line 3: rating 'good' is not a number"),
        (tmp_path / "badw.txt", b"0 1 1\n0 2 x\n", r"badw\.txt line 2: the third field \(weight\) 'x'"),
        (tmp_path / "badt.csv", b"user,item,timestamp\nu,i,yesterday-ish\n", r"badt\.csv line 2: timestamp"),
        (tmp_path / "single.txt", b"0\n1\n2\n", r"single\.txt contains no readable interactions"),
        (tmp_path / "w.json", b'{"a": 1}', r"w\.json is JSON, not an interaction table"),
    ]
    for path, data, pattern in cases:
        if data is not None:
            path.write_bytes(data)
        with pytest.raises(DataError, match=pattern):
            read_interactions(path)
    with pytest.raises(DataError, match=r"more than 2 rows"):
        read_interactions(_write(tmp_path / "big.txt", "0 1\n0 2\n0 3\n0 4\n"), max_rows=2)
    with pytest.raises(DataError, match=r"Format 'xml' is unknown"):
        read_interactions(EXAMPLES / "ratings.csv", fmt="xml")
    with pytest.raises(DataError, match=r"is a folder"):
        read_interactions(tmp_path)


@settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
@given(data=st.one_of(
    st.binary(max_size=300),
    st.lists(st.sampled_from(list("0123456789 \t,\n:ab-.\"'#e") + ["user", "item", "rating", ":token", "\r\n", "inf"]),
             max_size=60).map(lambda parts: "".join(parts).encode())),
    ext=st.sampled_from([".txt", ".csv", ".tsv", ".inter", ""]))
def test_random_bytes_never_crash_or_hang(tmp_path_factory, data, ext):
    p = tmp_path_factory.mktemp("fuzz") / f"f{ext}"
    p.write_bytes(data)
    try:
        df, _ = read_interactions(p)
        pos, _ = to_positives(df)
        assert len(pos) >= 1 and {"user", "item"} <= set(pos.columns)
    except DataError as e:
        assert str(e).endswith(".") and "\n" not in str(e)


# ----------------------------------------------------------------------------- split folders


def _folder(tmp_path, files: dict) -> Path:
    tmp_path.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        _write(tmp_path / name, text)
    return tmp_path


def test_split_folder_keeps_given_splits_and_cleans_held_out(tmp_path):
    train = "".join(f"{u} {i} 1\n" for u in range(6) for i in range(u, u + 4))
    f = _folder(tmp_path / "myset", {
        "train.txt": train,
        "valid_iid.txt": "0 5 1\n",
        "test_iid.txt": "1 6 1\n1 1 1\n",  # (1,1) is a training pair
        "test.txt": "2 7 1\n99 1 1\n3 500 1\n",  # unknown user 99, unknown item 500
        "shift.txt": "popularity\n",
        "items.csv": "item,title\n0,Zero\n5,Five\n777,Ghost\n",
    })
    ds = load_split_folder(f)
    assert isinstance(ds, Dataset) and ds.shift == "popularity" and ds.name == "myset"
    assert (ds.n_users, ds.n_items, len(ds.train)) == (6, 9, 24)
    assert list(ds.user_ids) == [str(u) for u in range(6)]  # integer ids are kept
    assert ds.valid.tolist() == [[0, 5]] and ds.test_iid.tolist() == [[1, 6]] and ds.test_ood.tolist() == [[2, 7]]
    notes = " ".join(ds.notes)
    assert "dropped 2 of 3 pairs whose user or item has no training interaction" in notes
    assert "Removed 1 IID-test pairs that are also training pairs" in notes
    assert ds.item_titles[0] == "Zero" and ds.item_titles[5] == "Five" and ds.item_titles[1] == ""
    assert ds.split_meta["dropped_unknown"]["test_ood"] == 2


def test_split_folder_carves_validation_deterministically(tmp_path):
    rng = np.random.default_rng(0)
    rows = {(int(u), int(i)) for u, i in zip(rng.integers(50, size=900), rng.integers(80, size=900))}
    f = _folder(tmp_path / "carve", {"train.txt": "".join(f"{u} {i}\n" for u, i in sorted(rows)),
                                     "test_iid.txt": "0 1\n", "test_ood.txt": "1 2\n"})
    a, b, c = load_split_folder(f, seed=0), load_split_folder(f, seed=0), load_split_folder(f, seed=1)
    assert np.array_equal(a.valid, b.valid) and np.array_equal(a.train, b.train)
    assert not np.array_equal(a.valid, c.valid)
    assert abs(len(a.valid) - 0.1 * len(rows)) <= 2
    assert any("No validation file: carved a random 10%" in n for n in a.notes)
    assert a.shift == "random" and any("does not declare its shift" in n for n in a.notes)
    tk = set(map(tuple, a.train.tolist()))
    assert not tk & set(map(tuple, a.valid.tolist()))
    assert set(a.valid[:, 0]) <= set(a.train[:, 0]) and set(a.valid[:, 1]) <= set(a.train[:, 1])


def test_split_folder_without_train_uses_iid_log_and_says_so(tmp_path):
    rows = "".join(f"{u} {i} 1\n" for u in range(20) for i in range(0, 30, 1 + u % 3))
    f = _folder(tmp_path / "kuairec", {"test_iid.txt": rows + "0 0 1\n0 0 1\n", "test_ood.txt": "0 1 1\n5 29 1\n"})
    ds = load_split_folder(f)
    assert ds.shift == "exposure"
    notes = " ".join(ds.notes)
    assert "ours, not the paper's" in notes and "Removed 2 duplicated" in notes
    total = len(ds.train) + len(ds.valid) + len(ds.test_iid)
    assert total == len(set(rows.splitlines()))
    assert 0.55 < len(ds.train) / total < 0.7


def test_dataset_json_shift_and_bad_declarations(tmp_path):
    f = _folder(tmp_path / "j", {"train.txt": "0 0\n0 1\n1 1\n", "dataset.json": json.dumps({"shift": "temporal"})})
    assert load_split_folder(f).shift == "temporal"
    _write(f / "dataset.json", "{nope")
    with pytest.raises(DataError, match=r"dataset\.json is not valid JSON"):
        load_split_folder(f)
    g = _folder(tmp_path / "k", {"train.txt": "0 0\n", "shift.txt": "sideways"})
    with pytest.raises(DataError, match=r"declares shift 'sideways'; use one of popularity"):
        load_split_folder(g)
    with pytest.raises(DataError, match=r"has no train\.txt"):
        load_split_folder(_folder(tmp_path / "none", {"notes.md": "hi"}))
    with pytest.raises(DataError, match=r"does not exist.*CNSDIFF_DATA_ROOT"):
        load_split_folder(tmp_path / "absent")


# ----------------------------------------------------------------------------- registry


def test_sample_dataset_and_shifts():
    ds = load_dataset("sample")
    assert ds.name == "sample" and ds.shift == "exposure" and ds.truth is not None
    assert (ds.n_users, ds.n_items) == (600, 800) and ds.item_titles is not None
    for shift in SHIFTS:
        d = load_dataset("sample", shift=shift, seed=3)
        assert d.shift == shift and len(d.test_ood) > 500 and len(d.train) > 10_000
    with pytest.raises(DataError, match=r"Shift 'sideways' is unknown"):
        load_dataset("sample", shift="sideways")


def test_synthetic_names_and_file_paths(tmp_path):
    ds = load_dataset("synthetic:confounding=0.8,n_users=120,n_items=200,interactions_per_user=12",
                      shift="popularity", seed=1)
    assert (ds.n_users, ds.n_items, ds.shift) == (120, 200, "popularity") and ds.truth is not None
    js = load_dataset('synthetic:{"n_users": 120, "n_items": 200, "interactions_per_user": 12, "confounding": 0.8}',
                      shift="popularity", seed=1)
    assert np.array_equal(ds.train, js.train)
    with pytest.raises(DataError, match=r"Unknown world parameter 'colour'"):
        load_dataset("synthetic:colour=red")
    with pytest.raises(DataError, match=r"World parameter n_users='many' must be an integer"):
        load_dataset("synthetic:n_users=many")
    with pytest.raises(DataError, match=r"lacks '='"):
        load_dataset("synthetic:confounding")
    f = load_dataset(str(EXAMPLES / "ratings.csv"))
    assert f.shift == "temporal" and f.train_time is not None and f.user_ids[0] == "u000"
    no_time = _write(tmp_path / "log.txt", "".join(f"u{u} i{(u * 7 + k) % 40}\n" for u in range(30) for k in range(8)))
    assert load_dataset(str(no_time)).shift == "random"
    with pytest.raises(DataError, match=r"cannot give an exposure shift.*allowed: popularity, random"):
        load_dataset(str(no_time), shift="exposure")
    with pytest.raises(DataError, match=r"does not support shift 'temporal'; allowed: popularity, random"):
        load_dataset(str(no_time), shift="temporal")
    with pytest.raises(DataError, match=r"neither a known name .* nor an existing path"):
        load_dataset("no-such-dataset")


def test_world_folder_path_loads(tmp_path):
    ds = load_dataset(str(SAMPLE_WORLD), shift="temporal")
    assert ds.shift == "temporal" and ds.truth is not None


def test_missing_shared_dataset_names_where_it_looked(tmp_path, monkeypatch):
    monkeypatch.setenv("CNSDIFF_DATA_ROOT", str(tmp_path))
    with pytest.raises(DataError, match=rf"'food' was not found in {tmp_path}.*CNSDIFF_DATA_ROOT"):
        load_dataset("food")
    listing = {d["name"]: d for d in list_datasets()}
    assert set(listing) == {"sample", "food", "yelp2018", "coat", "kuairec", "synthetic"}
    assert listing["sample"]["available"] and not listing["food"]["available"]
    assert "CNSDIFF_DATA_ROOT" in listing["food"]["reason"]
    assert listing["yelp2018"]["shifts"] == ["popularity"]
    # a folder laid out like the shared ones becomes available
    _folder(tmp_path / "coat", {"train.txt": "0 0\n0 1\n1 0\n1 1\n2 2\n", "test.txt": "2 0\n"})
    assert {d["name"]: d for d in list_datasets()}["coat"]["available"]
    assert load_dataset("coat").shift == "exposure"
    with pytest.raises(DataError, match=r"'coat' does not support shift 'popularity'; allowed: exposure\."):
        load_dataset("coat", shift="popularity")


def test_validate_files_verdicts(tmp_path):
    bad = _write(tmp_path / "bad.csv", "user,item,rating\nu,i,great\n")
    verdicts = validate_files([EXAMPLES / "ratings.csv", EXAMPLES / "ratings.inter", bad, tmp_path / "gone.txt"])
    ok, inter, b, gone = verdicts
    assert ok["ok"] and ok["format"] == "csv" and ok["rows"] == 2580 and ok["positives"] == 1968
    assert ok["users"] == 40 and ok["has_timestamps"] and "1,968 positive interactions" in ok["message"]
    assert inter["ok"] and inter["format"] == "inter" and inter["items"] == ok["items"]
    assert not b["ok"] and "line 2: rating 'great'" in b["message"]
    assert not gone["ok"] and "does not exist" in gone["message"]
    assert set(ok) >= {"file", "ok", "format", "rows", "users", "items", "message"}


# ----------------------------------------------------------------------------- real data


@pytest.mark.skipif(not (SHARED / "food").is_dir(), reason=f"shared datasets not found at {SHARED}")
def test_real_shared_datasets_match_the_readme():
    food = load_dataset("food", data_root=SHARED)
    assert (food.n_users, food.n_items, len(food.train)) == (7732, 6293, 106253)
    assert (len(food.valid), len(food.test_iid), len(food.test_ood)) == (20468, 43183, 46149)
    assert food.shift == "temporal" and food.user_ids[7731] == "7731"  # ids kept
    coat = load_dataset("coat", data_root=SHARED)
    assert (coat.n_users, coat.n_items) == (290, 284) and coat.shift == "exposure"
    assert len(coat.train) + len(coat.valid) + len(coat.test_iid) == 1905
    yelp = load_dataset("yelp2018", data_root=SHARED)
    # README: 238,514 = all lines but the two malformed ones; the weightless "0 1" is accepted.
    assert (yelp.n_users, yelp.n_items, len(yelp.train)) == (8093, 13879, 238515)
    assert sum("malformed" in n or "lack the rating/weight" in n for n in yelp.notes) == 2
    assert [0, 1] in yelp.train.tolist()
    from cnsdiff_core.data import shift_report

    rep = shift_report(yelp)
    assert round(rep["mean_train_pop_test_ood"], 1) == 6.2 and 44 < rep["mean_train_pop_test_iid"] < 46
    kuai = load_dataset("kuairec", data_root=SHARED)
    assert kuai.shift == "exposure" and (kuai.n_users, kuai.n_items) == (7146, 4545)
    assert len(kuai.train) + len(kuai.valid) + len(kuai.test_iid) == 172404 - 20526
    assert any("Removed 20,526 duplicated" in n for n in kuai.notes)
    assert any("ours, not the paper's" in n for n in kuai.notes)
