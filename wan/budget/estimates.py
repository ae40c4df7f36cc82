"""Memory estimates: what a sampling run or a VAE pass needs on its device, by part, before anything is allocated.

The numbers count the tensors the modules allocate, measured per token / per pixel from traces of the real forward
passes (``tests/test_budget.py`` checks them against a trace of the live tensors on the meta device;
``benchmarks/memory_budget.py`` does so at the released models' full sizes). Allocator slack is not included.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ..memory.devices import same_device
from ..memory.place import GiB
from ..memory.swap import nbytes, slots_of, unique_tensors
from ..weights.ops import widened_bytes

T_STRIDE = 4  # pixel frames per latent frame (after the first)

# Bytes per token per channel of model width (besides the feed-forward, 2 x ffn_dim elements per token), by the
# compute dtype's element size: residual stream, norms and modulation in float32, attention in the compute dtype.
STREAM_BYTES = {1: 20, 2: 20, 4: 17}
PER_TOKEN_TIME_BYTES = 52  # TI2V-5B: float32 time embedding and modulation per token, per channel
CACHE_BYTES = 8  # step cache: a float32 residual for each of the two CFG branches, per token and channel
CONTEXT_TOKENS = 1024  # text (512) and image (up to 514) tokens, float32 and compute dtype
LATENT_COPIES = 12  # latents, noise, both guidance outputs, x0, solver history (float32)
# Elements per pixel per channel of base width of one VAE pass (one time chunk; chunks run one after another).
VAE_DECODE = {"2.1": 45, "2.2": 16}  # per output pixel, x decoder width
VAE_ENCODE = {"2.1": 36, "2.2": 10}  # per input pixel, x encoder width


@dataclass(frozen=True)
class Estimate:
    """What one stage needs on one device, by part."""

    what: str
    device: torch.device
    parts: tuple[tuple[str, int], ...]

    @property
    def total(self) -> int:
        return sum(n for _, n in self.parts)

    def describe(self) -> str:
        parts = ", ".join(f"{name} {gib(n)}" for name, n in self.parts if n)
        return f"about {gib(self.total)} GiB on {self.device} ({parts} GiB)"


def gib(n: int) -> str:
    return f"{n / GiB:.2f}" if n < 10 * GiB else f"{n / GiB:.1f}"


def frames_of(latent_frames: int) -> int:
    return 1 + T_STRIDE * (latent_frames - 1)


# -- sampling -----------------------------------------------------------------------------------------------------
def dit_activation_bytes(config, dtype: torch.dtype, tokens: int, weight_dtype: torch.dtype | None = None) -> int:
    """The live tensors of one DiT forward over ``tokens`` tokens (all batch items), one CFG branch at a time.

    Besides the per-token working set: the float32 copy of the time-embedding weights (that part runs in float32,
    before the blocks) and, for weights stored in another dtype (fp8), the cast copies of one layer in use."""
    es = torch.empty((), dtype=dtype).element_size()
    per_channel = STREAM_BYTES.get(es, 20) + (PER_TOKEN_TIME_BYTES if config.per_token_time else 0)
    per_token = config.dim * per_channel + 2 * config.ffn_dim * es
    stored = weight_dtype or dtype
    time_copy = 0 if stored == torch.float32 else 6 * config.dim * config.dim * 4  # the time projection's weight
    layer_copy = 0 if stored == dtype else 2 * config.dim * config.ffn_dim * es
    return max(tokens * per_token + layer_copy, time_copy)


def module_bytes(module: torch.nn.Module, exclude=()) -> int:
    """Bytes of every tensor of ``module`` (each counted once; LoRA patches included)."""
    return nbytes(unique_tensors(slots_of(module, exclude)))


def device_need(model: torch.nn.Module) -> int:
    """Weight bytes ``model`` keeps on the device while it runs: all of them, or with block streaming
    (``wan.memory.offload``) the parts outside the blocks, the resident blocks (none counted for auto, which streams what
    does not fit) and the two block-sized streaming buffers."""
    streaming = getattr(model, "block_streaming", None)
    if streaming is None:
        return module_bytes(model)
    blocks = [module_bytes(block) for block in model.blocks]
    resident = 0 if streaming.auto else sum(blocks[:max(0, len(blocks) - streaming.blocks)])
    return module_bytes(model, (model.blocks,)) + resident + 2 * max(blocks, default=0)


def bytes_on(module: torch.nn.Module, device: torch.device) -> int:
    """Bytes of ``module``'s tensors that are on ``device`` now (placed copies included)."""
    return nbytes([t for t in unique_tensors(slots_of(module)) if same_device(t.device, device)])


