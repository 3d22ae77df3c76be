"""The released RetinexNet checkpoints (weichen582/RetinexNet, ``model/Decom`` and ``model/Relight``) in our nets.

Two TF1 checkpoints, both with the prefix ``RetinexNet-tensorflow`` (each folder's ``checkpoint`` file names it):

``decom`` -- ``model/Decom/RetinexNet-tensorflow`` (index + one 4,026,440-byte shard), 74 tensors:

* the released DecomNet, 14 tensors ``DecomNet/{shallow_feature_extraction, activated_layer_0..4,
  recon_layer}/{kernel, bias}`` (207,748 parameters). The official ``DecomNet`` (``model.py`` lines 16-28 at
  ``fce786f``) builds them with ``tf.layers.conv2d`` in that order: 9x9 4->64 (no activation), five 3x3 64->64
  + ReLU, 3x3 64->4; its input is ``concat([reduce_max(input_im, axis=3), input_im])``, the max channel
  *first*, which is what our ``DecomNet.forward`` concatenates. Mapped to ``decom.shallow``,
  ``decom.activated.0..4``, ``decom.recon``.
* ignored, each class with its reason (``ignore`` below): the Adam slots ``.../AdamOptimizer`` and
  ``.../AdamOptimizer_1`` of those 14 (the optimiser is named ``AdamOptimizer`` in ``model.py``), ``beta1_power``
  / ``beta2_power``, and 30 stale variables of an older graph that the released ``model.py`` no longer builds:
  ``DenoiseNet/*`` (14) and an older ``RelightNet/*`` (16: ``shallow_feature_extraction`` 9x9x1x64,
  ``conv2d..conv2d_4`` 64->64, ``global_fusion_1``, ``recon_layer_3``). Those 30 were never trained: every bias
  is exactly zero, every kernel lies within its Glorot-uniform bound, and none has Adam slots. The official
  ``test()`` restores this file with ``saver_Decom`` (``var_list`` = the variables whose name contains
  ``DecomNet``), so it never reads them either.

``relight`` -- ``model/Relight/RetinexNet-tensorflow``, 104 tensors (the index was released; its 4,433,456-byte
data shard is absent from the stored repository snapshot, so a real import stops there, naming it):

* the released RelightNet, 18 tensors ``RelightNet/conv2d{,_1..._8}/{kernel, bias}`` (236,865 parameters). The
  official ``RelightNet`` (``model.py`` lines 30-50) calls ``tf.layers.conv2d`` without names inside
  ``variable_scope('RelightNet')``, so the layers take the default names ``conv2d``, ``conv2d_1``, ... in the
  order the graph code creates them: ``conv0`` (3x3 4->64 on ``concat([input_R, input_L])``, R first, as ours)
  = ``conv2d``; the three stride-2 convs ``conv1..conv3`` = ``conv2d_1..conv2d_3`` (our ``relight.down.0..2``);
  the decoder convs of ``deconv1`` (+conv2), ``deconv2`` (+conv1), ``deconv3`` (+conv0) = ``conv2d_4..conv2d_6``
  (our ``relight.up.0..2``, applied in the same order); ``feature_fusion`` (1x1 192->64 on
  ``concat([deconv1_resize, deconv2_resize, deconv3])``) = ``conv2d_7`` (``relight.fusion``); ``output`` (3x3
  64->1) = ``conv2d_8`` (``relight.output``). The shapes confirm the ends (``conv2d`` is 3x3x4x64, ``conv2d_7``
  1x1x192x64, ``conv2d_8`` 3x3x64x1); the seven 64->64 convs in between share one shape, so their order rests on
  the graph code alone.
* ignored: the Adam slots and ``beta1_power``/``beta2_power``; a copy of the DecomNet (14 tensors, no slots)
  whose masked CRC32Cs all equal those of the ``decom`` file's DecomNet (the same values; ``test()`` restores
  this file with ``saver_Relight``, the ``RelightNet`` variables only, and takes DecomNet from ``model/Decom``);
  and the stale ``DenoiseNet/*`` (34 tensors incl. ``batch_layer_*`` batch-norm variables; its biases have the
  CRCs of the ``decom`` file's all-zero biases).

Conversions: ``kernel`` HWIO -> OIHW (``CONV``), ``bias`` copied. TF's "SAME" padding of the stride-2 convs is our
``tf_same_pad`` (no tensor involved).

Official test pipeline (``main.py --phase test``; ``model.py`` ``lowlight_enhance.test``): ``utils.load_images``
(``utils.py`` lines 33-35) = ``np.array(PIL.Image.open(f), dtype="float32") / 255.0``, whole image, no padding;
``sess.run([output_R_low, output_I_low, output_I_delta, output_S])`` with S = R_low * concat([I_delta]*3); every
output written by ``utils.save_images`` (lines 37-47): ``np.clip(x * 255.0, 0, 255.0).astype('uint8')``,
i.e. truncation. Our adapter's default test path is the same (``denoise=none``: the released code has no BM3D).
"""

