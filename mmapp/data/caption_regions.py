"""Where each word of a caption should attend: the cells of the objects its noun phrase names.

"a small red circle above two blue squares": the words "small red circle" name the scene's small
red circle(s), "blue squares" its blue squares; "two animals" every animal of an objects scene.
For the step that writes such a word, the target is the union of the matching objects' cells
(``box_cells``); other words (and phrases that match nothing, e.g. "three shapes") are not
supervised. The objects and the words that name them come from the split's COCO instances file
(``data.mentions``). The attention loss is ``losses.attention_grounding_loss`` with steps in
place of glimpses.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from mmapp.data.mentions import load_scene_objects
from mmapp.grid_cells import box_cells


class CaptionRegions:
    """``regions(image_id, words)`` -> (len(words), H*W) bool target cells per word."""

    def __init__(self, instances_path: str | Path, grid: tuple[int, int]) -> None:
        self.lexicon, objects, sizes = load_scene_objects(instances_path)
        self.cells = grid[0] * grid[1]
        self.objects = {i: [(o, box_cells(sizes[i], list(o.bbox), grid).ravel()) for o in objs]
                        for i, objs in objects.items()}

    def __call__(self, image_id: int, words: Sequence[str]) -> np.ndarray:
        out = np.zeros((len(words), self.cells), dtype=bool)
        objects = self.objects.get(image_id, [])
        for m in self.lexicon.mentions(words):
            if m.category is None and m.supercategory is None:
                continue  # "two red objects": not a noun the captioner is taught to ground
            masks = [mask for o, mask in objects if m.matches(o)]
            if masks:
                out[m.first:m.last + 1] = np.logical_or.reduce(masks)
        return out
