"""GGUF DiT: forward time of Q8_0 and Q4_K models against the same model unquantised (fp32 and bf16, same process)
at each thread count of a sweep; optionally against ComfyUI-GGUF's dequantisation; and peak RSS while loading a
community-layout GGUF file of over 1 GB (fresh subprocess).

    python benchmarks/gguf_bench.py          # dim 1536, 2 layers, 1560 tokens; a 1.5 GB Q8_0 file (Wan 2.1 1.3B shapes)
    python benchmarks/gguf_bench.py --threads 1 2 4 --peer ~/ComfyUI/custom_nodes/ComfyUI-GGUF
    python benchmarks/gguf_bench.py --tiny   # a quick smoke run (small model, small file)
    python benchmarks/gguf_bench.py --peer PATH --peer-only --dtypes bf16 --threads 1 2 --skip-memory
    python benchmarks/gguf_bench.py --peer PATH --comfy ~/ComfyUI --python ~/ComfyUI/venv/bin/python --peer-only

``--peer PATH``: a ComfyUI-GGUF checkout. Its ``dequant.py`` (torch only; the rest of it needs ComfyUI) runs in a
process of its own, never imported here: there the same files load twice, and in the second model every GGUF layer
dequantises through the peer's ``dequantize`` (the path its ``GGMLOps`` layers take, ``dequant_dtype`` default)
instead of ours; everything else in the forward is the same code, so the ratio is the dequantisation's share.
Both are timed interleaved, forwards and dequantisation alone (every GGUF layer once), per thread count; each line
is printed as it is measured.

``--comfy PATH`` (with ``--peer``): a ComfyUI checkout; then the peer is ComfyUI-GGUF's whole forward as a ComfyUI user
runs it: its ``gguf_sd_loader`` reads the file, ``comfy.sd.load_diffusion_model_state_dict`` builds ComfyUI's own
Wan model with its ``GGMLOps`` layers (what its "Unet Loader (GGUF)" node does), and that model's forward is timed
against ours in one process with ComfyUI imported (as our nodes run in it), interleaved, on the same inputs. ComfyUI
on a CPU computes a bf16 request in float32 (its manual cast: ``apply_model`` casts the inputs to float32, every
layer then casts its weight to the input's dtype); the line names the dtype ComfyUI computed in.
``--python``: the interpreter of those processes (a ComfyUI environment with its dependencies and this pack's).

Without ``--comfy``, the forward ratio is bounded by the dequantisation's share of the forward: with ``D_ours``,
``D_peer`` the dequantisation times and ``F_peer`` the peer's forward, ours / peer = 1 - (D_peer - D_ours) / F_peer,
so it can reach 0.9 only where the peer's dequantisation is more than a tenth of its forward (few tokens; at 1560
tokens the matrix products dominate and both sides run the same ones).

Targets: a Q8_0 forward costs <= 1.3 x the unquantised one in the same compute dtype at dim >= 1536 (the per-layer
dequantisation is the overhead; it shrinks as the token count grows); ours <= 0.9 x the peer's forward at every
thread count; peak RSS growth while loading the file and touching every stored weight <= 1.05 x the file size
(weights stay in the memory-mapped file: quantised blocks, and the F16 text and time embeddings). The CPU may be
shared: repeats are interleaved and medians reported; a thread count above the free cores measures the queue.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402
from gguf import GGMLQuantizationType as T  # noqa: E402
from safetensors.torch import save_file  # noqa: E402

import wan  # noqa: E402
from wan.dit.config import WanDiTConfig  # noqa: E402
from wan.dit.model import WanDiT  # noqa: E402
from wan.quant.gguf_write import write_gguf  # noqa: E402
from benchmarks.dit_forward import random_official_weights  # noqa: E402
from harness import interleaved_forwards, interleaved_medians  # noqa: E402
from wan.quant.base import WeightFormat  # noqa: E402
from wan.quant.gguf_format import GGUFFormat  # noqa: E402

COMMUNITY_F16 = ("text_embedding.", "time_embedding.", "time_projection.")  # Linear weights the community files
# keep in F16


def shapes_of(cfg: WanDiTConfig) -> dict[str, tuple[int, ...]]:
    with torch.device("meta"):
        return {k: tuple(v.shape) for k, v in WanDiT(cfg).state_dict().items()}


def write_files(cfg: WanDiTConfig, folder: Path) -> dict[str, Path]:
    """The unquantised file and the Q8_0 and Q4_K GGUF files of one random model."""
    weights = random_official_weights(cfg)
    paths = {"plain": folder / "dit.safetensors", "Q8_0": folder / "dit-Q8_0.gguf", "Q4_K": folder / "dit-Q4_K.gguf"}
    save_file(weights, str(paths["plain"]))
    write_gguf(paths["Q8_0"], weights, T.Q8_0, types=community_types(weights))  # quantised from the same values
    # random blocks: gguf cannot quantise K-quants
    write_gguf(paths["Q4_K"], dict(shapes_of(cfg)), T.Q4_K, types=community_types(weights))
    return paths


def community_types(names) -> dict[str, T]:
    return {k: T.F16 for k in names if k.startswith(COMMUNITY_F16) and k.endswith(".weight")}


def time_forward(cfg: WanDiTConfig, paths: dict, grid: tuple[int, int, int], repeats: int, threads: list[int],
                 dtypes: list[str]) -> None:
    """Prints a line per compute dtype and thread count as it is measured."""
    for dtype in dtypes:
        models = {name: wan.load_dit(p, dtype=dtype, num_heads=cfg.num_heads) for name, p in paths.items()}
        for n in threads:
            torch.set_num_threads(n)
            report_speed(dtype, n, _time_models(cfg, models, grid, repeats), cfg)


def forward_inputs(cfg: WanDiTConfig, grid, dtype: torch.dtype):
    f, h, w = grid
    g = torch.Generator().manual_seed(1)
    x = torch.randn(1, cfg.in_dim, f, 2 * h, 2 * w, generator=g).to(dtype)
    ctx = torch.randn(1, cfg.text_len, cfg.text_dim, generator=g).to(dtype)
    return x, torch.tensor([700.0]), ctx


def _time_models(cfg, models, grid, repeats) -> dict:
    f, h, w = grid
    args = forward_inputs(cfg, grid, models["plain"].compute_dtype)
    outs, med = interleaved_forwards(models, args, repeats)  # the warm-up outputs check Q8_0 agreement
    outs = {k: v.float() for k, v in outs.items()}
    err = ((outs["Q8_0"] - outs["plain"]).abs().max() / outs["plain"].abs().max()).item()
    return {"tokens": f * h * w, **{f"{k}_s": v for k, v in med.items()},
            "Q8_0_ratio": med["Q8_0"] / med["plain"], "Q4_K_ratio": med["Q4_K"] / med["plain"], "q8_rel_err": err}


# --- ComfyUI-GGUF's dequantisation, in a process of its own ----------------------------------------------------------
class PeerFormat(WeightFormat):
    """A GGUF layer dequantised by the peer's ``dequantize`` (float32 unless told, then cast, as its ops do)."""

    def __init__(self, peer, fmt: GGUFFormat):
        self.peer, self.qtype, self.logical_shape = peer, fmt.qtype, fmt.logical_shape
        self.name = f"peer {fmt.name}"

    def dequantize(self, layer, dtype, device):
        return self.dequantize_rows(layer, 0, self.logical_shape[0], dtype, device)

    def dequantize_rows(self, layer, start, stop, dtype, device):  # as ours: a block of rows at a time
        if self.qtype in (T.F32, T.F16, T.BF16):
            return layer.weight[start:stop].to(device=device, dtype=dtype)
        rows = layer.weight.reshape(self.logical_shape[0], -1)[start:stop]
        return self.peer.dequantize(rows, self.qtype, (stop - start, *self.logical_shape[1:])).to(dtype)


