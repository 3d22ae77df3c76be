"""Fixed encoder/decoder tensors for DSN.

DSN's encoder E and decoder D are two frozen 3x3 convolutions (stride 1, padding 1, no bias,
no activation, no input normalisation)::

    E(x) = conv2d(conv2d(x, W1, pad=1), W2, pad=1)                      3 -> 64 -> 64 channels
    D(h) = conv_transpose2d(conv_transpose2d(h, W2, pad=1), W1, pad=1)  64 -> 64 -> 3 channels

so D is the adjoint E^T of E (not its inverse), and an untrained DSN outputs E^T E x.
``W1`` has shape (64, 3, 3, 3) and ``W2`` (64, 64, 3, 3).  The official code takes them from the
VGG-16 ``conv1_1``/``conv1_2`` weights of the Caffe-derived ``vgg16.weight`` file
(``dsn_reference.md`` sections 1.2 and 6, D1).

This module provides

- :func:`load_vgg16_conv1` -- read W1, W2 from a torchvision VGG-16 state dict, the
  Lua/Caffe-converted ``vgg16.weight`` state dict, or an official DSN checkpoint;
- :func:`fallback_encoder` -- a deterministic, closed-form stand-in used when no file is given;
- :func:`haar_encoder` -- the fixed undecimated Haar frame used by the "Haar wavelets instead of
  VGG E/D" ablation;
- :func:`encode`, :func:`decode` -- the functional E and D;
- :func:`encoder_gain` -- measures how far E^T E is from the identity;
- :func:`tensor_sha256` -- provenance hash of the tensors (files: ``bench.fsutil.sha256_file``).

Every loader returns ``(W1, W2, info)`` with float32, contiguous, CPU tensors and an ``info`` dict
that always has the keys ``kind``, ``sha256``, ``path`` and ``tensors_sha256``.  For files,
``sha256`` is the hash of the file's bytes; for generated tensors (fallback, Haar) there is no file,
``path`` is ``None`` and ``sha256`` equals ``tensors_sha256``.  ``tensors_sha256`` hashes the raw
float32 bytes of W1 followed by W2, so the same tensors give the same value whatever container
they came in (a VGG file and a DSN checkpoint built from it agree).
"""

from __future__ import annotations

import hashlib
import os
import re
from typing import Any, Dict, Mapping, Optional, Tuple

import torch

from bench.fsutil import sha256_file
import torch.nn.functional as F

__all__ = [
    "W1_SHAPE",
    "W2_SHAPE",
    "encode",
    "decode",
    "load_vgg16_conv1",
    "extract_conv1_from_state_dict",
    "fallback_encoder",
    "haar_encoder",
    "encoder_gain",
    "tensor_sha256",
    "check_encoder_weights",
]

W1_SHAPE = (64, 3, 3, 3)
W2_SHAPE = (64, 64, 3, 3)

EncoderTriple = Tuple[torch.Tensor, torch.Tensor, Dict[str, Any]]


# --------------------------------------------------------------------------------------------
# functional E / D
# --------------------------------------------------------------------------------------------
def encode(x: torch.Tensor, w1: torch.Tensor, w2: torch.Tensor) -> torch.Tensor:
    """E(x): two stride-1, padding-1 convolutions without bias (3 -> 64 -> 64 channels)."""
    out = F.conv2d(x, w1, bias=None, stride=1, padding=1)
    return F.conv2d(out, w2, bias=None, stride=1, padding=1)


def decode(h: torch.Tensor, w1: torch.Tensor, w2: torch.Tensor) -> torch.Tensor:
    """D(h) = E^T h: the two transposed convolutions in reverse order (64 -> 64 -> 3 channels)."""
    out = F.conv_transpose2d(h, w2, bias=None, stride=1, padding=1)
    return F.conv_transpose2d(out, w1, bias=None, stride=1, padding=1)


# --------------------------------------------------------------------------------------------
# hashing and validation
# --------------------------------------------------------------------------------------------
def tensor_sha256(*tensors: torch.Tensor) -> str:
    """sha256 of the raw little-endian float32 bytes of the tensors, concatenated in order."""
    h = hashlib.sha256()
    for t in tensors:
        arr = t.detach().to(device="cpu", dtype=torch.float32).contiguous().numpy()
        h.update(arr.astype("<f4", copy=False).tobytes())
    return h.hexdigest()


