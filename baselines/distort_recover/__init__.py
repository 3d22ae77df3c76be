"""Distort-and-Recover (Park, Lee, Yoo & Kweon, CVPR 2018): colour enhancement by a double DQN over global actions.

``actions`` holds the 12 colour actions and the full-resolution replay, ``colour`` the Lab conversion, score and
histogram, ``features`` the VGG-16 fc6 state part (shared ``bench.vgg_features`` + fc6), ``qnet`` the Q-networks,
``env`` the environment, replay queue and experience sampler, and ``adapter`` the ``bench`` adapter (class
``DistortRecover``). See ``SOURCE.md``.
"""
