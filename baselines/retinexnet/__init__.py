"""RetinexNet (Wei, Wang, Yang & Liu, BMVC 2018): Retinex decomposition + illumination adjustment.

``model`` holds DecomNet / RelightNet (PyTorch rebuild of the official TensorFlow graph), ``losses`` the
official loss terms, ``denoise`` the optional reflectance denoising (a documented substitute for BM3D), and
``adapter`` the ``bench`` adapter (class ``RetinexNet``). See ``SOURCE.md``.
"""
