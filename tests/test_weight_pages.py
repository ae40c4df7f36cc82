"""A loader that converts mapped weights gives the file's pages back (``wan.weights.pages``).

Measured from the kernel's own account of this process: the resident bytes of the file's mappings
(``/proc/self/smaps``), before and after; the weights must still equal the file's (read independently with
``safetensors.torch.load_file``) after their pages are dropped.
"""
from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

import wan
from tiny_dit import save_safetensors
from wan.dit.config import WanDiTConfig
from wan.dit.islands import is_float32_island
from wan.dit.model import WanDiT
from wan.weights.pages import MappedPages

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="page release is Linux-only")


def resident_bytes(path: Path) -> int:
    """Resident bytes of this process's mappings of ``path``."""
    total, inside = 0, False
    for line in Path("/proc/self/smaps").read_text().splitlines():
        first = line.split(maxsplit=1)[0]
        if "-" in first and not first.endswith(":"):  # a mapping's header line
            inside = line.rstrip().endswith(str(path))
        elif inside and first == "Rss:":
            total += int(line.split()[1]) * 1024
    return total


def dit_shapes() -> dict[str, torch.Size]:
    """The parameter shapes of a small DiT (dim 256, 2 layers)."""
    with torch.device("meta"):
        model = WanDiT(WanDiTConfig(dim=256, ffn_dim=512, num_heads=2, num_layers=2))
    return {k: v.shape for k, v in model.state_dict().items()}


def test_release_drops_a_mapped_tensor_s_pages_and_it_reads_back(tmp_path):
    path = tmp_path / "w.safetensors"
    save_file({"a": torch.randn(512, 1024), "b": torch.randn(8)}, str(path))
    with safe_open(str(path), framework="pt") as f:
        a = f.get_tensor("a")
    a.sum()  # touch every page
    before = resident_bytes(path)
    assert before >= a.numel() * 4 - 8192
    pages = MappedPages()
    released = pages.release(a)
    assert released >= a.numel() * 4 - 8192 and pages.released == released
    assert resident_bytes(path) <= before - released
    assert torch.equal(a, load_file(str(path))["a"])  # read back from the file


def test_anonymous_memory_is_never_released():
    t = torch.randn(512, 1024)
    copy = t.clone()
    assert MappedPages().release(t) == 0
    assert torch.equal(t, copy)


def test_a_converting_load_holds_no_copy_of_the_file(tmp_path):
    """A float32 file loaded for bf16 compute: besides the float32 islands (kept as views of the file), none of the
    file stays resident once loaded (before: all of it, beside the bf16 copy)."""
    shapes = dit_shapes()
    g = torch.Generator().manual_seed(0)
    sd = {k: torch.randn(shape, generator=g) * 0.02 for k, shape in shapes.items()}
    path = save_safetensors(sd, tmp_path / "dit_fp32.safetensors")
    model = wan.load_dit(path, dtype="bf16")
    islands = sum(v.numel() * 4 for k, v in sd.items() if is_float32_island(k))
    total = sum(v.numel() * 4 for v in sd.values())
    assert total > 4 * islands
    assert resident_bytes(path) <= islands + 64 * 4096, (resident_bytes(path), islands, total)
    reference = load_file(str(path))
    q = model.blocks[0].self_attn.q.weight
    assert q.dtype == torch.bfloat16 and torch.equal(q, reference["blocks.0.self_attn.q.weight"].bfloat16())


def test_shared_memory_is_never_released():
    t = torch.randn(512, 1024).share_memory_()  # torch maps it from /dev/shm or a memfd
    copy = t.clone()
    assert MappedPages().release(t) == 0
    assert torch.equal(t, copy)


