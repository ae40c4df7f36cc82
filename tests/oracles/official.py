"""Import modules of the official Wan code (PyPI ``wan22``, top-level package ``wan``) as ``wan_official.*``.

Our engine is also called ``wan``, so the official package is loaded from its folder under another name, and
without running its package ``__init__`` files (they import CUDA-only code). ``flash_attention`` (CUDA only) is
replaced by an SDPA function with the same arguments that honours ``k_lens``.
"""
from __future__ import annotations

import contextlib
import importlib.util
import sys
import types
from pathlib import Path

import torch
import torch.nn.functional as F

PACKAGE = "wan_official"


def official_root() -> Path:
    for entry in sys.path:
        root = Path(entry or ".") / "wan"
        if (root / "modules" / "model.py").is_file() and (root / "text2video.py").is_file():
            return root
    raise ImportError("the official Wan code (pip install --no-deps wan22) is not installed")


@contextlib.contextmanager
def stand_ins(modules: dict):
    """Put ``modules`` (name -> module) into ``sys.modules`` while the block runs (for official modules that import
    what cannot load here), then restore every previous entry, or its absence."""
    saved = {name: sys.modules.get(name) for name in modules}
    try:
        sys.modules.update(modules)
        yield
    finally:
        for name, module in saved.items():
            if module is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = module


def _ensure_package(name: str, path: Path) -> None:
    if name not in sys.modules:
        pkg = types.ModuleType(name)
        pkg.__path__ = [str(path)]
        sys.modules[name] = pkg


def load(relname: str) -> types.ModuleType:
    """Import ``wan/<relname>.py`` of the official package, e.g. ``load("modules.model")``."""
    name = f"{PACKAGE}.{relname}"
    if name in sys.modules:
        return sys.modules[name]
    root = official_root()
    _ensure_package(PACKAGE, root)
    parts = relname.split(".")
    for i in range(1, len(parts)):
        _ensure_package(f"{PACKAGE}." + ".".join(parts[:i]), root.joinpath(*parts[:i]))
    _ensure_package(f"{PACKAGE}.modules", root / "modules")
    attention = sys.modules.get(f"{PACKAGE}.modules.attention")
    if attention is None:
        attention = _exec(f"{PACKAGE}.modules.attention", root / "modules" / "attention.py")
        attention.flash_attention = sdpa_flash_attention
    module = _exec(name, root.joinpath(*parts).with_suffix(".py"))
    if hasattr(module, "flash_attention"):
        module.flash_attention = sdpa_flash_attention
    return module


def _exec(name: str, file: Path) -> types.ModuleType:
    spec = importlib.util.spec_from_file_location(name, file)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def sdpa_flash_attention(q, k, v, q_lens=None, k_lens=None, dropout_p=0.0, softmax_scale=None, q_scale=None,
                         causal=False, window_size=(-1, -1), deterministic=False, dtype=torch.bfloat16,
                         version=None):
    """CPU stand-in for the official flash_attention: q, k, v [B, L, N, D]; keys past k_lens are masked."""
    mask = None
    if k_lens is not None:
        keep = torch.arange(k.shape[1], device=k.device)[None, :] < k_lens.to(k.device)[:, None]
        mask = keep[:, None, None, :]
    if q_scale is not None:
        q = q * q_scale
    out = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2),
                                         attn_mask=mask, is_causal=causal, scale=softmax_scale)
    return out.transpose(1, 2).type_as(q)
