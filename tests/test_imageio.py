import struct
import zlib

import numpy as np
import pytest
import torch
from PIL import Image

from bench.errors import BenchError
from bench.imageio import quantize, read_rgb, to_tensor, write_png


def _png16_rgb(a: np.ndarray) -> bytes:
    h, w, _ = a.shape
    raw = b"".join(b"\x00" + a[y].astype(">u2").tobytes() for y in range(h))

    def chunk(t, d):
        return struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d) & 0xFFFFFFFF)

    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 16, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))


def test_rgb_roundtrip_is_exact(tmp_path, rng):
    a = rng.integers(0, 256, (13, 17, 3), dtype=np.uint8)
    write_png(tmp_path / "a.png", a)
    assert np.array_equal(read_rgb(tmp_path / "a.png"), a)
    assert not list(tmp_path.glob(".*tmp"))  # nothing half-written left behind


def test_quantize_rounds_and_clamps():
    t = torch.tensor([0.0, 0.5 / 255, 1.49 / 255, 1.51 / 255, 1.2, -0.3]).view(1, 1, 1, 6).repeat(1, 3, 1, 1)
    q = quantize(t)[0, :, 0]
    assert q.tolist() == [0, 0, 1, 2, 255, 0]  # 0.5 rounds half to even, as torch.round in tensor2img
    a = np.arange(256, dtype=np.uint8).reshape(16, 16, 1).repeat(3, axis=2)
    assert np.array_equal(quantize(to_tensor(a)), a)


def test_grayscale_palette_and_opaque_alpha_are_converted(tmp_path, rng):
    g = rng.integers(0, 256, (9, 11), dtype=np.uint8)
    Image.fromarray(g, "L").save(tmp_path / "g.png")
    out = read_rgb(tmp_path / "g.png")
    assert out.shape == (9, 11, 3) and all(np.array_equal(out[..., c], g) for c in range(3))

    rgb = rng.integers(0, 256, (9, 11, 3), dtype=np.uint8)
    Image.fromarray(rgb).quantize(16).save(tmp_path / "p.png")
    pal = Image.open(tmp_path / "p.png").convert("RGB")
    assert np.array_equal(read_rgb(tmp_path / "p.png"), np.asarray(pal))

    rgba = np.dstack([rgb, np.full((9, 11), 255, np.uint8)])
    Image.fromarray(rgba, "RGBA").save(tmp_path / "a.png")
    assert np.array_equal(read_rgb(tmp_path / "a.png"), rgb)


def test_transparent_alpha_and_16bit_colour_are_refused(tmp_path, rng):
    rgba = rng.integers(0, 256, (5, 6, 4), dtype=np.uint8)
    rgba[0, 0, 3] = 10
    Image.fromarray(rgba, "RGBA").save(tmp_path / "t.png")
    with pytest.raises(BenchError, match="transparent"):
        read_rgb(tmp_path / "t.png")
    (tmp_path / "c16.png").write_bytes(_png16_rgb(rng.integers(0, 65536, (4, 5, 3)).astype(np.uint16)))
    with pytest.raises(BenchError, match="16-bit colour"):
        read_rgb(tmp_path / "c16.png")


def test_16bit_grayscale_is_scaled_with_rounding(tmp_path):
    g = np.array([[0, 257, 65535, 128 * 257 + 200]], dtype=np.uint16)
    Image.fromarray(g).save(tmp_path / "g16.png")
    assert Image.open(tmp_path / "g16.png").mode.startswith("I")
    out = read_rgb(tmp_path / "g16.png")
    assert out[0, :, 0].tolist() == [0, 1, 255, 129]


def test_jpeg_exif_orientation_is_applied(tmp_path, rng):
    a = np.kron(rng.integers(0, 256, (3, 5, 3), dtype=np.uint8), np.ones((8, 8, 1), np.uint8))
    img = Image.fromarray(a)
    img.save(tmp_path / "plain.jpg", quality=95)
    exif = img.getexif()
    exif[0x0112] = 6  # "rotate 90° clockwise to display"
    img.save(tmp_path / "o.jpg", quality=95, exif=exif.tobytes())
    plain, oriented = read_rgb(tmp_path / "plain.jpg"), read_rgb(tmp_path / "o.jpg")
    assert plain.shape == (24, 40, 3) and oriented.shape == (40, 24, 3)
    assert np.array_equal(oriented, np.rot90(plain, k=-1))


def test_corrupt_truncated_and_missing_files(tmp_path, rng):
    a = rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)
    write_png(tmp_path / "ok.png", a)
    data = (tmp_path / "ok.png").read_bytes()
    (tmp_path / "trunc.png").write_bytes(data[: len(data) // 2])
    (tmp_path / "junk.png").write_bytes(b"not an image at all")
    for name in ("trunc.png", "junk.png"):
        with pytest.raises(BenchError, match="cannot decode"):
            read_rgb(tmp_path / name)
    with pytest.raises(BenchError, match="missing image"):
        read_rgb(tmp_path / "nope.png")


def test_prophoto_tiff_is_converted_to_srgb(shared_data):
    path = next((shared_data / "fivek_samples/prophoto_rgb/input").glob("*.tif"))
    naive = np.asarray(Image.open(path).convert("RGB")).astype(float)
    converted = read_rgb(path).astype(float)
    assert converted.shape == naive.shape
    # ProPhoto values read as sRGB look dull and dark; converted to sRGB they are brighter and more saturated
    assert converted.mean() > naive.mean() + 3
    assert converted.std(axis=2).mean() > naive.std(axis=2).mean()
    srgb_file = next((shared_data / "fivek_samples/input").glob("*.tif"))
    assert np.array_equal(read_rgb(srgb_file), np.asarray(Image.open(srgb_file).convert("RGB")))
