"""Local Qwen prompt extension on tiny random Qwen2 / Qwen2.5-VL folders (tests/tiny_qwen.py).

Oracle: the official ``QwenPromptExpander`` (``wan22``: ``wan/utils/prompt_extend.py``) running its own
``extend`` / ``extend_with_img`` on models loaded by transformers from the same folder; its VL path uses the
official ``qwen_vl_utils.process_vision_info`` and transformers' own ``Qwen2_5_VLProcessor``. Both sides must
build the same chat messages, hand ``generate`` identical tensors (exact equality; pixel values: see below) and
return the same text.
The official constructor is skipped (it needs accelerate's ``device_map``; the processor class needs torchvision
to load, so it is assembled from the folder's parts).

Pixel values: the official processor is loaded with ``use_fast=True``, i.e. transformers' torchvision image
processor, and torchvision is not installed here. Its numbers come from transformers' PIL image processor (its own
rescale, normalise, patchify code) with the one step that differs, the resize, replaced by the numpy model of
torchvision's uint8 antialiased bicubic resize (tests/oracles/resample.py, written from the resampling rules, no
torch). The resize must match it exactly (uint8); the pixel values within 1e-6 (torchvision fuses rescale and
normalise into one float32 step, the PIL processor runs them one after the other; measured 2.4e-7). Measured
once against the real thing: with torchvision 0.28.0's Python code (its CUDA ops library set aside, which resize
does not use) transformers' torchvision Qwen2-VL image processor gives bit-identical pixel values to
``wan.prompts.qwen_pixels`` on the five sizes below and on 333x777 and 4000x3000."""
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
from oracles import resample as tv_resize
from wan.errors import InputError
from wan.prompts import LocalOptions, extend_prompt
from wan.prompts.images import qwen_vl_image
from wan.prompts.qwen_pixels import qwen_pixels, resize_uint8

SEED = 7
PIXEL_TOLERANCE = 1e-6


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
    processor.image_processor = official_image_processor(folder)
    processor.chat_template = folder_chat_template(folder)
    processor.image_token, processor.video_token = "<|image_pad|>", "<|video_pad|>"
    processor.image_token_id = tokenizer.convert_tokens_to_ids("<|image_pad|>")
    processor.video_token_id = tokenizer.convert_tokens_to_ids("<|video_pad|>")
    return processor


def official_image_processor(folder):
    """The official (torchvision) image processor's numbers without torchvision: see the module docstring."""
    from transformers.models.qwen2_vl import image_processing_pil_qwen2_vl as pil_processor

    class TorchvisionResize(pil_processor.Qwen2VLImageProcessorPil):
        def resize(self, image, size, resample, factor, **kwargs):
            assert image.dtype == np.uint8 and resample == 3  # uint8 CHW, bicubic: torchvision's native uint8 path
            height, width = pil_processor.smart_resize(*image.shape[-2:], factor=factor,
                                                       min_pixels=size.shortest_edge, max_pixels=size.longest_edge)
            return tv_resize.resize_uint8(image, height, width)

    # the official AutoProcessor arguments
    return TorchvisionResize.from_pretrained(folder, min_pixels=256 * 28 * 28, max_pixels=1280 * 28 * 28)


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
        if name == "pixel_values":
            assert a[name].shape == b[name].shape and a[name].dtype == b[name].dtype
            assert (a[name] - b[name]).abs().max() <= PIXEL_TOLERANCE
        elif isinstance(a[name], torch.Tensor):
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


@pytest.mark.parametrize("size, seed", [((90, 60), 0), ((120, 56), 1), ((2300, 1400), 2), ((1500, 1600), 3),
                                        ((700, 504), 4)])
def test_vl_pixel_values_are_the_torchvision_processor_ones(folders, size, seed):
    """Small images are enlarged, large ones reduced, budget-sized ones kept, by the processor; each case against
    the oracle of the module docstring. The PIL image processor (what transformers falls back to without
    torchvision, used here before) is off by more than the tolerance wherever it resizes."""
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    snapped = qwen_vl_image(image(*size, seed=seed))
    ref = official_image_processor(folders["vision"])(images=[snapped], return_tensors="pt")
    pil = Qwen2VLImageProcessorPil.from_pretrained(folders["vision"], min_pixels=256 * 28 * 28,
                                                   max_pixels=1280 * 28 * 28)
    got = qwen_pixels([snapped], pil)  # only the processor's settings are read
    assert torch.equal(got["image_grid_thw"], ref["image_grid_thw"])
    assert got["pixel_values"].dtype == torch.float32 and got["pixel_values"].shape == ref["pixel_values"].shape
    assert (got["pixel_values"] - ref["pixel_values"]).abs().max() <= PIXEL_TOLERANCE
    fallback = pil(images=[snapped], return_tensors="pt")["pixel_values"]
    resized = tuple(int(n) * 14 for n in ref["image_grid_thw"][0, 1:]) != (snapped.height, snapped.width)
    assert ((fallback - ref["pixel_values"]).abs().max() > 100 * PIXEL_TOLERANCE) == resized


@pytest.mark.parametrize("shape, out", [((3, 56, 84), (392, 560)), ((3, 1512, 1988), (868, 1148)),
                                        ((3, 60, 90), (60, 45)), ((3, 33, 17), (280, 10)), ((3, 7, 300), (500, 3))])
def test_uint8_resize_equals_the_resampling_model_exactly(shape, out):
    """Up, down, one axis only, extreme ratios: every uint8 value as the oracle's integer arithmetic gives it."""
    x = np.random.default_rng(sum(shape)).integers(0, 256, shape, dtype=np.uint8)
    got = resize_uint8(torch.from_numpy(x), *out)
    assert got.dtype == torch.uint8 and np.array_equal(got.numpy(), tv_resize.resize_uint8(x, *out))
