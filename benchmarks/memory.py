"""First-run memory of every loader, each in a fresh process: peak RSS growth over the file size, ours beside the
peer that loads the same file (diffusers, transformers).

    python benchmarks/memory.py [--only dit-bf16 vae-2.2 ...] [--runs N] [--threads N]
    python benchmarks/memory.py --tiny      # smoke run (small widths, seconds)

Weights are random, at the released widths with few layers (the growth over the file size does not depend on the
depth), written once per case in a layout both sides read: diffusers / transformers folders (bf16, the released
files' dtype; ``dit-fp32``: float32, as the official Wan 2.1 DiT files, loaded for bf16 compute), a Comfy-layout fp8
file, a bf16 DiT file with a rank-32 LoRA on every attention and feed-forward layer (``dit-lora``: merged, the
default; its file size is both files'), a community-layout GGUF (Q8_0 Linear weights, F16 text and time
embeddings, F32 norms), a llama.cpp-layout UMT5 GGUF (Q8_0 Linear weights and token embedding, F32 norms, the
tokenizer in its metadata). Each measurement is one fresh process: imports, then the baseline RSS, then the load and
the first run (DiT: one forward at 2x8x8 latents; text encoder: one 16-token forward; CLIP: one 224-pixel image;
VAE: the first decode of 5 frames at 160x160 in float32), then the peak RSS (``VmHWM``). Peak growth = peak -
baseline; the median of ``--runs`` processes per side, taken in turn (ours, peer, ours, peer ...: the machine's
state drifts). Targets: growth <= 1.1 x the file (plus the run's working set, small here; the VAE decodes in
float32 from a bf16 file, so its weights alone are 2 x the file) and <= 1.0 x the peer's.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))  # harness.py, also when imported as benchmarks.*
from harness import ROOT, rss_kb, run_probe  # noqa: E402

sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

SIZES = {  # case -> widths: released (few layers) / tiny
    "dit": (dict(dim=1536, ffn=8960, heads=12, layers=4), dict(dim=128, ffn=256, heads=2, layers=2)),
    "t5": (dict(dim=4096, ffn=10240, heads=64, layers=2, vocab=32128), dict(dim=64, ffn=128, heads=2, layers=2,
                                                                            vocab=512)),
    "clip": (dict(dim=1280, ffn=5120, heads=16, layers=8), dict(dim=64, ffn=128, heads=2, layers=2)),
    "vae-2.1": (dict(base=96), dict(base=8)),
    "vae-2.2": (dict(base=160), dict(base=8)),
}
CASES = {  # name -> (size key, peer or None)
    "dit-bf16": ("dit", "diffusers"), "dit-fp32": ("dit", "diffusers"), "dit-fp8": ("dit", None),
    "dit-gguf": ("dit", None), "dit-lora": ("dit", None),
    "t5": ("t5", "transformers"), "t5-gguf": ("t5", None), "clip": ("clip", "transformers"),
    "vae-2.1": ("vae-2.1", "diffusers"), "vae-2.2": ("vae-2.2", "diffusers"),
}
COMMUNITY_F16 = ("text_embedding.", "time_embedding.", "time_projection.")


# --- files ---------------------------------------------------------------------------------------------------------
def _diffusers_dit(s: dict):
    from diffusers import WanTransformer3DModel

    return WanTransformer3DModel(num_attention_heads=s["heads"], attention_head_dim=s["dim"] // s["heads"],
                                 ffn_dim=s["ffn"], num_layers=s["layers"])


def _randomised(model, std: float = 0.02):
    torch.manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, std)
    return model.eval()


def write_files(case: str, s: dict, folder: Path) -> Path:
    """The file (or folder) of ``case`` under ``folder``."""
    if case in ("dit-bf16", "dit-fp32"):
        dtype = torch.bfloat16 if case == "dit-bf16" else torch.float32
        _randomised(_diffusers_dit(s)).to(dtype).save_pretrained(str(folder / case))
        return folder / case
    if case in ("dit-fp8", "dit-gguf", "dit-lora"):
        from benchmarks.dit_forward import random_official_weights
        from wan.dit.config import WanDiTConfig

        from safetensors.torch import save_file

        weights = random_official_weights(WanDiTConfig(dim=s["dim"], ffn_dim=s["ffn"], num_heads=s["heads"],
                                                       num_layers=s["layers"]))
        if case == "dit-lora":
            from wan.lora.demo import write_demo_lora

            (folder / case).mkdir()
            save_file({k: v.to(torch.bfloat16) for k, v in weights.items()}, str(folder / case / "dit.safetensors"))
            write_demo_lora(folder / case / "dit.safetensors", folder / case / "lora.safetensors", rank=32)
            return folder / case
        if case == "dit-fp8":
            fp8 = {k: v.to(torch.float8_e4m3fn) if v.dim() == 2 and ".weight" in k else v.to(torch.bfloat16)
                   for k, v in weights.items()}
            save_file(fp8, str(folder / "dit_fp8.safetensors"))
            return folder / "dit_fp8.safetensors"
        from gguf import GGMLQuantizationType as T
        from wan.quant.gguf_write import write_gguf

        types = {k: T.F16 for k in weights if k.startswith(COMMUNITY_F16) and k.endswith(".weight")}
        write_gguf(folder / "dit-Q8_0.gguf", weights, T.Q8_0, types=types, prefix="model.diffusion_model.")
        return folder / "dit-Q8_0.gguf"
    if case == "t5":
        import test_encoders_support as sup

        _randomised(_hf_umt5(s)).to(torch.bfloat16).save_pretrained(str(folder / case))
        sup.write_tokenizer_folder(sup.train_spiece(), folder / case)
        return folder / case
    if case == "t5-gguf":
        import test_encoders_support as sup
        from test_gguf_text_encoder import write_t5_gguf

        model = _randomised(_hf_umt5(s))
        return write_t5_gguf(model, folder / "umt5-xxl-encoder-Q8_0.gguf", spiece=sup.train_spiece())
    if case == "clip":
        from transformers import CLIPVisionConfig, CLIPVisionModel

        config = CLIPVisionConfig(hidden_size=s["dim"], intermediate_size=s["ffn"], num_attention_heads=s["heads"],
                                  num_hidden_layers=s["layers"], image_size=224, patch_size=14, hidden_act="gelu")
        _randomised(CLIPVisionModel(config)).to(torch.float16).save_pretrained(str(folder / case))
        return folder / case
    from vae_decode import RELEASES
    from diffusers import AutoencoderKLWan

    r = RELEASES[case[-3:]]
    model = AutoencoderKLWan(base_dim=s["base"], decoder_base_dim=round(s["base"] * r.dec_ratio), z_dim=r.z_dim,
                             **r.diffusers_extra)
    _randomised(model, 0.05).to(torch.bfloat16).save_pretrained(str(folder / case))
    return folder / case


def _hf_umt5(s: dict):
    from transformers import UMT5Config, UMT5EncoderModel

    return UMT5EncoderModel(UMT5Config(vocab_size=s["vocab"], d_model=s["dim"], d_kv=s["dim"] // s["heads"],
                                       d_ff=s["ffn"], num_layers=s["layers"], num_heads=s["heads"],
                                       feed_forward_proj="gated-gelu"))


def file_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.suffix in (".safetensors", ".gguf")) \
        if path.is_dir() else path.stat().st_size


# --- one measurement (fresh process) -------------------------------------------------------------------------------
def _dit_inputs(dtype, s):
    g = torch.Generator().manual_seed(1)
    return (torch.randn(1, 16, 2, 8, 8, generator=g).to(dtype), torch.tensor([700.0]),
            torch.randn(1, 512, 4096, generator=g).to(dtype))


def first_run(case: str, side: str, path: Path, s: dict, loaded=lambda: None) -> None:
    """Load ``path`` and run once, as ``side`` (ours / the peer); ``loaded()`` is called between the two."""
    with torch.no_grad():
        if case.startswith("dit"):
            if side == "ours":
                import wan

                lora = path / "lora.safetensors" if case == "dit-lora" else None
                model = wan.load_dit(path / "dit.safetensors" if lora else path, dtype="bf16", num_heads=s["heads"])
                if lora:
                    from wan.lora import apply_lora

                    model = apply_lora(model, lora)  # merged (the default): the first run's LoRA set-up
                loaded()
                x, t, ctx = _dit_inputs(model.compute_dtype, s)
                model(x, t, ctx)
            else:
                from diffusers import WanTransformer3DModel

                model = diffusers_assigned(WanTransformer3DModel, path, torch.bfloat16)
                loaded()
                x, t, ctx = _dit_inputs(torch.bfloat16, s)
                model(hidden_states=x, timestep=t, encoder_hidden_states=ctx)
        elif case.startswith("t5"):
            ids, mask = torch.randint(0, 500, (1, 16)), torch.ones(1, 16, dtype=torch.long)
            if side == "ours":
                from wan.encoders import load_text_encoder

                encoder = load_text_encoder(path)
                loaded()
                encoder.model(ids, mask)
            else:
                from transformers import UMT5EncoderModel

                model = UMT5EncoderModel.from_pretrained(str(path), torch_dtype=torch.bfloat16)
                loaded()
                model(input_ids=ids, attention_mask=mask)
        elif case == "clip":
            image = torch.rand(1, 3, 224, 224)
            if side == "ours":
                from wan.encoders import load_clip_vision

                clip = load_clip_vision(path)
                loaded()
                clip.encode(image)
            else:
                from transformers import CLIPVisionModel

                model = CLIPVisionModel.from_pretrained(str(path), torch_dtype=torch.float16)
                loaded()
                model(pixel_values=image.half(), output_hidden_states=True)
        else:
            from vae_decode import latents

            z = latents(case[-3:], 5, (160, 160), torch.device("cpu"))
            if side == "ours":
                from wan.vae import load_vae

                vae = load_vae(path, dtype="fp32")
                loaded()
                vae.decode(z, tiled="off")
            else:
                from diffusers import AutoencoderKLWan

                vae = diffusers_assigned(AutoencoderKLWan, path, torch.float32)
                loaded()
                vae.decode(z)


def diffusers_assigned(cls, path: Path, dtype: torch.dtype):
    """diffusers' ``from_pretrained`` as it loads with ``accelerate`` installed (not a dependency here): the model
    built without initialising its weights (never touched, so never resident), given the file's tensors
    (memory-mapped), cast to ``dtype`` except its ``_keep_in_fp32_modules``."""
    from diffusers.models.modeling_utils import no_init_weights

    from wan.weights.checkpoint import read_state_dict

    with no_init_weights():
        model = cls.from_config(cls.load_config(str(path)))
    keep = model._keep_in_fp32_modules or []
    sd = {k: v.to(torch.float32 if any(part in k.split(".") for part in keep) else dtype)
          for k, v in read_state_dict(path).items()}
    model.load_state_dict(sd, strict=True, assign=True)
    return model.eval()


def probe(args) -> None:
    import diffusers  # noqa: F401  (code, not data: imported before the baseline)
    import transformers  # noqa: F401
    import wan  # noqa: F401
    import wan.encoders  # noqa: F401
    import wan.vae  # noqa: F401

    with torch.device("meta"):  # the first init on the meta device loads torch's meta kernels (~80 MB of code)
        torch.nn.Embedding(2, 2)
    size = SIZES[CASES[args.case][0]][1 if args.tiny else 0]
    base, at_load = rss_kb("VmRSS:"), []
    first_run(args.case, args.probe, Path(args.path), size, lambda: at_load.append(rss_kb("VmHWM:")))
    print(json.dumps({"growth": (rss_kb("VmHWM:") - base) * 1024, "load": (at_load[0] - base) * 1024}))


def dit_working_set(case: str, s: dict) -> int:
    """What the memory budget (``wan.budget.estimates``) counts for the first run's forward besides the weights."""
    from wan.budget.estimates import dit_activation_bytes
    from wan.dit.config import WanDiTConfig

    config = WanDiTConfig(dim=s["dim"], ffn_dim=s["ffn"], num_heads=s["heads"], num_layers=s["layers"])
    stored = {"dit-fp8": torch.float8_e4m3fn, "dit-gguf": torch.uint8}.get(case, torch.bfloat16)
    return dit_activation_bytes(config, torch.bfloat16, 2 * 4 * 4, stored)  # 2x8x8 latents: 32 tokens


