"""The released KinD checkpoints (zhangyhuaee/KinD, ``checkpoint/<net>/model.ckpt``) in our three nets.

Three TF1 checkpoints, each the prefix ``model.ckpt`` in its folder (the folder's ``checkpoint`` file names it),
one per network, as ``evaluate.py`` restores them (one ``tf.train.Saver`` per net, ``var_list`` = the trainable
variables whose name contains the net's scope):

``decom`` -- ``checkpoint/decom_net_train/`` (shard 943,504 bytes): 18 tensors ``DecomNet/*`` of
``DecomNet_simple`` (``model.py`` lines 19-40 at ``04e0cf9``; ``evaluate.py`` builds this one, not the training
scripts' variants), 235,876 parameters, no optimiser slots:

* ``g_conv1_1``, ``g_conv2_1``, ``g_conv3_1``, ``g_conv8_1``, ``g_conv9_1`` (3x3 slim convs + lrelu) ->
  ``decom.conv1/2/3/8/9``; ``g_conv10`` (1x1 32->3, sigmoid: R) -> ``decom.conv10``; ``l_conv1_2`` (3x3 32->32 on
  conv1) -> ``decom.l_conv2``; ``l_conv1_4`` (1x1 on ``concat([l_conv2, conv9])``, sigmoid: I) -> ``decom.l_conv4``;
* ``g_up_1``, ``g_up_2``: the ``weights`` of ``upsample_and_concat`` (``model.py`` lines 8-17: a bias-free
  ``conv2d_transpose`` of filter [2, 2, out, in], then ``concat([deconv, skip])``) -> ``decom.up1/up2.deconv``.

``illumination`` -- ``checkpoint/illumination_adjust_net_train/`` (shard 77,572 bytes): 8 tensors
``Illumination_adjust_net/en_conv_{1..4}`` of ``Illumination_adjust_net`` (lines 87-96: input
``concat([input_i, input_ratio])``, four 3x3 convs, lrelu after each, the last included, then sigmoid), 19,393
parameters -> ``adjust.convs.0..3``.

``restoration`` -- ``checkpoint/Restoration_net_train/``: 42 tensors ``Restoration_net/*`` of ``Restoration_net``
(lines 42-85), 7,760,739 parameters: ``de_conv{k}_{1,2}`` for k = 1..5 -> ``restore.enc.{k-1}.{0,1}``;
``up_6..up_9`` (``upsample_and_concat``) -> ``restore.up.0..3.deconv``; ``de_conv{6..9}_{1,2}`` ->
``restore.dec.0..3.{0,1}``; ``de_conv10`` (3x3 32->3, sigmoid) -> ``restore.out``. Only its index was ever
committed (``ca775be``, deleted the same day); its 31,042,956-byte data shard never was, so a real import stops
there, naming it; a dry run (names and shapes) passes.

No official tensor is ignored: every one of the 68 is mapped. Conversions: slim ``weights`` HWIO -> OIHW
(``CONV``), ``biases`` copied, the transposed-conv filters [h, w, out, in] -> [in, out, h, w] (``DECONV``).

Official test pipeline (``evaluate.py``): ``utils.load_images`` (``utils.py`` lines 60-66: PIL -> float32 / 255 ->
(x - min) / max(max - min, 0.001), min and max over the whole image and all channels) -- our
``normalize_input=true`` (``inference.minmax_normalize``), set in ``test_overrides`` below; DecomNet_simple,
Restoration_net on (R_low, I_low); ``ratio = 5.0``, ``np.ones([h, w]) * ratio`` as the map of
Illumination_adjust_net (``ratio=5.0``); R_restored times min(sqrt(2 * gaussian_3(rgb2gray(R_low))), 1), times
I_adjusted, blended as I_low * S + (1 - I_low) * that (``postprocess=evaluate``); ``utils.save_images``:
``np.clip(x * 255.0, 0, 255.0).astype('uint8')``, truncation.
"""

from __future__ import annotations

from bench.official.layout import CONV, COPY, DECONV, OfficialLayout, Part, Rule

__all__ = ["layout", "decom_part", "illumination_part", "restoration_part"]


def _slim(pairs) -> tuple[Rule, ...]:
    out: list[Rule] = []
    for ours, theirs in pairs:
        out += [Rule(f"{ours}.weight", f"{theirs}/weights", CONV), Rule(f"{ours}.bias", f"{theirs}/biases", COPY)]
    return tuple(out)


def decom_part() -> Part:
    convs = [("decom.conv1", "g_conv1_1"), ("decom.conv2", "g_conv2_1"), ("decom.conv3", "g_conv3_1"),
             ("decom.conv8", "g_conv8_1"), ("decom.conv9", "g_conv9_1"), ("decom.conv10", "g_conv10"),
             ("decom.l_conv2", "l_conv1_2"), ("decom.l_conv4", "l_conv1_4")]
    rules = _slim((o, f"DecomNet/{t}") for o, t in convs)
    rules += (Rule("decom.up1.deconv.weight", "DecomNet/g_up_1/weights", DECONV),
              Rule("decom.up2.deconv.weight", "DecomNet/g_up_2/weights", DECONV))
    return Part("decom", "tf", rules, release_path="checkpoint/decom_net_train/model.ckpt",
                locate=("decom_net_train",))


def illumination_part() -> Part:
    rules = _slim((f"adjust.convs.{k}", f"Illumination_adjust_net/en_conv_{k + 1}") for k in range(4))
    return Part("illumination", "tf", rules, release_path="checkpoint/illumination_adjust_net_train/model.ckpt",
                locate=("illumination_adjust_net_train",))


def restoration_part() -> Part:
    pairs = [(f"restore.enc.{k}.{j}", f"Restoration_net/de_conv{k + 1}_{j + 1}") for k in range(5) for j in range(2)]
    pairs += [(f"restore.dec.{k}.{j}", f"Restoration_net/de_conv{k + 6}_{j + 1}") for k in range(4) for j in range(2)]
    pairs += [("restore.out", "Restoration_net/de_conv10")]
    rules = _slim(pairs) + tuple(Rule(f"restore.up.{k}.deconv.weight", f"Restoration_net/up_{k + 6}/weights", DECONV)
                                 for k in range(4))
    return Part("restoration", "tf", rules, release_path="checkpoint/Restoration_net_train/model.ckpt",
                locate=("Restoration_net_train", "restoration_net_train"))


def layout() -> OfficialLayout:
    return OfficialLayout(
        method="kind",
        parts=(decom_part(), illumination_part(), restoration_part()),
        description="TF1/slim checkpoints checkpoint/{decom_net_train, illumination_adjust_net_train, "
                    "Restoration_net_train}/model.ckpt (DecomNet_simple, Illumination_adjust_net, Restoration_net); "
                    "weights HWIO->OIHW, upsample_and_concat filters HWOI->IOHW",
        test_overrides={"normalize_input": "true", "ratio": "5.0", "postprocess": "evaluate"},
        test_pipeline="evaluate.py: utils.load_images (utils.py:60-66, PIL float32/255, then (x-min)/max(max-min, "
                      "0.001) over the whole image), DecomNet_simple, Restoration_net, ratio = 5.0 constant map -> "
                      "Illumination_adjust_net, R_restored*min(sqrt(2*gaussian_3(rgb2gray(R_low))),1)*I_adjusted, "
                      "fused I_low*S + (1-I_low)*that, utils.save_images (np.clip(x*255,0,255).astype('uint8'): "
                      "truncation)",
        official_quantize="truncate",
    )
