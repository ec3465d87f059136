"""Sampling baselines that miss the KLSC tilt (paper Sec 2.2.3, App F, J.3).

Toy (App F, I):
- :mod:`~klsc_lib.baselines.gmm`: retrieval (top-k), optimisation with regularisation
  (OR), the prompt family and task terms on the 2-D GMM.

Images (Sec 3.1-3.2, App J.3), each taking an energy ``x_BCHW -> psi_B`` and a cap:
- :mod:`~klsc_lib.baselines.dataset_search`: top-k real images by psi (the matched target t).
- :mod:`~klsc_lib.baselines.maco`: MACO, phase-only Fourier optimisation (App J.3.1).
- :mod:`~klsc_lib.baselines.proxy_guidance`: DiffExplainer-style soft-prompt optimisation
  through a short differentiable DDIM chain (App J.3.2).
- :mod:`~klsc_lib.baselines.image_common`: per-sample seeds, caps and NaN checks they share.
"""
