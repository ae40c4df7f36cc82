"""What a workflow spec is made of (``specs.py`` writes them, ``build.py`` turns them into UI and API files)."""
from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class N:
    """One node of a spec: ``links`` maps an input to (source key, output index)."""

    key: str
    type: str
    widgets: dict = field(default_factory=dict)
    links: dict = field(default_factory=dict)
    title: str | None = None


@dataclass
class Spec:
    name: str  # file stem
    title: str
    note: str  # markdown: which files go where
    nodes: list[N]