def check_encoder_weights(w1: Any, w2: Any, where: str = "encoder weights") -> Tuple[torch.Tensor, torch.Tensor]:
    """Validate shapes/dtypes and return float32 contiguous CPU clones; ValueError otherwise."""
    for name, t, shape in (("W1", w1, W1_SHAPE), ("W2", w2, W2_SHAPE)):
        if not isinstance(t, torch.Tensor):
            raise ValueError(f"{where}: {name} is a {type(t).__name__}, expected a tensor of shape {shape}")
        if tuple(t.shape) != shape:
            raise ValueError(f"{where}: {name} has shape {tuple(t.shape)}, expected {shape}")
        if not t.is_floating_point():
            raise ValueError(f"{where}: {name} has dtype {t.dtype}, expected a floating-point tensor")
        if not bool(torch.isfinite(t).all()):
            raise ValueError(f"{where}: {name} contains non-finite values")
    return (
        w1.detach().to(device="cpu", dtype=torch.float32).contiguous().clone(),
        w2.detach().to(device="cpu", dtype=torch.float32).contiguous().clone(),
    )


# --------------------------------------------------------------------------------------------
# loading VGG-16 conv1 weights
# --------------------------------------------------------------------------------------------
_DSN_KEY = re.compile(r"^operations\.(\d+)\.haar_weights([12])$")


def _strip_module(sd: Mapping[str, Any]) -> Dict[str, Any]:
    return {(k[len("module."):] if k.startswith("module.") else k): v for k, v in sd.items()}


def extract_conv1_from_state_dict(sd: Mapping[str, Any], where: str = "state dict") -> Tuple[torch.Tensor, torch.Tensor, str]:
    """Find W1, W2 in a state dict; returns (W1, W2, kind). Raises ValueError if none fits."""
    if not isinstance(sd, Mapping):
        raise ValueError(f"{where}: expected a state dict (a mapping of names to tensors), got {type(sd).__name__}")
    sd = _strip_module(sd)
    # An official DSN checkpoint: operations.{0, last}.haar_weights{1,2}, all copies equal.
    dsn = {}
    for k, v in sd.items():
        m = _DSN_KEY.match(k)
        if m:
            dsn.setdefault(int(m.group(1)), {})[int(m.group(2))] = v
    if dsn:
        for idx in sorted(dsn):
            if set(dsn[idx]) != {1, 2}:
                raise ValueError(f"{where}: DSN checkpoint has operations.{idx}.haar_weights1/2 only partly")
        first = min(dsn)
        w1, w2 = check_encoder_weights(dsn[first][1], dsn[first][2], where)
        for idx in sorted(dsn):
            o1, o2 = check_encoder_weights(dsn[idx][1], dsn[idx][2], where)
            if not (torch.equal(o1, w1) and torch.equal(o2, w2)):
                raise ValueError(f"{where}: operations.{idx}.haar_weights* differ from operations.{first}.haar_weights*")
        return w1, w2, "dsn_checkpoint"
    if "features.0.weight" in sd or "features.2.weight" in sd:
        for k in ("features.0.weight", "features.2.weight"):
            if k not in sd:
                raise ValueError(f"{where}: torchvision-style VGG state dict lacks key {k!r}")
        w1, w2 = check_encoder_weights(sd["features.0.weight"], sd["features.2.weight"], where)
        return w1, w2, "torchvision_v1"
    if "conv1_1.weight" in sd or "conv1_2.weight" in sd:
        for k in ("conv1_1.weight", "conv1_2.weight"):
            if k not in sd:
                raise ValueError(f"{where}: Caffe/Lua-converted VGG state dict lacks key {k!r}")
        w1, w2 = check_encoder_weights(sd["conv1_1.weight"], sd["conv1_2.weight"], where)
        return w1, w2, "caffe_t7"
    sample = ", ".join(list(sd.keys())[:4]) or "<empty>"
    raise ValueError(
        f"{where}: no VGG-16 conv1 weights found (need features.0/2.weight, conv1_1/conv1_2.weight "
        f"or operations.0.haar_weights1/2); first keys: {sample}"
    )


