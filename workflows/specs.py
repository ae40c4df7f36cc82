"""The example workflows, one spec each (see build.py). Settings are the official ones (the Wan-AI generate.py
defaults per task); file names are those of the Comfy-Org repackaged models."""
from __future__ import annotations

from spec_types import N, Spec

from wan.variants import ANIMATE_PROMPT, VARIANTS

SEED = 42
T5_FILE = "umt5_xxl_fp8_e4m3fn_scaled.safetensors"
VAE21, VAE22 = "wan_2.1_vae.safetensors", "wan2.2_vae.safetensors"
CLIP_FILE = "clip_vision_h.safetensors"
REPACK_21 = "huggingface.co/Comfy-Org/Wan_2.1_ComfyUI_repackaged"
REPACK_22 = "huggingface.co/Comfy-Org/Wan_2.2_ComfyUI_Repackaged"

PROMPTS = {
    "t2v": "Two anthropomorphic cats in comfy boxing gear and bright gloves fight intensely on a spotlighted stage.",
    "i2v": ("Summer beach vacation style, a white cat wearing sunglasses sits on a surfboard. The fluffy-furred "
            "feline gazes directly at the camera with a relaxed expression. Blurred beach scenery forms the "
            "background featuring crystal-clear waters, distant green hills, and a blue sky dotted with white "
            "clouds. The cat assumes a naturally relaxed posture, as if savoring the sea breeze and warm sunlight."),
    "flf2v": ("CG animation style, a small blue bird takes off from the ground, flapping its wings. The bird's "
              "feathers are delicate, with a unique pattern on its chest. The background shows a blue sky with "
              "white clouds under bright sunshine. The camera follows the bird upward, capturing its flight and "
              "the vastness of the sky from a close-up, low-angle perspective."),
}


CACHE_NOTES = {
    "WanExpertsTeaCache": (" TeaCache skips DiT passes while the time embedding changes little: threshold 0.08 is "
                           "the authors' 1.3B setting (about 2x faster); higher is faster with more drift."),
    "WanExpertsMagCache": (" MagCache skips DiT passes using calibrated residual magnitudes: threshold 0.05 (the "
                           "authors use 0.04-0.06 for Wan 2.2), at most K = 2 skips in a row, the first 20% of "
                           "steps always computed."),
}


def _cache_note(cache) -> str:
    return CACHE_NOTES[cache.type] if cache is not None else ""


def _files_note(title: str, files: list[tuple[str, str]], source: str, settings: str, extra: str = "",
                origin: str = "Official settings (Wan-AI generate.py)") -> str:
    rows = "\n".join(f"- `ComfyUI/models/{kind}/{name}`" for kind, name in files)
    return (f"## {title}\n\nDownload these files from {source} and put them here:\n\n{rows}\n\n"
            f"{origin}: {settings}.{extra}\n\n"
            f"Step counts, guidance (cfg) and shift of 0 on the sampler mean: the model's official value.")


def _text_nodes(variant_id: str, task: str) -> list[N]:
    return [
        N("t5", "WanExpertsLoadTextEncoder", {"text_encoder_name": T5_FILE}),
        N("text", "WanExpertsTextEncode", {"positive": PROMPTS[task],
                                           "negative": VARIANTS[variant_id].default_negative_prompt},
          {"text_encoder": ("t5", 0)}),
    ]


def _sampler(variant_id: str, latent: tuple, cond: tuple | None = None, cache: tuple | None = None,
             shift: float | None = None, model: tuple = ("dit", 0), **settings) -> N:
    """Wan Sampler (basic) with the official settings; Wan Sampler (Advanced) for an A14B pair, to show each
    expert's guidance (``settings`` override its widgets)."""
    v = VARIANTS[variant_id]
    low, high = v.guidance
    links = {"model": model, "text": ("text", 0), "latent": latent}
    if cond is not None:
        links["image_cond"] = cond
    if cache is not None:
        links["step_cache"] = cache
    widgets = {"seed": SEED, "steps": v.steps, "shift": v.shift if shift is None else shift, "solver": "unipc"}
    if v.size == "a14b":
        return N("sampler", "WanExpertsSampler", widgets | {"cfg_high": high, "cfg_low": low} | settings, links)
    assert low == high and not settings, variant_id
    return N("sampler", "WanExpertsSamplerBasic", widgets | {"cfg": high}, links)


def _output(variant_id: str, prefix: str) -> list[N]:
    return [
        N("decode", "WanExpertsVAEDecode", {}, {"vae": ("vae", 0), "samples": ("sampler", 0)}),
        N("save", "WanExpertsSaveVideo", {"fps": float(VARIANTS[variant_id].fps), "filename_prefix": prefix},
          {"images": ("decode", 0)}),
    ]


def _size(variant_id: str, index: int = 0) -> dict:
    w, h = VARIANTS[variant_id].sizes[index].split("*")
    return {"width": int(w), "height": int(h), "frames": VARIANTS[variant_id].frames}


