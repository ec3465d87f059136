"""Diffusion priors and samplers shared by the toy (GMM) and image notebooks:
unguided DDPM / DDIM (:mod:`.samplers`) and EnergyDPS on either (:mod:`.energy_dps`).

Every denoiser is an epsilon-predictor ``model(x_t, t_B) -> eps`` on integer DDPM
timesteps (paper App G, I.3). The oracle GMM score and a trained UNet
plug into the same samplers.
"""
