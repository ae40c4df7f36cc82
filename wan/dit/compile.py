"""Compiled transformer blocks (``torch.compile``, regional): one graph serves every block of both experts.

``CompileOptions`` travel with a ``WAN_MODEL`` (``ExpertSet.compile``); ``compiled_models`` (entered by the sampling
loop) lends the models a ``BlockRunner`` for the run, and ``run_blocks`` (called by the models' ``run_blocks``) runs
the blocks through it. Scope "blocks" compiles the forward of one block: the graph takes the block's weights as
inputs, so all blocks of a model and both Wan 2.2 experts reuse it (dynamo's guards check the block's structure,
dtypes and shapes, never which block it is). Scope "whole model" compiles the loop over all blocks as one graph
(fusion across block boundaries, compile time proportional to the block count); with block streaming the blocks
arrive one by one, so that scope runs them per block. Embeddings, head, step caches, context windows, block
streaming and the solver stay eager.

What makes the graph stable over a run: timesteps enter as tensors (the modulation), the expert switch swaps weights
of the same shapes, a step-cache skip does not call the blocks, equal context windows have equal shapes, LoRA
factors and low-rank scales are graph inputs (other unmerged patch kinds keep their strength as a number: a new
strength compiles one more graph). With
``dynamic`` "auto" the first compile is for the shapes it sees; a second resolution recompiles once with the token
count symbolic, and later resolutions reuse that graph.

When compile cannot run (no C++ compiler for the CPU backend, no triton for CUDA, an unsupported Python, a backend
that fails on the first call), the blocks run eagerly and one warning names the reason; sampling never stops for it.
Forward pre-hooks of the blocks (the cancel check) run eagerly before each compiled call.
"""
from __future__ import annotations

import logging
import platform
import shutil
import sys
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterable

import torch
import torch.nn as nn

from ..errors import InputError
from ..quant import fp8_product
from ..weights.ops import native_half_products

log = logging.getLogger("wan_experts")

MODES = ("default", "max-autotune-no-cudagraphs", "reduce-overhead")
DYNAMIC = {"auto": None, "off": False, "on": True}
SCOPES = ("blocks", "whole model")
ATTR = "block_runner"  # the model attribute (in its __dict__) holding the runner during a run
CXX_NAMES = ("g++", "c++", "clang++", "cl")
OUT_OF_MEMORY = getattr(torch, "OutOfMemoryError", torch.cuda.OutOfMemoryError)  # raised as it is: no fallback
GRAPHS_PER_REGION = 64  # dynamo's limit of graphs per compiled function (its default, 8, is below the number of
# block layouts of a GGUF K_M file, which mixes quantisation types from block to block)


@dataclass(frozen=True)
class CompileOptions:
    """``mode``: inductor's mode; ``dynamic``: "auto" (static first, symbolic token count after a size change),
    "off" (one graph per size), "on" (symbolic from the start); ``scope``: "blocks" or "whole model";
    ``backend``: a ``torch.compile`` backend ("inductor"; tests count graphs with "eager")."""

    mode: str = "default"
    dynamic: str = "auto"
    scope: str = "blocks"
    backend: str = "inductor"

    def __post_init__(self):
        for name, allowed in (("mode", MODES), ("dynamic", tuple(DYNAMIC)), ("scope", SCOPES)):
            if getattr(self, name) not in allowed:
                raise InputError(f"compile {name} '{getattr(self, name)}' is unknown; use one of {list(allowed)}")

    def __str__(self) -> str:
        return f"{self.scope}, mode {self.mode}, dynamic {self.dynamic}" + (
            f", backend {self.backend}" if self.backend != "inductor" else "")


def compile_problem(options: CompileOptions, device: torch.device) -> str | None:
    """Why ``torch.compile`` cannot run with ``options`` on ``device``; None when it can."""
    if not hasattr(torch, "compile"):
        return f"this PyTorch ({torch.__version__}) has no torch.compile"
    if not dynamo_supported():
        return f"torch.compile does not support this Python ({platform.python_version()}) or platform"
    if options.backend != "inductor":
        return None
    if device.type == "cuda":
        from torch.utils._triton import has_triton

        if not has_triton():
            hint = " (on Windows: pip install triton-windows)" if sys.platform == "win32" else " (pip install triton)"
            return f"the inductor backend needs triton for CUDA, which is not installed{hint}"
        return None
    if device.type == "cpu" and not _cxx_compiler():
        return "the inductor backend needs a C++ compiler for the CPU (g++ or clang++), and none was found"
    return None


