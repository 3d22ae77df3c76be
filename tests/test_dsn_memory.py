"""Activation-memory options of DSN training (bench/dsn/memory.py): memory=full|blocks|reversible. CPU, tiny crops.

Gradients are compared on networks whose every trainable tensor is random (convolutions fan-in scaled by 0.45,
as ``bench perf dsn``'s tiling-gap model, so the blocks really transform their input; at the official
initialisation the subnets output zero and the blocks are the identity, which would hide any error).
"""

import dataclasses
import json

import numpy as np
import pytest
import torch

from bench.dsn import memory as memory_mod
from bench.dsn.adapter import DSNMethod
from bench.dsn.losses import l2_loss, quantize_ste
from bench.dsn.model import DSN
from bench.errors import BenchError
from bench.imageio import write_png
from bench.methods.base import TrainPair, build_config
from bench.training import Batch, latest_state
from train_pairs import crash_after

torch.set_num_threads(1)

# measured (CPU, fp32, 2x3x24² crops, the random networks below): reversible vs full, largest |difference| of any
# gradient element over the largest |gradient| of any tensor, and the worst per-tensor ||difference|| / ||gradient||
#   3 blocks: enhance 1.6e-7 / 1.6e-6, degrade 1.7e-6 / 1.3e-4, both 5.2e-7 / 4.3e-5
#   8 blocks: enhance 3.7e-4 / 7.1e-2, degrade 1.2e-6 / 1.9e-4, both 3.0e-4 / 1.3e-1 (a PReLU slope: a sum over all
#             pixels with cancellation; full fp32 itself is 1.3e-3 away from fp64 on such tensors). Over all tensors
#             together ||difference|| / ||gradient|| is 1.3e-4 (enhance), 4.6e-7 (degrade), 9.0e-5 (both).
TOL_3 = {"max_abs": 1e-5, "per_tensor": 1e-3}
TOL_8 = {"max_abs": 2e-3, "overall": 1e-3}


def _random_dsn(n_blocks: int, seed: int = 0) -> DSN:
    torch.manual_seed(seed)
    model = DSN(n_blocks=n_blocks)
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for p in model.parameters():
            if not p.requires_grad:
                continue
            if p.ndim > 1:
                p.copy_(torch.randn(p.shape, generator=g) * 0.45 * p[0].numel() ** -0.5)
            else:   # biases 0 -> small, PReLU slopes 0.2 -> around it
                p.add_(torch.randn(p.shape, generator=g) * 0.1)
    return model


def _batch(crop: int = 24, seed: int = 5) -> Batch:
    high = torch.rand(2, 3, crop, crop, generator=torch.Generator().manual_seed(seed))
    return Batch(low=high * 0.3, high=high, ids=["a", "b"])


def _grads(model: DSN, mode: str, batch: Batch, which: str) -> dict:
    model.set_memory(mode)
    model.zero_grad(set_to_none=True)
    if which == "enhance":
        loss = l2_loss(model.enhance(batch.low), batch.high)
    elif which == "degrade":
        loss = l2_loss(model.degrade(quantize_ste(batch.high)), batch.low)
    else:   # the training step itself, both directions
        loss = DSNMethod(build_config(DSNMethod, "smoke", {}, "demo")).step_fn(model)(batch)["loss"]
    loss.backward()
    out = {n: None if p.grad is None else p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}
    model.zero_grad(set_to_none=True)
    return out


def _differences(ref: dict, got: dict) -> dict:
    assert list(ref) == list(got)
    assert [k for k in ref if ref[k] is None] == [k for k in got if got[k] is None]   # the unused `soca`s
    used = [k for k in ref if ref[k] is not None]
    assert len(used) > 100
    largest = max(ref[k].abs().max().item() for k in used)
    diff = {k: (got[k] - ref[k]) for k in used}
    num = sum(d.pow(2).sum().item() for d in diff.values())
    den = sum(ref[k].pow(2).sum().item() for k in used)
    return {"max_abs": max(d.abs().max().item() for d in diff.values()) / largest,
            "per_tensor": max((diff[k].norm() / ref[k].norm()).item() for k in used if ref[k].norm() > 0),
            "overall": (num / den) ** 0.5}


