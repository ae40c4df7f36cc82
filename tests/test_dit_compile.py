"""Compiled transformer blocks (``wan.dit.compile``): no graph breaks, no recompiles, eager results.

Graph breaks and recompiles are counted by dynamo itself (``torch._dynamo.utils.counters``: "graph_break" entries,
"unique_graphs" = graphs compiled), with the "eager" backend: dynamo captures the same graphs as for inductor and
runs them with the eager kernels, so the counts hold for every backend while no code is generated (inductor's C++
code generation takes minutes on this CPU). Oracle for the outputs: the same model run eagerly; with the "eager"
backend the graph runs the same kernels, so results are equal bit for bit (a LoRA kept unmerged: within one rounding
of the compute dtype, as the graph adds its product as a separate sum); with inductor (one test, on a tiny block)
they agree within float32 reassociation, 1e-5 relative to the largest value.
"""
import logging

import pytest
import torch
from torch._dynamo.utils import counters

import wan
from test_cache_tools import tiny_dit, tiny_experts, TEXT_DIM
from tiny_dit import assert_close
from tiny_fp8 import scaled_fp8
from wan.cache import TeaCache
from wan.conditioning import TextEmbeds
from wan.dit.compile import CompileOptions, compiled_models
from wan.memory.offload import held_back, set_block_streaming
from wan.memory.place import residency
from wan.quant import SCALED_FP8
from wan.sampling import SamplerSettings, make_noise, sample
from wan.sampling.windows import ContextWindows
from wan.weights.ops import Linear
from wan.weights.patches import LowRank
from wan.weights.patching import PatchSet, patched

EAGER = CompileOptions(backend="eager")
BLOCK_LINEARS = ("self_attn.q", "self_attn.k", "self_attn.v", "self_attn.o", "cross_attn.q", "cross_attn.k",
                 "cross_attn.v", "cross_attn.o", "ffn.0", "ffn.2")


@pytest.fixture(autouse=True)
def fresh_dynamo():
    torch._dynamo.reset()
    counters.clear()
    yield
    torch._dynamo.reset()


def graphs() -> int:
    return counters["stats"]["unique_graphs"]


def breaks() -> dict:
    return dict(counters["graph_break"])


def small_inputs(model, frames=2, h=4, w=4, seed=1):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(1, model.config.in_dim, frames, h, w, generator=g)
    ctx = torch.randn(1, 8, model.config.text_dim, generator=g)
    return x, torch.tensor([700.0]), ctx


def compiled_forward(model, x, t, ctx, options=EAGER):
    with torch.no_grad(), compiled_models([model], options, "cpu") as runner:
        out = model(x, t, ctx)
    assert runner is not None and runner.failed is None, runner and runner.failed
    return out


def to_scaled_fp8_(model, products: bool):
    for layer in model.blocks.modules():
        if isinstance(layer, Linear):
            q, scale = scaled_fp8(layer.weight.data)
            layer.weight = torch.nn.Parameter(q, requires_grad=False)
            layer.scale_weight, layer.weight_format, layer.fp8_products = scale, SCALED_FP8, products
    return model


def lora_set(model, strength=0.7, rank=4, seed=3) -> PatchSet:
    g = torch.Generator().manual_seed(seed)
    patches = {}
    for i in range(len(model.blocks)):
        for name in BLOCK_LINEARS:
            out_f, in_f = model.get_submodule(f"blocks.{i}.{name}").weight_shape
            up, down = torch.randn(out_f, rank, generator=g) * 0.1, torch.randn(rank, in_f, generator=g) * 0.1
            patches[f"blocks.{i}.{name}.weight"] = (LowRank(up, down, strength / rank),)
    return PatchSet("lora", patches, "test lora")


def _bf16(model):
    model.compute_dtype = torch.bfloat16
    return model


def _streaming(model):
    set_block_streaming(model, 1)
    residency(model).load("cpu", exclude=held_back(model))  # placed "on a device": the last block is streamed
    return model


