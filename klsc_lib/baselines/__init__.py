"""Sampling baselines that miss the KLSC tilt (paper Sec 2.2.3, App F, J.3).

- :mod:`~klsc_lib.baselines.gmm`: retrieval (top-k), optimisation with regularisation
  (OR), the prompt family and task terms, on the toy GMM (App F, I).
"""
