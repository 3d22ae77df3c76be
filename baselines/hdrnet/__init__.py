"""HDRNet (Gharbi, Chen, Barron, Hasinoff & Durand, SIGGRAPH 2017): deep bilateral learning.

``bilateral`` holds the bilateral-grid pieces (slicing, curve guide, affine apply) shared with ``baselines.deepupe``;
``model`` the network (``HDRNetModel``); ``adapter`` the ``bench`` adapter (class ``HDRNet``).
"""
