"""The released HDRNet checkpoint (Google's HDR+ model, ``pretrained_models/hdrp/``) in our ``HDRNetModel``.

**File.** A TF1 checkpoint ``upgraded_from_sig2017.ckpt-0`` (one ``.index`` + one data shard of 5,784,984 bytes),
written by ``google/hdrnet``'s ``train.py`` (``tf.train.Saver()`` of every global variable) for the graph
``HDRNetCurves.inference`` built under ``tf.variable_scope('inference')`` (``hdrnet/bin/run.py``, ``hdrnet/models.py``).
It is Google's *HDR+* model (``pretrained_models.zip``), not a FiveK expert model; the copy examined here is the
one in the fork ``godpgf/hdrnet`` (``pretrained_models/hdrp/``), whose index alone is in the fixtures.

**Tensors (92).** 29 weights, 482,080 values (the count of our default network):

* ``inference/coefficients/splat/conv{1..4}/{weights,biases}`` (3x3 stride 2, 3 -> 8 -> 16 -> 32 -> 64;
  ``layers.conv`` = ``tf.contrib.layers.convolution2d``, HWIO) -> ``coefficients.splat.{0..3}.conv``;
* ``.../global/conv{1,2}`` (3x3 stride 2, 64) -> ``coefficients.global_convs.{0,1}.conv``;
  ``.../global/fc1`` (1024 -> 256) after ``tf.reshape(x, [bs, lh*lw*lc])`` of the **NHWC** 4x4x64 map ->
  ``coefficients.global_fc.0.fc`` through :func:`~bench.official.layout.flatten_dense` (ours flattens NCHW);
  ``fc2`` (256 -> 128), ``fc3`` (128 -> 64) -> ``global_fc.1``, ``global_fc.2`` (dense (in, out) -> (out, in));
* ``.../local/conv1/{weights,biases}``, ``.../local/conv2/weights`` (``use_bias=False``) -> ``coefficients.local``;
* ``.../prediction/conv1`` (1x1, 64 -> 96) -> ``coefficients.prediction.conv``;
* ``inference/guide/ccm`` (3x3, used as ``matmul(pixels, ccm)``, the orientation of our ``einsum("nihw,ij")``:
  copied), ``ccm_bias`` (3), ``shifts`` (1,1,3,16) -> (3,16), ``slopes`` (1,1,1,3,16) -> (3,16),
  ``channel_mixing/weights`` (1x1 conv 3 -> 1: (1,1,3,1) -> (3,)) and ``/biases`` (1) -> ``guide.*``.

Ignored (63): the Adam moments ``*/Adam``, ``*/Adam_1`` (58), ``optimizer/beta1_power``, ``beta2_power``,
``global_step``, and ``train/l2_loss/Mean/ExponentialMovingAverage``, ``train/psnr_op/Mean_1/ExponentialMovingAverage``
(smoothed training loss and PSNR kept for the summaries; no part of the network).

**Configuration.** The shapes fix the model: 4 splat convs from 3 channels at 8 luma bins and channel
multiplier 1 (8·2^i), so ``luma_bins = 8``, ``channel_multiplier = 1``; a 4x4 map after two stride-2 global convs
and 4 stride-2 splat convs, so ``spatial_bin = 16`` and ``net_input_size = 256``; no ``BatchNorm`` variables, so
``batch_norm = False``; the guide has ``ccm``/``shifts``/``slopes``/``channel_mixing`` with 16 knots, i.e. the
``HDRNetCurves`` guide (not ``HDRNetPointwiseNNGuide``'s ``guide/conv1``). That is exactly our default
configuration (the official ``train.py`` defaults), so no configuration is needed; the layout maps that
configuration only (the importer always builds the default network) and a checkpoint of another configuration is
refused by the shape checks, naming the first tensor that differs.

**Official test pipeline** (``hdrnet/bin/run.py`` at ``e2f1833``, function ``main``): ``cv2.imread(path, -1)``,
``np.flip(im, 2)`` (BGR -> RGB), ``skimage.img_as_float`` (8-bit / 255; the ``--hdrp`` flag changes nothing for
8-bit files); the low-res input ``skimage.transform.resize(im, [256, 256], order=0)``, a pixel-centre nearest
neighbour (source index floor((i + 0.5)·in/out)), which is our ``lowres_resize=nearest-exact`` (our default
``nearest`` is the training pipeline's corner-aligned TF1 resize), set in ``test_overrides``; the requirements pin
scikit-image 0.9.3, which has no anti-aliasing (skimage >= 0.15 would Gaussian-smooth a downsized float image
first, which we do not reproduce); the full-resolution image through the guide and ``bilateral_slice_apply``;
``tf.cast(255.0 * tf.squeeze(tf.clip_by_value(prediction, 0, 1)), tf.uint8)``: **truncation**.

Note: the HDR+ model was trained on HDR+ pipeline data (linear 16-bit inputs); on 8-bit sRGB images it is out of
its domain. :func:`curves_layout` is shared with DeepUPE (the same graph with deeper global and local paths).
"""

from __future__ import annotations

import math
from typing import Sequence

from bench.official.layout import CONV, COPY, DENSE, LayoutError, OfficialLayout, Part, Rule, Transform, flatten_dense

from .model import HDRNET_GLOBAL_STRIDES, HDRNET_N_LOCAL

__all__ = ["layout", "curves_layout", "reshape", "TF_TRAINING_IGNORES", "LOWRES_TEST_OVERRIDE"]

