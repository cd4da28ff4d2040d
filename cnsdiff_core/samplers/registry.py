"""Every sampler, found by scanning this folder: each module that defines a `Sampler` subclass with
a `name` adds it. Nothing else lists samplers; the CLI, the config's validation, the app's forms
and charts, the experiment table and the workshop bundle read the lists below.
"""
from __future__ import annotations

import dataclasses
import importlib
import pkgutil
from pathlib import Path

import torch

from ..settings import ConfigError
from .base import Sampler

_NOT_SAMPLERS = {"base", "registry"}


def _discover() -> dict[str, type[Sampler]]:
    package = __name__.rsplit(".", 1)[0]
    found: dict[str, type[Sampler]] = {}
    for mod in pkgutil.iter_modules([str(Path(__file__).parent)]):
        if mod.name in _NOT_SAMPLERS or mod.name.startswith("_"):
            continue
        module = importlib.import_module(f"{package}.{mod.name}")
        for obj in vars(module).values():
            if (isinstance(obj, type) and issubclass(obj, Sampler) and obj.__module__ == module.__name__
                    and obj.__dict__.get("name")):
                if obj.name in found:
                    raise ImportError(f"two samplers are named {obj.name!r} ({found[obj.name].__module__} and "
                                      f"{module.__name__}); rename one of them.")
                found[obj.name] = obj
    return dict(sorted(found.items(), key=lambda kv: (kv[1].order, kv[0])))


REGISTRY: dict[str, type[Sampler]] = _discover()
SAMPLERS: tuple[str, ...] = tuple(REGISTRY)
LABELS: dict[str, str] = {n: c.label or n for n, c in REGISTRY.items()}
SYNTHESIZING: tuple[str, ...] = tuple(n for n, c in REGISTRY.items() if c.synthesizes)
WITH_DENOISER: tuple[str, ...] = tuple(n for n, c in REGISTRY.items() if c.has_denoiser)
# the method the explorer studies, and the uniform baseline it is compared with (first of each role)
METHOD: str = next((n for n, c in REGISTRY.items() if c.role == "method"), SAMPLERS[-1])
UNIFORM: str = next((n for n, c in REGISTRY.items() if c.role == "uniform"), SAMPLERS[0])
HARD: str = next((n for n, c in REGISTRY.items() if c.role == "hard"), UNIFORM)
BASELINES: tuple[str, ...] = tuple(n for n, c in REGISTRY.items() if c.role != "method")
# Measured on every run's probe beside the trained sampler. Layer-mixing samplers come last: this
# is the order in which the probe draws from torch's RNG, kept so that seeds reproduce stored runs.
PROBED: tuple[str, ...] = tuple(n for n, c in sorted(REGISTRY.items(), key=lambda kv: kv[1].needs_layers)
                                if c.probe_alongside)


def sampler_class(name: str) -> type[Sampler]:
    if name not in REGISTRY:
        raise ConfigError(f"sampler {name!r} is unknown; use one of {', '.join(REGISTRY)}.")
    return REGISTRY[name]


def make_sampler(name: str, cfg, device: torch.device) -> Sampler:
    return sampler_class(name)(cfg, device)


def setting_fields() -> dict[str, dataclasses.Field]:
    """Every sampler's own settings as dataclass fields named `<sampler>_<key>`, for TrainConfig."""
    out: dict[str, dataclasses.Field] = {}
    for cls in REGISTRY.values():
        for key, f in cls.settings.items():
            name = cls.field(key)
            if name in out:
                raise ImportError(f"setting {name!r} is declared twice; rename it in {cls.__module__}.")
            out[name] = f
    return out

