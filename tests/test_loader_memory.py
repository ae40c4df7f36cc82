"""One copy of the weights: after loading (and, for the VAE, a first CPU decode), the bytes of the tensors the modules
hold plus the bytes of the weight file still mapped into the process stay within one copy of the weights, also
when the loader converts the file's dtype (the VAE on the CPU; a text encoder whose fp16 file computes in bf16).

Also: ``read_owned`` (the reader behind it) returns the same tensors as the memory-mapped ``read_state_dict``, for
every source kind (exact equality: the bytes are the file's).
"""
from __future__ import annotations

import gc
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

import test_encoders_support as sup
from test_vae_tiny import diffusers_vae, official_vae, save_comfy, save_pth

import wan.vae as wv
from wan.encoders import load_text_encoder
from wan.weights.checkpoint import read_state_dict
from wan.weights.owned import in_dtype, read_owned


def _module_bytes(module: torch.nn.Module) -> int:
    """Bytes of the distinct storages behind the module's tensors (a view of a larger buffer counts it whole)."""
    storages = {t.untyped_storage().data_ptr(): t.untyped_storage().nbytes()
                for t in (*module.parameters(), *module.buffers())}
    return sum(storages.values())


def _mapped_bytes(path) -> int:
    """Bytes of ``path`` mapped into this process now (Linux ``/proc/self/maps``)."""
    real, total = os.path.realpath(path), 0
    with open("/proc/self/maps") as maps:
        for line in maps:
            fields = line.split(maxsplit=5)
            if len(fields) == 6 and fields[5].strip() == real:
                start, end = (int(x, 16) for x in fields[0].split("-"))
                total += end - start
    return total


def _weight_bytes(module: torch.nn.Module) -> int:
    return sum(t.numel() * t.element_size() for t in (*module.parameters(), *module.buffers()))


def _copies_after_decode(path, weight_file, **load) -> float:
    """(Bytes of the module's tensors + bytes of ``weight_file`` still mapped) / bytes of the weights."""
    vae = wv.load_vae(path, **load)
    vae.decode(torch.randn(1, vae.z_dim, 2, 2, 3, generator=torch.Generator().manual_seed(0)))
    gc.collect()
    return (_module_bytes(vae.model) + _mapped_bytes(weight_file)) / _weight_bytes(vae.model)


@pytest.mark.parametrize("layout", ["pth", "safetensors", "diffusers"])
@pytest.mark.parametrize("version", ["2.1", "2.2"])
def test_cpu_decode_keeps_one_copy_of_the_weights(version, layout, tmp_path):
    if layout == "diffusers":
        diffusers_vae(version).save_pretrained(str(tmp_path / "vae"))
        path, weight_file = tmp_path / "vae", tmp_path / "vae" / "diffusion_pytorch_model.safetensors"
    else:
        reference = official_vae(version)
        path = weight_file = save_pth(reference, tmp_path / "vae.pth") if layout == "pth" else \
            save_comfy(reference.state_dict(), tmp_path / "vae.safetensors")
    copies = _copies_after_decode(path, weight_file)
    assert copies <= 1.01, f"{copies:.2f} copies of the VAE weights alive after a CPU decode"


@pytest.mark.parametrize("stored, compute", [(torch.bfloat16, "fp32"), (torch.float32, "bf16")])
def test_cpu_decode_keeps_one_copy_when_converting_dtype(stored, compute, tmp_path):
    path = save_comfy(official_vae("2.1").state_dict(), tmp_path / "vae.safetensors", dtype=stored)
    assert _copies_after_decode(path, path, dtype=compute) <= 1.01


def test_weights_are_channels_last_from_load_and_decode_copies_none(tmp_path):
    """Conv weights arrive in the layout of the CPU passes, so a decode converts nothing (same storages after)."""
    vae = wv.load_vae(save_comfy(official_vae("2.2").state_dict(), tmp_path / "vae.safetensors"))
    convs = [m for m in vae.model.modules() if isinstance(m, torch.nn.Conv3d)]
    assert all(m.weight.is_contiguous(memory_format=torch.channels_last_3d) for m in convs)
    before = [m.weight.data_ptr() for m in convs]
    vae.decode(torch.randn(1, vae.z_dim, 2, 2, 3))
    assert [m.weight.data_ptr() for m in convs] == before


def test_text_encoder_converted_at_load_keeps_one_copy(tmp_path):
    """An fp16 file computing in bf16 (the default): every weight converted, and the file no longer mapped; the
    values are those of the file converted (the mapped read, converted the same way)."""
    spiece = sup.train_spiece()
    reference = sup.hf_umt5().half()
    path = sup.save_comfy_t5(reference, spiece, tmp_path / "umt5_xxl_fp16.safetensors")
    encoder = load_text_encoder(path)
    gc.collect()
    model = encoder.model
    assert encoder.compute_dtype == torch.bfloat16 and _mapped_bytes(path) == 0
    assert _module_bytes(model) <= 1.01 * _weight_bytes(model)
    assert torch.equal(model.blocks[0].attn.q.weight, reference.encoder.block[0].layer[0].SelfAttention.q.weight
                       .to(torch.bfloat16))


