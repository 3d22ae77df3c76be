"""EFF (Ying, Li, Ren, Wang & Wang, CAIP 2017): exposure-fusion-framework contrast enhancement.

``algorithm`` holds the NumPy/SciPy implementation, ``adapter`` the ``bench`` adapter (class ``Eff``).
"""