def peer_probe(args) -> None:
    import importlib.util

    spec = importlib.util.spec_from_file_location("peer_dequant", Path(args.peer) / "dequant.py")
    peer = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(peer)
    for cfg, grid, qtype, dtype, path, ours in probe_cases(args):
        theirs = wan.load_dit(path, dtype=dtype, num_heads=cfg.num_heads)
        layers = [(m, n) for m, n in zip(ours.modules(), theirs.modules())
                  if isinstance(getattr(m, "weight_format", None), GGUFFormat)]
        for _, layer in layers:
            layer.weight_format = PeerFormat(peer, layer.weight_format)
        for n in args.threads:
            torch.set_num_threads(n)
            outs, med = interleaved_forwards({"ours": ours, "peer": theirs},
                                             forward_inputs(cfg, grid, ours.compute_dtype), args.repeats)
            alone = interleaved_medians({side: (lambda i=i: [pair[i].weight_format.dequantize(
                pair[i], ours.compute_dtype, torch.device("cpu")) for pair in layers])
                for i, side in enumerate(("ours", "peer"))}, args.repeats)
            print(json.dumps({"key": f"{qtype} {dtype} {n}", "forward": med, "dequantize": alone,
                              "rel_diff": relative_diff(outs)}), flush=True)


def probe_cases(args):
    """(config, token grid, GGUF type, compute dtype, file, our model loaded from it) of each case a peer probe
    times."""
    cfg = WanDiTConfig(**json.loads(args.config))
    grid = tuple(json.loads(args.grid))
    for qtype in ("Q8_0", "Q4_K"):
        path = Path(args.folder) / f"dit-{qtype}.gguf"
        for dtype in args.dtypes:
            yield cfg, grid, qtype, dtype, path, wan.load_dit(path, dtype=dtype, num_heads=cfg.num_heads)


