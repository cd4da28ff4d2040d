"""The trainer: LightGCN + one negative sampler, validation, selection, diagnostics, events.

Public API: `Trainer(cfg, data, callbacks, should_stop, profile=False)`, then `fit()` for a whole
run, or `setup()`, `train_epoch(epoch)` and `evaluate(*splits)` for a measurement (`bench`).
It prints nothing and writes nothing: it announces typed events (`events`) to callbacks (the run
store, the CLI's progress line, background tasks, a study's pruner) and asks `should_stop()`
between batches (a truthy answer stops after that batch; a string answer is kept as the run's
message, e.g. why a study pruned it).
"""
from __future__ import annotations

import math
import random
import time
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from typing import Callable, Iterable

import numpy as np
import torch

from . import fastops
from .config import TrainConfig
from .data.dataset import Dataset
from .diagnostics import make_probe, probe_diagnostics
from .graphstep import StaticSteps
from .events import (BatchDone, BestSelected, Callback, Checkpoint, EpochDone, Event, Finished, Snapshot, Started,
                     TrainResult)
from .metrics import EvalResult, embedding_scorer, evaluate
from .model import LightGCN, bpr_loss, normalized_adjacency
from .samplers import PROBED, BatchContext, NegativePool, make_sampler

SPLITS = ("valid", "iid", "ood")  # evaluate(): IID validation, IID test, OOD test


class TrainingError(RuntimeError):
    """Training cannot go on (e.g. a loss turned NaN); the message names the cause."""


def resolve_device(pref: str = "auto") -> torch.device:
    if pref == "cuda" and not torch.cuda.is_available():
        raise TrainingError("device 'cuda' was asked for but no CUDA GPU is visible; use device auto or cpu.")
    if pref == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(pref)


def device_label(device: torch.device, cpu_threads: int | None = None) -> str:
    """'cuda (<GPU name>)' or 'cpu (N threads)'; cpu_threads: what a run will use (0 = torch's
    default), else what torch uses now."""
    if device.type == "cuda":
        return f"cuda ({torch.cuda.get_device_name(device)})"
    n = cpu_threads or torch.get_num_threads()
    return f"cpu ({n} thread{'s' if n != 1 else ''})"


def graphed(cfg: TrainConfig, device: torch.device) -> bool:
    """True when the training step is captured as a CUDA graph (cuda_graph on a GPU)."""
    return bool(cfg.cuda_graph) and device.type == "cuda"


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


def _prefixed(prefix: str, res: EvalResult) -> dict[str, float]:
    return {f"{prefix}_{k}": v for k, v in res.metrics.items()}


@dataclass
class _Fit:
    """Where a run stands during fit(): the selected epoch so far and what was recorded."""

    t0: float
    best: dict | None  # history row of the selected epoch
    best_epoch: int  # 0-based; -1 before the first evaluation
    history: list[dict] = field(default_factory=list)
    diagnostics: list[dict] = field(default_factory=list)
    since_best: int = 0
    status: str = "finished"
    message: str = "trained all epochs"
    epochs_run: int = 0


