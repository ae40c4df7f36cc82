"""Peak memory of real module code without running it: the live tensors of a forward pass on the meta device.

``LiveTensors`` is a dispatch mode that sees every tensor an operator returns, counts each storage once while any
tensor that uses it is alive (views share their base's storage) and records the peak. Storages made before the
trace (weights, inputs) are never counted, not even through views of them such as a transposed weight. On the
meta device nothing is computed, so a full-size 14B block at 720p traces in about a second. This is the independent
measurement the memory budget (``wan/budget/check.py``) is checked against: it counts what the modules allocate, without
allocator slack.
"""
from __future__ import annotations

import weakref

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten


class LiveTensors(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.bytes: dict[int, int] = {}
        self.refs: dict[int, int] = {}
        self.now = self.peak = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        given = {_key(t) for t in tree_flatten((args, kwargs))[0] if isinstance(t, torch.Tensor)}
        for t in tree_flatten(out)[0]:
            if isinstance(t, torch.Tensor) and (_key(t) in self.bytes or _key(t) not in given):
                self._track(t)
        return out

    def _track(self, t: torch.Tensor) -> None:
        key = _key(t)
        if key not in self.bytes:
            self.bytes[key], self.refs[key] = t.untyped_storage().nbytes(), 0
            self.now += self.bytes[key]
            self.peak = max(self.peak, self.now)
        self.refs[key] += 1
        weakref.finalize(t, self._release, key)

    def _release(self, key: int) -> None:
        self.refs[key] -= 1
        if self.refs[key] == 0:
            self.now -= self.bytes.pop(key)
            del self.refs[key]


def _key(t: torch.Tensor) -> int:
    return t.untyped_storage()._cdata


def flat_attention(q, k, v):
    """Attention output of the right shape without the L x L scores (fused kernels keep O(L) workspace)."""
    return q.new_empty(q.shape[0], q.shape[1], q.shape[2] * q.shape[3])


@torch.no_grad()
def traced_peak(fn) -> int:
    """Peak bytes of the tensors created while ``fn()`` runs (inputs made before are not counted)."""
    with LiveTensors() as trace:
        fn()
    return trace.peak
