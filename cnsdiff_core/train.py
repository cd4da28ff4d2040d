"""The trainer: LightGCN + one negative sampler, validation, selection, diagnostics, events.

It prints nothing and writes nothing: it announces events to callbacks (the run store, the CLI's
progress line, the app's background job) and asks `should_stop()` between batches (a truthy answer
stops after that batch; a string answer is kept as the run's message, e.g. why a study pruned it).
"""
from __future__ import annotations

import math
import random
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Callable, Iterable

import numpy as np
import torch

from .config import TrainConfig
from .data.dataset import Dataset
from .diagnostics import make_probe, probe_diagnostics
from .metrics import EvalResult, embedding_scorer, evaluate
from .model import LightGCN, bpr_loss, normalized_adjacency
from .samplers import PROBED, BatchContext, NegativePool, make_sampler

Event = dict
Callback = Callable[[Event], None]


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


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


@dataclass
class TrainResult:
    status: str  # finished | stopped | early-stopped | failed
    message: str
    best_epoch: int
    epochs_run: int
    seconds: float
    metrics: dict[str, float]  # valid_*, iid_*, ood_* at the selected epoch
    history: list[dict] = field(default_factory=list)
    diagnostics: list[dict] = field(default_factory=list)
    per_user: dict[str, np.ndarray] = field(default_factory=dict)
    user_emb: np.ndarray | None = None
    item_emb: np.ndarray | None = None


def _prefixed(prefix: str, res: EvalResult) -> dict[str, float]:
    return {f"{prefix}_{k}": v for k, v in res.metrics.items()}