class Trainer:
    """LightGCN trained with one negative sampler (see the module doc for the public API).

    profile=True: seconds per training phase accumulate in `phase_seconds` (bench)."""

    def __init__(self, cfg: TrainConfig, data: Dataset, callbacks: Iterable[Callback] = (),
                 should_stop: Callable[[], bool | str] | None = None, profile: bool = False) -> None:
        self.cfg, self.data = cfg, data
        self.callbacks = list(callbacks)
        self.should_stop = should_stop or (lambda: False)
        self.device = resolve_device(cfg.device)
        self.profile = profile
        self.phase_seconds: dict[str, float] = {}

    @contextmanager
    def _phase(self, name: str):
        if not self.profile:
            yield
            return
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        t = time.perf_counter()
        yield
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        self.phase_seconds[name] = self.phase_seconds.get(name, 0.0) + time.perf_counter() - t

    def emit(self, event: Event) -> None:
        for cb in self.callbacks:
            cb(event)

    # ------------------------------------------------------------------------------------------
    def setup(self) -> "Trainer":
        """Seed, build the model, optimizer, sampler, negative pool and probe. Returns self."""
        cfg, data, dev = self.cfg, self.data, self.device
        seed_everything(cfg.seed)
        if dev.type == "cpu" and cfg.cpu_threads > 0:
            torch.set_num_threads(cfg.cpu_threads)  # process-wide, as torch has it
        if dev.type == "cpu":
            fastops.keep_freed_memory()  # no page faults for each batch's tensors (process-wide)
        if len(data.train) == 0:
            raise TrainingError(f"dataset {data.name!r} has no training interactions; pick another dataset or split.")
        self.model = LightGCN(data.n_users, data.n_items, cfg.dim, cfg.layers).to(dev)
        self.model.set_graph(normalized_adjacency(data.train, data.n_users, data.n_items, dev))
        # a graphed step needs Adam's capturable form (its step counts on the device)
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=cfg.lr, capturable=graphed(cfg, dev))
        self.popularity = data.item_popularity()
        self.test_mask = data.test_mask()
        self.pool = NegativePool(data.train, data.n_users, data.n_items, dev, self.popularity)
        self.sampler = make_sampler(cfg.sampler, cfg, dev)
        env = data.train_environments(cfg.n_envs, cfg.env_kind)
        self.train_t = torch.as_tensor(data.train, device=dev)
        self.env_t = torch.as_tensor(env, device=dev)
        diag = {name: make_sampler(name, cfg, dev) for name in PROBED}
        diag[cfg.sampler] = self.sampler
        self.diag_samplers = diag
        self.probe = make_probe(data, self.pool, cfg.probe_triples, dev, seed=cfg.seed + 777, env=env)
        self.static_steps = StaticSteps(self) if cfg.cuda_graph else None
        self.start_epoch = 0
        self.best_state: dict | None = None
        self._t0 = time.perf_counter()  # what the ETA of batch events counts from
        return self

    def state(self, epoch: int) -> dict:
        """A resumable checkpoint (tensors only, so loading can use weights_only=True)."""
        return {"epoch": epoch, "model": {k: v.detach().cpu().clone() for k, v in self.model.state_dict().items()},
                "sampler": {k: {kk: vv.detach().cpu().clone() for kk, vv in v.items()}
                            for k, v in self.sampler.state_dict().items()},
                "optimizer": self.optimizer.state_dict()}

    def load_state(self, state: dict) -> None:
        self.model.load_state_dict(state["model"])
        self.sampler.load_state_dict(state.get("sampler", {}))
        if "optimizer" in state:
            self.optimizer.load_state_dict(state["optimizer"])
        self.start_epoch = int(state.get("epoch", -1)) + 1

    # ------------------------------------------------------------------------------------------
    @torch.no_grad()
    def evaluate(self, *splits: str) -> dict[str, EvalResult]:
        """Full ranking of the current weights on each split ('valid', 'iid', 'ood'; all three by
        default), from one propagation in eval mode. Training items are masked; for the IID and
        OOD tests the validation items are masked too (METHOD.md, evaluation protocol)."""
        d = self.data
        arrays = {"valid": d.valid, "iid": d.test_iid, "ood": d.test_ood}
        self.model.eval()
        ue, ie = self.model.propagate()
        out = {}
        for name in splits or SPLITS:
            seen = d.train if name == "valid" else self.test_mask
            out[name] = evaluate(embedding_scorer(ue, ie), seen, arrays[name], d.n_users, d.n_items, self.device,
                                 popularity=self.popularity, batch_users=self.cfg.eval_batch_users)
        self._last_embeddings = ue, ie
        return out

    def _better(self, rec: dict, best: dict | None) -> bool:
        if best is None:
            return True
        if self.cfg.selection == "ood-test":
            # Reference rule: no OOD-test metric may drop (test-set selection, labelled as such).
            keys = ("ood_recall@10", "ood_recall@20", "ood_ndcg@10", "ood_ndcg@20")
            return all(rec[k] >= best[k] for k in keys)
        return rec["valid_recall@20"] > best["valid_recall@20"]

    def train_epoch(self, epoch: int) -> dict:
        """One pass over the training interactions (0-based `epoch`). Returns the mean of each loss
        part over the batches; with 'interrupted_batch' when should_stop() ended it early. With
        cuda_graph each batch is one replay of the captured step (graphstep.StaticSteps)."""
        cfg, dev = self.cfg, self.device
        n = len(self.train_t)
        perm = torch.randperm(n, device=dev)
        n_batches = math.ceil(n / cfg.batch_size)
        totals: dict[str, torch.Tensor] = {}
        self.model.train()
        self.sampler.set_epoch(epoch)
        static = self.static_steps
        if static is not None:
            static.start_epoch()
        for b in range(n_batches):
            idx = perm[b * cfg.batch_size:(b + 1) * cfg.batch_size]
            if static is not None:
                with self._phase("graphed step") if static.cuda else nullcontext():
                    parts = static.run(idx, epoch)  # summed into static.totals() inside the step
            else:
                parts = self._batch(idx, epoch)
                for k, v in parts.items():
                    totals[k] = totals[k] + v if k in totals else v
            if b % 10 == 0 or b == n_batches - 1:
                # one host sync every 10 batches: progress, and the check for a diverging loss
                self._check_finite(parts, epoch, b)
                done = (epoch - self.start_epoch) + (b + 1) / n_batches
                left = (cfg.epochs - epoch) - (b + 1) / n_batches
                elapsed = time.perf_counter() - self._t0
                self.emit(BatchDone(epoch, b + 1, n_batches, float(parts["loss"]), elapsed / max(done, 1e-9) * left))
            if self.should_stop():
                self._check_finite(parts, epoch, b)
                sums = static.totals() if static is not None else totals
                return {k: float(v) / (b + 1) for k, v in sums.items()} | {"interrupted_batch": b + 1}
        sums = static.totals() if static is not None else totals
        return {k: float(v) / n_batches for k, v in sums.items()}

    def _batch(self, idx: torch.Tensor, epoch: int) -> dict[str, torch.Tensor]:
        """One training step on the training pairs `idx`: negatives, propagation, the sampler, the
        denoiser's own step, the losses, backward and the optimizer. No host synchronization (the
        graphed step captures this very function); returns the loss parts as 0-d tensors."""
        cfg = self.cfg
        users, pos = self.train_t[idx, 0], self.train_t[idx, 1]
        with self._phase("draw negatives"):
            rand_neg = self.pool.draw(users, 1)[:, 0]
        with self._phase("propagate"):
            out = self.model.propagate(keep_layers=self.sampler.needs_layers)
        user_all, items_all = out[0], out[1]
        layers = out[2] if self.sampler.needs_layers else None
        ctx = BatchContext(users, pos, rand_neg, user_all[users], items_all[pos], items_all, layers,
                           self.data.n_users, epoch, self.pool, self.env_t[idx])
        with self._phase("sample"):
            nb = self.sampler.sample(ctx)
        with self._phase("loss"):
            s_pos = (ctx.user_e * ctx.pos_e).sum(-1)
            s_neg = (ctx.user_e * nb.emb).sum(-1)
            bpr = bpr_loss(s_pos, s_neg)
            reg = cfg.l2 * self.model.l2_reg(users, pos, nb.reg_items)
            loss = bpr + reg + (nb.extra_loss if nb.extra_loss is not None else 0.0)
        with self._phase("backward + step"):
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
            self.sampler.after_backward()
        parts = {"loss": loss.detach(), "bpr": bpr.detach(), **nb.parts}  # 0-d tensors, no sync
        with self._phase("denoiser update"):
            upd = self.sampler.update(ctx)
        parts.update({f"den_{k}": v for k, v in upd.items()})
        return parts

    def _check_finite(self, parts: dict, epoch: int, b: int) -> None:
        cfg = self.cfg
        loss = float(parts["loss"])
        if not math.isfinite(loss):
            raise TrainingError(
                f"the training loss became {loss} at epoch {epoch + 1}, batch {b + 1} "
                f"(BPR {float(parts['bpr']):.4g}); lower lr={cfg.lr} or check the noise schedule "
                f"({cfg.schedule}, scale {cfg.noise_scale}).")
        bad = [k for k, v in parts.items() if k.startswith("den_") and not math.isfinite(float(v))]
        if bad:
            raise TrainingError(f"the denoiser loss became non-finite at epoch {epoch + 1}, batch {b + 1}; "
                                f"lower denoiser_lr={cfg.denoiser_lr} or causal_weight={cfg.causal_weight}.")

    @torch.no_grad()
    def _diagnose(self, epoch: int, keep_raw: bool = False):
        """Diagnostics of one epoch. They run on a fork of the random number generators, so what
        they measure (probe size, which samplers) never changes the training that follows."""
        self.model.eval()
        out = self.model.propagate(keep_layers=True)
        with torch.random.fork_rng(devices=[self.device] if self.device.type == "cuda" else []):
            rows, raw = probe_diagnostics(self.diag_samplers, self.probe, out[0], out[1], out[2], self.data.n_users,
                                          self.pool, epoch, self.data.truth, keep_raw, main=self.cfg.sampler,
                                          side_triples=self.cfg.probe_side_triples)
        for r in rows:
            r["epoch"] = epoch + 1
        return rows, raw

    # ------------------------------------------------------------------------------------------
    def fit(self, resume_state: dict | None = None, best_record: dict | None = None,
            best_state: dict | None = None) -> TrainResult:
        """Train. A resumed run passes its last checkpoint and its selected epoch so far."""
        cfg = self.cfg
        self.setup()
        if resume_state is not None:
            self.load_state(resume_state)
            self.best_state = best_state
        run = _Fit(time.perf_counter(), best_record, int(best_record["epoch"]) - 1 if best_record else -1)
        self._t0 = run.t0
        self.emit(Started(device_label(self.device), cfg.epochs, len(self.data.train), self.start_epoch))
        snapshots = set(e - 1 for e in cfg.snapshot_epochs) | {0}
        run.epochs_run = self.start_epoch
        for epoch in range(self.start_epoch, cfg.epochs):
            te = time.perf_counter()
            losses = self.train_epoch(epoch)
            rec = {"epoch": epoch + 1, "train_seconds": time.perf_counter() - te, **losses}
            stopped = "interrupted_batch" in losses
            if (epoch + 1) % cfg.eval_every == 0 or epoch == cfg.epochs - 1 or stopped:
                self._evaluate_epoch(run, epoch, rec, keep_raw=epoch in snapshots)
            run.history.append(rec)
            run.epochs_run = epoch + 1
            if self.callbacks:  # a full CPU copy of model + optimizer: only when someone stores it
                self.emit(Checkpoint(epoch + 1, self.state(epoch)))
            if self._should_end(run, epoch, stopped):
                break
        return self._finish(run)

    def _evaluate_epoch(self, run: _Fit, epoch: int, rec: dict, keep_raw: bool) -> None:
        """Metrics and diagnostics of one epoch into its history row; selection; events."""
        tv = time.perf_counter()
        splits = SPLITS if self.cfg.test_eval == "every-epoch" else ("valid",)
        for name, res in self.evaluate(*splits).items():
            rec |= _prefixed(name, res)
        rec["eval_seconds"] = time.perf_counter() - tv
        every = self.cfg.diagnose_every
        rows, raw = [], None
        if keep_raw or (every and (epoch + 1) % every == 0):  # a snapshot epoch (the first) is always measured
            td = time.perf_counter()
            rows, raw = self._diagnose(epoch, keep_raw=keep_raw)
            rec["diag_seconds"] = time.perf_counter() - td
        run.diagnostics.extend(rows)
        if raw:
            self.emit(Snapshot(epoch + 1, raw))
        if self._better(rec, run.best):
            run.best, run.best_epoch, run.since_best = rec, epoch, 0
            self.best_state = self.state(epoch)
            self.emit(BestSelected(epoch + 1, self.best_state))
        else:
            run.since_best += 1
        self.emit(EpochDone(rec, rows))

    def _should_end(self, run: _Fit, epoch: int, stopped: bool) -> bool:
        cfg = self.cfg
        reason = self.should_stop()
        if stopped or reason:
            # should_stop may name why (a string), e.g. a study pruning the trial
            run.status = "stopped"
            run.message = reason if isinstance(reason, str) and reason else f"stopped by request during epoch {epoch + 1}"
        elif cfg.patience and run.since_best >= cfg.patience:
            run.status, run.message = "early-stopped", f"no validation improvement for {cfg.patience} evaluations"
        elif cfg.max_seconds and time.perf_counter() - run.t0 > cfg.max_seconds:
            run.status, run.message = "stopped", f"reached max_seconds={cfg.max_seconds:g}"
        else:
            return False
        return True

    def _finish(self, run: _Fit) -> TrainResult:
        """Back to the selected weights; final tests, per-user metrics and the best snapshot."""
        if self.best_state is not None:
            self.model.load_state_dict(self.best_state["model"])
            self.sampler.load_state_dict(self.best_state.get("sampler", {}))
        per_user, final = {}, {}
        for prefix, res in self.evaluate("iid", "ood").items():
            final |= _prefixed(prefix, res)
            per_user[f"{prefix}_users"] = res.users
            for k, v in res.per_user.items():
                per_user[f"{prefix}_{k}"] = v
        ue, ie = self._last_embeddings
        rows, raw = self._diagnose(max(run.best_epoch, 0), keep_raw=True)
        self.emit(Snapshot("best", raw))
        late = ()
        if self.cfg.diagnose_every != 1 and rows and not any(r["epoch"] == rows[0]["epoch"] for r in run.diagnostics):
            late = tuple(rows)  # diagnose_every skipped the selected epoch: its rows come from here
            run.diagnostics.extend(rows)
        metrics = {k: v for k, v in (run.best or {}).items() if k.startswith(("valid_", "iid_", "ood_"))}
        if run.best is not None:  # test_eval='selected': the test metrics come from the selected weights here
            metrics = final | metrics
        result = TrainResult(run.status, run.message, run.best_epoch + 1, run.epochs_run, time.perf_counter() - run.t0,
                             metrics, run.history, run.diagnostics, per_user, ue.cpu().numpy(), ie.cpu().numpy())
        self.emit(Finished(run.status, run.message, result, late))
        return result
