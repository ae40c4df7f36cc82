"""Widget choices and widgets shared by several nodes."""

# Compute precision of a loaded model; "default" keeps the file's own (see each loader's tooltip).
DTYPE_CHOICES = ["default", "bf16", "fp16", "fp32"]


SEED_MAX = 0xFFFFFFFFFFFFFFFF


def seed_widget(tooltip: str) -> tuple:
    return ("INT", {"default": 0, "min": 0, "max": SEED_MAX, "control_after_generate": True, "tooltip": tooltip})


def steps_widget(tooltip: str) -> tuple:
    return ("INT", {"default": 0, "min": 0, "max": 1000, "tooltip": tooltip})


def cfg_widget(tooltip: str) -> tuple:
    return ("FLOAT", {"default": 0.0, "min": 0.0, "max": 30.0, "step": 0.1, "tooltip": tooltip})


def shift_widget(tooltip: str) -> tuple:
    return ("FLOAT", {"default": 0.0, "min": 0.0, "max": 100.0, "step": 0.1, "tooltip": tooltip})


def clip_sampling_widgets(solvers, seed: str, steps: str, cfg: str, shift: str) -> dict:
    """seed, steps, cfg, shift and solver of the clip-by-clip generators (S2V, Animate), in widget order; 0 in the
    number widgets means the task's official default (which the tooltips name)."""
    return {"seed": seed_widget(seed), "steps": steps_widget(steps), "cfg": cfg_widget(cfg),
            "shift": shift_widget(shift),
            "solver": (list(solvers), {"default": "unipc", "tooltip": "unipc: the official default."})}
