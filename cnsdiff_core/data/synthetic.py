"""A confounded synthetic world with ground truth: the teaching dataset.

Generative story (all vectorized numpy; no dense user x item matrix is ever built):

- Users and items have latent factors (dim ``dim``, N(0, 1/dim)). A user's preferences drift over
  the log's time span: u(tau) = (u_start + drift * tau * d_u) / sqrt(1 + (drift * tau)^2),
  tau in [0, 1]. User u truly likes item i at time tau iff u(tau) . v_i > threshold, the threshold
  set so that ``relevance_rate`` of (user, item) pairs are relevant at the end (tau = 1).
  Relevance is independent of popularity, so any popularity effect in the log is spurious.
- Items have a Zipf popularity propensity (exponent ``popularity_skew``) that turns over
  gradually (``popularity_drift``: geometric mix towards a second, independent ranking).
- Exposure: each exposure picks an item from (1 - confounding) * uniform + confounding *
  popularity. ``confounding`` = 0 gives uniform exposure, 1 fully popularity-driven exposure.
- An exposed item enters the biased log when it is relevant at that time, or, if not, with
  probability ``popularity_click_rate * sqrt(w_i / w_max)`` (popularity-driven clicks on items
  the user does not like).
- A random-exposure sample: ``random_exposures_per_user`` items per user exposed uniformly at
  the end of the log; the relevant ones are observed (the exposure-shift OOD test).

`GroundTruth` holds the end-of-log preferences (tau = 1), the ones the random-exposure test and
the temporal OOD test are closest to; `World.relevant_at` gives the truth at any time.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields

import numpy as np
import pandas as pd

from .dataset import SHIFTS, DataError, Dataset, GroundTruth

T0 = 1_704_067_200  # 2024-01-01 00:00:00 UTC: timestamps are Unix seconds from here
FORMAT = "cnsdiff-world"
VERSION = 1
_CHUNK = 1_000_000  # candidate exposures per vectorized chunk (bounds memory)


@dataclass(frozen=True)
class WorldConfig:
    """Knobs of the synthetic world (validated on construction; errors raise DataError)."""

    n_users: int = 600
    n_items: int = 800
    dim: int = 16
    popularity_skew: float = 1.0  # Zipf exponent of item exposure propensity
    confounding: float = 0.7  # in [0, 1]: how much exposure depends on popularity
    popularity_click_rate: float = 0.05  # click chance on an exposed, disliked, top-popular item
    relevance_rate: float = 0.15  # share of (user, item) pairs truly relevant
    drift: float = 0.3  # how far user preferences move over the log's span
    popularity_drift: float = 0.3  # in [0, 1]: turnover of item popularity over the span
    interactions_per_user: float = 45.0  # target mean size of a user's biased log
    activity_spread: float = 0.6  # lognormal sigma of users' activity
    random_exposures_per_user: int = 30  # uniform exposures per user for the exposure OOD test
    n_periods: int = 8  # popularity changes between (not within) periods
    days: int = 365  # time span of the log
    seed: int = 0

    def __post_init__(self):
        def bad(what, value, rule):
            raise DataError(f"WorldConfig.{what} must be {rule}, got {value!r}.")

        for name in ("n_users", "n_items", "dim", "random_exposures_per_user", "n_periods", "days",
                     "seed"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
                bad(name, v, "an integer")
        for name in ("popularity_skew", "confounding", "popularity_click_rate", "relevance_rate",
                     "drift", "popularity_drift", "interactions_per_user", "activity_spread"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float, np.floating, np.integer)) \
                    or not np.isfinite(v):
                bad(name, v, "a finite number")
        if not 2 <= self.n_users <= 5_000_000:
            bad("n_users", self.n_users, "between 2 and 5,000,000")
        if not 2 <= self.n_items <= 5_000_000:
            bad("n_items", self.n_items, "between 2 and 5,000,000")
        if not 2 <= self.dim <= 256:
            bad("dim", self.dim, "between 2 and 256")
        if not 0 <= self.popularity_skew <= 3:
            bad("popularity_skew", self.popularity_skew, "between 0 and 3")
        if not 0 <= self.confounding <= 1:
            bad("confounding", self.confounding, "in [0, 1]")
        if not 0 <= self.popularity_click_rate <= 1:
            bad("popularity_click_rate", self.popularity_click_rate, "in [0, 1]")
        if not 0.001 <= self.relevance_rate <= 0.5:
            bad("relevance_rate", self.relevance_rate, "between 0.001 and 0.5")
        if not 0 <= self.drift <= 5:
            bad("drift", self.drift, "between 0 and 5")
        if not 0 <= self.popularity_drift <= 1:
            bad("popularity_drift", self.popularity_drift, "in [0, 1]")
        cap = max(0.8 * self.n_items * self.relevance_rate, 1)
        if not 1 <= self.interactions_per_user <= cap:
            bad("interactions_per_user", self.interactions_per_user,
                f"between 1 and 80% of the relevant items per user ({cap:g} here)")
        if self.n_users * self.interactions_per_user > 20_000_000:
            bad("interactions_per_user", self.interactions_per_user,
                "small enough that the log stays under 20,000,000 interactions")
        if not 0 <= self.activity_spread <= 2:
            bad("activity_spread", self.activity_spread, "between 0 and 2")
        if not 0 <= self.random_exposures_per_user <= self.n_items:
            bad("random_exposures_per_user", self.random_exposures_per_user, "between 0 and n_items")
        if not 1 <= self.n_periods <= 365:
            bad("n_periods", self.n_periods, "between 1 and 365")
        if not 1 <= self.days <= 36_500:
            bad("days", self.days, "between 1 and 36,500")
        if not 0 <= self.seed < 2**63:
            bad("seed", self.seed, "a non-negative integer")

    @classmethod
    def from_dict(cls, params: dict) -> "WorldConfig":
        """Build from loosely typed values (strings from a URL or JSON), checking the keys."""
        known = {f.name: f for f in fields(cls)}
        unknown = sorted(set(params) - set(known))
        if unknown:
            raise DataError(f"Unknown world parameter {unknown[0]!r}; use {', '.join(known)}.")
        kw = {}
        for k, v in params.items():
            default = getattr(cls, k)
            try:
                if isinstance(default, int):
                    f = float(v)
                    if f != int(f):
                        raise ValueError
                    kw[k] = int(f)
                else:
                    kw[k] = float(v)
            except (TypeError, ValueError, OverflowError):
                kind = "an integer" if isinstance(default, int) else "a number"
                raise DataError(f"World parameter {k}={v!r} must be {kind}.") from None
        return cls(**kw)


@dataclass
class World:
    """A generated world: biased log, random-exposure sample and ground truth."""

    config: WorldConfig
    log_pairs: np.ndarray  # (n, 2) int64 (user, item), unique pairs
    log_time: np.ndarray  # (n,) int64 Unix seconds
    log_relevant: np.ndarray  # (n,) bool: truly liked when clicked (False = popularity click)
    random_exposed: np.ndarray  # (m, 2) int64 uniformly exposed (user, item) at the end
    random_relevant: np.ndarray  # (m,) bool: relevant (observed) among them
    truth: GroundTruth  # end-of-log preferences
    user_factors_start: np.ndarray  # (U, k) float32 at tau = 0
    user_drift: np.ndarray  # (U, k) float32 drift directions
    item_propensity: np.ndarray  # (I,) float64 base popularity propensity (sums to 1)
    item_exposures: np.ndarray  # (I,) int64 exposures in the biased log process
    item_titles: np.ndarray  # (I,) str
    notes: list[str] = field(default_factory=list)

    @property
    def n_users(self) -> int:
        return self.config.n_users

    @property
    def n_items(self) -> int:
        return self.config.n_items

    @property
    def item_popularity(self) -> np.ndarray:
        """(I,) interactions per item in the biased log."""
        return np.bincount(self.log_pairs[:, 1], minlength=self.n_items)

    @property
    def random_positives(self) -> np.ndarray:
        return self.random_exposed[self.random_relevant]

    def tau(self, timestamps: np.ndarray) -> np.ndarray:
        """Time fraction in [0, 1] of Unix timestamps within the log's span."""
        return np.clip((np.asarray(timestamps) - T0) / (self.config.days * 86400.0), 0.0, 1.0)

    def relevant_at(self, users, items, tau) -> np.ndarray:
        """Truth at time fraction ``tau`` (broadcast with users/items)."""
        return _relevant(self.user_factors_start, self.user_drift, self.truth.item_factors,
                         self.truth.threshold, self.config.drift, np.asarray(users),
                         np.asarray(items), np.broadcast_to(np.asarray(tau, float), np.shape(users)))

    def log_frame(self) -> pd.DataFrame:
        return pd.DataFrame({"user": self.log_pairs[:, 0], "item": self.log_pairs[:, 1],
                             "timestamp": self.log_time})

    def summary(self) -> dict:
        pop = self.item_popularity
        return {"users": self.n_users, "items": self.n_items, "log": int(len(self.log_pairs)),
                "log_truly_relevant": float(self.log_relevant.mean()) if len(self.log_relevant) else 0.0,
                "random_exposed": int(len(self.random_exposed)),
                "random_positives": int(self.random_relevant.sum()),
                "items_never_clicked": int((pop == 0).sum()),
                "exposure_popularity_corr": exposure_popularity_corr(self)}


