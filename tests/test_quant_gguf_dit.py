"""GGUF DiT files: loaded quantised (views of the memory-mapped file), dequantised per layer at run time.

Oracle: the same tiny DiT whose weights are the file's tensors dequantised by ggml's reference
(``gguf.quants.dequantize``, numpy, read through ``gguf.GGUFReader`` in this test), saved as safetensors and
loaded in float32. Tolerance: max|ours - ref| <= 1e-5 · max|ref| (the dequantised weights are equal bit for bit,
so the forwards agree up to nothing more than the order of float operations).
"""
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from gguf import GGMLQuantizationType as T, GGUFReader, quants

import wan
from tiny_dit import assert_close, inputs, official_dit, save_safetensors, state_dict_of
from wan.memory.place import residency
from wan.memory.offload import BlockStream, held_back
from wan.weights.patches import LowRank
from wan.weights.patching import PatchSet, merged_weight, patched
from wan.quant.gguf_format import GGUFFormat
from wan.quant.gguf_write import write_gguf

PREFIX = "model.diffusion_model."
# Linear weights of the tiny DiT taking 256 inputs hold whole 256-element K-quant blocks; gguf cannot quantise
# K-quants or IQ4, so these get random raw blocks (the writer's shape-only mode); the rest is quantised by gguf.
RAW = {"blocks.0.self_attn.q.weight": T.Q2_K, "blocks.0.self_attn.k.weight": T.Q3_K,
       "blocks.0.self_attn.v.weight": T.Q4_K, "blocks.0.self_attn.o.weight": T.Q5_K,
       "blocks.0.cross_attn.q.weight": T.Q6_K, "blocks.0.cross_attn.k.weight": T.IQ4_XS,
       "blocks.0.cross_attn.v.weight": T.IQ4_NL, "head.head.weight": T.Q4_K}
QUANTIZED = {"blocks.0.cross_attn.o.weight": T.Q4_0, "blocks.1.self_attn.q.weight": T.Q4_1,
             "blocks.1.self_attn.k.weight": T.Q5_0, "blocks.1.self_attn.v.weight": T.Q5_1,
             "blocks.1.ffn.0.weight": T.BF16, "blocks.1.ffn.2.weight": T.F16}


def write_tiny_gguf(path: Path, patch_embedding="apart", prefix=PREFIX, seed=0) -> Path:
    sd = state_dict_of(official_dit("t2v", seed=seed))
    tensors = {k: (tuple(v.shape) if k in RAW else v) for k, v in sd.items()}
    types = {**RAW, **QUANTIZED}
    if patch_embedding == "reshaped":
        types["patch_embedding.weight"] = T.Q8_0  # 2-D [256, 64] blocks, dequantised at load
    write_gguf(path, tensors, T.Q8_0, types=types, patch_embedding=patch_embedding, prefix=prefix, seed=seed)
    return path


def reference_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """Every tensor dequantised by gguf's numpy reference, in torch order (orig_shape metadata where present)."""
    reader = GGUFReader(path)
    out = {}
    for t in reader.tensors:
        values = quants.dequantize(np.asarray(t.data), t.tensor_type)
        field = reader.get_field(f"comfy.gguf.orig_shape.{t.name}")
        shape = field.contents() if field is not None else list(reversed(t.shape.tolist()))
        out[t.name.removeprefix(PREFIX)] = torch.from_numpy(np.array(values, dtype=np.float32).reshape(shape))
    return out


def _forward(model, seed=1):
    x, t, ctx, _ = inputs(seed=seed)
    with torch.no_grad():
        return model(x, t, ctx)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("gguf")
    return {form: write_tiny_gguf(root / f"wan_{form}.gguf", form, prefix=PREFIX if form == "apart" else "")
            for form in ("apart", "reshaped")}


@pytest.fixture(scope="module")
def reference(files, tmp_path_factory):
    root = tmp_path_factory.mktemp("ref")
    return {form: wan.load_dit(save_safetensors(reference_state_dict(p), root / f"{form}.safetensors"), dtype="fp32")
            for form, p in files.items()}


@pytest.fixture(scope="module")
def loaded(files):
    return {form: wan.load_dit(path, dtype="fp32") for form, path in files.items()}


@pytest.fixture(scope="module")
def outputs(loaded, reference):
    return {(form, kind): _forward(models[form]) for kind, models in (("gguf", loaded), ("ref", reference))
            for form in models}


@pytest.mark.parametrize("form", ["apart", "reshaped"])
def test_forward_equals_dequantised_reference(loaded, reference, outputs, form):
    assert loaded[form].variant == reference[form].variant and "GGUF" in loaded[form].layout
    assert_close(outputs[form, "gguf"], outputs[form, "ref"], rel=1e-5, abs_=0.0)


def mapped_ranges(path: Path) -> list[tuple[int, int]]:
    ranges = []
    for line in Path("/proc/self/maps").read_text().splitlines():
        if line.endswith(str(path)):
            start, end = (int(a, 16) for a in re.match(r"([0-9a-f]+)-([0-9a-f]+)", line).groups())
            ranges.append((start, end))
    return ranges


