"""Tiny random-weight Qwen2 (text) and Qwen2.5-VL (image) model folders, laid out like the released
Qwen2.5-*-Instruct / Qwen2.5-VL-*-Instruct folders: config.json, model.safetensors, generation_config.json,
tokenizer.json + tokenizer_config.json (with a Qwen-style chat template), and for VL preprocessor_config.json
and chat_template.json. The tokenizer is a byte-level BPE trained here on the official system prompts, so every
text encodes and the prompts stay short."""
from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path

import torch

SPECIAL = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>", "<|image_pad|>",
           "<|video_pad|>"]
VOCAB, HIDDEN = 8192, 32
STOP_EVERY = 16  # every 16th ordinary token also ends generation: rewrites of a few dozen tokens keep tests fast
# Qwen-style ChatML; image items (typed or not) become the vision placeholder, as Qwen2.5-VL's template does
CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}{% else %}{% for c in message['content'] %}"
    "{% if c['type'] == 'image' or 'image' in c %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif 'text' in c %}{{ c['text'] }}{% endif %}{% endfor %}{% endif %}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
# Qwen2.5-*-Instruct generation_config.json
QWEN_SAMPLING = {"do_sample": True, "temperature": 0.7, "top_p": 0.8, "top_k": 20, "repetition_penalty": 1.05}
# Qwen2.5-VL-*-Instruct preprocessor_config.json (the released values)
PREPROCESSOR = {
    "min_pixels": 3136, "max_pixels": 12845056, "patch_size": 14, "temporal_patch_size": 2, "merge_size": 2,
    "image_mean": [0.48145466, 0.4578275, 0.40821073], "image_std": [0.26862954, 0.26130258, 0.27577711],
    "image_processor_type": "Qwen2VLImageProcessor", "processor_class": "Qwen2_5_VLProcessor",
}


@lru_cache(maxsize=1)
def _tokenizer_json() -> str:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    from wan.prompts.system_prompts import _table

    corpus = [text for kinds in _table().values() for langs in kinds.values() for text in langs.values()]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=VOCAB, special_tokens=SPECIAL, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(corpus + ["a cat on a surfboard"], trainer)
    return tok.to_str()


def tokenizer():
    from tokenizers import Tokenizer
    from transformers import PreTrainedTokenizerFast

    return PreTrainedTokenizerFast(tokenizer_object=Tokenizer.from_str(_tokenizer_json()), eos_token="<|im_end|>",
                                   pad_token="<|endoftext|>", chat_template=CHAT_TEMPLATE)


def write_tiny_qwen(folder, vision: bool = False, sampling: bool = False, seed: int = 0) -> Path:
    """A model folder; ``sampling``: Qwen's published sampling settings, otherwise greedy decoding."""
    folder = Path(folder)
    tok = tokenizer()
    ids = {name: tok.convert_tokens_to_ids(name) for name in SPECIAL}
    torch.manual_seed(seed)
    model = _vision_model(ids) if vision else _text_model(ids)
    model.generation_config.update(**(QWEN_SAMPLING if sampling else {"do_sample": False}))
    model.generation_config.eos_token_id = [ids["<|im_end|>"], *range(len(SPECIAL) + 1, VOCAB, STOP_EVERY)]
    model.generation_config.pad_token_id = ids["<|endoftext|>"]
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    if vision:
        (folder / "preprocessor_config.json").write_text(json.dumps(PREPROCESSOR, indent=1))
        (folder / "chat_template.json").write_text(json.dumps({"chat_template": CHAT_TEMPLATE}))
    return folder


def _text_config(ids: dict) -> dict:
    return dict(vocab_size=VOCAB, hidden_size=HIDDEN, intermediate_size=64, num_hidden_layers=2,
                num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=32768,
                bos_token_id=ids["<|endoftext|>"], eos_token_id=ids["<|im_end|>"], pad_token_id=ids["<|endoftext|>"],
                tie_word_embeddings=True, initializer_range=0.5)


def _text_model(ids: dict):
    from transformers import Qwen2Config, Qwen2ForCausalLM

    return Qwen2ForCausalLM(Qwen2Config(**_text_config(ids))).eval()


def _vision_model(ids: dict):
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

    text = {**_text_config(ids), "rope_scaling": {"type": "mrope", "mrope_section": [1, 1, 2]}}
    vision = dict(depth=2, hidden_size=HIDDEN, intermediate_size=64, num_heads=2, out_hidden_size=HIDDEN,
                  patch_size=14, spatial_merge_size=2, temporal_patch_size=2, window_size=56, fullatt_block_indexes=[1])
    config = Qwen2_5_VLConfig(text_config=text, vision_config=vision, image_token_id=ids["<|image_pad|>"],
                              video_token_id=ids["<|video_pad|>"], vision_start_token_id=ids["<|vision_start|>"],
                              vision_end_token_id=ids["<|vision_end|>"], **{k: text[k] for k in (
                                  "bos_token_id", "eos_token_id", "pad_token_id", "tie_word_embeddings")})
    return Qwen2_5_VLForConditionalGeneration(config).eval()
