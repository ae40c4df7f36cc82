"""Local Qwen prompt extension on tiny random Qwen2 / Qwen2.5-VL folders (tests/tiny_qwen.py).

Oracle: the official ``QwenPromptExpander`` (``wan22``: ``wan/utils/prompt_extend.py``) running its own
``extend`` / ``extend_with_img`` on models loaded by transformers from the same folder; its VL path uses the
official ``qwen_vl_utils.process_vision_info`` and transformers' own ``Qwen2_5_VLProcessor``. Both sides must
build the same chat messages, hand ``generate`` identical tensors (exact equality) and return the same text.
The official constructor is skipped (it needs accelerate's ``device_map``; the processor class needs torchvision
to load, so it is assembled from the folder's parts)."""
import gc
import logging
import sys
import types
import weakref

import numpy as np
import pytest
import torch
from PIL import Image

import tiny_qwen
from oracles import official
from wan.errors import InputError
from wan.prompts import LocalOptions, extend_prompt

SEED = 7


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("LLM")
    return {"root": root,
            "text": tiny_qwen.write_tiny_qwen(root / "Qwen2.5-14B-Instruct"),
            "sampling": tiny_qwen.write_tiny_qwen(root / "sampling", sampling=True),
            "vision": tiny_qwen.write_tiny_qwen(root / "Qwen2.5-VL-7B-Instruct", vision=True)}


@pytest.fixture
def recorder(monkeypatch):
    """Every generate() call (its tensors and model) and every chat-template rendering (its messages)."""
    from transformers import GenerationMixin, PreTrainedTokenizerBase, ProcessorMixin

    calls = {"generate": [], "messages": []}

    def wrap(cls, name, key, keep):
        original = getattr(cls, name)

        def recording(self, *args, **kwargs):
            calls[key].append(keep(self, args, kwargs))
            return original(self, *args, **kwargs)
        monkeypatch.setattr(cls, name, recording)

    wrap(GenerationMixin, "generate", "generate", lambda m, a, k: (weakref.ref(m), dict(k)))
    for cls in (PreTrainedTokenizerBase, ProcessorMixin):
        wrap(cls, "apply_chat_template", "messages", lambda m, a, k: a[0] if a else k["conversation"])
    return calls


def official_expander(folder, task, vision):
    """The official QwenPromptExpander on models loaded from ``folder`` (its __init__ skipped, see module doc)."""
    import transformers

    pe = official.load("utils.prompt_extend")
    expander = object.__new__(pe.QwenPromptExpander)
    expander.model_name, expander.task, expander.is_vl, expander.device = str(folder), task, vision, "cpu"
    tokenizer = transformers.AutoTokenizer.from_pretrained(folder)
    if not vision:
        expander.model = transformers.AutoModelForCausalLM.from_pretrained(folder)
        expander.tokenizer = tokenizer
        return expander
    expander.model = transformers.Qwen2_5_VLForConditionalGeneration.from_pretrained(folder)
    expander.processor = _processor(folder, tokenizer)
    expander.process_vision_info = _official_vision_utils().process_vision_info
    return expander


def _processor(folder, tokenizer):
    import transformers

    from wan.prompts.qwen_inputs import folder_chat_template

    processor = object.__new__(transformers.Qwen2_5_VLProcessor)
    processor.tokenizer, processor.video_processor = tokenizer, None
    processor.image_processor = transformers.AutoImageProcessor.from_pretrained(
        folder, min_pixels=256 * 28 * 28, max_pixels=1280 * 28 * 28)  # the official AutoProcessor arguments
    processor.chat_template = folder_chat_template(folder)
    processor.image_token, processor.video_token = "<|image_pad|>", "<|video_pad|>"
    processor.image_token_id = tokenizer.convert_tokens_to_ids("<|image_pad|>")
    processor.video_token_id = tokenizer.convert_tokens_to_ids("<|video_pad|>")
    return processor


