"""DeepLPF (Moran et al., CVPR 2020): backbone U-Net + cubic, graduated and elliptical parametric filters.

See ``SOURCE.md``; the adapter is ``baselines.deeplpf.adapter:DeepLPF`` (registered name ``deeplpf``)."""
