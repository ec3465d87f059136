"""Notebook-specific orchestration, one module per notebook (``nbNN_*``, beside
:mod:`klsc_lib.profiles`): the studies a notebook runs on top of the reusable core
(``constraints``, ``diffusion``, ``energies``, ``baselines``, ``sae``, ``analysis``,
``worlds``, ``viz``, ``explain``), which imports nothing from here.
"""
