"""Tiled inference and the central memory policy (harness_design.md §6).

``enhance_tiled(fn, x, tile, overlap)`` runs ``fn`` on overlapping ``tile``×``tile`` windows of ``x``
(N×C×H×W) one at a time (or ``batch`` at a time) and blends them into one float32 buffer of the image's
size, so peak memory is set by the tile, not by the image.

Geometry. Along each axis of length L, ``n = ceil((L - overlap) / (tile - overlap))`` tiles of side
``min(tile, L)`` are spread evenly from 0 to L - tile, so neighbours overlap by at least ``overlap``.

Blending. Inside the overlap band of two neighbours a raised-cosine ramp of width ``blend`` (default
``overlap // 2``) is centred; outside the ramp each tile has weight 1 on its own side and 0 on the other.
A pixel's output therefore comes from tiles in which it lies at least ``(overlap - blend) / 2`` pixels
from any inner tile edge (the "context"), and the switch between tiles is smooth. The 1-D weights are
normalised to sum to 1 at every position (so the 2-D products, one per tile, form a partition of unity):
an identity or per-pixel method is reproduced to float32 rounding, exactly after 8-bit quantisation.

Global statistics. A convolution sees only its receptive field, which the context covers; a *global*
pooling layer (``nn.AdaptiveAvgPool2d(1)``, e.g. DSN's channel attention, 72 of them in the default
model) sees the whole input, which no overlap covers. ``global_passes=k`` (k ≥ 1) runs k extra passes
over the tiles that only gather those layers' image-wide means (each tile's contribution weighted by its
blending weights), then a final pass that uses the gathered means in place of the tile-local ones. With
``k = 0`` every tile uses its own means. Cost: (k + 1)× the tile work; memory unchanged.

The policy. :func:`enhance_with_policy` is the one place that decides how an image is enhanced:
whole image on the chosen device; if that raises CUDA out-of-memory or the image exceeds
``max_pixels``, overlapping tiles when the adapter declares ``tileable = True``; else (or if tiles run
out of memory too) the CPU. It returns the output and a record of what was done, which ``bench run``
writes per image.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import asdict, dataclass
from typing import Any, Callable, Iterator

import torch
import torch.nn as nn

from .errors import BenchError

__all__ = ["TilePolicy", "parse_tile_option", "tile_starts", "blend_weights", "enhance_tiled",
           "enhance_with_policy", "global_pool_modules", "receptive_radius", "DEFAULT_TILE", "DEFAULT_OVERLAP"]

#: Defaults chosen from measurements: DSN's fp32 inference peak is 2,816 bytes of activations per pixel
#: whatever the number of blocks (blocks run one after another), so a 512 tile needs ~0.7 GiB (a whole
#: 4000×6000 image ~63 GiB). An overlap of 96 with a 48-px ramp leaves every used output pixel at least
#: 24 px of context; random-weight DSNs already agree with the whole image to > 120 dB with 12-16 px of
#: context (the exact receptive field, 130 px for 8 blocks, is far wider than the effective one).
DEFAULT_TILE = 512
DEFAULT_OVERLAP = 96
TILE_MODES = ("auto", "off", "on")
FALLBACKS = ("none", "oom", "max_pixels")


# ------------------------------------------------------------------------------------------------
# geometry and weights
# ------------------------------------------------------------------------------------------------
def tile_starts(length: int, tile: int, overlap: int) -> list[int]:
    """Start offsets of tiles of side ``min(tile, length)`` covering ``[0, length)``, evenly spread,
    neighbours overlapping by at least ``overlap``."""
    if tile < 1:
        raise ValueError(f"tile must be positive, got {tile}")
    if not 0 <= overlap < tile:
        raise ValueError(f"overlap must be in [0, tile), got {overlap} for tile {tile}")
    if length <= tile:
        return [0]
    n = math.ceil((length - overlap) / (tile - overlap))
    n = max(n, 2)
    span = length - tile
    return [round(k * span / (n - 1)) for k in range(n)]


def _ramp(n: int, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """Raised-cosine rising ramp over n samples, strictly inside (0, 1), symmetric: r[k] + r[n-1-k] = 1."""
    t = (torch.arange(n, dtype=dtype) + 0.5) / n
    return 0.5 - 0.5 * torch.cos(math.pi * t)


def blend_weights(length: int, starts: list[int], size: int, blend: int | None = None) -> list[torch.Tensor]:
    """1-D blending weights (float64, each of length ``size``) for tiles at ``starts``; they sum to 1 at
    every position of ``[0, length)``. ``blend``: ramp width inside each overlap band (None = half the band)."""
    raw = [torch.ones(size, dtype=torch.float64) for _ in starts]
    for i in range(len(starts) - 1):
        a, b = starts[i], starts[i + 1]            # band = [b, a + size)
        band = a + size - b
        if band <= 0:
            continue
        width = band // 2 if blend is None else min(int(blend), band)
        width = max(width, 1)
        lo = b + (band - width) // 2               # ramp = [lo, lo + width)
        r = _ramp(width)
        # tile i: 1 before the ramp, falling inside it, 0 after
        fall = torch.ones(size, dtype=torch.float64)
        fall[lo - a: lo - a + width] = 1.0 - r
        fall[lo - a + width:] = 0.0
        # tile i + 1: 0 before the ramp, rising inside it, 1 after
        rise = torch.ones(size, dtype=torch.float64)
        rise[: lo - b] = 0.0
        rise[lo - b: lo - b + width] = r
        raw[i] = raw[i] * fall
        raw[i + 1] = raw[i + 1] * rise
    total = torch.zeros(length, dtype=torch.float64)
    for s, w in zip(starts, raw):
        total[s: s + size] += w
    if bool((total <= 0).any()):  # cannot happen with the geometry above; guard anyway
        raise RuntimeError("tile weights leave a gap")
    return [w / total[s: s + size] for s, w in zip(starts, raw)]


def receptive_radius(model: nn.Module, enhance: Callable[[torch.Tensor], torch.Tensor] | None = None,
                     size: int = 65) -> int:
    """The exact receptive-field radius of ``enhance`` (default ``model``), found by differentiating one
    output pixel (float64 copy of the model, ``size``² input; global pools excluded since they reach
    everywhere): the largest distance of an input pixel with a non-zero gradient. Returns ``size // 2``
    if the field reaches the border. Give it non-zero weights: an untrained DSN (zero tails) is D(E(x)).
    DSN measures 2 + 16 × n_blocks (18 for one block, 130 for the default eight)."""
    import copy

    m = copy.deepcopy(model).double().eval()
    fn = enhance or m
    if enhance is not None and hasattr(enhance, "__self__") and enhance.__self__ is model:
        fn = getattr(m, enhance.__name__)
    x = torch.rand(1, 3, size, size, dtype=torch.float64, requires_grad=True)
    with _detached_global_pools(m):
        y = fn(x)
        c = size // 2
        y[0, :, c, c].sum().backward()
    g = x.grad.abs().sum(1)[0]
    ys, xs = torch.nonzero(g > 0, as_tuple=True)
    return int(max((ys - c).abs().max(), (xs - c).abs().max()))


@contextlib.contextmanager
def _detached_global_pools(model: nn.Module) -> Iterator[None]:
    handles = [m.register_forward_hook(lambda mod, inp, out: out.detach()) for m in global_pool_modules(model)]
    try:
        yield
    finally:
        for h in handles:
            h.remove()


# ------------------------------------------------------------------------------------------------
# global pooling layers
# ------------------------------------------------------------------------------------------------
def _is_global_pool(m: nn.Module) -> bool:
    if isinstance(m, (nn.AdaptiveAvgPool2d,)):
        size = m.output_size
        return size == 1 or tuple(size) == (1, 1) if not isinstance(size, int) else size == 1
    return False


def _modules_of(obj: Any) -> list[nn.Module]:
    if isinstance(obj, nn.Module):
        return [obj]
    return [v for v in vars(obj).values() if isinstance(v, nn.Module)] if hasattr(obj, "__dict__") else []


def global_pool_modules(obj: Any) -> list[nn.Module]:
    """Every global average pool (``AdaptiveAvgPool2d(1)``) in a module or in a method's module attributes."""
    seen: dict[int, nn.Module] = {}
    for root in _modules_of(obj):
        for m in root.modules():
            if _is_global_pool(m):
                seen.setdefault(id(m), m)
    return list(seen.values())