def t2v_13b(name="wan2.1_t2v_1.3B", cache: N | None = None, title="Wan 2.1 text to video (1.3B)") -> Spec:
    vid, dit = "wan21_t2v_1.3b", "wan2.1_t2v_1.3B_fp16.safetensors"
    nodes = [N("dit", "WanExpertsLoadDiT", {"model_name": dit}), *_text_nodes(vid, "t2v"),
             N("vae", "WanExpertsLoadVAE", {"vae_name": VAE21}),
             N("latent", "WanExpertsEmptyLatent", _size(vid))]
    if cache is not None:
        nodes.append(cache)
    nodes += [_sampler(vid, ("latent", 0), cache=(cache.key, 0) if cache else None),
              *_output(vid, "video/Wan2.1_t2v")]
    files = [("diffusion_models", dit), ("text_encoders", T5_FILE), ("vae", VAE21)]
    return Spec(name, title, _files_note(title, files, REPACK_21, "50 steps, shift 5, guidance 5, 832x480, 81 "
                                         "frames at 16 fps (the README suggests shift 8-12 and guidance 6 for 1.3B)",
                                         _cache_note(cache)),
                nodes)


def i2v_14b() -> Spec:
    vid, dit, title = "wan21_i2v_14b", "wan2.1_i2v_480p_14B_fp16.safetensors", "Wan 2.1 image to video (14B, 480p)"
    nodes = [N("dit", "WanExpertsLoadDiT", {"model_name": dit}), *_text_nodes(vid, "i2v"),
             N("vae", "WanExpertsLoadVAE", {"vae_name": VAE21}),
             N("image", "LoadImage", {"image": "start_image.png"}, title="Start image"),
             N("clip", "WanExpertsLoadCLIPVision", {"clip_name": CLIP_FILE}),
             N("clip_enc", "WanExpertsCLIPVisionEncode", {}, {"clip_vision": ("clip", 0), "start_image": ("image", 0)}),
             N("i2v", "WanExpertsImageToVideo", _size(vid, 2),
               {"vae": ("vae", 0), "start_image": ("image", 0), "clip_embeds": ("clip_enc", 0)}),
             _sampler(vid, ("i2v", 1), ("i2v", 0), shift=3.0), *_output(vid, "video/Wan2.1_i2v")]
    files = [("diffusion_models", dit), ("text_encoders", T5_FILE), ("vae", VAE21), ("clip_vision", CLIP_FILE)]
    return Spec("wan2.1_i2v_14B_480p", title, _files_note(
        title, files, REPACK_21, "40 steps, shift 3 at 480p (5 at 720p), guidance 5, 81 frames at 16 fps; the "
        "start image is centre-cropped to width x height, so pick a size with the image's aspect ratio",
        " Put the start image into `ComfyUI/input/`. For 720p use wan2.1_i2v_720p_14B_fp16.safetensors, 1280x720 "
        "and shift 5."), nodes)


def flf2v_14b() -> Spec:
    vid, dit, title = "wan21_flf2v_14b", "wan2.1_flf2v_720p_14B_fp16.safetensors", "Wan 2.1 first-last frame to video"
    nodes = [N("dit", "WanExpertsLoadDiT", {"model_name": dit}), *_text_nodes(vid, "flf2v"),
             N("vae", "WanExpertsLoadVAE", {"vae_name": VAE21}),
             N("first", "LoadImage", {"image": "first_frame.png"}, title="First frame"),
             N("last", "LoadImage", {"image": "last_frame.png"}, title="Last frame"),
             N("clip", "WanExpertsLoadCLIPVision", {"clip_name": CLIP_FILE}),
             N("clip_enc", "WanExpertsCLIPVisionEncode", {},
               {"clip_vision": ("clip", 0), "start_image": ("first", 0), "end_image": ("last", 0)}),
             N("i2v", "WanExpertsImageToVideo", _size(vid),
               {"vae": ("vae", 0), "start_image": ("first", 0), "end_image": ("last", 0),
                "clip_embeds": ("clip_enc", 0)}),
             _sampler(vid, ("i2v", 1), ("i2v", 0)), *_output(vid, "video/Wan2.1_flf2v")]
    files = [("diffusion_models", dit), ("text_encoders", T5_FILE), ("vae", VAE21), ("clip_vision", CLIP_FILE)]
    return Spec("wan2.1_flf2v_14B_720p", title, _files_note(
        title, files, REPACK_21, "50 steps, shift 16, guidance 5, 1280x720, 81 frames at 16 fps",
        " Put both images (same size) into `ComfyUI/input/`."), nodes)


