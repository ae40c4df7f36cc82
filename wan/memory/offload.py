"""Block streaming: run a DiT whose transformer blocks do not all fit on the GPU.

With ``offload_blocks`` = N (a loader setting), the last N transformer blocks stay on the offload device (memory-mapped
from the file) and each is brought to the GPU just before it runs, while the previous block computes, and dropped
after it ran; the embeddings, the head and the other blocks stay on the GPU for the whole run. A streamed block
travels as it is stored: fp8 or quantised weights with their scale buffers, and LoRA patches applied on the fly
(``wan.weights.ops.Linear``). Weights are read-only, so nothing is ever copied back: the block's own tensors are swapped in
again (``wan.memory.swap``). ``offload_blocks`` = "auto" (-1 in the nodes) picks N when the model first runs, from
the free GPU memory and the latent size, and says in the log what it picked.

The placement (``wan.sampling.placement``) puts a streaming model on the GPU without its blocks; ``streamed`` (called
by ``WanDiT.run_blocks``) settles N on the first forward, places the resident blocks and streams the others. Costs:
two block-sized buffers on the GPU and two pinned ones in RAM (``wan.memory.transfers``); no copy of the weights.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Iterable, Iterator

import torch
import torch.nn as nn

from ..errors import InputError
from .place import GiB, free_bytes, memory_host, placed, residency
from .swap import TensorSwap, slots_of, unique_tensors
from .transfers import Layout, make_transfers

log = logging.getLogger("wan_experts")

AUTO = "auto"
RESERVE = GiB // 2  # kept free besides the estimate (allocator slack, other small buffers)
ACTIVATION_MARGIN = 1.25


@dataclass(frozen=True)
class BlockStreaming:
    """The setting: ``blocks`` = how many of the last blocks are streamed, None for auto."""

    blocks: int | None

    @property
    def auto(self) -> bool:
        return self.blocks is None

    def __str__(self) -> str:
        return AUTO if self.auto else str(self.blocks)


def parse_offload_blocks(value) -> BlockStreaming | None:
    """0 / None / "off": no streaming; N > 0: the last N blocks; -1 / "auto": chosen at run time."""
    if isinstance(value, str):
        value = value.strip().lower()
        value = int(value) if value.lstrip("-").isdigit() else value
    if value is None or value is False or value in (0, "", "off"):
        return None
    if value in (-1, AUTO):
        return BlockStreaming(None)
    if isinstance(value, int) and not isinstance(value, bool) and value > 0:
        return BlockStreaming(value)
    raise InputError(f"offload_blocks {value!r} is not understood: use 0 (off), a number of blocks to stream (1 up "
                     f"to the model's block count, e.g. 40 for the 14B models), or 'auto' (-1)")


def set_block_streaming(model: nn.Module, offload_blocks) -> None:
    """Turn block streaming on or off for ``model`` (a ``WanDiT``); it takes effect the next time it is placed."""
    setting = parse_offload_blocks(offload_blocks)
    total = len(model.blocks)
    if setting is not None and not setting.auto and setting.blocks > total:
        log.info("offload_blocks %d is more than the model's %d blocks: all of them are streamed", setting.blocks,
                 total)
        setting = BlockStreaming(total)
    model.__dict__["block_streaming"] = setting


def held_back(model: nn.Module) -> tuple[nn.Module, ...]:
    """What the placement leaves on the offload device: the blocks, when the model streams them."""
    return (model.blocks,) if getattr(model, "block_streaming", None) is not None else ()


def streamed(model: nn.Module, x: torch.Tensor) -> Iterable[nn.Module]:
    """The model's blocks in order, for ``run_blocks``: with block streaming, a placed model brings each streamed
    block to its device just before it runs (its first forward settles how many; ``x``: the tokens [B, L, C])."""
    if getattr(model, "block_streaming", None) is None or not placed(model):
        return model.blocks
    r = residency(model)
    if r.stream is None:
        r.stream = plan_stream(model, x.shape[0] * x.shape[1])
    return r.stream.run(model.blocks)


# -- how many blocks -------------------------------------------------------------------------------------------
def activation_bytes(config, tokens: int, dtype: torch.dtype) -> int:
    """A generous estimate of the memory one forward needs besides the weights, for ``tokens`` (batch x sequence):
    the float32 residual stream and its norms, then the larger of the attention part (q/k/v with their float32
    rotary copies) and the feed-forward part (its two hidden states), a per-token time embedding (TI2V-5B), and one
    layer's weight rebuilt in float32 (fp8, quantised or patched layers)."""
    c, f, b = config.dim, config.ffn_dim, torch.finfo(dtype).bits // 8
    attention = (16 + 4 * b) * c
    feed_forward = (8 + 2 * b) * c + 2 * b * f
    per_token = max(attention, feed_forward) + (2 * 6 * 4 * c if config.per_token_time else 0)
    return int(tokens * per_token * ACTIVATION_MARGIN) + 2 * 4 * f * c


def auto_offload_blocks(free: int, block_bytes: list[int], activations: int, reserve: int = RESERVE) -> int:
    """How many blocks (the last ones) to stream so that the others, two streaming buffers, the activations and
    ``reserve`` fit in ``free`` bytes; 0 when every block fits."""
    budget = free - activations - reserve
    if budget >= sum(block_bytes):
        return 0
    budget -= 2 * max(block_bytes)
    resident = 0
    for size in block_bytes:
        if size > budget:
            break
        budget -= size
        resident += 1
    return len(block_bytes) - resident