def relative_diff(outs: dict) -> float:
    ours, peer = outs["ours"].float(), outs["peer"].float()
    return ((ours - peer).abs().max() / ours.abs().max()).item()


def host_peer_probe(args) -> None:
    """ComfyUI-GGUF's forward in ComfyUI's own Wan model against ours, in this process (ComfyUI imported)."""
    import importlib
    import types

    from harness import import_comfyui

    import_comfyui(args.comfy, torch.device("cpu"))
    import comfy.sd

    package = types.ModuleType("comfyui_gguf_peer")  # its modules import each other relatively; its __init__
    package.__path__ = [str(Path(args.peer).resolve())]  # (the nodes) needs ComfyUI's server: not run
    sys.modules[package.__name__] = package
    gguf_ops, gguf_loader = (importlib.import_module(f"{package.__name__}.{m}") for m in ("ops", "loader"))
    for cfg, grid, qtype, dtype, path, ours in probe_cases(args):
        ops = gguf_ops.GGMLOps()  # as its "Unet Loader (GGUF)" node: dequant_dtype and patch_dtype default
        ops.Linear.dequant_dtype = ops.Linear.patch_dtype = None
        patcher = comfy.sd.load_diffusion_model_state_dict(
            gguf_loader.gguf_sd_loader(str(path)),
            model_options={"custom_operations": ops, "dtype": ours.compute_dtype})
        computes = patcher.model.manual_cast_dtype or patcher.model.get_dtype()
        # ComfyUI's apply_model hands its Wan model the latents and text in the dtype it computes in
        theirs = (lambda x, t, ctx, m=patcher.model.diffusion_model, d=computes: m(x.to(d), t, ctx.to(d)))
        for n in args.threads:
            torch.set_num_threads(n)
            with torch.no_grad():
                outs, med = interleaved_forwards({"ours": ours, "peer": theirs},
                                                 forward_inputs(cfg, grid, ours.compute_dtype), args.repeats)
            print(json.dumps({"key": f"{qtype} {dtype} {n}", "forward": med, "rel_diff": relative_diff(outs),
                              "peer_computes": str(computes).replace("torch.", "")}), flush=True)


