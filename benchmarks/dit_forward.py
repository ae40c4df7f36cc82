"""DiT forward time against peers on the same weights in the same process, the attention kernels behind
``attention="auto"``, and loading memory (peak RSS vs file size).

    python benchmarks/dit_forward.py [--dtype fp32|bf16|fp16] [--repeats N] [--threads N] [--clock wall|cpu]
                                     [--device cpu|cuda] [--comfyui PATH] [--skip-memory]
    python benchmarks/dit_forward.py --tiny      # a quick smoke run (small model, small file)

Mid size: dim 1536, 12 heads, 2 layers, 1950 video tokens, 512 text tokens. Peers:
- diffusers ``WanTransformer3DModel`` (bf16/fp16: saved and reloaded with ``torch_dtype``, so it keeps its float32
  modules as ``from_pretrained`` does);
- a split-attention reference: the same diffusers forward with its attention replaced by plain split attention
  (``reference_split_attention``: scores from one batched product per query chunk, softmax, product with v; the
  algorithm of ComfyUI's default CPU attention), the faster peer on a CPU in bf16;
- with ``--comfyui PATH``: ComfyUI's own ``WanModel`` (comfy/ldm/wan/model.py) and its default attention.
Times are medians of interleaved rounds (every forward once per round): the machine may be shared, so single
timings are noise. Targets: ours / the faster of diffusers and the split reference <= 0.97 in bf16, <= 1.00 in
fp32; loading peak RSS growth <= 1.15 x the file size (fresh subprocesses; a naive read-and-copy load is measured
the same way as the peer). The "attention kernels" lines are the measurements behind ``AUTO_TABLE`` in
wan/dit/attention.py.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))  # harness.py, also when imported as benchmarks.*
from harness import (DTYPES, ROOT, add_timing_options, apply_timing_options, import_comfyui,  # noqa: E402
                     interleaved_medians, ratio_line)

sys.path.insert(0, str(ROOT))

from wan.dit.attention import auto_backend, available_backends, get_attention  # noqa: E402
from wan.dit.config import WanDiTConfig  # noqa: E402
from wan.dit.model import WanDiT  # noqa: E402

COMFY_ATTENTION_QUERY_CHUNK = 4096  # ComfyUI's sub-quadratic attention: the largest query chunk it picks


def random_official_weights(cfg: WanDiTConfig, seed: int = 0) -> dict[str, torch.Tensor]:
    with torch.device("meta"):
        shapes = {k: v.shape for k, v in WanDiT(cfg).state_dict().items()}
    g = torch.Generator().manual_seed(seed)
    return {k: torch.randn(s, generator=g) * 0.02 for k, s in shapes.items()}


def reference_split_attention(q, k, v):
    """q, k, v [B, L, H, D] -> [B, Lq, H, D]: per query chunk, softmax(q kᵀ / √D) v in the inputs' dtype."""
    b, lq, h, d = q.shape
    queries = q.permute(0, 2, 1, 3).reshape(b * h, lq, d)
    keys_t = k.permute(0, 2, 3, 1).reshape(b * h, d, -1)
    values = v.permute(0, 2, 1, 3).reshape(b * h, -1, d)
    unused = q.new_empty(1, 1, 1)
    parts = [torch.bmm(torch.baddbmm(unused, queries[:, i:i + COMFY_ATTENTION_QUERY_CHUNK], keys_t, beta=0,
                                     alpha=d ** -0.5).softmax(dim=-1), values)
             for i in range(0, lq, COMFY_ATTENTION_QUERY_CHUNK)]
    return torch.cat(parts, dim=1).view(b, h, lq, d).transpose(1, 2)


@contextlib.contextmanager
def diffusers_attention(fn):
    """Run diffusers' Wan attention through ``fn`` instead of its dispatcher while the block is active."""
    from diffusers.models.transformers import transformer_wan

    saved = transformer_wan.dispatch_attention_fn
    transformer_wan.dispatch_attention_fn = lambda q, k, v, **_: fn(q, k, v)
    try:
        yield
    finally:
        transformer_wan.dispatch_attention_fn = saved


def time_attention_kernels(cfg: WanDiTConfig, tokens: int, keys: int, dtype: torch.dtype, device: torch.device,
                           args) -> dict[str, float]:
    """One attention of ``tokens`` queries over ``keys`` keys at the model's head layout: every backend the pack
    has here, and the reference."""
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(1, n, cfg.num_heads, cfg.head_dim, generator=g).to(device, dtype)
               for n in (tokens, keys, keys))
    names = [n for n in available_backends() if n != "auto" and (device.type == "cuda" or n in ("sdpa", "split"))]
    fns = {name: (lambda fn=get_attention(name): fn(q, k, v)) for name in names}
    fns["reference split"] = lambda: reference_split_attention(q, k, v)
    return interleaved_medians(fns, args.repeats, device, args.clock)


