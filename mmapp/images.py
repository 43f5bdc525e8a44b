"""Reading images from anything a user may hand us, safely, and preprocessing them for the encoder.

Accepts file paths, bytes, PIL images and numpy arrays; handles grayscale, RGBA/LA (composited on
white), palette, CMYK, 16-bit and float images, EXIF rotation and animated images (first frame);
refuses unreadable files, truncated data, decompression bombs and tiny images with an ``ImageError``.
"""

from __future__ import annotations

import io
import warnings
from pathlib import Path
from typing import Sequence, Union

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError
from torch import Tensor

from mmapp.config import EncoderConfig
from mmapp.errors import ImageError

ImageInput = Union[str, Path, bytes, Image.Image, np.ndarray]

MAX_PIXELS = 40_000_000  # 40 megapixels: larger is refused as a possible decompression bomb
MIN_SIDE = 16
# An image 3x or more the encoder's input on a side is first reduced by a whole factor (a box filter)
# so that 3x the input is left for the bicubic resize: a 4032 x 3024 photo resizes in 16.8 ms against
# 69.6, and differs by 0.13-0.25 / 255 on average (at most 3 / 255; docs/benchmarks.md, "The HTTP
# path in C, the head's own cells, large photos"). Images under 3x the input are not touched.
REDUCING_GAP = 3.0


def _describe(src: object) -> str:
    if isinstance(src, (str, Path)):
        return str(src)
    return f"the given {type(src).__name__}"


def _from_array(arr: np.ndarray) -> Image.Image:
    if arr.ndim == 3 and arr.shape[0] in (1, 3, 4) and arr.shape[-1] not in (1, 3, 4):
        arr = np.moveaxis(arr, 0, -1)  # (C, H, W) -> (H, W, C)
    if arr.ndim == 3 and arr.shape[-1] == 1:
        arr = arr[..., 0]
    if arr.ndim not in (2, 3) or (arr.ndim == 3 and arr.shape[-1] not in (3, 4)):
        raise ImageError(f"an image array must be (H, W), (H, W, 3) or (H, W, 4), got shape {arr.shape}")
    if arr.dtype == np.uint8:
        pass
    elif arr.dtype == np.uint16:
        arr = (arr >> 8).astype(np.uint8)
    elif arr.dtype == bool:
        arr = arr.astype(np.uint8) * 255
    elif np.issubdtype(arr.dtype, np.floating):
        if not np.isfinite(arr).all():
            raise ImageError("the image array contains NaN or infinite values")
        scale = 255.0 if arr.max(initial=0.0) <= 1.0 else 1.0
        arr = np.clip(arr * scale, 0, 255).astype(np.uint8)
    elif np.issubdtype(arr.dtype, np.integer):
        arr = np.clip(arr, 0, 255).astype(np.uint8)
    else:
        raise ImageError(f"unsupported image array dtype {arr.dtype}")
    return Image.fromarray(np.ascontiguousarray(arr))


def _to_rgb(img: Image.Image) -> Image.Image:
    if img.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        arr = np.asarray(img, dtype=np.float64)
        hi = 65535.0 if img.mode.startswith("I;16") or arr.max(initial=0) > 255 else 255.0
        img = Image.fromarray(np.clip(arr / hi * 255.0, 0, 255).astype(np.uint8))
    if img.mode == "P":
        img = img.convert("RGBA" if "transparency" in img.info else "RGB")
    if img.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return img.convert("RGB")


def load_image(src: ImageInput, max_pixels: int = MAX_PIXELS) -> Image.Image:
    """Any supported input -> an RGB ``PIL.Image`` (EXIF-rotated), or ``ImageError``."""
    return decode_image(src, max_pixels)[0]


def decode_image(src: ImageInput, max_pixels: int = MAX_PIXELS) -> tuple[Image.Image, int]:
    """Like ``load_image``, and how many frames the source had (> 1: animated, the first is used)."""
    where = _describe(src)
    if isinstance(src, np.ndarray):
        img = _from_array(src)
    elif isinstance(src, Image.Image):
        img = src
    elif isinstance(src, (str, Path, bytes, bytearray)):
        if isinstance(src, (str, Path)) and not Path(src).is_file():
            raise ImageError(f"image not found: {src}")
        fp = io.BytesIO(src) if isinstance(src, (bytes, bytearray)) else src
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("error", Image.DecompressionBombWarning)
                img = Image.open(fp)
        except (UnidentifiedImageError, Image.DecompressionBombWarning, Image.DecompressionBombError) as e:
            if isinstance(e, UnidentifiedImageError):
                raise ImageError(f"{where} is not an image file PIL can read") from None
            raise ImageError(f"{where} is too large to decode safely (decompression bomb guard)") from None
        except OSError as e:
            raise ImageError(f"{where} cannot be read: {e}") from None
    else:
        raise ImageError(f"unsupported image input of type {type(src).__name__}")
    width, height = img.size
    if width * height > max_pixels:
        raise ImageError(f"{where} is {width}x{height} pixels: more than the {max_pixels // 1_000_000} "
                         "megapixel limit")
    if min(width, height) < MIN_SIDE:
        raise ImageError(f"{where} is {width}x{height} pixels: too small (at least {MIN_SIDE}x{MIN_SIDE})")
    try:
        frames = getattr(img, "n_frames", 1)
        if frames > 1:
            img.seek(0)  # animated GIF/WebP/APNG: the first frame
        img.load()
        img = ImageOps.exif_transpose(img)
        return _to_rgb(img), frames
    except (OSError, SyntaxError, ValueError) as e:
        raise ImageError(f"{where} is corrupt or truncated: {e}") from None


def preprocess(img: Image.Image, cfg: EncoderConfig) -> Tensor:
    """RGB PIL image -> normalised tensor (3, S, S), S = ``cfg.input_size`` (whole image, resized)."""
    size = cfg.input_size
    if img.size != (size, size):
        img = img.resize((size, size), Image.BICUBIC, reducing_gap=REDUCING_GAP)
    # in numpy: no torch thread pool is entered, so concurrent requests' threads do this side by side
    x = np.asarray(img, dtype=np.float32) / np.float32(255.0)  # (S, S, 3)
    x = (x - np.asarray(cfg.mean, dtype=np.float32)) / np.asarray(cfg.std, dtype=np.float32)
    return torch.from_numpy(np.ascontiguousarray(x.transpose(2, 0, 1)))  # (3, S, S)


def preprocess_batch(images: Sequence[ImageInput], cfg: EncoderConfig) -> tuple[Tensor, list[tuple[int, int]]]:
    """Inputs -> (B, 3, S, S) and each image's original (width, height)."""
    pil = [load_image(i) for i in images]
    return torch.stack([preprocess(p, cfg) for p in pil]), [p.size for p in pil]
