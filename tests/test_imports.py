"""Imported datasets and the sandbox of local paths (cnsdiff_core.data.imports)."""
from __future__ import annotations

import json

import pytest

from cnsdiff_core.data import DataError, load_dataset
from cnsdiff_core.data.imports import (allowed_import_path, escaping_entry, import_dataset, import_roots,
                                       openable_path)


@pytest.fixture
def data_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("CNSDIFF_DATA", str(tmp_path / "data"))
    return tmp_path / "data"


def _log(path, n_users=30, n_items=40):
    lines = [f"{u},{(u * 7 + k) % n_items},5,{1_600_000_000 + 100 * u + k}" for u in range(n_users) for k in range(8)]
    path.write_text("user,item,rating,timestamp\n" + "\n".join(lines) + "\n")
    return path


def test_an_import_copies_validates_and_never_overwrites(tmp_path, data_dir):
    src = _log(tmp_path / "ratings.csv")
    info = import_dataset(src, "mine")
    assert info["name"] == "mine" and info["shift"] == "temporal" and info["users"] == 30
    stored = json.loads((data_dir / "mine" / "import.json").read_text())
    assert stored["file"] == "ratings.csv" and stored["source"] == str(src.resolve())
    ds = load_dataset("mine")
    assert ds.name == "mine" and ds.n_users == 30
    with pytest.raises(DataError, match="already exists"):
        import_dataset(src, "mine")
    assert import_dataset(src, "mine", force=True)["name"] == "mine"
    for bad, match in (("sample", "reserved"), ("../x", "not allowed"), ("", "not allowed")):
        with pytest.raises(DataError, match=match):
            import_dataset(src, bad)
    with pytest.raises(DataError, match="does not exist"):
        import_dataset(tmp_path / "nope.csv", "other")
    assert not (data_dir / "other").exists() and not [p for p in data_dir.iterdir() if p.name.startswith(".")]


def test_a_failed_import_leaves_nothing_behind(tmp_path, data_dir):
    bad = tmp_path / "bad.csv"
    bad.write_text("just one column\n1\n2\n")
    with pytest.raises(DataError):
        import_dataset(bad, "broken")
    assert not data_dir.exists() or not any(data_dir.iterdir())


def test_the_sandbox_allows_only_paths_under_its_roots(tmp_path, monkeypatch):
    root = tmp_path / "allowed"
    (root / "folder").mkdir(parents=True)
    _log(root / "folder" / "train.txt")
    outside = _log(tmp_path / "outside.csv")
    monkeypatch.setenv("CNSDIFF_IMPORT_ROOTS", str(root))
    assert import_roots() == [root.resolve()]
    assert allowed_import_path(str(root / "folder")) == (root / "folder").resolve()
    with pytest.raises(DataError, match="outside the folders this app may read"):
        allowed_import_path(str(outside))
    with pytest.raises(DataError, match="Type a file or folder path first"):
        allowed_import_path("  ")
    assert openable_path(str(root / "folder")) and not openable_path(str(outside))
    assert openable_path(str(outside), extra_roots=[tmp_path.resolve()])  # e.g. the upload folder
    (root / "folder" / "leak").symlink_to(outside)
    assert escaping_entry(root / "folder", [root.resolve()]) == root / "folder" / "leak"
    assert not openable_path(str(root / "folder"))
    with pytest.raises(DataError, match="links outside"):
        allowed_import_path(str(root / "folder"))
