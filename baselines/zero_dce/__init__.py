"""Zero-DCE (Guo, Li et al., CVPR 2020): zero-reference deep curve estimation for low-light enhancement.

``model`` holds DCE-Net and the light-enhancement curve, ``losses`` the four non-reference losses, ``adapter``
the ``bench`` adapter (class ``ZeroDCE``). See ``SOURCE.md`` for what follows the official code and what not.
"""
