"""``python -m wan.generate --extend_from VIDEO``: the demo models continue a video file end to end (the written file
holds the original frames, then the new ones); bad flags stop the run with a clear message before any model loads.

Oracle for the frames: the original video decoded by PyAV; the frames before the overlap must come back as they
went in, up to the H.264 round trip (two encodes at crf 19; tolerance 12/255 on the mean absolute difference).
"""
import av
import numpy as np
import pytest
import torch

from test_cache_tools import one_thread  # noqa: F401  (autouse fixture)
from test_cli_generate import no_loading  # noqa: F401  (fixture: any model load fails the test)
from wan.generate import main
from wan.video import write_video


def frames_of(path):
    with av.open(str(path)) as container:
        return np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)]), \
            container.metadata.get("comment", "")


def a_video(path, frames=9, width=96, height=64):
    y, x = torch.meshgrid(torch.linspace(0, 1, height), torch.linspace(0, 1, width), indexing="ij")
    video = torch.stack([torch.stack([x, y, (x + y + f / frames) % 1], -1) for f in range(frames)])
    return write_video(video, path, fps=16)


@pytest.mark.parametrize("task", ["i2v-A14B"])
def test_demo_extends_a_video_file(tmp_path, task):
    source, out = a_video(tmp_path / "clip.mp4"), tmp_path / "longer.mp4"
    assert main(["--task", task, "--demo", "--extend_from", str(source), "--frame_num", "9", "--extend_overlap",
                 "5", "--sample_steps", "2", "--save_file", str(out), "--device", "cpu"]) == 0
    original, _ = frames_of(source)
    joined, comment = frames_of(out)
    assert joined.shape == (9 + 9 - 5, 64, 96, 3)
    assert np.abs(joined[:4].astype(float) - original[:4]).mean() <= 12
    assert "--extend_from" in comment and f"--task {task}" in comment


@pytest.mark.parametrize("flags, message", [
    (["--task", "t2v-1.3B"], "needs an image-to-video task"),
    (["--task", "ti2v-5B", "--extend_overlap", "4"], "must be 4n+1"),
    (["--task", "ti2v-5B", "--extend_overlap", "9"], "less than --frame_num 9"),
    (["--task", "i2v-A14B", "--size", "96*64"], "drop --image"),
    (["--task", "ti2v-5B", "--extend_from", "missing.mp4"], "does not exist"),
])
def test_bad_extension_flags(tmp_path, flags, message, capsys, no_loading):
    source = a_video(tmp_path / "clip.mp4")
    args = ["--demo", "--extend_from", str(source), "--frame_num", "9"] + flags
    assert main(args) == 2
    assert message in capsys.readouterr().err


def test_video_of_the_wrong_size_is_named_before_loading(tmp_path, capsys, no_loading):
    source = a_video(tmp_path / "clip.mp4", width=80)  # not a multiple of 32 (Wan 2.2 VAE x patch)
    assert main(["--demo", "--task", "ti2v-5B", "--extend_from", str(source), "--frame_num", "9"]) == 2
    assert "width 80 is not a multiple of 32" in capsys.readouterr().err


def test_prompt_extension_sees_the_segment_and_falls_back(tmp_path, monkeypatch, caplog):
    """--use_prompt_extend with --extend_from: the extension is asked (here Dashscope without a key, so it fails)
    with the segment's first frame, and the run goes on with the original prompt, as the official fallback."""
    import logging

    import wan.runner.extend
    import wan.prompts.cli

    monkeypatch.delenv("DASH_API_KEY", raising=False)
    seen, shown, encode, ask = [], [], wan.runner.extend.encode_text, wan.prompts.cli.extend_for_run
    monkeypatch.setattr(wan.runner.extend, "encode_text", lambda files, s, device: seen.append(s.prompt) or
                        encode(files, s, device))
    monkeypatch.setattr(wan.prompts.cli, "extend_for_run", lambda *a, **k: shown.append(a[6]) or ask(*a, **k))
    source = a_video(tmp_path / "clip.mp4")
    with caplog.at_level(logging.WARNING, logger="wan_experts"):
        rc = main(["--task", "ti2v-5B", "--demo", "--extend_from", str(source), "--frame_num", "9", "--prompt",
                   "a cat", "--sample_steps", "1", "--save_file", str(tmp_path / "out.mp4"), "--device", "cpu",
                   "--use_prompt_extend", "--prompt_extend_method", "dashscope"])
    assert rc == 0 and seen == ["a cat"]
    (images,) = shown
    assert len(images) == 1 and images[0].shape == (1, 3, 64, 96)
    assert any("Falling back to the original prompt" in r.getMessage() for r in caplog.records)
