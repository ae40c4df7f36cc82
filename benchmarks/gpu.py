"""The one-command GPU check: our DiT step in every memory configuration against the same step in diffusers.

    python benchmarks/gpu.py                  # real 14B shapes (dim 5120, ffn 13824, 40 heads), 6 blocks,
                                              # 480p x 81 frames (32760 tokens); about 2-3 minutes on one H100/H200
    python benchmarks/gpu.py --quick          # 4 blocks, 17 frames (7800 tokens), fewer repeats: about a minute
    python benchmarks/gpu.py --json out.json  # also write the numbers as JSON
    python benchmarks/gpu.py --tiny           # tiny shapes on any device: a smoke run of this script (on a CPU
                                              # nothing is placed, so nothing is streamed)

Without a CUDA device (and without --tiny) it prints one line and exits 0.

Random weights in the real shapes, with a few blocks instead of 40 (time and memory per block are what matter).
A step is one classifier-free-guidance step: a conditional and an unconditional forward. Per configuration it
prints the step time, the peak GPU memory (weights included) and both as ratios to diffusers'
``WanTransformer3DModel`` running the same weights in bf16 with PyTorch SDPA, measured in the same run.
Configurations: bf16; scaled fp8 (Comfy-Org layout: fp8 weights, one float32 scale per layer); GGUF Q8_0 and Q4_K
(files written with the community converters' layout, loaded through ``wan.load_dit``; their blocks are random valid
data, so their output is not compared with diffusers', but one layer's dequantisation on the device is compared bit
for bit with the ``gguf`` package's own); block streaming with half the blocks streamed from CPU memory;
SageAttention and FlashAttention when installed (time and deviation against our bf16 sdpa run: the facts
``CUDA_MEASURED`` in wan/dit/attention.py is filled from); compiled blocks (``wan.dit.compile``: the first step's
time is the compile overhead); fp8 products on the scaled-fp8 weights (``wan.quant.fp8_product``; skipped below
sm89), alone and compiled, each against its uncompiled / exact run. A configuration is one entry in ``CONFIGS`` plus
a weight builder in ``BUILDERS``.
"""
from __future__ import annotations

import argparse
import atexit
import gc
import json
import shutil
import statistics
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from wan.dit.attention import available_backends  # noqa: E402
from wan.dit.compile import CompileOptions, compile_problem, compiled_models  # noqa: E402
from wan.quant import fp8_product  # noqa: E402
from wan.weights.ops import use_fp8_products  # noqa: E402
from wan.dit.config import WanDiTConfig  # noqa: E402
from wan.dit.model import WanDiT  # noqa: E402
from wan.memory.place import residency  # noqa: E402
from wan.memory.offload import activation_bytes, set_block_streaming  # noqa: E402
from wan.weights.ops import FP8_DTYPES  # noqa: E402
from wan.sampling.placement import ExpertPlacement  # noqa: E402
from wan.weights.assign import assign_weights  # noqa: E402

GiB = 1024 ** 3


@dataclass(frozen=True)
class Config:
    name: str
    weights: str  # a key of BUILDERS
    attention: str = "sdpa"
    stream_half: bool = False  # offload_blocks = half the blocks
    compile: bool = False  # compiled blocks (wan.dit.compile, default options)
    fp8_matmul: bool = False  # fp8 products on the fp8 weights (wan.quant.fp8_product)

    def skip_reason(self, device) -> str | None:
        if self.attention not in available_backends():
            return f"attention '{self.attention}' is not installed"
        if self.weights == "fp8_scaled" and not FP8_DTYPES:
            return "this PyTorch has no float8 dtypes"
        if self.fp8_matmul and fp8_product.kernel(device) is None:
            return "no fp8 product kernel on this device (CUDA needs sm89+)"
        if self.compile and compile_problem(CompileOptions(), device) is not None:
            return compile_problem(CompileOptions(), device)
        return None


CONFIGS = [
    Config("bf16", "bf16"),
    Config("fp8 scaled", "fp8_scaled"),
    Config("bf16, block streaming (half the blocks)", "bf16", stream_half=True),
    Config("fp8 scaled, block streaming (half the blocks)", "fp8_scaled", stream_half=True),
    Config("bf16, sage attention", "bf16", attention="sage"),
    Config("bf16, flash attention", "bf16", attention="flash"),
    Config("bf16, compiled blocks", "bf16", compile=True),
    Config("fp8 scaled, fp8 products", "fp8_scaled", fp8_matmul=True),
    Config("fp8 scaled, fp8 products, compiled blocks", "fp8_scaled", fp8_matmul=True, compile=True),
    Config("bf16, sage attention, compiled blocks", "bf16", attention="sage", compile=True),
    Config("gguf Q8_0", "gguf_q8_0"),
    Config("gguf Q4_K", "gguf_q4_k"),
    Config("gguf Q4_K, block streaming (half the blocks)", "gguf_q4_k", stream_half=True),
]