class Trainer:
    def __init__(self, cfg: TrainConfig, data: Dataset, callbacks: Iterable[Callback] = (),
                 should_stop: Callable[[], bool] | None = None) -> None:
        self.cfg, self.data = cfg, data
        self.callbacks = list(callbacks)
        self.should_stop = should_stop or (lambda: False)
        self.device = resolve_device(cfg.device)
        self.profile = False  # True: accumulate seconds per training phase in phase_seconds (bench)
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
    def setup(self) -> None:
        cfg, data, dev = self.cfg, self.data, self.device
        seed_everything(cfg.seed)
        if dev.type == "cpu" and cfg.cpu_threads > 0:
            torch.set_num_threads(cfg.cpu_threads)  # process-wide, as torch has it
        if len(data.train) == 0:
            raise TrainingError(f"dataset {data.name!r} has no training interactions; pick another dataset or split.")
        self.model = LightGCN(data.n_users, data.n_items, cfg.dim, cfg.layers).to(dev)
        self.model.set_graph(normalized_adjacency(data.train, data.n_users, data.n_items, dev))
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=cfg.lr)
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
        self.start_epoch = 0
        self.best_state: dict | None = None

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
    def _evaluate(self, split: np.ndarray, user_e, item_e, test: bool = False) -> EvalResult:
        """Full ranking of one split. Training items are masked; for the IID and OOD tests the
        validation items are masked too (METHOD.md, evaluation protocol)."""
        d = self.data
        seen = self.test_mask if test else d.train
        return evaluate(embedding_scorer(user_e, item_e), seen, split, d.n_users, d.n_items,
                        self.device, popularity=self.popularity, batch_users=self.cfg.eval_batch_users)

    def _better(self, rec: dict, best: dict | None) -> bool:
        if best is None:
            return True
        if self.cfg.selection == "ood-test":
            # Reference rule: no OOD-test metric may drop (test-set selection, labelled as such).
            keys = ("ood_recall@10", "ood_recall@20", "ood_ndcg@10", "ood_ndcg@20")
            return all(rec[k] >= best[k] for k in keys)
        return rec["valid_recall@20"] > best["valid_recall@20"]

    def _train_epoch(self, epoch: int, t_start: float) -> dict:
        cfg, dev = self.cfg, self.device
        n = len(self.train_t)
        perm = torch.randperm(n, device=dev)
        n_batches = math.ceil(n / cfg.batch_size)
        totals: dict[str, float] = {}
        self.model.train()
        for b in range(n_batches):
            idx = perm[b * cfg.batch_size:(b + 1) * cfg.batch_size]
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
            for k, v in parts.items():
                totals[k] = totals[k] + v if k in totals else v
            if b % 10 == 0 or b == n_batches - 1:
                # one host sync every 10 batches: progress, and the check for a diverging loss
                self._check_finite(parts, epoch, b, bpr)
                done = (epoch - self.start_epoch) + (b + 1) / n_batches
                left = (cfg.epochs - epoch) - (b + 1) / n_batches
                elapsed = time.perf_counter() - t_start
                self.emit({"type": "batch", "epoch": epoch, "batch": b + 1, "n_batches": n_batches,
                           "loss": float(parts["loss"]), "eta_s": elapsed / max(done, 1e-9) * left})
            if self.should_stop():
                self._check_finite(parts, epoch, b, bpr)
                return {k: float(v) / (b + 1) for k, v in totals.items()} | {"interrupted_batch": b + 1}
        return {k: float(v) / n_batches for k, v in totals.items()}

    def _check_finite(self, parts: dict, epoch: int, b: int, bpr: torch.Tensor) -> None:
        cfg = self.cfg
        loss = float(parts["loss"])
        if not math.isfinite(loss):
            raise TrainingError(
                f"the training loss became {loss} at epoch {epoch + 1}, batch {b + 1} "
                f"(BPR {float(bpr.detach()):.4g}); lower lr={cfg.lr} or check the noise schedule "
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
        t0 = time.perf_counter()
        self.emit({"type": "start", "device": device_label(self.device), "epochs": cfg.epochs,
                   "n_train": len(self.data.train), "start_epoch": self.start_epoch})
        history, diag_rows = [], []
        best: dict | None = best_record
        best_epoch = int(best_record["epoch"]) - 1 if best_record else -1
        since_best, status, message = 0, "finished", "trained all epochs"
        snapshots = set(e - 1 for e in cfg.snapshot_epochs) | {0}
        epoch = self.start_epoch - 1
        for epoch in range(self.start_epoch, cfg.epochs):
            te = time.perf_counter()
            losses = self._train_epoch(epoch, t0)
            train_s = time.perf_counter() - te
            rec = {"epoch": epoch + 1, "train_seconds": train_s, **losses}
            stopped = "interrupted_batch" in losses
            if (epoch + 1) % cfg.eval_every == 0 or epoch == cfg.epochs - 1 or stopped:
                tv = time.perf_counter()
                self.model.eval()
                with torch.no_grad():
                    ue, ie = self.model.propagate()
                    rec |= _prefixed("valid", self._evaluate(self.data.valid, ue, ie))
                    if cfg.test_eval == "every-epoch":
                        rec |= _prefixed("iid", self._evaluate(self.data.test_iid, ue, ie, test=True))
                        rec |= _prefixed("ood", self._evaluate(self.data.test_ood, ue, ie, test=True))
                rec["eval_seconds"] = time.perf_counter() - tv
                td = time.perf_counter()
                rows, raw = self._diagnose(epoch, keep_raw=epoch in snapshots)
                rec["diag_seconds"] = time.perf_counter() - td
                diag_rows.extend(rows)
                if raw:
                    self.emit({"type": "snapshot", "epoch": epoch + 1, "raw": raw})
                if self._better(rec, best):
                    best, best_epoch, since_best = rec, epoch, 0
                    self.best_state = self.state(epoch)
                    self.emit({"type": "best", "epoch": epoch + 1, "state": self.best_state})
                else:
                    since_best += 1
                self.emit({"type": "epoch", "record": rec, "diagnostics": rows})
            history.append(rec)
            if self.callbacks:  # a full CPU copy of model + optimizer: only when someone stores it
                self.emit({"type": "checkpoint", "epoch": epoch + 1, "state": self.state(epoch)})
            reason = self.should_stop()
            if stopped or reason:
                # should_stop may name why (a string), e.g. a study pruning the trial
                status = "stopped"
                message = reason if isinstance(reason, str) and reason else f"stopped by request during epoch {epoch + 1}"
                break
            if cfg.patience and since_best >= cfg.patience:
                status, message = "early-stopped", f"no validation improvement for {cfg.patience} evaluations"
                break
            if cfg.max_seconds and time.perf_counter() - t0 > cfg.max_seconds:
                status, message = "stopped", f"reached max_seconds={cfg.max_seconds:g}"
                break
        return self._finish(status, message, best, best_epoch, epoch + 1, history, diag_rows, t0)

    def _finish(self, status, message, best, best_epoch, epochs_run, history, diag_rows, t0) -> TrainResult:
        if self.best_state is not None:
            self.model.load_state_dict(self.best_state["model"])
            self.sampler.load_state_dict(self.best_state.get("sampler", {}))
        self.model.eval()
        with torch.no_grad():
            ue, ie = self.model.propagate()
            per_user, final = {}, {}
            for prefix, split in (("iid", self.data.test_iid), ("ood", self.data.test_ood)):
                res = self._evaluate(split, ue, ie, test=True)
                final |= _prefixed(prefix, res)
                per_user[f"{prefix}_users"] = res.users
                for k, v in res.per_user.items():
                    per_user[f"{prefix}_{k}"] = v
        rows, raw = self._diagnose(max(best_epoch, 0), keep_raw=True)
        self.emit({"type": "snapshot", "epoch": "best", "raw": raw})
        metrics = {k: v for k, v in (best or {}).items() if k.startswith(("valid_", "iid_", "ood_"))}
        if best is not None:  # test_eval='selected': the test metrics come from the selected weights here
            metrics = final | metrics
        result = TrainResult(status, message, best_epoch + 1, epochs_run, time.perf_counter() - t0, metrics,
                             history, diag_rows, per_user, ue.cpu().numpy(), ie.cpu().numpy())
        self.emit({"type": "end", "status": status, "message": message, "result": result})
        return result
