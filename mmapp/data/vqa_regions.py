"""Where a question's attention should look: the boxes of the objects it is about, as grid cells.

The shapes annotations name, per question, the COCO instance ids of the objects it refers to
(``object_ids``, an extension of the VQA v2 format); the split's instances file gives their boxes.
``glimpse_regions`` turns them into one (H*W,) cell mask per attention glimpse, the target of the
attention supervision loss (``losses.attention_grounding_loss``; in the spirit of attention
supervision from human or box annotations, e.g. Qiao et al. 2018, Gan et al. 2017):

- a relation question (type ``position``: "is the A to the left of the B?", objects (A, B)) sends
  glimpse 0 to A and glimpse 1 to B (any further glimpse to both), so the glimpses' offset says
  where A is relative to B;
- any other question sends every glimpse to the union of its objects (one for colour/shape/size,
  all the counted ones for count, the matches for a "yes" existence question);
- a question about no object ("is there a red star?" -> no, "how many stars?" -> 0) is not supervised.

It also gives, per question, the cells holding its objects' centres: the target of the count map
(``vqa.count_map``), whose summed sigmoid then counts them (zero for a question about no object).

Cells are those whose centres lie in a box, plus the cell at its centre (``metrics.grounding.box_cells``):
the region a pointing-game hit needs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from mmapp.data.fields import field, read_json, top_list
from mmapp.errors import DataError
from mmapp.grid_cells import box_cells, centre_cell

RELATION_TYPES = frozenset({"position"})


def load_instance_boxes(path: str | Path) -> tuple[dict[int, tuple[int, list[float]]], dict[int, tuple[int, int]]]:
    """COCO instances file -> ({object id: (image id, [x, y, w, h])}, {image id: (width, height)})."""
    data = read_json(path)
    sizes = {}
    for i, im in enumerate(top_list(data, "images", path)):
        image_id = field(im, "id", int, path, f"image #{i}")
        sizes[image_id] = (field(im, "width", int, path, f"image {image_id}"),
                           field(im, "height", int, path, f"image {image_id}"))
    boxes = {}
    for i, ann in enumerate(top_list(data, "annotations", path)):
        where = f"annotation #{i}"
        bbox = field(ann, "bbox", list, path, where)
        if len(bbox) != 4:
            raise DataError(f"{path}: {where}: bbox must be [x, y, w, h], got {bbox!r:.60}")
        boxes[field(ann, "id", int, path, where)] = (field(ann, "image_id", int, path, where), bbox)
    return boxes, sizes


def glimpse_regions(questions: Sequence, instances_path: str | Path, grid: tuple[int, int],
                    glimpses: int) -> tuple[np.ndarray, np.ndarray]:
    """Questions (``VQAQuestion`` with ``object_ids``) -> (regions, centres): regions (N, G, H*W)
    bool, the target cells per glimpse (all False where a glimpse is not supervised); centres
    (N, H*W) bool, the cell holding the centre of each object the question is about (none for
    "is there a red star?" -> no, or a count of 0): the count map's target. Refuses object ids
    missing from the instances file or belonging to another image."""
    boxes, sizes = load_instance_boxes(instances_path)
    gh, gw = grid
    out = np.zeros((len(questions), glimpses, gh * gw), dtype=bool)
    centres = np.zeros((len(questions), gh * gw), dtype=bool)
    for n, q in enumerate(questions):
        masks = []
        for oid in q.object_ids:
            found = boxes.get(oid)
            if found is None or found[0] != q.image_id:
                raise DataError(f"{instances_path}: question_id {q.question_id} refers to object {oid}, "
                                f"which is not an object of image {q.image_id} there")
            i, j = centre_cell(sizes[q.image_id], found[1], grid)
            centres[n, i * gw + j] = True
            masks.append(box_cells(sizes[q.image_id], found[1], grid).ravel())
        if not masks:
            continue
        union = np.logical_or.reduce(masks)
        if q.question_type in RELATION_TYPES and len(masks) == 2 and glimpses >= 2:
            out[n, 0], out[n, 1] = masks
            out[n, 2:] = union
        else:
            out[n, :] = union
    return out, centres