def a14b(task: str, cache: N | None = None, name: str | None = None, title: str | None = None) -> Spec:
    vid = f"wan22_{task}_a14b"
    high, low = (f"wan2.2_{task}_{r}_noise_14B_fp8_scaled.safetensors" for r in ("high", "low"))
    title = title or f"Wan 2.2 {'text' if task == 't2v' else 'image'} to video (A14B, two experts)"
    nodes = [N("dit", "WanExpertsLoadMoE", {"high_noise_model": high, "low_noise_model": low}),
             *_text_nodes(vid, task), N("vae", "WanExpertsLoadVAE", {"vae_name": VAE21})]
    if task == "t2v":
        nodes.append(N("latent", "WanExpertsEmptyLatent", _size(vid)))
        latent, cond = ("latent", 0), None
    else:
        nodes += [N("image", "LoadImage", {"image": "start_image.png"}, title="Start image"),
                  N("i2v", "WanExpertsImageToVideo", _size(vid), {"vae": ("vae", 0), "start_image": ("image", 0)})]
        latent, cond = ("i2v", 1), ("i2v", 0)
    if cache is not None:
        nodes.append(cache)
    nodes += [_sampler(vid, latent, cond, cache=(cache.key, 0) if cache else None),
              *_output(vid, f"video/Wan2.2_{task}")]
    files = [("diffusion_models", high), ("diffusion_models", low), ("text_encoders", T5_FILE), ("vae", VAE21)]
    low_g, high_g = VARIANTS[vid].guidance
    settings = (f"40 steps, shift {VARIANTS[vid].shift:g}, guidance {high_g:g} (high-noise expert) / {low_g:g} "
                f"(low-noise expert), switch at t = {VARIANTS[vid].boundary * 1000:g}, 1280x720 (or 832x480), "
                f"81 frames at 16 fps")
    extra = " The sampler switches experts by itself (boundary 0 = the official value)." + _cache_note(cache)
    if task == "i2v":
        extra += " Put the start image into `ComfyUI/input/`; Wan 2.2 needs no CLIP vision model."
    return Spec(name or f"wan2.2_{task}_A14B", title, _files_note(title, files, REPACK_22, settings, extra), nodes)


def ti2v_5b(with_image: bool) -> Spec:
    vid, dit = "wan22_ti2v_5b", "wan2.2_ti2v_5B_fp16.safetensors"
    title = f"Wan 2.2 TI2V-5B {'image' if with_image else 'text'} to video"
    nodes = [N("dit", "WanExpertsLoadDiT", {"model_name": dit}), *_text_nodes(vid, "i2v" if with_image else "t2v"),
             N("vae", "WanExpertsLoadVAE", {"vae_name": VAE22})]
    if with_image:
        nodes += [N("image", "LoadImage", {"image": "start_image.png"}, title="Start image"),
                  N("i2v", "WanExpertsImageToVideo", _size(vid), {"vae": ("vae", 0), "start_image": ("image", 0)})]
        latent, cond = ("i2v", 1), ("i2v", 0)
    else:
        nodes.append(N("latent", "WanExpertsEmptyLatent", _size(vid), {"vae": ("vae", 0)}))
        latent, cond = ("latent", 0), None
    nodes += [_sampler(vid, latent, cond), *_output(vid, "video/Wan2.2_ti2v")]
    files = [("diffusion_models", dit), ("text_encoders", T5_FILE), ("vae", VAE22)]
    extra = " TI2V-5B needs the Wan 2.2 VAE (wan2.2_vae), not the 2.1 one."
    if with_image:
        extra += " Put the start image into `ComfyUI/input/`."
    return Spec(f"wan2.2_ti2v_5B_{'i2v' if with_image else 't2v'}", title, _files_note(
        title, files, REPACK_22, "50 steps, shift 5, guidance 5, 1280x704, 121 frames at 24 fps", extra), nodes)


WINDOW_PROMPTS = ("Two anthropomorphic cats in boxing gear circle each other on a spotlighted stage.\n"
                  "The cats trade fast punches; the crowd behind them cheers.\n"
                  "One cat is knocked down; the other raises its gloves in victory as confetti falls.")


def t2v_a14b_context_windows() -> Spec:
    """241 frames (15 s) of Wan 2.2 T2V-A14B in context windows of 81 frames, with one prompt per third."""
    vid, name = "wan22_t2v_a14b", "wan2.2_t2v_A14B_241_frames_context_windows"
    title = "Wan 2.2 text to video, 241 frames in context windows (A14B)"
    high, low = (f"wan2.2_t2v_{r}_noise_14B_fp8_scaled.safetensors" for r in ("high", "low"))
    sampler = _sampler(vid, ("latent", 0))
    sampler.links["context"] = ("context", 0)
    nodes = [N("dit", "WanExpertsLoadMoE", {"high_noise_model": high, "low_noise_model": low}),
             *_text_nodes(vid, "t2v"), N("vae", "WanExpertsLoadVAE", {"vae_name": VAE21}),
             N("latent", "WanExpertsEmptyLatent", {"width": 832, "height": 480, "frames": 241}),
             N("context", "WanExpertsContextWindows",
               {"context_frames": 81, "context_overlap": 16, "schedule": "static", "fuse": "linear",
                "freenoise": True, "image_cond": "first", "window_prompts": WINDOW_PROMPTS},
               {"text_encoder": ("t5", 0)}),
             sampler, *_output(vid, "video/Wan2.2_t2v_241_frames")]
    files = [("diffusion_models", high), ("diffusion_models", low), ("text_encoders", T5_FILE), ("vae", VAE21)]
    extra = (" Wan Context Windows splits the 241 frames (61 latent frames) into 4 windows of 81 frames that "
             "overlap by at least 16; each step runs every window and blends them. The three window prompts follow "
             "each other over the video (the sampler's prompt is used where none are given). Memory is that of "
             "one 81-frame window; time grows with the number of windows.")
    return Spec(name, title, _files_note(title, files, REPACK_22, "40 steps, shift 12, guidance 4 (high-noise "
                                         "expert) / 3 (low-noise expert), 832x480 at 16 fps", extra), nodes)


