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
from .settings import (CAUSAL, DEVICES, LOSS_WEIGHTINGS, SCHEDULES, SELECTIONS, TEST_EVALS, ConfigError, info,
                       show as _show)


def _with_sampler_settings(cls):
    """Every sampler's own settings (declared in its file, `Sampler.settings`) become fields of the
    class, after the ones written here; then it is made a frozen dataclass."""
    for name, f in setting_fields().items():
        cls.__annotations__[name] = f.metadata["type"]
        setattr(cls, name, f)
    return dataclass(frozen=True)(cls)


@_with_sampler_settings
class TrainConfig:
    # --- data -------------------------------------------------------------------------------
    dataset: str = "sample"  # registry name, folder or file (see cnsdiff_core.data.registry)
    shift: str | None = None  # None = the dataset's own/default shift
    data_seed: int = 0  # seed of the split, separate from the training seed

    # --- what to train ------------------------------------------------------------------------
    sampler: str = METHOD  # one of SAMPLERS
    preset: str = "custom"  # name of the preset this config came from (informational)

    # --- LightGCN backbone (METHOD.md: d=64, 2 layers, lr 0.01, batch 2048, 120 epochs) -----
    dim: int = 64
    layers: int = 2
    lr: float = 0.01
    batch_size: int = 2048
    epochs: int = 120
    l2: float = 1e-4  # on layer-0 rows of the batch, not weight decay on propagated embeddings
    seed: int = 0
    device: str = "auto"
    cpu_threads: int = 1  # intra-op threads on CPU; 1 avoids OpenMP spin-waits when the cores are
    #   shared (7x faster demo on a loaded 2-core machine, docs/RESULTS.md); 0 = torch's default

    # --- evaluation and model selection -------------------------------------------------------
    eval_every: int = 1
    patience: int = 20  # epochs without validation improvement before stopping; 0 = never
    selection: str = "iid-valid"  # 'ood-test' reproduces the reference code's test-set selection
    eval_batch_users: int = 1024  # users per chunk of full-ranking evaluation
    test_eval: str = "every-epoch"  # 'selected': IID/OOD test only once, at the selected epoch
    #   (validation alone each epoch: a third of the evaluation time; for sweeps and benchmarks)

    # --- baseline samplers: their own settings are declared in their files (Sampler.settings) ---

    # --- CNSDiff: noise schedule --------------------------------------------------------------
    steps: int = 20  # T
    schedule: str = "linear-var"
    noise_scale: float = 0.1  # multiplies beta_min/beta_max (cosine: multiplies its betas)
    beta_min: float = 1e-4
    beta_max: float = 0.02

    # --- CNSDiff: synthesis and hardness ------------------------------------------------------
    hard_start: int = 10  # candidate steps s in {start, start+stride, ..., T}
    hard_stride: int = 4
    stop_step: int = 0  # reverse chain stops at r (the reference runs to 0)
    denoise_steps: int = 0  # > 0: stop after this many reverse steps from s (r = max(s-k, stop_step))
    reverse_from_T: bool = False  # reference bug: reverse always runs T..1 whatever s was
    posterior_noise: bool = False  # sample the DDPM posterior instead of taking its mean
    min_distance: float = 0.0  # floor on ||candidate - positive|| / ||positive||
    condition_on_user: bool = False  # denoiser also sees the user's embedding
    mix_a0: float = 1.0  # Beta(a, b) mixing weight moves from (a0, b0) at epoch 0 ...
    mix_b0: float = 9.0
    mix_a1: float = 9.0  # ... to (a1, b1) at epoch mix_ramp_epochs, then stays there
    mix_b1: float = 1.0
    mix_ramp_epochs: int = 20  # length of the mixing ramp in epochs, whatever `epochs` is;
    #   0 = over the configured budget (the reference behaviour: early stopping cuts it short)
    min_mix: float = 0.0  # floor on the mixing weight lambda
    cl_weight: float = 0.3
    cl_temperature: float = 2.0
    cl_negatives: int = 512  # > 0: contrastive negatives = a random subset of this many of the
    #   batch's 2B synthesized + random negatives (the full B x 2B logits cost 3.5x an RNS epoch on
    #   CPU; docs/RESULTS.md); 0 = all of them, as the reference code does

    # --- CNSDiff: denoiser training and causal regularization --------------------------------
    train_denoiser: bool = True  # reference bug: False (optimizer never stepped)
    denoiser_lr: float = 1e-3
    denoiser_hidden: int = 64
    denoiser_dropout: float = 0.5
    denoiser_joint: bool = False  # True: denoiser loss enters the recommender's backward pass
    diff_weight: float = 1e-6  # weight of the denoiser loss when joint
    loss_weighting: str = "snr-diff"  # per-t weight of the denoiser loss: 'snr-diff' =
    #   SNR(t-1)-SNR(t) with w(1)=w(2); 'snr-diff-ref' = DiffRec/reference, w(1)=1 (an artefact:
    #   normalized, t=1 gets ~0 and t=2 most of the weight); 'uniform' = 1 for every t
    normalize_snr_weights: bool = True  # SNR(t-1)-SNR(t) spans 28..9e4; normalize to mean 1
    causal: str = "env-variance"
    causal_weight: float = 0.1
    n_envs: int = 4
    env_kind: str = "auto"  # auto | time | popularity

    # --- diagnostics --------------------------------------------------------------------------
    probe_triples: int = 2500  # fixed sample of training triples (one per user where possible) for
    #   FHN/hardness every epoch: a rate of 0.01 is then known to about +-0.004 (Wilson 95%)
    probe_side_triples: int = 500  # the other samplers' rows (shown for comparison) and the per-step
    #   candidates use the probe's first triples only: resolving a vector costs a (P, items) product
    snapshot_epochs: tuple[int, ...] = ()  # extra epochs whose probe negatives are stored
    max_seconds: float = 0.0  # > 0: stop training after this wall time (kept as 'stopped')

    # ------------------------------------------------------------------------------------------
    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        def need(cond: bool, name: str, allowed: str) -> None:
            if not cond:
                raise ConfigError(f"{name}={_show(getattr(self, name))} is invalid: {allowed}.")

        need(self.sampler in SAMPLERS, "sampler", f"use one of {', '.join(SAMPLERS)}")
        need(self.schedule in SCHEDULES, "schedule", f"use one of {', '.join(SCHEDULES)}")
        need(self.causal in CAUSAL, "causal", f"use one of {', '.join(CAUSAL)}")
        need(self.loss_weighting in LOSS_WEIGHTINGS, "loss_weighting", f"use one of {', '.join(LOSS_WEIGHTINGS)}")
        need(self.selection in SELECTIONS, "selection", f"use one of {', '.join(SELECTIONS)}")
        need(self.device in DEVICES, "device", f"use one of {', '.join(DEVICES)}")
        need(self.test_eval in TEST_EVALS, "test_eval", f"use one of {', '.join(TEST_EVALS)}")
        need(self.test_eval == "every-epoch" or self.selection != "ood-test", "test_eval",
             "selection='ood-test' needs the OOD test every epoch; use test_eval=every-epoch")
        need(self.env_kind in ("auto", "time", "popularity"), "env_kind", "use auto, time or popularity")
        for name in ("dim", "batch_size", "epochs", "steps", "eval_every", "hard_stride", "denoiser_hidden",
                     "n_envs", "probe_triples", "probe_side_triples", "eval_batch_users"):
            need(int(getattr(self, name)) >= 1, name, "it must be an integer >= 1")
        for name in ("layers", "patience", "stop_step", "denoise_steps", "cl_negatives", "cpu_threads",
                     "mix_ramp_epochs"):
            need(int(getattr(self, name)) >= 0, name, "it must be an integer >= 0")
        for name in ("lr", "denoiser_lr", "cl_temperature", "noise_scale"):
            need(0 < float(getattr(self, name)) < 1e6, name, "it must be a positive number")
        for name in ("l2", "cl_weight", "diff_weight", "causal_weight", "min_distance", "max_seconds"):
            need(0 <= float(getattr(self, name)) < 1e9, name, "it must be a number >= 0")
        for name in ("mix_a0", "mix_b0", "mix_a1", "mix_b1"):
            need(0 < float(getattr(self, name)) < 1e6, name, "Beta parameters must be positive")
        need(0 <= self.min_mix <= 1, "min_mix", "it must lie in [0, 1]")
        need(0 <= self.denoiser_dropout < 1, "denoiser_dropout", "it must lie in [0, 1)")
        need(0 < self.beta_min < 1, "beta_min", "it must lie in (0, 1)")
        need(0 < self.beta_max < 1, "beta_max", "it must lie in (0, 1)")
        need(self.beta_min <= self.beta_max, "beta_min", f"it must not exceed beta_max={self.beta_max}")
        need(1 <= self.hard_start <= self.steps, "hard_start", f"it must lie in [1, steps={self.steps}]")
        need(self.stop_step < self.hard_start, "stop_step", f"it must be below hard_start={self.hard_start}")
        for f in fields(self):
            if f.metadata:  # a setting that describes itself: its choices and bounds
                described = info(f)
                need(described.allows(getattr(self, f.name)), f.name, described.rule())

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
    typ = str(f.type)
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


def setting_help() -> list[tuple[str, str, str]]:
    """(name, type, default) of every setting, for --help-settings and the app's form."""
    return [(f.name, str(f.type), repr(f.default)) for f in fields(TrainConfig)]


__all__ = ["TrainConfig", "ConfigError", "PRESETS", "preset_config", "parse_set_args",
           "SAMPLERS", "SCHEDULES", "CAUSAL", "setting_help", "field"]