def _gguf(tmp_path):
    """Q8_0, with the feed-forward in Q4_K (random raw blocks) and Q5_0 in every block (files mix types)."""
    from gguf import GGMLQuantizationType as T

    from tiny_dit import official_dit, state_dict_of
    from wan.quant.gguf_write import write_gguf

    sd = state_dict_of(official_dit("t2v"))
    k_quants = {f"blocks.{i}.ffn.{j}.weight": q for i in range(2) for j, q in ((0, T.Q4_K), (2, T.Q5_0))}
    tensors = {k: (tuple(v.shape) if k.endswith("ffn.0.weight") else v) for k, v in sd.items()}
    write_gguf(tmp_path / "tiny.gguf", tensors, T.Q8_0, types=k_quants)
    return wan.load_dit(tmp_path / "tiny.gguf")


def _comfy_quant(tmp_path):
    from test_quant_comfy_quant import write_comfy_quant

    write_comfy_quant(tmp_path / "wan_mixed.safetensors", "markers")
    return wan.load_dit(tmp_path / "wan_mixed.safetensors")


CONFIGS = {
    "float32": lambda tmp: tiny_dit(),
    "bf16": lambda tmp: _bf16(tiny_dit()),
    "scaled fp8": lambda tmp: _bf16(to_scaled_fp8_(tiny_dit(), products=False)),
    "scaled fp8, fp8 products": lambda tmp: _bf16(to_scaled_fp8_(tiny_dit(), products=True)),
    "gguf": _gguf,
    "comfy_quant fp8 + nvfp4": _comfy_quant,
    "lora merged": lambda tmp: patched(tiny_dit(), lora_set(tiny_dit()), merge=True),
    "lora unmerged": lambda tmp: patched(tiny_dit(), lora_set(tiny_dit()), merge=False),
    "lora on fp8 products": lambda tmp: patched(m := _bf16(to_scaled_fp8_(tiny_dit(), True)), lora_set(m)),
    "block streaming": lambda tmp: _streaming(tiny_dit()),
}


# the tiny comfy_quant file stores its two blocks in different formats: one graph per distinct block layout
LAYOUTS = {"comfy_quant fp8 + nvfp4": 2}
# relative tolerance (to the largest value) where compiled and eager round differently: float32 rounding; with fp8
# products, a one-ulp bfloat16 difference can move an activation across an e4m3 rounding step (2^-4 of its value)
SIDE_SUM = {"lora unmerged": 1e-6, "lora on fp8 products": 2 ** -4}


@pytest.mark.parametrize("config", list(CONFIGS))
def test_no_graph_break_and_one_graph_for_all_blocks(config, tmp_path):
    model = CONFIGS[config](tmp_path)
    x, t, ctx = small_inputs(model)
    with torch.no_grad():
        eager = model(x, t, ctx)
    out = compiled_forward(model, x, t, ctx)
    assert breaks() == {}
    assert graphs() == LAYOUTS.get(config, 1)
    if config in SIDE_SUM:  # the graph adds the LoRA product as its own sum (eagerly: accumulated into the output)
        assert_close(out, eager, rel=SIDE_SUM[config], abs_=0.0)
    else:
        assert torch.equal(out, eager)
    compiled_forward(model, x, torch.tensor([300.0]), ctx)  # another timestep: no new graph
    assert graphs() == LAYOUTS.get(config, 1)


def test_two_expert_run_with_teacache_lora_and_context_windows_compiles_once():
    """Both experts (each with its own LoRA strength), TeaCache skips, two equal context windows, 6 steps: one graph."""
    experts = tiny_experts("wan22_t2v_a14b")
    high, low = experts.high, experts.low
    experts = experts.__class__(patched(high, lora_set(high, 0.8), merge=False),
                                patched(low, lora_set(low, 0.5, seed=4), merge=False), experts.boundary)
    g = torch.Generator().manual_seed(5)
    text = TextEmbeds(torch.randn(1, 9, TEXT_DIM, generator=g), torch.randn(1, 9, TEXT_DIM, generator=g))
    shape = (1, 16, 5, 4, 4)
    settings = SamplerSettings(6, 5.0, cfg_high=4.0, cfg_low=3.0, context=ContextWindows(9, 4, "static"))
    graphs_after_step = []

    def run(compile_options):
        cache = TeaCache(0.3, allow_fallback=True)
        return sample(experts.__class__(experts.high, experts.low, experts.boundary, compile_options),
                      torch.zeros(shape), text, settings, noise=make_noise(shape, 3), step_cache=cache,
                      callback=lambda info: graphs_after_step.append(graphs()))

    compiled = run(EAGER)
    assert breaks() == {}
    assert graphs_after_step == [1] * 6, graphs_after_step  # compiled in step 1, nothing after
    assert set(compiled.experts) == {"high", "low"} and compiled.cache_report.reused_fraction > 0
    assert len({k.split()[1] for k in compiled.cache_report.computed}) == 2  # two windows
    assert torch.equal(compiled.latents, run(None).latents)