def i2v_a14b_extended() -> Spec:
    """A Wan 2.2 I2V-A14B clip extended twice from its last 5 frames: 81 + 76 + 76 = 233 frames."""
    vid, name = "wan22_i2v_a14b", "wan2.2_i2v_A14B_extend_3_segments"
    title = "Wan 2.2 image to video, extended to 3 segments (A14B)"
    high, low = (f"wan2.2_i2v_{r}_noise_14B_fp8_scaled.safetensors" for r in ("high", "low"))
    v = VARIANTS[vid]
    size = {"width": 832, "height": 480, "frames": 81}

    def extension(key: str, source: str, seed: int) -> N:
        return N(key, "WanExpertsExtendVideo",
                 {"seed": seed, "steps": v.steps, "cfg_high": v.guidance[1], "cfg_low": v.guidance[0],
                  "shift": v.shift, "solver": "unipc", "frames": 81, "overlap_frames": 5, "color_match": "mean_std"},
                 {"model": ("dit", 0), "text": ("text", 0), "vae": ("vae", 0), "video": (source, 0)})

    nodes = [N("dit", "WanExpertsLoadMoE", {"high_noise_model": high, "low_noise_model": low}),
             *_text_nodes(vid, "i2v"), N("vae", "WanExpertsLoadVAE", {"vae_name": VAE21}),
             N("image", "LoadImage", {"image": "start_image.png"}, title="Start image"),
             N("i2v", "WanExpertsImageToVideo", size, {"vae": ("vae", 0), "start_image": ("image", 0)}),
             _sampler(vid, ("i2v", 1), ("i2v", 0)),
             N("decode", "WanExpertsVAEDecode", {}, {"vae": ("vae", 0), "samples": ("sampler", 0)}),
             extension("extend2", "decode", SEED + 1), extension("extend3", "extend2", SEED + 2),
             N("save", "WanExpertsSaveVideo", {"fps": float(v.fps), "filename_prefix": "video/Wan2.2_i2v_extended"},
               {"images": ("extend3", 0)})]
    files = [("diffusion_models", high), ("diffusion_models", low), ("text_encoders", T5_FILE), ("vae", VAE21)]
    extra = (" Each Wan Extend Video continues the video from its last 5 frames: they start the next 81-frame "
             "segment (I2V mask and held latents), the shared frames are cross-faded and the new colours are "
             "matched to the video's end (mean/std in Lab). Chain more of them for longer videos; change the "
             "prompt per segment by giving each its own Wan Text Encode. Put the start image into "
             "`ComfyUI/input/`.")
    return Spec(name, title, _files_note(title, files, REPACK_22, "40 steps, shift 5, guidance 3.5, 832x480, 81 "
                                         "frames per segment at 16 fps", extra), nodes)


LIGHTX2V = tuple(f"wan2.2_t2v_lightx2v_4steps_lora_v1.1_{r}_noise.safetensors" for r in ("high", "low"))


def a14b_distill_lora() -> Spec:
    """The 4-step distill LoRA pair (lightx2v Wan2.2-Lightning) on the Wan 2.2 T2V-A14B experts."""
    vid, title = "wan22_t2v_a14b", "Wan 2.2 text to video (A14B) in 4 steps with the lightx2v LoRA pair"
    high, low = (f"wan2.2_t2v_{r}_noise_14B_fp8_scaled.safetensors" for r in ("high", "low"))
    nodes = [N("dit", "WanExpertsLoadMoE", {"high_noise_model": high, "low_noise_model": low}),
             N("lora", "WanExpertsLoRAPair", {"high_noise_lora": LIGHTX2V[0], "low_noise_lora": LIGHTX2V[1]},
               {"model": ("dit", 0)}),
             *_text_nodes(vid, "t2v"), N("vae", "WanExpertsLoadVAE", {"vae_name": VAE21}),
             N("latent", "WanExpertsEmptyLatent", _size(vid)),
             _sampler(vid, ("latent", 0), model=("lora", 0), steps=4, cfg_high=1.0, cfg_low=1.0, shift=5.0,
                      solver="euler", switch_step=2),
             *_output(vid, "video/Wan2.2_t2v_4steps")]
    files = [("diffusion_models", high), ("diffusion_models", low), ("loras", LIGHTX2V[0]), ("loras", LIGHTX2V[1]),
             ("text_encoders", T5_FILE), ("vae", VAE21)]
    settings = ("4 steps, cfg 1 on both experts (no negative pass), Euler, shift 5, the high-noise expert for steps "
                "1-2 and the low-noise one for steps 3-4, LoRA strength 1")
    extra = (" The LoRA pair is the lightx2v Wan2.2-Lightning 4-step distillation (huggingface.co/lightx2v), "
             "repackaged by Comfy-Org under split_files/loras: each file goes to its own expert (Wan 2.2 LoRA "
             "Pair). The negative prompt has no effect at cfg 1.")
    return Spec("wan2.2_t2v_A14B_4steps_lora", title,
                _files_note(title, files, REPACK_22, settings, extra, origin="Settings of the LoRA authors"), nodes)


