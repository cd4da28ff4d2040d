"""The noise-schedule lab: schedule curves, a schedule edited into a run's config, the hardness and
FHN of a denoiser's candidates per step, and a denoiser refitted on a run's frozen embeddings."""
from __future__ import annotations

import time
from typing import Callable

import numpy as np
import pandas as pd
import torch

from ..config import LOSS_WEIGHTINGS, ConfigError, TrainConfig
from ..data.dataset import Dataset
from ..diagnostics import make_probe, measure_negatives
from ..diffusion import Denoiser, DenoiserTrainer, NoiseSchedule, synthesize_candidates
from ..samplers import NegativePool
from ..samplers.cnsdiff import pick_hardest
from ..tasks import Task, TaskPool
from .common import ExploreError


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


# Refits share the process's CPUs (a workshop: twenty browsers, one laptop): at most two at once,
# the others wait as queued.
REFITS: TaskPool["RefitTask"] = TaskPool(2, name="refit")


class RefitTask(Task):
    """A schedule-lab refit in the background (`start_refit`): progress in steps, then the
    report, the loss curve and the fixed evaluation-batch loss before and after."""

    def __init__(self, cfg: TrainConfig, n_steps: int, label: str, run_id: str) -> None:
        super().__init__(label, "refit", "lab", total=float(n_steps))
        self.cfg, self.n_steps, self.run_id = cfg, int(n_steps), run_id
        self.loss: float | None = None
        self.report: pd.DataFrame | None = None
        self.loss_curve: np.ndarray | None = None
        self.eval_before: float | None = None
        self.eval_after: float | None = None


def start_refit(cfg: TrainConfig, n_steps: int, label: str, run_id: str, data: Dataset, user_emb: np.ndarray,
                item_emb: np.ndarray) -> RefitTask:
    """Refit a denoiser with `cfg` on a run's frozen embeddings in the background (`refit_denoiser`)."""

    def work(task: RefitTask) -> str:
        def progress(step: int, n: int, loss: float) -> None:
            task.loss = loss
            task.progress(step, n, f"step {step}/{n} · loss {loss:.4f}")

        refit, report = refit_denoiser(task.cfg, data, user_emb, item_emb, n_steps=task.n_steps,
                                       callback=progress, should_stop=task.stop_event.is_set)
        task.report, task.loss_curve = report, refit.loss_curve_
        task.eval_before, task.eval_after = refit.eval_loss_before_, refit.eval_loss_after_
        return f"{refit.n_steps_done_} steps in {refit.seconds_:.1f} s"

    return REFITS.start(RefitTask(cfg, n_steps, label, run_id), work)
