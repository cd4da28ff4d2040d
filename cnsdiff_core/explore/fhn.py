"""FHN & hardness: diagnostics of several runs in long form, tables at the selected epoch, and
FHN against a synthetic world's confounding strength."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Iterable, Mapping

import numpy as np
import pandas as pd

from ..diagnostics import PRE_MIX, TRAINED, series_key, vector_kind
from ..samplers import SYNTHESIZING, WITH_DENOISER
from .common import sampler_key, series_order


def series_name(sampler: str, step: int) -> str:
    return series_key(sampler, step)


def _legacy_vectors(d: pd.DataFrame) -> pd.DataFrame:
    """Runs stored before the trained-on / pre-mix split have no 'vector' column; their CNSDiff
    row at step -1 held the synthesized h before mixing, so it becomes the pre-mix row."""
    if "vector" in d:
        return d
    d = d.copy()
    old_premix = d["sampler"].isin(WITH_DENOISER) & (d["step"] == TRAINED)
    d.loc[old_premix, "step"] = PRE_MIX
    d["vector"] = [vector_kind(int(st)) for st in d["step"]]
    return d


def _with_series(d: pd.DataFrame, cols: list[str]) -> pd.DataFrame:
    """Diagnostics rows with their vector kind (older runs too), a series name, and `cols` (NaN
    where a run stored before a column existed lacks it)."""
    d = _legacy_vectors(d).copy()
    d["series"] = [series_name(a, b) for a, b in zip(d["sampler"], d["step"])]
    for c in cols:
        if c not in d:
            d[c] = np.nan
    return d[cols]


def fhn_curves(diagnostics: Mapping[str, pd.DataFrame], include_steps: bool = True) -> pd.DataFrame:
    """Diagnostics of several runs in long form: run, epoch, sampler, step, series, vector
    ('negative' = trained on, 'pre-mix', 'step'), fhn with its Wilson interval (fhn_lo, fhn_hi),
    own_positive (collapse share), fhn_null (+ interval) and null_ratio for vectors, fhn_lift,
    fhn_true (+ interval; NaN where the data has no ground truth), hardness_mean, cos_to_pos,
    nn_dist, uniform_rate. Runs stored before these columns existed get NaN in them.
    include_steps=False keeps the trained-on negatives and pre-mix candidates only."""
    cols = ["run", "epoch", "sampler", "step", "series", "vector", "fhn", "fhn_lo", "fhn_hi", "own_positive",
            "fhn_null", "fhn_null_lo", "fhn_null_hi", "null_ratio", "fhn_lift", "fhn_true", "fhn_true_lo",
            "fhn_true_hi", "hardness_mean", "cos_to_pos", "nn_dist", "uniform_rate"]
    frames = []
    for run_id, diag in diagnostics.items():
        if diag is None or diag.empty:
            continue
        d = diag.copy()
        if not include_steps:
            d = d[d["step"] < 0]
        d["run"] = run_id
        frames.append(_with_series(d, cols))
    if not frames:
        return pd.DataFrame(columns=cols)
    return pd.concat(frames, ignore_index=True).sort_values(["run", "series", "epoch"], ignore_index=True)


def hardness_samples(negatives: Mapping[str, Mapping[str, Mapping[str, np.ndarray]]]) -> pd.DataFrame:
    """Per-triple hardness and scores of each run's probe negatives, in long form:
    run, series, sampler, step, synthesized, hardness, score, s_pos, fhn, nn_dist.
    A 'positive' series per run holds the positives' scores (hardness 0) for score histograms."""
    frames = []
    for run_id, negs in negatives.items():
        if not negs or "_probe" not in negs:
            continue
        s_pos = np.asarray(negs["_probe"]["s_pos"], dtype=np.float32)
        frames.append(pd.DataFrame({"run": run_id, "series": "positive", "sampler": "positive", "step": -1,
                                    "synthesized": False, "hardness": 0.0, "score": s_pos, "s_pos": s_pos,
                                    "fhn": False, "nn_dist": 0.0}))
        for key, arr in negs.items():
            if key.startswith("_"):
                continue
            base, step = sampler_key(key)
            frames.append(pd.DataFrame({"run": run_id, "series": key, "sampler": base, "step": step,
                                        "synthesized": bool(arr["synthesized"]) if "synthesized" in arr
                                        else base in SYNTHESIZING, "hardness": arr["hardness"],
                                        "score": arr["hardness"] + s_pos, "s_pos": s_pos,
                                        "fhn": arr["fhn"].astype(bool), "nn_dist": arr["nn_dist"]}))
    if not frames:
        return pd.DataFrame(columns=["run", "series", "sampler", "step", "synthesized", "hardness", "score",
                                     "s_pos", "fhn", "nn_dist"])
    return pd.concat(frames, ignore_index=True)


