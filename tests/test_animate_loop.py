"""The character animation / replacement clip loop vs the official ``WanAnimate.generate`` (PyPI ``wan22``,
``wan/animate.py``), run whole on the CPU with tiny models.

Both sides share the tiny random-weight official ``WanAnimateModel`` (ours loads its weights through
``wan.load_dit``) and the stand-in autoencoder of ``standin_vae`` (Wan 2.1 VAE shapes). The official generate runs
in float32: its module sees ``torch`` with ``bfloat16`` standing for float32 and ``autocast`` a no-op (it casts every
input to bf16 for the GPU), so the loop's logic is compared, not bf16 rounding. Stand-ins for what it imports but
this path does not use: decord (the driving frames are handed to it as the official ``prepare_source`` returns
them; in the test of the driving folder a PyAV reader stands in for decord's), peft, the T5 and CLIP modules (the
text embeddings and CLIP features are given). OpenCV is the real one (test requirement). Compared: every latent the official loop decodes
and the final video. Tolerance: ``tiny_dit.assert_close`` (1e-4 relative)."""
from __future__ import annotations

import contextlib
import sys
import types

import numpy as np
import pytest
import torch

import wan
from oracles import official
from standin_vae import PoolVAE, VaeAdapter
from tiny_animate import CLIP_DIM, CLIP_TOKENS, official_animate, official_face_attention
from tiny_dit import TEXT_DIM, TEXT_LEN, assert_close, save_safetensors, state_dict_of
from wan.errors import InputError
from wan.sampling.animate import (AnimateSource, bounce, generate_animate, i2v_mask, plan_clips, valid_length)

H, W, CLIP, STEPS, SEED, N, FACE = 32, 48, 13, 2, 5, 22, 4


class _Float32Torch:
    """``torch`` for the official module: bf16 casts and autocast become float32 / no-ops."""

    bfloat16 = torch.float32

    @staticmethod
    def autocast(*args, **kwargs):
        return contextlib.nullcontext()

    def __getattr__(self, name):
        return getattr(torch, name)


def _official_module():
    """``animate.py`` of the official code, loaded beside stand-ins for its module-level imports (taken out of
    ``sys.modules`` again afterwards, as are the names put on the official ``modules.animate`` package)."""
    pkg = f"{official.PACKAGE}.modules"
    model_animate = official.load("modules.animate.model_animate")
    official.load("utils.fm_solvers")
    official.load("utils.fm_solvers_unipc")
    stubs = {"decord": types.SimpleNamespace(VideoReader=None),
             "peft": types.SimpleNamespace(set_peft_model_state_dict=None, LoraConfig=None),
             f"{pkg}.animate.animate_utils": None}
    for name, attr in (("t5", "T5EncoderModel"), ("vae2_1", "Wan2_1_VAE")):
        stubs[f"{pkg}.{name}"] = types.ModuleType(f"{pkg}.{name}")
        setattr(stubs[f"{pkg}.{name}"], attr, None)
    animate_pkg = sys.modules[f"{pkg}.animate"]
    try:
        with official.stand_ins({k: v for k, v in stubs.items() if v is not None}):
            sys.modules.pop(f"{pkg}.animate.animate_utils", None)  # imported afresh beside the peft stand-in
            animate_pkg.WanAnimateModel, animate_pkg.CLIPModel = model_animate.WanAnimateModel, None
            module = official.load("animate")
            module.torch = _Float32Torch()
            return module
    finally:
        for name in ("WanAnimateModel", "CLIPModel"):
            if hasattr(animate_pkg, name):
                delattr(animate_pkg, name)
        sys.modules.pop(f"{pkg}.animate.animate_utils", None)


class _Text:
    def __init__(self, table):
        self.table, self.model = table, None

    def __call__(self, prompts, device):
        return [self.table[p] for p in prompts]


class _Clip:
    def __init__(self, features):
        self.features = features

    def visual(self, images):
        return self.features


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    dit = official_animate(seed=3, std=0.05, layers=5, face=FACE)  # one face adapter block, 4 x 4 faces
    ours = wan.load_dit(save_safetensors(state_dict_of(dit), tmp_path_factory.mktemp("animate") / "animate.safetensors"))
    g = torch.Generator().manual_seed(9)
    frames = lambda n, h, w: (torch.rand(n, h, w, 3, generator=g) * 255).round().to(torch.uint8).numpy()  # noqa: E731
    mask = (torch.rand(N, H, W, 3, generator=g) > 0.5).to(torch.uint8).numpy() * 255
    return types.SimpleNamespace(
        dit=dit, ours=ours, vae=PoolVAE(), ctx=torch.randn(7, TEXT_DIM, generator=g),
        neg=torch.randn(5, TEXT_DIM, generator=g), clip=torch.randn(1, CLIP_TOKENS, CLIP_DIM, generator=g),
        pose=frames(N, H, W), face=frames(N, FACE, FACE), ref=frames(1, H, W)[0], bg=frames(N, H, W), mask=mask)


