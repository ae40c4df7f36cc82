"""``python -m wan.generate --task vace-1.3B / vace-14B`` with the official ``--src_video``, ``--src_mask`` and
``--src_ref_images`` flags, and ``--task t2i-14B`` (one frame written as a PNG): the demo models run end to end
(the video files decoded back by PyAV, the reference frames cut before decoding), and bad flags stop the run with a
clear message before any model file is opened."""
import av
import pytest
import torch
from PIL import Image

from test_cli_generate import no_loading  # noqa: F401  (the fixture: no model may load before the checks)
from wan.generate import main
from wan.runner.vace import frame_ids, resize_crop
from wan.video import write_video


def _frames(path):
    with av.open(str(path)) as container:
        return [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]


def test_demo_vace_runs_with_references(tmp_path, capsys):
    out = tmp_path / "vace.mp4"
    assert main(["--demo", "--task", "vace-1.3B", "--sample_steps", "2", "--save_file", str(out)]) == 0
    frames = _frames(out)
    assert len(frames) == 9 and frames[0].shape == (64, 96, 3)  # the demo reference frame is not in the video


def test_source_files(tmp_path, capsys):
    """A 12-frame source video and mask at another size, two reference pictures of other sizes: 9 frames spread
    over the source, resized to cover 96x64 and centre cropped."""
    g = torch.Generator().manual_seed(0)
    write_video(torch.rand(12, 48, 80, 3, generator=g), tmp_path / "src.mp4")
    mask = torch.zeros(12, 48, 80, 3)
    mask[:, :, 40:] = 1.0
    write_video(mask, tmp_path / "mask.mp4")
    for name, size in (("a.png", (40, 30)), ("b.png", (64, 96))):
        Image.fromarray((torch.rand(*size, 3, generator=g) * 255).byte().numpy()).save(tmp_path / name)
    out = tmp_path / "edit.mp4"
    assert main(["--demo", "--task", "vace-14B", "--sample_steps", "2", "--src_video", str(tmp_path / "src.mp4"),
                 "--src_mask", str(tmp_path / "mask.mp4"), "--src_ref_images",
                 f"{tmp_path / 'a.png'},{tmp_path / 'b.png'}", "--save_file", str(out)]) == 0
    frames = _frames(out)
    assert len(frames) == 9 and frames[0].shape == (64, 96, 3)


def test_short_source_gives_fewer_frames(tmp_path, capsys):
    write_video(torch.rand(7, 64, 96, 3), tmp_path / "short.mp4")
    out = tmp_path / "short_out.mp4"
    assert main(["--demo", "--task", "vace-1.3B", "--sample_steps", "1", "--src_video", str(tmp_path / "short.mp4"),
                 "--save_file", str(out)]) == 0
    assert len(_frames(out)) == 5  # the 4n+1 frames the 7 source frames allow


def test_frame_ids_and_resize_crop():
    assert frame_ids(100, 81)[0] == 0 and frame_ids(100, 81)[-1] == 99 and len(frame_ids(100, 81)) == 81
    assert frame_ids(7, 81) == [0, 2, 3, 4, 6] and frame_ids(1, 81) == [0]
    video = torch.rand(2, 3, 48, 80)
    assert resize_crop(video, 64, 96).shape == (2, 3, 64, 96)
    assert torch.equal(resize_crop(video, 48, 80), video)


def test_t2i_writes_one_png(tmp_path, capsys):
    out = tmp_path / "image.png"
    assert main(["--demo", "--task", "t2i-14B", "--sample_steps", "2", "--save_file", str(out)]) == 0
    with Image.open(out) as img:
        assert img.format == "PNG" and img.size == (96, 64)


@pytest.mark.parametrize("flags, message", [
    (["--task", "vace-1.3B", "--src_mask", "m.mp4"], "--src_mask marks what to regenerate in --src_video"),
    (["--task", "vace-1.3B", "--src_video", "missing.mp4"], "--src_video 'missing.mp4' is not a file"),
    (["--task", "vace-14B", "--src_ref_images", "a.png,missing.png"], "--src_ref_images 'a.png' is not a file"),
    (["--task", "t2v-1.3B", "--src_video", "x.mp4"], "are for the VACE tasks"),
    (["--task", "vace-1.3B", "--size", "1280*720", "--no-demo"], "not supported by vace-1.3B"),
    (["--task", "vace-1.3B", "--image", "x.png"], "--src_ref_images for VACE reference pictures"),
    (["--task", "t2i-14B", "--frame_num", "5"], "makes one image: --frame_num must be 1"),
    (["--task", "t2i-14B", "--save_file", "x.mp4"], "written as .png"),
])
def test_bad_flags_give_clear_errors(flags, message, capsys, no_loading):
    demo = [] if "--no-demo" in flags else ["--demo"]
    assert main([*demo, *(f for f in flags if f != "--no-demo")]) == 2
    assert message in capsys.readouterr().err


def test_official_defaults():
    from wan.variants import VARIANTS

    for name in ("wan21_vace_1.3b", "wan21_vace_14b"):
        v = VARIANTS[name]
        assert (v.steps, v.shift, v.guidance, v.frames) == (50, 16.0, (5.0, 5.0), 81)  # official generate.py
    assert VARIANTS["wan21_vace_1.3b"].sizes == ("832*480", "480*832")
    assert "1024*1024" in VARIANTS["wan21_t2i_14b"].sizes and VARIANTS["wan21_t2i_14b"].frames == 1