def test_quantised_weights_stay_quantised_views_of_the_file(files, loaded):
    path, model = files["apart"], loaded["apart"]
    on_disk = {t.name.removeprefix(PREFIX): t for t in GGUFReader(path).tensors}
    ranges = mapped_ranges(path)
    held = expected = 0
    for name, layer in model.named_modules():
        t = on_disk.get(f"{name}.weight")
        if t is None or len(t.shape) != 2:
            continue
        w = layer.weight
        assert isinstance(layer.weight_format, GGUFFormat) and layer.weight_format.qtype == t.tensor_type
        stored = torch.from_numpy(np.asarray(t.data))
        if t.tensor_type in (T.F32, T.F16, T.BF16):  # float Linear weights: the file's values, cast per forward
            stored = stored.view(w.dtype).reshape(w.shape)
        assert w.dtype == stored.dtype and torch.equal(w, stored)
        assert any(a <= w.data_ptr() < b for a, b in ranges), f"{name}: not a view of the mapped file"
        held += layer.weight_format.stored_bytes(layer)
        expected += t.n_bytes
    assert expected > 0 and held == expected
    assert model.blocks[1].ffn[0].weight.dtype == torch.bfloat16  # a BF16 Linear weight stays BF16 (cast per use)
    assert model.blocks[1].ffn[2].weight.dtype == torch.float16


def test_default_compute_dtype_is_bf16_and_weights_stay_quantised(files, outputs):
    model = wan.load_dit(files["apart"])
    assert model.compute_dtype == torch.bfloat16 and model.blocks[0].self_attn.v.weight.dtype == torch.uint8
    x, t, ctx, _ = inputs()
    with torch.no_grad():
        out = model(x.bfloat16(), t, ctx.bfloat16())
    assert_close(out.float(), outputs["apart", "ref"], rel=3e-2)


@pytest.mark.parametrize("merge", [True, False])
def test_low_rank_patch_on_a_gguf_layer(files, loaded, reference, merge):
    """A LoRA-style patch stays unmerged on the quantised layer: weight = dequantised + scale · up @ down."""
    model = loaded["apart"]
    g = torch.Generator().manual_seed(5)
    patch = LowRank(torch.randn(256, 4, generator=g) * 0.1, torch.randn(4, 256, generator=g) * 0.1, 0.7)
    name = "blocks.0.self_attn.v.weight"  # Q4_K
    live = patched(model, PatchSet("lora", {name: (patch,)}), merge=merge)
    layer = live.blocks[0].self_attn.v
    assert layer.weight.dtype == torch.uint8 and layer.weight_patches == (patch,)
    dequantised = reference_state_dict(files["apart"])[name]
    assert torch.equal(merged_weight(layer, torch.float32), dequantised + patch.scale * (patch.up @ patch.down))
    ref = patched(reference["apart"], PatchSet("lora", {name: (patch,)}))
    assert_close(_forward(live), _forward(ref), rel=1e-5)


def test_load_dit_node_lists_unet_and_diffusion_models(pack, models_dir, files, outputs):
    unet = models_dir / "unet"
    unet.mkdir()
    (unet / "wan_q.gguf").write_bytes(files["apart"].read_bytes())
    (models_dir / "diffusion_models" / "wan_r.gguf").write_bytes(files["reshaped"].read_bytes())
    node = pack.nodes.dit.WanExpertsLoadDiT
    assert node.INPUT_TYPES()["required"]["model_name"][0] == ["wan_q.gguf", "wan_r.gguf"]
    (model,) = node().load("wan_q.gguf", "fp32", "auto", "sdpa")
    x, t, ctx, _ = inputs()
    with torch.no_grad():
        out = model.high(x, t, ctx)
    assert_close(out, outputs["apart", "gguf"], rel=1e-5, abs_=0.0)


def test_load_moe_node_takes_two_gguf_experts(pack, models_dir, tmp_path):
    for role, seed in (("high", 1), ("low", 2)):
        write_tiny_gguf(models_dir / "diffusion_models" / f"wan2.2_t2v_{role}_noise_14B_Q4_K_M.gguf", seed=seed)
    (pair,) = pack.nodes.dit.WanExpertsLoadMoE().load(
        "wan2.2_t2v_high_noise_14B_Q4_K_M.gguf", "wan2.2_t2v_low_noise_14B_Q4_K_M.gguf", "fp32", 0.0, "sdpa")
    assert pair.is_moe and pair.boundary == 0.875 and pair.high.role == "high"
    assert pair.low.blocks[0].self_attn.v.weight_format.name == "GGUF Q4_K"


@torch.no_grad()
def test_block_streaming_carries_the_quantised_blocks(files, outputs, monkeypatch):
    """Streamed blocks travel as their raw GGUF bytes (uint8) and compute exactly what the resident model does."""
    attached = []
    monkeypatch.setattr(BlockStream, "on_event", lambda self, kind, i: attached.append(i) if kind == "attach" else None)
    model = wan.load_dit(files["apart"], dtype="fp32", offload_blocks=2)
    residency(model).load("cpu", exclude=held_back(model))  # as the sampler places a model on its device
    assert torch.equal(_forward(model), outputs["apart", "gguf"])
    assert attached == [0, 1]
