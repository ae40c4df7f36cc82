"""The CUDA transfer logic of block streaming (side stream, pinned staging, events), run on the CPU with a stand-in
for the CUDA calls that records them.

Oracle: the ordering rules worked out by hand for a two-slot ring (slot = k % 2 for the k-th streamed block):
the compute stream waits for a block's copy before the block runs; a copy into a slot waits (on the side stream) for
the event the compute stream recorded after the block that used the slot before; a staging buffer is refilled only
after the host has waited for its previous copy. Results are bit-equal to the unstreamed model (the copies are
plain CPU copies here).
"""
from __future__ import annotations

from contextlib import contextmanager
from itertools import count

import pytest
import torch

from test_offload_streaming import model_inputs, streaming, tiny_model
from wan.memory import offload
from wan.memory.place import residency
from wan.memory.transfers import CudaTransfers


class FakeCuda:
    """Streams and events that only write down what was asked of them."""

    def __init__(self):
        self.log: list[tuple] = []
        self.ids = count()
        self.compute = self.stream("cpu", name="compute")

    def stream(self, device, name="side"):
        api = self

        class Stream:
            def wait_event(self, event):
                api.log.append(("wait", name, event.id))

            def synchronize(self):
                api.log.append(("sync", name))

        return Stream()

    def event(self):
        api, ident = self, next(self.ids)

        class Event:
            id = ident

            def record(self, stream):
                api.log.append(("record", ident, "compute" if stream is api.compute else "side"))

            def synchronize(self):
                api.log.append(("host-wait", ident))

        return Event()

    def current_stream(self, device):
        return self.compute

    @contextmanager
    def use(self, stream):
        self.log.append(("enter", "side"))
        yield
        self.log.append(("exit", "side"))

    @staticmethod
    def pinned(nbytes):
        return torch.empty(nbytes, dtype=torch.uint8)


@pytest.fixture
def fake(monkeypatch):
    api = FakeCuda()
    monkeypatch.setattr(offload, "make_transfers", lambda device, capacity: CudaTransfers(device, capacity, api=api))
    monkeypatch.setattr(offload.BlockStream, "on_event", lambda self, kind, i: api.log.append((kind, i)))
    return api


def _recorded(log, where):
    return {e[1]: n for n, e in enumerate(log) if e[0] == "record" and e[2] == where}


@torch.no_grad()
def test_cuda_transfers_order_copies_and_compute_with_events(fake):
    model = streaming(tiny_model(), 4)
    for i, block in enumerate(model.blocks):
        block.register_forward_pre_hook(lambda m, _, i=i: fake.log.append(("run", i)))
        block.register_forward_hook(lambda m, _, __, i=i: fake.log.append(("ran", i)))
    x, t, ctx = model_inputs()
    outs = [model(x, t, ctx) for _ in range(2)]
    ref = tiny_model()(x, t, ctx)
    assert all(torch.equal(o, ref) for o in outs)

    log = fake.log
    side, compute = _recorded(log, "side"), _recorded(log, "compute")
    prefetches = [n for n, e in enumerate(log) if e[0] == "prefetch"]
    runs = [n for n, e in enumerate(log) if e[0] == "run"]
    assert len(prefetches) == len(runs) == 8  # 4 blocks x 2 forwards, all streamed
    copied = []  # per prefetch: the side-stream event its copy recorded
    for p in prefetches:
        before = [e for e in log[:p] if e[0] == "record" and e[2] == "side"]
        copied.append(before[-1][1])
    for k, (p, r) in enumerate(zip(prefetches, runs)):
        # the compute stream waits for this block's copy before the block runs
        waits = [n for n, e in enumerate(log[:r]) if e == ("wait", "compute", copied[k])]
        assert waits and waits[-1] > side[copied[k]]
        if k >= 2:  # the slot was used by the block k - 2: its copy waits for that block's compute
            start = max(n for n, e in enumerate(log[:p]) if e == ("enter", "side"))
            wait = next(e for e in log[start:p] if e[0] == "wait" and e[1] == "side")
            freed = wait[2]
            assert compute[freed] > runs[k - 2]  # recorded after block k - 2 was issued
            assert ("host-wait", copied[k - 2]) in log[prefetches[k - 1]:p]  # staging buffer reused after its copy


@torch.no_grad()
def test_closing_waits_for_the_side_stream_and_frees_the_buffers(fake):
    model = streaming(tiny_model(), 2)
    model(*model_inputs())
    stream = residency(model).stream
    assert stream.device_bytes == 2 * stream.capacity
    residency(model).unload()
    assert ("sync", "side") in fake.log
    assert stream.transfers is None
