"""Batches of images, each with all its captions or questions.

An image's grid is loaded once and its per-image work (attention keys, feature projections) is
done once for its ~5 captions or questions, as self-critical.pytorch does with ``seq_per_img``.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset


class ByImage(Dataset):
    """One item per image: ``{"visual": (P, D) or (3, S, S), "items": [item fields, ...]}``.

    ``dataset`` provides ``item_images()`` (an image key per item), ``visual_of(index)`` and
    ``fields(index)`` (an item without its visual input).
    """

    def __init__(self, dataset: Any) -> None:
        self.dataset = dataset
        keys = np.asarray(dataset.item_images())
        order = np.argsort(keys, kind="stable")
        _, starts = np.unique(keys[order], return_index=True)
        first_seen = np.argsort(order[starts], kind="stable")  # keep images in dataset order
        bounds = np.append(starts, len(order))
        self.groups = [order[bounds[g]:bounds[g + 1]] for g in first_seen]

    def __len__(self) -> int:
        return len(self.groups)

    def __getitem__(self, index: int) -> dict[str, Any]:
        members = self.groups[index]
        return {"visual": self.dataset.visual_of(int(members[0])),
                "items": [self.dataset.fields(int(i)) for i in members]}


def collate_by_image(groups: Sequence[dict[str, Any]], collate_items: Callable[[list], dict]) -> dict[str, Any]:
    """Images (I) and their items (B) -> the items' batch plus ``visual`` (I, ...) and
    ``image_index`` (B,) giving each item's image row."""
    items = [it for g in groups for it in g["items"]]
    batch = collate_items(items)
    batch["visual"] = torch.stack([g["visual"] for g in groups])  # (I, P, D) or (I, 3, S, S)
    batch["image_index"] = torch.repeat_interleave(
        torch.arange(len(groups)), torch.tensor([len(g["items"]) for g in groups]))  # (B,)
    return batch