def test_a_new_resolution_recompiles_at_most_once_with_dynamic_auto():
    model = tiny_dit()
    for size in ((4, 4), (4, 6), (6, 6), (8, 4)):
        x, t, ctx = small_inputs(model, 2, *size)
        compiled_forward(model, x, t, ctx)
    assert graphs() == 2 and breaks() == {}  # static for the first size, symbolic token count from the second on


def test_whole_model_scope_is_one_graph_and_cancel_checks_still_run():
    model = tiny_dit()
    x, t, ctx = small_inputs(model)
    calls = []
    handles = [b.register_forward_pre_hook(lambda m, a: calls.append(1)) for b in model.blocks]
    try:
        with torch.no_grad():
            eager = model(x, t, ctx)
        for scope in ("whole model", "blocks"):
            calls.clear()
            out = compiled_forward(model, x, t, ctx, CompileOptions(scope=scope, backend="eager"))
            assert torch.equal(out, eager) and len(calls) == len(model.blocks), scope
    finally:
        for h in handles:
            h.remove()
    assert graphs() == 2 and breaks() == {}  # one for the stack, one for a block


def test_without_a_compiler_one_warning_and_eager_results(monkeypatch, caplog):
    import wan.dit.compile as compile_module

    monkeypatch.setattr(compile_module, "_cxx_compiler", lambda: None)
    monkeypatch.setattr(compile_module, "_WARNED", set())
    model = tiny_dit()
    x, t, ctx = small_inputs(model)
    with caplog.at_level(logging.WARNING, logger="wan_experts"), torch.no_grad():
        for _ in range(2):
            with compiled_models([model], CompileOptions(), "cpu") as runner:
                assert runner is None
                out = model(x, t, ctx)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "C++ compiler" in warnings[0] and "eagerly" in warnings[0]
    assert torch.equal(out, model(x, t, ctx)) and graphs() == 0


def test_a_failing_compile_falls_back_mid_run_with_one_warning(monkeypatch, caplog):
    import wan.dit.compile as compile_module

    def broken(graph, example_inputs):
        raise RuntimeError("the compiler crashed")

    monkeypatch.setattr(compile_module, "_WARNED", set())
    experts = tiny_experts("wan22_t2v_a14b")
    g = torch.Generator().manual_seed(5)
    text = TextEmbeds(torch.randn(1, 9, TEXT_DIM, generator=g), torch.randn(1, 9, TEXT_DIM, generator=g))
    shape, settings = (1, 16, 2, 4, 4), SamplerSettings(3, 5.0, cfg_high=4.0, cfg_low=3.0)
    options = CompileOptions(backend=broken)
    with caplog.at_level(logging.WARNING, logger="wan_experts"):
        out = sample(experts.__class__(experts.high, experts.low, experts.boundary, options), torch.zeros(shape),
                     text, settings, noise=make_noise(shape, 3))
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "the compiler crashed" in warnings[0], warnings
    plain = sample(experts, torch.zeros(shape), text, settings, noise=make_noise(shape, 3))
    assert torch.equal(out.latents, plain.latents)


def test_bad_options_are_refused_naming_the_input():
    with pytest.raises(wan.errors.InputError, match="compile mode 'fast'"):
        CompileOptions(mode="fast")
    with pytest.raises(wan.errors.InputError, match="compile scope"):
        CompileOptions(scope="head")


def test_inductor_output_equals_eager():
    """The real backend (C++ code generation) on one tiny block: float32 results within reassociation error."""
    model = tiny_dit(dim=32, layers=2)
    x, t, ctx = small_inputs(model, 1, 2, 4)
    with torch.no_grad():
        eager = model(x, t, ctx)
    out = compiled_forward(model, x, t, ctx, CompileOptions())
    assert graphs() == 1 and breaks() == {}
    scale = eager.abs().max()
    assert (out - eager).abs().max() <= 1e-5 * scale