def a14b_upscale_cascade() -> Spec:
    """A 480p Wan 2.2 T2V-A14B draft upscaled x1.5 twice, each stage refined by the low-noise expert (720p, 1080p)."""
    vid, name = "wan22_t2v_a14b", "wan2.2_t2v_A14B_upscale_cascade_1080p"
    title = "Wan 2.2 text to video, 480p draft refined to 720p and 1080p (A14B low-noise expert)"
    high, low = (f"wan2.2_t2v_{r}_noise_14B_fp8_scaled.safetensors" for r in ("high", "low"))
    v = VARIANTS[vid]

    def stage(n: int, source: str, strength: float) -> list[N]:
        refine = {"seed": SEED, "steps": v.steps, "strength": strength, "expert": "low", "cfg_high": v.guidance[1],
                  "cfg_low": v.guidance[0], "shift": v.shift, "solver": "unipc"}
        return [N(f"upscale{n}", "WanExpertsUpscaleVideo", {"target": "factor", "factor": 1.5, "multiple": 16,
                                                             "resampling": "lanczos"}, {"images": (source, 0)}),
                N(f"refine{n}", "WanExpertsVideoToVideo", refine,
                  {"model": ("dit", 0), "text": ("text", 0), "video": (f"upscale{n}", 0), "vae": ("vae", 0)}),
                N(f"decode{n}", "WanExpertsVAEDecode", {"tiled": "on" if n == 2 else "auto", "tile_size": 512},
                  {"vae": ("vae", 0), "samples": (f"refine{n}", 0)})]

    nodes = [N("dit", "WanExpertsLoadMoE", {"high_noise_model": high, "low_noise_model": low}),
             *_text_nodes(vid, "t2v"), N("vae", "WanExpertsLoadVAE", {"vae_name": VAE21}),
             N("latent", "WanExpertsEmptyLatent", {"width": 832, "height": 480, "frames": v.frames}),
             _sampler(vid, ("latent", 0)),
             N("decode", "WanExpertsVAEDecode", {}, {"vae": ("vae", 0), "samples": ("sampler", 0)}),
             *stage(1, "decode", 0.3), *stage(2, "decode1", 0.3),
             N("save", "WanExpertsSaveVideo", {"fps": float(v.fps), "filename_prefix": "video/Wan2.2_t2v_1080p"},
               {"images": ("decode2", 0)})]
    files = [("diffusion_models", high), ("diffusion_models", low), ("text_encoders", T5_FILE), ("vae", VAE21)]
    extra = (" The draft is 832x480. Each Wan Upscale Video scales by 1.5 in pixel space (lanczos; 1248x720, then "
             "1872x1088, rounded to multiples of 16) and Wan Video To Video re-paints it at strength 0.3: the last "
             "12 of 40 steps, on the low-noise expert only (the high-noise expert stays off the GPU). The 1080p "
             "decode runs in tiles. A model upscaler (core Upscale Image (using Model)) can replace Wan Upscale "
             "Video. At 1080p x 81 frames the DiT's activations alone are about 25 GiB (the memory budget's estimate, "
             "which refuses a stage that does not fit and names the largest size that does); on a smaller GPU give "
             "the refine nodes Wan Context Windows, or lower the frames.")
    return Spec(name, title, _files_note(title, files, REPACK_22, "draft: 40 steps, shift 12, guidance 4 (high-noise "
                                         "expert) / 3 (low-noise expert), 832x480, 81 frames at 16 fps; refines: "
                                         "strength 0.3, low-noise expert, guidance 3", extra), nodes)


S2V_PROMPT = ("A young woman with short dark hair speaks warmly to the camera in a softly lit room, her lips moving "
              "with the words, small natural nods and blinks, a calm and friendly expression.")
AUDIO_ENCODER_FILE = "wav2vec2_large_english_fp16.safetensors"


