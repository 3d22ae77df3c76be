"""DRBN (Yang, Wang, Fang, Wang & Liu, CVPR 2020): the deep recursive band network, stage 1.

``model`` holds the network (four recursions of the band unit ``DRBN_BU``, each a multi-scale stack of residual
dense blocks giving coarse-to-fine band outputs at 1/4, 1/2 and full resolution), ``losses`` the official
stage-1 objective (negative SSIM at three scales), and ``adapter`` the ``bench`` adapter (class ``DRBN``).
Stage 2 (band recomposition by perceptual-quality-driven adversarial learning) is out of scope: DSN's Table 1
and the paper's objective comparison use stage 1 only. See ``SOURCE.md``.
"""
