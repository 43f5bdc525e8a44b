"""Where each word of a shapes caption should attend: the cells of the objects its noun phrase names.

"a small red circle above two blue squares": the words "small red circle" name the scene's small
red circle(s), "blue squares" its blue squares. For the step that writes such a word, the target
is the union of the matching objects' cells (``metrics.grounding.box_cells``); other words (and
phrases that match nothing, e.g. "three shapes") are not supervised. The objects come from the
split's COCO instances file with the shapes attributes (``color``, ``size``). The attention loss
is ``losses.attention_grounding_loss`` with steps in place of glimpses.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from mmapp.data.fields import field, read_json, top_list
from mmapp.data.shapes_text import object_mentions
from mmapp.grid_cells import box_cells


class CaptionRegions:
    """``regions(image_id, words)`` -> (len(words), H*W) bool target cells per word."""

    def __init__(self, instances_path: str | Path, grid: tuple[int, int]) -> None:
        data = read_json(instances_path)
        path = instances_path
        shapes = {field(c, "id", int, path, f"category #{i}"): field(c, "name", str, path, f"category #{i}")
                  for i, c in enumerate(top_list(data, "categories", path))}
        sizes = {field(im, "id", int, path, f"image #{i}"): (field(im, "width", int, path, f"image #{i}"),
                                                             field(im, "height", int, path, f"image #{i}"))
                 for i, im in enumerate(top_list(data, "images", path))}
        self.cells = grid[0] * grid[1]
        self.objects: dict[int, list[tuple[str, str, str, np.ndarray]]] = {}
        for i, a in enumerate(top_list(data, "annotations", path)):
            where = f"annotation #{i}"
            image_id = field(a, "image_id", int, path, where)
            shape = shapes.get(field(a, "category_id", int, path, where), "")
            mask = box_cells(sizes[image_id], field(a, "bbox", list, path, where), grid).ravel()
            self.objects.setdefault(image_id, []).append(
                (shape, field(a, "color", str, path, where), field(a, "size", str, path, where), mask))

    def __call__(self, image_id: int, words: Sequence[str]) -> np.ndarray:
        out = np.zeros((len(words), self.cells), dtype=bool)
        objects = self.objects.get(image_id, [])
        for first, t, colour, shape, size in object_mentions(words):
            masks = [m for s, c, z, m in objects
                     if s == shape and colour in (None, c) and size in (None, z)]
            if masks:
                out[first:t + 1] = np.logical_or.reduce(masks)
        return out
