"""DPE's generator as the official TF code saves it, in our ``DPEGenerator`` (no released checkpoint known).

**Release.** ``nothinglo/Deep-Photo-Enhancer`` holds only the README and images. The README ("Update Dec. 18,
2018") links the experimental code + data zip and the supervised code zip on the project server; it names no
pretrained model, and the zips' contents could not be inspected here. A third-party mirror
(``mtics/deep-photo-enhancer``) carries ``model/90.000.ckpt.index`` and ``model/90.000-new.ckpt.index`` of its
demo generator (``DATA.py``: experiment 736, "Unsupervised on HDR dataset (627)", not the paired model; the
``-new`` file renamed by its ``rename_model.py`` to the scope ``netG-736``); its binary index could not be read
here. So this layout is written from the graph code only and tested on a synthetic index.

**Names, from the official graph code** (the supervised training script of the supervised zip, as stored copies of
its files show it, and the same ``CONVNET.py``/``MODEL.py`` as the mirror):

* the script builds ``model(netG, ...)`` under ``tf.variable_scope(netG.variable_scope_name)`` and, inside it,
  ``tf.variable_scope(netG.variable_scope_name + 'A')``, with ``netG = NetInfo('netG')`` and
  ``variable_scope_name = name + '_var_scope'`` (``DATA.py``); ``conv_net_block`` opens
  ``tf.variable_scope(conv_net['net_name'])`` = ``netG_1``, ``netG_2``, ``netG_3`` (``MODEL.py``);
* ``exe_conv_layer`` creates ``conv_%d_w`` (``[k, k, in, out]``) and ``conv_%d_b`` with ``%d`` = the layer's
  index in its block's flattened layer list; ``exe_bn_layer`` creates ``bn_%d_%d_offset``, ``_scale``,
  ``_mv_mean``, ``_mv_var`` (index, then ``act_o`` index: ``netG_act_o = dict(size=1, index=0)``, so ``_0``)
  (``CONVNET.py`` ``PARAMETERS_NAME``);
* ``saver = tf.train.Saver(var_list=netG.weights)``: exactly those tensors (no optimiser slots, no step), keyed
  by op name, e.g. ``netG_var_scope/netG_var_scopeA/netG_1/conv_0_w``.

Layer indices (``DATA.py`` ``NetInfo('netG')``; each ``act`` is ``[selu, bn]``): ``netG_1``: conv 0, 3, 6, 9, 12
(3x3 16; 5x5/2 32, 64, 128, 128) with bn 2, 5, 8, 11, 14; ``netG_2``: conv 0, 3 (5x5/2 128) with bn 2, 5, conv 6
(8x8 VALID), conv 8 (1x1); ``netG_3``: conv 0 (3x3 local), [1: global concat], conv 2 (1x1 fuse, 256 in), bn 4,
conv 5, [6 resize, 7 concat], bn 9, conv 10, bn 14, conv 15, bn 19, conv 20, bn 24 (decoder 128, 128, 64, 32 with
the concatenated skips: 256, 192, 96, 48 BN channels), conv 25 (16), bn 27, conv 28 (3, output), [29 residual].
That is 17 convs (34 tensors) and 13 batch norms (52 tensors): 86 tensors, 3,335,395 trainable values
plus 2,720 moving-average values.

**Mapping.** ``conv_*_w`` HWIO -> OIHW, ``conv_*_b`` copied; ``bn_*_0_offset`` -> ``.bias``, ``_scale`` ->
``.weight``, ``_mv_mean`` -> ``.running_mean``, ``_mv_var`` -> ``.running_var`` (``tf.nn.batch_normalization``
with ``epsilon = 1e-5``, our ``BatchNorm2d(eps=1e-5)``). ``num_batches_tracked`` keeps its value (TF has no such
counter; with a fixed ``momentum`` PyTorch never reads it). **Channel order:** the official code reads and writes
images with OpenCV (BGR) and adds the input back (``res_layer(0, [0, 1, 2])``), so the first conv's input channels
and the last conv's output channels (and bias) are reversed to our RGB.

**Official test pipeline** (supervised script ``do_testing``; the demo's ``TF.py`` ``processImg`` is the same):
``cv2.imread(path, -1)`` of a 512-long-side image (the FiveK data were exported at 512 by Lightroom; ``TF.py``
resizes others with ``cpu_normalize_image``, PIL ``ANTIALIAS``), ``random_pad_to_size(img, 512, None, True,
False)`` (symmetric padding at the bottom/right), ``uint8 / 255``, the generator with the BN moving averages,
the rectangle cropped, ``safe_casting(x * 255, uint8)`` = ``np.clip(x * 255 + 0.5, 0, 255).astype(uint8)``:
**rounding** (half up). Our canvas does the same (``canvas.py``), so ``test_overrides`` is empty.
"""