def exposure_popularity_corr(world: World) -> float:
    """Spearman correlation between item exposure counts and base popularity propensity."""
    a = pd.Series(world.item_exposures).rank().to_numpy()
    b = pd.Series(world.item_propensity).rank().to_numpy()
    if a.std() == 0 or b.std() == 0:
        return 0.0
    return float(np.corrcoef(a, b)[0, 1])


def _relevant(U0, D, V, thr, drift, users, items, tau) -> np.ndarray:
    out = np.empty(len(users), dtype=bool)
    for s in range(0, len(users), 262_144):
        u, i, t = users[s:s + 262_144], items[s:s + 262_144], tau[s:s + 262_144]
        a = drift * t.astype(np.float32)
        uf = (U0[u] + a[:, None] * D[u]) / np.sqrt(1.0 + a * a)[:, None]
        out[s:s + len(u)] = np.einsum("ij,ij->i", uf, V[i]) > thr
    return out


_ADJ = np.array("Amber Bold Brisk Calm Crisp Dusty Early Faded Gentle Golden Hidden Hollow Iron "
                "Jade Late Lunar Misty Noble Pale Quiet Rapid Rustic Silver Slow Smoky Solar Spicy "
                "Stone Sunny Velvet Wild Winter".split())
_NOUN = np.array("Anchor Atlas Bloom Canyon Cedar Comet Delta Ember Falcon Fjord Garden Harbor "
                 "Island Lantern Meadow Nebula Orchid Pebble Prism Quill Raven River Saffron "
                 "Signal Summit Tide Tundra Valley Willow Zephyr".split())