def build_diffusers(cfg: WanDiTConfig, weights: dict, dtype: torch.dtype):
    """diffusers' model in ``dtype`` except its ``_keep_in_fp32_modules``, the rule ``from_pretrained`` applies."""
    from diffusers import WanTransformer3DModel
    from diffusers.loaders.single_file_utils import convert_wan_transformer_to_diffusers

    model = WanTransformer3DModel(
        num_attention_heads=cfg.num_heads, attention_head_dim=cfg.head_dim, in_channels=cfg.in_dim,
        out_channels=cfg.out_dim, text_dim=cfg.text_dim, freq_dim=cfg.freq_dim, ffn_dim=cfg.ffn_dim,
        num_layers=cfg.num_layers)
    model.load_state_dict(convert_wan_transformer_to_diffusers(dict(weights)), strict=True)
    keep = model._keep_in_fp32_modules or []
    for name, param in model.named_parameters():
        if not any(part in name.split(".") for part in keep):
            param.data = param.data.to(dtype)
    return model.eval()


def build_comfyui(comfy, cfg: WanDiTConfig, weights: dict, dtype: torch.dtype):
    from comfy.ldm.wan.model import WanModel

    model = WanModel(model_type="t2v", in_dim=cfg.in_dim, dim=cfg.dim, ffn_dim=cfg.ffn_dim, freq_dim=cfg.freq_dim,
                     text_dim=cfg.text_dim, out_dim=cfg.out_dim, num_heads=cfg.num_heads, num_layers=cfg.num_layers,
                     device="cpu", dtype=dtype, operations=comfy.ops.disable_weight_init)
    model.load_state_dict(weights, strict=True)
    return model.eval()


def time_forward(cfg: WanDiTConfig, grid: tuple[int, int, int], dtype: torch.dtype, args) -> dict:
    from safetensors.torch import save_file

    import wan

    weights = random_official_weights(cfg)
    f, h, w = grid
    g = torch.Generator().manual_seed(1)
    x, ctx = torch.randn(1, cfg.in_dim, f, 2 * h, 2 * w, generator=g), torch.randn(1, cfg.text_len, cfg.text_dim,
                                                                                  generator=g)
    device = torch.device(args.device)
    x, ctx, t = x.to(device), ctx.to(device), torch.tensor([700.0], device=device)
    with tempfile.TemporaryDirectory() as tmp:
        save_file(weights, str(Path(tmp) / "dit.safetensors"))
        ours = wan.load_dit(Path(tmp) / "dit.safetensors", dtype=dtype, num_heads=cfg.num_heads, device=device)
        theirs = build_diffusers(cfg, weights, dtype).to(device)
    xd, ctxd = x.to(dtype), ctx.to(dtype)

    def diffusers_split():
        with diffusers_attention(reference_split_attention):
            return theirs(xd, t, ctxd, return_dict=False)[0]

    runs = {"ours": lambda: ours(x, t, ctx), "diffusers": lambda: theirs(xd, t, ctxd, return_dict=False)[0],
            "split reference": diffusers_split}
    comfy = import_comfyui(args.comfyui, device)
    if comfy is not None:
        theirs_comfy = build_comfyui(comfy, cfg, {k: v.to(dtype) for k, v in weights.items()}, dtype).to(device)
        runs["ComfyUI"] = lambda: theirs_comfy(xd, t, ctxd)
    del weights
    with torch.no_grad():
        outs = {name: fn().float() for name, fn in runs.items()}
        times = interleaved_medians(runs, args.repeats, device, args.clock)
    ref = outs["diffusers"]
    errs = {name: ((out - ref).abs().max() / ref.abs().max()).item() for name, out in outs.items()}
    return {"tokens": f * h * w, "times": times, "errs": errs}


_MEMORY_PROBE = r"""
import sys, json, torch
sys.path.insert(0, sys.argv[1])
import wan
from wan.dit.model import WanDiT
from wan.dit.config import WanDiTConfig

def rss_kb(field):
    for line in open('/proc/self/status'):
        if line.startswith(field):
            return int(line.split()[1])

path, mode, heads = sys.argv[2], sys.argv[3], int(sys.argv[4])
base = rss_kb('VmRSS:')
if mode == 'ours':
    model = wan.load_dit(path, num_heads=heads)
else:  # the naive peer: read the file into memory, build a module, copy the weights in
    from safetensors.torch import load
    sd = load(open(path, 'rb').read())
    model = WanDiT(WanDiTConfig.from_state_dict(sd, heads))
    model.load_state_dict(sd)
total = sum(float(p.sum()) for p in model.parameters())  # touch every weight (no large temporaries)
print(json.dumps({'base_kb': base, 'peak_kb': rss_kb('VmHWM:')}))
"""


