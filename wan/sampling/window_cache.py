"""One step-cache state per context window.

A step cache remembers, per CFG branch, the residual of the blocks from the last computed step and decides from
its own accumulators whether the next call may reuse it. With context windows each window is a different input,
so each gets its own copy of the policy (same settings, its own state and decisions); the denoise loop talks to
``WindowCaches`` as to one cache, and the windowed velocity asks it for the window's copy.

Copies are shallow: the protocol's ``begin`` gives a policy fresh per-run state, so a copy made before ``begin``
shares only read-only settings and tables with the original.
"""
from __future__ import annotations

import copy

from ..cache.base import CacheReport


class WindowCaches:
    def __init__(self, policy):
        self.policy = policy
        self.timesteps: list[float] = []
        self.experts = None
        self.copies: dict[int, object] = {}

    def begin(self, timesteps, experts) -> None:
        self.timesteps, self.experts = list(timesteps), experts
        self.copies = {}

    def window(self, k: int):
        """The cache of window ``k`` (started on first use)."""
        if k not in self.copies:
            policy = copy.copy(self.policy)
            policy.begin(timesteps=self.timesteps, experts=self.experts)
            self.copies[k] = policy
        return self.copies[k]

    def end(self):
        """One report with a line per window and branch (``window k cond``), or the policies' own results."""
        reports = {k: c.end() for k, c in sorted(self.copies.items())}
        if not reports or not all(isinstance(r, CacheReport) for r in reports.values()):
            return list(reports.values())
        first = next(iter(reports.values()))
        merged = CacheReport(f"{first.policy}, one state per context window ({len(reports)})", first.steps)
        for k, report in reports.items():
            for source, target in ((report.computed, merged.computed), (report.reused, merged.reused)):
                target.update({f"window {k} {branch}": steps for branch, steps in source.items()})
        return merged