class BlockRunner:
    """The compiled block call for one set of options, shared by every model and run (so dynamo's cache is)."""

    def __init__(self, options: CompileOptions):
        self.options = options
        kwargs = {"backend": options.backend, "dynamic": DYNAMIC[options.dynamic]}
        if options.mode != "default":
            kwargs["mode"] = options.mode
        _raise_graph_limit(GRAPHS_PER_REGION)
        self.block = torch.compile(_block_forward, **kwargs)
        self.stack = torch.compile(_stack_forward, **kwargs)
        self.failed: str | None = None

    def run(self, blocks: Iterable[nn.Module], x: torch.Tensor, *args, **kwargs) -> torch.Tensor:
        """``x`` through ``blocks``: per block, or (scope "whole model", all blocks at hand) as one graph."""
        if self.failed is None and self.options.scope == "whole model" and isinstance(blocks, nn.ModuleList):
            for block in blocks:  # the cancel checks, once per block, before the graph runs
                _pre_hooks(block, x, args)
            return self._guarded(self.stack, eager_blocks, blocks, x, args, kwargs)
        for block in blocks:
            x = self.call(block, x, *args, **kwargs)
        return x

    def call(self, block: nn.Module, x: torch.Tensor, *args, **kwargs) -> torch.Tensor:
        """``block(x, *args, **kwargs)`` through the compiled graph; its forward pre-hooks run eagerly first."""
        if self.failed is not None:
            return block(x, *args, **kwargs)
        _pre_hooks(block, x, args)
        return self._guarded(self.block, _eager_block, block, x, args, kwargs)

    def _guarded(self, compiled, eager, target, x, args, kwargs) -> torch.Tensor:
        if self.failed is None:
            # probed eagerly: the compiled code only reads the answers (every half dtype: a block's x is float32,
            # its products run in the context's dtype)
            fp8_product.kernel(x.device)
            for dtype in fp8_product.HALF_DTYPES:
                native_half_products(dtype)
            try:
                return compiled(target, _graph_input(x), *(_graph_input(a) for a in args),
                                **{k: _graph_input(v) for k, v in kwargs.items()})
            except (OUT_OF_MEMORY, InputError):
                raise
            except Exception as exc:  # noqa: BLE001 - any compile failure: fall back, never stop sampling
                self.failed = _reason(exc)
                warn_once(f"torch.compile failed ({self.failed}); the transformer blocks run eagerly")
        return eager(target, x, *args, **kwargs)


def run_blocks(model: nn.Module, blocks: Iterable[nn.Module], x: torch.Tensor, *args, **kwargs) -> torch.Tensor:
    """``x`` through ``blocks`` in order (each called as ``block(x, *args, **kwargs)``): compiled when the model
    holds a runner for this run, else eagerly."""
    runner = model.__dict__.get(ATTR)
    if runner is None:
        return eager_blocks(blocks, x, *args, **kwargs)
    return runner.run(blocks, x, *args, **kwargs)


def call_block(model: nn.Module, block: nn.Module, x: torch.Tensor, *args, **kwargs) -> torch.Tensor:
    """One block of ``model`` (for models that run other modules between their blocks, like S2V)."""
    runner = model.__dict__.get(ATTR)
    return block(x, *args, **kwargs) if runner is None else runner.call(block, x, *args, **kwargs)


def eager_blocks(blocks: Iterable[nn.Module], x: torch.Tensor, *args, **kwargs) -> torch.Tensor:
    for block in blocks:
        x = block(x, *args, **kwargs)
    return x


def _eager_block(block: nn.Module, x: torch.Tensor, *args, **kwargs) -> torch.Tensor:
    return block(x, *args, **kwargs)


_RUNNERS: dict[CompileOptions, BlockRunner] = {}
_WARNED: set[str] = set()


def block_runner(options: CompileOptions) -> BlockRunner:
    """The one runner of ``options`` (created on first use)."""
    if options not in _RUNNERS:
        _RUNNERS[options] = BlockRunner(options)
    return _RUNNERS[options]


