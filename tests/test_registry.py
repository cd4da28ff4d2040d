"""The sampler registry: every file in cnsdiff_core/samplers/ is one sampler, found by a scan; a new
file is a new sampler everywhere (CLI, config, app, experiment, bundle) with no other edit."""
from __future__ import annotations

import ast
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from cnsdiff_core.config import ConfigError, TrainConfig
from cnsdiff_core.samplers import (BASELINES, LABELS, METHOD, PROBED, REGISTRY, SAMPLERS, SYNTHESIZING, UNIFORM,
                                   WITH_DENOISER, make_sampler, sampler_class)

ROOT = Path(__file__).resolve().parents[1]
SAMPLER_DIR = ROOT / "cnsdiff_core" / "samplers"


def test_every_sampler_file_is_found_and_describes_itself():
    files = {p.stem for p in SAMPLER_DIR.glob("*.py")} - {"__init__", "base", "registry"}
    assert {sys.modules[c.__module__].__file__.rsplit("/", 1)[-1][:-3] for c in REGISTRY.values()} == files
    assert SAMPLERS == tuple(sorted(REGISTRY, key=lambda n: REGISTRY[n].order))
    for name, cls in REGISTRY.items():
        assert cls.name == name and LABELS[name] == cls.label and cls.label
        assert cls.color.startswith("#") and len(cls.color) == 7 and cls.marker
        assert (name in SYNTHESIZING) == cls.synthesizes and (name in WITH_DENOISER) == cls.has_denoiser
    assert METHOD in WITH_DENOISER and METHOD not in BASELINES and UNIFORM in BASELINES
    # the method needs its trained denoiser, so it is measured on the probe only when it is trained
    assert METHOD not in PROBED and set(PROBED) | {METHOD} == set(SAMPLERS)
    # layer-mixing samplers last: the order in which the probe draws from the RNG
    assert [REGISTRY[n].needs_layers for n in PROBED] == sorted(REGISTRY[n].needs_layers for n in PROBED)


def test_a_samplers_own_settings_are_config_fields_with_help_and_bounds():
    owned = [(cls, key) for cls in REGISTRY.values() for key in cls.settings]
    assert owned, "the baselines declare their knobs in their own files"
    for cls, key in owned:
        f = TrainConfig.__dataclass_fields__[cls.field(key)]
        assert f.metadata["help"] and f.metadata["group"]
    cfg = TrainConfig().with_updates(**{cls.field(key): "3" for cls, key in owned if cls.settings[key].default == 32})
    for cls, key in owned:
        if cls.settings[key].default == 32:
            assert getattr(cfg, cls.field(key)) == 3
            assert make_sampler(cls.name, cfg, torch.device("cpu")).opts.__dict__[key] == 3
    first_int = next((cls, key) for cls, key in owned if isinstance(cls.settings[key].default, int))
    with pytest.raises(ConfigError, match=f"{first_int[0].field(first_int[1])}=0 is invalid"):
        TrainConfig().with_updates(**{first_int[0].field(first_int[1]): 0})
    with pytest.raises(ConfigError, match="sampler 'nope' is unknown"):
        sampler_class("nope")


