"""Colours and markers of every chart: the Okabe & Ito (2008) palette (colour-blind safe), one
vermillion scale for synthesized negatives, and each sampler's own colour and marker (declared by
the sampler, `Sampler.color` / `Sampler.marker`)."""
from __future__ import annotations

import numpy as np

from cnsdiff_core.explore import PRE_MIX, SYNTHESIZING, sampler_key
from cnsdiff_core.samplers import REGISTRY

OKABE_ITO = {"black": "#000000", "orange": "#E69F00", "sky_blue": "#56B4E9", "green": "#009E73",
             "yellow": "#F0E442", "blue": "#0072B2", "vermillion": "#D55E00", "purple": "#CC79A7",
             "grey": "#999999"}
# Real items are blue, synthesized negatives vermillion: the two never share a hue anywhere.
REAL_COLOR = OKABE_ITO["blue"]
SYNTH_COLOR = OKABE_ITO["vermillion"]
TRAIN_POS_COLOR = OKABE_ITO["blue"]  # the user's training positives (real items)
HELDOUT_COLOR = OKABE_ITO["green"]  # the user's held-out positives (real items)
CONTEXT_COLOR = "#BBBBBB"  # all other items, drawn behind everything
SPLIT_COLORS = {"train": OKABE_ITO["black"], "valid": OKABE_ITO["grey"], "test_iid": OKABE_ITO["blue"],
                "test_ood": OKABE_ITO["orange"]}
# The one scale within the synthesized hue, dark to light = hard to easy: a small diffusion step s
# ends near the positive (hard), a large one far from it (easy).
VERMILLION = ["#5C1F00", "#8F3500", "#D55E00", "#E8845A", "#F4B39A"]
# Sequential shades within the real-item hue, e.g. for popularity colouring of items.
REAL_SCALE = ["#DEEBF7", "#9ECAE1", "#4292C6", "#0072B2", "#08306B"]
GREYS = [[0, "#E6E6E6"], [1, "#333333"]]  # the item cloud coloured by popularity
ENV_GREYS = ["#D9D9D9", "#A6A6A6", "#737373", "#404040"]  # ... by environment
POSITIVE_STYLE = {"training positive": (TRAIN_POS_COLOR, "star"),
                  "held-out positive": (HELDOUT_COLOR, "star-diamond")}


def sampler_color(name: str) -> str:
    """A sampler's colour ('cnsdiff@14' takes its sampler's); grey for an unknown name."""
    cls = REGISTRY.get(str(name).split("@")[0])
    return cls.color if cls else OKABE_ITO["grey"]


def step_colors(steps: list[int]) -> dict[int, str]:
    """One shade of the synthesized hue per diffusion step (darkest = smallest s = hardest)."""
    n = len(steps)
    idx = np.linspace(0, len(VERMILLION) - 1, n).round().astype(int) if n > 1 else [2]
    return {int(s): VERMILLION[i] for s, i in zip(sorted(steps), idx)}


def sampler_style(key: str, steps: list[int]) -> tuple[str, str]:
    """(colour, marker symbol) of a chart series: a sampler, 'sampler@s', 'sampler@premix' or a
    kind of positive. Real items take filled markers, synthesized vectors open or cross ones."""
    if key in POSITIVE_STYLE:
        return POSITIVE_STYLE[key]
    base, step = sampler_key(key)
    if step >= 0:
        return step_colors(steps).get(step, SYNTH_COLOR), "cross-open"
    if step == PRE_MIX:  # a vector sampler's candidate before mixing
        return sampler_color(base), "circle-x-open"
    cls = REGISTRY.get(base)
    return sampler_color(base), cls.marker if cls else ("x" if base in SYNTHESIZING else "circle")


def series_colors(series: list[str]) -> dict[str, str]:
    """Colours for chart series named 'sampler' or 'sampler@s' (plus 'positive')."""
    steps = sorted({sampler_key(s)[1] for s in series if "@" in s and sampler_key(s)[1] >= 0})
    return {s: TRAIN_POS_COLOR if s == "positive" else sampler_style(s, steps)[0] for s in series}


def rgba(color: str, alpha: float) -> str:
    c = color.lstrip("#")
    if len(c) != 6:
        return color
    return f"rgba({int(c[0:2], 16)}, {int(c[2:4], 16)}, {int(c[4:6], 16)}, {alpha})"
