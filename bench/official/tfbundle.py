"""Read TensorFlow checkpoints (the V2 "tensor bundle") without TensorFlow.

A checkpoint ``PREFIX`` is ``PREFIX.index`` plus data shards ``PREFIX.data-0000k-of-0000n``:

* the index is a LevelDB SSTable (TF's ``core/lib/io/table*``): data blocks of prefix-compressed
  ``(key, value)`` entries, an index block pointing at them and a 48-byte footer ending in the magic
  ``0xdb4775248b80fb57``; every block is followed by a compression byte and a masked CRC32C;
* the empty key holds a ``BundleHeaderProto`` (number of shards, endianness, version), every other key is a
  tensor name whose value is a ``BundleEntryProto`` (dtype, shape, shard id, offset, size, masked CRC32C of
  the tensor's bytes) -- ``core/protobuf/tensor_bundle.proto``;
* a shard is the tensors' raw little-endian bytes, back to back.

Only the few protobuf fields above are decoded (by hand: a varint reader is all they need). Every block and
every tensor read is CRC32C-checked; a missing shard is refused with its name and the size the index expects.
"""

from __future__ import annotations

import os
import re
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Mapping

import numpy as np

__all__ = ["TFCheckpointError", "TensorEntry", "Bundle", "resolve_prefix", "open_bundle", "masked_crc32c"]

_MAGIC = 0xDB4775248B80FB57
_FOOTER = 48
_DTYPES = {1: "<f4", 2: "<f8", 3: "<i4", 4: "u1", 5: "<i2", 6: "i1", 9: "<i8", 10: "?", 17: "<u2", 19: "<f2",
           22: "<u4", 23: "<u8"}
_DTYPE_NAMES = {1: "float32", 2: "float64", 3: "int32", 4: "uint8", 5: "int16", 6: "int8", 7: "string",
                9: "int64", 10: "bool", 14: "bfloat16", 17: "uint16", 19: "float16", 20: "resource",
                21: "variant", 22: "uint32", 23: "uint64"}


class TFCheckpointError(ValueError):
    """A checkpoint that cannot be read as it claims to be; the message is one line naming the file."""


def _crc32c(data: bytes | memoryview) -> int:
    import google_crc32c

    return google_crc32c.value(bytes(data))


def masked_crc32c(data: bytes | memoryview) -> int:
    """LevelDB/TF's masked CRC32C (``crc32c::Mask``): rotate right by 15 bits, add a constant."""
    crc = _crc32c(data)
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def _varint(buf: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(buf):
            raise TFCheckpointError("truncated varint")
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, pos
        shift += 7
        if shift > 63:
            raise TFCheckpointError("varint too long")


def _fields(buf: bytes) -> Iterator[tuple[int, int, object]]:
    """(field number, wire type, value) of a protobuf message: ints for varints/fixed, bytes for the rest."""
    pos = 0
    while pos < len(buf):
        tag, pos = _varint(buf, pos)
        num, wire = tag >> 3, tag & 7
        if wire == 0:
            value, pos = _varint(buf, pos)
        elif wire == 1:
            value, pos = struct.unpack_from("<Q", buf, pos)[0], pos + 8
        elif wire == 2:
            n, pos = _varint(buf, pos)
            value, pos = buf[pos:pos + n], pos + n
        elif wire == 5:
            value, pos = struct.unpack_from("<I", buf, pos)[0], pos + 4
        else:
            raise TFCheckpointError(f"unsupported protobuf wire type {wire}")
        yield num, wire, value


@dataclass(frozen=True)
class TensorEntry:
    name: str
    dtype: str           # TF's name: float32, int64, string, ...
    shape: tuple[int, ...]
    shard: int
    offset: int
    size: int
    crc32c: int          # masked, as stored
    sliced: bool = False

    @property
    def numel(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64))


def _shape(buf: bytes) -> tuple[int, ...]:
    dims = []
    for num, _, value in _fields(buf):
        if num == 2:                                   # TensorShapeProto.dim
            size = next((v for n, _, v in _fields(value) if n == 1), 0)   # type: ignore[arg-type]
            dims.append(int(size) - (1 << 64) if int(size) >= 1 << 63 else int(size))
        elif num == 3 and value:                       # unknown_rank
            raise TFCheckpointError("tensor of unknown rank")
    return tuple(dims)