def compare_peer(cfg, folder: Path, grid, repeats: int, threads: list[int], dtypes: list[str], peer: str,
                 comfy: str | None = None, python: str | None = None) -> None:
    """Runs the peer probe in its own process and prints each of its results as it comes."""
    command = [python or sys.executable, __file__, "--peer-probe", "--peer", peer, "--folder", str(folder),
               "--config", json.dumps(cfg.to_dict()), "--grid", json.dumps(list(grid)), "--repeats", str(repeats),
               "--threads", *map(str, threads), "--dtypes", *dtypes] + (["--comfy", comfy] if comfy else [])
    print("ours / ComfyUI-GGUF's whole forward (ComfyUI's Wan model with its GGUF layers; one process with ComfyUI, "
          "interleaved):" if comfy else
          "ours / ComfyUI-GGUF's dequantisation (same forward code otherwise; own process, interleaved):", flush=True)
    with tempfile.TemporaryFile("w+") as errors:
        with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=errors, text=True) as probe:
            for line in probe.stdout:
                if line.startswith("{"):
                    (report_host_peer if comfy else report_peer)(json.loads(line))
        if probe.returncode:
            errors.seek(0)
            raise RuntimeError(f"the peer process failed:\n{errors.read()[-3000:]}")


MEMORY_PROBE = r"""
import json, sys, torch
sys.path.insert(0, sys.argv[1])
import wan, wan.dit.gguf, wan.dit.loader  # code, not data: imported before the baseline
status = lambda: dict(line.split(':', 1) for line in open('/proc/self/status'))
base = int(status()['VmRSS'].split()[0])
model = wan.load_dit(sys.argv[2], num_heads=int(sys.argv[3]))
for p in model.parameters():  # read every stored byte; max() needs no temporary (a uint8 sum widens to int64)
    p.max()
print(json.dumps({'base_kb': base, 'peak_kb': int(status()['VmHWM'].split()[0])}))
"""


def measure_load_memory(cfg: WanDiTConfig) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "big-Q8_0.gguf"
        shapes = dict(shapes_of(cfg))
        write_gguf(path, shapes, T.Q8_0, types=community_types(shapes))
        size = path.stat().st_size
        out = subprocess.run([sys.executable, "-c", MEMORY_PROBE, str(ROOT), str(path), str(cfg.num_heads)],
                             capture_output=True, text=True, check=True)
    probe = json.loads(out.stdout.strip().splitlines()[-1])
    return {"file_gb": size / 1e9, "ratio": (probe["peak_kb"] - probe["base_kb"]) * 1024 / size}


def report_speed(dtype: str, n: int, r: dict, cfg: WanDiTConfig) -> None:
    print(f"forward {dtype}, {n} thread(s), dim {cfg.dim}, {cfg.num_layers} layers, {r['tokens']} tokens: "
          f"plain {r['plain_s']:.3f} s, Q8_0 {r['Q8_0_s']:.3f} s (ratio {r['Q8_0_ratio']:.3f}, target <= 1.3), "
          f"Q4_K {r['Q4_K_s']:.3f} s (ratio {r['Q4_K_ratio']:.3f}); Q8_0 output within "
          f"{r['q8_rel_err']:.1e} of the unquantised one", flush=True)


def report_peer(r: dict) -> None:
    key, fwd, deq = r["key"], r["forward"], r["dequantize"]
    print(f"  {key:<14} thread(s): forward {fwd['ours']:.3f} / {fwd['peer']:.3f} s = "
          f"{fwd['ours'] / fwd['peer']:.3f} (target <= 0.9)   dequantise alone {deq['ours']:.3f} / "
          f"{deq['peer']:.3f} s = {deq['ours'] / deq['peer']:.3f}   outputs within {r['rel_diff']:.1e}", flush=True)


