"""Negative samplers behind one interface, chosen by name."""
from __future__ import annotations

import torch

from ..config import SAMPLERS, ConfigError, TrainConfig
from .ahns import AdaptiveHardnessSampler
from .base import BatchContext, NegativeBatch, NegativePool, Sampler
from .cnsdiff import CNSDiffSampler
from .dns import DynamicSampler
from .mixgcf import MixGCFSampler
from .pns import PopularitySampler
from .rns import RandomSampler

REGISTRY: dict[str, type[Sampler]] = {
    "rns": RandomSampler,
    "pns": PopularitySampler,
    "dns": DynamicSampler,
    "mixgcf": MixGCFSampler,
    "ahns": AdaptiveHardnessSampler,
    "cnsdiff": CNSDiffSampler,
}
assert tuple(REGISTRY) == SAMPLERS

LABELS = {"rns": "RNS (uniform)", "pns": "PNS (popularity^0.75)", "dns": "DNS (hardest of M)",
          "mixgcf": "MixGCF (mixing)", "ahns": "AHNS (adaptive hardness)", "cnsdiff": "CNSDiff (diffusion)"}


def make_sampler(name: str, cfg: TrainConfig, device: torch.device) -> Sampler:
    if name not in REGISTRY:
        raise ConfigError(f"sampler {name!r} is unknown; use one of {', '.join(REGISTRY)}.")
    return REGISTRY[name](cfg, device)


__all__ = ["REGISTRY", "LABELS", "make_sampler", "Sampler", "BatchContext", "NegativeBatch", "NegativePool"]