def _official_vision_utils():
    """qwen_vl_utils imports torchvision at the top (used only for videos): a placeholder lets it load."""
    if "wan_official.utils.qwen_vl_utils" not in sys.modules:
        stub = types.ModuleType("torchvision")
        stub.io = stub.transforms = types.SimpleNamespace(InterpolationMode=None)
        stub.__version__ = "0.0"
        saved = {k: sys.modules.get(k) for k in ("torchvision", "torchvision.transforms")}
        sys.modules.update({"torchvision": stub, "torchvision.transforms": stub.transforms})
        try:
            official.load("utils.qwen_vl_utils")
        finally:
            for k, v in saved.items():
                sys.modules.pop(k) if v is None else sys.modules.__setitem__(k, v)
    return sys.modules["wan_official.utils.qwen_vl_utils"]


def image(width=90, height=60, seed=0):
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))


def ours(folder, prompt, **kwargs):
    options = LocalOptions(model_dirs=(folder.parent,), device="cpu", decoding=kwargs.pop("decoding", "sample"))
    return extend_prompt(prompt, "local_qwen", folder.name, local=options, **kwargs)


def assert_same_generate_inputs(a: dict, b: dict):
    assert a.keys() == b.keys()
    for name in a:
        if isinstance(a[name], torch.Tensor):
            assert torch.equal(a[name], b[name]), name
        else:
            assert a[name] == b[name], name


@pytest.mark.parametrize("lang", ["zh", "en"])
def test_text_rewrite_equals_the_official_expander(folders, recorder, lang):
    ref = official_expander(folders["text"], "t2v-A14B", vision=False)("a cat on a surfboard", tar_lang=lang,
                                                                      seed=SEED)
    got = ours(folders["text"], "a cat on a surfboard", target_lang=lang, seed=SEED)
    assert got.extended and ref.status and got.prompt == ref.prompt and got.system_prompt == ref.system_prompt
    assert recorder["messages"][0] == recorder["messages"][1]  # system turn, user turn, plain strings
    assert recorder["messages"][1][1] == {"role": "user", "content": "a cat on a surfboard"}
    assert_same_generate_inputs(recorder["generate"][0][1], recorder["generate"][1][1])


@pytest.mark.parametrize("prompt", ["a cat on a surfboard", ""])
def test_image_rewrite_equals_the_official_expander(folders, recorder, prompt):
    """Wan 2.2 layout: the image before the prompt; an empty prompt takes the image-only instruction."""
    start = image()
    ref = official_expander(folders["vision"], "i2v-A14B", vision=True)(prompt, tar_lang="en", image=start, seed=SEED)
    got = ours(folders["vision"], prompt, target_lang="en", image=start, seed=SEED)
    assert got.prompt == ref.prompt and got.system_prompt == ref.system_prompt
    official_messages, our_messages = recorder["messages"][0], recorder["messages"][-1]
    assert official_messages == our_messages
    assert our_messages[1]["content"][0] == {"type": "image", "image": start}
    ref_inputs, our_inputs = recorder["generate"][0][1], recorder["generate"][1][1]
    assert_same_generate_inputs(ref_inputs, our_inputs)
    assert int(our_inputs["mm_token_type_ids"].sum()) == int(our_inputs["image_grid_thw"].prod()) // 4


def test_wan21_layout_puts_the_prompt_before_both_frames(folders, recorder):
    """Wan 2.1 (``QwenPromptExpander.extend_with_img`` there): typed text first, then one untyped item per image;
    each image gets its own run of placeholders, (t*h*w)/4 long for its patch grid."""
    first, last = image(seed=1), image(120, 56, seed=2)
    got = ours(folders["vision"], "a harbour", target_lang="zh", image=[first, last], seed=SEED, style="wan2.1")
    assert got.extended
    user = recorder["messages"][0][1]["content"]
    assert user == [{"type": "text", "text": "a harbour"}, {"image": first}, {"image": last}]
    assert recorder["messages"][0][0]["content"] == [{"type": "text", "text": got.system_prompt}]
    inputs = recorder["generate"][0][1]
    grids = inputs["image_grid_thw"]
    assert grids.shape == (2, 3) and int(inputs["mm_token_type_ids"].sum()) == int(grids.prod(-1).sum()) // 4


