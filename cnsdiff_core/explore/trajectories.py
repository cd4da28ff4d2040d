"""The Denoising page: one positive noised to each hardness step and denoised back, recorded."""
from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property
from typing import Mapping

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from ..config import TrainConfig
from ..data.dataset import Dataset
from ..diagnostics import resolve_to_items
from ..diffusion import Denoiser, NoiseSchedule, denoise_trajectory
from ..projection import nearest_items
from .common import ExploreError, user_items


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

    @cached_property
    def _rows(self) -> dict[tuple[int, int], int]:
        """(s, frame) -> position of its first row in `table` (a page asks for rows many times)."""
        out: dict[tuple[int, int], int] = {}
        for i, key in enumerate(zip(self.table["s"].to_numpy().tolist(), self.table["frame"].to_numpy().tolist())):
            out.setdefault((int(key[0]), int(key[1])), i)
        return out

    @cached_property
    def _last(self) -> dict[int, int]:
        out: dict[int, int] = {}
        for s, f in self._rows:
            out[s] = max(out.get(s, f), f)
        return out

    def last_frame(self, s: int) -> int:
        return self._last[int(s)]

    def at(self, s: int, frame: int) -> pd.Series:
        """The row of step s shown at animation frame `frame` (clamped to s's last state)."""
        f = min(max(int(frame), 0), self.last_frame(s))
        return self.table.iloc[self._rows[(int(s), f)]]

    def frame(self, frame: int) -> pd.DataFrame:
        return pd.DataFrame([self.at(s, frame) for s in self.steps]).reset_index(drop=True)

    def neighbours_at(self, s: int, frame: int) -> pd.DataFrame:
        f = int(self.at(s, frame)["frame"])
        nb = self.neighbours
        return nb[(nb["s"] == s) & (nb["frame"] == f)].reset_index(drop=True)

    def candidates(self) -> np.ndarray:
        """(S, d) the final state of each step's chain: the candidate negatives."""
        return np.stack([self.states[self._rows[(int(s), self.last_frame(s))]] for s in self.steps])

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