@contextmanager
def compiled_models(models: list[nn.Module], options: CompileOptions | None, device):
    """Within the block, ``models`` run their transformer blocks compiled with ``options`` (nothing when None); where
    compile cannot run, eagerly, with one warning naming the reason."""
    if options is None:
        yield None
        return
    problem = compile_problem(options, torch.device(device))
    if problem is not None:
        warn_once(f"compile ({options}) is not available: {problem}; the transformer blocks run eagerly")
        yield None
        return
    runner = block_runner(options)
    previous = [m.__dict__.get(ATTR) for m in models]
    for m in models:
        m.__dict__[ATTR] = runner
    try:
        yield runner
    finally:
        for m, before in zip(models, previous):
            if before is None:
                m.__dict__.pop(ATTR, None)
            else:
                m.__dict__[ATTR] = before


def add_compile_flags(parser) -> None:
    """The command-line flags of compiled blocks and fp8 products (``python -m wan.generate``)."""
    parser.add_argument("--compile", nargs="?", const="default", default=None, choices=MODES, metavar="MODE",
                        help="compile the transformer block with torch.compile (one graph for all blocks and both "
                             f"experts); MODE: {', '.join(MODES)} (default: default)")
    parser.add_argument("--compile_dynamic", default="auto", choices=list(DYNAMIC),
                        help="with --compile: auto (a second video size recompiles once), off, on")
    parser.add_argument("--compile_scope", default="blocks", choices=[s.replace(" ", "_") for s in SCOPES],
                        help="with --compile: blocks (one block, reused) or whole_model (all blocks in one graph)")
    parser.add_argument("--fp8_matmul", action="store_true",
                        help="fp8 DiT weights multiply fp8-rounded activations (torch._scaled_mm) where the device "
                             "has a kernel (CUDA sm89+), instead of being converted to bf16 first")


def compile_settings(args) -> dict:
    """``Settings`` fields from the flags of ``add_compile_flags``."""
    options = None
    if args.compile is not None:
        options = CompileOptions(args.compile, args.compile_dynamic, args.compile_scope.replace("_", " "))
    return {"compile": options, "fp8_matmul": bool(args.fp8_matmul)}


def warn_once(message: str) -> None:
    if message not in _WARNED:
        _WARNED.add(message)
        log.warning("%s", message)


def _block_forward(block: nn.Module, x: torch.Tensor, *args, **kwargs) -> torch.Tensor:
    return type(block).forward(block, x, *args, **kwargs)


def _stack_forward(blocks: nn.ModuleList, x: torch.Tensor, *args, **kwargs) -> torch.Tensor:
    for block in blocks:
        x = type(block).forward(block, x, *args, **kwargs)
    return x


def _graph_input(value):
    """A tensor as the compiled graph takes it: a view as a plain tensor on the same memory (the first block's input
    is a view of the token projection, the next blocks' are not, and with symbolic shapes dynamo guards on the view's
    base); a complex tensor (the rotary table) as its real view [..., 2], since inductor generates no complex code
    (``wan.dit.rope.apply_rope`` takes either). Neither copies."""
    if not torch.is_tensor(value):
        return value
    if value.is_complex():
        return torch.view_as_real(value).detach()
    return value.detach() if value._is_view() and not value.requires_grad else value


def _pre_hooks(block: nn.Module, x: torch.Tensor, args: tuple) -> None:
    for hook in tuple(block._forward_pre_hooks.values()):
        hook(block, (x, *args))


def _raise_graph_limit(limit: int) -> None:
    from torch._dynamo import config

    name = "recompile_limit" if hasattr(config, "recompile_limit") else "cache_size_limit"
    if getattr(config, name) < limit:
        setattr(config, name, limit)


def dynamo_supported() -> bool:
    from torch import _dynamo

    return _dynamo.is_dynamo_supported()


def _cxx_compiler() -> str | None:
    try:
        from torch._inductor import config

        configured = config.cpp.cxx[1] if isinstance(config.cpp.cxx, tuple) else config.cpp.cxx
    except (ImportError, AttributeError):
        configured = None
    candidates = ([configured] if configured else []) + list(CXX_NAMES)
    return next((found for name in candidates if (found := shutil.which(name))), None)


def _reason(exc: BaseException) -> str:
    """The exception and, for a backend failure, the error the backend raised."""
    inner = getattr(exc, "inner_exception", None) or exc.__cause__
    text = [line for line in str(exc).strip().splitlines() if line.strip()]
    own = f"{type(exc).__name__}: {text[0][:200]}" if text else type(exc).__name__
    return own if inner is None or inner is exc else f"{own} {_reason(inner)}"
