"""EnlightenGAN (Jiang et al., TIP 2021): attention-guided U-Net trained unpaired with global and local
discriminators and a self feature-preserving VGG loss.

See ``SOURCE.md``; the adapter is ``baselines.enlightengan.adapter:EnlightenGAN`` (registered name
``enlightengan``)."""
