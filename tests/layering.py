"""The pack's import graph, read from the source with ``ast`` (nothing is imported): which module imports which,
and which names. Used by ``tests/test_layering.py``."""
from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("wan", "nodes", "workflows")
HOST_MODULES = ("comfy", "comfy_extras", "comfy_api", "folder_paths", "server", "execution", "node_helpers")


@dataclass(frozen=True)
class Edge:
    source: str  # importing module, dotted from the pack root ("wan.dit.model")
    target: str  # imported module ("wan.weights.ops"), or the top name of an outside one ("torch")
    names: tuple[str, ...]  # names taken from it (empty for ``import x``)
    line: int


def module_name(path: Path, root: Path = ROOT) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def pack_modules(root: Path = ROOT) -> dict[str, Path]:
    """Every module of the pack's packages, by dotted name."""
    found = {}
    for package in PACKAGES:
        for path in sorted((root / package).rglob("*.py")):
            if "__pycache__" not in path.parts:
                found[module_name(path, root)] = path
    return found


def _absolute(source: str, is_package: bool, level: int, module: str | None) -> str:
    base = source.split(".") if is_package else source.split(".")[:-1]
    if level > 1:
        base = base[: len(base) - (level - 1)]
    return ".".join(base + ([module] if module else []))


def imports_of(name: str, path: Path, modules: dict[str, Path]) -> list[Edge]:
    """The imports in one file, wherever they stand (module level or inside a function), resolved to modules:
    ``from .x import y`` names the module ``x``, or ``x.y`` when ``y`` is itself a module. The pack's own modules
    are named without the mangled prefix ComfyUI gives the pack (``..wan.x`` from ``nodes`` is ``wan.x``)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    is_package = path.name == "__init__.py"
    edges = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            edges += [Edge(name, alias.name, (), node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level == 0:
                target = node.module or ""
                sibling = f"{name.rsplit('.', 1)[0]}.{target}"  # a script's neighbour on sys.path (workflows/)
                if sibling in modules and not is_package:
                    target = sibling
            else:
                target = _absolute(name, is_package, node.level, node.module)
                if target == "" or target.split(".")[0] not in PACKAGES:
                    target = target.split(".", 1)[1] if "." in target else target
            for alias in node.names:
                child = f"{target}.{alias.name}" if target else alias.name
                if child in modules:
                    edges.append(Edge(name, child, (), node.lineno))
                else:
                    edges.append(Edge(name, target, (alias.name,), node.lineno))
    return edges


def import_graph(root: Path = ROOT) -> tuple[dict[str, Path], list[Edge]]:
    modules = pack_modules(root)
    edges = [edge for name, path in modules.items() for edge in imports_of(name, path, modules)]
    return modules, edges


def cycles(modules, edges) -> list[list[str]]:
    """Strongly connected groups of more than one module (Tarjan), each as a sorted list of names."""
    graph = {name: set() for name in modules}
    for edge in edges:
        if edge.target in modules and edge.target != edge.source:
            graph[edge.source].add(edge.target)
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                found.append(sorted(group))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found
