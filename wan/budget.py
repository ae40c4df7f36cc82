"""Memory budget: how much a run will need, checked before anything large is allocated.

Two limits apply. A fixed ceiling (``MAX_TOKENS`` DiT tokens per run, at most ``MAX_LATENT_FRAMES`` latent frames)
bounds every request whatever the machine; then the estimate of a sampling run (DiT activations, the expert's
weights still to be moved onto the device, latents, step-cache residuals) or of a VAE pass (its working set per
frame or tile, the output video) must fit the memory free on its device (``wan.memory.free_bytes``: on CUDA the
driver's free memory plus what PyTorch holds unused; on the CPU the available RAM and the cgroup limit, in a
container), after the memory host (ComfyUI) was asked to make room. Devices that report nothing (e.g. MPS) get the
ceiling only.

The estimates count the tensors the modules allocate, measured per token / per pixel from traces of the real
forward passes (``tests/test_budget.py`` checks them against a trace of the live tensors on the meta device);
allocator slack is not included, so a refused run would certainly not have fitted.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Callable

import torch

from .devices import same_device
from .errors import InputError
from .memory import free_bytes, memory_host
from .memory_swap import nbytes, slots_of, unique_tensors

GiB = 1 << 30
MAX_TOKENS = 1 << 18  # DiT tokens per run (batch x tokens per video): e.g. 1280x720 x 285 frames, or 4 x 81 at 720p
MAX_LATENT_FRAMES = 1024  # the DiT's rotary position table covers 1024 positions per axis
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
VAE_ENCODE = {"2.1": 36, "2.2": 12}  # per input pixel, x encoder width


class BudgetError(InputError):
    """The request exceeds the ceiling or the memory of its device."""


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


# -- the ceiling --------------------------------------------------------------------------------------------------
def check_ceiling(batch: int, grid: tuple[int, int, int], pixels: tuple[int, int]) -> None:
    """``grid``: DiT tokens (frames, height, width) of one video; ``pixels``: its (width, height) for messages."""
    f, h, w = grid
    tokens = batch * f * h * w
    if tokens <= MAX_TOKENS and f <= MAX_LATENT_FRAMES and max(h, w) <= MAX_LATENT_FRAMES:
        return
    width, height = pixels
    most = min(MAX_LATENT_FRAMES, MAX_TOKENS // max(1, batch * h * w))
    fix = (f"at {width}x{height} with batch {batch} at most {_frames_text(frames_of(most))}" if most >= 1 else
           f"{width}x{height} is too large even for one frame at batch {batch}; lower the size or the batch")
    raise BudgetError(f"{width}x{height}, {frames_of(f)} frames, batch {batch} is {tokens} DiT tokens "
                      f"({f}x{h}x{w} per video); the ceiling is {MAX_TOKENS} tokens per run and "
                      f"{MAX_LATENT_FRAMES} latent frames (README, 'Security'): {fix}")


def frames_of(latent_frames: int) -> int:
    return 1 + T_STRIDE * (latent_frames - 1)


def _frames_text(frames: int) -> str:
    return "1 frame fits" if frames == 1 else f"{frames} frames fit"


# -- sampling -----------------------------------------------------------------------------------------------------
def dit_activation_bytes(config, dtype: torch.dtype, tokens: int, cached: bool = False,
                         weight_dtype: torch.dtype | None = None) -> int:
    """The live tensors of one DiT forward over ``tokens`` tokens (all batch items), one CFG branch at a time.

    Besides the per-token working set: the float32 copy of the time-embedding weights (that part runs in float32,
    before the blocks) and, for weights stored in another dtype (fp8), the cast copies of one layer in use."""
    es = torch.empty((), dtype=dtype).element_size()
    per_channel = STREAM_BYTES.get(es, 20) + (PER_TOKEN_TIME_BYTES if config.per_token_time else 0)
    per_token = config.dim * per_channel + 2 * config.ffn_dim * es + (config.dim * CACHE_BYTES if cached else 0)
    stored = weight_dtype or dtype
    time_copy = 0 if stored == torch.float32 else 6 * config.dim * config.dim * 4  # the time projection's weight
    layer_copy = 0 if stored == dtype else 2 * config.dim * config.ffn_dim * es
    return max(tokens * per_token + layer_copy, time_copy)


def module_bytes(module: torch.nn.Module, exclude=()) -> int:
    """Bytes of every tensor of ``module`` (each counted once; LoRA patches included)."""
    return nbytes(unique_tensors(slots_of(module, exclude)))


def device_need(model: torch.nn.Module) -> int:
    """Weight bytes ``model`` keeps on the device while it runs: all of them, or with block streaming
    (``wan.offload``) the parts outside the blocks, the resident blocks (none counted for auto, which streams what
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


def estimate_sampling(experts, shape, device, step_cache: bool = False, keep_both: bool = False) -> Estimate:
    """Device memory of a sampling run of ``experts`` (an ExpertSet or one WanDiT) over latents of ``shape``
    [B, C, T, h, w]."""
    from .experts import as_expert_set

    experts, device = as_expert_set(experts), torch.device(device)
    cfg = experts.config
    b, c, t, h, w = shape
    pt, ph, pw = cfg.patch_size
    tokens = b * (t // pt) * (h // ph) * (w // pw)
    dtype = getattr(experts.high, "compute_dtype", torch.float32)
    es = torch.empty((), dtype=dtype).element_size()
    latents = LATENT_COPIES * b * cfg.in_dim * t * h * w * 4
    context = b * CONTEXT_TOKENS * cfg.dim * (4 + es)
    stored = experts.high.blocks[0].ffn[0].weight.dtype if len(experts.high.blocks) else dtype
    return Estimate("sampling", device, (
        ("activations", dit_activation_bytes(cfg, dtype, tokens, step_cache, stored) + context),
        ("weights", weights_to_move(experts.models, device, keep_both)), ("latents", latents)))


def check_sampling(experts, shape, device, step_cache: bool = False, keep_both: bool = False) -> Estimate:
    """Refuse a sampling run that exceeds the ceiling or cannot fit its device; names the most frames that fit."""
    b, c, t, h, w = shape
    pt, ph, pw = experts.config.patch_size
    stride = 16 if c == 48 else 8
    size = (w * stride, h * stride)
    check_ceiling(b, (t // pt, h // ph, w // pw), size)
    estimate = estimate_sampling(experts, shape, device, step_cache, keep_both)
    require(estimate, lambda frames: estimate_sampling(experts, (b, c, frames, h, w), device, step_cache,
                                                       keep_both), size, b)
    return estimate


# -- VAE passes ---------------------------------------------------------------------------------------------------
def vae_estimates(vae, kind: str, shape, tiled: bool, tile_size: int, out_device) -> list[Estimate]:
    """Device (and, when the output goes elsewhere, host) memory of one VAE encode or decode of ``shape``."""
    cfg, device = vae.config, torch.device(vae.device)
    out_device = torch.device(out_device)
    es = torch.empty((), dtype=vae.dtype).element_size()
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


def check_vae(vae, kind: str, shape, tiled: bool, tile_size: int, out_device) -> None:
    b, _, t, h, w = shape
    s = vae.config.stride[1] if kind == "decode" else 1
    for est in vae_estimates(vae, kind, shape, tiled, tile_size, out_device):
        def at(latent_frames, est=est):
            frames = latent_frames if kind == "decode" else frames_of(latent_frames)
            return next(e for e in vae_estimates(vae, kind, (b, 3, frames, h, w), tiled, tile_size, out_device)
                        if e.what == est.what)
        require(est, at, (w * s, h * s), b, advice="" if tiled else "or decode in tiles (tiled 'on'); ")


# -- the device ---------------------------------------------------------------------------------------------------
def available_bytes(device) -> int | None:
    """Memory free for new tensors on ``device``; None when the device does not say."""
    device = torch.device(device)
    return host_available_bytes() if device.type == "cpu" else free_bytes(device)


def host_available_bytes() -> int | None:
    """Available RAM (``MemAvailable``), lowered to the container's cgroup limit when there is one."""
    values = [v for v in (_meminfo_available(), _cgroup_room()) if v is not None]
    if not values:
        try:
            return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        except (AttributeError, OSError, ValueError):
            return None
    return min(values)


def require(estimate: Estimate, at_frames: Callable[[int], Estimate], pixels: tuple[int, int], batch: int,
            advice: str = "") -> None:
    """Raise when ``estimate`` exceeds the free memory, after asking the memory host (ComfyUI) to make room;
    ``at_frames(latent_frames)`` re-estimates at another length so the message can say how many frames fit."""
    free = available_bytes(estimate.device)
    if free is None or estimate.total <= free:
        return
    memory_host().make_room(estimate.total, estimate.device)
    free = available_bytes(estimate.device)
    if free is None or estimate.total <= free:
        return
    most = _most_frames(at_frames, free)
    width, height = pixels
    weights = dict(estimate.parts).get("weights", 0)
    fix = (f"at {width}x{height} with batch {batch} at most {_frames_text(frames_of(most))}" if most else
           f"the model's weights alone need {gib(weights)} GiB: use its fp8 files" if weights > free else
           f"not even one frame fits at {width}x{height} with batch {batch}")
    raise BudgetError(f"{estimate.what} needs {estimate.describe()}, but only {gib(free)} GiB is free there: {fix}; "
                      f"{advice}lower the size, frames or batch, or free memory (close other programs, unload "
                      f"models)")


def _most_frames(at_frames: Callable[[int], Estimate], free: int) -> int:
    """The largest latent frame count whose estimate fits ``free`` (0 when none), by bisection."""
    lo, hi = 0, MAX_LATENT_FRAMES
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if at_frames(mid).total <= free:
            lo = mid
        else:
            hi = mid - 1
    return lo


def _meminfo_available() -> int | None:
    try:
        with open("/proc/meminfo", "rb") as f:
            for line in f:
                if line.startswith(b"MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def _cgroup_room() -> int | None:
    """cgroup v2 ``memory.max`` minus the group's memory that is not reclaimable file cache; None without a
    limit."""
    root = "/sys/fs/cgroup/"
    try:
        with open(root + "memory.max") as f:
            limit = f.read().strip()
        if limit == "max":
            return None
        with open(root + "memory.current") as f:
            used = int(f.read().strip())
        with open(root + "memory.stat") as f:
            stat = dict(line.split() for line in f if line.count(" ") == 1)
        return max(0, int(limit) - used + int(stat.get("file", 0)))
    except (OSError, ValueError):
        return None
