"""Widget choices shared by several nodes."""

# Compute precision of a loaded model; "default" keeps the file's own (see each loader's tooltip).
DTYPE_CHOICES = ["default", "bf16", "fp16", "fp32"]
