"""Computation behind the explorer's pages that *show* negatives: Denoising, Negatives map,
FHN & hardness, and the Noise-schedule lab.

Everything here works on what a run stored (final embeddings, the selected denoiser, the probe
negatives, the diagnostics table) plus the run's `Dataset`; it never trains the recommender,
never imports Streamlit and never prints. Pages call one function per view and render the result.

Conventions: users and items are dense indices; "original ids" are `Dataset.user_ids/item_ids`.
Errors a user can cause raise `ExploreError` (or `ConfigError` for schedule values) with one
sentence that says what to do.
"""
from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Mapping

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from .config import LOSS_WEIGHTINGS, ConfigError, TrainConfig
from .data.dataset import Dataset
from .diagnostics import (PRE_MIX, TRAINED, make_probe, measure_negatives, parse_series_key, resolve_to_items,
                          series_key,
                          vector_kind)
from .diffusion import Denoiser, DenoiserTrainer, NoiseSchedule, denoise_trajectory, synthesize_candidates
from .projection import EmbeddingProjection, nearest_items
from .samplers import SYNTHESIZING, WITH_DENOISER, NegativePool
from .samplers.cnsdiff import pick_hardest



class ExploreError(ValueError):
    """A view cannot be built from what was chosen; the message says what to pick instead."""


# =============================================================================== run pieces
def build_denoiser(cfg: TrainConfig, state: Mapping | None = None) -> Denoiser:
    """A Denoiser shaped by `cfg` (as the CNSDiff sampler builds it), loaded and in eval mode."""
    if state is None:
        return Denoiser.from_config(cfg).eval()
    # Built on the meta device and loaded with assign=True: the random init is skipped, so loading
    # a stored denoiser never draws from torch's global RNG (a training thread may be using it).
    with torch.device("meta"):
        den = Denoiser.from_config(cfg)
    try:
        den.load_state_dict({k: v.detach().clone() for k, v in state.items()}, assign=True)
    except RuntimeError:
        raise ExploreError("the stored denoiser does not match the run's config (dim/hidden/conditioning); "
                           "train the run again.") from None
    return den.eval()


def run_denoiser(run) -> Denoiser:
    """The trained denoiser of a stored CNSDiff run (the one saved with the selected epoch)."""
    state = run.weights().get("sampler", {}) or {}
    if "denoiser" not in state:
        raise ExploreError(f"run {run.run_id} (sampler {run.config.sampler}) has no denoiser; pick a CNSDiff run.")
    return build_denoiser(run.config, state["denoiser"])


def sampler_key(key: str) -> tuple[str, int]:
    """'cnsdiff@14' -> ('cnsdiff', 14); 'cnsdiff@premix' -> ('cnsdiff', PRE_MIX); 'dns' -> ('dns',
    TRAINED) (the negative the sampler trains on)."""
    return parse_series_key(key)


def series_order(keys) -> list[str]:
    """Sampler series in reading order: by sampler, then CNSDiff steps numerically (@2 before @10)."""
    def order(k):
        base, step = sampler_key(k)
        return base, {TRAINED: -2, PRE_MIX: -1}.get(step, step)
    return sorted(set(keys), key=order)


def is_synthesized(key: str) -> bool:
    return sampler_key(key)[0] in SYNTHESIZING


def id_labels(ids: np.ndarray | None, n: int) -> np.ndarray:
    """(n,) original ids as str (the dense index when the dataset has none)."""
    return np.arange(n).astype(str) if ids is None else np.asarray(ids).astype(str)


def item_labels(data: Dataset) -> np.ndarray:
    """(I,) 'id · title' (or just the id) for pickers and tables."""
    ids = id_labels(data.item_ids, data.n_items)
    if data.item_titles is None:
        return ids
    return np.char.add(np.char.add(ids, " · "), np.asarray(data.item_titles).astype(str))


