"""One frozen configuration for a training run, with presets and a JSON round trip.

Every knob of the backbone, the samplers and CNSDiff is a field of `TrainConfig`. Presets are
named partial overrides; `--set key=value` on the command line and the app's form both go through
`TrainConfig.with_updates`, so validation happens in one place.
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field, fields
from typing import Any

from .samplers.registry import METHOD, SAMPLERS, setting_fields
from .settings import (CAUSAL, DEVICES, ENV_KINDS, LOSS_WEIGHTINGS, SANITY_CAP, SCHEDULES, SELECTIONS, TEST_EVALS,
                       ConfigError, SettingInfo, info, setting)
from .settings import show as _show


def _with_sampler_settings(cls):
    """Every sampler's own settings (declared in its file, `Sampler.settings`) become fields of the
    class, after the ones written here; then it is made a frozen dataclass."""
    for name, f in setting_fields().items():
        cls.__annotations__[name] = f.metadata["type"]
        setattr(cls, name, f)
    return dataclass(frozen=True)(cls)


RUN, BACKBONE, EVAL, SAMPLER = "What to train", "Backbone (LightGCN) and seeds", "Evaluation & selection", \
    "Baseline samplers"
SCHEDULE, SYNTHESIS, DENOISER = "CNSDiff: noise schedule", "CNSDiff: synthesis & hardness", "CNSDiff: denoiser & causal"
GROUPS = (RUN, BACKBONE, EVAL, SAMPLER, SCHEDULE, SYNTHESIS, DENOISER)  # in this order in forms and help
BIG = 1e9  # a weight or a number of seconds beyond this is a typo


@_with_sampler_settings
class TrainConfig:
    """Every knob of a run. Each field describes itself (`settings.setting`); the samplers' own
    knobs are added from their files. Presets are named partial overrides (PRESETS below)."""

    # --- data and what to train (chosen in the sidebar and the Train page's own widgets) -------
    dataset: str = setting("sample", "dataset: a registry name (sample, food, ..., synthetic:...), a folder "
                           "or a file", group=RUN, form=False)
    shift: str | None = setting(None, "shift between training and the OOD test; empty = the dataset's own "
                                "or default shift", group=RUN, typ="str | None", form=False)
    sampler: str = setting(METHOD, "negative sampler to train with", group=RUN, choices=SAMPLERS, form=False)
    preset: str = setting("custom", "name of the preset this config came from (informational)", group=RUN,
                          form=False)
    device: str = setting("auto", "auto = a CUDA GPU when one is visible, else the CPU", group=RUN,
                          choices=DEVICES, form=False)

    # --- LightGCN backbone (METHOD.md: d=64, 2 layers, lr 0.01, batch 2048, 120 epochs) -----
    dim: int = setting(64, "embedding dimension d", group=BACKBONE, ge=1)
    layers: int = setting(2, "LightGCN propagation layers (0 = matrix factorization)", group=BACKBONE, ge=0)
    lr: float = setting(0.01, "learning rate of the recommender (Adam)", group=BACKBONE, gt=0, lt=SANITY_CAP)
    batch_size: int = setting(2048, "training triples per batch", group=BACKBONE, ge=1)
    epochs: int = setting(120, "epoch budget", group=BACKBONE, ge=1)
    l2: float = setting(1e-4, "L2 weight on the batch's layer-0 rows (not weight decay on propagated "
                        "embeddings)", group=BACKBONE, ge=0, lt=BIG)
    seed: int = setting(0, "training seed (initialization, batches, negatives)", group=BACKBONE)
    data_seed: int = setting(0, "seed of the split, separate from the training seed", group=BACKBONE)
    cpu_threads: int = setting(1, "intra-op threads on CPU; 1 avoids OpenMP spin-waits when the cores are "
                               "shared (7x faster demo on a loaded 2-core machine, docs/RESULTS.md); 0 = "
                               "torch's default", group=BACKBONE, ge=0)
    cuda_graph: bool = setting(False, "capture the whole training step (sampling, synthesis, losses, both "
                               "backward passes and optimizers; static shapes, no host sync) once per batch "
                               "shape as a CUDA graph and replay it; on a CPU the same static step runs "
                               "eagerly, with the same numbers", group=BACKBONE)

    # --- evaluation and model selection -------------------------------------------------------
    eval_every: int = setting(1, "evaluate every this many epochs (and at the last one)", group=EVAL, ge=1)
    patience: int = setting(20, "evaluations without validation improvement before stopping; 0 = never",
                            group=EVAL, ge=0)
    selection: str = setting("iid-valid", "how the kept epoch is chosen: IID validation Recall@20, or "
                             "'ood-test' (the reference code's test-set selection, labelled as such)",
                             group=EVAL, choices=SELECTIONS)
    eval_batch_users: int = setting(1024, "users per chunk of full-ranking evaluation", group=EVAL, ge=1)
    test_eval: str = setting("every-epoch", "'selected': IID/OOD test only once, at the selected epoch "
                             "(validation alone each epoch: a third of the evaluation time; for sweeps "
                             "and benchmarks)", group=EVAL, choices=TEST_EVALS)
    probe_triples: int = setting(2500, "fixed sample of training triples (one per user where possible) for "
                                 "FHN and hardness every epoch: a rate of 0.01 is then known to about "
                                 "+-0.004 (Wilson 95%)", group=EVAL, ge=1)
    probe_side_triples: int = setting(500, "the other samplers' rows (shown for comparison) and the per-step "
                                      "candidates use the probe's first triples only: resolving a vector "
                                      "costs a (P, items) product", group=EVAL, ge=1)
    diagnose_every: int = setting(1, "measure FHN and hardness on the probe every this many evaluated epochs; "
                                  "0 = only at the first and the selected epoch (tuning trials: the probe "
                                  "takes 0.4-1 s of every Food epoch)", group=EVAL,
                                  ge=0)
    snapshot_epochs: tuple[int, ...] = setting((), "extra epochs whose probe negatives are stored "
                                               "(comma-separated)", group=EVAL)
    max_seconds: float = setting(0.0, "> 0: stop training after this wall time (kept as 'stopped')", group=EVAL,
                                 ge=0, lt=BIG)

    # --- baseline samplers: their own settings are declared in their files (Sampler.settings) ---

    # --- CNSDiff: noise schedule --------------------------------------------------------------
    steps: int = setting(20, "diffusion steps T", group=SCHEDULE, ge=1)
    schedule: str = setting("linear-var", "noise schedule family: linear betas, linear variance "
                            "(DiffRec) or cosine (Nichol & Dhariwal)", group=SCHEDULE, choices=SCHEDULES)
    noise_scale: float = setting(0.1, "multiplies beta_min / beta_max (cosine: multiplies its betas)",
                                 group=SCHEDULE, gt=0, lt=SANITY_CAP)
    beta_min: float = setting(1e-4, "smallest beta (before noise_scale)", group=SCHEDULE, gt=0, lt=1)
    beta_max: float = setting(0.02, "largest beta (before noise_scale)", group=SCHEDULE, gt=0, lt=1)

    # --- CNSDiff: synthesis and hardness ------------------------------------------------------
    hard_start: int = setting(10, "first candidate step s: candidates at s in {start, start + stride, ..., T}",
                              group=SYNTHESIS, ge=1)
    hard_stride: int = setting(4, "stride between candidate steps s", group=SYNTHESIS, ge=1)
    stop_step: int = setting(0, "the reverse chain stops at step r (the reference runs to 0)",
                             group=SYNTHESIS, ge=0)
    denoise_steps: int = setting(0, "> 0: stop after this many reverse steps from s (r = max(s - k, "
                                 "stop_step))", group=SYNTHESIS, ge=0)
    reverse_from_T: bool = setting(False, "reference bug: the reverse chain always runs T..1 whatever s was",
                                   group=SYNTHESIS)
    posterior_noise: bool = setting(False, "sample the DDPM posterior instead of taking its mean",
                                    group=SYNTHESIS)
    min_distance: float = setting(0.0, "floor on ||candidate - positive|| / ||positive|| for the picked "
                                  "candidate", group=SYNTHESIS, ge=0, lt=BIG)
    condition_on_user: bool = setting(False, "the denoiser also sees the user's embedding", group=SYNTHESIS)
    mix_a0: float = setting(1.0, "the mixing weight lambda ~ Beta(a, b) starts at (a0, b0) at epoch 0: a0",
                            group=SYNTHESIS, gt=0, lt=SANITY_CAP)
    mix_b0: float = setting(9.0, "b0 of the mixing weight's Beta at epoch 0", group=SYNTHESIS, gt=0,
                            lt=SANITY_CAP)
    mix_a1: float = setting(9.0, "... and moves to (a1, b1) at epoch mix_ramp_epochs, then stays there: a1",
                            group=SYNTHESIS, gt=0, lt=SANITY_CAP)
    mix_b1: float = setting(1.0, "b1 of the mixing weight's Beta at the end of the ramp", group=SYNTHESIS,
                            gt=0, lt=SANITY_CAP)
    mix_ramp_epochs: int = setting(20, "length of the mixing ramp in epochs, whatever `epochs` is; 0 = over "
                                   "the configured budget (the reference behaviour: early stopping cuts it "
                                   "short)", group=SYNTHESIS, ge=0)
    min_mix: float = setting(0.0, "floor on the mixing weight lambda", group=SYNTHESIS, ge=0, le=1)
    cl_weight: float = setting(0.3, "weight of the contrastive term", group=SYNTHESIS, ge=0, lt=BIG)
    cl_temperature: float = setting(2.0, "temperature of the contrastive term", group=SYNTHESIS, gt=0,
                                    lt=SANITY_CAP)
    cl_negatives: int = setting(512, "> 0: contrastive negatives = a random subset of this many of the batch's "
                                "2B synthesized + random negatives (the full B x 2B logits cost 3.5x an RNS "
                                "epoch on CPU; docs/RESULTS.md); 0 = all of them, as the reference code does",
                                group=SYNTHESIS, ge=0)

    # --- CNSDiff: denoiser training and causal regularization --------------------------------
    train_denoiser: bool = setting(True, "train the denoiser (reference bug: False, its optimizer never "
                                   "steps)", group=DENOISER)
    denoiser_lr: float = setting(1e-3, "learning rate of the denoiser (Adam)", group=DENOISER, gt=0,
                                 lt=SANITY_CAP)
    denoiser_hidden: int = setting(64, "hidden units of the denoiser MLP", group=DENOISER, ge=1)
    denoiser_dropout: float = setting(0.5, "dropout on the denoiser's normalized input", group=DENOISER,
                                      ge=0, lt=1)
    denoiser_joint: bool = setting(False, "the denoiser loss enters the recommender's backward pass (the "
                                   "reference) instead of its own optimizer step", group=DENOISER)
    diff_weight: float = setting(1e-6, "weight of the denoiser loss when joint", group=DENOISER, ge=0, lt=BIG)
    loss_weighting: str = setting("snr-diff", "per-t weight of the denoiser loss: 'snr-diff' = "
                                  "SNR(t-1) - SNR(t) with w(1) = w(2); 'snr-diff-ref' = DiffRec / reference, "
                                  "w(1) = 1 (normalized, t = 1 gets almost nothing); 'uniform' = 1 for "
                                  "every t", group=DENOISER, choices=LOSS_WEIGHTINGS)
    normalize_snr_weights: bool = setting(True, "scale the per-t weights to mean 1 (SNR(t-1) - SNR(t) spans "
                                          "28..9e4)", group=DENOISER)
    causal: str = setting("env-variance", "causal term: 'env-variance' = variance of the loss across "
                          "environments (V-REx), 'kl' = the reference's KL term, 'none'", group=DENOISER,
                          choices=CAUSAL)
    causal_weight: float = setting(0.1, "weight of the causal term", group=DENOISER, ge=0, lt=BIG)
    n_envs: int = setting(4, "environments for the causal term", group=DENOISER, ge=1)
    env_kind: str = setting("auto", "what the environments are: time strata, popularity strata, or auto "
                            "(time when the data has timestamps)", group=DENOISER, choices=ENV_KINDS)

    # ------------------------------------------------------------------------------------------
    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        def need(cond: bool, name: str, allowed: str) -> None:
            if not cond:
                raise ConfigError(f"{name}={_show(getattr(self, name))} is invalid: {allowed}.")

        for f in fields(self):  # each setting's own choices and bounds
            described = info(f)
            need(described.allows(getattr(self, f.name)), f.name, described.rule())
        need(self.test_eval == "every-epoch" or self.selection != "ood-test", "test_eval",
             "selection='ood-test' needs the OOD test every epoch; use test_eval=every-epoch")
        need(self.beta_min <= self.beta_max, "beta_min", f"it must not exceed beta_max={self.beta_max}")
        need(1 <= self.hard_start <= self.steps, "hard_start", f"it must lie in [1, steps={self.steps}]")
        need(self.stop_step < self.hard_start, "stop_step", f"it must be below hard_start={self.hard_start}")

    # ------------------------------------------------------------------------------------------
    def hardness_steps(self) -> list[int]:
        """Diffusion steps s at which CNSDiff noises the positive: start, start+stride, ..., <= T."""
        return list(range(self.hard_start, self.steps + 1, self.hard_stride))

    def stop_for(self, s: int) -> int:
        """Step r at which the reverse chain from s stops."""
        if self.denoise_steps > 0:
            return max(s - self.denoise_steps, self.stop_step)
        return self.stop_step

    def with_updates(self, **updates: Any) -> "TrainConfig":
        known = {f.name: f for f in fields(self)}
        clean: dict[str, Any] = {}
        for key, value in updates.items():
            if key not in known:
                raise ConfigError(f"unknown setting {_show(key)}; see `python -m cnsdiff_core train --help-settings`.")
            clean[key] = _coerce(known[key], value)
        return dataclasses.replace(self, **clean)

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["snapshot_epochs"] = list(self.snapshot_epochs)
        return d

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "TrainConfig":
        known = {f.name for f in fields(cls)}
        return cls().with_updates(**{k: v for k, v in data.items() if k in known})

    @classmethod
    def from_json(cls, text: str) -> "TrainConfig":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"config is not valid JSON ({exc.msg} at line {exc.lineno}); fix the file.") from None
        except (ValueError, RecursionError):  # 4,300+ digit integers, absurdly deep nesting
            raise ConfigError("config JSON holds an absurd value or nesting; give plain setting: value pairs.") from None
        if not isinstance(data, dict):
            raise ConfigError("config JSON must be an object of setting: value pairs.")
        return cls.from_dict(data)


def _coerce(f: dataclasses.Field, value: Any) -> Any:
    """Turn strings from the command line or a form into the field's type, with a clear error."""
    typ = info(f).type
    name = f.name
    try:
        if typ.startswith("tuple"):
            if isinstance(value, str):
                value = [v for v in value.replace(";", ",").split(",") if v.strip()]
            return tuple(int(v) for v in value)
        if typ == "bool":
            if isinstance(value, str):
                low = value.strip().lower()
                if low in ("1", "true", "yes", "on"):
                    return True
                if low in ("0", "false", "no", "off"):
                    return False
                raise ValueError
            return bool(value)
        if typ == "int":
            if isinstance(value, float) and not value.is_integer():
                raise ValueError
            out = int(float(value)) if isinstance(value, str) else int(value)
            if abs(out) > 10**9:
                raise ConfigError(f"{name}={_show(value)} is too large; use a value below 1e9.")
            return out
        if typ == "float":
            out = float(value)
            if out != out or out in (float("inf"), float("-inf")):
                raise ValueError
            return out
        if typ == "str | None":
            return None if value in (None, "", "none", "None") else str(value)
        return str(value)
    except ConfigError:
        raise
    except (TypeError, ValueError, OverflowError):
        raise ConfigError(f"{name}={_show(value)} is not a valid {typ}; give a {typ} value.") from None


