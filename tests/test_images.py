"""Image loading: every bad input gives its own clear ImageError; every odd good input converts right."""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from mmapp.config import EncoderConfig
from mmapp.errors import ImageError
from mmapp.images import load_image, preprocess, preprocess_batch


def _noise(h: int, w: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def _png_claiming(width: int, height: int) -> bytes:
    """A small valid PNG whose IHDR chunk (and its CRC) is patched to claim ``width`` x ``height``."""
    buf = io.BytesIO()
    Image.fromarray(_noise(16, 16)).save(buf, "PNG")
    data = bytearray(buf.getvalue())
    assert data[12:16] == b"IHDR"
    data[16:24] = struct.pack(">II", width, height)
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))
    return bytes(data)


def _error(src, **kwargs) -> str:
    with pytest.raises(ImageError) as info:
        load_image(src, **kwargs)
    text = str(info.value)
    assert "\n" not in text
    return text


# ------------------------------------------------------------------------------------------------
# Refused inputs


def test_missing_file(tmp_path) -> None:
    path = tmp_path / "nope.jpg"
    text = _error(path)
    assert "not found" in text and str(path) in text


def test_not_an_image(tmp_path) -> None:
    path = tmp_path / "notes.png"
    path.write_text("these are not pixels\n" * 20)
    text = _error(path)
    assert "not an image" in text and str(path) in text
    assert "not an image" in _error(b"\x00\x01 definitely not an image")


@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
def test_truncated_file(tmp_path, fmt: str) -> None:
    buf = io.BytesIO()
    Image.fromarray(_noise(96, 96)).save(buf, fmt)
    path = tmp_path / f"cut.{fmt.lower()}"
    path.write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    text = _error(path)
    assert "corrupt or truncated" in text and str(path) in text
    assert "corrupt or truncated" in _error(path.read_bytes())


def test_tiny_image(tmp_path) -> None:
    path = tmp_path / "dot.png"
    Image.new("RGB", (1, 1)).save(path)
    assert "1x1 pixels: too small" in _error(path)
    assert "too small" in _error(np.zeros((8, 300, 3), dtype=np.uint8))


def test_decompression_bomb_header(tmp_path) -> None:
    path = tmp_path / "bomb.png"
    path.write_bytes(_png_claiming(50_000, 50_000))
    with pytest.raises(Image.DecompressionBombError):  # the crafted header is what PIL reads
        Image.open(path)
    text = _error(path)
    assert "too large" in text and str(path) in text


def test_over_the_pixel_limit(tmp_path) -> None:
    path = tmp_path / "big.png"
    path.write_bytes(_png_claiming(8_000, 6_000))  # 48 MP: under PIL's own guard, over ours
    assert "8000x6000 pixels: more than the 40 megapixel limit" in _error(path)
    assert "megapixel limit" in _error(_noise(100, 100), max_pixels=5_000)


@pytest.mark.parametrize("shape, dtype", [
    ((32, 32, 2), np.uint8),
    ((32, 32, 5), np.uint8),
    ((32,), np.uint8),
    ((2, 32, 32, 3), np.uint8),
    ((32, 32, 3), np.complex64),
])
def test_unsupported_arrays(shape, dtype) -> None:
    text = _error(np.zeros(shape, dtype=dtype))
    assert "shape" in text or "dtype" in text


def test_non_finite_float_array() -> None:
    arr = np.zeros((32, 32, 3), dtype=np.float32)
    arr[3, 4, 1] = np.nan
    assert "NaN" in _error(arr)


def test_unsupported_input_type() -> None:
    assert "unsupported image input of type int" in _error(42)


# ------------------------------------------------------------------------------------------------
# Accepted inputs and their conversions


def _rgb(img: Image.Image) -> np.ndarray:
    assert img.mode == "RGB"
    return np.asarray(img).astype(int)


def test_sources_agree(tmp_path) -> None:
    arr = _noise(20, 30)
    path = tmp_path / "x.png"
    Image.fromarray(arr).save(path)
    for src in (path, str(path), path.read_bytes(), Image.fromarray(arr), arr):
        assert np.array_equal(_rgb(load_image(src)), arr)


def test_grayscale(tmp_path) -> None:
    gray = np.random.default_rng(0).integers(0, 256, (20, 24), dtype=np.uint8)
    path = tmp_path / "g.png"
    Image.fromarray(gray).save(path)
    for src in (path, gray, gray[..., None]):
        out = _rgb(load_image(src))
        assert out.shape == (20, 24, 3)
        assert all(np.array_equal(out[..., c], gray) for c in range(3))


def test_rgba_is_composited_on_white(tmp_path) -> None:
    rgba = np.zeros((16, 16, 4), dtype=np.uint8)
    rgba[:8] = (255, 0, 0, 0)  # fully transparent red -> white
    rgba[8:] = (0, 0, 255, 255)  # opaque blue
    rgba[8:, :4] = (0, 0, 0, 128)  # half-transparent black -> mid grey
    path = tmp_path / "a.png"
    Image.fromarray(rgba, "RGBA").save(path)
    for src in (path, rgba):
        out = _rgb(load_image(src))
        assert (out[:8] == 255).all()
        assert (out[8:, 4:] == (0, 0, 255)).all()
        assert (abs(out[8:, :4] - 127) <= 1).all()
    la = Image.fromarray(rgba, "RGBA").convert("LA")
    assert (_rgb(load_image(la))[:8] == 255).all()


