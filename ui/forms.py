"""The Train form: every setting describes itself (cnsdiff_core.settings), so its group is the
form's expander, its help the widget's help, its choices a select box; settings with form=False
come from the sidebar or widgets of their own (FORM_EXCLUDED). Other pages fill the form in
(`prefill_train_form`) and the one-click demo has its configs here."""
from __future__ import annotations

import os
from typing import Any

import streamlit as st

from cnsdiff_core.config import PRESETS, ConfigError, TrainConfig, parse_set_args, preset_config, settings_info
from cnsdiff_core.samplers import METHOD, UNIFORM

from .data import DEFAULT_DATASET

SETTINGS = {d.name: d for d in settings_info()}
FORM_EXCLUDED = tuple(name for name, d in SETTINGS.items() if not d.form)
KEY_TRAIN_PREFILL = "_train_prefill"  # {field: value} the Train form takes over on its next render
MAX_SEEDS = 10
PRESET_TEXT = {"paper": "paper: the method as published (shows the trap)",
               "reference": "reference: the published code's behaviour",
               "tuned": "tuned: what IID validation picked (default)",
               "demo": "demo: small and fast on a laptop CPU", "custom": "custom: engine defaults"}


def form_groups() -> dict[str, list[str]]:
    """{group: [setting, ...]} of every setting the form shows, in GROUPS order."""
    out: dict[str, list[str]] = {}
    for name, d in SETTINGS.items():
        if d.form:
            out.setdefault(d.group or "Other settings", []).append(name)
    return out


def widget_key(name: str) -> str:
    return f"cfg_{name}"


def base_config(preset: str) -> TrainConfig:
    return preset_config(preset) if preset in PRESETS else TrainConfig(preset="custom")


def form_value(cfg: TrainConfig, name: str) -> Any:
    """A field's value as its form widget holds it (floats and tuples as text)."""
    value = getattr(cfg, name)
    typ = SETTINGS[name].type
    if typ == "float":
        return f"{value:g}"
    if typ.startswith("tuple"):
        return ",".join(str(v) for v in value)
    return value


def fill_from_preset() -> None:
    """Every setting widget takes the chosen preset's value (the preset box's on_change)."""
    cfg = base_config(st.session_state["train_preset"])
    for group in form_groups().values():
        for name in group:
            st.session_state[widget_key(name)] = form_value(cfg, name)


def take_prefill() -> dict | None:
    """Fill the form from the preset on first render, then take over values another page left
    (prefill_train_form); returns those values, None without any."""
    st.session_state.setdefault("train_preset", "tuned")
    if any(widget_key(n) not in st.session_state for g in form_groups().values() for n in g):
        fill_from_preset()
    prefill = st.session_state.pop(KEY_TRAIN_PREFILL, None)
    for name, value in (prefill or {}).items():
        if name in SETTINGS and SETTINGS[name].form:
            st.session_state[widget_key(name)] = value
    return prefill


def settings_widgets() -> dict[str, Any]:
    """One expander per group, one widget per setting (inside an st.form); returns their values."""
    for i, (group, names) in enumerate(form_groups().items()):
        with st.expander(group, expanded=i == 0):
            cols = st.columns(4)
            for j, name in enumerate(names):
                col, key, about = cols[j % 4], widget_key(name), SETTINGS[name]
                hint = about.help + (f" ({about.allowed()})" if about.allowed() else "")
                if about.choices is not None:
                    col.selectbox(name, about.choices, key=key, help=hint, persist_state="session")
                elif about.type == "bool":
                    col.checkbox(name, key=key, help=hint, persist_state="session")
                elif about.type == "int":
                    col.number_input(name, step=1, key=key, help=hint, persist_state="session")
                else:  # floats and the epoch list as text: exact values (1e-6) and clear errors
                    col.text_input(name, key=key, persist_state="session", help=hint)
    return {name: st.session_state[widget_key(name)] for g in form_groups().values() for name in g}


def build_configs(preset: str, samplers: list[str], values: dict[str, Any], dataset: str,
                  shift: str | None, device: str, seeds: int = 1) -> list[TrainConfig]:
    """One TrainConfig per sampler and seed from the form's values (seeds seed, seed+1, ...).
    Raises ConfigError (one sentence). The run is labelled with the preset when every value
    equals the preset's, else 'custom'."""
    if not samplers:
        raise ConfigError("no sampler is selected; pick at least one sampler to train.")
    if not 1 <= int(seeds) <= MAX_SEEDS:
        raise ConfigError(f"seeds={seeds} is out of range; train 1 to {MAX_SEEDS} seeds per sampler.")
    base = base_config(preset)
    cfg = base.with_updates(dataset=dataset, shift=shift, device=device, **values)
    same = all(getattr(cfg, k) == getattr(base, k) for k in values)
    label = preset if (same and preset in PRESETS) else "custom"
    return [cfg.with_updates(sampler=s, preset=label, seed=cfg.seed + k) for s in samplers for k in range(int(seeds))]


def prefill_train_form(updates: dict[str, Any]) -> None:
    """Let another page (e.g. the schedule lab) fill in Train form settings; then switch to Train."""
    st.session_state[KEY_TRAIN_PREFILL] = {k: form_value(TrainConfig().with_updates(**{k: v}), k)
                                           for k, v in updates.items()}


def demo_configs() -> list[TrainConfig]:
    """The one-click demo: the method (preset demo) and the uniform baseline on the sample world,
    its default shift. CNSDIFF_DEMO_SET overrides settings (`key=value,...` as in --set)."""
    overrides = parse_set_args([p for p in os.environ.get("CNSDIFF_DEMO_SET", "").split(",") if p.strip()])
    return [preset_config("demo", dataset=DEFAULT_DATASET, sampler=s, **overrides) for s in (METHOD, UNIFORM)]
