"""A per-image memory read by caption rows, without a copy of it per caption.

A training batch holds a few captions of each image (COCO: five). Teacher forcing reads, at every
step, an attention-weighted sum of each caption's image memory (the projected grid, the ImageNet
class logits). Copying the memory to one row per caption makes every step read five copies of it,
and the gradient of that read is one (P, D) outer product per caption per step, summed into the
copies and then into the image. ``ImageRows`` keeps one row per image and places each caption's
weights in a slot of its image, so a step is one (C, P) x (P, D) product per image, whose gradient
for the memory is a product over the image's C captions.

``weighted_sum`` is the one place a decoder reads a memory with weights: a plain (B, P, D) tensor
(decoding, evaluation) or an ``ImageRows`` (``mmapp.speed.teacher_forcing``'s shrinking forward).
The VQA model reads each image's grid for its questions the same way (``vqa.attend_per_image``).
"""

from __future__ import annotations

import torch
from torch import Tensor


class ImageRows:
    """values (I, P, D), one row per image, read by R caption rows: row r is caption ``slot[r] % C``
    of image ``slot[r] // C`` (C = ``captions_per_image``, slots distinct). ``rows[:n]`` keeps the
    first n caption rows (the shrinking batch)."""

    def __init__(self, values: Tensor, slot: Tensor, captions_per_image: int) -> None:
        self.values, self.slot, self.captions_per_image = values, slot, captions_per_image

    @classmethod
    def for_rows(cls, values: Tensor, image_of_row: Tensor) -> "ImageRows":
        """values (I, P, D) and each caption row's image (R,) -> the rows, each given its own slot
        (its rank among its image's rows)."""
        by_image = torch.argsort(image_of_row, stable=True)  # (R,) rows grouped by image
        grouped = image_of_row.index_select(0, by_image)
        first = torch.searchsorted(grouped, grouped)  # (R,) where each row's group starts
        rank = torch.empty_like(image_of_row).index_copy_(
            0, by_image, torch.arange(len(grouped), device=grouped.device) - first)
        per_image = int(rank.max()) + 1 if len(rank) else 1
        return cls(values, image_of_row * per_image + rank, per_image)

    def __getitem__(self, rows: slice) -> "ImageRows":
        return ImageRows(self.values, self.slot[rows], self.captions_per_image)

    def weighted(self, alpha: Tensor) -> Tensor:
        """alpha (R, ..., P) -> (R, ..., D): sum_p alpha[r, .., p] values[image of r, p] (the "..."
        e.g. a VQA model's G glimpses per question)."""
        I, P, D = self.values.shape
        C, middle = self.captions_per_image, alpha.shape[1:-1]
        placed = alpha.new_zeros(I * C, *alpha.shape[1:]).index_copy(0, self.slot, alpha)  # 0 where no row
        summed = torch.bmm(placed.view(I, -1, P), self.values).view(I * C, *middle, D)  # (I * C, ..., D)
        return summed.index_select(0, self.slot)  # (R, ..., D)


def weighted_sum(alpha: Tensor, values: "Tensor | ImageRows") -> Tensor:
    """alpha (B, P) and a memory (B, P, D) (or ``ImageRows`` of B rows) -> (B, D)."""
    if isinstance(values, ImageRows):
        return values.weighted(alpha)
    return torch.bmm(alpha.unsqueeze(1), values).squeeze(1)