def _official_generate(s, replace: bool, refert_num: int, guide: float, solver: str):
    module = _official_module()
    pipe = object.__new__(module.WanAnimate)
    adapter = VaeAdapter(s.vae)
    pipe.__dict__.update(
        device=torch.device("cpu"), rank=0, t5_cpu=True, num_train_timesteps=1000, param_dtype=torch.float32,
        text_encoder=_Text({"a dance": s.ctx, "negative": s.neg}), clip=_Clip(s.clip), vae=adapter,
        noise_model=s.dit, sp_size=1, sample_neg_prompt="negative", sample_prompt="a dance")
    pipe.prepare_source = lambda **kw: (list(s.pose), list(s.face), s.ref)
    pipe.prepare_source_for_replace = lambda bg, mask: (list(s.bg), list(s.mask[..., 0] / 255))
    fb, previous = official_face_attention()
    try:
        video = pipe.generate("unused", replace_flag=replace, clip_len=CLIP, refert_num=refert_num, shift=5.0,
                              sample_solver=solver, sampling_steps=STEPS, guide_scale=guide, seed=SEED,
                              offload_model=False)
    finally:
        fb.flash_attn_func = previous
    return video, adapter.decoded


def _pixels(frames) -> torch.Tensor:
    """uint8 [N, H, W, 3] -> [N, 3, H, W] in [-1, 1] (official / 127.5 - 1)."""
    return torch.from_numpy(np.asarray(frames)).permute(0, 3, 1, 2).double().div(127.5).sub(1).float()


def _source(s, replace: bool) -> AnimateSource:
    return AnimateSource(_pixels(s.ref[None])[0], _pixels(s.pose), _pixels(s.face),
                         _pixels(s.bg) if replace else None,
                         torch.from_numpy(s.mask[..., 0] / 255).float() if replace else None)


def _ours_generate(s, replace: bool, refert_num: int, guide: float, solver: str):
    decoded, decode = [], s.vae.decode

    def recording_decode(latents, **kw):
        decoded.append(s.vae.normalize(latents).clone())
        return decode(latents, **kw)

    s.vae.decode = recording_decode
    pad = lambda c: torch.cat([c, c.new_zeros(TEXT_LEN - c.shape[0], c.shape[1])])[None]  # noqa: E731
    try:
        text = wan.conditioning.TextEmbeds(pad(s.ctx), pad(s.neg))
        settings = wan.SamplerSettings(steps=STEPS, shift=5.0, solver=solver, cfg_high=guide, cfg_low=guide)
        video = generate_animate(s.ours, s.vae, text, s.clip, _source(s, replace), settings, clip_frames=CLIP,
                                 refert_num=refert_num, seed=SEED)
    finally:
        del s.vae.decode
    return video, decoded


@pytest.mark.parametrize("replace,refert_num,guide,solver", [
    (False, 1, 1.0, "unipc"), (False, 5, 2.0, "dpm++"), (True, 1, 2.0, "unipc"), (True, 5, 1.0, "unipc")])
def test_clip_loop_matches_official_generate(setup, replace, refert_num, guide, solver):
    ref_video, ref_decoded = _official_generate(setup, replace, refert_num, guide, solver)
    video, decoded = _ours_generate(setup, replace, refert_num, guide, solver)
    clips = len(plan_clips(N, CLIP, refert_num))
    assert len(decoded) == len(ref_decoded) == clips == (2 if refert_num == 1 else 3)
    for ours, ref in zip(decoded, ref_decoded):
        assert_close(ours, ref)  # the clip's latents after the reference frame
    assert video.shape == (3, N, H, W)
    assert_close(video, ref_video)


def test_padding_and_masks_match_official():
    module = _official_module()
    pipe = object.__new__(module.WanAnimate)
    for real, clip, overlap in ((14, 9, 1), (14, 9, 5), (77, 77, 1), (30, 77, 5), (200, 77, 5), (153, 77, 1)):
        assert valid_length(real, clip, overlap) == pipe.get_valid_len(real, clip, overlap)
    for n, length in ((2, 9), (3, 11), (5, 23)):
        frames = torch.arange(n)
        assert bounce(frames, length).tolist() == pipe.inputs_padding(list(range(n)), length)
    mask = torch.rand(1, 9, 4, 6)
    for known in (0, 1, 5):
        assert torch.equal(i2v_mask(3, 4, 6, known), pipe.get_i2v_mask(3, 4, 6, known, device="cpu"))
        assert torch.equal(i2v_mask(3, 4, 6, known, mask[0]), pipe.get_i2v_mask(3, 4, 6, known, mask, device="cpu"))