from __future__ import annotations

from bench.official.layout import CONV, COPY, OfficialLayout, Part, Rule

__all__ = ["layout", "decom_part", "relight_part", "RELIGHT_NAMES"]

ADAM = (r"/AdamOptimizer(_1)?$", "Adam slots (m, v) of the official training's tf.train.AdamOptimizer "
        "(named 'AdamOptimizer' in model.py); not weights")
BETA = (r"^beta[12]_power$", "Adam's bias-correction accumulators; not weights")

#: our RelightNet module -> the default tf.layers name the official graph code gives it (creation order)
RELIGHT_NAMES = (
    ("relight.conv0", "conv2d"),
    ("relight.down.0", "conv2d_1"), ("relight.down.1", "conv2d_2"), ("relight.down.2", "conv2d_3"),
    ("relight.up.0", "conv2d_4"), ("relight.up.1", "conv2d_5"), ("relight.up.2", "conv2d_6"),
    ("relight.fusion", "conv2d_7"),
    ("relight.output", "conv2d_8"),
)


def _conv_rules(pairs: tuple[tuple[str, str], ...]) -> tuple[Rule, ...]:
    out: list[Rule] = []
    for ours, theirs in pairs:
        out += [Rule(f"{ours}.weight", f"{theirs}/kernel", CONV), Rule(f"{ours}.bias", f"{theirs}/bias", COPY)]
    return tuple(out)


def decom_part() -> Part:
    pairs = (("decom.shallow", "DecomNet/shallow_feature_extraction"),
             *((f"decom.activated.{k}", f"DecomNet/activated_layer_{k}") for k in range(5)),
             ("decom.recon", "DecomNet/recon_layer"))
    return Part(
        "decom", "tf", _conv_rules(pairs),
        ignore=(ADAM, BETA,
                (r"^DenoiseNet/", "stale: an untrained DenoiseNet of an older graph (zero biases, no Adam slots); "
                                  "the released model.py does not build it and test() does not restore it"),
                (r"^RelightNet/", "stale: an untrained RelightNet of an older graph (9x9x1 shallow layer, "
                                  "global_fusion_1, recon_layer_3; zero biases, no Adam slots); test() takes "
                                  "RelightNet from model/Relight")),
        release_path="model/Decom/RetinexNet-tensorflow", locate=("Decom",))


def relight_part() -> Part:
    return Part(
        "relight", "tf", _conv_rules(tuple((o, f"RelightNet/{t}") for o, t in RELIGHT_NAMES)),
        ignore=(ADAM, BETA,
                (r"^DecomNet/", "a copy of the DecomNet whose CRC32Cs equal the model/Decom file's (same values); "
                                "test() restores only RelightNet from this file and DecomNet from model/Decom"),
                (r"^DenoiseNet/", "stale: a DenoiseNet of an older graph (with batch_layer_* batch norms), not "
                                  "built by the released model.py, not restored by test()")),
        release_path="model/Relight/RetinexNet-tensorflow", locate=("Relight",))


def layout() -> OfficialLayout:
    return OfficialLayout(
        method="retinexnet",
        parts=(decom_part(), relight_part()),
        description="TF1 checkpoints model/Decom (DecomNet: shallow_feature_extraction, activated_layer_0..4, "
                    "recon_layer) and model/Relight (RelightNet: tf.layers default names conv2d..conv2d_8 in "
                    "graph order = conv0, down 0-2, up 0-2, fusion, output); kernels HWIO->OIHW",
        test_overrides={"denoise": "none"},
        test_pipeline="main.py --phase test -> model.py lowlight_enhance.test: utils.load_images (utils.py:33-35, "
                      "PIL float32 / 255, whole image), S = R_low * I_delta, utils.save_images (utils.py:37-47, "
                      "np.clip(x*255, 0, 255).astype('uint8'): truncation)",
        official_quantize="truncate",
    )