def _entry(name: str, buf: bytes) -> TensorEntry:
    dtype, shape, shard, offset, size, crc, sliced = 0, (), 0, 0, 0, 0, False
    for num, _, value in _fields(buf):
        if num == 1:
            dtype = int(value)  # type: ignore[arg-type]
        elif num == 2:
            shape = _shape(value)  # type: ignore[arg-type]
        elif num == 3:
            shard = int(value)  # type: ignore[arg-type]
        elif num == 4:
            offset = int(value)  # type: ignore[arg-type]
        elif num == 5:
            size = int(value)  # type: ignore[arg-type]
        elif num == 6:
            crc = int(value)  # type: ignore[arg-type]
        elif num == 7:
            sliced = True
    return TensorEntry(name, _DTYPE_NAMES.get(dtype, f"dtype{dtype}"), shape, shard, offset, size, crc, sliced)


def _block(data: bytes, offset: int, size: int, path: Path) -> bytes:
    end = offset + size
    if end + 5 > len(data):
        raise TFCheckpointError(f"{path}: truncated (a block at {offset} runs past the end of the file)")
    contents, kind = data[offset:end], data[end]
    (stored,) = struct.unpack_from("<I", data, end + 1)
    if masked_crc32c(data[offset:end + 1]) != stored:
        raise TFCheckpointError(f"{path}: block at offset {offset} fails its CRC32C check (damaged file)")
    if kind == 1:
        try:
            import snappy  # type: ignore[import-not-found]
        except ImportError:
            raise TFCheckpointError(f"{path}: snappy-compressed index block; install python-snappy") from None
        return snappy.decompress(contents)
    if kind != 0:
        raise TFCheckpointError(f"{path}: unknown block compression {kind}")
    return contents


def _block_entries(block: bytes, path: Path) -> Iterator[tuple[bytes, bytes]]:
    if len(block) < 4:
        raise TFCheckpointError(f"{path}: malformed table block")
    (n_restarts,) = struct.unpack_from("<I", block, len(block) - 4)
    limit = len(block) - 4 - 4 * n_restarts
    if limit < 0:
        raise TFCheckpointError(f"{path}: malformed table block")
    pos, key = 0, b""
    while pos < limit:
        shared, pos = _varint(block, pos)
        unshared, pos = _varint(block, pos)
        vlen, pos = _varint(block, pos)
        if shared > len(key) or pos + unshared + vlen > limit:
            raise TFCheckpointError(f"{path}: malformed table entry")
        key = key[:shared] + block[pos:pos + unshared]
        pos += unshared
        yield key, block[pos:pos + vlen]
        pos += vlen


def _handle(buf: bytes, pos: int = 0) -> tuple[int, int, int]:
    offset, pos = _varint(buf, pos)
    size, pos = _varint(buf, pos)
    return offset, size, pos


def resolve_prefix(path: str | os.PathLike) -> Path:
    """The checkpoint prefix for a folder (read its ``checkpoint`` file, else its only ``*.index``), an
    ``.index``/``.data-*`` file, or the prefix itself."""
    p = Path(path).expanduser()
    if p.is_dir():
        state = p / "checkpoint"
        if state.is_file():
            m = re.search(r'^model_checkpoint_path:\s*"(.*)"\s*$', state.read_text(errors="replace"), re.M)
            if m:
                prefix = Path(m.group(1))
                prefix = prefix if prefix.is_absolute() and Path(f"{prefix}.index").is_file() else p / prefix.name
                if Path(f"{prefix}.index").is_file():
                    return prefix
        indexes = sorted(p.glob("*.index"))
        if len(indexes) == 1:
            return indexes[0].with_suffix("")
        if not indexes:
            raise TFCheckpointError(f"{p}: no TensorFlow checkpoint (no 'checkpoint' file and no *.index)")
        raise TFCheckpointError(f"{p}: {len(indexes)} *.index files and no 'checkpoint' file naming one; "
                                "give the .index file")
    name = p.name
    if name.endswith(".index"):
        return p.with_name(name[: -len(".index")])
    m = re.match(r"^(.*)\.data-\d{5}-of-\d{5}$", name)
    if m:
        return p.with_name(m.group(1))
    if Path(f"{p}.index").is_file():
        return p
    raise TFCheckpointError(f"{p}: not a TensorFlow checkpoint (expected a folder, PREFIX.index or PREFIX)")


