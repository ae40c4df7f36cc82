"""Weights: opening files and reading their kind (``checkpoint``, ``files``), assigning tensors to modules
(``assign``), the one ``Linear`` whose weight is ``dequantise(stored) + patches`` (``ops``), the patch forms
(``patches``) and patched copies per expert (``patching``).

May import: ``wan.errors``, ``wan.checks``, ``wan.finite``, ``wan.quant`` (the stored formats ``ops`` dequantises).
Never imports models, sampling, memory placement or the run; ``wan.lora`` builds on it, not the other way round.
"""
