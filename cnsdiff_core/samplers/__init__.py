"""Negative samplers behind one interface, each one file in this folder, found by `registry`."""
from .base import BatchContext, NegativeBatch, NegativePool, Sampler
from .registry import (BASELINES, HARD, LABELS, METHOD, PROBED, REGISTRY, SAMPLERS, SYNTHESIZING, UNIFORM,
                       WITH_DENOISER, make_sampler, sampler_class)

__all__ = ["REGISTRY", "SAMPLERS", "LABELS", "SYNTHESIZING", "WITH_DENOISER", "METHOD", "UNIFORM", "HARD", "BASELINES",
           "PROBED", "make_sampler", "sampler_class", "Sampler", "BatchContext", "NegativeBatch", "NegativePool"]