def test_bad_inputs_are_named(setup):
    s = setup
    text = wan.conditioning.TextEmbeds(torch.zeros(1, TEXT_LEN, TEXT_DIM), torch.zeros(1, TEXT_LEN, TEXT_DIM))
    settings = wan.SamplerSettings(steps=1, shift=5.0, cfg_high=1.0, cfg_low=1.0)
    src = _source(s, True)

    def run(source, **kw):
        generate_animate(s.ours, s.vae, text, s.clip, source, settings, clip_frames=CLIP, **kw)

    with pytest.raises(InputError, match="same length"):
        run(AnimateSource(src.reference, src.pose, src.face[:-1]))
    with pytest.raises(InputError, match="face video"):
        run(AnimateSource(src.reference, src.pose, src.face[..., :2]))
    with pytest.raises(InputError, match="character mask"):
        run(AnimateSource(src.reference, src.pose, src.face, src.background, src.mask[:, :8]))
    with pytest.raises(InputError, match="both background_video and character_mask"):
        run(AnimateSource(src.reference, src.pose, src.face, src.background))
    with pytest.raises(InputError, match="1 or 5"):
        run(src, refert_num=3)
    with pytest.raises(InputError, match="4n\\+1"):
        generate_animate(s.ours, s.vae, text, s.clip, src, settings, clip_frames=10)


class _Reader:
    """decord.VideoReader stand-in (PyAV): len() and get_batch(indices).asnumpy() of uint8 RGB frames."""

    def __init__(self, path):
        from wan.video import read_video

        self.frames = (read_video(path) * 255).round().to(torch.uint8).numpy()

    def __len__(self):
        return len(self.frames)

    def get_batch(self, idxs):
        return types.SimpleNamespace(asnumpy=lambda: self.frames[idxs])


@pytest.mark.parametrize("h,w", [(30, 40), (120, 100), (20, 90), (32, 48)])
def test_reference_fitted_as_official_padding_resize(h, w):
    """letterbox vs the official padding_resize (OpenCV INTER_LINEAR on uint8, black bars): equal up to OpenCV's
    fixed-point rounding, 2 levels of 255."""
    from wan.sampling.animate import letterbox

    pipe = object.__new__(_official_module().WanAnimate)
    image = np.random.default_rng(h).integers(0, 256, (h, w, 3), dtype=np.uint8)
    ref = torch.from_numpy(pipe.padding_resize(image, height=32, width=48)).permute(2, 0, 1).float() / 127.5 - 1
    ours = letterbox(torch.from_numpy(image).permute(2, 0, 1).float() / 127.5 - 1, 32, 48)
    assert ours.shape == ref.shape and (ours - ref).abs().max() <= 2 / 127.5


def test_driving_folder_read_as_official(tmp_path, monkeypatch):
    """--src_root_path read by ours (wan.runner.animate.read_source) vs the official prepare_source and
    prepare_source_for_replace on the same files: frames, face crops, reference and mask."""
    from PIL import Image

    from wan.runner.animate import read_source
    from wan.video import write_video

    g = torch.Generator().manual_seed(1)
    for name, size in (("src_pose.mp4", (32, 48)), ("src_face.mp4", (16, 16)), ("src_bg.mp4", (32, 48)),
                       ("src_mask.mp4", (32, 48))):
        write_video(torch.rand(6, *size, 3, generator=g), tmp_path / name, fps=30)
    Image.fromarray(np.random.default_rng(2).integers(0, 256, (30, 40, 3), dtype=np.uint8)).save(tmp_path / "src_ref.png")
    module = _official_module()
    monkeypatch.setattr(module, "VideoReader", _Reader)
    pipe = object.__new__(module.WanAnimate)
    pose, face, ref = pipe.prepare_source(src_pose_path=str(tmp_path / "src_pose.mp4"),
                                          src_face_path=str(tmp_path / "src_face.mp4"),
                                          src_ref_path=str(tmp_path / "src_ref.png"))
    bg, mask = pipe.prepare_source_for_replace(str(tmp_path / "src_bg.mp4"), str(tmp_path / "src_mask.mp4"))
    ours = read_source(tmp_path, True, face_size=16)
    signed = lambda a: torch.from_numpy(np.asarray(a)).permute(0, 3, 1, 2).float() / 127.5 - 1  # noqa: E731
    assert torch.allclose(ours.pose, signed(pose), atol=1e-6) and torch.allclose(ours.face, signed(face), atol=1e-6)
    assert torch.allclose(ours.background, signed(bg), atol=1e-6)
    assert torch.allclose(ours.mask, torch.from_numpy(mask).float(), atol=1e-6)
    assert (ours.reference - signed(ref[None])[0]).abs().max() <= 2 / 127.5
