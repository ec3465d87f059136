"""Measuring explanations: sample-set distances and concept purity.

- :mod:`~klsc_lib.analysis.image_metrics`: KID, histogram total variation (world quality).
- :mod:`~klsc_lib.analysis.kde`: the KDE-KL of App I.4 (eq. 212).
- :mod:`~klsc_lib.analysis.monosemanticity`: features vs neurons against known factors (App L.1).
"""