from __future__ import annotations

import numpy as np

from bench.official.layout import CONV, COPY, OfficialLayout, Part, Rule, Transform, bgr_input

__all__ = ["layout", "official_names", "bgr_output"]

# (our module, block, conv index) and (our BN module, block, bn index), from DATA.py NetInfo('netG')
CONVS = [("enc0", 1, 0), ("enc1", 1, 3), ("enc2", 1, 6), ("enc3", 1, 9), ("enc4", 1, 12),
         ("glob1", 2, 0), ("glob2", 2, 3), ("glob3", 2, 6), ("glob4", 2, 8),
         ("local", 3, 0), ("fuse", 3, 2), ("dec1", 3, 5), ("dec2", 3, 10), ("dec3", 3, 15), ("dec4", 3, 20),
         ("dec5", 3, 25), ("out", 3, 28)]
BNS = [("bn_enc.0", 1, 2), ("bn_enc.1", 1, 5), ("bn_enc.2", 1, 8), ("bn_enc.3", 1, 11), ("bn_enc.4", 1, 14),
       ("bn_glob.0", 2, 2), ("bn_glob.1", 2, 5),
       ("bn_fuse", 3, 4), ("bn_dec.0", 3, 9), ("bn_dec.1", 3, 14), ("bn_dec.2", 3, 19), ("bn_dec.3", 3, 24),
       ("bn_dec5", 3, 27)]
BN_FIELDS = (("bias", "offset"), ("weight", "scale"), ("running_mean", "mv_mean"), ("running_var", "mv_var"))


def bgr_output(base: Transform = CONV) -> Transform:
    """``base``, then reverse the output-channel axis (axis 0): the official last layer writes BGR, ours RGB."""
    def apply(a: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(base.apply(a)[::-1])

    return Transform(f"{base.name}, BGR->RGB outputs", apply, base.shape)


def _scope(name: str, block: int) -> str:
    return f"{name}_var_scope/{name}_var_scopeA/{name}_{block}"


def official_names(name: str = "netG") -> list[str]:
    """Every tensor name the official ``Saver(var_list=netG.weights)`` writes (as the rules below use them)."""
    return [r.source for r in _rules(name)]


def _rules(name: str) -> list[Rule]:
    rules: list[Rule] = []
    for ours, block, i in CONVS:
        w = CONV
        if ours == "enc0":
            w = bgr_input(CONV)
        elif ours == "out":
            w = bgr_output(CONV)
        rules.append(Rule(f"{ours}.weight", f"{_scope(name, block)}/conv_{i}_w", w))
        rules.append(Rule(f"{ours}.bias", f"{_scope(name, block)}/conv_{i}_b",
                          bgr_output(COPY) if ours == "out" else COPY))
    for ours, block, i in BNS:
        rules += [Rule(f"{ours}.{field}", f"{_scope(name, block)}/bn_{i}_0_{tf}", COPY) for field, tf in BN_FIELDS]
    return rules


def layout(name: str = "netG") -> OfficialLayout:
    """``name``: the ``NetInfo`` name the checkpoint was saved under (``netG`` in the official training scripts;
    ``netG-736`` for the mirror's renamed demo file)."""
    part = Part("", "tf", tuple(_rules(name)), release_path="<result folder>/model/<epoch>.ckpt of the official "
                "supervised training script (save_model); no released file known")
    return OfficialLayout(
        method="dpe",
        parts=(part,),
        keep=((r"\.num_batches_tracked$", "PyTorch's BN update counter; TF keeps none, and with a fixed momentum "
                                          "it is never read"),),
        description=f"DPE netG TF checkpoint ({name}_var_scope/{name}_var_scopeA/{name}_{{1,2,3}}/conv_<l>_{{w,b}}, "
                    "bn_<l>_0_{offset,scale,mv_mean,mv_var}); HWIO->OIHW, BN offset/scale/moving averages -> "
                    "bias/weight/running_mean/running_var (eps 1e-5 both), first conv inputs and last conv outputs "
                    "BGR->RGB",
        test_overrides={},
        test_pipeline="supervised script do_testing (and the demo TF.py processImg): cv2.imread(-1) BGR at a 512 long "
                      "side, random_pad_to_size(512, symmetric, not random), uint8/255, netG with BN moving averages, "
                      "crop the rectangle, safe_casting: np.clip(x*255+0.5, 0, 255).astype(uint8) (rounding)",
        official_quantize="round",
    )