def user_items(data: Dataset, user: int) -> tuple[np.ndarray, np.ndarray]:
    """Sorted (training positives, held-out positives) of one user; held-out = valid + IID test +
    OOD test minus training items (a training item can never be drawn as a negative)."""
    if not 0 <= int(user) < data.n_users:
        raise ExploreError(f"user index {user} is outside 0..{data.n_users - 1}; pick a user from the list.")
    train = np.unique(data.train[data.train[:, 0] == user, 1])
    held = data.held_out()
    held = np.setdiff1d(np.unique(held[held[:, 0] == user, 1]), train)
    return train, held


def users_with_training(data: Dataset) -> np.ndarray:
    """Sorted users that have at least one training positive (the only ones with a trajectory)."""
    return np.unique(data.train[:, 0])


def user_summary(data: Dataset) -> pd.DataFrame:
    """Users with training positives: user, user_id (original), n_train, n_heldout."""
    users = users_with_training(data)
    n_train = np.bincount(data.train[:, 0], minlength=data.n_users)
    held = data.held_out()
    n_held = np.bincount(held[:, 0], minlength=data.n_users) if len(held) else np.zeros(data.n_users, int)
    return pd.DataFrame({"user": users, "user_id": id_labels(data.user_ids, data.n_users)[users],
                         "n_train": n_train[users], "n_heldout": n_held[users]})


# =============================================================================== trajectories
@dataclass
class Trajectories:
    """Recorded forward + reverse paths of one (user, positive) at every hardness step s.

    `table` has one row per state (columns below); `states` / `z0_hats` are aligned with it.
    Frame k of the animation shows, for every s, its state at min(k, last frame of s).
    """

    user: int
    pos: int
    s_pos: float  # score of the positive, u . z_0
    steps: list[int]
    table: pd.DataFrame
    states: np.ndarray  # (n_rows, d)
    z0_hats: np.ndarray  # (n_rows, d); NaN on forward rows
    neighbours: pd.DataFrame  # s, frame, rank, item, cos, is_train, is_heldout
    reverse_from_T: bool

    @property
    def n_frames(self) -> int:
        return int(self.table["frame"].max()) + 1

    def last_frame(self, s: int) -> int:
        return int(self.table.loc[self.table["s"] == s, "frame"].max())

    def at(self, s: int, frame: int) -> pd.Series:
        """The row of step s shown at animation frame `frame` (clamped to s's last state)."""
        f = min(max(int(frame), 0), self.last_frame(s))
        return self.table[(self.table["s"] == s) & (self.table["frame"] == f)].iloc[0]

    def frame(self, frame: int) -> pd.DataFrame:
        return pd.DataFrame([self.at(s, frame) for s in self.steps]).reset_index(drop=True)

    def neighbours_at(self, s: int, frame: int) -> pd.DataFrame:
        f = int(self.at(s, frame)["frame"])
        nb = self.neighbours
        return nb[(nb["s"] == s) & (nb["frame"] == f)].reset_index(drop=True)

    def candidates(self) -> np.ndarray:
        """(S, d) the final state of each step's chain: the candidate negatives."""
        return np.stack([self.states[self.table.index[(self.table["s"] == s)
                                                      & (self.table["frame"] == self.last_frame(s))][0]]
                         for s in self.steps])

    def candidate_cosines(self) -> pd.DataFrame:
        """S x S cosine between the candidates of different steps (near 1 = the timestep does nothing)."""
        c = self.candidates()
        c = c / np.maximum(np.linalg.norm(c, axis=1, keepdims=True), 1e-12)
        return pd.DataFrame(c @ c.T, index=self.steps, columns=self.steps)