def s2v(pose: bool = False) -> Spec:
    """Wan 2.2 S2V-14B: a portrait and a speech track -> a talking video with the speech muxed in; with ``pose``,
    the body follows a pose video (skeleton frames) loaded by core Load Video + Get Video Components."""
    vid, dit = "wan22_s2v_14b", "wan2.2_s2v_14B_bf16.safetensors"
    name = "wan2.2_s2v_14B_pose_driven" if pose else "wan2.2_s2v_14B_talking_portrait"
    title = ("Wan 2.2 speech to video (S2V-14B), pose-driven: portrait + speech + pose video -> video with sound"
             if pose else "Wan 2.2 speech to video (S2V-14B): portrait + speech -> talking video with sound")
    v = VARIANTS[vid]
    pose_nodes = [N("pose_file", "LoadVideo", {"file": "pose.mp4"}, title="Pose video (16 fps)"),
                  N("pose", "GetVideoComponents", {}, {"video": ("pose_file", 0)})] if pose else []
    nodes = [N("dit", "WanExpertsLoadDiT", {"model_name": dit}),
             N("audio_enc", "WanExpertsLoadAudioEncoder", {"audio_encoder_name": AUDIO_ENCODER_FILE}),
             N("t5", "WanExpertsLoadTextEncoder", {"text_encoder_name": T5_FILE}),
             N("text", "WanExpertsTextEncode", {"positive": S2V_PROMPT, "negative": v.default_negative_prompt},
               {"text_encoder": ("t5", 0)}),
             N("vae", "WanExpertsLoadVAE", {"vae_name": VAE21}),
             N("image", "LoadImage", {"image": "portrait.png"}, title="Portrait"),
             N("audio", "LoadAudio", {"audio": "speech.wav"}, title="Speech"),
             N("audio_embeds", "WanExpertsAudioEncode", {}, {"audio_encoder": ("audio_enc", 0), "audio": ("audio", 0)}),
             *pose_nodes,
             N("s2v", "WanExpertsSoundToVideo",
               {"width": 832, "height": 448, "frames_per_clip": v.frames, "clips": 0, "seed": SEED, "steps": v.steps,
                "cfg": v.guidance[0], "shift": v.shift, "solver": "unipc", "start_from_ref": False},
               {"model": ("dit", 0), "vae": ("vae", 0), "text": ("text", 0), "audio_embeds": ("audio_embeds", 0),
                "ref_image": ("image", 0), **({"pose_video": ("pose", 0)} if pose else {})}),
             N("save", "WanExpertsSaveVideo", {"fps": float(v.fps), "filename_prefix": "video/Wan2.2_s2v"},
               {"images": ("s2v", 0), "audio": ("audio", 0)})]
    files = [("diffusion_models", dit), ("audio_encoders", AUDIO_ENCODER_FILE), ("text_encoders", T5_FILE),
             ("vae", VAE21)]
    inputs = "the portrait, the speech (wav, mp3, flac ...) and the pose video" if pose else \
        "the portrait and the speech (wav, mp3, flac ...)"
    extra = (f" Put {inputs} into `ComfyUI/input/`. The video lasts as long as the speech: clips of 80 frames "
             "(5 s), each steered by the last 73 frames of the one before; the first clip has 77.")
    if pose:
        extra += (" The pose video is skeleton frames (OpenPose / DWPose style), one per output frame at 16 fps, "
                  "any size (scaled to cover the video and centre-cropped); after it ends the pose is blank. "
                  "Make it from a driving video with the DWPose Estimator or OpenPose Pose node of "
                  "comfyui_controlnet_aux (core has no pose estimator), saved at 16 fps with core Save Video.")
    else:
        extra += (" For a pose-driven video see wan2.2_s2v_14B_pose_driven (a pose video into pose_video).")
    extra += " Save Wan Video muxes the speech into the mp4."
    return Spec(name, title, _files_note(title, files, REPACK_22, "40 steps, shift 3, guidance 4.5, 80 frames per "
                                         "clip at 16 fps, the S2V negative prompt; width and height multiples of 64",
                                         extra), nodes)


VACE_PROMPT = ("A girl in a bright red spring outfit plays happily with her cute green cartoon snake in a festive "
               "courtyard hung with colourful lanterns, warm sunlight, joyful atmosphere.")
VACE_FILES = {"wan21_vace_1.3b": ["wan2.1_vace_1.3B_fp16.safetensors"],
              "wan21_vace_14b": ["wan2.1_vace_14B_fp16.safetensors"],
              "wan22_vace_a14b": ["wan2.2_fun_vace_high_noise_14B_fp8_scaled.safetensors",
                                  "wan2.2_fun_vace_low_noise_14B_fp8_scaled.safetensors"]}
CONTROL_NOTE = (" The control video must have the video's size and frame count: Upscale Image (crop center) and Image "
                "From Batch make it so. Make a pose, depth or edge video from any footage with the DWPose, Depth "
                "Anything or Canny preprocessors of comfyui_controlnet_aux (or core Canny) before loading it here; "
                "Wan VACE Conditioning can also take the preprocessor's IMAGE output directly.")


