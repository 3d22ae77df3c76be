"""bench/amp.py: mixed precision helpers (CPU: bf16 autocast and the fp16 GradScaler both run here)."""

from __future__ import annotations

import pytest
import torch

from bench.amp import AMP_MODES, Amp, autocast, check_amp, conv_tf32, inference, set_conv_tf32
from bench.dsn.losses import l2_loss
from bench.dsn.model import DSN
from bench.errors import BenchError

torch.set_num_threads(1)


def _setup(seed=0):
    torch.manual_seed(seed)
    model = DSN(n_blocks=1)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.Adam(params, lr=2e-4, weight_decay=1e-5)
    g = torch.Generator().manual_seed(1)
    low = torch.rand(2, 3, 12, 12, generator=g) * 0.3
    high = torch.rand(2, 3, 12, 12, generator=g)
    return model, params, opt, low, high


def _train(amp: Amp | None, steps=2):
    model, params, opt, low, high = _setup()
    convs = []
    hook = model.operations[1].F.conv1.register_forward_hook(lambda m, i, o: convs.append(o.dtype))
    for _ in range(steps):
        opt.zero_grad(set_to_none=True)
        if amp is None:
            loss = l2_loss(model.enhance(low), high) + l2_loss(model.degrade(high), low)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 10.0)
            opt.step()
        else:
            with amp.autocast():
                loss = l2_loss(model.enhance(low), high) + l2_loss(model.degrade(high), low)
            amp.backward(loss)
            amp.unscale_(opt)
            torch.nn.utils.clip_grad_norm_(params, 10.0)
            amp.step(opt)
    hook.remove()
    return model, loss, convs


def test_off_is_bit_identical_to_the_plain_loop():
    plain, lp, _ = _train(None)
    off, lo, dtypes = _train(Amp("off", "cpu"))
    assert torch.equal(lp, lo) and set(dtypes) == {torch.float32}
    for (k, a), b in zip(plain.state_dict().items(), off.state_dict().values()):
        assert torch.equal(a, b), k


def test_bf16_autocast_trains_on_cpu():
    ref, _, _ = _train(None)
    model, loss, dtypes = _train(Amp("bf16", "cpu"))
    assert set(dtypes) == {torch.bfloat16}                        # the convolutions ran in bfloat16
    assert loss.dtype == torch.float32 and torch.isfinite(loss)   # the summed loss stays float32
    assert all(p.dtype == torch.float32 for p in model.parameters())
    init, _, _, _, _ = _setup()
    moved = ref_moved = 0.0
    for (k, p0), p, r in zip(init.state_dict().items(), model.state_dict().values(), ref.state_dict().values()):
        moved = max(moved, (p - p0).abs().max().item())
        ref_moved = max(ref_moved, (r - p0).abs().max().item())
    assert moved > 0.5 * ref_moved > 0                            # it learns by about as much as fp32


def test_fp16_scaler_skips_overflow_unscales_and_resumes():
    amp = Amp("fp16", "cpu", init_scale=2.0**4)
    w = torch.nn.Parameter(torch.ones(3))
    opt = torch.optim.SGD([w], lr=0.1)
    with amp.autocast():
        loss = (w * 2).sum()
    amp.backward(loss)
    amp.unscale_(opt)
    assert torch.equal(w.grad, torch.full((3,), 2.0))               # true-scale gradients before clipping
    assert amp.step(opt) and torch.allclose(w.detach(), torch.full((3,), 0.8))
    opt.zero_grad()
    amp.backward((w * float("inf")).sum())
    assert not amp.step(opt) and amp.skipped == 1                 # an overflow skips the update ...
    assert torch.allclose(w.detach(), torch.full((3,), 0.8))
    state = amp.state_dict()
    assert state["scaler"]["scale"] == 8.0                          # ... and halves the scale
    other = Amp("fp16", "cpu")
    other.load_state_dict(state)
    assert other.scaler.get_scale() == 8.0 and other.skipped == 1
    with pytest.raises(BenchError, match="amp=fp16"):
        Amp("bf16", "cpu").load_state_dict(state)


def test_inference_returns_float32_and_off_is_exact():
    model, _, _, low, _ = _setup()
    with torch.no_grad():
        ref = model.enhance(low)
        assert torch.equal(inference(model.enhance, low, "off"), ref)
        y = inference(model.enhance, low, "bf16")
    assert y.dtype == torch.float32 and (y - ref).abs().max() < 0.05


def test_modes_and_tf32_switch():
    assert AMP_MODES == ("off", "bf16", "fp16")
    with pytest.raises(BenchError, match="did you mean"):
        check_amp("bf61")
    assert isinstance(autocast("off", "cpu"), type(autocast("off", "cuda")))
    before = conv_tf32()
    try:
        assert set_conv_tf32(False) == before and conv_tf32() is False
        assert set_conv_tf32(True) is False and conv_tf32() is True
    finally:
        set_conv_tf32(before)