@torch.no_grad()
def denoising_trajectories(cfg: TrainConfig, denoiser: Denoiser, user_emb: np.ndarray, item_emb: np.ndarray,
                           data: Dataset, user: int, pos: int, seed: int = 0, k: int = 5,
                           exclude_train: bool = False) -> Trajectories:
    """Noise the positive to each hardness step s and denoise it to the step's stop, recording
    every state (the same maths the sampler runs, one chain at a time).

    Args:
        cfg: the run's config (schedule, hardness steps, stop rule, reverse_from_T, conditioning).
        denoiser: the run's trained denoiser (see `run_denoiser`).
        user_emb, item_emb: (U, d), (I, d) final propagated embeddings of the run.
        data: the run's dataset (for the user's training and held-out positives).
        user, pos: dense indices; pos should be one of the user's training positives.
        seed: seed of the forward noise (one draw per step s, fixed so a view is reproducible).
        k: nearest real items listed per state.
        exclude_train: leave the user's training items out of the nearest-item lists.

    Returns:
        Trajectories; `table` columns: s, r, frame, t, t_in, phase, label, score, hardness,
        cos_to_pos, norm, norm_ratio, coef1, coef2, beta, alphabar, sqrt_abar, sqrt_1m_abar,
        z0hat_norm, z0hat_cos_to_pos, zin_norm, resolved_item (diagnostics.RESOLUTION), nn_dist
        (Euclidean distance to it / the positive's norm), resolved_own_positive, resolved_heldout.
    """
    user, pos = int(user), int(pos)
    train_items, held_items = user_items(data, user)
    if pos < 0 or pos >= len(item_emb):
        raise ExploreError(f"item index {pos} is outside 0..{len(item_emb) - 1}; pick one of the user's items.")
    sched = NoiseSchedule.from_config(cfg).tensors("cpu")
    steps = cfg.hardness_steps()
    u = torch.as_tensor(np.asarray(user_emb[user], dtype=np.float32))
    z0 = torch.as_tensor(np.asarray(item_emb[pos], dtype=np.float32))
    gen = torch.Generator().manual_seed(int(seed))
    noise = torch.randn((len(steps), z0.shape[0]), generator=gen)  # (S, d), one draw per step
    s_pos = float(u @ z0)
    z0n = float(z0.norm())
    rows, states, z0hats = [], [], []
    for j, s in enumerate(steps):
        r = 0 if cfg.reverse_from_T else cfg.stop_for(s)
        recs = denoise_trajectory(denoiser, sched, z0, s, r, noise[j],
                                  u if cfg.condition_on_user else None, cfg.reverse_from_T)
        for frame, rec in enumerate(recs):
            z = torch.as_tensor(rec.z)
            fwd = rec.phase == "forward"
            zin = None if fwd else torch.as_tensor(recs[frame - 1].z)
            zh = None if rec.z0_hat is None else torch.as_tensor(rec.z0_hat)
            rows.append({
                "s": s, "r": r, "frame": frame, "t": rec.t, "t_in": None if fwd else rec.t + 1,
                "phase": rec.phase,
                "label": f"forward t={rec.t}" if fwd else f"reverse t={rec.t + 1}→{rec.t}",
                "score": float(u @ z), "hardness": float(u @ z) - s_pos,
                "cos_to_pos": float(F.cosine_similarity(z, z0, dim=0)),
                "norm": float(z.norm()), "norm_ratio": float(z.norm()) / max(z0n, 1e-12),
                "coef1": rec.coef1, "coef2": rec.coef2, "beta": rec.beta, "alphabar": rec.alphabar,
                "sqrt_abar": math.sqrt(rec.alphabar), "sqrt_1m_abar": math.sqrt(max(1 - rec.alphabar, 0.0)),
                "z0hat_norm": float("nan") if zh is None else float(zh.norm()),
                "z0hat_cos_to_pos": float("nan") if zh is None else float(F.cosine_similarity(zh, z0, dim=0)),
                "zin_norm": float("nan") if zin is None else float(zin.norm()),
            })
            states.append(rec.z)
            z0hats.append(np.full_like(rec.z, np.nan) if rec.z0_hat is None else rec.z0_hat)
    table = pd.DataFrame(rows)
    states_a = np.stack(states).astype(np.float32)
    items = np.asarray(item_emb, dtype=np.float32)
    n_items = len(items)
    train_mask = np.zeros(n_items, dtype=bool)
    train_mask[train_items] = True
    # What the FHN diagnostic resolves this vector to (diagnostics.RESOLUTION): the nearest item by
    # Euclidean distance over all items; the distance is relative to the positive's norm.
    res_idx, res_dist = resolve_to_items(torch.as_tensor(states_a), torch.as_tensor(items))
    res_idx = res_idx.numpy()
    table["resolved_item"] = res_idx
    table["nn_dist"] = res_dist.numpy() / max(z0n, 1e-12)
    table["resolved_own_positive"] = res_idx == pos
    table["resolved_heldout"] = np.isin(res_idx, held_items)
    excl = np.broadcast_to(train_mask, (len(states_a), n_items)) if exclude_train else None
    nn_idx, nn_cos = nearest_items(states_a, items, k, exclude=excl)
    kk = nn_idx.shape[1]
    neighbours = pd.DataFrame({
        "s": np.repeat(table["s"].to_numpy(), kk), "frame": np.repeat(table["frame"].to_numpy(), kk),
        "rank": np.tile(np.arange(1, kk + 1), len(table)), "item": nn_idx.ravel(), "cos": nn_cos.ravel(),
    })
    neighbours["is_train"] = np.isin(neighbours["item"], train_items)
    neighbours["is_heldout"] = np.isin(neighbours["item"], held_items)
    return Trajectories(user, pos, s_pos, steps, table, states_a, np.stack(z0hats).astype(np.float32),
                        neighbours, bool(cfg.reverse_from_T))