def test_palette_with_transparency(tmp_path) -> None:
    img = Image.new("P", (16, 16), 0)
    img.putpalette([0, 255, 0] + [200, 0, 0] + [0] * (256 * 3 - 6))
    img.paste(1, (0, 8, 16, 16))
    img.info["transparency"] = 0  # palette entry 0 (green) is transparent
    path = tmp_path / "p.png"
    img.save(path, transparency=0)
    for src in (path, img):
        out = _rgb(load_image(src))
        assert (out[:8] == 255).all(), "transparent palette pixels must become white, not green"
        assert (out[8:] == (200, 0, 0)).all()


def test_cmyk(tmp_path) -> None:
    img = Image.new("CMYK", (16, 16), (0, 0, 0, 0))
    img.paste((255, 0, 0, 0), (0, 0, 8, 16))  # cyan on the left
    path = tmp_path / "c.jpg"
    img.save(path, quality=100)
    for src, tol in ((img, 0), (path, 6)):
        out = _rgb(load_image(src))
        assert (abs(out[:, 8:] - 255) <= tol).all()
        assert (abs(out[:, :8] - (0, 255, 255)) <= tol).all()


def test_sixteen_bit(tmp_path) -> None:
    values = np.zeros((16, 16), dtype=np.uint16)
    values[:, :8] = 65535
    values[:, 8:] = 32768
    img = Image.fromarray(values)
    assert img.mode == "I;16"
    path = tmp_path / "d.png"
    img.save(path)
    for src in (img, path, values):
        out = _rgb(load_image(src))
        assert (out[:, :8] == 255).all()
        assert (abs(out[:, 8:] - 128) <= 1).all()


def test_float_arrays() -> None:
    unit = np.random.default_rng(0).random((16, 20, 3)).astype(np.float32)  # 0..1
    out = _rgb(load_image(unit))
    assert (abs(out - unit * 255) <= 1).all()
    wide = unit * 255.0  # 0..255 floats are taken as they are
    assert (abs(_rgb(load_image(wide)) - wide) <= 1).all()


def test_chw_arrays() -> None:
    hwc = _noise(20, 24)
    chw = np.ascontiguousarray(hwc.transpose(2, 0, 1))
    assert np.array_equal(_rgb(load_image(chw)), hwc)
    tensor_like = chw.astype(np.float32) / 255.0
    assert (abs(_rgb(load_image(tensor_like)) - hwc) <= 1).all()


def test_exif_rotation(tmp_path) -> None:
    arr = np.zeros((20, 40, 3), dtype=np.uint8)  # 40 wide, 20 high: red left half, blue right half
    arr[:, :20] = (255, 0, 0)
    arr[:, 20:] = (0, 0, 255)
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display"
    path = tmp_path / "rotated.jpg"
    Image.fromarray(arr).save(path, exif=exif.tobytes(), quality=95)
    with Image.open(path) as raw:
        assert raw.size == (40, 20)
    img = load_image(path)
    assert img.size == (20, 40)
    out = _rgb(img)
    # turned clockwise, the left (red) half is on top
    assert out[5, 10, 0] > 200 and out[5, 10, 2] < 60
    assert out[35, 10, 2] > 200 and out[35, 10, 0] < 60


def test_animated_gif_first_frame(tmp_path) -> None:
    frames = [Image.new("RGB", (16, 16), c) for c in ((255, 0, 0), (0, 255, 0), (0, 0, 255))]
    path = tmp_path / "anim.gif"
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=50, loop=0)
    with Image.open(path) as im:
        assert im.n_frames == 3
        im.seek(2)  # a PIL image left on a later frame still gives the first
        assert (_rgb(load_image(im)) == (255, 0, 0)).all()
    assert (_rgb(load_image(path)) == (255, 0, 0)).all()


def test_preprocess_resizes_and_normalises() -> None:
    cfg = EncoderConfig(weights="none", input_size=64, mean=(0.5, 0.25, 0.0), std=(0.5, 0.25, 1.0))
    img = Image.new("RGB", (100, 30), (255, 0, 255))
    x = preprocess(img, cfg)
    assert x.shape == (3, 64, 64) and x.dtype == torch.float32
    assert torch.allclose(x[0], torch.ones(64, 64))  # (1 - 0.5) / 0.5
    assert torch.allclose(x[1], torch.full((64, 64), -1.0))  # (0 - 0.25) / 0.25
    assert torch.allclose(x[2], torch.ones(64, 64))  # (1 - 0) / 1
    batch, sizes = preprocess_batch([img, np.zeros((40, 20), dtype=np.uint8)], cfg)
    assert batch.shape == (2, 3, 64, 64) and sizes == [(100, 30), (20, 40)]


def test_a_large_image_is_reduced_by_a_whole_factor_before_the_bicubic_resize() -> None:
    cfg = EncoderConfig(weights="none", input_size=32, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))
    small = Image.fromarray(_noise(90, 80))  # under 3x the input: the plain bicubic resize
    as_is = np.asarray(small.resize((32, 32), Image.BICUBIC), np.float32) / 255
    assert np.array_equal(preprocess(small, cfg).permute(1, 2, 0).numpy(), as_is)
    large = Image.fromarray(_noise(200, 260))  # 6.25x and 8.1x: reduced by 2, then resized from 130 x 100
    reduced = np.asarray(large.reduce(2).resize((32, 32), Image.BICUBIC), np.float32) / 255
    got = preprocess(large, cfg).permute(1, 2, 0).numpy()
    assert np.array_equal(got, reduced)
    full = np.asarray(large.resize((32, 32), Image.BICUBIC), np.float32) / 255
    assert 0 < np.abs(got - full).mean() < 0.02  # not the full resize, but close to it


def test_paths_are_accepted_as_str_and_path(tmp_path: Path) -> None:
    path = tmp_path / "z.jpg"
    Image.fromarray(_noise(32, 32)).save(path)
    assert load_image(str(path)).size == load_image(path).size == (32, 32)
