"""The released White-Box / Exposure checkpoint (``example/pretrained/model.ckpt-20000``, FiveK expert C) in ours.

**File.** A TF1 checkpoint ``model.ckpt-20000`` (``.index`` + one data shard of 102,741,192 bytes) in
``yuanming-hu/exposure_models`` (the ``models`` submodule of ``yuanming-hu/exposure``; commit ``4fc3a9e`` "Added a
pretrained model file (FiveK expert C)"), written by ``GAN.saver = tf.train.Saver(max_to_keep=1)`` of ``net.py``
(every global variable). Graph: ``net.py`` ``GAN.__init__`` builds the agent under ``tf.variable_scope('generator')``
(``agent.py`` ``agent_generator``), the WGAN critic (``critics.py`` ``critic``, its own scope ``critic``) and the
value network (``cfg.value`` = the same ``critic`` function under ``tf.variable_scope('rl_value')``).

**Tensors (240).** 76 weights, 8,561,762 values (our ``WhiteBoxNets``: agent 6,123,680, critic 1,216,225,
value 1,221,857), all mapped:

* ``generator/Conv``, ``Conv_1``, ``Conv_2``, ``Conv_3`` (``feature_extractor``: 4x4 stride-2 ``ly.conv2d``, 14 ->
  32 -> 64 -> 128 -> 256; the shared trunk, built before the filter scopes) -> ``agent.trunk.convs.0..3``;
* ``generator/filter_{j}/fc1`` (4096 -> 128) and ``fc2`` (128 -> n_j + 6: 7, 7, 9, 7, 14, 7, 7, 30 for exposure,
  gamma, white balance, saturation, tone, contrast, WNB, colour; ``Filter.extract_parameters``) ->
  ``agent.heads_fc1.j``, ``agent.heads_fc2.j`` (the filter order of ``config_example.py`` is ours);
* ``generator/action_selection/Conv..Conv_3`` -> ``agent.selector_trunk.convs.0..3``;
  ``generator/action_selection/selector_fc1`` (4096 -> 128), ``selector_fc2`` (128 -> 8) -> ``agent.selector_fc1/2``;
* ``critic/Conv..Conv_3`` (6 -> 32 -> ... -> 256: image + 3 statistics), ``critic/fully_connected`` (4096 -> 128),
  ``critic/fully_connected_1`` (128 -> 1) -> ``critic.trunk.convs.0..3``, ``critic.fc1``, ``critic.fc2``;
* ``rl_value/critic/...`` (17 input channels: image + 11 state values + 3 statistics) -> ``value.*``.

The critic is mapped too, not ignored: our ``WhiteBoxNets`` holds it (every tensor of ours must be filled), and
the file holds the trained one. Inference does not use it; it only matters to continue training.

Conversions: conv kernels HWIO -> OIHW; each first dense layer after ``tf.reshape(net, [-1, 4096])`` of the
**NHWC** 4x4x256 map -> ``flatten_dense(4, 4, 256)`` (ours flattens NCHW); the other dense layers
(in, out) -> (out, in). Input channels keep their order: RGB image first (``eval`` reads
``cv2.imread(fn)[:, :, ::-1]``), then the broadcast scalars in the official concatenation order
(``enrich_image_input``: states; ``critic``: ``[states, luminance, contrast, saturation]``). 'SAME' padding of a
4x4 stride-2 conv on even sizes pads 1 pixel each side, our ``padding=1``. **No batch norm** anywhere in this graph
(``critics.py`` passes ``normalizer_fn=None``, ``agent.py`` none), so there are no moving averages or epsilons to
match.

Ignored (164): ``OptimizeLoss*/...`` (the three ``ly.optimize_loss`` Adam optimisers of value, actor and critic:
their ``Adam``/``Adam_1`` slots and ``beta1_power``/``beta2_power``), ``Variable``, ``Variable_1``, ``Variable_2``
(the int32 step counters ``counter_v``, ``counter_g``, ``counter_c``), and ``mul_8/ExponentialMovingAverage``
(``/biased``, ``/local_step``): the moving average of the critic's mean logit, used only to centre the score drawn
in the debug images (``centered_fake_logit``).

**Official test pipeline** (``evaluate.py`` -> ``net.py`` ``GAN.eval``): an 8-bit sRGB file is read
``cv2.imread(fn)[:, :, ::-1] / 255``, linearised ``x ** 2.2`` and divided by ``2 * max`` ("Mimic RAW exposure"; our
``input_gamma = 2.2``); the preview is ``cv2.resize(get_image_center(img), (64, 64))`` (bilinear); ``test_steps``
(5) agent steps with ``is_train = 0`` (argmax filter choice), ``tf.nn.dropout`` (keep 0.5) still active (our
``test_dropout = true``), each step's filter replayed on the full-resolution image; ``cv2.imwrite(..., img * 255.0)``
of the float image, which OpenCV converts to 8 bits with ``saturate_cast`` (rounding, values clipped). Our defaults
are that pipeline, so ``test_overrides`` is empty.
"""