def update_formula(row: Mapping, s: int | None = None) -> str:
    """LaTeX of the update that produced this trajectory row, with its numbers.

    Reverse (DDPM eq. 7 posterior mean): z_{t-1} = c1 * z0_hat + c2 * z_t; forward (eq. 4):
    z_t = sqrt(abar_t) z_0 + sqrt(1 - abar_t) eps."""
    t = int(row["t"])
    if row["phase"] == "forward":
        return (rf"z_{{{t}}} = \sqrt{{\bar\alpha_{{{t}}}}}\,z_0 + \sqrt{{1-\bar\alpha_{{{t}}}}}\,\epsilon"
                rf" = {row['sqrt_abar']:.4f}\,z_0 + {row['sqrt_1m_abar']:.4f}\,\epsilon"
                rf"\qquad \|z_{{{t}}}\| = {row['norm']:.3f}")
    tin = int(row["t_in"])
    told = rf"\quad(\text{{denoiser told }} t={tin})" if s is not None and tin > s else ""
    return (rf"z_{{{t}}} = c_1\,\hat z_0 + c_2\,z_{{{tin}}} = {row['coef1']:.4f}\,\hat z_0 + {row['coef2']:.4f}\,z_{{{tin}}}"
            rf"\qquad \|\hat z_0\| = {row['z0hat_norm']:.3f},\ \|z_{{{tin}}}\| = {row['zin_norm']:.3f},"
            rf"\ \|z_{{{t}}}\| = {row['norm']:.3f}{told}")


# =============================================================================== maps
def fit_item_map(item_emb: np.ndarray, method: str = "pca", random_state: int = 0) -> EmbeddingProjection:
    """Fit a 2-D map on the item embeddings only; everything else is placed with `transform`."""
    return EmbeddingProjection(method, random_state=random_state).fit(np.asarray(item_emb, dtype=np.float32))


def item_frame(data: Dataset, coords: np.ndarray, n_env: int = 4) -> pd.DataFrame:
    """One row per item: item, item_id, title, x, y, popularity, log_popularity, environment."""
    if len(coords) != data.n_items:
        raise ExploreError(f"the map has {len(coords)} items but the dataset has {data.n_items}; "
                           "the run was trained on other data; pick the run's own dataset.")
    pop = data.item_popularity()
    env = data.item_environments(n_env)
    return pd.DataFrame({
        "item": np.arange(data.n_items), "item_id": id_labels(data.item_ids, data.n_items),
        "title": np.asarray(data.item_titles).astype(str) if data.item_titles is not None else "",
        "x": coords[:, 0], "y": coords[:, 1], "popularity": pop, "log_popularity": np.log10(1 + pop),
        "environment": [f"E{e} ({'least' if e == 0 else 'most' if e == n_env - 1 else 'mid'} popular)"
                        for e in env],
    })