def test_node_returns_a_compiled_copy_and_leaves_the_input_alone(pack):
    ours = tiny_experts("wan22_t2v_a14b")
    experts = pack.wan.experts.ExpertSet(ours.high, ours.low, ours.boundary)  # the pack's own class (ComfyUI's name)
    node = pack.NODE_CLASS_MAPPINGS["WanExpertsCompile"]()
    (out,) = node.compile(experts, mode="max-autotune-no-cudagraphs", dynamic="off", scope="whole model")
    assert (out.compile.mode, out.compile.dynamic, out.compile.scope) == ("max-autotune-no-cudagraphs", "off",
                                                                          "whole model")
    assert experts.compile is None and out.high is experts.high and out.low is experts.low
    assert out.boundary == experts.boundary


def test_cli_flags():
    from wan.dit.compile import compile_settings
    from wan.generate import build_parser

    args = build_parser().parse_args(["--demo", "--compile", "--compile_scope", "whole_model", "--fp8_matmul"])
    assert compile_settings(args) == {"compile": CompileOptions(scope="whole model"), "fp8_matmul": True}
    assert compile_settings(build_parser().parse_args(["--demo"])) == {"compile": None, "fp8_matmul": False}


def test_s2v_blocks_compile_without_breaks(tmp_path):
    """Wan 2.2 S2V: its blocks (segment-wise modulation) compiled one by one, the audio injector eager between them."""
    from tiny_dit import save_safetensors, state_dict_of
    from tiny_s2v import official_s2v, s2v_inputs
    from wan.dit.s2v import S2VInputs

    model = wan.load_dit(save_safetensors(state_dict_of(official_s2v()), tmp_path / "wan2.2_s2v_tiny.safetensors"))
    x, ctx, ref, motion, pose, audio = s2v_inputs(frames=2, h=8, w=8, seed=6)
    cond = S2VInputs(audio, ref, motion, pose)
    with torch.no_grad():
        eager = model(x, torch.tensor([500.0]), ctx, s2v=cond)
        with compiled_models([model], EAGER, "cpu") as runner:
            out = model(x, torch.tensor([500.0]), ctx, s2v=cond)
    assert runner.failed is None and breaks() == {} and graphs() == 1
    assert torch.equal(out, eager)


def test_vace_blocks_compile_without_breaks(tmp_path):
    """Wan 2.1 VACE: the main blocks and the VACE blocks compiled (one graph for the main blocks, one per VACE block
    layout: the first VACE block has its input projection), no recompile at a second timestep, equal to eager."""
    from tiny_dit import save_safetensors, state_dict_of
    from tiny_vace import official_vace, vace_inputs
    from wan.dit.vace import VaceInputs

    model = wan.load_dit(save_safetensors(state_dict_of(official_vace()), tmp_path / "wan2.1_vace_tiny.safetensors"))
    x, ctx, vace = vace_inputs()
    cond = VaceInputs(vace, 0.8)
    with torch.no_grad():
        eager = [model(x, torch.tensor([t]), ctx, vace=cond) for t in (700.0, 300.0)]
        with compiled_models([model], EAGER, "cpu") as runner:
            out = [model(x, torch.tensor([700.0]), ctx, vace=cond)]
            first = graphs()
            out.append(model(x, torch.tensor([300.0]), ctx, vace=cond))
    assert runner.failed is None and breaks() == {} and first == 3 and graphs() == first
    assert all(torch.equal(a, b) for a, b in zip(out, eager))


def test_animate_blocks_compile_without_breaks(tmp_path):
    """Wan 2.2 Animate: its blocks compiled (one graph), the face adapters eager between them, equal to eager."""
    from tiny_animate import animate_inputs, official_animate
    from tiny_dit import save_safetensors, state_dict_of
    from wan.dit.animate import AnimateInputs

    model = wan.load_dit(save_safetensors(state_dict_of(official_animate()), tmp_path / "wan2.2_animate_tiny.safetensors"))
    x, y, ctx, clip, pose, face = animate_inputs()
    cond = AnimateInputs(pose, face)
    with torch.no_grad():
        eager = model(x, torch.tensor([500.0]), ctx, clip_fea=clip, y=y, animate=cond)
        with compiled_models([model], EAGER, "cpu") as runner:
            out = model(x, torch.tensor([500.0]), ctx, clip_fea=clip, y=y, animate=cond)
    assert runner.failed is None and breaks() == {} and graphs() == 1
    assert torch.equal(out, eager)