@pytest.mark.parametrize("which", ["enhance", "degrade", "both"])
def test_blocks_bit_identical_and_reversible_within_float_error(which):
    model, batch = _random_dsn(3), _batch()
    ref = _grads(model, "full", batch, which)
    assert sum(int(g is not None and g.abs().max() > 0) for g in ref.values()) > 100   # the gradients are not trivial
    blocks = _grads(model, "blocks", batch, which)
    for k in ref:
        assert (ref[k] is None and blocks[k] is None) or torch.equal(ref[k], blocks[k]), k
    d = _differences(ref, _grads(model, "reversible", batch, which))
    assert d["max_abs"] < TOL_3["max_abs"] and d["per_tensor"] < TOL_3["per_tensor"], d
    assert _grads(model, "full", batch, which).keys() == ref.keys()


def test_default_structure_gradients():
    model, batch = _random_dsn(8), _batch()
    assert model.n_blocks == DSN().n_blocks
    ref = _grads(model, "full", batch, "both")
    blocks = _grads(model, "blocks", batch, "both")
    assert all((ref[k] is None and blocks[k] is None) or torch.equal(ref[k], blocks[k]) for k in ref)
    d = _differences(ref, _grads(model, "reversible", batch, "both"))
    assert d["max_abs"] < TOL_8["max_abs"] and d["overall"] < TOL_8["overall"], d


def test_the_tolerance_catches_a_wrong_inverse(monkeypatch):
    # rebuilding each input with the block's own direction instead of its inverse must fail the check above
    model, batch = _random_dsn(3), _batch()
    ref = _grads(model, "full", batch, "both")
    monkeypatch.setattr(memory_mod, "_DIRECTIONS", {"enhance": "enhance", "degrade": "degrade"})
    d = _differences(ref, _grads(model, "reversible", batch, "both"))
    assert d["max_abs"] > 100 * TOL_3["max_abs"] and d["per_tensor"] > TOL_3["per_tensor"], d


