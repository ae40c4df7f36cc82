"""``python -m wan.generate --refine_from VIDEO``: the demo models upscale and refine a video file end to end, one
stage and a two-stage cascade; bad flags, a one-frame video and a stage over the memory budget stop the run with a
clear message before any stage samples."""
import pytest

from test_cache_tools import one_thread  # noqa: F401  (autouse fixture)
from test_cli_generate import no_loading  # noqa: F401  (fixture: any model load fails the test)
from test_extend_cli import a_video, frames_of
from wan.generate import main

FAST = ["--sample_steps", "2", "--device", "cpu"]


@pytest.mark.parametrize("task, sizes, shape", [
    ("t2v-A14B", "96*64", (9, 64, 96, 3)),
    ("i2v-A14B", "144*96,208*144", (9, 144, 208, 3)),
    ("ti2v-5B", "128*96", (9, 96, 128, 3)),
])
def test_demo_refines_a_video_file(tmp_path, task, sizes, shape, caplog):
    source, out = a_video(tmp_path / "draft.mp4", width=96, height=64), tmp_path / "refined.mp4"
    caplog.set_level("INFO", logger="wan_experts")
    assert main(["--task", task, "--demo", "--refine_from", str(source), "--size", sizes, "--refine_strength",
                 "0.5", "--save_file", str(out)] + FAST) == 0
    frames, comment = frames_of(out)
    assert frames.shape == shape
    assert "--refine_from" in comment and "--refine_strength 0.5" in comment and f"--size {sizes} " in comment
    assert "1 of 2 steps" in caplog.text


@pytest.mark.parametrize("flags, message", [
    (["--refine_strength", "nan"], "--refine_strength nan is out of range"),
    (["--refine_strength", "-0.1"], "cannot be negative"),
    (["--refine_strength", "1.5"], "at most 1"),
    (["--size", "96*72"], "height 72 is not a multiple of 16"),
    (["--task", "ti2v-5B", "--size", "80*64"], "width 80 is not a multiple of 32"),
    (["--frame_num", "9"], "drop --image, --last_image and --frame_num"),
    (["--extend_from", "x.mp4"], "two different runs"),
    (["--refine_from", "missing.mp4"], "does not exist"),
])
def test_bad_refine_flags(tmp_path, flags, message, capsys, no_loading):
    source = a_video(tmp_path / "clip.mp4")
    args = ["--demo", "--task", "t2v-A14B", "--refine_from", str(source), "--size", "96*64"] + flags
    assert main(args) == 2
    assert message in capsys.readouterr().err


def test_one_frame_video_is_refused_before_loading(tmp_path, capsys, no_loading):
    source = a_video(tmp_path / "one.mp4", frames=1)
    assert main(["--demo", "--task", "t2v-A14B", "--refine_from", str(source), "--size", "96*64"]) == 2
    assert "has 1 frame; video-to-video needs at least 5 frames" in capsys.readouterr().err


def test_a_stage_over_the_budget_is_refused_before_any_stage_samples(tmp_path, capsys, monkeypatch):
    """The second stage does not fit a (faked) small device: the run stops before the first stage samples."""
    from wan.budget import check as budget
    from wan.sampling import refine

    source = a_video(tmp_path / "clip.mp4")
    monkeypatch.setattr(budget, "available_bytes", lambda device: 64 << 20)  # the demo A14B at 96x64 fits
    monkeypatch.setattr(refine, "sample", lambda *a, **k: pytest.fail("sampled"))
    assert main(["--demo", "--task", "t2v-A14B", "--refine_from", str(source), "--size", "96*64,1024*1024"]
                + FAST) == 2
    err = capsys.readouterr().err
    assert "refine stage 2 of 2 at 1024x1024, 9 frames needs about" in err
    assert "the largest size of this aspect that fits at 9 frames is" in err


def test_a14b_low_strength_loads_only_the_low_noise_expert(tmp_path, monkeypatch, caplog):
    """4 steps, shift 12, boundary 0.875: strength 0.25 keeps the last step (t = 800), a low-noise one: the pair is
    never loaded, only the low-noise expert (recorded at the loader), with the low-noise expert's LoRA."""
    import wan.dit.loader
    import wan.experts

    roles, load_dit = [], wan.dit.loader.load_dit
    monkeypatch.setattr(wan.experts, "load_moe", lambda *a, **k: pytest.fail("both experts loaded"))
    monkeypatch.setattr(wan.dit.loader, "load_dit", lambda *a, **k: roles.append(k.get("role")) or load_dit(*a, **k))
    caplog.set_level("INFO", logger="wan_experts")
    source, out = a_video(tmp_path / "draft.mp4"), tmp_path / "refined.mp4"
    assert main(["--task", "t2v-A14B", "--demo", "--refine_from", str(source), "--size", "96*64",
                 "--refine_strength", "0.25", "--sample_steps", "4", "--save_file", str(out), "--device", "cpu",
                 "--lora_low", "demo", "--lora_high", "demo:0.5"]) == 0  # the low-noise LoRA applies, the other not
    assert roles == ["low"] and "only the low-noise expert" in caplog.text and "1 of 4 steps" in caplog.text