class _GlobalPoolContext:
    """Forward hooks on global pools: gather image-wide means across tiles, or substitute gathered ones.

    A pool module may run several times per forward (tied units), so each call is keyed by
    (module, call index within the current tile).
    """

    def __init__(self, modules: list[nn.Module], area: int):
        self.modules = modules
        self.area = float(area)
        self.sums: dict[tuple[int, int], torch.Tensor] = {}
        self.use: dict[tuple[int, int], torch.Tensor] | None = None
        self.weight: torch.Tensor | None = None   # B×h×w blending weights of the tiles in flight
        self.counts: dict[int, int] = {}
        self.handles: list[Any] = []

    def __enter__(self) -> "_GlobalPoolContext":
        self.handles = [m.register_forward_hook(self._hook) for m in self.modules]
        return self

    def __exit__(self, *exc: Any) -> None:
        for h in self.handles:
            h.remove()
        self.handles = []

    def start_tile(self, weight: torch.Tensor) -> None:
        self.weight, self.counts = weight, {}

    def finish_pass(self) -> None:
        """The gathered sums become the means used by the next pass."""
        self.use = {k: (v / self.area) for k, v in self.sums.items()}
        self.sums = {}

    def _hook(self, mod: nn.Module, inputs: tuple[torch.Tensor, ...], out: torch.Tensor) -> torch.Tensor | None:
        k = self.counts.get(id(mod), 0)
        self.counts[id(mod)] = k + 1
        key = (id(mod), k)
        inp = inputs[0]
        w = self.weight
        if w is not None and inp.shape[-2:] == w.shape[-2:] and inp.shape[0] == w.shape[0]:
            # C: this tile's blend-weighted sum (a batched matrix product: no tile-sized temporaries)
            part = torch.einsum("nchw,nhw->c", inp.float(), w).double()
            self.sums[key] = self.sums[key] + part if key in self.sums else part
        if self.use is not None and key in self.use:
            mean = self.use[key].to(out.dtype)
            return mean.view(1, -1, 1, 1).expand_as(out).contiguous()
        return None


