"""The engine's layering, read from the source (tests/layering.py): no import cycles between the pack's modules,
no module taking another's private (``_name``) names, ``wan/`` never importing ``nodes/`` or ComfyUI, a small
top level whose subpackages say what they hold, and the public API of ``wan/__init__.py`` intact."""
from __future__ import annotations

import ast
import importlib

import pytest

from layering import HOST_MODULES, ROOT, cycles, import_graph, imports_of, module_name, pack_modules

MODULES, EDGES = import_graph()


def test_no_import_cycles():
    assert cycles(MODULES, EDGES) == []


def test_a_cycle_is_found(tmp_path):
    """The check itself: two modules importing each other (one inside a function) form a cycle."""
    (tmp_path / "wan" / "sub").mkdir(parents=True)
    (tmp_path / "wan" / "__init__.py").write_text("")
    (tmp_path / "wan" / "sub" / "__init__.py").write_text("")
    (tmp_path / "wan" / "a.py").write_text("from .sub.b import thing\n")
    (tmp_path / "wan" / "sub" / "b.py").write_text("def thing():\n    from .. import a\n")
    modules, edges = import_graph(tmp_path)
    assert cycles(modules, edges) == [["wan.a", "wan.sub.b"]]


def test_engine_never_imports_nodes_or_comfyui():
    bad = [e for e in EDGES if e.source.split(".")[0] == "wan"
           and e.target.split(".")[0] in ("nodes", *HOST_MODULES)]
    assert bad == []


def _private(name: str) -> bool:
    return name.startswith("_") and not name.startswith("__")


def test_no_private_names_across_modules():
    """Neither ``from .x import _name`` nor ``x._name`` on an imported pack module."""
    taken = [e for e in EDGES if e.target in MODULES and e.target != e.source and any(map(_private, e.names))]
    assert taken == []
    reached = []
    for name, path in MODULES.items():
        tree = ast.parse(path.read_text())
        aliases = {}  # local name -> pack module, for ``from . import host`` and ``import wan.x as y``
        for edge in imports_of(name, path, MODULES):
            if edge.target in MODULES and not edge.names:
                aliases[edge.target.rsplit(".", 1)[-1]] = edge.target
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                aliases.update({a.asname: a.name for a in node.names if a.asname and a.name in MODULES})
        for node in ast.walk(tree):
            if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and _private(node.attr)
                    and aliases.get(node.value.id, name) != name):
                reached.append(f"{name}:{node.lineno} {node.value.id}.{node.attr}")
    assert reached == []


def test_top_level_is_a_few_public_concepts():
    top = sorted(p.stem for p in (ROOT / "wan").glob("*.py") if p.stem != "__init__")
    assert len(top) <= 12, top


@pytest.mark.parametrize("package", sorted(n for n, p in pack_modules().items()
                                           if p.name == "__init__.py" and n.startswith("wan.")))
def test_every_subpackage_says_what_it_holds_and_may_import(package):
    doc = ast.get_docstring(ast.parse(MODULES[package].read_text())) or ""
    assert len(doc) > 40 and "import" in doc, f"{package}/__init__.py: docstring must say what it holds and may import"


def test_public_api_resolves():
    """Every name ``wan/__init__.py`` exports resolves to an object of that name (not to a subpackage that shadows
    it: ``wan.run`` is the function, the whole-run modules live in ``wan.runner``)."""
    import wan

    for name in wan.__all__:
        value = getattr(wan, name)
        assert getattr(value, "__name__", name) == name or not callable(value) or name == "VARIANTS", name
    importlib.import_module("wan.runner.pipeline")
    assert callable(wan.run) and wan.run.__module__ == "wan.runner.tasks"
    assert module_name(ROOT / "wan" / "runner" / "tasks.py") == "wan.runner.tasks"
