"""The released DeepLPF weights (``pretrained_models/adobe_dpe/…_epoch_424_model.pt``) in our DeepLPFNet.

``sjmoran/DeepLPF``'s README names the released Adobe5K-DPE model ``pretrained_models/adobe_dpe/
deeplpf_validpsnr_23.378_validloss_0.033_testpsnr_23.904_testloss_0.031_epoch_424_model.pt`` (epoch 424, test
PSNR 23.90 dB); inference code written against it loads it with ``net = model.DeepLPFNet();
net.load_state_dict(torch.load(path))``, i.e. a plain ``DeepLPFNet`` state dict. (The earlier
``huawei-noah/noah-research`` ``DeepLPF/main.py`` wrote its best checkpoints with ``torch.save(net, path)``, a
pickled module: such a file is not a state dict and cannot be read without the official classes; re-save it as
``torch.save(net.state_dict(), ...)`` where the official code is installed.) A ``module.`` (DataParallel) prefix
is stripped and a ``{"model_state_dict": ...}`` wrapper unwrapped.

Tensors (:data:`OFFICIAL_NAMES`, 1,769,347 parameters), from ``unet.py`` and ``model.py`` of the 2020 release
(read in ``huawei-noah/noah-research`` ``DeepLPF/``; the classes are the same in ``sjmoran/DeepLPF`` before its
2026 refactor), each a ``weight`` and a ``bias``:

* ``backbonenet.unet``: ``conv1`` (64, 16, 1, 1), ``conv2`` (64, 32, 1, 1), ``conv3`` (64, 64, 1, 1) and
  ``local_net`` (a ``LocalNet(16)``: ``conv1`` 64x16x3x3, ``conv2`` 64x64x3x3), built by ``UNet.__init__``
  but never used by its ``forward``; ``dconv_down1..5`` and ``dconv_up4..1``, ``conv_last`` (``LocalNet``:
  ``conv1``, ``conv2``, 3x3); ``up_conv1x1_1..4`` (1x1);
* ``backbonenet.final_conv`` (64, 3, 3, 3);
* ``deeplpfnet.{cubic,graduated,elliptical}_filter``: ``<f>_layer{1,3,5,7}.conv`` (64, 64, 3, 3; the even
  layers are max-pools and a global pool) and ``fc_cubic`` (60, 64), ``fc_graduated`` (24, 64),
  ``fc_elliptical`` (24, 64).

Our ``model.DeepLPFNet`` keeps these names (``ParameterHead`` sets the ``<f>_layerN`` and ``fc_<f>``
attributes), so every rule copies.

Official test pipeline (``main.py --checkpoint_filepath … --inference_img_dirpath …``; ``metric.Evaluator
.evaluate``): ``data.Dataset`` reads the image and divides by ``normaliser = 2**8 - 1`` (``ToTensor``), whole
image, batch 1; ``net.eval()``; ``net(img)`` with ``img`` clamped to [0, 1]; the output clipped to [0, 1];
PSNR/SSIM on the float images; the saved image is ``(x * 255).astype('uint8')``, i.e. truncation. Our
adapter's test path is the same (input / 255, ``model(x)``, clamped).
"""

from __future__ import annotations

from bench.official.layout import OfficialLayout, Part, same_name_rules

__all__ = ["layout", "OFFICIAL_NAMES"]

_LOCALNETS = ("local_net", "dconv_down1", "dconv_down2", "dconv_down3", "dconv_down4", "dconv_down5",
              "dconv_up4", "dconv_up3", "dconv_up2", "dconv_up1", "conv_last")


def _official_names() -> list[str]:
    mods = [f"backbonenet.unet.conv{i}" for i in (1, 2, 3)]
    mods += [f"backbonenet.unet.{n}.conv{i}" for n in _LOCALNETS for i in (1, 2)]
    mods += [f"backbonenet.unet.up_conv1x1_{i}" for i in (1, 2, 3, 4)]
    mods += ["backbonenet.final_conv"]
    for f in ("cubic", "graduated", "elliptical"):
        mods += [f"deeplpfnet.{f}_filter.{f}_layer{i}.conv" for i in (1, 3, 5, 7)]
        mods += [f"deeplpfnet.{f}_filter.fc_{f}"]
    return [f"{m}.{p}" for m in mods for p in ("weight", "bias")]


#: the tensor names of the official DeepLPFNet state dict (unet.py, model.py), written out
OFFICIAL_NAMES = tuple(_official_names())


def layout() -> OfficialLayout:
    return OfficialLayout(
        method="deeplpf",
        parts=(Part("", "torch", same_name_rules(OFFICIAL_NAMES),
                    release_path="pretrained_models/adobe_dpe/deeplpf_validpsnr_23.378_validloss_0.033_testpsnr_"
                                 "23.904_testloss_0.031_epoch_424_model.pt",
                    locate=("_model.pt",),
                    containers=("model_state_dict", "state_dict", "model", "net")),),
        description="DeepLPFNet state dict (backbonenet.unet.*, backbonenet.final_conv, deeplpfnet.{cubic,"
                    "graduated,elliptical}_filter.*), names as ours",
        test_pipeline="main.py inference (metric.Evaluator.evaluate): image / 255, whole image, batch 1, eval; "
                      "output clipped to [0,1]; saved as (x*255).astype('uint8') (truncation)",
        official_quantize="truncate",
    )
