"""Registry readiness: the fields the Comfy Registry reads from pyproject.toml are complete and valid, and the pack
passes what ``comfy node validate`` (comfy-cli) checks.

Rules from the Registry's pyproject specification (docs.comfy.org/registry/specifications) and comfy-cli
(``comfy_cli/registry/config_parser.py``: the fields it reads; ``comfy_cli/command/custom_nodes/command.py``,
``validate_node_for_publishing``: a non-empty version, then ruff's S102 / S307 / E702 on the sources):
- [project] ``name``: under 100 characters, letters, digits and single ``-_.`` between them, starting with a letter,
  without "ComfyUI"; ``version``: X.Y.Z; ``license`` ``{text = ...}`` or ``{file = ...}``; ``urls.Repository``.
- [tool.comfy] ``PublisherId`` (required), ``DisplayName``, ``Icon`` (a URL to an SVG, PNG, JPG or GIF of at most
  800 x 400 px), ``includes`` (folders always packed), ``requires-comfyui`` (a version specifier).
"""
import ast
import io
import re
import tokenize
import xml.etree.ElementTree as ET

import pytest

from conftest import ROOT

tomllib = pytest.importorskip("tomllib")

GITHUB = re.compile(r"^https://github\.com/(?P<owner>[A-Za-z0-9-]+)/(?P<repo>[A-Za-z0-9._-]+)$")
ICON_TYPES = (".svg", ".png", ".jpg", ".jpeg", ".gif")
ICON_MAX = (800, 400)
SKIPPED_DIRS = {"__pycache__", "output", "models", "node_modules"}  # ruff also skips hidden and ignored folders


@pytest.fixture(scope="module")
def pyproject():
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def test_project_fields(pyproject):
    project = pyproject["project"]
    name = project["name"]
    assert len(name) < 100 and re.fullmatch(r"[A-Za-z][A-Za-z0-9]*([-_.][A-Za-z0-9]+)*", name), name
    assert "comfyui" not in name.lower()
    assert re.fullmatch(r"\d+\.\d+\.\d+", project["version"]), project["version"]
    assert project["description"].strip() and project["requires-python"].startswith(">=")
    assert set(project["license"]) & {"text", "file"} and all(project["license"].values())
    assert GITHUB.match(project["urls"]["Repository"]), project["urls"]["Repository"]


def test_tool_comfy_fields(pyproject):
    from packaging.specifiers import SpecifierSet

    comfy = pyproject["tool"]["comfy"]
    assert re.fullmatch(r"[a-z0-9][a-z0-9-]*", comfy["PublisherId"]), comfy["PublisherId"]
    assert comfy["DisplayName"].strip() == "Wan Experts"
    assert "0.3.40" in SpecifierSet(comfy["requires-comfyui"])
    assert comfy["includes"] and all((ROOT / path).exists() for path in comfy["includes"]), comfy["includes"]
    placeholders = [k for k, v in comfy.items() if not v or re.search(r"TODO|<[^>]*>|example\.com", str(v))]
    assert not placeholders, f"placeholder values in [tool.comfy]: {placeholders}"


def test_icon_is_shipped_and_served_from_the_repository(pyproject):
    """The Icon URL is the raw file of the repository named in [project.urls] (so setting the repository is the one
    publishing step; this test says when the two disagree), and that file is in the pack, in a Registry format and
    size."""
    owner, repo = GITHUB.match(pyproject["project"]["urls"]["Repository"]).group("owner", "repo")
    prefix = f"https://raw.githubusercontent.com/{owner}/{repo}/main/"
    icon = pyproject["tool"]["comfy"]["Icon"]
    assert icon.startswith(prefix), f"Icon {icon} is not served from the repository ({prefix}...)"
    path = ROOT / icon[len(prefix):]
    assert path.is_file() and path.suffix.lower() in ICON_TYPES, path
    assert any(path.is_relative_to(ROOT / folder) for folder in pyproject["tool"]["comfy"]["includes"])
    root = ET.parse(path).getroot()
    width, height = float(root.get("width")), float(root.get("height"))
    assert 0 < width <= ICON_MAX[0] and 0 < height <= ICON_MAX[1], (width, height)
    assert root.get("viewBox") == f"0 0 {width:g} {height:g}"


def _python_files():
    """Every Python file ``ruff check .`` would read in the pack folder."""
    for path in sorted(ROOT.rglob("*.py")):
        parts = path.relative_to(ROOT).parts[:-1]
        if not any(p.startswith(".") or p in SKIPPED_DIRS for p in parts):
            yield path


def test_sources_pass_the_registry_security_rules():
    """What ``comfy node validate`` runs ruff for: no ``exec`` (S102) or ``eval`` (S307) call, no statements joined
    by a semicolon (E702)."""
    found = []
    for path in _python_files():
        text = path.read_text()
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in ("exec", "eval"):
                found.append(f"{path.relative_to(ROOT)}:{node.lineno}: {node.func.id}()")
        for tok in tokenize.generate_tokens(io.StringIO(text).readline):
            if tok.type == tokenize.OP and tok.string == ";":
                found.append(f"{path.relative_to(ROOT)}:{tok.start[0]}: ';' joins statements")
    assert not found, found
