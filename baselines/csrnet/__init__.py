"""CSRNet (He, Liu, Qiao, Dong, ECCV 2020): conditional sequential modulation for global image retouching.

``model`` holds the network (condition network + 1×1 base network with global feature modulation),
``adapter`` the ``bench`` adapter (class ``CSRNetMethod``). See ``SOURCE.md``.
"""