# ------------------------------------------------------------------------------------------------
# tiled enhancement
# ------------------------------------------------------------------------------------------------
def enhance_tiled(fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, tile: int = DEFAULT_TILE,
                  overlap: int = DEFAULT_OVERLAP, *, blend: int | None = None, batch: int = 1,
                  global_pools: list[nn.Module] | None = None, global_passes: int = 0,
                  out_device: torch.device | str | None = None) -> torch.Tensor:
    """``fn`` applied to ``x`` (N×C×H×W) through overlapping blended tiles (see the module doc).

    Tiles are cut from ``x`` where it lives and ``fn`` runs there; the float32 result buffer lives on
    ``out_device`` (default: ``x``'s device). ``fn`` must map a tile to a tensor of the same shape.
    ``global_pools``/``global_passes``: see "Global statistics" above (needs N = 1).
    """
    if x.ndim != 4:
        raise ValueError(f"expected N×C×H×W, got {tuple(x.shape)}")
    n, _, h, w = x.shape
    th, tw = min(tile, h), min(tile, w)
    ys, xs = tile_starts(h, tile, overlap), tile_starts(w, tile, overlap)
    wy, wx = blend_weights(h, ys, th, blend), blend_weights(w, xs, tw, blend)
    dev = x.device
    wy = [v.to(dev, torch.float32) for v in wy]
    wx = [v.to(dev, torch.float32) for v in wx]
    grid = [(i, j) for i in range(len(ys)) for j in range(len(xs))]
    batch = max(1, int(batch))
    pools = list(global_pools or [])
    passes = int(global_passes) if pools else 0
    if passes and n != 1:
        raise ValueError("global_passes needs a batch of one image")
    out = None

    ctx = _GlobalPoolContext(pools, h * w) if passes else contextlib.nullcontext()
    with ctx:
        for p in range(passes + 1):
            final = p == passes
            if final:
                out = torch.zeros(x.shape, dtype=torch.float32, device=out_device or dev)
            for b0 in range(0, len(grid), batch):
                chunk = grid[b0: b0 + batch]
                tiles = [x[..., ys[i]: ys[i] + th, xs[j]: xs[j] + tw] for i, j in chunk]
                inp = tiles[0].contiguous() if len(tiles) == 1 else torch.cat(tiles, 0)
                weights = [wy[i][:, None] * wx[j][None, :] for i, j in chunk]
                if passes:
                    ctx.start_tile(torch.stack(weights))  # type: ignore[union-attr]
                y = fn(inp)
                if tuple(y.shape) != tuple(inp.shape):
                    raise RuntimeError(f"tile output has shape {tuple(y.shape)}, expected {tuple(inp.shape)}")
                if final:
                    for k, (i, j) in enumerate(chunk):
                        yk = y[k * n:(k + 1) * n].float()
                        region = out[..., ys[i]: ys[i] + th, xs[j]: xs[j] + tw]
                        region.add_((yk * weights[k]).to(region.device))
                del y, inp, tiles
            if passes and not final:
                ctx.finish_pass()  # type: ignore[union-attr]
    assert out is not None
    return out