from __future__ import annotations

from bench.official.layout import CONV, COPY, DENSE, OfficialLayout, Part, Rule, flatten_dense

__all__ = ["layout", "TRUNK_FLATTEN"]

#: the 4x4x256 map every trunk ends with, flattened NHWC by tf.reshape(net, [-1, 4096])
TRUNK_FLATTEN = (4, 4, 256)
N_FILTERS = 8


def _slim(ours: str, theirs: str, transform=CONV) -> tuple[Rule, Rule]:
    return Rule(f"{ours}.weight", f"{theirs}/weights", transform), Rule(f"{ours}.bias", f"{theirs}/biases", COPY)


def _trunk(ours: str, scope: str) -> list[Rule]:
    names = ["Conv", "Conv_1", "Conv_2", "Conv_3"]
    return [r for i, n in enumerate(names) for r in _slim(f"{ours}.convs.{i}", f"{scope}/{n}")]


def _critic(ours: str, scope: str) -> list[Rule]:
    return (_trunk(f"{ours}.trunk", scope) + list(_slim(f"{ours}.fc1", f"{scope}/fully_connected",
                                                        flatten_dense(*TRUNK_FLATTEN)))
            + list(_slim(f"{ours}.fc2", f"{scope}/fully_connected_1", DENSE)))


def layout() -> OfficialLayout:
    rules = _trunk("agent.trunk", "generator")
    for j in range(N_FILTERS):
        rules += _slim(f"agent.heads_fc1.{j}", f"generator/filter_{j}/fc1", flatten_dense(*TRUNK_FLATTEN))
        rules += _slim(f"agent.heads_fc2.{j}", f"generator/filter_{j}/fc2", DENSE)
    rules += _trunk("agent.selector_trunk", "generator/action_selection")
    rules += _slim("agent.selector_fc1", "generator/action_selection/selector_fc1", flatten_dense(*TRUNK_FLATTEN))
    rules += _slim("agent.selector_fc2", "generator/action_selection/selector_fc2", DENSE)
    rules += _critic("critic", "critic")
    rules += _critic("value", "rl_value/critic")
    part = Part("", "tf", tuple(rules), ignore=(
        (r"^OptimizeLoss(_\d+)?/", "Adam slots and beta powers of the value, actor and critic optimisers"),
        (r"^Variable(_\d+)?$", "int32 step counters of the three optimisers (counter_v, counter_g, counter_c)"),
        (r"/ExponentialMovingAverage(/biased|/local_step)?$",
         "moving average of the critic's mean logit, only used to centre the score in debug images"),
    ), release_path="example/pretrained/model.ckpt-20000 (yuanming-hu/exposure_models, the models submodule of "
                    "yuanming-hu/exposure; FiveK expert C)")
    return OfficialLayout(
        method="white-box",
        parts=(part,),
        description="Exposure TF1 checkpoint: generator/{Conv*, filter_0-7/fc1-2, action_selection/*} -> agent, "
                    "critic/* -> critic, rl_value/critic/* -> value; HWIO->OIHW, the first FC of each head after the "
                    "NHWC 4x4x256 flatten, the others (in,out)->(out,in)",
        test_overrides={},
        test_pipeline="evaluate.py -> net.py GAN.eval: cv2.imread RGB /255, x**2.2 / (2 max); preview = "
                      "cv2.resize(centre square, 64x64) bilinear; 5 steps, argmax filter, tf.nn.dropout(0.5) "
                      "active; filters replayed at full resolution; cv2.imwrite(img*255) (saturate_cast: rounding)",
        official_quantize="round",
    )
