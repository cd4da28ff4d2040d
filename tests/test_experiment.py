"""The results table: every sampler with the same budget, MostPop as the floor, seeds summarized."""
import numpy as np
import pandas as pd
import pytest

from cnsdiff_core.experiment import improvement, summarize, table_from_csvs
from cnsdiff_core.grid import run_experiment

SMALL = {"epochs": 2, "dim": 16, "batch_size": 1024, "probe_triples": 64, "patience": 0, "test_eval": "selected"}


@pytest.fixture(scope="module")
def table(tmp_path_factory):
    runs = tmp_path_factory.mktemp("exp-runs")
    return run_experiment("sample", ["cnsdiff", "mostpop", "rns"], seeds=2, device="cpu", preset="demo",
                          overrides=SMALL, with_reference=False, runs_dir=str(runs), with_mostpop=False)


def test_every_sampler_and_seed_is_a_row_and_mostpop_comes_first(table):
    f = table.frame
    assert f.groupby("sampler").size().to_dict() == {"mostpop": 1, "rns": 2, "cnsdiff": 2}
    assert list(table.summary["sampler"]) == ["mostpop", "rns", "cnsdiff"]
    assert (f[f.sampler != "mostpop"]["epochs_run"] == 2).all()
    for col in ("valid_recall@20", "iid_recall@20", "ood_recall@20", "ood_ndcg@10"):
        assert f[col].between(0, 1).all(), col
    # two seeds: different models, so a spread, shown as mean ± std in the markdown
    rns = table.summary.set_index("sampler").loc["rns"]
    assert rns["seeds"] == 2 and rns["ood_recall@20_std"] >= 0
    assert "±" in table.markdown and "| mostpop |" in table.markdown


def test_mostpop_row_is_the_popularity_ranking(table):
    mp = table.frame[table.frame.sampler == "mostpop"].iloc[0]
    assert mp["epochs_run"] == 0 and np.isnan(mp["fhn"])
    assert 0 < mp["iid_recall@20"] < 1


def test_improvement_picks_cnsdiff_on_validation_and_the_best_baseline_on_the_metric():
    summary = pd.DataFrame([
        {"sampler": "mostpop", "preset": "-", "valid_recall@20": 0.1, "ood_recall@20": 0.5},
        {"sampler": "rns", "preset": "baseline", "valid_recall@20": 0.30, "ood_recall@20": 0.10},
        {"sampler": "ahns", "preset": "baseline", "valid_recall@20": 0.20, "ood_recall@20": 0.12},
        {"sampler": "cnsdiff", "preset": "tuned", "valid_recall@20": 0.31, "ood_recall@20": 0.09},
        {"sampler": "cnsdiff", "preset": "paper", "valid_recall@20": 0.25, "ood_recall@20": 0.20},
        {"sampler": "cnsdiff", "preset": "reference", "valid_recall@20": 0.40, "ood_recall@20": 0.30},
    ])
    imp = improvement(summary)
    # tuned wins validation (the reference row never counts), AHNS is the best learned baseline on
    # the OOD metric; MostPop is reported as the floor, not as a baseline
    assert imp["ours_preset"] == "tuned" and imp["best_baseline"] == "ahns"
    assert imp["relative"] == pytest.approx(0.09 / 0.12 - 1) and imp["mostpop"] == 0.5


def test_csvs_from_parallel_jobs_merge_into_one_table(table, tmp_path):
    f = table.frame
    a, b = tmp_path / "a.csv", tmp_path / "b.csv"
    f[f.sampler != "cnsdiff"].to_csv(a, index=False)
    f[f.sampler == "cnsdiff"].to_csv(b, index=False)
    merged = table_from_csvs([b, a, a])  # repeated file: rows are not counted twice
    assert len(merged.frame) == len(f)
    assert list(merged.summary["sampler"]) == ["mostpop", "rns", "cnsdiff"]
    assert np.allclose(merged.summary.select_dtypes("number").to_numpy(dtype=float),
                       summarize(f).select_dtypes("number").to_numpy(dtype=float), equal_nan=True)


def test_causal_ablation_summary_groups_by_world_and_causal_kind(tmp_path):
    import json

    import pandas as pd

    from cnsdiff_core.experiment import causal_ablation, load_causal_ablation

    rows = []
    for c, causal, seed, ood, true in [(0.3, "kl", 0, 0.10, 0.2), (0.3, "kl", 1, 0.14, 0.4),
                                       (0.3, "none", 0, 0.12, 0.3), (0.9, "kl", 0, 0.05, 0.1)]:
        rows.append({"dataset": f"synthetic:confounding={c},seed=2024", "overrides": json.dumps({"causal": causal}),
                     "seed": seed, "valid_recall@20": 0.2, "ood_recall@20": ood, "fhn_true": true,
                     "premix_fhn_true": 0.0, "own_positive": 0.5})
    table = causal_ablation(pd.DataFrame(rows))
    assert table[["confounding", "causal"]].values.tolist() == [[0.3, "none"], [0.3, "kl"], [0.9, "kl"]]
    kl = table[(table["confounding"] == 0.3) & (table["causal"] == "kl")].iloc[0]
    assert kl["ood_recall@20"] == pytest.approx(0.12) and kl["ood_recall@20_std"] == pytest.approx(0.02)
    assert kl["fhn_true"] == pytest.approx(0.3) and kl["seeds"] == 2
    path = tmp_path / "abl.csv"
    pd.DataFrame(rows).to_csv(path, index=False)
    assert len(load_causal_ablation(path)) == 3
    assert load_causal_ablation(tmp_path / "missing.csv").empty


def test_refresh_fhn_recomputes_the_columns_from_the_runs_diagnostics():
    import pandas as pd

    from cnsdiff_core.experiment import FHN_COLUMNS, refresh_fhn

    diag = pd.DataFrame([
        {"sampler": "cnsdiff", "step": -1, "epoch": 3, "n": 100, "fhn": 0.05, "fhn_lo": 0.02, "fhn_hi": 0.11,
         "own_positive": 0.2, "fhn_lift": 2.0, "uniform_rate": 0.025, "fhn_null": float("nan")},
        {"sampler": "cnsdiff", "step": -2, "epoch": 3, "n": 100, "fhn": 0.01, "fhn_lo": 0.0, "fhn_hi": 0.05,
         "own_positive": 0.7, "fhn_null": 0.002},
        {"sampler": "cnsdiff", "step": -1, "epoch": 4, "n": 100, "fhn": 0.5, "own_positive": 0.0}])

    class Store:
        def load(self, run_id):
            if run_id != "r1":
                raise KeyError(run_id)
            return type("Run", (), {"diagnostics": staticmethod(lambda: diag)})()

    frame = pd.DataFrame([{"sampler": "cnsdiff", "best_epoch": 3, "run_id": "r1", "fhn": 0.9},
                          {"sampler": "cnsdiff", "best_epoch": 3, "run_id": "gone", "fhn": 0.4}])
    out = refresh_fhn(frame, Store())
    assert set(FHN_COLUMNS) <= set(out.columns)
    first = out.iloc[0]
    assert first["fhn"] == 0.05 and first["fhn_own_positive"] == 0.2  # the selected epoch, not the last
    assert first["fhn_synthesized"] == 0.01 and first["fhn_synthesized_own_positive"] == 0.7
    assert first["fhn_null"] == 0.002 and (first["fhn_lo"], first["fhn_hi"]) == (0.02, 0.11)
    assert out.iloc[1]["fhn"] == 0.4  # a run that is gone keeps the row's own figure