#: run.py's skimage.transform.resize(order=0): the pixel-centre nearest neighbour
LOWRES_TEST_OVERRIDE = {"lowres_resize": "nearest-exact"}

#: what a TF1 train.py checkpoint holds besides the network (HDRNet and DeepUPE)
TF_TRAINING_IGNORES: tuple[tuple[str, str], ...] = (
    (r"/Adam(_1)?$", "Adam first/second moment slots of the training optimiser"),
    (r"^optimizer/beta[12]_power$", "Adam's running beta powers (optimiser state)"),
    (r"^global_step$", "the training step counter"),
    (r"^train/.*/ExponentialMovingAverage$", "smoothed training loss/PSNR kept for the summaries, not a weight"),
)


def reshape(src: tuple[int, ...], dst: tuple[int, ...]) -> Transform:
    """An official tensor of shape ``src`` reshaped to ours, ``dst`` (same values, singleton axes dropped)."""
    if math.prod(src) != math.prod(dst):
        raise LayoutError(f"cannot reshape {src} to {dst}")

    def shape(s: tuple[int, ...]) -> tuple[int, ...]:
        return tuple(dst) if tuple(s) == tuple(src) else tuple(s)   # anything else is reported as a mismatch

    return Transform(f"reshape {src}->{dst}", lambda a: a.reshape(dst), shape)


def curves_layout(method: str, *, global_strides: Sequence[int], n_local: int, release_path: str,
                  description: str, test_pipeline: str, official_quantize: str, n_splat: int = 4,
                  luma_bins: int = 8, channel_multiplier: int = 1, spatial_bin: int = 16,
                  scope: str = "inference") -> OfficialLayout:
    """The layout of an ``HDRNetCurves``-style graph (no batch norm) for our ``HDRNetModel`` of that depth."""
    width = 8 * channel_multiplier * luma_bins
    c = f"{scope}/coefficients"
    rules: list[Rule] = []

    def conv(ours: str, theirs: str, bias: bool = True) -> None:
        rules.append(Rule(f"{ours}.weight", f"{theirs}/weights", CONV))
        if bias:
            rules.append(Rule(f"{ours}.bias", f"{theirs}/biases", COPY))

    for i in range(n_splat):
        conv(f"coefficients.splat.{i}.conv", f"{c}/splat/conv{i + 1}")
    size = spatial_bin
    for i, s in enumerate(global_strides):
        conv(f"coefficients.global_convs.{i}.conv", f"{c}/global/conv{i + 1}")
        size = -(-size // s)
    rules += [Rule("coefficients.global_fc.0.fc.weight", f"{c}/global/fc1/weights", flatten_dense(size, size, width)),
              Rule("coefficients.global_fc.0.fc.bias", f"{c}/global/fc1/biases", COPY)]
    for i in (1, 2):
        rules += [Rule(f"coefficients.global_fc.{i}.fc.weight", f"{c}/global/fc{i + 1}/weights", DENSE),
                  Rule(f"coefficients.global_fc.{i}.fc.bias", f"{c}/global/fc{i + 1}/biases", COPY)]
    for i in range(n_local):
        conv(f"coefficients.local.{i}.conv", f"{c}/local/conv{i + 1}", bias=i == 0)
    conv("coefficients.prediction.conv", f"{c}/prediction/conv1")
    g = f"{scope}/guide"
    rules += [Rule("guide.ccm", f"{g}/ccm", COPY), Rule("guide.ccm_bias", f"{g}/ccm_bias", COPY),
              Rule("guide.shifts", f"{g}/shifts", reshape((1, 1, 3, 16), (3, 16))),
              Rule("guide.slopes", f"{g}/slopes", reshape((1, 1, 1, 3, 16), (3, 16))),
              Rule("guide.mix_weight", f"{g}/channel_mixing/weights", reshape((1, 1, 3, 1), (3,))),
              Rule("guide.mix_bias", f"{g}/channel_mixing/biases", COPY)]
    part = Part("", "tf", tuple(rules), ignore=TF_TRAINING_IGNORES, release_path=release_path)
    return OfficialLayout(method=method, parts=(part,), description=description,
                          test_overrides=dict(LOWRES_TEST_OVERRIDE), test_pipeline=test_pipeline,
                          official_quantize=official_quantize)


def layout() -> OfficialLayout:
    return curves_layout(
        "hdrnet", global_strides=HDRNET_GLOBAL_STRIDES, n_local=HDRNET_N_LOCAL,
        release_path="pretrained_models/hdrp/upgraded_from_sig2017.ckpt-0 (Google's HDR+ model; "
                     "pretrained_models.zip of google/hdrnet, also in the fork godpgf/hdrnet)",
        description="HDRNetCurves TF1 checkpoint (HDR+ model): inference/coefficients/{splat,global,local,"
                    "prediction}/* HWIO->OIHW, fc1 after the NHWC 4x4x64 flatten, fc2/fc3 (in,out)->(out,in), "
                    "inference/guide/{ccm,ccm_bias,shifts,slopes,channel_mixing}; needs the default "
                    "configuration (luma_bins 8, channel_multiplier 1, spatial_bin 16, 256 low-res, no BN)",
        test_pipeline="hdrnet/bin/run.py main(): cv2.imread(-1), BGR->RGB, skimage.img_as_float; low-res = "
                      "skimage.transform.resize(order=0) to 256x256 (pixel-centre nearest: lowres_resize="
                      "nearest-exact); full-res guide + bilateral_slice_apply; tf.cast(255*clip(out,0,1), uint8) "
                      "(truncation)",
        official_quantize="truncate",
    )
