"""The memory budget checked before a run: ``estimates`` (what a sampling run or a VAE pass needs on its device,
by part) and ``check`` (fixed ceilings and the comparison with the free memory, refusing with the largest size
that fits).

May import: ``wan.memory`` (free memory, weights to move), ``wan.errors``, ``wan.checks``, the model configs it
sizes (``wan.dit.config``, ``wan.vae.config``). Imported by the models' and sampler's entry points, never the
other way round at module level.
"""
