"""The one interface every negative sampler implements, and the tensors they share.

A sampler is one file in this folder: a `Sampler` subclass that names itself and says how it is
shown (label, colour, marker), whether its negatives are synthesized vectors, and which settings
of its own it has (`settings`: TrainConfig fields named `<name>_<key>`). `registry` finds it.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any, ClassVar

import numpy as np
import torch

from ..settings import Config


class NegativePool:
    """Draws items a user has not trained on, fully on tensors (rejection without Python loops
    over samples). Membership is a binary search over sorted keys user * I + item.

    `static = True` (the graphed training step, or its CPU fallback) draws without any host
    synchronization: the same three redraw rounds, then, for a pair that still collides (a dense
    user; rare), the (drawn item mod F_u)-th of the F_u items the user has not trained on instead of
    further random rounds. Where no pair collides after three rounds both modes return the same
    items from the same random numbers."""

    static = False

    def __init__(self, train: np.ndarray, n_users: int, n_items: int, device: torch.device,
                 popularity: np.ndarray | None = None) -> None:
        self.n_users, self.n_items, self.device = n_users, n_items, device
        keys = np.unique(train[:, 0].astype(np.int64) * n_items + train[:, 1].astype(np.int64))
        self.keys = torch.as_tensor(keys, device=device)
        self.popularity = np.ones(n_items) if popularity is None else np.asarray(popularity, dtype=np.float64)
        self._probs: dict[float, torch.Tensor] = {}
        # Users who trained on every item cannot get a negative; they are rare and get any item.
        deg = np.bincount(train[:, 0], minlength=n_users)
        self.saturated = torch.as_tensor(deg >= n_items, device=device)
        self._ranks: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None  # static draws: built on first use

    def is_positive(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        k = users.long() * self.n_items + items.long()
        idx = torch.searchsorted(self.keys, k).clamp(max=max(len(self.keys) - 1, 0))
        return self.keys[idx] == k if len(self.keys) else torch.zeros_like(k, dtype=torch.bool)

    def popularity_probs(self, power: float) -> torch.Tensor:
        """(I,) item probabilities proportional to popularity ** power (computed once per power)."""
        if power not in self._probs:
            w = np.power(np.maximum(self.popularity, 0) + 1e-12, power)
            self._probs[power] = torch.as_tensor(w / w.sum(), dtype=torch.float32, device=self.device)
        return self._probs[power]

    def draw(self, users: torch.Tensor, m: int = 1, power: float | None = None, max_rounds: int = 50,
             generator: torch.Generator | None = None, static: bool | None = None) -> torch.Tensor:
        """(B, m) items not in each user's training set: uniform, or with probability proportional
        to popularity ** power when `power` is given.

        generator: a torch.Generator on the pool's device, to draw without touching the global RNG.
        static: draw without a host synchronization (default: the pool's `static`)."""
        B = users.shape[0]
        uu = users.view(B, 1).expand(B, m)
        items = self._raw(B * m, power, generator).view(B, m)
        static = self.static if static is None else static
        if not static and items.device.type == "cpu":
            return self._draw_checking_redrawn(uu, items, power, max_rounds, generator)
        # a few redraw rounds without a host sync (collisions are rare in sparse data) ...
        for _ in range(3):
            bad = self.is_positive(uu, items) & ~self.saturated[uu]
            items = torch.where(bad, self._raw(B * m, power, generator).view(B, m), items)
        if static:
            bad = self.is_positive(uu, items) & ~self.saturated[uu]
            return torch.where(bad, self._unseen(uu, items), items)
        # ... then exact rejection for whatever still collides (dense users)
        for _ in range(max_rounds):
            bad = self.is_positive(uu, items) & ~self.saturated[uu]
            n_bad = int(bad.sum())
            if n_bad == 0:
                break
            items[bad] = self._raw(n_bad, power, generator)
        return items

    def _draw_checking_redrawn(self, uu: torch.Tensor, items: torch.Tensor, power: float | None, max_rounds: int,
                               generator: torch.Generator | None) -> torch.Tensor:
        """draw()'s rounds on a CPU, where a host read costs nothing: the same random numbers and the
        same items, but after the first full membership check only the redrawn pairs are checked
        again (a pair that passed keeps its item). Five binary searches over every pair were 20% of
        a MixGCF batch (131k pairs per Food batch)."""
        B, m = items.shape
        flat_u, flat_i = uu.reshape(-1), items.reshape(-1)
        bad = (self.is_positive(flat_u, flat_i) & ~self.saturated[flat_u]).nonzero()[:, 0]
        for _ in range(3):  # the same three rounds: each draws B * m numbers, used where a pair collides
            fresh = self._raw(B * m, power, generator)
            if len(bad):
                flat_i[bad] = fresh[bad]
                bad = bad[self.is_positive(flat_u[bad], flat_i[bad])]  # not saturated: already filtered
        for _ in range(max_rounds):
            if len(bad) == 0:
                break
            flat_i[bad] = self._raw(len(bad), power, generator)
            bad = bad[self.is_positive(flat_u[bad], flat_i[bad])]
        return flat_i.view(B, m)

    def _unseen(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """For each pair, the (item mod F_u)-th item user u has not trained on (F_u of them)."""
        shifted, start, free = self._rank_index()
        r = items % free[users].clamp(min=1)
        return r + torch.searchsorted(shifted, users * self.n_items + r, right=True) - start[users]

    def _rank_index(self):
        # the r-th item user u has not trained on is r + #{k : p_k - k <= r} over its sorted
        # positives p_0 < p_1 < ...; u * I + p_k - k is nondecreasing over all keys, so one
        # searchsorted finds that count for every pair at once. Built on first use (a graphed
        # step's warm-up), from the keys already on the device.
        if self._ranks is None:
            keys = self.keys
            start = torch.searchsorted(keys, torch.arange(self.n_users + 1, device=keys.device) * self.n_items)
            counts = start[1:] - start[:-1]
            local = torch.arange(len(keys), device=keys.device) - torch.repeat_interleave(start[:-1], counts)
            self._ranks = (keys - local, start[:-1], self.n_items - counts)
        return self._ranks

    def _raw(self, n: int, power: float | None, generator: torch.Generator | None = None) -> torch.Tensor:
        if power is not None:
            return torch.multinomial(self.popularity_probs(power), n, replacement=True, generator=generator)
        return torch.randint(0, self.n_items, (n,), device=self.device, generator=generator)


@dataclass
class BatchContext:
    """What a sampler may look at for one batch of training triples (u, i, j)."""

    users: torch.Tensor  # (B,)
    pos: torch.Tensor  # (B,)
    rand_neg: torch.Tensor  # (B,) uniform negatives
    user_e: torch.Tensor  # (B, d) final user embeddings (with grad)
    pos_e: torch.Tensor  # (B, d)
    items_e: torch.Tensor  # (I, d) all final item embeddings (with grad)
    layers: torch.Tensor | None  # (L+1, U+I, d) per-layer embeddings, when a sampler asks
    n_users: int
    epoch: int  # 0-based training epoch (schedules that move with training are defined in epochs)
    pool: NegativePool
    env: torch.Tensor | None = None  # (B,) environment of each training interaction


@dataclass
class NegativeBatch:
    emb: torch.Tensor  # (B, d) the negative used in BPR
    items: torch.Tensor | None  # (B,) item ids when the negative is a real item
    reg_items: torch.Tensor  # (B,) items whose layer-0 rows get the L2 term
    extra_loss: torch.Tensor | None = None  # added to the recommender loss (CNSDiff: CL term)
    candidates: torch.Tensor | None = None  # (B, S, d) CNSDiff candidates per step (diagnostics)
    chosen: torch.Tensor | None = None  # (B,) index of the chosen candidate
    synthesized: torch.Tensor | None = None  # (B, d) the synthesized part before mixing
    parts: dict[str, torch.Tensor] = field(default_factory=dict)  # 0-d tensors: no host sync per batch


class Sampler:
    """Base class: `sample` returns a NegativeBatch; `update` runs after the recommender's step.

    A subclass with a `name` is a registered sampler (see `registry`); the class attributes below
    are everything the CLI, the app, the experiment table and the workshop bundle know about it.
    """

    name: ClassVar[str] = ""  # registry key; stored in every run's config
    label: ClassVar[str] = ""  # for forms and tables, e.g. "DNS (hardest of M)"
    order: ClassVar[int] = 100  # position in lists, legends and tables
    role: ClassVar[str] = "baseline"  # 'method' (what the explorer studies; the default, the demo),
    #   'uniform' (the plain baseline every comparison is made against), 'hard' (the classic
    #   hard-negative baseline, shown by default beside them) or 'baseline'
    color: ClassVar[str] = "#999999"  # chart colour (Okabe & Ito palette for the shipped ones)
    marker: ClassVar[str] = "circle"  # Plotly marker symbol of its negatives on maps
    needs_layers: ClassVar[bool] = False  # gets the per-layer embeddings in BatchContext.layers
    synthesizes: ClassVar[bool] = False  # True when negatives are vectors, resolved to items for diagnostics
    has_denoiser: ClassVar[bool] = False  # stores a trained denoiser (the Denoising page, the lab)
    # measured on every run's probe beside the trained sampler (False when it needs trained state)
    probe_alongside: ClassVar[bool] = True
    # its own settings: {key: settings.setting(...)}, TrainConfig fields named `<name>_<key>`
    settings: ClassVar[dict[str, Any]] = {}

    def __init__(self, cfg: Config, device: torch.device) -> None:
        self.cfg, self.device = cfg, device
        self.opts = SimpleNamespace(**{key: getattr(cfg, self.field(key)) for key in self.settings})

    @classmethod
    def field(cls, key: str) -> str:
        """The TrainConfig field of one of this sampler's own settings."""
        return f"{cls.name}_{key}"

    @classmethod
    def short_label(cls) -> str:
        return cls.label.split(" (")[0] or cls.name

    @classmethod
    def epoch_flops(cls, cfg: Config, batch: int, n_batches: int, device_type: str) -> dict[str, float]:
        """Floating-point operations of one epoch beyond the backbone's propagation and BPR (for
        `bench`), by part; fwd + bwd count about 3x fwd."""
        return {}

    def sample(self, ctx: BatchContext) -> NegativeBatch:
        raise NotImplementedError

    def update(self, ctx: BatchContext) -> dict[str, float]:
        return {}

    def set_epoch(self, epoch: int) -> None:
        """Called by the trainer before each epoch's batches (outside any graphed step)."""

    def after_backward(self) -> None:
        """Called after the recommender's backward pass (joint denoiser training steps here)."""

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass

    @classmethod
    def search_space(cls, trial) -> dict:
        """TrainConfig overrides for one tuning trial (`trial`: an Optuna trial, or anything with its
        suggest_* methods). Shared by every sampler: the learning rate and the L2 weight, both on a
        log scale; a sampler adds its own knobs on top (cnsdiff_core.tune runs the study)."""
        return {"lr": trial.suggest_float("lr", 1e-4, 1e-2, log=True),
                "l2": trial.suggest_float("l2", 1e-6, 1e-2, log=True)}


def item_negative(ctx: BatchContext, items: torch.Tensor) -> NegativeBatch:
    return NegativeBatch(emb=ctx.items_e[items], items=items, reg_items=items)


def score_candidates(user_e: torch.Tensor, cand_e: torch.Tensor) -> torch.Tensor:
    """(B, d) x (B, M, d) -> (B, M) inner products."""
    return torch.einsum("bd,bmd->bm", user_e, cand_e)
