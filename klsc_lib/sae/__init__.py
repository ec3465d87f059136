"""The CNN transcoder of paper Sec 3.1 / App C, J.1 and what serves it.

- :mod:`~klsc_lib.sae.transcoder`: k x k conv encoder, per-position TopK, shared decoder.
- :mod:`~klsc_lib.sae.training`: resumable (and DDP) training with FVU / L0 / dead metrics.
- :mod:`~klsc_lib.sae.activation_cache`: hooked activations on disk (``activation_cache_protocol.md``).
- :mod:`~klsc_lib.sae.topk_index`: dataset search as a streaming top-k index.
- :mod:`~klsc_lib.sae.lm_saes_import`: the authors' ``lm_saes`` checkpoints.
"""