def _saved_bytes(model: DSN, mode: str, batch: Batch) -> int:
    """Bytes of the distinct storages autograd keeps for backward after the forward of both directions."""
    model.set_memory(mode)
    kept: dict[int, int] = {}

    def pack(t):
        kept[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        loss = l2_loss(model.enhance(batch.low), batch.high) + l2_loss(model.degrade(quantize_ste(batch.high)), batch.low)
    loss.backward()
    model.zero_grad(set_to_none=True)
    return sum(kept.values())


def test_the_options_keep_less():
    model, batch = _random_dsn(3), _batch(32)
    full, blocks, rev = (_saved_bytes(model, m, batch) for m in ("full", "blocks", "reversible"))
    feature_map = 2 * 64 * 32 * 32 * 4
    assert full > 100 * feature_map                          # every subnet's maps, in both directions
    assert blocks <= 2 * (3 + 1) * feature_map + full // 50  # each block's input and the stack's output
    assert rev <= 2 * 2 * feature_map + full // 50           # the stack's input and output
    assert rev < blocks < full / 10


def test_inference_takes_the_plain_path(monkeypatch):
    model, x = _random_dsn(2), _batch(13).low
    with torch.no_grad():
        ref = model.enhance(x)
    for mode in ("blocks", "reversible"):
        model.set_memory(mode)
        with monkeypatch.context() as mp:
            mp.setattr(memory_mod, "checkpoint", lambda *a, **k: pytest.fail("checkpointed under no_grad"))
            mp.setattr(memory_mod._ReversibleStack, "apply", lambda *a: pytest.fail("reversible under no_grad"))
            with torch.no_grad():
                assert torch.equal(model.enhance(x), ref)
            with torch.inference_mode():
                assert torch.equal(model.enhance(x), ref)
            model.set_fast_inference(True, channels_last=False)
            with torch.inference_mode():
                assert torch.equal(model.enhance(x), ref)   # the in-place path is bit-identical in NCHW
            model.set_fast_inference(False)
    with pytest.raises(ValueError, match="unknown memory mode"):
        model.set_memory("some")


# ------------------------------------------------------------------------------------------ training
def _smooth(rng, h, w):
    y, x = np.mgrid[0:h, 0:w]
    base = np.stack([np.sin(x / 5 + c) + np.cos(y / 7 - c) for c in range(3)], -1)
    return np.clip(128 + 60 * base + rng.normal(0, 8, (h, w, 3)), 0, 255).astype(np.uint8)


def _pairs(tmp_path, rng):
    pairs = []
    for i, (h, w) in enumerate([(20, 28), (18, 18), (26, 21)]):
        high = _smooth(rng, h, w)
        lp, hp = tmp_path / f"low/{i}.png", tmp_path / f"high/{i}.png"
        write_png(lp, np.round(high * 0.3).astype(np.uint8))
        write_png(hp, high)
        pairs.append(TrainPair(f"img{i}", lp, hp))
    return pairs


def _tiny(memory, **sets):
    # two blocks, so the reversible backward really rebuilds an input (the first block's is kept)
    base = dict(n_blocks=2, crop=16, iterations=6, milestones="3", checkpoint_every=2, memory=memory)
    base.update(sets)
    m = DSNMethod(build_config(DSNMethod, "smoke", {k: str(v) for k, v in base.items()}, "demo"))
    m.setup(torch.device("cpu"))
    return m


def _weights(path):
    return torch.load(path, map_location="cpu", weights_only=True)["model"]


@pytest.mark.parametrize("memory", ["blocks", "reversible"])
def test_training_resumes_bit_identically(tmp_path, rng, monkeypatch, memory):
    pairs = _pairs(tmp_path, rng)
    calls = {"blocks": 0, "reversible": 0}
    with monkeypatch.context() as mp:   # the option really reaches the training step
        real_ckpt, real_apply = memory_mod.checkpoint, memory_mod._ReversibleStack.apply

        def ckpt(*a, **k):
            calls["blocks"] += 1
            return real_ckpt(*a, **k)

        def apply(*a):
            calls["reversible"] += 1
            return real_apply(*a)
        mp.setattr(memory_mod, "checkpoint", ckpt)
        mp.setattr(memory_mod._ReversibleStack, "apply", apply)
        straight = _tiny(memory)
        ref = _weights(straight.train(pairs, [], tmp_path / "a", seed=7, progress=False))
    per_step = {"blocks": 2 * 2, "reversible": 2}[memory]     # 2 blocks x 2 directions, or one stack per direction
    assert calls == {**{"blocks": 0, "reversible": 0}, memory: 6 * per_step}
    assert straight.model.memory == memory
    out = tmp_path / "b"
    with monkeypatch.context() as mp:
        crash_after(mp, 5)
        with pytest.raises(RuntimeError):
            _tiny(memory).train(pairs, [], out, seed=7, progress=False)
    assert latest_state(out).name == "state_00000004.pt"
    got = _weights(_tiny(memory).train(pairs, [], out, seed=7, progress=False))
    assert list(got) == list(ref)
    for k in ref:
        assert torch.equal(got[k], ref[k]), k
    full = _weights(_tiny("full").train(pairs, [], tmp_path / "full", seed=7, progress=False))
    trained = [k for k in full if not torch.equal(full[k], _tiny("full").fresh_model(7).state_dict()[k])]
    assert len(trained) > 50                                   # the weights moved
    if memory == "blocks":                                     # recomputation changes nothing, bit for bit
        assert all(torch.equal(full[k], ref[k]) for k in full)
    else:                                                      # float error of the rebuilt inputs only
        worst = max(((ref[k] - full[k]).abs().max() / (full[k].abs().max() + 1e-12)).item() for k in trained)
        assert worst < 1e-3, worst
    settings = json.loads((out / "train_settings.json").read_text())
    assert settings["meta"]["config"]["memory"] == memory


def test_option_is_validated_recorded_and_part_of_the_training_identity():
    from bench.data.manifest import load_manifest
    from bench.run import train_identity

    cfg = lambda **s: build_config(DSNMethod, "smoke", {k: str(v) for k, v in s.items()}, "demo")  # noqa: E731
    assert cfg().memory == "full" and DSNMethod.Config().memory == "full"
    with pytest.raises(BenchError) as e:
        cfg(memory="reversable")
    assert "unknown memory option of ours 'reversable'; did you mean 'reversible'?" in str(e.value)
    assert "\n" not in str(e.value)
    with pytest.raises(BenchError, match="memory=reversible needs amp=off"):
        cfg(memory="reversible", amp="bf16")
    assert cfg(memory="blocks", amp="bf16").memory == "blocks"
    assert "memory" not in DSNMethod.test_time_options
    m = load_manifest("demo")
    ids = {mode: train_identity(DSNMethod, cfg(memory=mode), m, 0, "smoke") for mode in ("full", "blocks", "reversible")}
    # full is a late option at its old value: left out, so runs trained before it existed keep their identity
    assert [i["config"].get("memory") for i in ids.values()] == [None, "blocks", "reversible"]
    assert len({json.dumps(i, sort_keys=True, default=str) for i in ids.values()}) == 3
    method = DSNMethod(cfg(memory="blocks"))
    assert method.provenance()["memory"] == "blocks"
    assert dataclasses.asdict(method.config)["memory"] == "blocks"
