"""The adapter contract, checked for every registered method in its untrained/default state."""

import pytest
import torch

from bench import registry
from bench.methods.base import FAMILIES, build_config
from smoke import assert_image_like


@pytest.fixture(params=sorted(registry.METHODS))
def method(request):
    cls = registry.load_method_class(request.param)
    m = cls(build_config(cls, "smoke", {}))
    m.setup(torch.device("cpu"), None)
    return m


def test_metadata(method):
    assert method.family in FAMILIES
    assert method.display_name and isinstance(method.version, int)
    assert registry.canonical(method.name) == method.name


def test_odd_sized_input_keeps_shape_range_and_is_deterministic(method):
    torch.manual_seed(0)
    low = torch.rand(1, 3, 37, 53) * 0.4
    torch.manual_seed(1)
    out = method.enhance(low.clone())
    torch.manual_seed(1)
    again = method.enhance(low.clone())
    assert_image_like(out, low)
    assert torch.equal(out, again)


def test_unknown_name_suggests():
    from bench.errors import BenchError

    with pytest.raises(BenchError, match="did you mean 'lime'"):
        registry.canonical("lmie")