# --- report --------------------------------------------------------------------------------------------------------
def measure(case: str, args, folder: Path) -> None:
    key, peer = CASES[case]
    size = SIZES[key][1 if args.tiny else 0]
    path = write_files(case, size, folder)
    total = file_bytes(path)
    sides = ["ours"] + ([peer] if peer else [])
    common = ["--case", case, "--path", str(path), "--threads", str(args.threads)] + (["--tiny"] if args.tiny else [])
    runs = {side: [] for side in sides}
    for _ in range(args.runs):
        for side in sides:
            runs[side].append(run_probe(Path(__file__), "--probe", side, *common))
    growth = {side: statistics.median(r["growth"] for r in v) for side, v in runs.items()}
    load = {side: statistics.median(r["load"] for r in v) for side, v in runs.items()}
    line = f"  {case:<9} file {total / 2**20:8.1f} MB   load: ours {load['ours'] / total:4.2f} x file" + \
        (f", {peer} {load[peer] / total:4.2f}" if peer else "") + \
        f"   load + first run: ours {growth['ours'] / 2**20:8.1f} MB = {growth['ours'] / total:5.2f} x file"
    if case.startswith("dit"):
        work = dit_working_set(case, size)
        line += f" (target 1.1 x file + working set {work / 2**20:.0f} MB: {growth['ours'] / (1.1 * total + work):4.2f})"
    if peer:
        line += f"   {peer} {growth[peer] / 2**20:8.1f} MB = {growth[peer] / total:5.2f} x file   " \
                f"ours / {peer} {growth['ours'] / growth[peer]:5.2f}"
    print(line, flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tiny", action="store_true", help="small widths (smoke run)")
    parser.add_argument("--only", nargs="+", choices=sorted(CASES), default=None, help="cases to run (default all)")
    parser.add_argument("--runs", type=int, default=None, help="fresh processes per side (default 3; tiny 1)")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads in each process")
    parser.add_argument("--probe", help=argparse.SUPPRESS)
    parser.add_argument("--case", help=argparse.SUPPRESS)
    parser.add_argument("--path", help=argparse.SUPPRESS)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.probe:
        return probe(args)
    args.runs = args.runs or (1 if args.tiny else 3)
    print(f"peak RSS growth of a fresh process (load + first run), median of {args.runs}, {args.threads} thread(s)")
    for case in args.only or CASES:
        with tempfile.TemporaryDirectory() as tmp:
            measure(case, args, Path(tmp))


if __name__ == "__main__":
    main()
