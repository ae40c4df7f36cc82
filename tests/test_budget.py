"""The memory budget (wan/budget/check.py): its estimates against the live tensors of the real modules, the ceiling, and
refusals that name the largest size that fits. Nothing large is allocated: models are built on the meta device and
the free memory is set by the test."""
import pytest
import torch

from meta_trace import flat_attention, traced_peak
from wan.budget import check as budget
from wan.budget import estimates
from wan.dit.config import WanDiTConfig
from wan.dit.model import WanDiT
from wan.errors import InputError
from wan.experts import ExpertSet
from wan.sampling import SamplerSettings, latent_shape, make_noise, sample
from wan.variants import VARIANTS
from wan.vae.config import WAN21_VAE, WAN22_VAE
from wan.vae.model import WanVAEModel

A14B = dict(dim=5120, ffn_dim=13824, num_heads=40)
DIT_CASES = [  # (config, latent [C, T, h, w], dtype)
    (WanDiTConfig(dim=1536, ffn_dim=8960, num_heads=12, num_layers=2), (16, 21, 60, 104), torch.bfloat16),
    (WanDiTConfig(**A14B, num_layers=2), (16, 21, 60, 104), torch.bfloat16),
    (WanDiTConfig(**A14B, num_layers=2), (16, 21, 60, 104), torch.float32),
    (WanDiTConfig(**A14B, num_layers=2, in_dim=36, clip_dim=1280), (16, 21, 60, 104), torch.float16),
    (WanDiTConfig(dim=3072, ffn_dim=14336, num_heads=24, num_layers=2, in_dim=48, out_dim=48), (48, 31, 44, 80),
     torch.bfloat16),
    (WanDiTConfig(**A14B, num_layers=2), (16, 1, 4, 4), torch.bfloat16),  # few tokens: the float32 time weights
]


def meta_dit(cfg: WanDiTConfig, dtype=torch.bfloat16, variant=None, role="single") -> WanDiT:
    with torch.device("meta"):
        model = WanDiT(cfg, variant, role).to(dtype)
    model.compute_dtype = dtype
    model._attn = flat_attention
    return model


