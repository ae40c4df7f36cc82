"""``python -m wan.generate``: the demo runs end to end to a playable mp4 (decoded back by PyAV), and bad flags stop
the run with a clear message before any model file is opened."""
import subprocess
import sys

import av
import pytest

import wan.dit.loader
import wan.encoders.text_encoder
from conftest import ROOT
from wan.generate import main


def test_demo_runs_end_to_end(tmp_path):
    out = tmp_path / "demo.mp4"
    proc = subprocess.run([sys.executable, "-m", "wan.generate", "--demo", "--save_file", str(out)], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "noise" in proc.stdout and "RANDOM-WEIGHT" in proc.stderr
    with av.open(str(out)) as container:
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
        comment = container.metadata.get("comment", "")
        rate = container.streams.video[0].average_rate
    assert len(frames) == 9 and frames[0].shape == (64, 96, 3) and float(rate) == 16
    assert "--task t2v-1.3B" in comment and "--sample_steps 4" in comment


@pytest.fixture
def no_loading(monkeypatch):
    """Any model load fails the test: errors must come before loading."""
    def refuse(*args, **kwargs):
        raise AssertionError("a model was loaded before the settings were checked")

    monkeypatch.setattr(wan.dit.loader, "load_dit", refuse)
    monkeypatch.setattr(wan.encoders.text_encoder, "load_text_encoder", refuse)


@pytest.mark.parametrize("flags, message", [
    (["--task", "t2v-1.3B", "--size", "1280*720"], "--size 1280*720 is not supported by t2v-1.3B"),
    (["--task", "ti2v-5B", "--size", "832*480"], "supported sizes (width*height): 1280*704, 704*1280"),
    (["--size", "big"], "must be width*height"),
    (["--frame_num", "80"], "--frame_num 80 must be 4n+1"),
    (["--task", "i2v-14B", "--size", "832*480"], "needs a start image"),
    (["--demo", "--sample_guide_scale", "3,4"], "only for the Wan 2.2 A14B"),
    (["--task", "t2v-1.3B"], "--ckpt_dir is required"),
    (["--demo", "--size", "100*64"], "multiples of 16"),
    (["--teacache", "-1", "--demo"], "threshold must be above 0"),
    (["--magcache", "nan", "--demo"], "--magcache nan is out of range: it must be a finite number"),
    (["--demo", "--sample_shift", "nan"], "--sample_shift nan is out of range"),
    (["--demo", "--sample_guide_scale", "inf"], "--sample_guide_scale inf is out of range"),
    (["--demo", "--frame_num", "4093", "--size", "1280*704"], "the ceiling is 2147483648 pixels"),
    (["--demo", "--frame_num", "401", "--size", "1280*704"], "DiT tokens per model call; the ceiling is 262144"),
])
def test_bad_flags_give_clear_errors(flags, message, capsys, no_loading):
    assert main(flags) == 2
    assert message in capsys.readouterr().err


def test_incomplete_official_folder_is_named_before_loading(tmp_path, capsys, no_loading):
    (tmp_path / "diffusion_pytorch_model.safetensors").write_bytes(b"")
    assert main(["--task", "t2v-1.3B", "--size", "832*480", "--ckpt_dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "lacks the tokenizer folder 'google/umt5-xxl'" in err


def test_a14b_folder_with_a_single_model_task_is_refused(tmp_path, capsys, no_loading):
    (tmp_path / "high_noise_model").mkdir()
    assert main(["--task", "t2v-14B", "--size", "832*480", "--ckpt_dir", str(tmp_path)]) == 2
    assert "use --task t2v-A14B" in capsys.readouterr().err


def test_unknown_task_is_refused_by_the_parser(capsys):
    with pytest.raises(SystemExit) as info:
        main(["--task", "t2v-2B"])
    assert info.value.code == 2 and "invalid choice: 't2v-2B'" in capsys.readouterr().err
