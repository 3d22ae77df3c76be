"""DeepUPE (Wang, Zhang, Fu, Shen, Zheng & Jia, CVPR 2019): underexposed photo enhancement by illumination estimation.

``model`` holds the DeepUPE layout of the HDRNet network, the output mapping F = I / clip(S, I, 1) and the losses;
the bilateral-grid pieces are imported from ``baselines.hdrnet.bilateral``; ``adapter`` is the ``bench`` adapter
(class ``DeepUPE``).
"""
