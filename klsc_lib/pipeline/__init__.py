"""The Section 3 pipeline as resumable command-line stages (``python -m klsc_lib.pipeline``
or ``klsc``): ``cache`` activations, ``train`` the transcoder, ``index`` the top-k images,
``sample`` EnergyDPS explanations; one process or ``torchrun`` workers on one or many
nodes (see ``docs/paper_scale.md``)."""
