"""Checks of the pack against ComfyUI's own modules in one process (no server). A manual check: CI does not run it.

    python scripts/comfy_inprocess_check.py --comfy /path/to/ComfyUI --models /path/to/models

Run by scripts/comfy_host_check.py after it has written tiny models (``--models``: its base folder's ``models/``).
ComfyUI runs on the CPU here, where the engine never moves a model (its weights are already on that device), so the
memory hand-off is driven directly: a model registered through the pack's ``ComfyMemory`` host is put into
ComfyUI's ``current_loaded_models`` by its real ``load_models_gpu`` and must leave it, evicted, when ComfyUI's
``free_memory`` / ``unload_all_models`` ask, while a model in use stays; ComfyUI's housekeeping calls on our
``ModelPatcher`` subclass must not fail.

The core-conditioning bridges are checked with core's own encoders: core Load CLIP (type wan) and Load CLIP Vision
build UMT5-XXL and ViT-H at their fixed released sizes, which the tiny files cannot fill, so the same core classes
are built here at the tiny files' sizes (core's T5 and CLIP vision modules, its tokenizer and CLIP / CLIP Text
Encode / CLIP Vision Encode nodes), and the bridge nodes' outputs are compared with Wan Text Encode and Wan CLIP
Vision Encode on the same files (tolerance 1e-4 of the output scale, both in float32).
"""
from __future__ import annotations

import argparse
import gc
import json
import os
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TEXT_FILE = "umt5_xxl_fp8_e4m3fn_scaled.safetensors"
CLIP_FILE = "clip_vision_h.safetensors"
PROMPTS = ("A cat walks on the grass, realistic style.", "")
RESULTS: list[tuple[bool, str]] = []


def check(ok: bool, what: str) -> bool:
    RESULTS.append((bool(ok), what))
    print(("ok    " if ok else "FAIL  ") + what, flush=True)
    return ok


def import_comfy(comfy: Path, models: Path):
    """ComfyUI's modules as its main.py sets them up: on the CPU, float32 text encoders, this models folder."""
    sys.path.insert(0, str(comfy))
    os.chdir(comfy)
    sys.argv = ["main.py", "--cpu", "--fp32-text-enc", "--base-directory", str(models.parent)]
    import comfy.options

    comfy.options.enable_args_parsing()
    import comfy.model_management as mm
    import nodes  # noqa: F401  (core nodes; also sets up folder_paths)

    return mm


def import_pack():
    """The pack as ComfyUI imports it: the folder as a package under a name of the host's choosing."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("wan_experts_inprocess", ROOT / "__init__.py",
                                                  submodule_search_locations=[str(ROOT)])
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    import importlib

    for name in ("nodes.host", "nodes.bridge", "nodes.encoders", "wan.memory.place"):
        importlib.import_module(f"{spec.name}.{name}")
    return module


# -- memory hand-off -----------------------------------------------------------------------------------------------
def check_memory_handoff(mm, pack) -> None:
    import torch

    memory, host = pack.wan.memory.place, pack.nodes.host
    check(host.IN_COMFY and type(memory.memory_host()).__name__ == "ComfyMemory",
          f"the pack installed its ComfyUI memory host ({type(memory.memory_host()).__name__})")
    device = mm.get_torch_device()
    core = _core_model(mm, device)
    module = torch.nn.Sequential(torch.nn.Linear(64, 64), torch.nn.Linear(64, 64))
    resident = _register(memory, module, device)
    ours = [m for m in mm.current_loaded_models if m.model is resident.host_handle]
    check(len(ours) == 1 and mm.loaded_models().count(resident.host_handle) == 1,
          f"keep_idle registers the model once with load_models_gpu ({len(mm.current_loaded_models)} loaded)")
    memory.memory_host().keep_idle(resident)
    check(sum(m.model is resident.host_handle for m in mm.current_loaded_models) == 1,
          "registering again keeps one entry")
    _housekeeping(mm, resident.host_handle)
    resident.in_use = True
    mm.free_memory(1e30, device)
    check(resident.loaded and not any(m.model is resident.host_handle for m in mm.current_loaded_models),
          "free_memory while the model computes: ComfyUI drops its entry, the model stays placed")
    resident.in_use = False
    memory.memory_host().keep_idle(resident)
    check(any(m.model is resident.host_handle for m in mm.current_loaded_models), "registered again when idle")
    mm.free_memory(1e30, device)
    check(not resident.loaded and not mm.current_loaded_models, f"free_memory evicts it (and core's model): "
          f"{len(mm.current_loaded_models)} left, placed {resident.loaded}")
    resident = _register(memory, module, device)
    mm.unload_all_models()
    check(not resident.loaded and not mm.current_loaded_models, "unload_all_models (the /free route) evicts it")
    _lifetime(mm, memory, device)
    del core


def _core_model(mm, device):
    """A core ModelPatcher loaded as core nodes load theirs, so ComfyUI juggles both kinds."""
    import torch

    import comfy.model_patcher

    patcher = comfy.model_patcher.ModelPatcher(torch.nn.Linear(8, 8), device, mm.unet_offload_device())
    mm.load_models_gpu([patcher])
    return patcher


def _register(memory, module, device):
    """What the engine does with a keep_loaded encoder after use: placed on the device, then left there idle."""
    resident = memory.residency(module)
    if not resident.loaded:
        resident.load(device)
    resident.in_use = False
    memory.memory_host().keep_idle(resident)
    return resident


def _housekeeping(mm, handle) -> None:
    """Calls ComfyUI makes on loaded models while it plans loads and prompts."""
    try:
        loaded = next(m for m in mm.current_loaded_models if m.model is handle)
        values = (loaded.model_memory(), loaded.model_loaded_memory(), loaded.model_offloaded_memory(),
                  loaded.model_memory_required(mm.get_torch_device()), handle.model_dtype(),
                  handle.lowvram_patch_counter(), handle.model_patches_models(), loaded.should_reload_model(True))
        mm.cleanup_models_gc()
        mm.cleanup_models()
        mm.load_models_gpu([handle])
        ok = values[0] == values[1] == handle.resident.device_bytes and values[2] == 0
        check(ok and not loaded.is_dead(), f"ComfyUI's bookkeeping calls on the registered model: {values[:4]}")
    except Exception as exc:  # reported, not raised: the rest still runs
        check(False, f"ComfyUI's bookkeeping calls on the registered model raised {type(exc).__name__}: {exc}")


def _lifetime(mm, memory, device) -> None:
    """A registered model the graph cache lets go of: ComfyUI's entry goes with it, without leak warnings."""
    import torch

    module = torch.nn.Linear(32, 32)
    _register(memory, module, device)
    del module
    gc.collect()
    mm.cleanup_models_gc()
    mm.cleanup_models()
    check(not mm.current_loaded_models, f"a dropped model leaves ComfyUI's list ({len(mm.current_loaded_models)} left)")