@pytest.mark.parametrize("cfg,latent,dtype", DIT_CASES)
def test_dit_activation_estimate_bounds_the_traced_peak(cfg, latent, dtype):
    """Oracle: the peak of the live tensors one forward of the real WanDiT creates (meta-device trace). The
    estimate must cover it and exceed it by at most 10% (it is a plain per-token formula)."""
    model = meta_dit(cfg, dtype)
    c, t, h, w = latent
    x = torch.empty(1, c, t, h, w, device="meta")
    y = torch.empty(1, cfg.in_dim - c, t, h, w, device="meta") if cfg.in_dim == 36 else None
    tokens = t * (h // 2) * (w // 2)
    steps = torch.full((1, tokens) if cfg.per_token_time else (1,), 500.0, device="meta")
    clip = torch.empty(1, 257, 1280, device="meta") if cfg.has_clip else None
    context = torch.empty(1, 512, cfg.text_dim, device="meta")
    peak = traced_peak(lambda: model(x, steps, context, clip_fea=clip, y=y))
    estimate = estimates.estimate_sampling(ExpertSet(model), (1, c, t, h, w), "meta").parts[0][1]
    assert peak <= estimate <= 1.10 * peak, (peak, estimate)


@pytest.mark.parametrize("latent", [(16, 1, 4, 4), (16, 21, 60, 104)])
def test_fp8_weights_estimate_bounds_the_traced_peak(latent):
    """fp8 Linear weights (scaled, as Comfy-Org's fp8_scaled files): the per-layer cast copies are counted.
    Oracle and tolerance as above."""
    from wan.weights.ops import Linear

    model = meta_dit(WanDiTConfig(**A14B, num_layers=2))
    for layer in model.blocks.modules():
        if isinstance(layer, Linear):
            layer.weight = torch.nn.Parameter(layer.weight.to(torch.float8_e4m3fn), requires_grad=False)
            layer.scale_weight = torch.ones((), device="meta")
    x, context = torch.empty(1, *latent, device="meta"), torch.empty(1, 512, 4096, device="meta")
    peak = traced_peak(lambda: model(x, torch.full((1,), 500.0, device="meta"), context))
    estimate = estimates.estimate_sampling(ExpertSet(model), (1, *latent), "meta").parts[0][1]
    assert peak <= estimate <= 1.10 * peak, (peak, estimate)


@pytest.mark.parametrize("cfg", [WAN21_VAE, WAN22_VAE])
@pytest.mark.parametrize("kind", ["decode", "encode"])
def test_vae_estimate_bounds_the_traced_peak(cfg, kind):
    """Oracle: the live tensors of the real VAE's chunked pass (meta trace, bf16, 480x832, 3 latent frames);
    estimate within +25%."""
    with torch.device("meta"):
        model = WanVAEModel(cfg).to(torch.bfloat16)
    s = cfg.stride[1]
    if kind == "decode":
        shape = (1, cfg.z_dim, 3, 480 // s, 832 // s)
        run = lambda: model.decode_chunks(torch.empty(shape, device="meta", dtype=torch.bfloat16))  # noqa: E731
    else:
        shape = (1, 3, 9, 480, 832)
        run = lambda: model.encode_chunks(torch.empty(shape, device="meta", dtype=torch.bfloat16))  # noqa: E731
    vae = type("MetaVAE", (), {"config": cfg, "device": torch.device("meta"), "dtype": torch.bfloat16})()
    (estimate,) = estimates.vae_estimates(vae, kind, shape, False, 512, "meta")
    peak = traced_peak(run)
    assert peak <= estimate.total <= 1.25 * peak, (peak, estimate.total)


def test_video_ceiling_refuses_huge_sizes_at_once():
    """The whole video (latent_shape, before anything is allocated): pixels, latent frames, tokens of one frame."""
    with pytest.raises(budget.BudgetError, match=r"8192x8192, 1001 frames, batch 1 is 67175972864 pixels.*at most "
                                                 r"29 frames fit"):
        latent_shape(8192, 8192, 1001, 16)
    assert latent_shape(8192, 8192, 29, 16)[2] == 8
    with pytest.raises(budget.BudgetError, match=r"9216x9216 with batch 1 is 331776 DiT tokens per frame"):
        latent_shape(9216, 9216, 1, 16)
    with pytest.raises(budget.BudgetError, match=r"at most 2329 frames fit"):
        latent_shape(1280, 720, 2333, 16)
    assert latent_shape(1280, 720, 2329, 16) == (1, 16, 583, 90, 160)
    with pytest.raises(budget.BudgetError, match="1024 latent frames"):
        latent_shape(16, 16, 4097, 16)


def test_model_call_ceiling_and_context_windows():
    """One model call sees at most MAX_TOKENS: a long 720p video runs only through context windows, and then the
    activations are those of one window (the step cache keeps residuals for every window)."""
    from wan.sampling.windows import ContextWindows

    model = meta_dit(WanDiTConfig(**A14B, num_layers=2), variant=VARIANTS["wan22_t2v_a14b"], role="high")
    shape = latent_shape(1280, 720, 481, 16)  # 121 latent frames
    with pytest.raises(budget.BudgetError, match=r"the video at 1280x720 with batch 1 is 435600 DiT tokens per model "
                                                 r"call.*at most 285 frames fit per call; use context windows"):
        budget.check_sampling(model, shape, "meta")
    windows = ContextWindows(context_frames=81, context_overlap=16)
    budget.check_sampling(model, shape, "meta", context=windows)
    whole = estimates.estimate_sampling(model, latent_shape(1280, 720, 81, 16), "meta")
    windowed = estimates.estimate_sampling(model, shape, "meta", step_cache=True, context=windows)
    parts = dict(windowed.parts)
    assert parts["activations"] == dict(whole.parts)["activations"]
    covered = sum(len(w) for w in __import__("wan.sampling.windows", fromlist=["x"]).context_windows(
        121, windows.size, windows.overlap, "static", 0))
    assert covered > 121 and parts["step cache"] == covered * 45 * 80 * 5120 * estimates.CACHE_BYTES


def test_refusal_names_the_largest_frame_count_that_fits(monkeypatch):
    """A 14B expert pair at 720p on a 40 GiB device: refused with the estimate; the frame count it offers fits
    and one latent frame more does not (checked with the estimate itself)."""
    high = meta_dit(WanDiTConfig(**A14B, num_layers=40), variant=VARIANTS["wan22_t2v_a14b"], role="high")
    low = meta_dit(WanDiTConfig(**A14B, num_layers=40), variant=VARIANTS["wan22_t2v_a14b"], role="low")
    experts = ExpertSet(high, low)
    free = 40 << 30
    monkeypatch.setattr(budget, "available_bytes", lambda device: free)
    shape = latent_shape(1280, 720, 121, 16)
    with pytest.raises(budget.BudgetError) as info:
        budget.check_sampling(experts, shape, "cuda")
    message = str(info.value)
    assert "sampling needs about" in message and "weights 26.6" in message and "only 40.0 GiB is free" in message
    frames = int(message.split("at most ")[1].split(" frames")[0])
    latent_frames = (frames - 1) // 4 + 1
    fits = estimates.estimate_sampling(experts, shape[:2] + (latent_frames,) + shape[3:], "cuda").total
    too_many = estimates.estimate_sampling(experts, shape[:2] + (latent_frames + 1,) + shape[3:], "cuda").total
    assert fits <= free < too_many
    budget.check_sampling(experts, shape[:2] + (latent_frames,) + shape[3:], "cuda")


def test_weights_count_once_for_a_pair_and_twice_when_both_stay():
    high = meta_dit(WanDiTConfig(**A14B, num_layers=2), variant=VARIANTS["wan22_t2v_a14b"], role="high")
    low = meta_dit(WanDiTConfig(**A14B, num_layers=2), variant=VARIANTS["wan22_t2v_a14b"], role="low")
    one = estimates.module_bytes(high)
    assert one == sum(p.numel() * p.element_size() for p in high.parameters())
    assert estimates.weights_to_move([high, low], torch.device("cuda"), keep_both=False) == one
    assert estimates.weights_to_move([high, low], torch.device("cuda"), keep_both=True) == 2 * one
    assert estimates.weights_to_move([high, low], torch.device("cpu"), keep_both=True) == 0


def test_sequence_parallel_splits_the_tokens_of_a_call():
    """With Ulysses over 4 processes each holds a quarter of the tokens: the 121-latent-frame 720p call that one
    process may not make passes, and the activations per process are a quarter (the weights, all of them)."""
    from types import SimpleNamespace

    model = meta_dit(WanDiTConfig(**A14B, num_layers=2), variant=VARIANTS["wan22_t2v_a14b"], role="high")
    shape = latent_shape(1280, 720, 481, 16)
    alone = dict(estimates.estimate_sampling(model, shape, "meta").parts)["activations"]
    model.sequence_parallel = SimpleNamespace(size=4)
    budget.check_sampling(model, shape, "meta")
    split = dict(estimates.estimate_sampling(model, shape, "meta").parts)["activations"]
    assert split < alone / 3.5


def test_block_streaming_needs_only_the_resident_blocks_on_the_device():
    """offload_blocks N: everything outside the blocks, the 40 - N resident blocks and two streaming buffers; auto:
    no resident block is counted (auto streams what does not fit)."""
    from wan.memory.offload import set_block_streaming

    model = meta_dit(WanDiTConfig(**A14B, num_layers=40), variant=VARIANTS["wan22_t2v_a14b"], role="high")
    block, whole = estimates.module_bytes(model.blocks[0]), estimates.module_bytes(model)
    rest = whole - 40 * block
    cuda = torch.device("cuda")
    set_block_streaming(model, 30)
    assert estimates.weights_to_move([model], cuda, False) == rest + 10 * block + 2 * block
    set_block_streaming(model, "auto")
    assert estimates.weights_to_move([model], cuda, False) == rest + 2 * block
    set_block_streaming(model, 0)
    assert estimates.weights_to_move([model], cuda, False) == whole


def test_the_memory_host_is_asked_for_room_before_refusing(monkeypatch):
    """Inside ComfyUI the host unloads its own models when asked (wan.memory.place.MemoryHost.make_room)."""
    from wan.memory.place import MemoryHost, set_memory_host

    model = meta_dit(WanDiTConfig(**A14B, num_layers=2), variant=VARIANTS["wan22_t2v_a14b"], role="high")
    need = estimates.estimate_sampling(model, (1, 16, 21, 60, 104), "cuda").total
    free = [need // 2]
    asked = []

    class Host(MemoryHost):
        def make_room(self, nbytes, device):
            asked.append(nbytes)
            free[0] = nbytes

    monkeypatch.setattr(budget, "available_bytes", lambda device: free[0])
    previous = set_memory_host(Host())
    try:
        budget.check_sampling(model, (1, 16, 21, 60, 104), "cuda")
    finally:
        set_memory_host(previous)
    assert asked == [need]


def test_sample_refuses_before_the_first_step(monkeypatch, tmp_path):
    """A real (tiny) run on the CPU with too little free memory stops before any model call."""
    from test_sampling_models import ours_from_official, prompts
    from tiny_dit import official_dit

    model = ours_from_official(official_dit("t2v"), tmp_path / "t2v.safetensors")
    calls = []
    monkeypatch.setattr(budget, "available_bytes", lambda device: 1 << 20)
    shape = (1, 16, 2, 4, 4)
    with pytest.raises(InputError, match="not even one frame fits|at most"):
        sample(model, torch.zeros(shape), prompts()[2], SamplerSettings(2, 5.0), noise=make_noise(shape, 0),
               callback=calls.append)
    assert calls == []


def test_host_memory_is_reported():
    free = budget.available_bytes("cpu")
    assert free is None or free > 0
    assert budget.available_bytes("meta") is None
