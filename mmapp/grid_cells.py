"""Which cells of an encoder grid a COCO box covers.

A grid of H x W cells lies over an image of size (width, height); cell (i, j) covers pixels x in
[j*width/W, (j+1)*width/W) and likewise y. Boxes are COCO ``[x, y, w, h]`` in image pixels. The
attention-supervision regions (``data/*_regions.py``) and the grounding metrics
(``metrics/grounding.py``) both read boxes this way.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np


def centre_cell(image_size: tuple[int, int], box: Sequence[float], grid: tuple[int, int]) -> tuple[int, int]:
    """(row, column) of the grid cell holding the box's centre."""
    width, height = image_size
    gh, gw = grid
    bx, by, bw, bh = (float(v) for v in box)
    return (min(max(int((by + bh / 2) * gh / height), 0), gh - 1),
            min(max(int((bx + bw / 2) * gw / width), 0), gw - 1))


def box_cells(image_size: tuple[int, int], box: Sequence[float], grid: tuple[int, int]) -> np.ndarray:
    """(H, W) bool mask of the grid cells whose centres lie in the box, with the cell holding the
    box's centre always included (a box smaller than a cell still owns one): the region an
    attention map must peak in for a pointing hit."""
    width, height = image_size
    gh, gw = grid
    bx, by, bw, bh = (float(v) for v in box)
    xs = (np.arange(gw) + 0.5) * width / gw  # cell centres
    ys = (np.arange(gh) + 0.5) * height / gh
    mask = np.outer((ys >= by) & (ys <= by + bh), (xs >= bx) & (xs <= bx + bw))
    mask[centre_cell(image_size, box, grid)] = True
    return mask