def negatives_frame(negatives: Mapping[str, Mapping[str, np.ndarray]], item_coords: np.ndarray,
                    projection: EmbeddingProjection, data: Dataset | None = None) -> pd.DataFrame:
    """Every probe negative of every sampler placed on the map.

    Real items sit at their fitted coordinates; synthesized vectors (MixGCF, CNSDiff and each
    CNSDiff step) are placed with the fitted map's `transform` (never refit).
    Columns: layer, sampler, step, synthesized, triple, user, pos, item, x, y, hardness, score,
    s_pos, nn_dist, fhn, fhn_true (NaN without ground truth).
    """
    if "_probe" not in negatives:
        return pd.DataFrame(columns=["layer", "sampler", "step", "synthesized", "triple", "user", "pos",
                                     "item", "x", "y", "hardness", "score", "s_pos", "nn_dist", "fhn", "fhn_true"])
    probe = negatives["_probe"]
    users, pos, s_pos = probe["users"], probe["pos"], probe["s_pos"]
    frames = []
    for key, arr in negatives.items():
        if key.startswith("_"):
            continue
        base, step = sampler_key(key)
        synth = bool(arr["synthesized"]) if "synthesized" in arr else base in SYNTHESIZING  # older runs lack the flag
        items = np.asarray(arr["items"], dtype=np.int64)
        xy = projection.transform(arr["vec"]) if synth else item_coords[items]
        df = pd.DataFrame({"layer": key, "sampler": base, "step": step, "synthesized": synth,
                           "triple": np.arange(len(items)), "user": users, "pos": pos, "item": items,
                           "x": xy[:, 0], "y": xy[:, 1], "hardness": arr["hardness"],
                           "score": arr["hardness"] + s_pos, "s_pos": s_pos, "nn_dist": arr["nn_dist"],
                           "fhn": arr["fhn"].astype(bool)})
        df["fhn_true"] = (data.truth.is_relevant(users, items).astype(float)
                          if data is not None and data.truth is not None else np.nan)
        frames.append(df)
    return pd.concat(frames, ignore_index=True)


def positives_frame(data: Dataset, item_coords: np.ndarray, user: int) -> pd.DataFrame:
    """The user's training and held-out positives at their map coordinates (layer, item, x, y)."""
    train, held = user_items(data, user)
    parts = [pd.DataFrame({"layer": name, "item": idx, "x": item_coords[idx, 0], "y": item_coords[idx, 1]})
             for name, idx in (("training positive", train), ("held-out positive", held))]
    return pd.concat(parts, ignore_index=True)


# =============================================================================== FHN & hardness
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
        d = _legacy_vectors(d)
        d["series"] = [series_name(a, b) for a, b in zip(d["sampler"], d["step"])]
        for c in cols:
            if c not in d:
                d[c] = np.nan
        frames.append(d[cols])
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
    from .data.registry import parse_synthetic

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
        rows = _legacy_vectors(rows).copy()
        rows["run"], rows["confounding"] = run_id, conf
        rows["series"] = [series_name(a, b) for a, b in zip(rows["sampler"], rows["step"])]
        for c in cols:
            if c not in rows:
                rows[c] = np.nan
        out.append(rows[cols])
    if not out:
        return pd.DataFrame(columns=cols)
    return pd.concat(out, ignore_index=True).sort_values(["series", "confounding"], ignore_index=True)


