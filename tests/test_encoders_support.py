"""Shared builders for the encoder tests (no tests here): a sentencepiece tokenizer trained on the spot, tiny
UMT5 / CLIP oracles with random weights, and the official modules imported on CPU."""
from __future__ import annotations

import io
import json
import random
import shutil
import sys
import types
from pathlib import Path

import torch
from safetensors.torch import save_file

from oracles import official
from oracles.randomize import randomize_

SP_VOCAB = 320
_LETTERS = "abcdefghijklmnopqrstuvwxyz"
_SENTENCES = (
    "A cat walks on the grass, realistic style.",
    "一只猫在草地上行走，阳光明媚。",
    "The quick brown fox jumps over the lazy dog 123 times!",
    "Hello &amp; welcome to the café — naïve façade.",
    "色调艳丽，过曝，静态，细节模糊不清，字幕，风格，作品，画作，画面，静止，整体发灰，最差质量，低质量",
)


def train_spiece() -> bytes:
    """A small unigram sentencepiece model with the T5 special ids (pad 0, eos 1, unk 2, no bos)."""
    import sentencepiece as spm

    rng = random.Random(0)
    words = ["".join(rng.choice(_LETTERS) for _ in range(rng.randint(2, 8))) for _ in range(400)]
    text = list(_SENTENCES) * 20 + [" ".join(rng.choice(words) for _ in range(12)) for _ in range(300)]
    buf = io.BytesIO()
    spm.SentencePieceTrainer.train(sentence_iterator=iter(text), model_writer=buf, vocab_size=SP_VOCAB,
                                   model_type="unigram", pad_id=0, eos_id=1, unk_id=2, bos_id=-1,
                                   character_coverage=1.0, minloglevel=2, num_threads=1)
    return buf.getvalue()


def write_tokenizer_folder(spiece: bytes, folder: Path) -> Path:
    """The official ``google/umt5-xxl`` layout: spiece.model, tokenizer.json (made by transformers), configs."""
    import google.protobuf  # noqa: F401  (requirements-test.txt: transformers converts a spiece.model with it)
    from transformers import AutoTokenizer

    src = folder.parent / (folder.name + "_src")
    src.mkdir(parents=True, exist_ok=True)
    (src / "spiece.model").write_bytes(spiece)
    (src / "tokenizer_config.json").write_text(json.dumps({"tokenizer_class": "T5Tokenizer", "extra_ids": 0}))
    AutoTokenizer.from_pretrained(str(src)).save_pretrained(str(folder))
    (folder / "spiece.model").write_bytes(spiece)
    shutil.rmtree(src)
    return folder


def official_tokenizer(folder: Path, seq_len: int = 512):
    """The official wrapper (``wan/modules/tokenizers.py``) as Wan builds it for the T5 encoder."""
    return official.load("modules.tokenizers").HuggingfaceTokenizer(name=str(folder), seq_len=seq_len,
                                                                    clean="whitespace")


def official_t5_module():
    """``wan/modules/t5.py``; its class body calls torch.cuda.current_device(), so answer 'cpu' during import."""
    original = torch.cuda.current_device
    torch.cuda.current_device = lambda: "cpu"
    try:
        return official.load("modules.t5")
    finally:
        torch.cuda.current_device = original


T5_SIZE = dict(dim=64, dim_attn=64, dim_ffn=96, num_heads=4, num_layers=2, num_buckets=32)


def official_t5_encoder(vocab: int = SP_VOCAB, seed: int = 1):
    t5 = official_t5_module()
    model = t5.T5Encoder(vocab=vocab, shared_pos=False, dropout=0.0, **T5_SIZE).eval().requires_grad_(False)
    return randomize_(model, std=0.2, seed=seed)


def official_t5_pipeline(model, tokenizer_folder: Path):
    """The official ``T5EncoderModel`` call path (tokenizer + encoder + keep the real tokens) around ``model``."""
    t5 = official_t5_module()
    wrapper = t5.T5EncoderModel.__new__(t5.T5EncoderModel)
    wrapper.model, wrapper.tokenizer = model, official_tokenizer(tokenizer_folder)

    def encode(prompts: list[str]) -> torch.Tensor:
        with torch.no_grad():
            states = wrapper(prompts, "cpu")
        return torch.stack([torch.cat([u, u.new_zeros(512 - u.shape[0], u.shape[1])]) for u in states])

    return encode


def hf_umt5(vocab: int = SP_VOCAB, seed: int = 2, d_ff: int = 96):
    from transformers import UMT5Config, UMT5EncoderModel

    cfg = UMT5Config(vocab_size=vocab, d_model=64, d_kv=16, d_ff=d_ff, num_layers=2, num_heads=4,
                     relative_attention_num_buckets=32, relative_attention_max_distance=128,
                     feed_forward_proj="gated-gelu", dropout_rate=0.0, layer_norm_epsilon=1e-6)
    model = UMT5EncoderModel(cfg).eval().requires_grad_(False)
    return randomize_(model, std=0.2, seed=seed)