PEAK_PROBE = """
import sys, torch
from wan.encoders import load_text_encoder
with torch.device("meta"):  # code, not data: the first init on the meta device loads torch's meta kernels (~80 MB)
    torch.nn.Embedding(2, 2)
def kb(field):
    return next(int(line.split()[1]) for line in open('/proc/self/status') if line.startswith(field))
base = kb('VmRSS:')
encoder = load_text_encoder(sys.argv[1])
print((kb('VmHWM:') - base) * 1024)
"""


def test_text_encoder_converted_at_load_peaks_at_one_copy(tmp_path):
    """Peak RSS growth of a fresh process loading a 0.1 GB fp16 file into bf16: one copy, a slab and the tokenizer
    (1.3-1.6 x this small file); the mapped read converted afterwards peaks at 2.1 x (the file's pages and the
    converted tensors side by side)."""
    path = sup.save_comfy_t5(sup.hf_umt5(vocab=800_000).half(), sup.train_spiece(), tmp_path / "umt5_fp16.safetensors")
    root = Path(__file__).resolve().parents[1]
    out = subprocess.run([sys.executable, "-c", PEAK_PROBE, str(path)], capture_output=True, text=True,
                         env={**os.environ, "PYTHONPATH": str(root)}, check=True)
    growth = int(out.stdout.strip().splitlines()[-1])
    assert growth <= 1.8 * path.stat().st_size, f"peak growth {growth / path.stat().st_size:.2f} x the file"


def _tensors():
    g = torch.Generator().manual_seed(0)
    return {"a.weight": torch.randn(4, 3, 3, 2, 2, generator=g).to(torch.bfloat16),
            "a.bias": torch.randn(4, generator=g), "b": torch.randn(2, 3, generator=g).half(),
            "steps": torch.arange(5), "flag": torch.tensor([True, False]), "scalar": torch.tensor(2.5)}


def _write(kind: str, tensors: dict, tmp_path):
    if kind == "pth":
        torch.save(tensors, tmp_path / "w.pth")
        return tmp_path / "w.pth"
    if kind == "safetensors":
        save_file(tensors, str(tmp_path / "w.safetensors"))
        return tmp_path / "w.safetensors"
    names = sorted(tensors)
    shards = {"w-1.safetensors": names[:3], "w-2.safetensors": names[3:]}
    for shard, keys in shards.items():
        save_file({k: tensors[k] for k in keys}, str(tmp_path / shard))
    index = {"metadata": {}, "weight_map": {k: shard for shard, keys in shards.items() for k in keys}}
    (tmp_path / "w.safetensors.index.json").write_text(json.dumps(index))
    return tmp_path  # the folder: its one index file


@pytest.mark.parametrize("kind", ["pth", "safetensors", "index folder"])
def test_read_owned_equals_the_mapped_read(kind, tmp_path):
    tensors = _tensors()
    path = _write(kind, tensors, tmp_path)
    seen = []
    keep = torch.contiguous_format
    owned = read_owned(path, "test file", lambda name, stored, dims: seen.append(name) or (stored, keep))
    mapped = read_state_dict(path, "test file")
    assert sorted(seen) == sorted(owned) == sorted(mapped) == sorted(tensors)
    for key, t in tensors.items():
        assert owned[key].dtype == t.dtype and torch.equal(owned[key], t) and torch.equal(mapped[key], t), key


@pytest.mark.parametrize("kind", ["pth", "safetensors"])
def test_read_owned_converts_in_slabs_to_the_form_asked(kind, tmp_path, monkeypatch):
    """Converted tensors are filled a few rows at a time (slabs made small here): equal to the mapped tensors
    converted by torch, in the layout asked (channels-last for 5-D), stored dtype kept for integers."""
    import wan.weights.owned as owned_module

    monkeypatch.setattr(owned_module, "SLAB_BYTES", 40)
    tensors = _tensors()
    path = _write(kind, tensors, tmp_path)
    owned = read_owned(path, "test file", in_dtype(torch.float32, torch.channels_last_3d))
    for key, t in tensors.items():
        want = t.float() if t.is_floating_point() else t
        assert owned[key].dtype == want.dtype and torch.equal(owned[key], want), key
    assert owned["a.weight"].is_contiguous(memory_format=torch.channels_last_3d)


def test_read_owned_names_a_truncated_file(tmp_path):
    path = _write("safetensors", _tensors(), tmp_path)
    data = path.read_bytes()
    path.write_bytes(data[:-8])
    from wan.errors import CheckpointError

    with pytest.raises(CheckpointError, match="truncated"):
        read_owned(path, "test file", in_dtype(torch.float32))
