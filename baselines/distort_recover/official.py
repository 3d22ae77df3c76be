"""Distort-and-Recover's Q-network as the official TF code saves it, in our ``DQN`` (no released checkpoint).

**Release.** ``Jongchan/DISTORT-AND-RECOVER-CVPR18`` commits only the text file ``checkpoints/checkpoint``
(``model_checkpoint_path: "pretrained_0.ckpt-2880000"`` and 18 earlier steps, every 160,000); the checkpoint
files themselves were never committed and the README links only the training data (Dropbox), no model. So this
layout is written from the graph code and tested on a synthetic index. The code ran on TensorFlow 0.11 (README),
whose ``tf.train.Saver`` writes the V1 format (one file, no ``.index``) by default; V2 became the default in 0.12.
If such a file turns up, ``bench.official.tfbundle`` (V2 bundles) cannot read it as is: re-save it as V2 with
TensorFlow first (not verified: no file exists to check).

**Names, from the graph code** (``main.py`` ``Agent.init_model``, ``q_network.py``): ``q_network(self.s_t, 'pred',
input_length=feature_length, num_action=action_size, duel=False)`` (``use_batch_norm = False``) creates, in
``tf.variable_scope('pred')``, ``fc1_weights`` [12696, 4096], ``fc1_biases`` [4096], ``fc2_weights`` [4096, 4096],
``fc2_biases``, ``fc3_weights`` [4096, 512], ``fc3_biases``, ``fc4_weights`` [512, 12], ``fc4_biases`` [12]
(``tf.matmul(x, w) + b``, ReLU between); ``feature_length = 4096 (VGG) + 8000 (Lab histogram) + 50 * 12 (history)``
= 12,696, ``action_size`` = 12. The saver is ``tf.train.Saver(self.q_w.values() + [self.step_op])``: the eight
``pred/*`` tensors and ``step/step`` (``tf.Variable(0, name='step')`` in ``tf.variable_scope('step')``), keyed by
op name; the target network (scope ``target``) and the Adam slots are not saved.

**Mapping.** ``pred/fc{k}_weights`` (in, out) -> ``online.fc{k}.weight`` (out, in), ``pred/fc{k}_biases`` ->
``online.fc{k}.bias``; the same tensors fill ``target.*`` (the saved file has no target network; the official
``update_target_q_network`` copies ``pred`` into it, which is our ``DQN.sync``). ``step/step`` is ignored (the
training step counter). The state's layout must be the official one for the rows of ``fc1`` to mean the same:
``[VGG-16 fc6 (4096) | Lab 20x20x20 histogram (8000) | history (600)]`` (``get_state``'s ``np.concatenate``,
our ``StateBuilder``), with the real ImageNet VGG-16 (``deep_features = fc6`` and ImageNet weights; with the
substitute VGG or ``deep_features = none`` the Q-network's inputs differ and the import is meaningless or, for
``none``, refused by the shape check).

**Official test pipeline** (``main.py`` ``Agent.test``, run by ``python main.py --model_path ...``): the state
from ``imresize(imread(path, mode='RGB'), (224, 224)) / 255 - 0.5``; up to ``seq_len`` = 50 greedy steps with
``self.q`` (``pred``); an image whose best Q value is <= 0 gets no action (-1), and the loop stops when all do;
the history marks ``history[step_count * 12 + action]`` with ``step_count`` = 0 (our ``history = official``); the
chosen actions are replayed on the full-resolution image (``save_raw``) and saved as
``Image.fromarray(np.uint8(np.clip((x + 0.5) * 255, 0, 255)))``: **truncation**.
"""

from __future__ import annotations

from bench.official.layout import COPY, DENSE, OfficialLayout, Part, Rule

__all__ = ["layout", "OFFICIAL_NAMES"]

#: every tensor name the official Saver writes
OFFICIAL_NAMES = tuple(f"pred/fc{k}_{kind}" for k in range(1, 5) for kind in ("weights", "biases")) + ("step/step",)


def layout() -> OfficialLayout:
    rules = []
    for net in ("online", "target"):
        for k in range(1, 5):
            rules += [Rule(f"{net}.fc{k}.weight", f"pred/fc{k}_weights", DENSE),
                      Rule(f"{net}.fc{k}.bias", f"pred/fc{k}_biases", COPY)]
    part = Part("", "tf", tuple(rules), ignore=((r"^step/step$", "the training step counter saved with the Q-net"),),
                release_path="checkpoints/pretrained_0.ckpt-2880000 (named by checkpoints/checkpoint; never committed)")
    return OfficialLayout(
        method="distort-recover",
        parts=(part,),
        description="Distort-and-Recover Q-network TF checkpoint: pred/fc1-4_{weights,biases} (in,out)->(out,in) "
                    "into the online and the target network; needs the official state (VGG-16 fc6 from ImageNet + "
                    "Lab histogram + history = 12,696) and hidden widths 4096/4096/512",
        test_overrides={},
        test_pipeline="main.py Agent.test: imresize(224x224)/255-0.5 state; <= 50 greedy steps, no action where "
                      "max Q <= 0, stop when none acts; actions replayed at full resolution; "
                      "np.uint8(np.clip((x+0.5)*255, 0, 255)) (truncation)",
        official_quantize="truncate",
    )