def world_confounding(config: Mapping, dataset_info: Mapping) -> float | None:
    """Confounding strength of the synthetic world a run was trained on, or None for real data.

    Read from the config's dataset string ('synthetic:confounding=0.8,...'), else from the
    dataset.json source ('synthetic world {...}'), else from a saved world folder's world.json."""
    from ..data.registry import parse_synthetic

    name = str(config.get("dataset", "") or "")
    if name.lower().startswith("synthetic"):
        try:
            return float(parse_synthetic(name.split(":", 1)[1] if ":" in name else "").confounding)
        except ValueError:
            pass
    source = str(dataset_info.get("source", "") or "")
    if source.startswith("synthetic world "):
        try:
            return float(json.loads(source[len("synthetic world "):])["confounding"])
        except (ValueError, KeyError, TypeError):
            return None
    if source:
        meta = Path(source) / "world.json"
        try:
            if meta.is_file():
                return float(json.loads(meta.read_text(encoding="utf-8"))["config"]["confounding"])
        except (OSError, ValueError, KeyError, TypeError):
            return None
    return None


def selected_epoch_rows(diag: pd.DataFrame, best_epoch: int | None) -> pd.DataFrame:
    """Diagnostics rows of the selected epoch (the last diagnosed epoch when it is unknown)."""
    if diag is None or diag.empty:
        return pd.DataFrame()
    epochs = diag["epoch"].unique()
    ep = int(best_epoch) if best_epoch is not None and int(best_epoch) in epochs else int(epochs.max())
    return diag[diag["epoch"] == ep]


def fhn_table(runs: Mapping[str, tuple[pd.DataFrame, int | None]]) -> pd.DataFrame:
    """The FHN figures of every series at each run's selected epoch, for a table:
    run, series, vector, epoch, n, fhn, ci (the Wilson 95% interval as text), collapse
    (own_positive), null (matched null), observed/null, lift (over uniform), true (+ ci)."""
    cols = ["run", "series", "vector", "epoch", "n", "fhn", "ci", "collapse", "null", "observed/null", "lift",
            "true", "true ci"]
    out = []
    for run_id, (diag, best) in runs.items():
        rows = selected_epoch_rows(diag, best)
        if rows.empty:
            continue
        d = _legacy_vectors(rows)
        for c in ("fhn_lo", "fhn_hi", "own_positive", "fhn_null", "null_ratio", "fhn_true", "fhn_true_lo",
                  "fhn_true_hi", "n"):
            if c not in d:
                d[c] = np.nan

        def ci(lo, hi):
            return "" if pd.isna(lo) or pd.isna(hi) else f"[{lo:.4f}, {hi:.4f}]"

        out.append(pd.DataFrame({
            "run": run_id, "series": [series_name(a, b) for a, b in zip(d["sampler"], d["step"])],
            "vector": d["vector"].to_numpy(), "epoch": d["epoch"].to_numpy(), "n": d["n"].to_numpy(),
            "fhn": d["fhn"].to_numpy(), "ci": [ci(a, b) for a, b in zip(d["fhn_lo"], d["fhn_hi"])],
            "collapse": d["own_positive"].to_numpy(), "null": d["fhn_null"].to_numpy(),
            "observed/null": d["null_ratio"].to_numpy(), "lift": d["fhn_lift"].to_numpy(),
            "true": d["fhn_true"].to_numpy(), "true ci": [ci(a, b) for a, b in zip(d["fhn_true_lo"], d["fhn_true_hi"])]}))
    if not out:
        return pd.DataFrame(columns=cols)
    table = pd.concat(out, ignore_index=True)
    order = {k: i for i, k in enumerate(series_order(table["series"]))}
    return table.sort_values(["run", "series"], key=lambda c: c.map(order) if c.name == "series" else c,
                             ignore_index=True)[cols]


def confounding_table(entries: Iterable[tuple[str, Mapping, Mapping, pd.DataFrame, int | None]]) -> pd.DataFrame:
    """FHN at the selected epoch against the world's confounding strength.

    entries: (run_id, config dict, dataset_info, diagnostics, best_epoch) per run; runs on real
    data (no confounding) are skipped. Columns: run, confounding, series, sampler, step, vector,
    fhn (+ Wilson interval), own_positive, fhn_null, fhn_lift, fhn_true (+ interval)."""
    cols = ["run", "confounding", "series", "sampler", "step", "vector", "fhn", "fhn_lo", "fhn_hi", "own_positive",
            "fhn_null", "fhn_lift", "fhn_true", "fhn_true_lo", "fhn_true_hi"]
    out = []
    for run_id, config, info, diag, best in entries:
        conf = world_confounding(config, info)
        rows = selected_epoch_rows(diag, best)
        if conf is None or rows.empty:
            continue
        rows = rows.copy()
        rows["run"], rows["confounding"] = run_id, conf
        out.append(_with_series(rows, cols))
    if not out:
        return pd.DataFrame(columns=cols)
    return pd.concat(out, ignore_index=True).sort_values(["series", "confounding"], ignore_index=True)