def _titles(n: int, rng) -> np.ndarray:
    a = _ADJ[rng.integers(len(_ADJ), size=n)]
    b = _NOUN[rng.integers(len(_NOUN), size=n)]
    return np.char.add(np.char.add(np.char.add(a, " "), b), np.char.add(" #", np.arange(n).astype(str)))


def generate_world(cfg: WorldConfig | None = None) -> World:
    """Generate a world from ``cfg`` (deterministic for ``cfg.seed``)."""
    cfg = cfg or WorldConfig()
    rs = np.random.SeedSequence(cfg.seed).spawn(6)
    r_fac, r_pop, r_act, r_log, r_rand, r_title = (np.random.default_rng(s) for s in rs)
    U, I, k = cfg.n_users, cfg.n_items, cfg.dim
    scale = np.float32(1.0 / np.sqrt(k))
    V = r_fac.standard_normal((I, k), dtype=np.float32) * scale
    U0 = r_fac.standard_normal((U, k), dtype=np.float32) * scale
    D = r_fac.standard_normal((U, k), dtype=np.float32) * scale
    U1 = ((U0 + cfg.drift * D) / np.float32(np.sqrt(1 + cfg.drift**2))).astype(np.float32)
    # threshold: the (1 - relevance_rate) quantile of end-of-log scores over random pairs
    m = min(400_000, U * I)
    su, si = r_fac.integers(U, size=m), r_fac.integers(I, size=m)
    thr = float(np.quantile(np.einsum("ij,ij->i", U1[su], V[si]), 1 - cfg.relevance_rate))

    # popularity propensity per period (Zipf on a random ranking, drifting to a second ranking)
    logw_a = -cfg.popularity_skew * np.log1p(r_pop.permutation(I).astype(np.float64))
    logw_b = -cfg.popularity_skew * np.log1p(r_pop.permutation(I).astype(np.float64))
    P = cfg.n_periods
    lam = cfg.popularity_drift * (np.arange(P) / max(P - 1, 1))
    logw = (1 - lam)[:, None] * logw_a[None, :] + lam[:, None] * logw_b[None, :]
    w = np.exp(logw - logw.max(axis=1, keepdims=True))
    w /= w.sum(axis=1, keepdims=True)  # (P, I)
    cdf = np.cumsum(w, axis=1)
    cdf[:, -1] = 1.0
    cdf_flat = (cdf + np.arange(P)[:, None]).ravel()  # row p shifted into [p, p + 1]
    click_pop = cfg.popularity_click_rate * np.sqrt(w / w.max(axis=1, keepdims=True))  # (P, I)
    base = np.exp(logw_a - logw_a.max())
    base /= base.sum()

    # users' target log sizes
    act = r_act.lognormal(-cfg.activity_spread**2 / 2, cfg.activity_spread, size=U)
    max_k = max(int(0.8 * I * cfg.relevance_rate), 1)
    target = np.clip(np.round(cfg.interactions_per_user * act), 1, max_k).astype(np.int64)

    p_hat = cfg.relevance_rate + 0.5 * cfg.popularity_click_rate * cfg.confounding
    exposures = np.zeros(I, dtype=np.int64)
    got = np.zeros(U, dtype=np.int64)
    keys_all = np.zeros(0, dtype=np.int64)
    tau_all = np.zeros(0, dtype=np.float64)
    rel_all = np.zeros(0, dtype=bool)
    for rnd in range(8):
        need = target - got
        users = np.flatnonzero(need > 0)
        if len(users) == 0:
            break
        n_cand = np.ceil(need[users] * (1.5 + rnd) / p_hat).astype(np.int64) + 2
        cum = np.cumsum(n_cand)
        new_k, new_t, new_r = [], [], []
        start = 0
        while start < len(users):
            done = cum[start - 1] if start else 0
            stop = max(int(np.searchsorted(cum, done + _CHUNK, side="right")), start + 1)
            uu = np.repeat(users[start:stop], n_cand[start:stop])
            start = stop
            n = len(uu)
            tau = r_log.random(n)
            per = np.minimum((tau * P).astype(np.int64), P - 1)
            items = r_log.integers(I, size=n)
            from_pop = r_log.random(n) < cfg.confounding
            draws = r_log.random(n)
            sel = np.flatnonzero(from_pop)  # inverse-CDF draw within each candidate's period
            pos = np.searchsorted(cdf_flat, per[sel] + draws[sel], side="right") - per[sel] * I
            items[sel] = np.clip(pos, 0, I - 1)
            exposures += np.bincount(items, minlength=I)
            rel = _relevant(U0, D, V, thr, cfg.drift, uu, items, tau)
            click = rel | (r_log.random(n) < click_pop[per, items])
            new_k.append(uu[click] * I + items[click])
            new_t.append(tau[click])
            new_r.append(rel[click])
        keys_all = np.concatenate([keys_all, *new_k])
        tau_all = np.concatenate([tau_all, *new_t])
        rel_all = np.concatenate([rel_all, *new_r])
        # unique pairs, earliest click kept
        order = np.lexsort((tau_all, keys_all))
        ks = keys_all[order]
        first = np.ones(len(ks), dtype=bool)
        first[1:] = ks[1:] != ks[:-1]
        keep = order[first]
        keys_all, tau_all, rel_all = keys_all[keep], tau_all[keep], rel_all[keep]
        got = np.bincount(keys_all // I, minlength=U)
    # trim each user to the target, keeping a random subset
    prio = r_log.random(len(keys_all))
    u_of = keys_all // I
    order = np.lexsort((prio, u_of))
    starts = np.searchsorted(u_of[order], u_of[order], side="left")
    rank = np.empty(len(order), dtype=np.int64)
    rank[order] = np.arange(len(order)) - starts
    keep = rank < target[u_of]
    keys_all, tau_all, rel_all = keys_all[keep], tau_all[keep], rel_all[keep]
    order = np.lexsort((keys_all, tau_all))  # chronological log
    keys_all, tau_all, rel_all = keys_all[order], tau_all[order], rel_all[order]
    log_pairs = np.stack([keys_all // I, keys_all % I], axis=1).astype(np.int64)
    log_time = (T0 + np.floor(tau_all * cfg.days * 86400)).astype(np.int64)
    notes = []
    short = int((np.bincount(log_pairs[:, 0], minlength=U) < target).sum())
    if short:
        notes.append(f"{short:,} of {U:,} users got fewer interactions than targeted (too few of "
                     f"their relevant items get exposed); lower the target or confounding for more.")

    # random-exposure sample at the end of the log
    R = cfg.random_exposures_per_user
    truth = GroundTruth(user_factors=U1, item_factors=V, threshold=thr)
    if R > 0:
        if U * I <= 4_000_000 or R > I // 4:  # dense per user chunk: exactly R distinct items
            rows = max(1, 4_000_000 // I)
            parts = [np.sort(np.argsort(r_rand.random((min(rows, U - s), I), dtype=np.float32),
                                        axis=1)[:, :R], axis=1) for s in range(0, U, rows)]
            re_u, re_i = np.repeat(np.arange(U), R), np.concatenate(parts).ravel()
        else:  # sparse: oversample with replacement, keep up to R distinct per user
            cand = r_rand.integers(I, size=(U, R + max(8, R // 2)))
            keys = np.unique(np.arange(U, dtype=np.int64)[:, None] * I + cand)
            uo = keys // I
            keys = keys[np.arange(len(keys)) - np.searchsorted(uo, uo, side="left") < R]
            re_u, re_i = keys // I, keys % I
        random_exposed = np.stack([re_u, re_i], axis=1).astype(np.int64)
        random_relevant = np.zeros(len(random_exposed), dtype=bool)
        for s in range(0, len(random_exposed), 262_144):
            chunk = random_exposed[s:s + 262_144]
            random_relevant[s:s + len(chunk)] = truth.is_relevant(chunk[:, 0], chunk[:, 1])
    else:
        random_exposed = np.zeros((0, 2), dtype=np.int64)
        random_relevant = np.zeros(0, dtype=bool)

    return World(config=cfg, log_pairs=log_pairs, log_time=log_time, log_relevant=rel_all.astype(bool),
                 random_exposed=random_exposed, random_relevant=random_relevant,
                 truth=truth,
                 user_factors_start=U0, user_drift=D, item_propensity=base, item_exposures=exposures,
                 item_titles=_titles(I, r_title), notes=notes)


# ----------------------------------------------------------------------------- to Dataset


def world_dataset(world: World, shift: str = "exposure", seed: int = 0, **split_kw) -> Dataset:
    """Split a world's biased log for ``shift`` (popularity, exposure, temporal or random).

    exposure: OOD test = the random-exposure positives; temporal: the latest 15% of the log;
    popularity: items near-uniform in popularity; random: the no-shift control. The ground truth
    is attached as ``dataset.truth``.
    """
    from .splits import InteractionLog, split

    if shift not in SHIFTS:
        raise DataError(f"Shift {shift!r} is not available for a synthetic world; use one of "
                        f"{', '.join(SHIFTS)}.")
    cfg = world.config
    log = InteractionLog(pairs=world.log_pairs, n_users=cfg.n_users, n_items=cfg.n_items,
                         times=world.log_time, user_ids=np.arange(cfg.n_users).astype(str),
                         item_ids=np.arange(cfg.n_items).astype(str), item_titles=world.item_titles,
                         name="synthetic", source="synthetic world " + json.dumps(asdict(cfg)),
                         notes=list(world.notes), truth=world.truth)
    return split(log, shift, seed=seed, random_test=world.random_positives, **split_kw)
