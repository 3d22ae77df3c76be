"""The released DeepUPE checkpoint (``dvlab-research/DeepUPE``, ``checkpoints/model.ckpt``) in our network.

**File.** A TF1 checkpoint ``checkpoints/model.ckpt`` (``.index`` + one data shard of 11,985,816 bytes; the
repository history has two versions, the fixture is the one introduced by ``508953b`` "fix psnr" and still at
master HEAD ``e0f2529``; ``main/`` is byte-identical in both). Restored by ``main/run.py`` with
``tf.train.Saver()`` into ``HDRNetCurves.inference`` of ``main/models.py`` under ``tf.variable_scope('inference')``:
HDRNet's graph with **12 global convs** (``global/conv1..conv12``, stride 2 at conv1 and conv7) and **6 local
convs** (``local/conv1`` with bias, ``conv2..conv6`` bias-free and linear).

**Tensors (164).** 53 weights, 998,816 values (our network's count), mapped as HDRNet's
(:func:`baselines.hdrnet.official.curves_layout`): ``inference/coefficients/splat/conv{1..4}`` ->
``coefficients.splat.{0..3}.conv``; ``global/conv{1..12}`` -> ``coefficients.global_convs.{0..11}.conv``;
``global/fc1`` (1024 -> 256, after the NHWC 4x4x64 flatten) -> ``global_fc.0`` via ``flatten_dense(4, 4, 64)``,
``fc2``, ``fc3`` -> ``global_fc.1/2``; ``local/conv1`` (weights, biases), ``local/conv{2..6}`` (weights) ->
``coefficients.local.{0..5}.conv``; ``prediction/conv1`` -> ``coefficients.prediction.conv``; ``inference/guide/*``
-> ``guide.*`` (``shifts``/``slopes``/``channel_mixing/weights`` reshaped to ours). Conv kernels HWIO -> OIHW,
dense (in, out) -> (out, in).

Ignored (111): Adam moments ``*/Adam``, ``*/Adam_1`` (106), ``optimizer/beta{1,2}_power``, ``global_step``,
``train/add_5/ExponentialMovingAverage`` and ``train/psnr_op/Mean_1/ExponentialMovingAverage`` (smoothed training
loss and PSNR for the summaries). The repository releases no training code; these are the leftovers of the
authors' ``train.py``.

**Configuration.** The shapes give spatial bin 16, 8 luma bins, channel multiplier 1, 256 low-res input, no BN
(no ``BatchNorm`` variables): our default (the README's ``model_params`` are not in the repository; the index
settles them).

**Official test pipeline** (``main/run.py``, function ``main``): ``cv2.imread(path, -1)``, BGR -> RGB,
``skimage.img_as_float``; low-res ``skimage.transform.resize(im, [256, 256], order=0)`` (pixel-centre nearest:
``lowres_resize=nearest-exact`` in ``test_overrides``, as for HDRNet); the network output S is cast
``tf.cast(255 * clip(S, 0, 1), uint8)`` (truncation; our ``quantize_illumination=true``, the default), then
``S/255``, ``np.clip(S, I, 1)``, ``F = I / S``; ``skimage.io.imsave(F)`` of the float image: skimage's
float -> uint8 conversion multiplies by 255 and rounds (``np.rint`` in ``skimage/util/dtype.py``, in every version
read; the pinned 0.9.3's plugin path was not checked), so ``official_quantize = "round"``.
"""

from __future__ import annotations

from bench.official.layout import OfficialLayout

from ..hdrnet.official import curves_layout
from .model import DEEPUPE_GLOBAL_STRIDES, DEEPUPE_N_LOCAL

__all__ = ["layout"]


def layout() -> OfficialLayout:
    return curves_layout(
        "deepupe", global_strides=DEEPUPE_GLOBAL_STRIDES, n_local=DEEPUPE_N_LOCAL,
        release_path="checkpoints/model.ckpt (dvlab-research/DeepUPE, blob of 508953b, at master HEAD e0f2529)",
        description="DeepUPE HDRNetCurves TF1 checkpoint: inference/coefficients/{splat/conv1-4, global/conv1-12, "
                    "global/fc1-3, local/conv1-6, prediction/conv1}, inference/guide/*; HWIO->OIHW, fc1 after the "
                    "NHWC 4x4x64 flatten, fc2/fc3 (in,out)->(out,in)",
        test_pipeline="main/run.py main(): cv2.imread(-1), BGR->RGB, skimage.img_as_float; low-res = "
                      "skimage.transform.resize(order=0) to 256x256 (lowres_resize=nearest-exact); S = "
                      "uint8(255*clip(net,0,1))/255, S = clip(S, I, 1), F = I/S; skimage.io.imsave(F) (x255, "
                      "np.rint: rounding)",
        official_quantize="round",
    )