# =============================================================================== schedule lab
def schedule_curves(kind: str, steps: int, scale: float, beta_min: float, beta_max: float,
                    label: str = "A", weighting: str = "snr-diff") -> pd.DataFrame:
    """beta_t, alphabar_t, SNR, noise std and the denoiser's per-t loss weight (normalized to
    mean 1, `weighting` as TrainConfig.loss_weighting) per step 1..T of a schedule (raises ConfigError).

    Columns: schedule, t, beta, alphabar, snr, noise_std, loss_weight."""
    if weighting not in LOSS_WEIGHTINGS:
        raise ConfigError(f"weighting={weighting!r} is invalid: use one of {', '.join(LOSS_WEIGHTINGS)}.")
    if not isinstance(steps, (int, np.integer)) or not 1 <= int(steps) <= 10_000:
        raise ConfigError(f"steps={steps!r} is invalid: use an integer between 1 and 10000.")
    sched = NoiseSchedule.create(kind, int(steps), float(scale), float(beta_min), float(beta_max))
    curves = sched.curves()
    df = pd.DataFrame({k: np.asarray(v) for k, v in curves.items()})
    df["loss_weight"] = sched.loss_weights(True, weighting)[1:]
    df.insert(0, "schedule", label)
    return df


def lab_config(cfg: TrainConfig, kind: str, steps: int, scale: float, beta_min: float,
               beta_max: float, weighting: str | None = None) -> TrainConfig:
    """`cfg` with an edited schedule. When T changes, the hardness steps keep their place in the
    chain (hard_start, hard_stride and stop_step are rescaled by T_new / T_old), so the config
    stays valid. Raises ConfigError naming the bad value."""
    schedule_curves(kind, steps, scale, beta_min, beta_max)  # one clear message for bad bounds
    steps = int(steps)
    upd: dict = {"schedule": kind, "steps": steps, "noise_scale": float(scale),
                 "beta_min": float(beta_min), "beta_max": float(beta_max),
                 "loss_weighting": weighting or cfg.loss_weighting}
    if steps != cfg.steps:
        ratio = steps / cfg.steps
        start = min(max(int(round(cfg.hard_start * ratio)), 1), steps)
        upd["hard_start"] = start
        upd["hard_stride"] = max(int(round(cfg.hard_stride * ratio)), 1)
        upd["stop_step"] = min(int(round(cfg.stop_step * ratio)), start - 1)
    return cfg.with_updates(**upd)


def _probe_for(data: Dataset, n_triples: int, seed: int):
    pool = NegativePool(data.train, data.n_users, data.n_items, torch.device("cpu"))
    return make_probe(data, pool, n_triples, torch.device("cpu"), seed=seed)


@torch.no_grad()
def step_report(cfg: TrainConfig, denoiser: Denoiser, data: Dataset, user_emb: np.ndarray,
                item_emb: np.ndarray, n_triples: int = 512, seed: int = 12345) -> pd.DataFrame:
    """Hardness and FHN of CNSDiff's candidates per hardness step on a probe of training triples.

    One row per step s (and a row step=-1 for the hardest candidate, the sampler's pre-mix pick),
    with the measures of `diagnostics.measure_negatives` (METHOD.md "False hard negatives"):
    hardness, cosine and distance to the nearest item (all items), observed FHN with its Wilson
    interval, the collapse share (own_positive), the matched null, ground truth where known.
    """
    if item_emb.shape[1] != cfg.dim:
        raise ExploreError(f"embeddings have {item_emb.shape[1]} dimensions but the config says dim={cfg.dim}; "
                           "use the run's own config.")
    probe = _probe_for(data, n_triples, seed)
    items_e = torch.as_tensor(np.asarray(item_emb, dtype=np.float32))
    user_e = torch.as_tensor(np.asarray(user_emb, dtype=np.float32))[probe.users]
    pos_e = items_e[probe.pos]
    s_pos = (user_e * pos_e).sum(-1)
    sched = NoiseSchedule.from_config(cfg).tensors("cpu")
    steps = cfg.hardness_steps()
    stops = [cfg.stop_for(s) for s in steps]
    gen = torch.Generator().manual_seed(int(seed))
    noise = torch.randn((len(steps),) + tuple(pos_e.shape), generator=gen)  # (S, P, d)
    denoiser.eval()
    cands = synthesize_candidates(denoiser, sched, pos_e, steps, stops, noise,
                                  user_e if cfg.condition_on_user else None, cfg.reverse_from_T,
                                  cfg.posterior_noise, gen)  # (P, S, d)
    chosen = pick_hardest(cands, pos_e, user_e, cfg.min_distance)  # the sampler's rule
    null_gen = torch.Generator().manual_seed(int(seed) + 1)
    rows = []
    variants = [(s, r, cands[:, k]) for k, (s, r) in enumerate(zip(steps, stops))]
    variants.append((-1, -1, cands[torch.arange(len(chosen)), chosen]))
    for s, r, vec in variants:
        row, _ = measure_negatives(probe, user_e, pos_e, items_e, vec, None, data.truth, null_gen)
        rows.append({"step": s, "stop": (0 if cfg.reverse_from_T else r) if s >= 0 else -1,
                     "label": f"s={s}" if s >= 0 else "pick (hardest)"} | row)
    return pd.DataFrame(rows)


