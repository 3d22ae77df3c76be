"""GPU checks, opt-in (`-m gpu`): CPU/GPU agreement and the CUDA path of the pipeline."""

import pytest
import torch

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")]


def test_dsn_enhance_agrees_between_cpu_and_gpu():
    from bench.dsn.model import DSN

    torch.manual_seed(0)
    model = DSN()
    for p in model.parameters():
        if p.requires_grad:
            p.data.normal_(0, 0.01)
    x = torch.rand(1, 3, 67, 91)
    with torch.no_grad():
        cpu = model.eval().enhance(x)
        torch.backends.cudnn.allow_tf32 = False
        gpu = model.cuda().enhance(x.cuda()).cpu()
    assert (cpu - gpu).abs().max().item() < 1e-4


def test_identity_run_on_cuda_records_the_gpu():
    import json

    from bench.run import RunSpec, execute

    result = execute(RunSpec("identity", "demo", device="cuda", progress=False))
    env = json.loads((result.run_dir / "env.json").read_text())
    assert env["device"].startswith("cuda") and env["gpu"]
