"""The released CSRNet weights (``experiments/pretrain_models/csrnet.pth``) in our CSRNet.

The file (``hejingwenhejingwen/CSRNet`` @ ``cfc57bd``, git blob ``264e2703…``) is the state dict of the official
``CSRNet(in_nc=3, out_nc=3, base_nf=64, cond_nf=32)`` (``codes/models/archs/CSRNet_arch.py``; the sizes are
``network_G`` of ``codes/options/test/test_Enhance.yml``): 24 float32 tensors, each a ``weight`` and a ``bias``
of

* ``cond_net.conv1`` (32, 3, 7, 7), ``cond_net.conv2`` and ``cond_net.conv3`` (32, 32, 3, 3): the condition
  network;
* ``cond_scale1``, ``cond_shift1``, ``cond_scale2``, ``cond_shift2`` (64, 32) and ``cond_scale3``,
  ``cond_shift3`` (3, 32): the GFM linear maps;
* ``conv1`` (64, 3, 1, 1), ``conv2`` (64, 64, 1, 1), ``conv3`` (3, 64, 1, 1): the per-pixel base network.

Our ``model.CSRNet`` uses the same module names, so every rule copies the tensor under its own name (no
transform). The official test loads this file non-strictly (BasicSR ``load_network`` with ``strict_load``
unset); here all 24 tensors must map and nothing else may be in the file. A ``module.`` (DataParallel)
prefix is stripped.

Official test pipeline (``codes/test_CSRNet.py -opt options/test/test_Enhance.yml``): ``LQGT_enhance``
reads each image with ``data.util.read_img`` (``cv2.imread`` → float32 / 255, BGR → RGB, HWC → CHW), whole
image, no resize or padding; ``model.test()`` (eval, no_grad) runs the network; ``util.tensor2img(visuals['rlt'])``
clamps to [0, 1] and rounds ``(x * 255).round()`` (NumPy: half to even) to uint8, and ``util.save_img`` writes
it (``cv2.imwrite``). Our adapter's test path is the same (input / 255, whole image, output clamped to [0, 1]).
"""

from __future__ import annotations

from bench.official.layout import OfficialLayout, Part, same_name_rules

__all__ = ["layout", "OFFICIAL_NAMES"]

#: the 24 tensor names of the official CSRNet(3, 3, 64, 32) state dict (CSRNet_arch.py), written out
OFFICIAL_NAMES = tuple(
    f"{module}.{p}"
    for module in ("cond_net.conv1", "cond_net.conv2", "cond_net.conv3",
                   "cond_scale1", "cond_scale2", "cond_scale3",
                   "cond_shift1", "cond_shift2", "cond_shift3",
                   "conv1", "conv2", "conv3")
    for p in ("weight", "bias")
)


def layout() -> OfficialLayout:
    return OfficialLayout(
        method="csrnet",
        parts=(Part("", "torch", same_name_rules(OFFICIAL_NAMES),
                    release_path="experiments/pretrain_models/csrnet.pth", locate=("csrnet.pth",)),),
        description="CSRNet(3,3,64,32) state dict, 24 tensors (cond_net.conv1-3, cond_scale/shift1-3, conv1-3), "
                    "names as ours",
        test_pipeline="codes/test_CSRNet.py with options/test/test_Enhance.yml: data.util.read_img (cv2, /255, "
                      "BGR->RGB), whole image; utils.util.tensor2img: clamp [0,1], (x*255).round() (half to even), "
                      "uint8",
        official_quantize="round",
    )