class DenoiserRefit:
    """Train only a fresh denoiser on a run's frozen item embeddings, with `cfg`'s schedule and
    denoiser settings (hidden size, dropout, lr, SNR weights, causal term, conditioning).

    Args:
        cfg: run config with the schedule to try (see `lab_config`).
        n_steps: optimizer steps (a few hundred take seconds on a CPU for the sample world).
        batch_size: training positives per step, drawn from the training interactions.
        lr: learning rate; None = cfg.denoiser_lr.
        seed: seed of the batches, timesteps and noise (dropout and init use torch's global RNG,
            which is left alone so a training job in another thread is not disturbed).

    Fitted attributes: denoiser_, loss_curve_ (per step), eval_loss_before_, eval_loss_after_
    (objective on one fixed batch, fixed timesteps and noise, dropout off), n_steps_done_,
    stopped_, seconds_.
    """

    def __init__(self, cfg: TrainConfig, n_steps: int = 300, batch_size: int = 1024, lr: float | None = None,
                 seed: int = 0, eval_size: int = 2048) -> None:
        self.cfg = cfg
        self.n_steps = n_steps
        self.batch_size = batch_size
        self.lr = lr
        self.seed = seed
        self.eval_size = eval_size

    def fit(self, item_emb: np.ndarray, train_pairs: np.ndarray, user_emb: np.ndarray | None = None,
            env: np.ndarray | None = None, callback: Callable[[int, int, float], None] | None = None,
            should_stop: Callable[[], bool] | None = None) -> "DenoiserRefit":
        """Train on positives z_0 = item_emb[train_pairs[:, 1]] (so popular items weigh as in training).

        env: (n_train,) environment per pair (for causal='env-variance'); callback(step, n_steps,
        loss) every 10 steps and at the end; should_stop() ends early (fitted attributes kept)."""
        cfg = self.cfg
        if int(self.n_steps) < 1 or int(self.batch_size) < 1:
            raise ExploreError(f"n_steps={self.n_steps} and batch_size={self.batch_size} must be >= 1.")
        items = torch.as_tensor(np.asarray(item_emb, dtype=np.float32))
        if items.ndim != 2 or items.shape[1] != cfg.dim:
            raise ExploreError(f"item embeddings of shape {tuple(items.shape)} do not match dim={cfg.dim}; "
                               "use the run's own embeddings and config.")
        pairs = torch.as_tensor(np.asarray(train_pairs, dtype=np.int64))
        if len(pairs) == 0:
            raise ExploreError("there are no training interactions to fit the denoiser on; pick another run.")
        users = (torch.as_tensor(np.asarray(user_emb, dtype=np.float32))
                 if cfg.condition_on_user and user_emb is not None else None)
        if cfg.condition_on_user and users is None:
            raise ExploreError("this config conditions the denoiser on the user; pass the user embeddings.")
        env_t = torch.as_tensor(np.asarray(env, dtype=np.int64)) if env is not None else None
        use_env = cfg.causal == "env-variance" and env_t is not None
        trainer = DenoiserTrainer(cfg, "cpu", lr=self.lr)  # the CNSDiff sampler's own training step
        gen = torch.Generator().manual_seed(int(self.seed))
        eval_idx = torch.randint(len(pairs), (min(int(self.eval_size), len(pairs)),), generator=gen)

        def batch(idx):
            p = pairs[idx]
            return (items[p[:, 1]], None if users is None else users[p[:, 0]],
                    env_t[idx] if use_env else None)

        @torch.no_grad()
        def eval_loss() -> float:
            trainer.denoiser.eval()
            z0, u, e = batch(eval_idx)
            loss, _ = trainer.loss(z0, e, u, torch.Generator().manual_seed(int(self.seed) + 1))
            return float(loss)

        t0 = time.perf_counter()
        self.eval_loss_before_ = eval_loss()
        curve, stopped = [], False
        for step in range(int(self.n_steps)):
            idx = torch.randint(len(pairs), (int(self.batch_size),), generator=gen)
            z0, u, e = batch(idx)
            loss, _ = trainer.step(z0, e, u, gen)
            if not torch.isfinite(loss):
                raise ExploreError(f"the denoiser loss became {float(loss)} at step {step + 1}; lower "
                                   f"denoiser_lr={self.lr or cfg.denoiser_lr} or the noise scale.")
            curve.append(float(loss.detach()))
            if callback is not None and ((step + 1) % 10 == 0 or step + 1 == self.n_steps):
                callback(step + 1, int(self.n_steps), curve[-1])
            if should_stop is not None and should_stop():
                stopped = True
                break
        self.eval_loss_after_ = eval_loss()
        self.denoiser_ = trainer.denoiser.eval()
        self.schedule_ = trainer.schedule
        self.loss_curve_ = np.asarray(curve, dtype=np.float64)
        self.n_steps_done_ = len(curve)
        self.stopped_ = stopped
        self.seconds_ = time.perf_counter() - t0
        return self

    def report(self, data: Dataset, user_emb: np.ndarray, item_emb: np.ndarray, n_triples: int = 512,
               seed: int = 12345) -> pd.DataFrame:
        """`step_report` of the refitted denoiser."""
        if not hasattr(self, "denoiser_"):
            raise RuntimeError("call fit() before report().")
        return step_report(self.cfg, self.denoiser_, data, user_emb, item_emb, n_triples, seed)