def load_vgg16_conv1(path: str) -> EncoderTriple:
    """Load the two frozen encoder tensors from a file.

    Accepted files (all ``torch.save``-d state dicts, loaded with ``weights_only=True``):

    - torchvision's ``vgg16-397923af.pth``: keys ``features.0.weight`` (64,3,3,3) and
      ``features.2.weight`` (64,64,3,3) -> ``kind="torchvision_v1"``;
    - the Lua/Caffe-converted ``vgg16.weight`` used by the official code: keys ``conv1_1.weight``
      and ``conv1_2.weight`` -> ``kind="caffe_t7"`` (the faithful choice, dsn_reference D1);
    - an official DSN checkpoint (``*_G.pth``): keys ``operations.0.haar_weights1/2`` (all
      ``operations.*.haar_weights*`` copies must be equal) -> ``kind="dsn_checkpoint"``.

    A leading ``module.`` prefix is ignored.  The weights are used exactly as stored: no channel
    flip (the Caffe weights expect BGR input, DSN feeds RGB), no bias, no rescaling.

    Returns ``(W1, W2, info)`` with info keys ``kind``, ``sha256`` (of the file), ``path``,
    ``tensors_sha256`` and ``filename_hash_ok`` (``True``/``False`` if the file name carries a
    torchvision-style ``-<hex>.pth`` hash prefix, else ``None``).  Raises ``ValueError`` with a
    one-line message for a missing/unreadable file, missing keys or wrong shapes.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise ValueError(f"VGG weights file not found: {path}")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # pickle errors, zip errors, weights_only refusals ...
        msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ValueError(f"{path}: not a loadable torch state dict ({type(exc).__name__}: {msg[:160]})") from None
    if isinstance(obj, Mapping) and "state_dict" in obj and isinstance(obj["state_dict"], Mapping):
        obj = obj["state_dict"]
    w1, w2, kind = extract_conv1_from_state_dict(obj, where=path)
    sha = sha256_file(path)
    m = re.search(r"-([0-9a-f]{6,64})\.[A-Za-z0-9]+$", os.path.basename(path))
    name_ok: Optional[bool] = sha.startswith(m.group(1)) if m else None
    info = {
        "kind": kind,
        "sha256": sha,
        "path": os.path.abspath(path),
        "tensors_sha256": tensor_sha256(w1, w2),
        "filename_hash_ok": name_ok,
    }
    return w1, w2, info


# --------------------------------------------------------------------------------------------
# fallback encoder: a closed-form Parseval (tight) frame from signed Hadamard rows
# --------------------------------------------------------------------------------------------
_MASK64 = (1 << 64) - 1


class _SplitMix64:
    """Tiny integer PRNG (SplitMix64). Pure integer arithmetic: identical on every machine and
    every Python/torch version, unlike torch/NumPy generators whose algorithms may change."""

    def __init__(self, seed: int):
        self.state = int(seed) & _MASK64

    def next(self) -> int:
        self.state = (self.state + 0x9E3779B97F4A7C15) & _MASK64
        z = self.state
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK64
        return z ^ (z >> 31)

    def below(self, n: int) -> int:
        # rejection sampling: unbiased integer in [0, n)
        limit = (1 << 64) - ((1 << 64) % n)
        while True:
            r = self.next()
            if r < limit:
                return r % n

    def permutation(self, n: int) -> list:
        p = list(range(n))
        for i in range(n - 1, 0, -1):  # Fisher-Yates
            j = self.below(i + 1)
            p[i], p[j] = p[j], p[i]
        return p


def _hadamard_sign(i: int, j: int) -> int:
    """Entry (i, j) of the Sylvester-Hadamard matrix: (-1)^popcount(i & j)."""
    return -1 if bin(i & j).count("1") % 2 else 1


def fallback_encoder(seed: int = 0) -> EncoderTriple:
    """Deterministic stand-in for the VGG conv1 tensors when no weights file is available.

    Construction (closed form, bit-identical everywhere):

    - Take the 64x64 Sylvester-Hadamard matrix H (entries +-1, H^T H = 64 I).  With a SplitMix64
      stream seeded by ``seed``, pick 27 distinct columns, permute the 64 rows and flip row signs:
      M = S P H[:, cols] / 8 is 64x27 with orthonormal columns (M^T M = I_27).
    - W1[k, c, i, j] = M[k, 9c + 3i + j] / 3, i.e. each of the 64 output filters is one row of M
      laid out over the 27 (colour, tap) positions of a 3x3 RGB patch.  Every entry is +-1/24.
    - W2 is the 64x64 identity placed on the centre tap (conv1_2 is a no-op).

    Why: with P_p the zero-padded 27-vector of the 3x3 patch at pixel p, E x(p) = M P_p x / 3, so
    E^T E = (1/9) sum_p P_p^T M^T M P_p = (1/9) sum_p P_p^T P_p, a *diagonal* operator whose entry
    at a pixel is (number of in-image 3x3 windows that contain it) / 9: exactly 1 in the interior,
    2/3 on the border rows/columns and 4/9 at the corners.  So E is a Parseval frame (perfectly
    conditioned away from the border), D(E(x)) = x there, and an untrained DSN starts as the
    identity on the image.  Every pixel's 27 neighbourhood values are spread over all 64 channels
    with equal energy (no dead channels for the 32/32 split).  The constant-image gain is 1.0 in
    the interior (measured by :func:`encoder_gain`).

    Returns ``(W1, W2, info)`` with ``info["kind"] == "fallback_hadamard_parseval"``.
    """
    rng = _SplitMix64(0x44534E00 + int(seed))  # "DSN\0" + seed
    cols = rng.permutation(64)[:27]
    rows = rng.permutation(64)
    signs = [1 if rng.below(2) else -1 for _ in range(64)]
    w1 = torch.empty(W1_SHAPE, dtype=torch.float64)
    for k in range(64):
        for q in range(27):
            c, t = divmod(q, 9)
            i, j = divmod(t, 3)
            # +-1/8 (orthonormal column scale) times 1/3 (9 overlapping windows per pixel)
            w1[k, c, i, j] = signs[k] * _hadamard_sign(rows[k], cols[q]) / 24.0
    w1 = w1.to(torch.float32).contiguous()
    w2 = torch.zeros(W2_SHAPE, dtype=torch.float32)
    for k in range(64):
        w2[k, k, 1, 1] = 1.0
    info = {
        "kind": "fallback_hadamard_parseval",
        "seed": int(seed),
        "path": None,
        "tensors_sha256": tensor_sha256(w1, w2),
        "description": "W1 = signed/permuted rows of 27 Hadamard columns / 24 (Parseval frame, "
        "E^T E = window-count/9, identity in the interior); W2 = centre-tap identity",
    }
    info["sha256"] = info["tensors_sha256"]
    return w1, w2, info


# --------------------------------------------------------------------------------------------
# Haar ablation encoder: a stride-1 (undecimated) two-level Haar packet frame
# --------------------------------------------------------------------------------------------
# 2x2 orthonormal Haar basis (LL, LH, HL, HH), entries +-1/2.
_HAAR2 = (
    ((1, 1), (1, 1)),
    ((1, 1), (-1, -1)),
    ((1, -1), (1, -1)),
    ((1, -1), (-1, 1)),
)
# Colour frame: rows of a 4x4 Hadamard matrix without its first column, / 2.  T^T T = I_3
# (a Parseval frame of R^3 with 4 vectors); row 0 is the luminance (R+G+B)/2.
_COLOUR4 = (
    (1, 1, 1),
    (1, -1, -1),
    (-1, 1, -1),
    (-1, -1, 1),
)


def haar_encoder() -> EncoderTriple:
    """Fixed Haar-based 3 -> 64 analysis (stride 1) for the "Haar wavelets instead of VGG E/D" row.

    The same two-convolution structure and tensor shapes as the VGG pair, so the model code does
    not change and D is again the adjoint E^T:

    - W1 (3 -> 16 used channels, channels 16..63 are zero): a colour Parseval frame T (4 pseudo
      channels, entries +-1/2) times the level-1 undecimated 2x2 Haar filters (LL, LH, HL, HH;
      taps at kernel offsets {0, +1}, entries +-1/4).  Channel 4c + s1.
    - W2 (16 -> 64): each level-1 channel is split again by the 2x2 Haar filters *dilated by 2*
      (taps at kernel offsets {-1, +1}, entries +-1/4): an a-trous / undecimated level-2 Haar
      packet.  Output channel 16c + 4 s1 + s2 reads input channel 4c + s1.

    All 64 channels are used.  Each stage is a Parseval frame (away from the border E1^T E1 = I
    and E2^T E2 = I on the 16 used channels), so E^T E = I in the interior and D(E(x)) = x there;
    the constant-image gain is 1.0 in the interior.  The effective filters are the 4x4 Haar
    packet atoms at dilations 1 and 2, so the receptive field is 4x4 (within the 5x5 of the pair).
    Channels 0..31 (the IFT's conditioning half) hold pseudo-colours 0 (luminance) and 1,
    channels 32..63 hold pseudo-colours 2 and 3.  All entries are exact binary fractions.
    """
    w1 = torch.zeros(W1_SHAPE, dtype=torch.float32)
    for c4 in range(4):
        for s1 in range(4):
            k = 4 * c4 + s1
            for cin in range(3):
                for a in range(2):
                    for b in range(2):
                        # T entry (+-1/2) * Haar entry (+-1/2) * undecimated normalisation (1/2)
                        w1[k, cin, 1 + a, 1 + b] = _COLOUR4[c4][cin] * _HAAR2[s1][a][b] / 8.0
    w2 = torch.zeros(W2_SHAPE, dtype=torch.float32)
    for kin in range(16):
        for s2 in range(4):
            k = 4 * kin + s2
            for a in range(2):
                for b in range(2):
                    w2[k, kin, 2 * a, 2 * b] = _HAAR2[s2][a][b] / 4.0
    info = {
        "kind": "haar_undecimated_packet",
        "path": None,
        "tensors_sha256": tensor_sha256(w1, w2),
        "description": "stride-1 two-level Haar packet (colour frame x 2x2 Haar x dilated 2x2 Haar), "
        "Parseval: E^T E = I in the interior",
    }
    info["sha256"] = info["tensors_sha256"]
    return w1, w2, info


# --------------------------------------------------------------------------------------------
# diagnostics
# --------------------------------------------------------------------------------------------
@torch.no_grad()
def encoder_gain(w1: torch.Tensor, w2: torch.Tensor, height: int = 37, width: int = 53,
                 power_iters: int = 30) -> Dict[str, Any]:
    """How far D(E(.)) = E^T E is from the identity, in float64.

    Returns ``interior_gain`` (mean of D(E(1))/1 over pixels >= 4 px from the border for a constant
    all-ones RGB image; the receptive field of E^T E has radius 4), ``interior_min``/``interior_max``,
    ``mean_gain`` over the whole image, ``dc_eigenvalues`` (eigenvalues of the 3x3 matrix
    A^T B^T B A with A, B the spatially summed W1, W2: the gain of E^T E on constant colours in
    the interior) and ``spectral_norm`` (power-iteration estimate of ||E^T E|| on a
    height x width image).
    """
    w1d = w1.detach().to("cpu", torch.float64)
    w2d = w2.detach().to("cpu", torch.float64)
    ones = torch.ones(1, 3, height, width, dtype=torch.float64)
    out = decode(encode(ones, w1d, w2d), w1d, w2d)
    inner = out[..., 4:-4, 4:-4]
    a = w1d.sum(dim=(2, 3))  # 64 x 3
    b = w2d.sum(dim=(2, 3))  # 64 x 64
    dc = a.T @ b.T @ b @ a
    eig = torch.linalg.eigvalsh(0.5 * (dc + dc.T))
    v = torch.ones(1, 3, height, width, dtype=torch.float64)
    v = v + 0.01 * torch.arange(v.numel(), dtype=torch.float64).reshape(v.shape).sin()
    lam = 0.0
    for _ in range(max(1, power_iters)):
        v = v / v.norm()
        u = decode(encode(v, w1d, w2d), w1d, w2d)
        lam = float((u * v).sum())
        v = u
    return {
        "interior_gain": float(inner.mean()),
        "interior_min": float(inner.min()),
        "interior_max": float(inner.max()),
        "mean_gain": float(out.mean()),
        "dc_eigenvalues": [float(e) for e in eig],
        "spectral_norm": lam,
    }
