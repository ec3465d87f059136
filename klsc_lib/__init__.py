"""klsc_lib: helper library of the klsc companion to
"A Distributional View for Visual Mechanistic Interpretability: KL-Minimal
Soft-Constraint Principle" (ICML 2026).

Section, appendix, table and equation numbers in docstrings refer to the paper (arXiv
2605.17504). The paper's numbers and settings that the notebooks compare against are
data in :mod:`klsc_lib.paper_values`.

Shape suffixes
--------------
Tensor names carry their shape as a suffix of single letters (``acts_BD``,
``x_BCHW``). The letters, used across the whole package:

    B  batch (samples, images)
    N  pool / dataset size (number of candidates)
    D  feature dimension of a flat vector (2 for the toy GMM, d_model for SAEs)
    K  mixture components (GMM modes) or kept top-k entries
    C  image or activation channels
    H  height,  W  width
    F  SAE / transcoder dictionary features (d_sae)
    T  diffusion timesteps
    G  grid points of a 1-D or 2-D quadrature grid
    L  levels of a sweep (target levels t, strengths lambda, ...)
"""

__version__ = "0.1.0"
