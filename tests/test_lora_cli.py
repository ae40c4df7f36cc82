"""``python -m wan.generate --lora FILE[:STRENGTH] --lora_high ... --lora_low ...``: flags checked before any model
loads, and a demo run with random demo LoRAs on both experts of the tiny A14B pair."""
import logging

import av
import pytest

import wan.dit.loader
from wan.errors import InputError
from wan.generate import main
from wan.lora.flags import parse_lora


def test_file_and_strength(tmp_path):
    f = tmp_path / "a:b.safetensors"
    f.write_bytes(b"")
    assert parse_lora(f"{f}:0.25").strength == 0.25 and parse_lora(f"{f}:0.25").path == f
    assert parse_lora(str(f)).strength == 1.0 and parse_lora(str(f), "high").expert == "high"


@pytest.mark.parametrize("flags, message", [
    (["--demo", "--lora", "missing.safetensors"], "--lora 'missing.safetensors' does not exist"),
    (["--demo", "--lora", "demo:strong"], "the strength after ':' must be a number"),
    (["--demo", "--lora_high", "demo"], "--lora_high is for the Wan 2.2 A14B two-expert tasks"),
    (["--task", "t2v-1.3B", "--size", "832*480", "--ckpt_dir", ".", "--lora", "demo"], "only with --demo"),
])
def test_bad_lora_flags_stop_before_loading(flags, message, capsys, monkeypatch):
    monkeypatch.setattr(wan.dit.loader, "load_dit", lambda *a, **k: pytest.fail("a model was loaded"))
    assert main(flags) == 2
    assert message in capsys.readouterr().err


def test_windows_drive_letter_is_not_a_strength():
    with pytest.raises(InputError, match=r"'C:\\loras\\x.safetensors' does not exist"):
        parse_lora("C:\\loras\\x.safetensors")


def test_demo_with_lora_pair(tmp_path, caplog):
    out = tmp_path / "lora.mp4"
    with caplog.at_level(logging.INFO, "wan_experts"):
        assert main(["--demo", "--task", "t2v-A14B", "--frame_num", "5", "--sample_steps", "2", "--save_file",
                     str(out), "--lora_high", "demo:0.8", "--lora_low", "demo"]) == 0
    applied = [r.getMessage() for r in caplog.records if r.getMessage().startswith("Wan LoRA")]
    assert len(applied) == 2 and "high-noise expert" in applied[0] and "low-noise expert" in applied[1]
    with av.open(str(out)) as container:
        assert "--lora_high demo_lora_0.safetensors:0.8 --lora_low demo_lora_1.safetensors:1" in \
            container.metadata.get("comment", "")


def test_lora_with_dit_fsdp_is_refused_before_loading(capsys, monkeypatch):
    """Under torchrun (two processes seen), a LoRA on FSDP-sharded weights stops with a message naming the fix."""
    import wan.distributed.ranks

    monkeypatch.setattr(wan.distributed.ranks, "world_size", lambda: 2)
    monkeypatch.setattr(wan.dit.loader, "load_dit", lambda *a, **k: pytest.fail("a model was loaded"))
    assert main(["--demo", "--task", "t2v-A14B", "--dit_fsdp", "--lora", "demo"]) == 2
    assert "--lora cannot be combined with --dit_fsdp" in capsys.readouterr().err