def weights_to_move(models, device: torch.device, keep_both: bool) -> int:
    """Weight bytes that still have to come onto ``device``. Only one expert is there at a time unless
    ``keep_both``; on the CPU the weights are already in (or mapped into) memory."""
    if device.type == "cpu":
        return 0
    needs, there = [device_need(m) for m in models], [bytes_on(m, device) for m in models]
    if keep_both:
        return sum(max(0, n - t) for n, t in zip(needs, there))
    return max(0, max(needs) - sum(there))


def estimate_sampling(experts, shape, device, step_cache: bool = False, keep_both: bool = False,
                      context=None) -> Estimate:
    """Device memory of a sampling run of ``experts`` (an ExpertSet or one WanDiT) over latents of ``shape``
    [B, C, T, h, w]; ``context``: its ``ContextWindows``, if any (the model then sees one window at a time)."""
    from ..experts import as_expert_set

    experts, device = as_expert_set(experts), torch.device(device)
    cfg = experts.config
    b, c, t, h, w = shape
    per_frame = b * (h // cfg.patch_size[1]) * (w // cfg.patch_size[2])
    call, cached = call_frames(t, context)
    ranks = token_ranks(experts)
    dtype = getattr(experts.high, "compute_dtype", torch.float32)
    es = torch.empty((), dtype=dtype).element_size()
    stored = experts.high.blocks[0].ffn[0].weight.dtype if len(experts.high.blocks) else dtype
    tokens = -(-call * per_frame // ranks)
    activations = (dit_activation_bytes(cfg, dtype, tokens, stored) + b * CONTEXT_TOKENS * cfg.dim * (4 + es)
                   + widened_bytes(cfg.dim, cfg.ffn_dim, tokens, dtype, device))  # the largest layer's
    vace = getattr(experts.high, "vace_config", None)
    if vace is not None:  # the VACE tokens in and out of a VACE block and its hint (float32) beside the video
        activations += 3 * tokens * cfg.dim * 4 + b * vace.in_dim * t * h * w * 4  # + context
    residuals = -(-cached * per_frame // ranks) * cfg.dim * CACHE_BYTES if step_cache else 0
    return Estimate("sampling", device, (
        ("activations", activations), ("weights", weights_to_move(experts.models, device, keep_both)),
        ("latents", LATENT_COPIES * b * cfg.in_dim * t * h * w * 4), ("step cache", residuals)))


def token_ranks(experts) -> int:
    """Processes that split the tokens of each forward (sequence parallel, ``wan.distributed``), 1 without."""
    parallel = getattr(getattr(experts, "high", experts), "sequence_parallel", None)
    return parallel.size if parallel is not None else 1


def call_frames(t: int, context=None) -> tuple[int, int]:
    """(latent frames per model call, latent frames whose step-cache residuals are kept): the whole video, or with
    context windows one window (plus the start frame TI2V-5B may put in front) and all windows together."""
    if context is None or t <= context.size:
        return t, t
    from ..sampling.windows import context_windows

    windows = context_windows(t, context.size, context.overlap, context.schedule, 0)
    return context.size + (context.image_cond == "all"), sum(len(window) for window in windows)


# -- VAE passes ---------------------------------------------------------------------------------------------------
def vae_estimates(vae, kind: str, shape, tiled: bool, tile_size: int, out_device) -> list[Estimate]:
    """Device (and, when the output goes elsewhere, host) memory of one VAE encode or decode of ``shape``."""
    cfg, device = vae.config, torch.device(vae.device)
    out_device = torch.device(out_device)
    es = torch.empty((), dtype=getattr(vae, "pass_dtype", vae.dtype)).element_size()
    s, decode = cfg.stride[1], kind == "decode"
    b, _, t, h, w = shape
    height, width = (h * s, w * s) if decode else (h, w)
    frames = frames_of(t) if decode else t
    area = min(height, tile_size) * min(width, tile_size) if tiled else height * width
    factor = VAE_DECODE[cfg.version] * cfg.dec_dim if decode else VAE_ENCODE[cfg.version] * cfg.dim
    video = 3 * frames * height * width
    latent = cfg.z_dim * (1 + (frames - 1) // T_STRIDE) * (height // s) * (width // s)
    output = b * 4 * (video if decode else latent)
    working = ("working set", factor * area * es + (0 if decode else video * es))
    if same_device(out_device, device):
        return [Estimate(f"VAE {kind}", device, (working, ("output", output)))]
    return [Estimate(f"VAE {kind}", device, (working,)), Estimate(f"VAE {kind} output", out_device,
                                                                  (("output", output),))]


