"""How a setting describes itself: one `setting(...)` per TrainConfig field (and per sampler's own
field, declared in the sampler's file) carries its default, help text, form group, allowed choices
and bounds. `--help-settings`, the app's Train form and `TrainConfig.validate` all read this
metadata; nothing else lists settings.

Also the vocabularies of the choice settings and `ConfigError`, which the diffusion and sampler
modules use without importing `config` (config imports the samplers to collect their fields).
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

SCHEDULES = ("linear", "linear-var", "cosine")
CAUSAL = ("kl", "env-variance", "none")
LOSS_WEIGHTINGS = ("snr-diff", "snr-diff-ref", "uniform")
SELECTIONS = ("iid-valid", "ood-test")
DEVICES = ("auto", "cpu", "cuda")
TEST_EVALS = ("every-epoch", "selected")
ENV_KINDS = ("auto", "time", "popularity")
SANITY_CAP = 1e6  # above this a rate, weight or Beta parameter is a typo, not a setting
# What the samplers and the diffusion code receive as `cfg`: a config.TrainConfig. config.py builds
# that class from the samplers' own settings, so they read its fields without importing it.
Config = Any


class ConfigError(ValueError):
    """An invalid configuration value; the message names the field, the value and what is allowed."""


def show(value: Any, limit: int = 60) -> str:
    """repr() for an error message, cut to `limit` characters (a value can be a whole document)."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


@dataclass(frozen=True)
class SettingInfo:
    """What one setting says about itself (the metadata of its dataclass field)."""

    name: str
    type: str  # 'int', 'float', 'bool', 'str', 'str | None', 'tuple[int, ...]'
    default: Any
    help: str
    group: str
    choices: tuple | None = None
    ge: float | None = None  # bounds: value >= ge, > gt, <= le, < lt
    gt: float | None = None
    le: float | None = None
    lt: float | None = None
    form: bool = True  # False: set elsewhere (sidebar, own widget), not in the Train form's groups

    def allowed(self) -> str:
        """The allowed values in a few words ('' when any value of the type is)."""
        if self.choices is not None:
            return f"one of {', '.join(map(str, self.choices))}"
        kind = "an integer" if self.type == "int" else "a number"
        low = self.ge if self.ge is not None else self.gt
        high = self.le if self.le is not None else self.lt
        if low is not None and high is not None and high < SANITY_CAP:
            left = "[" if self.ge is not None else "("
            right = "]" if self.le is not None else ")"
            return f"in {left}{_num(low)}, {_num(high)}{right}"
        if self.gt == 0:
            return "a positive number"
        if low is not None:
            return f"{kind} {'>=' if self.ge is not None else '>'} {_num(low)}"
        return ""

    def rule(self) -> str:
        """What is allowed, as the second half of an error sentence."""
        allowed = self.allowed()
        if self.choices is not None:
            return f"use {allowed}"
        return f"it must {'lie' if allowed.startswith('in ') else 'be'} {allowed}" if allowed else "check the value"

    def allows(self, value: Any) -> bool:
        if self.choices is not None:
            return value in self.choices
        if self.type not in ("int", "float"):
            return True
        v = float(value)
        return not ((self.ge is not None and v < self.ge) or (self.gt is not None and v <= self.gt)
                    or (self.le is not None and v > self.le) or (self.lt is not None and v >= self.lt)
                    or math.isnan(v))


def _num(x: float) -> str:
    return f"{x:g}"


def setting(default: Any, help: str, *, group: str = "", choices: tuple | None = None,
            ge: float | None = None, gt: float | None = None, le: float | None = None,
            lt: float | None = None, typ: str | None = None, form: bool = True) -> Any:
    """A dataclass field that describes itself (see `SettingInfo`); its type is the default's
    unless `typ` says otherwise (a None default needs it)."""
    if typ is None:
        typ = "tuple[int, ...]" if isinstance(default, tuple) else type(default).__name__
    return dataclasses.field(default=default, metadata={
        "type": typ, "help": help, "group": group, "choices": choices, "ge": ge, "gt": gt, "le": le,
        "lt": lt, "form": form})


def info(f: dataclasses.Field) -> SettingInfo:
    m = f.metadata
    return SettingInfo(f.name, m.get("type", str(f.type)), f.default, m.get("help", ""), m.get("group", ""),
                       m.get("choices"), m.get("ge"), m.get("gt"), m.get("le"), m.get("lt"), m.get("form", True))
