"""DPE, paired variant (Chen, Wang, Kao & Chuang, CVPR 2018): the Deep Photo Enhancer generator trained with a
pixel loss on pairs, as DSN's Table 1 used it.

``model`` holds the official "global U-Net" generator (PyTorch rebuild of the TensorFlow layer list, with the
global feature vector tiled and concatenated before the decoder), ``canvas`` the fixed 512 x 512 canvas
(resize, symmetric padding, crop, resize back), and ``adapter`` the ``bench`` adapter (class ``DPE``) with the
official supervised data pipeline and schedule. The paper's GAN variants are not implemented. See
``SOURCE.md``.
"""
