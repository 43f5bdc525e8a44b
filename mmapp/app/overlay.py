"""Attention maps drawn over images, smooth like the Show, Attend and Tell figures.

A map is an (H, W) grid of weights; it is upsampled to the image's size with bicubic interpolation,
scaled to 0..1 and blended over the image with a colour map whose opacity follows the
weight, so unattended regions keep the photo's own colours.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

DISPLAY_SIDE = 448  # overlays are drawn on a copy of the image at most this many pixels on a side


def fit_for_display(image: Image.Image, max_side: int = DISPLAY_SIDE) -> Image.Image:
    """A copy of ``image`` scaled down (never up) so that its longer side is at most ``max_side``."""
    copy = image.convert("RGB")
    copy.thumbnail((max_side, max_side), Image.BICUBIC)
    return copy


def smooth_map(attention: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """attention (H, W) -> (height, width) float32 in 0..1, bicubic-upsampled to ``size`` = (width, height).

    Scaled as (a - min) / max: a peaked map spans 0..1 like min-max scaling, while a nearly flat one
    (the model looked everywhere alike) stays faint instead of having its noise stretched to full range.
    """
    grid = np.asarray(attention, dtype=np.float32)
    if grid.ndim != 2 or grid.size == 0:
        raise ValueError(f"an attention map must be (H, W), got shape {grid.shape}")
    width, height = size
    x = torch.from_numpy(np.ascontiguousarray(grid))[None, None]  # (1, 1, H, W)
    up = F.interpolate(x, size=(height, width), mode="bicubic", align_corners=False)[0, 0]  # (height, width)
    up = up.clamp_min(0).numpy()  # bicubic may overshoot below zero
    low, high = float(up.min()), float(up.max())
    if high <= 0:
        return np.zeros((height, width), dtype=np.float32)
    return ((up - low) / high).astype(np.float32)


def heatmap_overlay(image: Image.Image, attention: np.ndarray, colormap: str = "jet",
                    max_opacity: float = 0.6) -> Image.Image:
    """The image with ``attention`` (H, W) blended over it as a smooth heat map (same size as ``image``)."""
    # heavy: matplotlib, for the colour map only
    from matplotlib import colormaps

    rgb = np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0  # (h, w, 3)
    weight = smooth_map(attention, image.size)  # (h, w)
    colour = colormaps[colormap](weight)[..., :3].astype(np.float32)  # (h, w, 3)
    opacity = (0.15 + (max_opacity - 0.15) * weight)[..., None]  # (h, w, 1)
    blended = rgb * (1.0 - opacity) + colour * opacity
    return Image.fromarray(np.clip(blended * 255.0 + 0.5, 0, 255).astype(np.uint8))


def word_overlays(image: Image.Image, tokens: list[str], attention: np.ndarray) -> list[tuple[Image.Image, str]]:
    """One (overlay, "i: word") pair per token; attention (T, H, W) with T = len(tokens)."""
    shown = fit_for_display(image)
    return [(heatmap_overlay(shown, attention[t]), f"{t + 1}: {word}") for t, word in enumerate(tokens)]
