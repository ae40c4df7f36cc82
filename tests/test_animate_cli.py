"""``--task animate-14B`` from the command line, and the relighting LoRA.

The relighting LoRA through our LoRA path vs the official ``use_relighting_lora``: the official code makes a PEFT
LoRA of rank 128, alpha 128 on the Linears its ``get_loraconfig`` picks (every Linear under ``blocks`` except the face
adapter's) and loads ``relighting_lora.ckpt`` into it; PEFT adds (alpha / rank) B A to each. Here the official target
list is taken from ``get_loraconfig`` itself (``peft.LoraConfig`` stands in as a record of its arguments), the tiny
official model gets B A added to exactly those weights, and its forward is compared with ours after loading a
``relighting_lora.ckpt`` in the official format through ``wan.lora.apply_lora``. Tolerance: ``tiny_dit.assert_close``."""
import sys
import types

import torch

import wan
from oracles import official
from tiny_animate import animate_inputs, official_animate, official_animate_forward
from tiny_dit import assert_close, save_safetensors, state_dict_of
from wan.dit.animate import AnimateInputs
from wan.lora import apply_lora


def _official_targets(model, rank: int):
    """(target module names, rank, alpha) as the official ``get_loraconfig`` builds them."""
    saved = sys.modules.get("peft")
    sys.modules["peft"] = types.SimpleNamespace(LoraConfig=lambda **kw: types.SimpleNamespace(**kw))
    name = f"{official.PACKAGE}.modules.animate.animate_utils"
    try:
        config = official.load("modules.animate.animate_utils").get_loraconfig(model, rank=rank, alpha=rank)
    finally:
        sys.modules.pop(name, None)
        if saved is None:
            sys.modules.pop("peft", None)
        else:
            sys.modules["peft"] = saved
    return config.target_modules, config.r, config.lora_alpha


def test_relighting_lora_matches_official(tmp_path):
    ref = official_animate(seed=8, layers=5, face=4)
    path = save_safetensors(state_dict_of(ref), tmp_path / "animate.safetensors")
    targets, rank, alpha = _official_targets(ref, rank=4)
    assert "blocks.0.cross_attn.k_img" in targets and not any("face" in t for t in targets)
    g = torch.Generator().manual_seed(3)
    lora, modules = {}, dict(ref.named_modules())
    for name in targets:
        layer = modules[name]
        a = torch.randn(rank, layer.in_features, generator=g) * 0.05
        b = torch.randn(layer.out_features, rank, generator=g) * 0.05
        lora[f"{name}.lora_A.weight"], lora[f"{name}.lora_B.weight"] = a, b
        with torch.no_grad():
            layer.weight += (alpha / rank) * (b @ a)
    torch.save({"state_dict": lora}, tmp_path / "relighting_lora.ckpt")
    base = wan.load_dit(path)
    ours = apply_lora(base, tmp_path / "relighting_lora.ckpt")
    x, y, ctx, clip, pose, face = animate_inputs(seed=2)
    face = face[..., :4, :4]
    with torch.no_grad():
        out = ours(x, torch.tensor([800.0]), ctx, clip_fea=clip, y=y, animate=AnimateInputs(pose, face))
        plain = base(x, torch.tensor([800.0]), ctx, clip_fea=clip, y=y, animate=AnimateInputs(pose, face))
    expected = official_animate_forward(ref, x, 800.0, y, ctx, clip, pose, face)
    assert_close(out, expected)
    assert (plain - expected).abs().max() > 1e-2 * expected.abs().max()  # the LoRA changes the output


def test_cli_demo_replacement_with_relighting_lora(tmp_path):
    from wan.generate import main
    from wan.video import read_video

    out = tmp_path / "animate.mp4"
    assert main(["--task", "animate-14B", "--demo", "--replace_flag", "--use_relighting_lora", "--refert_num", "1",
                 "--sample_steps", "1", "--save_file", str(out)]) == 0
    assert read_video(out).shape == (12, 64, 96, 3)  # the driving video's frames and size


def test_cli_refuses_bad_flags(tmp_path, capsys):
    from wan.generate import main

    assert main(["--task", "animate-14B", "--demo", "--refert_num", "3"]) == 2
    assert "1 or 5" in capsys.readouterr().err
    assert main(["--task", "animate-14B", "--ckpt_dir", str(tmp_path)]) == 2
    assert "--src_root_path" in capsys.readouterr().err
    (tmp_path / "src_pose.mp4").write_bytes(b"")
    (tmp_path / "src_face.mp4").write_bytes(b"")
    (tmp_path / "src_ref.png").write_bytes(b"")
    assert main(["--task", "animate-14B", "--ckpt_dir", str(tmp_path), "--src_root_path", str(tmp_path),
                 "--replace_flag"]) == 2
    assert "src_bg.mp4" in capsys.readouterr().err
    assert main(["--task", "animate-14B", "--demo", "--image", __file__]) == 2
    assert "src_ref.png" in capsys.readouterr().err