def report_host_peer(r: dict) -> None:
    fwd = r["forward"]
    print(f"  {r['key']:<14} thread(s): forward {fwd['ours']:.3f} / {fwd['peer']:.3f} s = "
          f"{fwd['ours'] / fwd['peer']:.3f} (target <= 0.9)   ComfyUI computes in {r['peer_computes']}   outputs "
          f"within {r['rel_diff']:.1e}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", action="store_true", help="small sizes for a quick smoke run")
    parser.add_argument("--repeats", type=int, default=None, help="timed forwards per model (default 5; tiny 2)")
    parser.add_argument("--threads", type=int, nargs="+", default=None,
                        help="torch CPU thread counts to sweep (default: torch's own)")
    parser.add_argument("--dtypes", nargs="+", choices=["fp32", "bf16"], default=["fp32", "bf16"],
                        help="compute dtypes to time (default both)")
    parser.add_argument("--peer", default=None, help="path of a ComfyUI-GGUF checkout (its dequant.py)")
    parser.add_argument("--comfy", default=None, help="with --peer: a ComfyUI checkout; the peer is then "
                        "ComfyUI-GGUF's whole forward in ComfyUI's Wan model")
    parser.add_argument("--python", default=None, help="interpreter for the peer process (default: this one)")
    parser.add_argument("--peer-only", action="store_true", help="with --peer: skip ours vs the unquantised model")
    parser.add_argument("--tokens", type=int, nargs=3, metavar=("F", "H", "W"), default=None,
                        help="latent token grid of the timed forwards (default 1 30 52: 1560 tokens, one 480x832 "
                             "frame)")
    parser.add_argument("--skip-memory", action="store_true", help="time the forwards only")
    parser.add_argument("--skip-speed", action="store_true", help="measure the loading memory only")
    parser.add_argument("--peer-probe", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--folder", help=argparse.SUPPRESS)
    parser.add_argument("--config", help=argparse.SUPPRESS)
    parser.add_argument("--grid", help=argparse.SUPPRESS)
    args = parser.parse_args()
    args.threads = args.threads or [torch.get_num_threads()]
    if args.peer_probe:
        return host_peer_probe(args) if args.comfy else peer_probe(args)
    if args.tiny:
        speed_cfg = WanDiTConfig(dim=256, ffn_dim=1024, num_heads=2, num_layers=1, text_dim=256)
        grid, repeats = (2, 8, 12), 2
        mem_cfg = WanDiTConfig(dim=512, ffn_dim=2048, num_heads=4, num_layers=4, text_dim=512)
    else:
        speed_cfg = WanDiTConfig(dim=1536, ffn_dim=8960, num_heads=12, num_layers=2)
        grid, repeats = (1, 30, 52), 5  # 1560 tokens: one 480 x 832 frame
        mem_cfg = WanDiTConfig(dim=1536, ffn_dim=8960, num_heads=12, num_layers=30)  # Wan 2.1 1.3B: ~1.5 GB Q8_0
    repeats = args.repeats or repeats
    grid = tuple(args.tokens) if args.tokens else grid
    if not args.skip_speed:
        with tempfile.TemporaryDirectory() as tmp:
            paths = write_files(speed_cfg, Path(tmp))
            if not (args.peer and args.peer_only):
                time_forward(speed_cfg, paths, grid, repeats, args.threads, args.dtypes)
            if args.peer:
                compare_peer(speed_cfg, Path(tmp), grid, repeats, args.threads, args.dtypes, args.peer, args.comfy,
                             args.python)
    if args.skip_memory:
        return
    mem = measure_load_memory(mem_cfg)
    print(f"loading a {mem['file_gb']:.2f} GB community-layout Q8_0 GGUF and touching every weight: peak RSS growth "
          f"{mem['ratio']:.3f} x file size (target <= 1.05)")


if __name__ == "__main__":
    main()
