"""The released DRBN stage-1 weights (``DRBL-stage1/src/pretrain/model_s1.pt``) in our DRBN network.

The file (``flyywh/CVPR-2020-Semi-Low-Light`` @ ``9f383de``, git blob ``c095f78f…``) is the state dict of the
official ``model/drbn.py`` ``DRBN`` (what ``main_test.py`` loads with ``my_model.model.load_state_dict``,
strict): 336 float32 tensors, a ``weight`` and a ``bias`` for each of 42 convolutions in each of the four band
units ``recur1`` … ``recur4``:

* ``SFENet1`` (16, 6, 3, 3), ``SFENet2`` (16, 16, 3, 3);
* ``RDBs.0`` … ``RDBs.5``, residual dense blocks of four layers ``convs.{0..3}.conv.0`` and a 1x1 ``LFF``
  (``RDBs.2``/``RDBs.3`` at 32 channels with growth 16, the others at 16 with growth 8);
* ``UPNet.{0,1}``, ``UPNet2.{0,1}``, ``UPNet4.{0,1}`` (two 3x3 convs each);
* ``Down1`` (16, 16, 3, 3), ``Down2`` (32, 16, 3, 3) (stride 2) and the transposed ``Up1`` (16, 16, 4, 4),
  ``Up2`` (32, 16, 4, 4).

Our ``model.DRBNNet`` keeps the official module names, so every rule copies the tensor under its own name.
The names are written out here from the official structure (:data:`OFFICIAL_NAMES`), not taken from our
network. A ``module.`` (DataParallel) or ``model.`` (the EDSR ``Model`` wrapper) prefix is stripped.

Official test pipeline (``main_test.py`` with ``test.sh``'s flags; ``trainer.Trainer.test``): ``SRData``
reads each image with ``imageio.imread`` (whole image, no crop, ``common.np2Tensor`` to 0..255 float),
``lr / 255.0``, ``Model.forward(lr, 3)`` (no chop, no self-ensemble) gives ``(phr1, phr2, phr4)``; the
full-resolution band ``phr1`` is the output, written by ``utility.quantize(phr1 * 255, 255)`` (clamp to
[0, 255], ``torch.round``: half to even) and ``checkpoint.save_results``. The official test has no padding
(LOL's 600x400 is a multiple of 4; other sizes fail in the network); our adapter feeds the same ``x / 255``,
takes ``phr1`` and, for sizes that are not multiples of 4, reflect-pads bottom/right and crops back (the
harness's convention, not the official code). ``shared/weights/SOURCES.md`` §3 records the reference run.
"""

from __future__ import annotations

from bench.official.layout import OfficialLayout, Part, same_name_rules

__all__ = ["layout", "OFFICIAL_NAMES"]


def _band_unit_modules() -> list[str]:
    mods = ["SFENet1", "SFENet2"]
    for r in range(6):
        mods += [f"RDBs.{r}.convs.{c}.conv.0" for c in range(4)] + [f"RDBs.{r}.LFF"]
    mods += [f"{up}.{i}" for up in ("UPNet", "UPNet2", "UPNet4") for i in (0, 1)]
    mods += ["Down1", "Down2", "Up1", "Up2"]
    return mods


#: the 336 tensor names of the official DRBN state dict (model/drbn.py, four band units), written out
OFFICIAL_NAMES = tuple(f"recur{u}.{m}.{p}" for u in range(1, 5) for m in _band_unit_modules()
                       for p in ("weight", "bias"))


def layout() -> OfficialLayout:
    return OfficialLayout(
        method="drbn",
        parts=(Part("", "torch", same_name_rules(OFFICIAL_NAMES),
                    release_path="DRBL-stage1/src/pretrain/model_s1.pt", locate=("model_s1.pt",),
                    strip_prefixes=("module.", "model.")),),
        description="DRBN stage-1 state dict, 336 tensors (recur1..recur4: SFENet1/2, RDBs.0-5, UPNet/UPNet2/"
                    "UPNet4, Down1/2, Up1/2), names as ours",
        test_pipeline="DRBL-stage1/src trainer.Trainer.test (main_test.py, test.sh): imageio.imread, whole image, "
                      "lr/255, Model.forward(lr, 3) -> phr1 (full-resolution band), utility.quantize(phr1*255): "
                      "clamp [0,255], torch.round (half to even); no padding (sizes must be multiples of 4)",
        official_quantize="round",
    )