class Bundle:
    """An opened checkpoint: ``entries`` from the index; ``read(name)`` loads and CRC-checks one tensor."""

    def __init__(self, prefix: Path, entries: Mapping[str, TensorEntry], num_shards: int, index_sha256: str):
        self.prefix = prefix
        self.entries = dict(entries)
        self.num_shards = num_shards
        self.index_sha256 = index_sha256

    @property
    def index_path(self) -> Path:
        return Path(f"{self.prefix}.index")

    def shard_path(self, shard: int) -> Path:
        return Path(f"{self.prefix}.data-{shard:05d}-of-{self.num_shards:05d}")

    def shard_sizes(self) -> dict[int, int]:
        """Bytes each shard must hold at least, from the index (the end of its last tensor)."""
        out: dict[int, int] = {}
        for e in self.entries.values():
            out[e.shard] = max(out.get(e.shard, 0), e.offset + e.size)
        return out

    def missing_shards(self) -> list[tuple[Path, int]]:
        """(shard path, expected size) of every data shard that is absent or shorter than the index says."""
        out = []
        for shard, size in sorted(self.shard_sizes().items()):
            p = self.shard_path(shard)
            if not p.is_file() or p.stat().st_size < size:
                out.append((p, size))
        return out

    def require_shards(self) -> None:
        missing = self.missing_shards()
        if missing:
            p, size = missing[0]
            state = "absent" if not p.is_file() else f"only {p.stat().st_size:,} bytes"
            raise TFCheckpointError(f"{self.index_path}: data shard {p.name} is {state}; the index expects "
                                    f"{size:,} bytes (copy it beside the .index)")

    def read(self, name: str) -> np.ndarray:
        e = self.entries[name]
        if e.sliced:
            raise TFCheckpointError(f"{self.index_path}: {name} is stored as partitioned slices (not supported)")
        fmt = _DTYPES.get({v: k for k, v in _DTYPE_NAMES.items()}.get(e.dtype, -1))
        path = self.shard_path(e.shard)
        if not path.is_file():
            self.require_shards()
        with open(path, "rb") as f:
            f.seek(e.offset)
            raw = f.read(e.size)
        if len(raw) != e.size:
            raise TFCheckpointError(f"{path}: truncated; {name} needs bytes {e.offset}..{e.offset + e.size}")
        if masked_crc32c(raw) != e.crc32c:
            raise TFCheckpointError(f"{path}: tensor {name} fails its CRC32C check (damaged shard)")
        if fmt is None:
            raise TFCheckpointError(f"{self.index_path}: {name} has dtype {e.dtype}, which is not read here")
        arr = np.frombuffer(raw, dtype=np.dtype(fmt))
        if arr.size != e.numel:
            raise TFCheckpointError(f"{path}: {name} holds {arr.size} values, its shape {e.shape} needs {e.numel}")
        return arr.reshape(e.shape).copy()

    def read_all(self, names: list[str] | None = None) -> dict[str, np.ndarray]:
        """Every (or the named) tensor; the shards are checked first so a missing one is named up front."""
        self.require_shards()
        return {n: self.read(n) for n in (names if names is not None else self.entries)}


def open_bundle(path: str | os.PathLike) -> Bundle:
    """Parse a checkpoint's index (see the module doc). Only the index is read; shards are opened by ``read``."""
    import hashlib

    prefix = resolve_prefix(path)
    index = Path(f"{prefix}.index")
    try:
        data = index.read_bytes()
    except OSError as e:
        raise TFCheckpointError(f"{index}: cannot be read ({e.strerror or e})") from None
    if len(data) < _FOOTER or struct.unpack_from("<Q", data, len(data) - 8)[0] != _MAGIC:
        raise TFCheckpointError(f"{index}: not a TensorFlow checkpoint index (no SSTable footer magic)")
    footer = data[len(data) - _FOOTER:]
    _, _, pos = _handle(footer)               # metaindex (unused by bundles)
    idx_offset, idx_size, _ = _handle(footer, pos)
    entries: dict[str, TensorEntry] = {}
    num_shards = 1
    for _, handle in _block_entries(_block(data, idx_offset, idx_size, index), index):
        offset, size, _ = _handle(handle)
        for key, value in _block_entries(_block(data, offset, size, index), index):
            name = key.decode("utf-8", errors="replace")
            if name == "":
                for num, _, v in _fields(value):
                    if num == 1:
                        num_shards = int(v)  # type: ignore[arg-type]
                    elif num == 2 and v != 0:
                        raise TFCheckpointError(f"{index}: big-endian checkpoint (not supported)")
            else:
                entries[name] = _entry(name, value)
    if not entries:
        raise TFCheckpointError(f"{index}: the index lists no tensors")
    return Bundle(prefix, entries, num_shards, hashlib.sha256(data).hexdigest())