# ------------------------------------------------------------------------------------------------
# the policy
# ------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class TilePolicy:
    """How ``bench run`` enhances an image (``--tile auto|off|N``, ``--tile-overlap``, ``--max-pixels``).

    mode ``auto``: whole image; tiles only as a fallback (CUDA OOM, or more than ``max_pixels``).
    ``off``: never tiles (an OOM goes straight to the CPU). ``on``: always tiles (``--tile N``).
    ``global_passes``: see :func:`enhance_tiled` (1 = one gathering pass, the default for fallbacks).
    """

    mode: str = "auto"
    tile: int = DEFAULT_TILE
    overlap: int = DEFAULT_OVERLAP
    blend: int | None = None
    batch: int = 1
    max_pixels: int = 0            # 0 = no limit
    global_passes: int = 1
    cpu_fallback: bool = True

    def __post_init__(self) -> None:
        if self.mode not in TILE_MODES:
            raise BenchError(f"unknown tile mode {self.mode!r}; choose auto, off or a tile size")
        if self.tile < 16:
            raise BenchError(f"--tile {self.tile}: use at least 16 pixels")
        if not 0 <= self.overlap < self.tile:
            raise BenchError(f"--tile-overlap {self.overlap} must be in [0, tile) (tile {self.tile})")
        if self.blend is not None and not 1 <= self.blend <= self.overlap:
            raise BenchError(f"tile blend {self.blend} must be in [1, overlap]")
        if self.batch < 1 or self.max_pixels < 0 or self.global_passes < 0:
            raise BenchError("tile batch must be ≥ 1, max pixels and global passes ≥ 0")

    def identity(self) -> dict[str, Any] | None:
        """What enters the run identity: None for the default ``auto`` policy (whose tiling is a recorded
        per-image fallback, so existing run IDs stay valid), the full policy otherwise."""
        return None if self == TilePolicy() else asdict(self)


