"""Hard constraints vs the KL-minimal soft constraint (paper Sec 2.2, App D, H).

- :mod:`~klsc_lib.constraints.score_variable`: the scalar score variable Y = psi(X)
  (exact, empirical, or standard normal) with its CDF, survival and hazard.
- :mod:`~klsc_lib.constraints.hard_vs_tilt`: the truncation p_tau and the tilt q_lambda
  on a score variable: log-partition, tilted moments, tilt KLs (Lemmas D.1-D.12).
- :mod:`~klsc_lib.constraints.divergences`: KL / TV between weighted sample sets.
- :mod:`~klsc_lib.constraints.gaussian_example`: App D.4.4 in closed form.
- :mod:`~klsc_lib.constraints.calibration`: matching tau, lambda or any knob to a target t
  (vectorised bisection, Brent, stochastic knobs); App H.4's matched comparison.
"""
