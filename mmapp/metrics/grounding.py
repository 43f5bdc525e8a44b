"""Grounding of attention maps: pointing game and attention mass inside a box.

An attention map is an (H, W) grid of non-negative weights over the image (one weight per grid
cell, usually summing to 1); boxes are COCO ``[x, y, w, h]`` in image pixels of an image of size
(width, height). Grid cell (i, j) covers pixels x in [j*width/W, (j+1)*width/W) and likewise y.

- Pointing: the map's peak is the centre of its argmax cell, ``((j + 0.5) * width / W,
  (i + 0.5) * height / H)``. That is where the bilinearly upsampled map (``align_corners=False``)
  peaks as a continuous function (bilinear values are convex combinations of the cell values,
  equal to them at the cell centres); taking it directly avoids the pixel grid's rounding, which
  can move the peak pixel to a neighbouring cell when two cells nearly tie, and the flat plateaus
  at the borders. A hit is a peak inside the box, optionally grown by ``tolerance`` pixels on each
  side (the original pointing game uses 15). Ties go to the first cell in row-major order.
- Mass: the map is bilinearly upsampled to the image size (``align_corners=False``),
  renormalised to sum 1, and the weight of the pixels whose centres lie in the box is summed.
- Chance: a uniform map puts mass ``box area / image area`` in the box and hits it about as often;
  each score carries that ``area_fraction`` as its baseline.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from typing import Hashable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from mmapp.errors import InputError


@dataclass(frozen=True)
class GroundingScore:
    """Pointing hit, attention mass in the box, and the box's share of the image (chance level)."""

    hit: bool
    mass: float
    area_fraction: float


def _check(attention: np.ndarray | torch.Tensor, image_size: tuple[int, int],
           box: Sequence[float]) -> np.ndarray:
    att = attention.detach().cpu().numpy() if isinstance(attention, torch.Tensor) else np.asarray(attention)
    att = att.astype(np.float64)
    if att.ndim != 2 or att.size == 0:
        raise InputError(f"an attention map must be a non-empty (H, W) array, got shape {att.shape}")
    if not np.all(np.isfinite(att)) or (att < 0).any() or att.sum() <= 0:
        raise InputError("an attention map must be finite, non-negative and not all zero")
    width, height = image_size
    if width <= 0 or height <= 0:
        raise InputError(f"image size must be positive (width, height), got {image_size}")
    if len(box) != 4 or box[2] < 0 or box[3] < 0:
        raise InputError(f"a box is [x, y, w, h] with w, h >= 0, got {list(box)}")
    return att


def peak_point(attention: np.ndarray | torch.Tensor, image_size: tuple[int, int]) -> tuple[float, float]:
    """(x, y) in image pixels of the centre of the argmax cell of an (H, W) map."""
    att = _check(attention, image_size, (0, 0, 0, 0))
    gh, gw = att.shape
    i, j = np.unravel_index(int(np.argmax(att)), att.shape)
    width, height = image_size
    return (j + 0.5) * width / gw, (i + 0.5) * height / gh


def upsample_attention(attention: np.ndarray | torch.Tensor, image_size: tuple[int, int]) -> np.ndarray:
    """(H, W) map -> (height, width) map, bilinear (align_corners=False), renormalised to sum 1."""
    att = _check(attention, image_size, (0, 0, 0, 0))
    width, height = image_size
    grid = torch.from_numpy(att)[None, None]  # (1, 1, H, W)
    up = F.interpolate(grid, size=(int(height), int(width)), mode="bilinear", align_corners=False)[0, 0]
    up = up.clamp_min(0).numpy()  # (height, width)
    return up / up.sum()


def pointing_hit(attention: np.ndarray | torch.Tensor, image_size: tuple[int, int],
                 box: Sequence[float], tolerance: float = 0.0) -> bool:
    """True when the map's peak (see module docstring) lies in the box grown by ``tolerance`` px."""
    _check(attention, image_size, box)
    x, y = peak_point(attention, image_size)
    bx, by, bw, bh = (float(v) for v in box)
    return (bx - tolerance <= x <= bx + bw + tolerance) and (by - tolerance <= y <= by + bh + tolerance)


def attention_mass_in_box(attention: np.ndarray | torch.Tensor, image_size: tuple[int, int],
                          box: Sequence[float]) -> float:
    """Share (0..1) of the upsampled, renormalised attention on pixels whose centres are in the box."""
    _check(attention, image_size, box)
    up = upsample_attention(attention, image_size)  # (height, width)
    width, height = image_size
    bx, by, bw, bh = (float(v) for v in box)
    xs = np.arange(int(width)) + 0.5
    ys = np.arange(int(height)) + 0.5
    in_x = (xs >= bx) & (xs <= bx + bw)
    in_y = (ys >= by) & (ys <= by + bh)
    return float(up[np.ix_(in_y, in_x)].sum())


def box_area_fraction(image_size: tuple[int, int], box: Sequence[float]) -> float:
    """Share of the image covered by the box (clipped to the image): the chance level."""
    width, height = image_size
    bx, by, bw, bh = (float(v) for v in box)
    w = max(0.0, min(bx + bw, width) - max(bx, 0.0))
    h = max(0.0, min(by + bh, height) - max(by, 0.0))
    return w * h / (width * height)


def score_grounding(attention: np.ndarray | torch.Tensor, image_size: tuple[int, int],
                    box: Sequence[float], tolerance: float = 0.0) -> GroundingScore:
    """Pointing hit, mass in box and chance level of one (H, W) attention map and one box."""
    return GroundingScore(
        hit=pointing_hit(attention, image_size, box, tolerance),
        mass=attention_mass_in_box(attention, image_size, box),
        area_fraction=box_area_fraction(image_size, box),
    )


def _summary(scores: Sequence[GroundingScore]) -> dict[str, float]:
    n = len(scores)
    return {
        "n": n,
        "hit_rate": sum(s.hit for s in scores) / n,
        "mean_mass": sum(s.mass for s in scores) / n,
        "chance": sum(s.area_fraction for s in scores) / n,
    }


def summarize_grounding(scores: Sequence[GroundingScore],
                        groups: Sequence[Hashable] | None = None) -> dict:
    """Hit rate, mean mass and mean chance level over all scores, and per group when ``groups``
    (one key per score, e.g. the question type or the asked-about word) is given.

    Returns ``{"n", "hit_rate", "mean_mass", "chance"}`` plus ``"by_group": {key: same}``.
    """
    if not scores:
        raise InputError("no grounding scores to summarise")
    out: dict = _summary(scores)
    if groups is not None:
        if len(groups) != len(scores):
            raise InputError(f"{len(groups)} group keys for {len(scores)} scores")
        grouped: dict[Hashable, list[GroundingScore]] = defaultdict(list)
        for g, s in zip(groups, scores):
            grouped[g].append(s)
        out["by_group"] = {g: _summary(v) for g, v in grouped.items()}
    return out