def parse_tile_option(tile: str | int | None = "auto", overlap: int | None = None,
                      max_pixels: int | None = None, **extra: Any) -> TilePolicy:
    """``--tile auto|off|N`` (+ ``--tile-overlap O``, ``--max-pixels P``) → :class:`TilePolicy`."""
    text = "auto" if tile is None else str(tile).strip().lower()
    kw: dict[str, Any] = dict(extra)
    if overlap is not None:
        kw["overlap"] = int(overlap)
    if max_pixels is not None:
        kw["max_pixels"] = int(max_pixels)
    if text in ("auto", "off"):
        return TilePolicy(mode=text, **kw)
    try:
        size = int(text)
    except ValueError:
        raise BenchError(f"--tile {tile!r}: expected auto, off or a tile size in pixels") from None
    if "overlap" not in kw:
        kw["overlap"] = min(DEFAULT_OVERLAP, max(0, size // 4))
    return TilePolicy(mode="on", tile=size, **kw)


def _oom_types() -> tuple[type[BaseException], ...]:
    types: list[type[BaseException]] = []
    for name in ("OutOfMemoryError",):
        t = getattr(torch, name, None) or getattr(torch.cuda, name, None)
        if isinstance(t, type):
            types.append(t)
    return tuple(types) or (RuntimeError,)


def _free(device: torch.device) -> None:
    import gc

    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def _move(method: Any, device: torch.device) -> None:
    """Move a method's modules (``method.to`` if it has one) and its ``device`` attribute."""
    to = getattr(method, "to", None)
    if callable(to) and not isinstance(method, nn.Module):
        to(device)
        return
    for m in _modules_of(method):
        m.to(device)
    method.device = device


def enhance_with_policy(method: Any, x: torch.Tensor, policy: TilePolicy | None = None,
                        **kwargs: Any) -> tuple[torch.Tensor, dict[str, Any]]:
    """Enhance ``x`` (1×3×H×W, already padded) under the memory policy; ``kwargs`` go to
    ``method.enhance`` (e.g. ``reference=``; a reference is tiled alongside the input).

    Returns ``(y, info)`` with ``info = {"tiled", "tile", "overlap", "fallback", "device",
    "global_passes"}``: ``fallback`` is ``"none"``, ``"oom"`` (CUDA out of memory) or ``"max_pixels"``;
    ``device`` is where the output was computed (``"cpu"`` after a CPU fallback). Runs under
    ``torch.inference_mode``. A forced ``--tile N`` on a method that is not tileable is an error.
    """
    policy = policy or TilePolicy()
    tileable = bool(getattr(method, "tileable", False))
    h, w = x.shape[-2:]
    dev = torch.device(getattr(method, "device", None) or x.device)  # the adapter's device (x lives there too)
    info: dict[str, Any] = {"tiled": False, "tile": 0, "overlap": 0, "fallback": "none", "device": str(dev),
                            "global_passes": 0}
    ref = kwargs.pop("reference", None)

    def whole(xx: torch.Tensor, rr: torch.Tensor | None) -> torch.Tensor:
        return method.enhance(xx, **kwargs) if rr is None else method.enhance(xx, reference=rr, **kwargs)

    def tiled(xx: torch.Tensor, rr: torch.Tensor | None) -> torch.Tensor:
        info.update(tiled=True, tile=policy.tile, overlap=policy.overlap, device=str(xx.device))
        pools = global_pool_modules(method) if policy.global_passes else []
        info["global_passes"] = policy.global_passes if pools else 0
        opts = dict(blend=policy.blend, batch=policy.batch, global_pools=pools, global_passes=policy.global_passes)
        if rr is None:
            return enhance_tiled(lambda t: whole(t, None), xx, policy.tile, policy.overlap, **opts)
        # a reference travels with the input: tile the 6-channel stack, split it inside
        c = xx.shape[1]
        both = enhance_tiled(lambda t: torch.cat([whole(t[:, :c], t[:, c:]), t[:, c:]], 1),
                             torch.cat([xx, rr], 1), policy.tile, policy.overlap, **opts)
        return both[:, :c]

    run = {"whole": whole, "tiles": tiled}
    name = getattr(method, "name", type(method).__name__)
    if policy.mode == "on" and not tileable:
        raise BenchError(f"{name} is not tileable; use --tile auto or off")
    too_big = policy.mode == "auto" and policy.max_pixels > 0 and h * w > policy.max_pixels
    # attempts on the adapter's device, in order, until one fits
    if policy.mode == "on":
        plan = ["tiles"]
    elif too_big:
        plan = ["tiles"] if tileable else []
    else:
        plan = ["whole"] + (["tiles"] if tileable and policy.mode == "auto" else [])
    info["fallback"] = "max_pixels" if too_big else "none"
    oom = _oom_types()
    with torch.inference_mode():
        for how in plan:
            try:
                return run[how](x, ref), info
            except oom:
                pass
            _free(dev)  # outside the handler, so the traceback no longer pins the failed attempt's tensors
            info.update(tiled=False, tile=0, overlap=0, global_passes=0, fallback="oom")
        if dev.type == "cpu":
            if not plan:  # too big, not tileable, and already on the CPU: nothing smaller to fall back to
                info["fallback"] = "none"
                return whole(x, ref), info
            raise BenchError(f"{name}: out of memory on cpu for a {h}×{w} image and no fallback is left")
        if not policy.cpu_fallback:
            raise BenchError(f"{name}: out of memory on {dev} for a {h}×{w} image (CPU fallback disabled)")
        # last resort: the CPU (through tiles when allowed: CPU memory is finite too); then move back
        cpu = torch.device("cpu")
        _move(method, cpu)
        try:
            xc, rc = x.to(cpu), None if ref is None else ref.to(cpu)
            how = "tiles" if tileable and policy.mode != "off" else "whole"
            y = run[how](xc, rc)
            info["device"] = "cpu"
            return y, info
        finally:
            _move(method, dev)


# ------------------------------------------------------------------------------------------------
# measuring memory on the CPU (no allocator statistics there; tracemalloc does not see torch)
# ------------------------------------------------------------------------------------------------
class TensorMemoryMeter:
    """Peak bytes of live CPU tensor storages allocated inside the context (a ``TorchDispatchMode``: each
    new storage an op returns is counted until the last tensor using it dies; views and in-place results
    allocate nothing). Storages made before the context (inputs, weights) are not counted. On CUDA use
    ``torch.cuda.max_memory_allocated``.

        with TensorMemoryMeter() as meter:
            y = fn(x)
        meter.peak  # bytes
    """

    def __init__(self) -> None:
        self.peak = 0
        self.current = 0
        self._live: dict[int, list[int]] = {}
        self._mode: Any = None

    def _release(self, key: int) -> None:
        entry = self._live.get(key)
        if entry is None:
            return
        entry[1] -= 1
        if entry[1] <= 0:
            del self._live[key]
            self.current -= entry[0]

    def _make_mode(self) -> Any:
        import weakref

        from torch.utils._python_dispatch import TorchDispatchMode
        from torch.utils._pytree import tree_leaves

        meter = self

        class _Mode(TorchDispatchMode):
            def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # noqa: ANN001
                out = func(*args, **(kwargs or {}))
                # views and in-place results share an argument's storage: no new allocation
                shared = {a.untyped_storage().data_ptr() for a in tree_leaves((args, kwargs))
                          if isinstance(a, torch.Tensor) and a.device.type == "cpu"}
                for t in tree_leaves(out):
                    if isinstance(t, torch.Tensor) and t.device.type == "cpu":
                        st = t.untyped_storage()
                        key = st.data_ptr()
                        if key == 0 or (key in shared and key not in meter._live):
                            continue
                        entry = meter._live.get(key)
                        if entry is None:
                            meter._live[key] = [st.nbytes(), 1]
                            meter.current += st.nbytes()
                            meter.peak = max(meter.peak, meter.current)
                        else:
                            entry[1] += 1
                        weakref.finalize(t, meter._release, key)
                return out

        return _Mode()

    def __enter__(self) -> "TensorMemoryMeter":
        self._mode = self._make_mode()
        self._mode.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._mode.__exit__(*exc)
        self._mode = None