def _video_frames(key: str, file: str, size: dict, title: str) -> list[N]:
    """Core Load Video -> frames resized (centre crop) to the video size and cut to its frame count."""
    return [N(f"{key}_file", "LoadVideo", {"file": file}, title=title),
            N(f"{key}_parts", "GetVideoComponents", {}, {"video": (f"{key}_file", 0)}),
            N(f"{key}_scaled", "ImageScale", {"upscale_method": "bicubic", "width": size["width"],
                                               "height": size["height"], "crop": "center"},
              {"image": (f"{key}_parts", 0)}),
            N(key, "ImageFromBatch", {"batch_index": 0, "length": size["frames"]}, {"image": (f"{key}_scaled", 0)})]


def vace(name: str, vid: str, mode: str, title: str) -> Spec:
    """VACE: reference-to-video ("reference"), a control video ("control") or inpainting under a mask ("inpaint")."""
    v, files = VARIANTS[vid], VACE_FILES[vid]
    size = _size(vid, 0 if vid == "wan21_vace_1.3b" else 2)
    if len(files) == 2:
        loader = N("dit", "WanExpertsLoadMoE", {"high_noise_model": files[0], "low_noise_model": files[1]})
    else:
        loader = N("dit", "WanExpertsLoadDiT", {"model_name": files[0]})
    nodes = [loader, N("t5", "WanExpertsLoadTextEncoder", {"text_encoder_name": T5_FILE}),
             N("text", "WanExpertsTextEncode", {"positive": VACE_PROMPT, "negative": v.default_negative_prompt},
               {"text_encoder": ("t5", 0)}),
             N("vae", "WanExpertsLoadVAE", {"vae_name": VAE21})]
    links = {"vae": ("vae", 0)}
    if mode == "reference":
        nodes.append(N("ref", "LoadImage", {"image": "reference.png"}, title="Reference image"))
        links["reference_images"] = ("ref", 0)
    else:
        nodes += _video_frames("control", "control.mp4" if mode == "control" else "source.mp4", size,
                               "Control video" if mode == "control" else "Video to edit")
        links["control_video"] = ("control", 0)
    if mode == "inpaint":
        nodes += [*_video_frames("mask_frames", "mask.mp4", size, "Mask video (white = regenerate)"),
                  N("mask", "ImageToMask", {"channel": "red"}, {"image": ("mask_frames", 0)})]
        links["control_masks"] = ("mask", 0)
    nodes.append(N("vace", "WanExpertsVace", size | {"batch_size": 1, "strength": 1.0}, links))
    sampler = _sampler(vid, ("vace", 1))
    sampler.links["vace"] = ("vace", 0)
    nodes += [sampler, *_output(vid, f"video/Wan_vace_{mode}")]
    file_rows = [("diffusion_models", f) for f in files] + [("text_encoders", T5_FILE), ("vae", VAE21)]
    low_g, high_g = v.guidance
    if v.moe:
        settings, origin = (f"{v.steps} steps, shift {v.shift:g}, guidance {high_g:g} (high-noise expert) / "
                            f"{low_g:g} (low-noise expert), switch at t = {v.boundary * 1000:g} (the settings of "
                            f"the Wan 2.2 T2V-A14B experts it was trained from), {size['width']}x{size['height']}, "
                            f"81 frames at 16 fps"), "Settings"
    else:
        settings, origin = (f"{v.steps} steps, shift {v.shift:g}, guidance {high_g:g}, {size['width']}x"
                            f"{size['height']}, 81 frames at 16 fps"), "Official settings (Wan-AI generate.py)"
    extra = {"reference": " Put the reference picture (a subject or object, ideally on white) into `ComfyUI/input/`; "
                          "connect several pictures as one IMAGE batch for several subjects.",
             "control": " Put the control video into `ComfyUI/input/`." + CONTROL_NOTE,
             "inpaint": " Put the video and its mask video (white where the video is to be redone, black where it "
                        "is kept) into `ComfyUI/input/`; both are resized and cut the same way. A single mask image "
                        "(Load Image's MASK) works too: it applies to every frame."}[mode]
    extra += (" Wan Sampler removes the reference frames from the finished latent by itself (no Trim Video Latent "
              "needed).")
    return Spec(name, title, _files_note(title, file_rows, REPACK_22 if v.moe else REPACK_21, settings, extra,
                                         origin=origin), nodes)
RELIGHT_LORA = "wan2.2_animate_14B_relight_lora_bf16.safetensors"


def _video(key: str, file: str, title: str) -> list[N]:
    """Core Load Video + Get Video Components: a video file of ComfyUI/input -> its frames (IMAGE)."""
    return [N(f"{key}_file", "LoadVideo", {"file": file}, title=title),
            N(key, "GetVideoComponents", {}, {"video": (f"{key}_file", 0)})]