def test_seeded_sampling_is_reproducible_and_matches_the_official_draw(folders, recorder):
    """With Qwen's sampling settings, the official expander drawn after torch.manual_seed(seed) is the oracle."""
    torch.manual_seed(SEED)
    ref = official_expander(folders["sampling"], "t2v-A14B", vision=False)("a cat", tar_lang="en", seed=SEED)
    state = torch.random.get_rng_state()
    first = ours(folders["sampling"], "a cat", target_lang="en", seed=SEED)
    assert torch.equal(state, torch.random.get_rng_state())  # the caller's random state is left alone
    again = ours(folders["sampling"], "a cat", target_lang="en", seed=SEED)
    other = ours(folders["sampling"], "a cat", target_lang="en", seed=SEED + 1)
    assert first.prompt == again.prompt == ref.prompt != other.prompt
    # greedy: the folder's sampling is switched off (its repetition penalty stays); oracle: the official expander
    # with the sampling switched off in the model's generation config
    greedy = [ours(folders["sampling"], "a cat", target_lang="en", seed=s, decoding="greedy").prompt for s in (1, 2)]
    expander = official_expander(folders["sampling"], "t2v-A14B", vision=False)
    expander.model.generation_config.update(do_sample=False, temperature=None, top_p=None, top_k=None)
    assert greedy[0] == greedy[1] == expander("a cat", tar_lang="en", seed=1).prompt


def test_model_is_freed_after_the_call(folders, recorder):
    ours(folders["text"], "a cat", seed=SEED)
    model_ref = recorder["generate"][0][0]
    gc.collect()
    assert model_ref() is None


def test_default_model_name_resolves_to_the_models_llm_folder(folders):
    got = extend_prompt("a cat", "local_qwen", None, "en", seed=SEED,
                        local=LocalOptions(model_dirs=(folders["root"],), device="cpu"))
    assert got.model == str(folders["text"]) and got.extended  # Qwen2.5_14B -> Qwen2.5-14B-Instruct
    got = extend_prompt("a cat", "local_qwen", "QwenVL2.5_7B", "en", image=image(), seed=SEED,
                        local=LocalOptions(model_dirs=(folders["root"],), device="cpu"))
    assert got.model == str(folders["vision"])


def test_missing_folder_names_the_folder_and_the_model(tmp_path):
    with pytest.raises(InputError) as err:
        extend_prompt("a cat", "local_qwen", None, image=image(), local=LocalOptions(model_dirs=(tmp_path / "LLM",)))
    text = str(err.value)
    assert "Qwen/Qwen2.5-VL-7B-Instruct" in text and str(tmp_path / "LLM" / "Qwen2.5-VL-7B-Instruct") in text
    with pytest.raises(InputError, match="my-qwen"):
        extend_prompt("a cat", "local_qwen", "my-qwen", local=LocalOptions(model_dirs=(tmp_path,)))


def test_text_only_model_with_an_image_is_refused(folders):
    with pytest.raises(InputError, match="text-only model"):
        ours(folders["text"], "a cat", image=image())


def test_bad_settings_are_refused_before_loading(folders):
    for kwargs in ({"target_lang": "fr"}, {"style": "wan3"}, {"decoding": "beam"}):
        with pytest.raises(InputError):
            ours(folders["text"], "a cat", **kwargs)
    with pytest.raises(InputError, match="at most an end image"):
        ours(folders["vision"], "a cat", image=[image()] * 3)


def test_a_broken_model_falls_back_to_the_original_prompt(folders, tmp_path, caplog):
    broken = tmp_path / "broken"
    broken.mkdir()
    for name in ("config.json", "tokenizer.json", "tokenizer_config.json"):
        (broken / name).write_bytes((folders["text"] / name).read_bytes())
    (broken / "model.safetensors").write_bytes(b"not a safetensors file")
    with caplog.at_level(logging.INFO, logger="wan_experts"):
        got = ours(broken, "a cat", seed=SEED)
    assert not got.extended and got.prompt == "a cat" and got.message
    assert any("Extending prompt failed" in r.getMessage() and "Falling back to the original prompt" in r.getMessage()
               for r in caplog.records if r.levelno == logging.WARNING)