def measure_load_memory(cfg: WanDiTConfig) -> dict:
    from safetensors.torch import save_file

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "big.safetensors"
        save_file(random_official_weights(cfg), str(path))
        size = path.stat().st_size
        result = {"file_gb": size / 1e9}
        for mode in ("ours", "naive"):
            out = subprocess.run([sys.executable, "-c", _MEMORY_PROBE, str(ROOT), str(path), mode, str(cfg.num_heads)],
                                 capture_output=True, text=True, check=True)
            probe = json.loads(out.stdout.strip().splitlines()[-1])
            result[f"{mode}_ratio"] = (probe["peak_kb"] - probe["base_kb"]) * 1024 / size
    return result


def report_kernels(kernels: dict[str, dict[str, float]], dtype: torch.dtype, device: torch.device,
                   cfg: WanDiTConfig) -> None:
    picked = auto_backend(device.type, dtype)
    print(f"attention kernels ({str(dtype).replace('torch.', '')}, {device.type}, {cfg.num_heads} heads x "
          f"{cfg.head_dim}), ms per call:")
    print(f"  {'':<16} " + "  ".join(f"{shape:>22}" for shape in kernels))
    for name in next(iter(kernels.values())):
        mark = "  <- auto" if name == picked else ""
        print(f"  {name:<16} " + "  ".join(f"{times[name] * 1e3:22.1f}" for times in kernels.values()) + mark)
    for shape, times in kernels.items():
        fastest = min((n for n in times if n != "reference split"), key=times.get)
        if fastest != picked:
            print(f"  note: {shape}: '{fastest}' was faster in this run than auto's '{picked}'; AUTO_TABLE in "
                  f"wan/dit/attention.py should follow repeated runs, not one")


def report_forward(speed: dict, dtype: torch.dtype, cfg: WanDiTConfig) -> None:
    times, errs = speed["times"], speed["errs"]
    target = 1.00 if dtype == torch.float32 else 0.97
    print(f"forward ({str(dtype).replace('torch.', '')}), dim {cfg.dim}, {cfg.num_layers} layers, "
          f"{speed['tokens']} tokens, median of interleaved runs:")
    for name, seconds in times.items():
        err = "" if name == "diffusers" else f"   max |x - diffusers| / max |diffusers| = {errs[name]:.1e}"
        print(f"  {name:<16} {seconds:8.3f} s{err}")
    for name in times:
        if name != "ours":
            print(ratio_line(name, times["ours"], times[name]))
    faster = min(times["diffusers"], times["split reference"])
    print(ratio_line("faster peer", times["ours"], faster, target))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tiny", action="store_true", help="small sizes for a quick smoke run")
    parser.add_argument("--dtype", choices=sorted(DTYPES), default="fp32", help="compute dtype of every model")
    parser.add_argument("--repeats", type=int, default=None, help="interleaved rounds (default 7; tiny 2)")
    parser.add_argument("--comfyui", default=None, help="path of a ComfyUI checkout: adds its WanModel as a peer")
    parser.add_argument("--skip-memory", action="store_true", help="only the timings")
    parser.add_argument("--device", default="cpu", help="where the forwards run (loading memory is always CPU RSS)")
    add_timing_options(parser)
    args = parser.parse_args()
    torch.manual_seed(0)
    dtype = DTYPES[args.dtype]
    if args.tiny:
        torch.set_num_threads(1)  # tiny kernels gain nothing from threads, and a busy machine stalls them
        speed_cfg = WanDiTConfig(dim=256, ffn_dim=1024, num_heads=2, num_layers=1, text_dim=256)
        grid, args.repeats = (3, 8, 12), args.repeats or 2
        mem_cfg = WanDiTConfig(dim=512, ffn_dim=2048, num_heads=4, num_layers=4, text_dim=512)
    else:
        speed_cfg = WanDiTConfig(dim=1536, ffn_dim=8960, num_heads=12, num_layers=2)
        grid, args.repeats = (5, 15, 26), args.repeats or 7  # 1950 tokens
        mem_cfg = WanDiTConfig(dim=1536, ffn_dim=8960, num_heads=12, num_layers=6)  # ~1.1 GB float32
    print(f"timing: {apply_timing_options(args)}")
    device = torch.device(args.device)
    tokens = grid[0] * grid[1] * grid[2]
    with torch.no_grad():
        kernels = {f"self {tokens}x{tokens}": time_attention_kernels(speed_cfg, tokens, tokens, dtype, device, args),
                   f"cross {tokens}x{speed_cfg.text_len}": time_attention_kernels(speed_cfg, tokens,
                                                                                  speed_cfg.text_len, dtype, device,
                                                                                  args)}
    report_kernels(kernels, dtype, device, speed_cfg)
    report_forward(time_forward(speed_cfg, grid, dtype, args), dtype, speed_cfg)
    if args.skip_memory:
        return
    mem = measure_load_memory(mem_cfg)
    print(f"loading a {mem['file_gb']:.2f} GB safetensors: peak RSS growth {mem['ours_ratio']:.3f} x file size "
          f"(target <= 1.15); naive read-and-copy load {mem['naive_ratio']:.3f} x")


if __name__ == "__main__":
    main()