def test_a_merged_lora_holds_no_copy_of_the_weights_it_replaced(tmp_path):
    """A bf16 file loaded for bf16 compute (its weights are views of the file) with a LoRA merged into every
    attention and feed-forward layer: the file's pages of those layers are given back after the merge; the merged
    weights equal W + scale * up @ down computed here from the two files, and the unpatched root, run again, still
    reads the file's weights."""
    from wan.lora import apply_lora
    from wan.lora.demo import write_demo_lora

    shapes = dit_shapes()
    g = torch.Generator().manual_seed(0)
    sd = {k: (torch.randn(shape, generator=g) * 0.02).bfloat16() for k, shape in shapes.items()}
    path = save_safetensors(sd, tmp_path / "dit_bf16.safetensors")
    lora_path = write_demo_lora(path, tmp_path / "lora.safetensors", rank=4)
    root = wan.load_dit(path, dtype="bf16")
    for p in root.parameters():
        p.sum()  # every page of the file resident, as after a run
    patched_names = [k for k in sd if k.endswith(".weight") and (".self_attn." in k or ".cross_attn." in k
                                                                 or ".ffn." in k) and sd[k].dim() == 2]
    patched_bytes = sum(sd[k].numel() * 2 for k in patched_names)
    before = resident_bytes(path)
    assert before >= patched_bytes
    model = apply_lora(root, lora_path, strength=1.0)
    assert resident_bytes(path) <= before - patched_bytes + len(patched_names) * 2 * 4096, \
        (resident_bytes(path), before, patched_bytes)
    lora = load_file(str(lora_path))
    reference = load_file(str(path))
    for name in patched_names:
        stem = "diffusion_model." + name[: -len(".weight")]
        down, up = lora[f"{stem}.lora_down.weight"], lora[f"{stem}.lora_up.weight"]
        scale = float(lora[f"{stem}.alpha"]) / down.shape[0]
        want = (reference[name].float() + scale * (up @ down)).bfloat16()
        got = model.get_parameter(name)
        assert torch.allclose(got.float(), want.float(), rtol=0, atol=2 ** -9), name  # one bf16 rounding apart
        assert torch.equal(root.get_parameter(name), reference[name])  # the root reads the file back


def test_trim_heap_gives_freed_heap_pages_back():
    """``trim_heap`` (glibc ``malloc_trim``): the resident size falls by the freed heap chunks that lie between live
    ones (which ``free`` cannot return to the system)."""
    from wan.weights.pages import trim_heap

    import ctypes

    libc = ctypes.CDLL(None)
    if not hasattr(libc, "malloc_trim"):
        pytest.skip("not glibc")
    libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, (ctypes.c_size_t,)
    libc.free.argtypes = (ctypes.c_void_p,)
    size = 64 * 1024 - 64  # below the mmap threshold: heap chunks
    chunks = [libc.malloc(size) for _ in range(3200)]
    for c in chunks:
        ctypes.memset(c, 1, size)
    for c in chunks[::2]:
        libc.free(c)  # ~100 MB of holes between live chunks of the same size: free, still resident
    before = resident()
    assert trim_heap() is True
    assert resident() < before - 64 * 2 ** 20, (before, resident())
    for c in chunks[1::2]:
        libc.free(c)


def resident() -> int:
    return int(Path("/proc/self/statm").read_text().split()[1]) * 4096


def test_a_merge_trims_the_heap_every_trim_bytes(tmp_path, monkeypatch):
    """A merging ``build`` trims the C heap after each ``TRIM_BYTES`` of merged weights and at the end (none when
    patching on the fly)."""
    from wan.lora import apply_lora
    from wan.lora.demo import write_demo_lora
    from wan.weights import patching

    shapes = dit_shapes()
    sd = {k: torch.zeros(shape, dtype=torch.bfloat16) for k, shape in shapes.items()}
    path = save_safetensors(sd, tmp_path / "dit.safetensors")
    lora_path = write_demo_lora(path, tmp_path / "lora.safetensors", rank=4)
    merged = [k for k, v in sd.items() if v.dim() == 2 and any(p in k for p in (".self_attn.", ".cross_attn.",
                                                                               ".ffn."))]
    calls = []
    monkeypatch.setattr(patching, "trim_heap", lambda: calls.append(1) or True)
    monkeypatch.setattr(patching, "TRIM_BYTES", 1)  # after every merged weight
    model = wan.load_dit(path, dtype="bf16")
    apply_lora(model, lora_path)
    assert len(calls) == len(merged) == 20
    calls.clear()
    monkeypatch.setattr(patching, "TRIM_BYTES", 256 * 256 * 2 * 10)  # 10 attention weights: every 2.x blocks
    apply_lora(model, lora_path, strength=0.5)
    assert 2 <= len(calls) <= 4  # and one at the end
    calls.clear()
    apply_lora(model, lora_path, merge=False)
    assert calls == []
