"""The released EnlightenGAN generator (``checkpoints/enlightening/200_net_G_A.pth``) in our AttentionUNet.

The README of ``VITA-Group/EnlightenGAN`` links the pretrained model (Google Drive) and has it put into
``./checkpoints/enlightening``; ``scripts/script.py --predict`` runs ``predict.py --which_epoch 200``, whose
``SingleModel`` loads ``200_net_G_A.pth`` (the pix2pix ``load_network`` naming ``<epoch>_net_<label>.pth``).
It is ``netG_A.state_dict()`` of ``models/networks.py`` ``Unet_resize_conv`` built with ``--self_attention
--use_norm 1 --skip 1 --times_residual`` (``syn_norm`` off: ``nn.BatchNorm2d``), saved through
``torch.nn.DataParallel`` (``define_G`` wraps the net when ``gpu_ids`` are given), so its keys usually carry a
``module.`` prefix, which is stripped. Tensors (:data:`OFFICIAL_NAMES`; 8,636,675 parameters):

* ``conv{1..5}_{1,2}`` and ``conv{6..9}_{1,2}`` (3x3), ``deconv5`` … ``deconv8`` (3x3, after the bilinear x2),
  ``conv10`` (1x1, 32 → 3): ``weight`` and ``bias`` each; ``conv1_1`` takes 4 channels (image and attention
  map, ``--self_attention``);
* BatchNorm ``bn{1..8}_{1,2}`` and ``bn9_1`` (``conv9_2`` has none): ``weight``, ``bias``, ``running_mean``,
  ``running_var``; a file saved by PyTorch ≥ 0.4.1 also has ``num_batches_tracked`` (ignored: a training
  counter that eval-mode BatchNorm never reads); the release pins ``torch==0.3.1`` (``requirement.txt``),
  whose BatchNorm has no such buffer.

Our ``model.AttentionUNet`` uses the official names, so every rule copies; our own ``num_batches_tracked``
buffers keep their built value (``keep``).

Official test pipeline (``predict.py``; ``scripts/script.py --predict``: ``--dataset_mode unaligned
--resize_or_crop no --self_attention --times_residual --skip 1 --use_norm 1``): ``UnalignedDataset.__getitem__``
(``data/unaligned_dataset.py``) applies ``get_transform`` (``ToTensor`` then ``Normalize((0.5,)*3, (0.5,)*3)``,
i.e. ``x/255*2 - 1``; ``data/base_dataset.py`` is not in the stored copy of the repository, the form is the one
its forks keep) and, for ``resize_or_crop == 'no'``, the attention map ``A_gray = 1 - (0.299 (r+1) + 0.587
(g+1) + 0.114 (b+1)) / 2`` of the [-1, 1] image; ``SingleModel`` puts ``netG_A`` in eval mode (not training);
``predict()`` runs ``netG_A.forward(real_A, real_A_gray)`` (centred reflection padding to a multiple of 16 and
back inside ``Unet_resize_conv.forward``) and writes ``util.tensor2im(fake_B)``: ``(x + 1) / 2 * 255``, clipped
to [0, 255], ``astype(uint8)``, i.e. truncation. Our adapter's ``forward_enhance`` feeds ``x*2 - 1`` and
``attention_map(x, "luminance")`` (= 1 - luminance of the [0, 1] image, the same map), and maps the output back
with ``(out + 1) / 2``; the harness clamps. One difference remains in the network, see ``SOURCE.md``
("Official checkpoint"): the release's PyTorch 0.3.1 ``F.upsample(mode='bilinear')`` aligns corners; with
official weights the harness sets ``upsample_align_corners=true`` (``test_overrides``) so ours does too.
"""

from __future__ import annotations

from bench.official.layout import OfficialLayout, Part, same_name_rules

__all__ = ["layout", "OFFICIAL_NAMES"]

_BN = ("weight", "bias", "running_mean", "running_var")


def _official_names() -> list[str]:
    names: list[str] = []
    for lvl in range(1, 10):
        if lvl >= 6:
            names += [f"deconv{lvl - 1}.weight", f"deconv{lvl - 1}.bias"]
        for j in (1, 2):
            names += [f"conv{lvl}_{j}.weight", f"conv{lvl}_{j}.bias"]
            if not (lvl == 9 and j == 2):
                names += [f"bn{lvl}_{j}.{p}" for p in _BN]
    return names + ["conv10.weight", "conv10.bias"]


#: the tensor names of the official Unet_resize_conv state dict (PyTorch 0.3.1, no num_batches_tracked)
OFFICIAL_NAMES = tuple(_official_names())


def layout() -> OfficialLayout:
    return OfficialLayout(
        method="enlightengan",
        parts=(Part("", "torch", same_name_rules(OFFICIAL_NAMES),
                    ignore=((r"(^|\.)num_batches_tracked$",
                             "BatchNorm batch counter of PyTorch >= 0.4.1 saves; eval-mode BatchNorm never reads "
                             "it (the release's PyTorch 0.3.1 has none)"),),
                    release_path="checkpoints/enlightening/200_net_G_A.pth", locate=("200_net_G_A.pth",)),),
        keep=((r"\.num_batches_tracked$", "our BatchNorm batch counters: not in the official file (PyTorch "
                                          "0.3.1), unused in eval mode"),),
        description="Unet_resize_conv (sid_unet_resize, self_attention, use_norm 1, skip 1, times_residual) "
                    "generator state dict netG_A, names as ours (module. prefix stripped)",
        test_pipeline="predict.py (scripts/script.py --predict, --resize_or_crop no): ToTensor+Normalize(0.5,0.5) "
                      "to [-1,1], attention map 1-luminance (data/unaligned_dataset.py), netG_A in eval, "
                      "forward(real_A, A_gray) with reflection padding to a multiple of 16; util.tensor2im: "
                      "(x+1)/2*255, clip [0,255], astype(uint8) (truncation)",
        official_quantize="truncate",
        # the release pins torch 0.3.1, whose bilinear F.upsample aligned corners (PyTorch 0.4 added the flag)
        test_overrides={"upsample_align_corners": "true"},
    )
