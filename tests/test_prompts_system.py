"""The shipped system prompts and the rule that picks one.

Oracle: the official Wan 2.2 code (``wan22``: ``wan/utils/system_prompt.py`` for the texts and
``PromptExpander.decide_system_prompt`` for the rule). The Wan 2.1 rule is checked against its source's bit
table (``SYSTEM_PROMPT_TYPES``: zh + is_vl << 1 + multi_images << 2), written out below."""
import json

import pytest

from oracles import official
from wan.prompts import system_prompts as sp


@pytest.fixture(scope="module")
def official_extend():
    return official.load("utils.prompt_extend")


def test_wan22_texts_equal_the_official_constants():
    ref = official.load("utils.system_prompt")
    table = sp._table()["wan2.2"]
    for kind, name in (("t2v", "T2V_A14B"), ("i2v", "I2V_A14B"), ("i2v_empty", "I2V_A14B_EMPTY")):
        for lang in ("zh", "en"):
            assert table[kind][lang] == getattr(ref, f"{name}_{lang.upper()}_SYS_PROMPT"), (kind, lang)


def test_data_file_carries_its_attribution():
    doc = json.loads(sp.DATA_FILE.read_text(encoding="utf-8"))
    assert "Apache License, Version 2.0" in doc["notice"] and "Alibaba Wan Team" in doc["notice"]
    notice = (sp.DATA_FILE.parent / "NOTICE").read_text(encoding="utf-8")
    assert "Wan-Video/Wan2.1" in notice and "Wan-Video/Wan2.2" in notice and "Apache License" in notice
    assert set(doc["prompts"]) == set(sp.STYLES) - {sp.TI2V}
    wan21 = doc["prompts"]["wan2.1"]  # the Wan 2.1 texts (not installed here): their known first and last words
    assert wan21["t2v"]["en"].startswith("You are a prompt engineer")
    assert wan21["t2v"]["zh"].startswith("你是一位Prompt优化师")
    assert wan21["i2v"]["en"].endswith("Directly output the rewritten English text.")
    assert "two images" in wan21["flf2v"]["en"] and wan21["flf2v"]["zh"].endswith("不要进行多余的回复。")


@pytest.mark.parametrize("task, images, prompt", [
    ("t2v-A14B", 0, "a cat"), ("i2v-A14B", 1, "a cat"), ("i2v-A14B", 1, ""), ("ti2v-5B", 0, "a cat"),
    ("ti2v-5B", 1, "a cat"), ("ti2v-5B", 1, ""), ("ti2v-5B", 0, "")])
@pytest.mark.parametrize("lang", ["zh", "en"])
def test_wan22_choice_matches_the_official_rule(official_extend, task, images, prompt, lang):
    """The style of each task's model (TI2V-5B: its own rule, the image prompt even when the prompt is empty)."""
    expander = official_extend.PromptExpander(model_name="x", task=task, is_vl=images > 0)
    style = sp.style_of("2.2", "ti2v" if task.startswith("ti2v") else task[:3])
    assert sp.system_prompt(style, lang, images, prompt) == expander.decide_system_prompt(lang, prompt)


def test_wan21_choice_follows_its_bit_table():
    table = sp._table()["wan2.1"]
    cases = {(0, "en"): "t2v", (0, "zh"): "t2v", (1, "en"): "i2v", (1, "zh"): "i2v", (2, "en"): "flf2v",
             (2, "zh"): "flf2v"}
    for (images, lang), kind in cases.items():
        for prompt in ("a cat", ""):  # Wan 2.1 has no empty-prompt instruction
            assert sp.system_prompt("wan2.1", lang, images, prompt) == table[kind][lang]
    # two images under Wan 2.2: only Wan 2.1 has a first/last-frame instruction
    assert sp.system_prompt("wan2.2", "en", 2, "a cat") == table["flf2v"]["en"]
