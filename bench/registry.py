"""The method registry: the one list of method names, each mapped to ``module:Class``.

Adapters are imported only when used, so listing names never imports heavy code. Adding a method
touches its own module and one line here.
"""

from __future__ import annotations

import importlib

from .errors import BenchError, unknown_name

METHODS: dict[str, str] = {
    "identity": "bench.methods.identity:Identity",
    "ours": "bench.dsn.adapter:DSNMethod",
    "lime": "baselines.lime.adapter:Lime",
    "eff": "baselines.eff.adapter:Eff",
    "retinexnet": "baselines.retinexnet.adapter:RetinexNet",
    "zero-dce": "baselines.zero_dce.adapter:ZeroDCE",
    "csrnet": "baselines.csrnet.adapter:CSRNetMethod",
    "hdrnet": "baselines.hdrnet.adapter:HDRNet",
    "deepupe": "baselines.deepupe.adapter:DeepUPE",
    "kind": "baselines.kind.adapter:KinD",
    "drbn": "baselines.drbn.adapter:DRBN",
    "dpe": "baselines.dpe.adapter:DPE",
    "enlightengan": "baselines.enlightengan.adapter:EnlightenGAN",
    "deeplpf": "baselines.deeplpf.adapter:DeepLPF",
    "distort-recover": "baselines.distort_recover.adapter:DistortRecover",
    "white-box": "baselines.white_box.adapter:WhiteBox",
}

ALIASES: dict[str, str] = {"dsn": "ours"}


def canonical(name: str) -> str:
    name = ALIASES.get(name, name)
    if name not in METHODS:
        raise unknown_name("method", name, list(METHODS) + list(ALIASES))
    return name


def load_method_class(name: str):
    name = canonical(name)
    module_name, _, class_name = METHODS[name].partition(":")
    try:
        cls = getattr(importlib.import_module(module_name), class_name)
    except (ImportError, AttributeError) as e:
        raise BenchError(f"method {name} is registered as {METHODS[name]} but cannot be loaded: {e}") from None
    if cls.name != name:
        raise BenchError(f"registry name {name!r} does not match {METHODS[name]}.name {cls.name!r}")
    return cls
