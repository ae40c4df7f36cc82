"""The speech-to-video clip loop vs the official ``WanS2V.generate`` (PyPI ``wan22``, ``wan/speech2video.py``), run
whole on the CPU with tiny models, float32.

Both sides share the tiny random-weight models: the official ``WanModel_S2V`` (ours loads its weights through
``wan.load_dit``), the official ``AudioEncoder`` over a tiny 24-layer wav2vec2 (ours: ``load_audio_encoder`` of the
same folder), and one stand-in video autoencoder with the Wan 2.1 VAE's shapes (causal 4x time, 8x8 space, 16
channels: pooled, projected, and back), given to the official pipeline through its ``encode``/``decode`` list
interface. The real VAE (parity-tested on its own) costs minutes per clip on this CPU for the 73 motion frames;
the loop's handling of what goes in and out of it is what is compared here. Stubs stand in for what
the official module imports but this path does not use on the CPU: torchvision's Resize/CenterCrop/ToTensor (the
reference image is already at the generation size, so they are identities), decord, T5 (the text embeddings are
given). Compared: every latent the official loop decodes (the reference or motion latents followed by the clip's
sampled latents) and the final video. Tolerance: ``tiny_dit.assert_close`` (1e-4 relative)."""
from __future__ import annotations

import types

import numpy as np
import pytest
import torch
from PIL import Image

import wan
from oracles import official
from tiny_audio import comfy_audio, save_official_folder, sine_sweep, tiny_wav2vec2, write_wav
from tiny_dit import TEXT_DIM, assert_close, save_safetensors, state_dict_of
from tiny_s2v import official_s2v
from standin_vae import PoolVAE, VaeAdapter
from wan.encoders.audio import load_audio_encoder
from wan.sampling.s2v import generate_s2v, s2v_frames

H, W, FRAMES, STEPS, SHIFT, GUIDE, SEED = 64, 128, 8, 3, 3.0, 4.5, 11


def _stub_modules():
    """``speech2video.py`` of the official code, loaded beside stand-ins for what it imports at module level
    that cannot (or need not) load here; the stand-ins are taken out of ``sys.modules`` again afterwards, so
    the other tests still import the real official ``vae2_1`` and ``t5`` modules (and see no torchvision)."""
    identity = lambda *a, **k: (lambda img: img)  # noqa: E731
    tv = types.ModuleType("torchvision")
    tv.transforms = types.ModuleType("torchvision.transforms")
    tv.transforms.Resize = tv.transforms.CenterCrop = identity
    tv.transforms.ToTensor = lambda: (lambda img: torch.from_numpy(np.asarray(img, np.float32) / 255).permute(2, 0, 1))
    tv.transforms.functional = types.ModuleType("torchvision.transforms.functional")
    stubs = {"torchvision": tv, "torchvision.transforms": tv.transforms,
             "torchvision.transforms.functional": tv.transforms.functional,
             "decord": types.SimpleNamespace(VideoReader=None)}
    for name, attr in (("modules.t5", "T5EncoderModel"), ("modules.vae2_1", "Wan2_1_VAE")):
        stubs[f"{official.PACKAGE}.{name}"] = types.ModuleType(f"{official.PACKAGE}.{name}")
        setattr(stubs[f"{official.PACKAGE}.{name}"], attr, None)
    # diffusers and transformers look for torchvision's spec when first imported: import them (through the official
    # modules that need them; utils without its package __init__) before the torchvision stand-in goes in
    official.load("utils.fm_solvers")
    official.load("modules.model")
    with official.stand_ins(stubs):
        return official.load("speech2video")


