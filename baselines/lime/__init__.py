"""LIME (Guo, Li & Ling, TIP 2017): classical Retinex-style low-light enhancement.

``algorithm`` holds the NumPy/SciPy implementation, ``adapter`` the ``bench`` adapter (class ``Lime``).
"""
