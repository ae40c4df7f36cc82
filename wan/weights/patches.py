"""Weight patches: what an adapter (a LoRA, a full weight difference) does to one parameter.

The one rule every patch follows: it maps the real weight, in float32, to the patched weight in float32. The
additive kinds (low rank, full difference) add ``ΔW``, already multiplied by the user's strength; the LoRA scale
rule itself (``strength · alpha / rank``) lives in ``wan.lora``. LoKr / LoHa (LyCORIS) build a full ``ΔW`` from
their factors; a weight-decomposed patch (DoRA) rescales the rows or columns of the result. Patches are immutable:
moving one to another device gives a new patch.
"""
from __future__ import annotations

from dataclasses import dataclass, field, fields, replace

import torch


@dataclass(frozen=True)
class Patch:
    """Base class. ``apply`` maps the float32 weight to the patched float32 weight."""

    def apply(self, w: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def side(self, x: torch.Tensor) -> torch.Tensor | None:
        """The patch's contribution to a Linear's output for input ``x`` (x-space), or None when the patch has
        no such form (it must then be applied to the weight)."""
        return None

    def rows(self, start: int, stop: int, shape) -> "Patch | None":
        """The patch of rows ``start:stop`` of a weight of ``shape`` (applied to those rows alone, as a CPU forward
        rebuilds a patched weight a block of rows at a time), or None when a row needs the whole weight."""
        return None

    def side_cost(self) -> int | None:
        """Multiply-adds per input row of ``side``; None when there is no side form."""
        return None

    def add_side(self, y: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """``y + side(x)``; a patch may write it into ``y`` (a Linear's fresh output, never the caller's tensor)."""
        return y + self.side(x)

    def tensors(self) -> list[torch.Tensor]:
        return [getattr(self, f.name) for f in fields(self) if torch.is_tensor(getattr(self, f.name))]

    def moved(self, fn) -> "Patch":
        """The same patch with ``fn`` applied to its tensors (``Module._apply`` semantics: device moves)."""
        changes = {f.name: fn(getattr(self, f.name)) for f in fields(self) if torch.is_tensor(getattr(self, f.name))}
        return replace(self, **changes)

    @property
    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self.tensors())


@dataclass(frozen=True)
class LowRank(Patch):
    """``ΔW = scale · up @ down``; ``up`` [out, r, (1, 1, 1)], ``down`` [r, in, (kernel)] (Linear or Conv)."""

    up: torch.Tensor
    down: torch.Tensor
    scale: float
    # the scale as a 0-d float32 tensor: compiled code (wan.dit.compile) reads it as an input, so experts whose LoRA
    # scales differ, or a new strength, reuse one graph (a Python number would be a constant of the graph)
    scale_tensor: torch.Tensor | None = field(default=None, repr=False, compare=False)

    def __post_init__(self):
        if self.scale_tensor is None:
            object.__setattr__(self, "scale_tensor", torch.tensor(float(self.scale), dtype=torch.float32,
                                                                  device=self.up.device))

    def factors(self, device, dtype) -> tuple[torch.Tensor, torch.Tensor]:
        """``up`` [out, r] and ``down`` [r, in·kernel] as matrices in ``dtype`` on ``device``."""
        up = self.up.to(device=device, dtype=dtype)
        return up.reshape(up.shape[0], -1), self.down.to(device=device, dtype=dtype).reshape(self.down.shape[0], -1)

    def delta(self, shape, device) -> torch.Tensor:
        up, down = self.factors(device, torch.float32)
        return (up @ down).mul_(self._scale()).reshape(shape)

    def apply(self, w: torch.Tensor) -> torch.Tensor:
        return w + self.delta(w.shape, w.device)

    def side(self, x: torch.Tensor) -> torch.Tensor:
        up, down = self.factors(x.device, x.dtype)  # the scale goes on the small factor, not on the output
        return torch.nn.functional.linear(torch.nn.functional.linear(x, down), up * self._scale(x.dtype))

    def side_cost(self) -> int:
        return self.down[0].numel() * self.down.shape[0] + self.up.shape[0] * self.up.shape[1]

    def rows(self, start: int, stop: int, shape) -> "LowRank":
        return replace(self, up=self.up[start:stop])

    def add_side(self, y: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """The second product accumulates straight into ``y`` with the scale as its factor (one matrix product
        with accumulate: no output-sized temporary, no separate addition pass, no scaled copy of ``up``)."""
        if y.requires_grad or not y.is_contiguous() or torch.compiler.is_compiling():
            return super().add_side(y, x)
        up, down = self.factors(x.device, x.dtype)
        h = torch.nn.functional.linear(x, down)
        y.view(-1, y.shape[-1]).addmm_(h.reshape(-1, h.shape[-1]), up.t(), alpha=self.scale)
        return y

    @property
    def rank(self) -> int:
        return self.down.shape[0]

    def _scale(self, dtype: torch.dtype = torch.float32):
        """The scale: the Python number eagerly, the tensor in compiled code."""
        return self.scale_tensor.to(dtype) if torch.compiler.is_compiling() else self.scale


@dataclass(frozen=True)
class Full(Patch):
    """``ΔW = scale · diff`` (a full weight or bias difference, e.g. ``.diff`` / ``.diff_b`` / ``.diff_m`` keys)."""

    diff: torch.Tensor
    scale: float

    def apply(self, w: torch.Tensor) -> torch.Tensor:
        return w + self.diff.to(device=w.device, dtype=torch.float32).reshape(w.shape) * self.scale

    def rows(self, start: int, stop: int, shape) -> "Full":
        return replace(self, diff=self.diff.reshape(shape)[start:stop])


@dataclass(frozen=True)
class Kronecker(Patch):
    """LoKr (LyCORIS): ``ΔW = scale · kron(w1, w2)``; each factor is stored whole (``w1``) or as a low-rank product
    (``w1_a @ w1_b``)."""

    w1: torch.Tensor | None
    w1_a: torch.Tensor | None
    w1_b: torch.Tensor | None
    w2: torch.Tensor | None
    w2_a: torch.Tensor | None
    w2_b: torch.Tensor | None
    scale: float

    def apply(self, w: torch.Tensor) -> torch.Tensor:
        w1 = _factor(self.w1, self.w1_a, self.w1_b, w.device)
        w2 = _factor(self.w2, self.w2_a, self.w2_b, w.device)
        return w + torch.kron(w1, w2).mul_(self.scale).reshape(w.shape)


@dataclass(frozen=True)
class Hadamard(Patch):
    """LoHa (LyCORIS): ``ΔW = scale · (w1_a @ w1_b) ⊙ (w2_a @ w2_b)``."""

    w1_a: torch.Tensor
    w1_b: torch.Tensor
    w2_a: torch.Tensor
    w2_b: torch.Tensor
    scale: float

    def apply(self, w: torch.Tensor) -> torch.Tensor:
        m1 = _factor(None, self.w1_a, self.w1_b, w.device)
        m2 = _factor(None, self.w2_a, self.w2_b, w.device)
        return w + (m1 * m2).mul_(self.scale).reshape(w.shape)

    def rows(self, start: int, stop: int, shape) -> "Hadamard":
        return replace(self, w1_a=self.w1_a[start:stop], w2_a=self.w2_a[start:stop])


def _factor(whole, a, b, device) -> torch.Tensor:
    """A float32 factor: ``whole``, or the product ``a @ b``."""
    if whole is not None:
        return whole.to(device=device, dtype=torch.float32)
    a = a.to(device=device, dtype=torch.float32)
    return a.reshape(a.shape[0], -1) @ b.to(device=device, dtype=torch.float32).reshape(b.shape[0], -1)


@dataclass(frozen=True)
class Decomposed(Patch):
    """DoRA (weight-decomposed LoRA): ``V = W + ΔW`` (``inner`` built at strength 1) rescaled to the learned
    magnitude ``m`` (``dora_scale``): ``W' = m · V / ‖V‖``. The norm runs over each output row when ``m`` has one
    value per row (shape [out, 1, ...] or PEFT's [out]), else over each input column (shape [1, in, ...], LyCORIS'
    older default). The norm is that of ``V``, as LyCORIS and PEFT train it (ComfyUI takes the norm of ``W`` in the
    per-row case). The strength ``s`` blends as ComfyUI does: ``W + s · (W' − W)``, so 0 leaves ``W`` unchanged."""

    inner: Patch
    magnitude: torch.Tensor
    strength: float

    def apply(self, w: torch.Tensor) -> torch.Tensor:
        v = self.inner.apply(w)
        m = self.magnitude.to(device=w.device, dtype=torch.float32)
        if self.per_row(v.shape):  # norm over everything but the output row
            norm = v.reshape(v.shape[0], -1).norm(dim=1).reshape(-1, *([1] * (v.dim() - 1)))
        else:  # norm over the output rows, per input column (and kernel position)
            norm = v.transpose(0, 1).reshape(v.shape[1], -1).norm(dim=1)
            norm = norm.reshape(v.shape[1], *([1] * (v.dim() - 1))).transpose(0, 1)
        rescaled = v * (m.reshape(norm.shape) / (norm + torch.finfo(torch.float32).eps))
        return rescaled if self.strength == 1.0 else w + self.strength * (rescaled - w)

    def rows(self, start: int, stop: int, shape) -> "Decomposed | None":
        """Row by row only where the norm is per output row."""
        inner = self.inner.rows(start, stop, shape) if self.per_row(shape) else None
        return None if inner is None else Decomposed(inner, self.magnitude[start:stop], self.strength)

    def per_row(self, shape) -> bool:
        """One magnitude per output row ([out], [out, 1, ...]) rather than per input column ([1, in, ...])."""
        return self.magnitude.shape[0] == shape[0] and self.magnitude.numel() == shape[0]

    def tensors(self) -> list[torch.Tensor]:
        return self.inner.tensors() + [self.magnitude]

    def moved(self, fn) -> "Decomposed":
        return Decomposed(self.inner.moved(fn), fn(self.magnitude), self.strength)


def restricts_to_rows(patches, shape) -> bool:
    """Whether every patch of a weight of ``shape`` applies to a block of its rows alone (``Patch.rows``)."""
    return rows_of(patches, 0, 1, shape) is not None


def rows_of(patches, start: int, stop: int, shape) -> list[Patch] | None:
    """Each patch restricted to rows ``start:stop`` of a weight of ``shape``; None if one of them cannot be."""
    out = [patch.rows(start, stop, shape) for patch in patches]
    return None if any(p is None for p in out) else out


def apply_all(w: torch.Tensor, patches) -> torch.Tensor:
    """The patched weight: ``patches`` applied in order to the float32 weight ``w`` (a new tensor)."""
    out = w.float()
    for patch in patches:
        out = patch.apply(out)
    return out


MERGE_VALUES = 1 << 20  # float32 values (4 MiB) per block of rows of ``merged``


def merged(w: torch.Tensor, patches) -> torch.Tensor:
    """``apply_all(w, patches)`` stored in ``w``'s dtype. A matrix whose patches all restrict to rows
    (``Patch.rows``) is built a block of rows at a time straight into the result, each block exactly as the whole
    would be: no float32 copy of the whole weight (a 14B feed-forward weight: 283 MB of float32 and as much again
    for its difference, beside the result)."""
    step = max(1, MERGE_VALUES // max(1, w.shape[1])) if w.dim() == 2 else 0
    if not step or step >= w.shape[0] or not restricts_to_rows(patches, w.shape):
        return apply_all(w, patches).to(w.dtype)
    out = torch.empty_like(w, memory_format=torch.contiguous_format)
    for start, stop in even_blocks(w.shape[0], step):
        out[start:stop] = apply_all(w[start:stop], rows_of(patches, start, stop, w.shape))
    return out


BLOCK_ALIGN = 64  # rows: a multiple of the matrix kernels' tile widths


def even_blocks(n: int, most: int) -> list[tuple[int, int]]:
    """``[start, stop)`` of the fewest blocks of at most ``most`` rows that cover ``n``, of one size (a multiple of
    ``BLOCK_ALIGN`` where ``most`` is at least that; the last block shorter): no block of a few rows, which a matrix
    product computes slowly (float32, 1 thread: 8960 output columns by blocks of 2730 x 3 + 770 took 1.19x the
    whole product, by 4 x 2240 1.02x) and may compute by another path."""
    most = most // BLOCK_ALIGN * BLOCK_ALIGN if most >= BLOCK_ALIGN else max(1, most)
    count = -(-n // most)
    size = -(-n // count)
    if count > 1 and most % BLOCK_ALIGN == 0:
        size = -(-size // BLOCK_ALIGN) * BLOCK_ALIGN  # still <= most
    return [(start, min(start + size, n)) for start in range(0, n, size)]