class _Text:
    def __init__(self, table):
        self.table, self.model = table, None

    def __call__(self, prompts, device):
        return [self.table[p] for p in prompts]


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("s2v_loop")
    wav2vec = save_official_folder(tiny_wav2vec2(layers=24, width=64, seed=3), tmp)
    dit = official_s2v(audio_dim=64, seed=5, std=0.05)
    ours_dit = wan.load_dit(save_safetensors(state_dict_of(dit), tmp / "s2v.safetensors"))
    vae = PoolVAE()
    g = torch.Generator().manual_seed(7)
    ctx, neg = torch.randn(9, TEXT_DIM, generator=g), torch.randn(5, TEXT_DIM, generator=g)
    image = (torch.rand(H, W, 3, generator=g) * 255).round().to(torch.uint8)
    Image.fromarray(image.numpy()).save(tmp / "ref.png")
    audio = sine_sweep(0.8, 16000)  # 23 features at 30 per second: 2 clips of 8 frames
    return types.SimpleNamespace(tmp=tmp, wav2vec=wav2vec, dit=dit, ours_dit=ours_dit, vae=vae, ctx=ctx, neg=neg,
                                 image=image, audio=audio, wav=write_wav(audio, 16000, tmp / "speech.wav"))


def _official_generate(s, start_from_ref: bool):
    s2v_mod = _stub_modules()
    pipe = object.__new__(s2v_mod.WanS2V)
    adapter = VaeAdapter(s.vae)
    neg_prompt = "negative"
    pipe.__dict__.update(
        device=torch.device("cpu"), config=None, rank=0, t5_cpu=True, init_on_cpu=False, num_train_timesteps=1000,
        param_dtype=torch.float32, text_encoder=_Text({"a talking portrait": s.ctx, neg_prompt: s.neg}),
        vae=adapter, noise_model=s.dit,
        audio_encoder=official.load("modules.s2v.audio_encoder").AudioEncoder(device="cpu", model_id=str(s.wav2vec)),
        sp_size=1, sample_neg_prompt=neg_prompt, motion_frames=73, drop_first_motion=True, fps=16, audio_sample_m=0)
    video = pipe.generate("a talking portrait", str(s.tmp / "ref.png"), str(s.wav), False, None, None, None,
                          num_repeat=None, pose_video=None, max_area=H * W, infer_frames=FRAMES, shift=SHIFT,
                          sample_solver="unipc", sampling_steps=STEPS, guide_scale=GUIDE, n_prompt="", seed=SEED,
                          offload_model=False, init_first_frame=start_from_ref)
    return video, adapter.decoded


@pytest.mark.parametrize("start_from_ref", [False, True])
def test_clip_loop_matches_official_generate(setup, start_from_ref):
    s = setup
    ref_video, ref_decoded = _official_generate(s, start_from_ref)
    decoded = []
    decode = s.vae.decode

    def recording_decode(latents, **kw):
        decoded.append(s.vae.normalize(latents).clone())
        return decode(latents, **kw)

    s.vae.decode = recording_decode
    try:
        embeds = load_audio_encoder(s.wav2vec).encode(comfy_audio(s.audio, 16000))
        text = wan.conditioning.TextEmbeds(s.ctx[None], s.neg[None])
        settings = wan.SamplerSettings(steps=STEPS, shift=SHIFT, cfg_high=GUIDE, cfg_low=GUIDE)
        image = s.image.permute(2, 0, 1).float() / 255 * 2 - 1
        video = generate_s2v(s.ours_dit, s.vae, text, image, embeds, settings, frames_per_clip=FRAMES, seed=SEED,
                             start_from_ref=start_from_ref)
    finally:
        del s.vae.decode
    assert len(decoded) == len(ref_decoded) == 2  # two clips
    for ours, ref in zip(decoded, ref_decoded):
        assert_close(ours, ref)
    assert video.shape[1] == s2v_frames(2, FRAMES, not start_from_ref)
    assert_close(video, ref_video)


