"""Independent reference implementations used only by the tests (official Wan code, diffusers, transformers)."""