def animate(replace: bool) -> Spec:
    """Wan 2.2 Animate-14B: a character driven by a pose video and face crops (animation), or put into the video in
    place of the performer with the relighting LoRA (replacement)."""
    vid, dit = "wan22_animate_14b", "wan2.2_animate_14B_bf16.safetensors"
    name = f"wan2.2_animate_14B_{'replace' if replace else 'animate'}"
    title = ("Wan 2.2 Animate-14B: " + ("character replacement (background + mask, relighting LoRA)" if replace
                                        else "character animation (pose + face video)"))
    v = VARIANTS[vid]
    model = ("lora", 0) if replace else ("dit", 0)
    nodes = [N("dit", "WanExpertsLoadDiT", {"model_name": dit}),
             N("t5", "WanExpertsLoadTextEncoder", {"text_encoder_name": T5_FILE}),
             N("text", "WanExpertsTextEncode", {"positive": ANIMATE_PROMPT, "negative": v.default_negative_prompt},
               {"text_encoder": ("t5", 0)}),
             N("clip", "WanExpertsLoadCLIPVision", {"clip_name": CLIP_FILE}),
             N("vae", "WanExpertsLoadVAE", {"vae_name": VAE21}),
             N("image", "LoadImage", {"image": "character.png"}, title="Character"),
             *_video("pose", "src_pose.mp4", "Pose video"), *_video("face", "src_face.mp4", "Face video")]
    links = {"model": model, "vae": ("vae", 0), "text": ("text", 0), "clip_vision": ("clip", 0),
             "reference_image": ("image", 0), "pose_video": ("pose", 0), "face_video": ("face", 0)}
    if replace:
        nodes += [N("lora", "WanExpertsLoRA", {"lora_name": RELIGHT_LORA, "strength": 1.0}, {"model": ("dit", 0)}),
                  *_video("bg", "src_bg.mp4", "Background video"), *_video("mask_frames", "src_mask.mp4", "Mask video"),
                  N("mask", "ImageToMask", {"channel": "red"}, {"image": ("mask_frames", 0)})]
        links.update(background_video=("bg", 0), character_mask=("mask", 0))
    nodes += [N("animate", "WanExpertsAnimate",
                {"clip_frames": v.frames, "reference_frames": 1, "seed": SEED, "steps": v.steps, "cfg": v.guidance[0],
                 "shift": v.shift, "solver": "unipc"}, links),
              N("save", "WanExpertsSaveVideo", {"fps": float(v.fps), "filename_prefix": f"video/{name}"},
                {"images": ("animate", 0)})]
    files = [("diffusion_models", dit), ("text_encoders", T5_FILE), ("clip_vision", CLIP_FILE), ("vae", VAE21)]
    files += [("loras", RELIGHT_LORA)] if replace else []
    extra = (" Put the character picture and the driving videos into `ComfyUI/input/`: the official preprocessing "
             "(Wan2.2 `wan/modules/animate/preprocess`) writes src_pose.mp4 (skeleton frames: their size is the "
             "video size), src_face.mp4 (square face crops), src_ref.png" + (", src_bg.mp4 and src_mask.mp4 (with "
             "--replace_flag)" if replace else "") + "; pose frames from a pose estimator that renders skeletons "
             "(DWPose) and square face crops work too. The video is as long as the pose video, made in clips of 77 "
             "frames, each starting from the last frame of the one before (reference_frames 1 or 5)."
             + (" The relighting LoRA lights the character like the scene (official --use_relighting_lora)."
                if replace else ""))
    return Spec(name, title, _files_note(title, files, REPACK_22, "20 steps, shift 5, guidance 1, clips of 77 frames "
                                         "at 30 fps, the prompt 视频中的人在做动作", extra), nodes)


TEACACHE = N("cache", "WanExpertsTeaCache", {"threshold": 0.08, "mode": "e"})  # authors' 1.3B setting: ~2x
MAGCACHE = N("cache", "WanExpertsMagCache", {"threshold": 0.05, "K": 2, "retention_ratio": 0.2})

SPECS = [
    s2v(),
    s2v(pose=True),
    animate(False),
    animate(True),
    t2v_13b(),
    i2v_14b(),
    flf2v_14b(),
    a14b("t2v"),
    a14b("i2v"),
    ti2v_5b(False),
    ti2v_5b(True),
    t2v_13b("wan2.1_t2v_1.3B_teacache", TEACACHE, "Wan 2.1 text to video (1.3B) with TeaCache"),
    a14b("t2v", MAGCACHE, "wan2.2_t2v_A14B_magcache", "Wan 2.2 text to video (A14B) with MagCache"),
    t2v_a14b_context_windows(),
    i2v_a14b_extended(),
    a14b_distill_lora(),
    a14b_upscale_cascade(),
    vace("wan2.1_vace_1.3B_reference_to_video", "wan21_vace_1.3b", "reference",
         "Wan 2.1 VACE (1.3B): reference image to video"),
    vace("wan2.1_vace_14B_control", "wan21_vace_14b", "control", "Wan 2.1 VACE (14B): control video to video"),
    vace("wan2.1_vace_14B_inpainting", "wan21_vace_14b", "inpaint", "Wan 2.1 VACE (14B): video inpainting with a mask"),
    vace("wan2.2_vace_fun_A14B_control", "wan22_vace_a14b", "control",
         "Wan 2.2 VACE-Fun (A14B, two experts): control video to video"),
]
