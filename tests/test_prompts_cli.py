"""``python -m wan.generate --use_prompt_extend``: the official flags and defaults, the demo run with a tiny local
Qwen folder (the extended prompt is what the text encoder gets), the image shown to a Qwen2.5-VL model, and the
official fallback when extending fails."""
import logging

import av
import pytest

import tiny_qwen
import wan.runner.pipeline
from wan.generate import build_parser, main, settings_from_args
from wan.prompts import LocalOptions, extend_prompt


@pytest.fixture(scope="module")
def llm(tmp_path_factory):
    root = tmp_path_factory.mktemp("LLM")
    return {"text": tiny_qwen.write_tiny_qwen(root / "tiny-qwen"),
            "vision": tiny_qwen.write_tiny_qwen(root / "tiny-qwen-vl", vision=True)}


@pytest.fixture
def encoded(monkeypatch):
    """The prompts the run hands to the text encoder."""
    seen = []
    original = wan.runner.pipeline.encode_text

    def recording(files, s, device, *rest):
        seen.append(s.prompt)
        return original(files, s, device, *rest)
    monkeypatch.setattr(wan.runner.pipeline, "encode_text", recording)
    return seen


def test_flags_and_defaults_are_the_official_ones():
    """Official generate.py (Wan 2.1 and 2.2): --use_prompt_extend store_true; --prompt_extend_method
    choices dashscope|local_qwen, default local_qwen; --prompt_extend_model default None;
    --prompt_extend_target_lang choices zh|en, default zh."""
    parser = build_parser()
    args = parser.parse_args([])
    assert (args.use_prompt_extend, args.prompt_extend_method, args.prompt_extend_model,
            args.prompt_extend_target_lang) == (False, "local_qwen", None, "zh")
    actions = {a.dest: a for a in parser._actions}
    assert actions["prompt_extend_method"].choices == ["dashscope", "local_qwen"]
    assert actions["prompt_extend_target_lang"].choices == ["zh", "en"]
    assert settings_from_args(parser.parse_args(["--demo"])).prompt_extend is None


def test_empty_prompt_is_kept_for_image_description():
    parser = build_parser()
    s = settings_from_args(parser.parse_args(["--demo", "--task", "i2v-A14B", "--prompt", "", "--use_prompt_extend"]))
    assert s.prompt == "" and s.prompt_extend.method == "local_qwen"
    assert settings_from_args(parser.parse_args(["--demo", "--task", "i2v-A14B", "--prompt", ""])).prompt != ""


def test_demo_with_a_local_model_encodes_the_extended_prompt(llm, encoded, tmp_path):
    out = tmp_path / "x.mp4"
    rc = main(["--demo", "--task", "t2v-1.3B", "--prompt", "a cat", "--base_seed", "5", "--save_file", str(out),
               "--frame_num", "5", "--sample_steps", "1",
               "--use_prompt_extend", "--prompt_extend_method", "local_qwen", "--prompt_extend_model",
               str(llm["text"]), "--prompt_extend_target_lang", "en", "--device", "cpu"])
    assert rc == 0
    direct = extend_prompt("a cat", "local_qwen", str(llm["text"]), "en", seed=5, style="wan2.1",
                           local=LocalOptions(device="cpu"))
    assert direct.extended and encoded == [direct.prompt]  # Wan 2.1 task: Wan 2.1 system prompts, --base_seed
    with av.open(str(out)) as container:
        assert repr(direct.prompt) in container.metadata.get("comment", "")


def test_image_task_shows_the_start_image_to_a_vl_model(llm, encoded, tmp_path):
    from PIL import Image

    picture = tmp_path / "start.png"
    Image.new("RGB", (80, 48), (200, 30, 30)).save(picture)
    rc = main(["--demo", "--task", "ti2v-5B", "--image", str(picture), "--prompt", "a red wall", "--base_seed", "9",
               "--frame_num", "5", "--sample_steps", "1", "--save_file", str(tmp_path / "y.mp4"),
               "--use_prompt_extend", "--prompt_extend_model", str(llm["vision"]), "--device", "cpu"])
    assert rc == 0
    direct = extend_prompt("a red wall", "local_qwen", str(llm["vision"]), "zh", Image.open(picture), seed=9,
                           local=LocalOptions(device="cpu"))
    assert direct.extended and encoded == [direct.prompt]


def test_failed_extension_keeps_the_prompt_and_the_run_goes_on(encoded, monkeypatch, tmp_path, caplog):
    monkeypatch.delenv("DASH_API_KEY", raising=False)
    with caplog.at_level(logging.WARNING, logger="wan_experts"):
        rc = main(["--demo", "--prompt", "a cat", "--frame_num", "5", "--sample_steps", "1", "--save_file",
                   str(tmp_path / "z.mp4"), "--use_prompt_extend", "--prompt_extend_method", "dashscope"])
    assert rc == 0 and encoded == ["a cat"]
    assert any("Falling back to the original prompt" in r.getMessage() for r in caplog.records)


def test_missing_local_model_stops_before_loading(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("WAN_EXPERTS_MODELS", str(tmp_path))
    assert main(["--demo", "--use_prompt_extend"]) == 2
    err = capsys.readouterr().err
    assert "Qwen/Qwen2.5-14B-Instruct" in err and str(tmp_path / "LLM" / "Qwen2.5-14B-Instruct") in err