# Presets: partial overrides of the defaults. `paper` = correct method with the paper's numbers
# (shows the trap); `reference` = the published code's behaviour; `tuned` = what IID validation
# picked (docs/RESULTS.md); `demo` = small and fast for the sample world on a laptop.
PRESETS: dict[str, dict[str, Any]] = {
    "paper": {"causal": "kl", "loss_weighting": "snr-diff-ref"},
    "reference": {
        "loss_weighting": "snr-diff-ref",
        "mix_ramp_epochs": 0,
        "train_denoiser": False,
        "reverse_from_T": True,
        "selection": "ood-test",
        "causal": "kl",
        "denoiser_joint": True,
        "cl_negatives": 0,
    },
    "tuned": {  # picked on IID validation of the sample world (docs/RESULTS.md, "Knobs")
        "schedule": "cosine",
        "noise_scale": 0.5,
        "denoise_steps": 3,
        "hard_start": 2,
        "hard_stride": 4,
        "mix_a1": 1.0,
        "mix_b1": 1.0,
        "causal": "env-variance",
    },
    "demo": {  # the tuned knobs on a laptop budget
        "schedule": "cosine",
        "noise_scale": 0.5,
        "denoise_steps": 3,
        "hard_start": 2,
        "hard_stride": 4,
        "mix_a1": 1.0,
        "mix_b1": 1.0,
        "epochs": 15,
        "batch_size": 1024,
        "patience": 0,
    },
}


