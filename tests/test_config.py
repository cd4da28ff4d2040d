import json

import pytest

from dataclasses import fields

from cnsdiff_core.config import (GROUPS, PRESETS, ConfigError, TrainConfig, help_text, parse_set_args, preset_config,
                                 settings_info)


def test_json_round_trip_keeps_every_field():
    cfg = preset_config("tuned", snapshot_epochs=(1, 5), lr=0.005)
    back = TrainConfig.from_json(cfg.to_json())
    assert back == cfg


def test_presets_differ_where_the_method_says():
    ref, paper, tuned = preset_config("reference"), preset_config("paper"), preset_config("tuned")
    assert ref.train_denoiser is False and ref.reverse_from_T and ref.selection == "ood-test"
    assert paper.train_denoiser and not paper.reverse_from_T and paper.selection == "iid-valid"
    assert paper.schedule == "linear-var" and paper.noise_scale == 0.1
    assert tuned.denoise_steps > 0 and tuned.schedule != paper.schedule or tuned.noise_scale != 0.1
    assert set(PRESETS) >= {"paper", "reference", "tuned", "demo"}


def test_paper_hardness_steps():
    assert TrainConfig().hardness_steps() == [10, 14, 18]
    cfg = TrainConfig(denoise_steps=3)
    assert [cfg.stop_for(s) for s in cfg.hardness_steps()] == [7, 11, 15]


def test_set_strings_are_coerced():
    cfg = TrainConfig().with_updates(**parse_set_args(["epochs=7", "train_denoiser=false", "lr=1e-3",
                                                       "snapshot_epochs=1,3"]))
    assert cfg.epochs == 7 and cfg.train_denoiser is False and cfg.lr == 1e-3 and cfg.snapshot_epochs == (1, 3)


@pytest.mark.parametrize("updates, match", [
    ({"sampler": "foo"}, "sampler='foo' is invalid"),
    ({"schedule": "quadratic"}, "schedule='quadratic' is invalid"),
    ({"epochs": 0}, "epochs=0 is invalid"),
    ({"beta_min": 0.5, "beta_max": 0.1}, "must not exceed beta_max"),
    ({"lr": "abc"}, "lr='abc' is not a valid float"),
    ({"lr": "nan"}, "lr='nan' is not a valid float"),
    ({"epochs": "1e30"}, "too large"),
    ({"hard_start": 30}, r"hard_start=30 is invalid"),
    ({"unknown_knob": 1}, "unknown setting 'unknown_knob'"),
    ({"train_denoiser": "maybe"}, "not a valid bool"),
])
def test_bad_values_name_the_field(updates, match):
    with pytest.raises(ConfigError, match=match):
        TrainConfig().with_updates(**updates)


def test_bad_set_syntax_and_json():
    with pytest.raises(ConfigError, match="has no '='"):
        parse_set_args(["epochs"])
    with pytest.raises(ConfigError, match="not valid JSON"):
        TrainConfig.from_json("{nope")
    with pytest.raises(ConfigError, match="must be an object"):
        TrainConfig.from_json(json.dumps([1, 2]))
    with pytest.raises(ConfigError, match="preset 'x' is unknown"):
        preset_config("x")


def test_an_enormous_value_is_cut_short_in_the_message():
    calls = [lambda: TrainConfig.from_json(json.dumps({"sampler": "x" * 5000})),
             lambda: TrainConfig.from_json(json.dumps({"test_eval": [{"a": ["b" * 50] * 20}]})),
             lambda: TrainConfig().with_updates(**{"y" * 3000: 1}),
             lambda: parse_set_args(["z" * 3000])]
    for call in calls:
        with pytest.raises(ConfigError) as info:
            call()
        assert len(str(info.value)) < 200 and "…" in str(info.value)


def test_every_setting_describes_itself():
    described = settings_info()
    assert [d.name for d in described] and {d.name for d in described} == {f.name for f in fields(TrainConfig)}
    for d in described:
        assert len(d.help) > 10 and d.group in GROUPS, d
        assert d.default == getattr(TrainConfig(), d.name)
        if d.choices is not None:
            assert d.default in d.choices
    text = "\n".join(help_text())
    for d in described:
        assert d.name in text and d.help in text
    assert "[one of linear, linear-var, cosine]" in text and "[in [0, 1]]" in text


@pytest.mark.parametrize("name, bad, match", [
    ("min_mix", 1.5, r"min_mix=1.5 is invalid: it must lie in \[0, 1\]"),
    ("denoiser_dropout", 1.0, r"it must lie in \[0, 1\)"),
    ("lr", 0.0, "it must be a positive number"),
    ("layers", -1, "it must be an integer >= 0"),
    ("env_kind", "weekday", "use one of auto, time, popularity"),
])
def test_bounds_and_choices_come_from_the_settings_metadata(name, bad, match):
    with pytest.raises(ConfigError, match=match):
        TrainConfig().with_updates(**{name: bad})
