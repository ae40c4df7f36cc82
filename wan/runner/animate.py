"""``--task animate-14B``: character animation and replacement from the command line, with the official flags
(``--src_root_path --refert_num --replace_flag --use_relighting_lora``).

``--src_root_path`` is the folder the official preprocessing writes: ``src_pose.mp4`` (skeleton frames; their size
is the video size), ``src_face.mp4`` (face crops), ``src_ref.png`` (the character), and for ``--replace_flag``
``src_bg.mp4`` and ``src_mask.mp4``. ``--frame_num`` is the clip length (official 77). ``--use_relighting_lora``
applies ``relighting_lora.ckpt`` of ``--ckpt_dir`` through the LoRA loader, like any LoRA file. ``--demo`` writes a
tiny driving folder (moving shapes) beside the tiny models. Under torchrun the official multi-GPU flags apply
(``--ulysses_size``, ``--dit_fsdp``, ``--t5_fsdp``); ``--cfg_parallel`` is refused."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from ..errors import InputError
from ..sampling.animate import REFERENCE_FRAMES

SOURCE_FILES = ("src_pose.mp4", "src_face.mp4", "src_ref.png")
REPLACE_FILES = ("src_bg.mp4", "src_mask.mp4")
RELIGHTING_LORA = "relighting_lora.ckpt"


@dataclass
class AnimateOptions:
    src_root: Path | None  # None with --demo: a tiny driving folder is written
    refert_num: int
    replace: bool
    relighting_lora: bool


def add_animate_flags(p) -> None:
    g = p.add_argument_group("character animation and replacement (--task animate-14B)")
    g.add_argument("--src_root_path", default=None, help="the official preprocessing's output folder (src_pose.mp4, "
                   "src_face.mp4, src_ref.png; src_bg.mp4 and src_mask.mp4 for --replace_flag)")
    g.add_argument("--refert_num", type=int, default=1, help="frames carried from one clip to the next: 1 or 5")
    g.add_argument("--replace_flag", action="store_true", help="replacement mode: put the character into the video")
    g.add_argument("--use_relighting_lora", action="store_true",
                   help=f"apply {RELIGHTING_LORA} of --ckpt_dir (replacement mode: light the character as the scene)")


def animate_options(args) -> AnimateOptions:
    """Check the animation flags and the driving folder before anything loads."""
    if args.refert_num not in REFERENCE_FRAMES:
        raise InputError(f"--refert_num {args.refert_num} must be 1 or 5 (official)")
    if args.image is not None:
        raise InputError("--image does not apply to animate-14B: the character is src_ref.png of --src_root_path")
    root = None if args.src_root_path is None else Path(args.src_root_path)
    if root is None and not args.demo:
        raise InputError("--task animate-14B needs --src_root_path, the folder the official preprocessing wrote "
                         "(src_pose.mp4, src_face.mp4, src_ref.png)")
    if root is not None:
        for name in SOURCE_FILES + (REPLACE_FILES if args.replace_flag else ()):
            if not (root / name).is_file():
                raise InputError(f"--src_root_path '{root}' lacks {name}" + (
                    " (needed by --replace_flag; run the preprocessing with --replace_flag)"
                    if name in REPLACE_FILES else ""))
    if args.use_relighting_lora and args.ckpt_dir and not (Path(args.ckpt_dir) / RELIGHTING_LORA).is_file():
        raise InputError(f"--use_relighting_lora: --ckpt_dir '{args.ckpt_dir}' lacks {RELIGHTING_LORA}")
    return AnimateOptions(root, args.refert_num, args.replace_flag, args.use_relighting_lora)


def read_source(root: Path, replace: bool, face_size: int | None = None):
    """The driving folder -> AnimateSource (frames in [-1, 1]; the reference fitted into the pose size on black;
    face crops resized to ``face_size``, None: as they are; the mask from the first channel of src_mask.mp4,
    official)."""
    from ..sampling.animate import AnimateSource, letterbox, resize_faces
    from ..video import read_video
    from ..video import load_image

    def frames(name: str) -> torch.Tensor:
        return read_video(root / name).permute(0, 3, 1, 2) * 2 - 1

    pose, face = frames("src_pose.mp4"), frames("src_face.mp4")
    if face.shape[0] != pose.shape[0]:
        raise InputError(f"'{root}': src_face.mp4 has {face.shape[0]} frames, src_pose.mp4 {pose.shape[0]}; they must "
                         f"match (run the preprocessing again)")
    if face.shape[-1] != face.shape[-2]:
        raise InputError(f"'{root}': src_face.mp4 must hold square face crops; got {face.shape[-1]}x{face.shape[-2]}")
    if face_size is not None:
        face = resize_faces(face, face_size)
    reference = letterbox(load_image(root / "src_ref.png")[0], *pose.shape[-2:])
    background = mask = None
    if replace:
        background = frames("src_bg.mp4")
        mask = (frames("src_mask.mp4")[:, 0] + 1) / 2
    return AnimateSource(reference, pose, face, background, mask)


def run_animate(s) -> Path | None:
    """The driving folder -> video file.

    Under torchrun every rank runs the clip loop with the DiT sharded (``--dit_fsdp``) and its tokens split
    (``--ulysses_size``), as the official script does; rank 0 writes the file and returns it, the others None."""
    from ..distributed.ranks import is_main, share_from_main
    from ..encoders import load_clip_vision
    from ..sampling import SamplerSettings
    from ..sampling.animate import check_source, generate_animate, resize_faces
    from ..video import write_video
    from .pipeline import encode_text, load_experts, load_vae, official_files, parallel_setup, run_description

    o: AnimateOptions = s.animate
    refuse_parallel_flags(s)
    files = official_files(s.ckpt_dir, s.task, s.variant)
    root = o.src_root if o.src_root is not None else write_demo_source(s.ckpt_dir / "src", o.replace)
    source = read_source(root, o.replace)  # bad driving videos are named before any model loads
    check_source(source, source.face.shape[-1])
    par = parallel_setup(s, files)  # None for one process
    device = par.device if par else torch.device(s.device)
    seed = share_from_main(s.seed)  # one noise for all ranks
    if o.relighting_lora:
        s.loras = tuple(s.loras) + (relighting_lora(s.ckpt_dir, s.demo),)
    text = encode_text(files, s, device, par)
    model = load_experts(files, s, device, par).high
    if not hasattr(model, "animate_config"):
        raise InputError(f"the model in '{s.ckpt_dir}' is not Wan 2.2 Animate-14B (no pose and face modules); "
                         f"download the official Wan2.2-Animate-14B folder")
    source.face = resize_faces(source.face, model.animate_config.face_size)
    clip_fea = load_clip_vision(files.clip, device=device).encode(source.reference[None].to(device)).cpu()
    vae = load_vae(files, device)
    settings = SamplerSettings(steps=s.steps, shift=s.shift, solver=s.solver, cfg_high=s.guidance[0],
                               cfg_low=s.guidance[0])
    video = generate_animate(model, vae, text, clip_fea, source, settings, clip_frames=s.frames,
                             refert_num=o.refert_num, seed=seed, device=device)
    if not is_main():
        return None
    frames = ((video.permute(1, 2, 3, 0) + 1) / 2).clamp(0, 1)
    s.width, s.height, s.frames = frames.shape[2], frames.shape[1], frames.shape[0]
    return write_video(frames, s.save_file, fps=s.variant.fps, metadata={"comment": run_description(s)})


def refuse_parallel_flags(s) -> None:
    """Multi-process flags that do not apply to animate-14B, named before any model loads."""
    p = s.parallel
    if p.cfg_parallel:
        raise InputError("--cfg_parallel does not apply to animate-14B (its clip loop runs both guidance branches in "
                         "each process): split the work with --ulysses_size N (and --dit_fsdp, --t5_fsdp) instead")
    if p.dit_fsdp and s.animate.relighting_lora:
        raise InputError("--use_relighting_lora cannot be combined with --dit_fsdp (a LoRA patches whole weights, "
                         "FSDP shards them): drop --dit_fsdp and keep --ulysses_size to split the work over the GPUs")


def relighting_lora(ckpt_dir: Path, demo: bool = False):
    """The official relighting LoRA of the checkpoint folder as an ordinary LoRA choice (strength 1: rank 128, alpha
    128); with --demo a random one in its format (PEFT keys in a ``{"state_dict": ...}`` pickle) is written first."""
    from ..lora.apply import LoraChoice

    path = ckpt_dir / RELIGHTING_LORA
    if demo and not path.is_file():
        write_demo_relighting_lora(path)
    if not path.is_file():
        raise InputError(f"--use_relighting_lora: --ckpt_dir '{ckpt_dir}' lacks {RELIGHTING_LORA}")
    return LoraChoice(path, 1.0, "both")


def write_demo_relighting_lora(path: Path, rank: int = 4, seed: int = 7) -> Path:
    """Random low-rank pieces for every Linear of the tiny demo DiT's blocks (official targets: not the face
    adapter, not the modulation)."""
    from .demo import DIT_DIM, DIT_FFN, DIT_LAYERS

    g = torch.Generator().manual_seed(seed)
    shapes = {f"{part}.{name}": (DIT_DIM, DIT_DIM) for part in ("self_attn", "cross_attn") for name in "qkvo"}
    shapes.update({"cross_attn.k_img": (DIT_DIM, DIT_DIM), "cross_attn.v_img": (DIT_DIM, DIT_DIM),
                   "ffn.0": (DIT_FFN, DIT_DIM), "ffn.2": (DIT_DIM, DIT_FFN)})
    sd = {}
    for i in range(DIT_LAYERS):
        for name, (out_f, in_f) in shapes.items():
            sd[f"blocks.{i}.{name}.lora_A.weight"] = torch.randn(rank, in_f, generator=g) * 0.02
            sd[f"blocks.{i}.{name}.lora_B.weight"] = torch.randn(out_f, rank, generator=g) * 0.02
    torch.save({"state_dict": sd}, path)
    return path


def write_demo_source(folder: Path, replace: bool, frames: int = 12, size: tuple[int, int] = (64, 96),
                      face: int = 8) -> Path:
    """A tiny driving folder in the official layout: a moving square as the pose, matching face crops, a gradient
    character, a background and the square as the mask."""
    from ..video import write_video

    folder.mkdir(parents=True, exist_ok=True)
    h, w = size
    pose = torch.zeros(frames, h, w, 3)
    for i in range(frames):
        pose[i, 16:40, 8 + 4 * i:32 + 4 * i] = 1.0
    write_video(pose, folder / "src_pose.mp4", fps=30)
    write_video(torch.linspace(0, 1, frames).view(-1, 1, 1, 1).expand(frames, face * 4, face * 4, 3).clone(),
                folder / "src_face.mp4", fps=30)
    ref = torch.linspace(0, 1, w).view(1, -1, 1).expand(h, w, 3).clone()
    _write_png(ref, folder / "src_ref.png")
    if replace:
        write_video(torch.linspace(0, 1, h).view(1, -1, 1, 1).expand(frames, h, w, 3).clone(), folder / "src_bg.mp4",
                    fps=30)
        write_video(pose, folder / "src_mask.mp4", fps=30)
    return folder


def _write_png(image: torch.Tensor, path: Path) -> None:
    """[H, W, 3] in 0..1 -> PNG (PyAV's image encoder)."""
    import av

    with av.open(str(path), "w", format="image2") as container:
        stream = container.add_stream("png", rate=1)
        stream.height, stream.width = image.shape[:2]
        stream.pix_fmt = "rgb24"
        frame = av.VideoFrame.from_ndarray((image * 255).round().byte().numpy(), format="rgb24")
        for packet in stream.encode(frame):
            container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
