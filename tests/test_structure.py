"""The engine never imports Streamlit and never prints outside the CLI."""
import ast
import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]


def test_core_does_not_import_streamlit():
    code = ("import sys, cnsdiff_core, cnsdiff_core.train, cnsdiff_core.runs, cnsdiff_core.data, "
            "cnsdiff_core.projection; sys.exit(1 if 'streamlit' in sys.modules else 0)")
    assert subprocess.run([sys.executable, "-c", code], cwd=ROOT).returncode == 0
    for path in (ROOT / "cnsdiff_core").rglob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                names = [a.name for a in node.names] + [getattr(node, "module", "") or ""]
                assert not any(n.startswith("streamlit") for n in names), path


def test_only_the_cli_prints():
    for path in (ROOT / "cnsdiff_core").rglob("*.py"):
        if path.name in ("cli.py",):
            continue
        tree = ast.parse(path.read_text())
        calls = [n for n in ast.walk(tree) if isinstance(n, ast.Call) and getattr(n.func, "id", "") == "print"]
        assert not calls, f"{path} prints"