def preset_config(name: str, **overrides: Any) -> TrainConfig:
    if name not in PRESETS:
        raise ConfigError(f"preset {_show(name)} is unknown; use one of {', '.join(PRESETS)}.")
    return TrainConfig(preset=name).with_updates(**PRESETS[name]).with_updates(**overrides)


def parse_set_args(items: list[str]) -> dict[str, str]:
    """Parse ['key=value', ...] from `--set`, with one clear error per malformed item."""
    out: dict[str, str] = {}
    for item in items:
        if "=" not in item:
            raise ConfigError(f"--set {_show(item)} has no '='; write it as key=value.")
        key, value = item.split("=", 1)
        if not key.strip():
            raise ConfigError(f"--set {_show(item)} has an empty key; write it as key=value.")
        out[key.strip()] = value.strip()
    return out


def settings_info() -> list[SettingInfo]:
    """Every setting with its help, group, choices and bounds, grouped in GROUPS order (the
    samplers' own settings in theirs): what --help-settings prints and the Train form shows."""
    described = [info(f) for f in fields(TrainConfig)]
    rank = {g: i for i, g in enumerate(GROUPS)}
    return sorted(described, key=lambda d: rank.get(d.group, len(GROUPS)))


def help_text() -> list[str]:
    """--help-settings: one block per group, one line per setting (name, type, default, allowed, help)."""
    lines, group = [], None
    for d in settings_info():
        if d.group != group:
            group = d.group
            lines += ["" if lines else None, f"{group}:"]
        allowed = f" [{d.allowed()}]" if d.allowed() else ""
        lines.append(f"  {d.name:24s} {d.type:16s} default {d.default!r}{allowed}")
        lines.append(f"      {d.help}")
    return [line for line in lines if line is not None]


__all__ = ["TrainConfig", "ConfigError", "PRESETS", "GROUPS", "preset_config", "parse_set_args", "SAMPLERS",
           "SCHEDULES", "CAUSAL", "LOSS_WEIGHTINGS", "settings_info", "help_text", "field"]