# -- core conditioning into the bridges ----------------------------------------------------------------------------
def core_text_encoder(path: Path):
    """Core's CLIP object for a Wan UMT5 file, as Load CLIP (type wan) builds it, at the file's size."""
    import comfy.sd
    import comfy.sd1_clip
    import comfy.text_encoders.t5
    import comfy.text_encoders.wan
    import comfy.utils

    sd = comfy.utils.load_torch_file(str(path), safe_load=True)
    config = _t5_config(sd)

    class TinyUMT5(comfy.sd1_clip.SDClipModel):
        def __init__(self, device="cpu", layer="last", layer_idx=None, dtype=None, model_options={}):
            super().__init__(device=device, layer=layer, layer_idx=layer_idx, textmodel_json_config=config,
                             dtype=dtype, special_tokens={"end": 1, "pad": 0}, model_class=comfy.text_encoders.t5.T5,
                             enable_attention_masks=True, zero_out_masked=True, model_options=model_options)

    class TinyWanT5(comfy.sd1_clip.SD1ClipModel):
        def __init__(self, device="cpu", dtype=None, model_options={}, **kwargs):
            super().__init__(device=device, dtype=dtype, model_options=model_options, name="umt5xxl",
                             clip_model=TinyUMT5, **kwargs)

    class Target:
        params = {}
        clip = TinyWanT5
        tokenizer = comfy.text_encoders.wan.WanT5Tokenizer

    clip = comfy.sd.CLIP(Target(), tokenizer_data={"spiece_model": sd["spiece_model"]})
    missing, unexpected = clip.load_sd(sd)
    check(not missing, f"core T5 at the tiny size takes the file (missing {missing[:3]}, unexpected {unexpected[:3]})")
    return clip


def _t5_config(sd) -> str:
    """The UMT5 config core's T5 reads, with the file's sizes (written next to core's released one)."""
    heads = sd["encoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight"].shape[1]
    width = sd["shared.weight"].shape[1]
    inner = sd["encoder.block.0.layer.0.SelfAttention.q.weight"].shape[0]
    config = {"d_ff": sd["encoder.block.0.layer.1.DenseReluDense.wi_0.weight"].shape[0], "d_kv": inner // heads,
              "d_model": width, "dense_act_fn": "gelu_pytorch_tanh", "is_gated_act": True, "model_type": "umt5",
              "num_heads": heads, "vocab_size": sd["shared.weight"].shape[0], "layer_norm_epsilon": 1e-6,
              "num_layers": len({k.split(".")[2] for k in sd if k.startswith("encoder.block.")})}
    path = Path(tempfile.mkdtemp()) / "umt5_config_tiny.json"
    path.write_text(json.dumps(config))
    return str(path)


