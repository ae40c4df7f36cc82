"""The pack imports the way ComfyUI imports it (mangled package name, no ComfyUI present) and registers nodes."""
import subprocess
import sys

from conftest import ROOT


def test_pack_registers_nodes(pack):
    mappings = pack.NODE_CLASS_MAPPINGS
    assert mappings and set(mappings) == set(pack.NODE_DISPLAY_NAME_MAPPINGS)
    for node_id, cls in mappings.items():
        assert node_id.startswith("WanExperts")
        assert cls.CATEGORY.startswith("Wan Experts/") and cls.DESCRIPTION and cls.FUNCTION
        assert hasattr(cls, cls.FUNCTION)
        inputs = cls.INPUT_TYPES()
        for section_name, section in inputs.items():
            if section_name == "hidden":  # PROMPT / EXTRA_PNGINFO come from the host, not from the user
                continue
            for name, spec in section.items():
                assert len(spec) == 2 and spec[1].get("tooltip"), f"{node_id}.{name} has no tooltip"


def test_pack_imports_under_another_name_without_comfyui():
    code = (
        "import importlib.util, sys\n"
        f"spec = importlib.util.spec_from_file_location('custom_nodes_x1', r'{ROOT / '__init__.py'}', "
        f"submodule_search_locations=[r'{ROOT}'])\n"
        "m = importlib.util.module_from_spec(spec); sys.modules['custom_nodes_x1'] = m; spec.loader.exec_module(m)\n"
        "assert 'comfy' not in sys.modules and 'folder_paths' not in sys.modules\n"
        "print(len(m.NODE_CLASS_MAPPINGS))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd="/")
    assert out.returncode == 0, out.stderr
    assert int(out.stdout.strip()) >= 2


def test_engine_never_imports_nodes_or_comfyui():
    offenders = []
    for path in (ROOT / "wan").rglob("*.py"):
        text = path.read_text()
        for bad in ("import folder_paths", "from comfy", "import comfy", "from ..nodes", "from nodes", "import nodes"):
            if bad in text:
                offenders.append(f"{path.relative_to(ROOT)}: {bad}")
    assert not offenders