def _literal_files(name: str) -> set[str]:
    """Non-test source files holding the sampler's name as a string (a name, 'name@step' or a
    comma-separated list naming it); docstrings are prose, not literals."""
    out = set()
    for path in ROOT.rglob("*.py"):
        rel = path.relative_to(ROOT)
        if rel.parts[0] in ("tests", ".venv", "test-artifacts") or "site-packages" in rel.parts:
            continue
        tree = ast.parse(path.read_text())
        docs = {id(n.body[0].value) for n in ast.walk(tree)
                if isinstance(n, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and n.body
                and isinstance(n.body[0], ast.Expr) and isinstance(n.body[0].value, ast.Constant)}
        for node in ast.walk(tree):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docs:
                v = node.value
                if v == name or v.startswith(name + "@") or name in [p.strip() for p in v.split(",")]:
                    out.add(str(rel))
    return out


@pytest.mark.parametrize("name", SAMPLERS)
def test_a_samplers_name_is_written_in_at_most_two_source_files(name):
    files = _literal_files(name)
    assert len(files) <= 2, files
    assert str(Path(sys.modules[REGISTRY[name].__module__].__file__).relative_to(ROOT)) in files


def _copy_project(dest: Path) -> Path:
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for entry in ("cnsdiff_core", "ui", "pages", "sample_data", ".streamlit"):
        if (ROOT / entry).exists():
            shutil.copytree(ROOT / entry, dest / entry, ignore=ignore)
    for f in ROOT.glob("*.py"):
        shutil.copy2(f, dest / f.name)
    return dest


def test_a_copied_sampler_file_is_a_new_sampler_everywhere(tmp_path):
    """Copy the DNS file under a new name in a copy of the project: it trains from the CLI with its
    own setting, and the app's Train form, chart colours and the bundle's plan know it."""
    proj = _copy_project(tmp_path / "proj")
    src = (SAMPLER_DIR / f"{sampler_class('dns').__module__.rsplit('.', 1)[-1]}.py").read_text()
    new = (src.replace('name = "dns"', 'name = "hardest"').replace("order = 30", "order = 35")
           .replace('role = "hard"', 'role = "baseline"').replace('"#009E73"', '"#123456"')
           .replace('"DNS (hardest of M)"', '"Hardest (a copy of DNS)"'))
    assert new.count("hardest") >= 1 and '"#123456"' in new
    (proj / "cnsdiff_core" / "samplers" / "hardest.py").write_text(new)
    env = {**os.environ, "CNSDIFF_RUNS": str(tmp_path / "runs"), "PYTHONPATH": str(proj)}
    env.pop("CNSDIFF_READ_ONLY", None)

    def run(*args, **kw):
        return subprocess.run([sys.executable, *args], cwd=proj, env=env, capture_output=True, text=True,
                              timeout=600, **kw)

    out = run("-m", "cnsdiff_core", "train", "--dataset", "sample", "--sampler", "hardest", "--preset", "demo",
              "--epochs", "1", "--device", "cpu", "--set", "probe_triples=50", "--set", "hardest_candidates=4",
              "--json")
    assert out.returncode == 0, out.stderr[-2000:]
    summary = json.loads(out.stdout.strip().splitlines()[-1])
    assert summary["sampler"] == "hardest" and summary["status"] == "finished"
    stored = json.loads((tmp_path / "runs" / summary["run_id"] / "config.json").read_text())
    assert stored["hardest_candidates"] == 4 and stored["dns_candidates"] == 32
    helps = run("-m", "cnsdiff_core", "train", "--help-settings")
    assert "hardest_candidates" in helps.stdout

    probe = r"""
import json
from streamlit.testing.v1 import AppTest
at = AppTest.from_file("app.py", default_timeout=120)
at.run()
at.switch_page("pages/3_train.py").run()
options = list(at.multiselect(key="train_samplers").options)
from cnsdiff_core.bundle import bundle_plan
from cnsdiff_core.experiment import ROW_ORDER
from ui.theme import sampler_color, sampler_style
style = sampler_style("hardest", [])
print(json.dumps({"options": options, "color": sampler_color("hardest"), "style": list(style),
                  "exceptions": [str(e.value) for e in at.exception], "rows": list(ROW_ORDER),
                  "plan": sorted({p.sampler for p in bundle_plan()})}))
"""
    out = run("-c", probe)
    assert out.returncode == 0, out.stderr[-2000:]
    seen = json.loads(out.stdout.strip().splitlines()[-1])
    assert not seen["exceptions"], seen["exceptions"]
    assert any("Hardest" in o or o == "hardest" for o in seen["options"]), seen["options"]
    assert seen["color"] == "#123456" and seen["style"] == ["#123456", "triangle-up"]
    assert "hardest" in seen["rows"] and "hardest" in seen["plan"]