def test_sound_to_video_node(pack, tmp_path):
    """The node with the real tiny VAE and the S2V DiT: one clip from 0.3 s of audio, 77 frames (80 - 3) as IMAGE;
    bad sizes refused at graph time."""
    import importlib

    node = importlib.import_module(pack.__name__ + ".nodes.s2v").WanExpertsSoundToVideo
    pw = importlib.import_module(pack.__name__ + ".wan")
    weights = state_dict_of(official_s2v(audio_dim=64, seed=5))
    model = pw.load_dit(save_safetensors(weights, tmp_path / "s2v.safetensors"))
    from wan.runner.demo import tiny_vae

    vae = pw.vae.vae.WanVAE(tiny_vae("2.1"), torch.float32)
    embeds = pw.encoders.audio.AudioEmbeds(torch.randn(25, 9, 64), 0.3)
    text = pw.conditioning.TextEmbeds(torch.randn(1, 5, TEXT_DIM), torch.randn(1, 5, TEXT_DIM))
    image = torch.rand(1, 40, 90, 3)  # another aspect: scaled to cover 64x64 and centre cropped
    (frames,) = node().run(model, vae, text, embeds, image, 64, 64, frames_per_clip=8, steps=2)
    assert frames.shape == (5, 64, 64, 3) and 0 <= frames.min() and frames.max() <= 1
    assert node.VALIDATE_INPUTS(width=100, height=64, frames_per_clip=8) is not True
    assert node.VALIDATE_INPUTS(width=64, height=64, frames_per_clip=10) is not True
    assert node.VALIDATE_INPUTS(width=64, height=64, frames_per_clip=8) is True


@pytest.mark.parametrize("h,w,area", [(480, 640, 1280 * 720), (1080, 1920, 1024 * 704), (700, 500, 832 * 480),
                                      (64, 64, 96 * 64), (3000, 1000, 1280 * 720)])
def test_size_rule_matches_official(h, w, area):
    """--size gives the area; the size comes from the image as the official get_size_less_than_area picks it."""
    from wan.runner.s2v import size_within_area

    pipe = object.__new__(_stub_modules().WanS2V)
    assert size_within_area(h, w, area) == tuple(pipe.get_size_less_than_area(h, w, target_area=area))


def test_cli_refuses_tts_and_bad_flags(capsys):
    from wan.generate import main

    assert main(["--task", "s2v-14B", "--demo", "--enable_tts"]) == 2
    assert "CosyVoice" in capsys.readouterr().err
    assert main(["--task", "s2v-14B", "--demo", "--infer_frames", "30"]) == 2
    assert "multiple of 4" in capsys.readouterr().err
    assert main(["--task", "s2v-14B", "--ckpt_dir", ".", "--image", __file__]) == 2
    assert "--audio" in capsys.readouterr().err


def test_short_audio_other_size_pose_and_bad_inputs(setup):
    """Documented behaviour: audio shorter than one clip gives one clip (zero features after its end); a pose video
    of another size and length is fitted to the video and padded; bad numbers and sizes are refused up front."""
    from wan.encoders.audio import AudioEmbeds
    from wan.errors import InputError

    s = setup
    text = wan.conditioning.TextEmbeds(s.ctx[None], s.neg[None])
    settings = wan.SamplerSettings(steps=2, shift=SHIFT, cfg_high=GUIDE, cfg_low=GUIDE)
    image = s.image.permute(2, 0, 1).float() / 255 * 2 - 1
    short = AudioEmbeds(torch.randn(25, 3, 64), 0.1)  # 0.1 s: less than one 8-frame clip (0.5 s)
    pose = torch.rand(5, 3, 40, 50) * 2 - 1  # another size, fewer frames than the clip
    video = generate_s2v(s.ours_dit, s.vae, text, image, short, settings, frames_per_clip=FRAMES, pose=pose)
    assert video.shape == (3, FRAMES - 3, H, W) and torch.isfinite(video).all()
    for kwargs, match in (({"frames_per_clip": 10}, "multiple of 4"), ({"clips": -1}, "clips"),
                          ({"pose": torch.rand(5, 1, 8, 8)}, "pose video"),
                          ({"previous": torch.rand(4, 3, 32, 32)}, "previous frames")):
        with pytest.raises(InputError, match=match):
            generate_s2v(s.ours_dit, s.vae, text, image, short, settings, **({"frames_per_clip": FRAMES} | kwargs))
    with pytest.raises(InputError, match="multiples of 64"):
        generate_s2v(s.ours_dit, s.vae, text, image[:, :, :100], short, settings, frames_per_clip=FRAMES)