def hf_umt5_encode(model, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """transformers' states for the real tokens, zero after them, [B, 512, dim]."""
    with torch.no_grad():
        states = model(input_ids=ids, attention_mask=mask).last_hidden_state
    return states * mask[..., None].to(states.dtype)


def spiece_tensor(spiece: bytes) -> torch.Tensor:
    return torch.frombuffer(bytearray(spiece), dtype=torch.uint8)


def save_comfy_t5(model, spiece: bytes | None, path: Path) -> Path:
    sd = {k: v.contiguous() for k, v in model.state_dict().items() if k != "encoder.embed_tokens.weight"}
    if spiece is not None:
        sd["spiece_model"] = spiece_tensor(spiece)
    save_file(sd, str(path))
    return path


def scaled_fp8(sd: dict[str, torch.Tensor], linear_suffix: str = ".weight", skip=()) -> tuple[dict, dict]:
    """Comfy-style scaled fp8 of every 2-D Linear weight: (file tensors, dequantised weights for the oracle)."""
    out, dequant = {"scaled_fp8": torch.zeros(0, dtype=torch.float8_e4m3fn)}, {}
    for k, v in sd.items():
        if k.endswith(linear_suffix) and v.ndim == 2 and not any(s in k for s in skip):
            scale = v.abs().max().float() / 448.0
            q = (v.float() / scale).to(torch.float8_e4m3fn)
            out[k], out[k[: -len(".weight")] + ".scale_weight"] = q, scale.reshape(())
            dequant[k] = q.float() * scale
        else:
            out[k] = v.contiguous()
            dequant[k] = v
    return out, dequant


# --- CLIP -----------------------------------------------------------------------------------------------------

CLIP_SIZE = dict(image_size=56, patch_size=14, dim=64, mlp_ratio=4, num_heads=16, num_layers=3)


def _torchvision_stub() -> types.ModuleType:
    """The few ``torchvision.transforms`` names ``clip.py`` touches (torchvision does not import beside torch 2.13)."""
    transforms = types.ModuleType("torchvision.transforms")

    class Normalize:
        def __init__(self, mean, std):
            self.mean, self.std = torch.tensor(mean), torch.tensor(std)

        def __call__(self, x):
            return (x - self.mean[:, None, None].to(x)) / self.std[:, None, None].to(x)

    class Compose:
        def __init__(self, transforms):
            self.transforms = transforms

    transforms.Normalize, transforms.Compose = Normalize, Compose
    transforms.Resize = transforms.ToTensor = lambda *a, **k: None
    transforms.InterpolationMode = types.SimpleNamespace(BICUBIC="bicubic")
    return transforms


def official_clip_module():
    """``wan/modules/animate/clip.py``, imported with the stub in ``sys.modules`` only while it imports (left in
    place, the stub would make transformers believe torchvision is installed)."""
    name = official.PACKAGE + ".modules.animate.clip"
    if name in sys.modules:
        return sys.modules[name]
    official.load("modules.tokenizers")  # imports transformers before the stub exists
    stub = _torchvision_stub()
    tv = types.ModuleType("torchvision")
    tv.transforms = stub
    saved = {k: sys.modules.get(k) for k in ("torchvision", "torchvision.transforms")}
    sys.modules.update({"torchvision": tv, "torchvision.transforms": stub})
    try:
        return official.load("modules.animate.clip")
    finally:
        for k, v in saved.items():
            if v is None:
                sys.modules.pop(k, None)
            else:
                sys.modules[k] = v


def official_clip_tower(seed: int = 3):
    clip = official_clip_module()
    vt = clip.VisionTransformer(out_dim=32, pool_type="token", pre_norm=True, post_norm=False, activation="gelu",
                                **CLIP_SIZE)
    return randomize_(vt.eval().requires_grad_(False), std=0.2, seed=seed)


def official_clip_visual(tower):
    """The official ``CLIPModel.visual`` (resize, [0,1], normalise, blocks up to the penultimate) around ``tower``."""
    clip = official_clip_module()
    wrapper = clip.CLIPModel.__new__(clip.CLIPModel)
    wrapper.dtype = torch.float32
    wrapper.model = types.SimpleNamespace(image_size=tower.image_size, visual=tower)
    mean, std = [0.48145466, 0.4578275, 0.40821073], [0.26862954, 0.26130258, 0.27577711]
    wrapper.transforms = clip.T.Compose([None, None, clip.T.Normalize(mean, std)])

    def visual(videos: list[torch.Tensor]) -> torch.Tensor:
        with torch.no_grad():
            return wrapper.visual([v.clone() for v in videos])

    return visual


def save_official_clip(tower, path: Path) -> Path:
    sd = {f"visual.{k}": v.contiguous() for k, v in tower.state_dict().items()}
    sd["log_scale"] = torch.tensor(2.0)
    sd["textual.token_embedding.weight"] = torch.randn(10, 8)
    torch.save(sd, str(path))
    return path


def hf_clip_vision(seed: int = 4):
    from transformers import CLIPVisionConfig, CLIPVisionModel

    cfg = CLIPVisionConfig(hidden_size=64, intermediate_size=256, num_hidden_layers=3, num_attention_heads=16,
                           image_size=56, patch_size=14, hidden_act="gelu", layer_norm_eps=1e-5,
                           projection_dim=32)
    model = CLIPVisionModel(cfg).eval().requires_grad_(False)
    return randomize_(model, std=0.2, seed=seed)


def save_comfy_clip(model, path: Path) -> Path:
    """Comfy-Org ``clip_vision_h`` layout: ``vision_model.*`` names plus the (unused) projection."""
    sd = {"vision_model." + k: v.contiguous() for k, v in model.state_dict().items()}
    sd["visual_projection.weight"] = torch.randn(32, 64)
    save_file(sd, str(path))
    return path


def close(ours: torch.Tensor, ref: torch.Tensor) -> tuple[bool, float, float]:
    """The project's parity bar: max|ours - ref| <= 1e-4 * max|ref| + 1e-5."""
    err = (ours.float() - ref.float()).abs().max().item()
    bound = 1e-4 * ref.float().abs().max().item() + 1e-5
    return err <= bound, err, bound