@dataclass
class Shapes:
    config: WanDiTConfig
    frames: int  # latent frames
    height: int  # latent height (pixels / 8)
    width: int
    repeats: int

    @property
    def tokens(self) -> int:
        return self.frames * (self.height // 2) * (self.width // 2)


def shapes_for(args) -> Shapes:
    if args.tiny:
        cfg = WanDiTConfig(dim=256, ffn_dim=512, num_heads=2, num_layers=2, text_dim=256, freq_dim=64)
        return Shapes(cfg, 2, 8, 12, 1)
    blocks = 4 if args.quick else 6
    cfg = WanDiTConfig(dim=5120, ffn_dim=13824, num_heads=40, num_layers=blocks)  # Wan 14B, a few blocks
    return Shapes(cfg, 5 if args.quick else 21, 60, 104, 2 if args.quick else 3)


# -- weights -------------------------------------------------------------------------------------------------------
def random_weights(cfg: WanDiTConfig, device: torch.device) -> dict[str, torch.Tensor]:
    """Official-name weights in bf16, generated on ``device`` (fast on a GPU), kept in CPU memory."""
    with torch.device("meta"):
        shapes = {k: v.shape for k, v in WanDiT(cfg).state_dict().items()}
    g = torch.Generator(device).manual_seed(0)
    return {k: (torch.randn(s, generator=g, device=device) * 0.02).to(torch.bfloat16).cpu()
            for k, s in shapes.items()}


def bf16_weights(sd, device):
    return sd, {}


def fp8_scaled_weights(sd, device):
    """Every block Linear weight as Comfy-Org scaled fp8: fp8 values and a float32 per-layer scale."""
    out, scales = dict(sd), {}
    for key, w in sd.items():
        if key.startswith("blocks.") and key.endswith(".weight") and w.dim() == 2:
            wf = w.to(device, torch.float32)
            scale = wf.abs().amax().clamp(min=1e-12) / 448.0
            out[key] = (wf / scale).to(FP8_DTYPES[0]).cpu()
            scales[key[: -len(".weight")]] = scale.reshape(()).cpu()
    return out, scales


def gguf_weights(qtype_name: str):
    """A GGUF file of the model's shapes (random valid blocks of ``qtype_name``), as users' files are laid out."""
    def build(sd, device) -> Path:
        from gguf import GGMLQuantizationType

        from wan.quant.gguf_write import write_gguf

        folder = Path(tempfile.mkdtemp(prefix="wan_gpu_check_"))
        atexit.register(shutil.rmtree, folder, True)
        path = folder / f"dit_{qtype_name}.gguf"
        write_gguf(path, {k: tuple(v.shape) for k, v in sd.items()}, GGMLQuantizationType[qtype_name])
        return path

    return build


BUILDERS: dict[str, Callable] = {"bf16": bf16_weights, "fp8_scaled": fp8_scaled_weights,
                                 "gguf_q8_0": gguf_weights("Q8_0"), "gguf_q4_k": gguf_weights("Q4_K")}


def gguf_kernel_check(model: WanDiT, device) -> str:
    """One quantised layer dequantised on ``device`` vs the ``gguf`` package's numpy reference, bit for bit."""
    from gguf import quants

    from gguf import GGMLQuantizationType

    layer = model.blocks[0].self_attn.q
    fmt, qtype = layer.weight_format, GGMLQuantizationType(layer.weight_format.qtype)
    ours = fmt.dequantize(layer, torch.float32, device).cpu()
    ref = torch.from_numpy(quants.dequantize(layer.weight.cpu().numpy(), qtype).copy()).reshape(ours.shape)
    return f"{qtype.name} dequantised on {device.type} " + (
        "bit-equal to gguf's" if torch.equal(ours, ref.float()) else "FAILED: differs from gguf's")


def build_ours(shapes: Shapes, weights, config: Config) -> WanDiT:
    if isinstance(weights, Path):  # a GGUF file, through the loader users get
        from wan.dit.loader import load_dit

        model = load_dit(weights, dtype="bf16", attention=config.attention)
        set_block_streaming(model, shapes.config.num_layers // 2 if config.stream_half else 0)
        return model
    sd, scales = weights
    with torch.device("meta"):
        model = WanDiT(shapes.config, None, "single", config.attention)
    assign_weights(model, sd, dict(scales), torch.bfloat16, Path("random.safetensors"), "Wan DiT")
    model.compute_dtype = torch.bfloat16
    model.requires_grad_(False).eval()
    set_block_streaming(model, shapes.config.num_layers // 2 if config.stream_half else 0)
    return model


def build_diffusers(shapes: Shapes, sd, device):
    """diffusers' model in bf16 as ``from_pretrained(torch_dtype=bf16)`` gives it: the modules it lists in
    ``_keep_in_fp32_modules`` (time embedder, norms, modulation table, rope) stay in float32."""
    from diffusers import WanTransformer3DModel
    from diffusers.loaders.single_file_utils import convert_wan_transformer_to_diffusers

    cfg = shapes.config
    with torch.device(device):
        model = WanTransformer3DModel(num_attention_heads=cfg.num_heads, attention_head_dim=cfg.head_dim,
                                      in_channels=cfg.in_dim, out_channels=cfg.out_dim, text_dim=cfg.text_dim,
                                      freq_dim=cfg.freq_dim, ffn_dim=cfg.ffn_dim, num_layers=cfg.num_layers)
    model.load_state_dict(convert_wan_transformer_to_diffusers(dict(sd)), strict=True)
    keep = set(getattr(model, "_keep_in_fp32_modules", None) or ())
    for name, p in model.named_parameters():
        if not keep & set(name.split(".")):
            p.data = p.data.to(torch.bfloat16)
    return model.requires_grad_(False).eval()


# -- measuring -----------------------------------------------------------------------------------------------------
@dataclass
class Result:
    name: str
    step_s: float | None = None
    peak_gib: float | None = None
    time_ratio: float | None = None  # / diffusers
    memory_ratio: float | None = None
    note: str = ""


def model_inputs(shapes: Shapes, device, dtype):
    g = torch.Generator(device).manual_seed(1)
    cfg = shapes.config
    x = torch.randn(1, cfg.in_dim, shapes.frames, shapes.height, shapes.width, generator=g, device=device)
    t = torch.tensor([700.0], device=device)
    ctx = [torch.randn(1, cfg.text_len, cfg.text_dim, generator=g, device=device) for _ in range(2)]
    return x.to(dtype), t, [c.to(dtype) for c in ctx]


def measure(step: Callable[[], torch.Tensor], repeats: int, device) -> tuple[float, float | None, torch.Tensor]:
    """(median step seconds, peak GiB since the last reset, the output of the last step). One warm-up step, whose
    time is kept in ``LAST_FIRST_STEP`` (for compiled runs: the compile overhead)."""
    sync(device)
    start = time.perf_counter()
    out = step()
    sync(device)
    LAST_FIRST_STEP[0] = time.perf_counter() - start
    times = []
    for _ in range(repeats):
        sync(device)
        start = time.perf_counter()
        out = step()
        sync(device)
        times.append(time.perf_counter() - start)
    peak = torch.cuda.max_memory_allocated(device) / GiB if device.type == "cuda" else None
    return statistics.median(times), peak, out


LAST_FIRST_STEP = [0.0]


def sync(device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def fresh(device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


@torch.no_grad()
def run_ours(shapes: Shapes, sd, config: Config, device) -> tuple[Result, torch.Tensor]:
    fresh(device)
    model = build_ours(shapes, BUILDERS[config.weights](sd, device), config)
    if config.fp8_matmul:
        use_fp8_products(model)
    placement = ExpertPlacement([model], device, "cpu")
    x, t, ctx = model_inputs(shapes, device, torch.float32)

    def step():  # returns the conditional output (compared with diffusers')
        placement.activate(model)
        out = model(x, t, ctx[0])
        model(x, t, ctx[1])
        return out

    try:
        with compiled_models([model], CompileOptions() if config.compile else None, device) as runner:
            seconds, peak, out = measure(step, shapes.repeats, device)
        weights = residency(model).device_bytes
    finally:
        placement.release()
    result = Result(config.name, seconds, peak)
    if config.compile:
        failed = runner.failed if runner is not None else "unavailable"
        result.note = (f"FAILED: compile fell back ({failed}); " if failed else "") + (
            f"first step {LAST_FIRST_STEP[0]:.1f} s (compile)")
        return result, out.float()
    if config.weights.startswith("gguf") and not config.stream_half:
        result.note = gguf_kernel_check(model, device)
    elif peak is not None and not config.stream_half:  # how good is the estimate block streaming's auto mode uses?
        estimate = activation_bytes(shapes.config, shapes.tokens, model.compute_dtype)
        result.note = f"activations {peak - weights / GiB:.2f} GiB (auto's estimate {estimate / GiB:.2f})"
    del model
    return result, out.float()


@torch.no_grad()
def run_diffusers(shapes: Shapes, sd, device) -> tuple[Result, torch.Tensor]:
    fresh(device)
    model = build_diffusers(shapes, sd, device)
    x, t, ctx = model_inputs(shapes, device, torch.bfloat16)

    def step():
        out = model(hidden_states=x, timestep=t, encoder_hidden_states=ctx[0], return_dict=False)[0]
        model(hidden_states=x, timestep=t, encoder_hidden_states=ctx[1], return_dict=False)
        return out

    seconds, peak, out = measure(step, shapes.repeats, device)
    del model
    return Result("diffusers bf16 (anchor)", seconds, peak), out.float()


def relative_error(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).abs().max() / b.abs().max().clamp(min=1e-12)).item()


def run_all(shapes: Shapes, device) -> list[Result]:
    sd = random_weights(shapes.config, device)
    results, anchor, reference = [], None, None
    try:
        anchor, reference = run_diffusers(shapes, sd, device)
        results.append(anchor)
    except ImportError as exc:
        results.append(Result("diffusers bf16 (anchor)", note=f"skipped: diffusers not installed ({exc})"))
    resident: dict[tuple[str, str], torch.Tensor] = {}  # outputs without streaming, by (weights, attention)
    for config in CONFIGS:
        reason = config.skip_reason(device)
        if reason:
            results.append(Result(config.name, note=f"skipped: {reason}"))
            continue
        try:
            result, out = run_ours(shapes, sd, config, device)
        except Exception as exc:  # one broken configuration must not hide the others
            results.append(Result(config.name, note=f"FAILED: {type(exc).__name__}: {exc}"))
            continue
        results.append(_compared(result, out, config, anchor, reference, resident))
    return results


def _compared(result: Result, out, config: Config, anchor: Result | None, reference, resident: dict) -> Result:
    """Ratios to diffusers, its output's deviation, and (streaming) bit equality with the resident run."""
    notes = [result.note] if result.note else []
    if anchor is not None:
        result.time_ratio = result.step_s / anchor.step_s
        result.memory_ratio = result.peak_gib / anchor.peak_gib if result.peak_gib and anchor.peak_gib else None
        if not config.weights.startswith("gguf"):  # GGUF blocks are random data, not the anchor's weights
            notes.insert(0, f"vs diffusers {relative_error(out, reference):.1e} (max, relative)")
    key = (config.weights, config.attention)
    plain = ("bf16", "sdpa")
    if config.attention != "sdpa" and plain in resident and not config.compile:  # the facts auto needs (attention.py)
        sdpa_out, sdpa_s = resident[plain]
        notes.append(f"vs bf16 sdpa: time {result.step_s / sdpa_s:.2f}x, error {relative_error(out, sdpa_out):.1e}")
    elif config.compile or config.fp8_matmul:  # the same weights and kernels, compiled or with fp8 activations
        base = resident.get((config.weights, config.attention))
        if base is not None:
            notes.append(f"vs uncompiled exact run: time {result.step_s / base[1]:.2f}x, error "
                         f"{relative_error(out, base[0]):.1e}")
    if not config.stream_half and not config.compile and not config.fp8_matmul:
        resident[key] = (out, result.step_s)
    elif config.stream_half and key in resident:  # streaming moves bytes only: the output must not change at all
        notes.append("bit-equal to resident" if torch.equal(out, resident[key][0]) else
                     "FAILED: differs from the resident run")
    result.note = "; ".join(notes)
    return result


def report(results: list[Result], shapes: Shapes, device) -> dict:
    cfg = shapes.config
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else str(device)
    print(f"Wan DiT step (cond + uncond) on {name}: dim {cfg.dim}, ffn {cfg.ffn_dim}, {cfg.num_heads} heads, "
          f"{cfg.num_layers} blocks, {shapes.tokens} tokens; ratios are ours / diffusers")
    print(f"{'configuration':48} {'step s':>8} {'x diff.':>8} {'peak GiB':>9} {'x diff.':>8}  note")
    for r in results:
        cells = [_fmt(r.step_s, "{:.3f}"), _fmt(r.time_ratio, "{:.2f}"), _fmt(r.peak_gib, "{:.2f}"),
                 _fmt(r.memory_ratio, "{:.2f}")]
        print(f"{r.name:48} {cells[0]:>8} {cells[1]:>8} {cells[2]:>9} {cells[3]:>8}  {r.note}")
    return {"device": name, "torch": torch.__version__, "tokens": shapes.tokens, "config": cfg.to_dict(),
            "results": [asdict(r) for r in results]}


def _fmt(value, spec: str) -> str:
    return "-" if value is None else spec.format(value)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="4 blocks, 17 frames, 2 repeats")
    parser.add_argument("--tiny", action="store_true", help="tiny shapes on any device (smoke run of the script)")
    parser.add_argument("--json", metavar="OUT", help="write the results as JSON to OUT")
    args = parser.parse_args(argv)
    if not torch.cuda.is_available() and not args.tiny:
        print("benchmarks/gpu.py: no CUDA device here; skipped (run it on a machine with an NVIDIA GPU)")
        return 0
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    shapes = shapes_for(args)
    results = run_all(shapes, device)
    data = report(results, shapes, device)
    if args.json:
        Path(args.json).write_text(json.dumps(data, indent=2))
    return 1 if any("FAILED" in r.note for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
