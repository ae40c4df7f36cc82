"""The Wan variants: what each one is, how to recognise it from its weights, and its official defaults.

Sources: the official Wan 2.1 / 2.2 configs and ``generate.py`` defaults (see README, "Model files").
"""
from __future__ import annotations

from dataclasses import dataclass

DEFAULT_NEGATIVE_PROMPT = (
    "色调艳丽，过曝，静态，细节模糊不清，字幕，风格，作品，画作，画面，静止，整体发灰，最差质量，低质量，JPEG压缩残留，"
    "丑陋的，残缺的，多余的手指，画得不好的手部，画得不好的脸部，畸形的，毁容的，形态畸形的肢体，手指融合，静止不动的画面，"
    "杂乱的背景，三条腿，背景人很多，倒着走"
)

ROLES = ("single", "high", "low")


@dataclass(frozen=True)
class Variant:
    """One released Wan model family/size with the defaults of the official generation script."""

    id: str  # e.g. "wan21_t2v_1.3b"
    version: str  # "2.1" | "2.2"
    task: str  # "t2v" | "i2v" | "flf2v" | "ti2v"
    size: str  # "1.3b" | "14b" | "a14b" | "5b" | "custom"
    steps: int
    shift: float
    guidance: tuple[float, float]  # (low-noise / single, high-noise)
    frames: int = 81
    fps: int = 16
    sizes: tuple[str, ...] = ("832*480", "480*832")
    boundary: float | None = None  # MoE switch, fraction of 1000
    vae: str = "2.1"
    uses_clip: bool = False
    negative_prefix: str = ""
    moe: bool = False
    negative_prompt: str = ""  # a variant's own default negative prompt (S2V), replacing the shared one

    @property
    def default_negative_prompt(self) -> str:
        return self.negative_prompt or self.negative_prefix + DEFAULT_NEGATIVE_PROMPT

    @property
    def needs_image(self) -> bool:
        return self.task in ("i2v", "flf2v")


S2V_NEGATIVE_PROMPT = (
    "画面模糊，最差质量，画面模糊，细节模糊不清，情绪激动剧烈，手快速抖动，字幕，丑陋的，残缺的，多余的手指，画得不好的手部，"
    "画得不好的脸部，畸形的，毁容的，形态畸形的肢体，手指融合，静止不动的画面，杂乱的背景，三条腿，背景人很多，倒着走"
)

ANIMATE_PROMPT = "视频中的人在做动作"  # Animate-14B's default prompt ("the person in the video is moving")

_SIZES_14B = ("1280*720", "720*1280", "832*480", "480*832")
_SIZES_5B = ("1280*704", "704*1280")
_SIZES_S2V = ("1280*720", "720*1280", "832*480", "480*832", "1024*704", "704*1024", "1280*704", "704*1280")

VARIANTS: dict[str, Variant] = {
    v.id: v
    for v in (
        Variant("wan21_t2v_1.3b", "2.1", "t2v", "1.3b", 50, 5.0, (5.0, 5.0)),
        Variant("wan21_t2v_14b", "2.1", "t2v", "14b", 50, 5.0, (5.0, 5.0), sizes=_SIZES_14B),
        Variant("wan21_i2v_14b", "2.1", "i2v", "14b", 40, 5.0, (5.0, 5.0), sizes=_SIZES_14B, uses_clip=True,
                negative_prefix="镜头晃动，"),
        Variant("wan21_flf2v_14b", "2.1", "flf2v", "14b", 50, 16.0, (5.0, 5.0), sizes=_SIZES_14B, uses_clip=True,
                negative_prefix="镜头切换，镜头晃动，"),
        Variant("wan22_t2v_a14b", "2.2", "t2v", "a14b", 40, 12.0, (3.0, 4.0), sizes=_SIZES_14B, boundary=0.875,
                moe=True),
        Variant("wan22_i2v_a14b", "2.2", "i2v", "a14b", 40, 5.0, (3.5, 3.5), sizes=_SIZES_14B, boundary=0.900,
                moe=True),
        Variant("wan22_ti2v_5b", "2.2", "ti2v", "5b", 50, 5.0, (5.0, 5.0), frames=121, fps=24, sizes=_SIZES_5B,
                vae="2.2"),
        # t2i-14B (official Wan 2.1 CLI): the T2V-14B model making one frame, written as an image
        Variant("wan21_t2i_14b", "2.1", "t2v", "14b", 50, 5.0, (5.0, 5.0), frames=1,
                sizes=_SIZES_14B + ("1024*1024",)),
        Variant("wan21_vace_1.3b", "2.1", "vace", "1.3b", 50, 16.0, (5.0, 5.0)),
        Variant("wan21_vace_14b", "2.1", "vace", "14b", 50, 16.0, (5.0, 5.0), sizes=_SIZES_14B),
        # VACE-Fun A14B (alibaba-pai): trained on the T2V-A14B experts, run with their schedule and switch point
        Variant("wan22_vace_a14b", "2.2", "vace", "a14b", 40, 12.0, (3.0, 4.0), sizes=_SIZES_14B, boundary=0.875,
                moe=True),
        Variant("wan22_s2v_14b", "2.2", "s2v", "14b", 40, 3.0, (4.5, 4.5), frames=80, sizes=_SIZES_S2V,
                negative_prompt=S2V_NEGATIVE_PROMPT),
        Variant("wan22_animate_14b", "2.2", "animate", "14b", 20, 5.0, (1.0, 1.0), frames=77, fps=30,
                sizes=_SIZES_14B, uses_clip=True),
    )
}


def detect_variant(*, in_dim: int, dim: int, has_clip: bool, has_flf_pos: bool, role: str = "single",
                   name_hint: str = "", has_vace: bool = False) -> Variant:
    """The variant of a DiT from facts read off its weights (see ``wan.dit.config``).

    Wan 2.1 T2V-14B and a Wan 2.2 T2V-A14B expert have identical weights layouts; a high/low role or a
    ``wan2.2``/``wan2_2`` name hint makes it the 2.2 expert.
    """
    hint = name_hint.lower().replace("-", "_").replace(".", "_")
    is_22 = role in ("high", "low") or "wan2_2" in hint or "wan22" in hint
    if has_vace:
        return VARIANTS["wan22_vace_a14b" if is_22 else "wan21_vace_1.3b" if dim == 1536 else "wan21_vace_14b"]
    if in_dim == 48:
        base = VARIANTS["wan22_ti2v_5b"]
    elif has_flf_pos:
        base = VARIANTS["wan21_flf2v_14b"]
    elif has_clip:
        base = VARIANTS["wan21_i2v_14b"]
    elif in_dim == 36:
        base = VARIANTS["wan22_i2v_a14b"]
    elif is_22:
        base = VARIANTS["wan22_t2v_a14b"]
    elif dim == 1536:
        base = VARIANTS["wan21_t2v_1.3b"]
    else:
        base = VARIANTS["wan21_t2v_14b"]
    return base


def is_official_width(variant: Variant, dim: int) -> bool:
    """False for scaled-down (test or custom) models that share a variant's structure but not its size."""
    expected = {"1.3b": 1536, "14b": 5120, "a14b": 5120, "5b": 3072}[variant.size]
    return dim == expected


def default_boundary(in_dim: int) -> float:
    """Official Wan 2.2 switch point: 0.875 for text-to-video experts, 0.900 for image-to-video ones."""
    return 0.900 if in_dim == 36 else 0.875
