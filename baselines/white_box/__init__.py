"""White-Box / Exposure (Hu, He, Xu, Wang & Lin, TOG 2018): an RL agent retouching with differentiable filters.

``filters`` holds the eight filters and the full-resolution replay, ``networks`` the agent, critic and value
networks, ``rl`` one agent step with its penalties, rewards and losses, ``data`` the input linearisation and the
data providers, ``memory`` the trajectory pool, ``train`` the GAN/RL training loop, and ``adapter`` the ``bench``
adapter (class ``WhiteBox``). See ``SOURCE.md``.
"""