def block_layout(block: nn.Module) -> Layout:
    return Layout.of(unique_tensors(slots_of(block)))


def plan_stream(model: nn.Module, tokens: int) -> "BlockStream":
    """Settle N for a model just placed on its device, put the resident blocks there, and set up the stream."""
    r, setting = residency(model), model.block_streaming
    device, blocks = r.device, list(model.blocks)
    sizes = [block_layout(b).nbytes for b in blocks]
    act = activation_bytes(model.config, tokens, model.compute_dtype)
    if setting.auto:
        n = _auto(device, sizes, act, tokens)
    else:
        n = setting.blocks
        keep = len(blocks) - n
        memory_host().make_room(sum(sizes[:keep]) + 2 * max(sizes[keep:]) + act, device)
        log.info("Block streaming: the last %d of %d blocks are streamed to %s (%.2f GiB each)", n, len(blocks),
                 device, max(sizes) / GiB)
    for block in blocks[:len(blocks) - n]:
        r.add(block)
    streamed_sizes = sizes[len(blocks) - n:]
    return BlockStream(list(range(len(blocks) - n, len(blocks))), device, max(streamed_sizes, default=0))


def _auto(device: torch.device, sizes: list[int], act: int, tokens: int) -> int:
    memory_host().make_room(sum(sizes) + act + RESERVE, device)
    free = free_bytes(device)
    if free is None:
        log.info("Block streaming (auto): free memory on %s cannot be measured; no block is streamed", device)
        return 0
    n = auto_offload_blocks(free, sizes, act)
    log.info("Block streaming (auto): %d of %d blocks streamed, %d stay on %s (free %.1f GiB, %.2f GiB per block, "
             "activations ~%.1f GiB for %d tokens)", n, len(sizes), len(sizes) - n, device, free / GiB,
             max(sizes) / GiB, act / GiB, tokens)
    return n


# -- streaming -------------------------------------------------------------------------------------------------
class BlockStream:
    """Runs the blocks with the ``streamed`` ones (indices) brought in one at a time through two device slots: block
    k of the streamed order uses slot k % 2, and block k + 1 is copied into the other slot while block k runs."""

    def __init__(self, streamed: list[int], device: torch.device, capacity: int):
        self.streamed = streamed
        self.device = device
        self.capacity = capacity
        self.transfers = make_transfers(device, capacity) if streamed else None
        self.pending: dict[int, tuple[int, Layout, torch.Tensor]] = {}  # slot -> (block index, layout, buffer)
        self.attached: dict[int, tuple[TensorSwap, int]] = {}  # block index -> (its swap, its slot) while it runs
        self.peak_bytes = 0  # most bytes of streamed blocks on the device at once
        self.runs = 0

    @property
    def device_bytes(self) -> int:
        return self.transfers.device_bytes if self.transfers is not None else 0

    def on_event(self, kind: str, index: int) -> None:
        """Instrumentation hook: "prefetch", "attach" or "release" of block ``index``. Does nothing."""

    def run(self, blocks: nn.ModuleList) -> Iterator[nn.Module]:
        self._reset()
        self.runs += 1
        this_run = self.runs
        order = [i for i in self.streamed if i < len(blocks)]
        position = {i: k for k, i in enumerate(order)}
        if order:
            self._prefetch(blocks, order[0], 0)
        for i, block in enumerate(blocks):
            k = position.get(i)
            if k is None:
                yield block
                continue
            self._attach(block, i, k % 2)
            if k + 1 < len(order):
                self._prefetch(blocks, order[k + 1], (k + 1) % 2)
            try:
                yield block
            finally:
                if self.runs == this_run:  # a run abandoned earlier and closed late leaves the current one alone
                    self._release(i, k % 2)

    def close(self) -> None:
        self._reset()
        if self.transfers is not None:
            self.transfers.close()
            self.transfers = None

    def _prefetch(self, blocks, index: int, slot: int) -> None:
        layout = block_layout(blocks[index])
        if layout.nbytes > self.capacity:  # the block grew since the plan (e.g. patches added in place)
            self.transfers.close()
            self.capacity = layout.nbytes
            self.transfers = make_transfers(self.device, self.capacity)
        self.pending[slot] = (index, layout, self.transfers.copy_in(slot, layout))
        held = sum(lay.nbytes for _, lay, _ in self.pending.values())
        self.peak_bytes = max(self.peak_bytes, held)
        self.on_event("prefetch", index)

    def _attach(self, block: nn.Module, index: int, slot: int) -> None:
        pending_index, layout, buffer = self.pending[slot]
        assert pending_index == index, (pending_index, index)
        self.transfers.ready(slot)
        views = layout.views(buffer)
        self.attached[index] = (TensorSwap(slots_of(block), lambda t: views[id(t)]), slot)
        self.on_event("attach", index)

    def _release(self, index: int, slot: int) -> None:
        if index not in self.attached:
            return
        self._detach(index)
        self.pending.pop(slot, None)
        self.on_event("release", index)

    def _detach(self, index: int) -> None:
        swap, slot = self.attached.pop(index)
        swap.restore()
        self.transfers.release(slot)  # the slot is refilled only after the compute queued so far

    def _reset(self) -> None:
        """Forget a run that stopped half-way (an error or an interruption): every block gets its own tensors back."""
        for index in list(self.attached):
            self._detach(index)
        self.pending.clear()
