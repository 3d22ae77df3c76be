"""The released Zero-DCE weights (``Zero-DCE_code/snapshots/Epoch99.pth``) in our DCE-Net.

``torch.save(DCE_net.state_dict())`` of ``model.enhance_net_nopool``: 14 tensors ``e_conv1..7.{weight,bias}``,
the names ours use (``model.py``), so every rule copies. The official test script ``lowlight_test.py`` reads
``np.asarray(PIL.Image.open(path))/255.0`` (no resize, no padding) and writes with ``torchvision.utils.save_image``
(``x*255 + 0.5``, clamp, uint8: rounding half up; torchvision 0.2.1, the README's pin, truncated instead).
"""

from __future__ import annotations

from bench.official.layout import OfficialLayout, Part, same_name_rules

from .model import DCENet


def layout() -> OfficialLayout:
    names = tuple(DCENet().state_dict())
    return OfficialLayout(
        method="zero-dce",
        parts=(Part("", "torch", same_name_rules(names), release_path="Zero-DCE_code/snapshots/Epoch99.pth"),),
        description="enhance_net_nopool state dict (e_conv1..e_conv7), names as ours",
        test_pipeline="lowlight_test.py: PIL image / 255 as float, whole image, 8 curve steps, save_image "
                      "(x*255+0.5, clamp, uint8)",
        official_quantize="round",
    )