def check_text_bridge(pack, models: Path) -> None:
    import torch

    import nodes as core_nodes

    path = models / "text_encoders" / TEXT_FILE
    clip = core_text_encoder(path)
    encode = core_nodes.CLIPTextEncode()
    positive, negative = (encode.encode(clip, p)[0] for p in PROMPTS)
    bridged = pack.nodes.bridge.WanExpertsConditioningFromCore().convert(positive, negative)[0]
    encoder = pack.nodes.encoders.WanExpertsLoadTextEncoder().load(TEXT_FILE, "fp32", "cpu", False)[0]
    ours = pack.nodes.encoders.WanExpertsTextEncode().encode(encoder, PROMPTS[0], "")[0]
    error = (bridged.positive - ours.positive).abs().max().item()
    scale = ours.positive.abs().max().item()
    check(bridged.positive.shape == ours.positive.shape and error <= 1e-4 * scale + 1e-5,
          f"core CLIP Text Encode -> Wan Text From Core Conditioning equals Wan Text Encode: shape "
          f"{tuple(bridged.positive.shape)}, max error {error:.2e} (scale {scale:.2f})")
    neg_core = pack.nodes.bridge.WanExpertsConditioningFromCore().convert(positive, negative)[0].negative
    check(torch.isfinite(neg_core).all() and neg_core.shape == ours.negative.shape,
          "an empty core negative prompt bridges to a [1, 512, D] tensor (core encodes it as given: no official "
          "default negative prompt)")


def check_clip_bridge(pack, models: Path) -> None:
    import torch

    import comfy.clip_vision
    import comfy.utils
    import nodes as core_nodes

    sd = comfy.utils.load_torch_file(str(models / "clip_vision" / CLIP_FILE), safe_load=True)
    width = sd["vision_model.pre_layrnorm.weight"].shape[0]  # heads: ViT-H/14's 16, as the pack's loader reads it
    layers = len({k.split(".")[3] for k in sd if k.startswith("vision_model.encoder.layers.")})
    config = {"hidden_act": "gelu", "hidden_size": width, "image_size": 224, "intermediate_size":
              sd["vision_model.encoder.layers.0.mlp.fc1.weight"].shape[0], "layer_norm_eps": 1e-5,
              "num_attention_heads": 16, "num_channels": 3, "num_hidden_layers": layers, "patch_size": 14,
              "projection_dim": width, "model_type": "clip_vision_model"}
    path = Path(tempfile.mkdtemp()) / "clip_vision_config_tiny.json"
    path.write_text(json.dumps(config))
    clip = comfy.clip_vision.ClipVisionModel(str(path))
    clip.load_sd(sd)
    image = torch.randint(0, 256, (1, 224, 224, 3), generator=torch.Generator().manual_seed(0)) / 255.0
    core_out = core_nodes.CLIPVisionEncode().encode(clip, image, "none")[0]
    bridged = pack.nodes.bridge.WanExpertsCLIPVisionFromCore().convert(core_out, core_out)[0]
    vision = pack.nodes.encoders.WanExpertsLoadCLIPVision().load(CLIP_FILE, "fp32", "cpu")[0]
    ours = pack.nodes.encoders.WanExpertsCLIPVisionEncode().encode(vision, image, image)[0]
    a, b = bridged.features, ours.features
    error = (a.float() - b.float()).abs().max().item()
    scale = b.float().abs().max().item()
    check(a.shape == b.shape and error <= 1e-4 * scale + 1e-5,
          f"core CLIP Vision Encode (crop none) -> Wan CLIP Vision From Core equals Wan CLIP Vision Encode on a "
          f"224 px 8-bit image (start and end): shape {tuple(a.shape)}, max error {error:.2e} (scale {scale:.2f})")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--comfy", type=Path, required=True, help="ComfyUI folder (with main.py)")
    parser.add_argument("--models", type=Path, required=True, help="models folder with the tiny files")
    args = parser.parse_args(argv)
    mm = import_comfy(args.comfy.resolve(), args.models.resolve())
    pack = import_pack()
    for step in (lambda: check_memory_handoff(mm, pack), lambda: check_text_bridge(pack, args.models),
                 lambda: check_clip_bridge(pack, args.models)):
        try:
            step()
        except Exception as exc:  # one broken step must not hide the others
            import traceback

            traceback.print_exc()
            check(False, f"raised {type(exc).__name__}: {exc}")
    failed = [what for ok, what in RESULTS if not ok]
    print(f"\n{len(RESULTS) - len(failed)} ok, {len(failed)} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