def refit_denoiser(cfg: TrainConfig, data: Dataset, user_emb: np.ndarray, item_emb: np.ndarray,
                   n_steps: int = 300, n_triples: int = 512, seed: int = 0,
                   callback: Callable[[int, int, float], None] | None = None,
                   should_stop: Callable[[], bool] | None = None) -> tuple[DenoiserRefit, pd.DataFrame]:
    """The schedule lab's one call: refit a denoiser with `cfg` on frozen embeddings, then report
    hardness and FHN per step. Returns (fitted DenoiserRefit, step_report table)."""
    env = data.train_environments(cfg.n_envs, cfg.env_kind) if cfg.causal == "env-variance" else None
    refit = DenoiserRefit(cfg, n_steps=n_steps, seed=seed).fit(item_emb, data.train, user_emb, env,
                                                               callback, should_stop)
    return refit, refit.report(data, user_emb, item_emb, n_triples)


__all__ = ["ExploreError", "SYNTHESIZING", "build_denoiser", "run_denoiser", "sampler_key", "is_synthesized",
           "series_order",
           "id_labels", "item_labels", "user_items", "users_with_training", "user_summary", "Trajectories",
           "denoising_trajectories", "update_formula", "fit_item_map", "item_frame", "negatives_frame",
           "positives_frame", "series_name", "fhn_curves", "fhn_table", "hardness_samples", "world_confounding",
           "selected_epoch_rows", "confounding_table", "schedule_curves", "lab_config", "step_report",
           "DenoiserRefit", "refit_denoiser"]
