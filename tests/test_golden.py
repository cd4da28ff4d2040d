"""Golden run: a short fixed-seed training of every sampler on the sample world, whose metrics,
losses and FHN figures are pinned to values recorded from the code before the issue-13 refactor
(tests/golden/*.json). Restructuring code must not move a number.

Record the values again only when a change of numbers is intended (and say so in the commit):

    .venv/bin/python tests/test_golden.py --record

The values come from this project's CPU wheel of torch (float32, one thread); another CPU family
can round a matmul differently, which a two-epoch run can amplify, so the tolerance is tight but
not zero.
"""
from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest

GOLDEN = Path(__file__).resolve().parent / "golden"
RTOL, ATOL = 1e-5, 1e-7
# Quantities made by cancellation get an absolute floor on top (seen between an AVX-512 and an
# AVX2 machine, same wheel): a distance to the nearest item is sqrt(|a|^2 + |b|^2 - 2ab), so a vector
# that sits on an item gets float32 noise of about 1e-3 instead of 0 (4e-4 on one CPU, 6e-4 on the
# other); hardness is a difference of two O(0.1) scores, so its float32 noise is about 1e-7 absolute
# whatever its own size. A changed rule or refactoring error moves these by far more.
ABS_FLOOR = {"nn_dist": 1e-3, "hardness": 1e-6, "hardness_mean": 1e-6, "hardness_median": 1e-6,
             "score": 1e-6, "cos_to_pos": 1e-6}
COMMON = dict(dataset="sample", epochs=2, device="cpu", cpu_threads=1, probe_triples=300, seed=3)
# (name, preset, sampler, overrides): every sampler at the demo preset, plus CNSDiff variants that
# take the other branches of the reverse process and the denoiser's training (reference: reverse
# from T, joint training, an untrained denoiser; posterior noise, user conditioning, a distance floor)
RUNS = [(s, "demo", s, {}) for s in ("rns", "pns", "dns", "mixgcf", "ahns", "cnsdiff")] + [
    ("cnsdiff-reference", "reference", "cnsdiff", {"batch_size": 1024}),
    ("cnsdiff-variants", "demo", "cnsdiff", {"posterior_noise": True, "condition_on_user": True,
                                             "min_distance": 0.3, "cl_negatives": 0}),
]
DIAG_COLUMNS = ("fhn", "fhn_lo", "fhn_hi", "own_positive", "own_train", "hardness_mean", "hardness_median",
                "cos_to_pos", "nn_dist", "norm_ratio", "fhn_null", "fhn_true", "uniform_rate")
TRAJ_COLUMNS = ("score", "hardness", "cos_to_pos", "norm", "coef1", "coef2", "z0hat_norm", "resolved_item",
                "nn_dist")
REPORT_COLUMNS = ("fhn", "own_positive", "hardness_mean", "cos_to_pos", "nn_dist", "fhn_null", "fhn_true")


def _clean(value):
    """JSON-safe floats (NaN as None) for the golden files."""
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        v = float(value)
        return None if math.isnan(v) else v
    if isinstance(value, np.bool_):
        return bool(value)
    return value


def _load_data():
    from cnsdiff_core.data import load_dataset

    return load_dataset("sample", None, seed=0)


def train_run(name: str, data) -> tuple[dict, object, object]:
    """One golden training run: (figures, trainer, result)."""
    from cnsdiff_core.config import preset_config
    from cnsdiff_core.diagnostics import fhn_summary
    from cnsdiff_core.train import Trainer

    _, preset, sampler, extra = next(r for r in RUNS if r[0] == name)
    cfg = preset_config(preset, sampler=sampler, **COMMON, **extra)
    trainer = Trainer(cfg, data)
    res = trainer.fit()
    history = [{k: v for k, v in rec.items() if not k.endswith("seconds")} for rec in res.history]
    diag = [{"sampler": r["sampler"], "step": int(r["step"]), "epoch": int(r["epoch"]),
             **{c: r.get(c) for c in DIAG_COLUMNS}} for r in res.diagnostics]
    figures = {"status": res.status, "best_epoch": res.best_epoch, "metrics": res.metrics, "history": history,
               "diagnostics": diag, "fhn": fhn_summary(res.diagnostics, cfg.sampler, res.best_epoch),
               "item_emb_sum": float(np.abs(res.item_emb).sum()), "user_emb_sum": float(np.abs(res.user_emb).sum())}
    return _clean(figures), trainer, res


