"""Measuring explanations: sample-set distances, image statistics and concept purity.

- :mod:`~klsc_lib.analysis.image_metrics`: KID, histogram total variation (world quality).
- :mod:`~klsc_lib.analysis.kde`: the KDE-KL of App I.4 (eq. 212).
- :mod:`~klsc_lib.analysis.sample_metrics`: high-frequency energy fraction (MACO's
  signature) and diversity of a sample set.
- :mod:`~klsc_lib.analysis.monosemanticity`: features vs neurons against known factors (App L.1).
"""