def lab_figures(trainer, res, data) -> dict:
    """The explore side on the trained CNSDiff run: one recorded trajectory, the step report of its
    own denoiser, and a short schedule-lab refit."""
    from cnsdiff_core import explore as ex
    from cnsdiff_core.train import seed_everything

    cfg = trainer.cfg
    den = trainer.sampler.denoiser
    user = int(data.train[0, 0])
    pos = int(data.train[0, 1])
    traj = ex.denoising_trajectories(cfg, den, res.user_emb, res.item_emb, data, user, pos, seed=1)
    report = ex.step_report(cfg, den, data, res.user_emb, res.item_emb, n_triples=200, seed=7)
    seed_everything(11)  # the refit's init and dropout draw from torch's global RNG
    lab_cfg = ex.lab_config(cfg, "linear", 10, 1.0, 1e-4, 0.02)
    refit, refit_report = ex.refit_denoiser(lab_cfg, data, res.user_emb, res.item_emb, n_steps=20,
                                            n_triples=200, seed=2)
    return _clean({
        "trajectory": {c: traj.table[c].tolist() for c in TRAJ_COLUMNS},
        "own_report": {c: report[c].tolist() for c in REPORT_COLUMNS},
        "refit_curve": refit.loss_curve_.tolist(),
        "refit_eval": [refit.eval_loss_before_, refit.eval_loss_after_],
        "refit_report": {c: refit_report[c].tolist() for c in REPORT_COLUMNS},
    })


def compute_all() -> dict[str, dict]:
    data = _load_data()
    out = {}
    for name, *_ in RUNS:
        figures, trainer, res = train_run(name, data)
        if name == "cnsdiff":
            figures["lab"] = lab_figures(trainer, res, data)
        out[name] = figures
    return out


def _compare(got, want, where: str) -> None:
    if isinstance(want, dict):
        assert isinstance(got, dict) and set(got) == set(want), f"{where}: keys {sorted(got)} != {sorted(want)}"
        for k in want:
            _compare(got[k], want[k], f"{where}.{k}")
    elif isinstance(want, list):
        assert isinstance(got, list) and len(got) == len(want), f"{where}: length {len(got)} != {len(want)}"
        for i, (g, w) in enumerate(zip(got, want)):
            _compare(g, w, f"{where}[{i}]")
    elif isinstance(want, float) and not isinstance(want, bool):
        leaf = where.rsplit(".", 1)[-1].split("[", 1)[0]
        atol = max(ATOL, ABS_FLOOR.get(leaf, 0.0))
        assert got is not None and math.isclose(got, want, rel_tol=RTOL, abs_tol=atol), f"{where}: {got} != {want}"
    else:
        assert got == want, f"{where}: {got!r} != {want!r}"


@pytest.fixture(scope="module")
def sample_data():
    return _load_data()


@pytest.mark.parametrize("name", [r[0] for r in RUNS])
def test_golden_run_gives_the_recorded_numbers(name, sample_data):
    want = json.loads((GOLDEN / f"{name}.json").read_text())
    got, trainer, res = train_run(name, sample_data)
    if "lab" in want:
        got["lab"] = lab_figures(trainer, res, sample_data)
    _compare(got, want, name)


def test_golden_files_cover_every_run():
    assert sorted(p.stem for p in GOLDEN.glob("*.json")) == sorted(r[0] for r in RUNS)


if __name__ == "__main__":
    if "--record" not in sys.argv:
        sys.exit("usage: python tests/test_golden.py --record   (writes tests/golden/*.json)")
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    GOLDEN.mkdir(exist_ok=True)
    for run_name, figures in compute_all().items():
        (GOLDEN / f"{run_name}.json").write_text(json.dumps(figures, indent=1, sort_keys=True) + "\n")
        print(f"wrote {GOLDEN / run_name}.json")
