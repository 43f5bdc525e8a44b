"""Batches padded to a few fixed shapes, so that each shape's training step can be captured in a CUDA
graph once and replayed (``mmapp.speed.graphed``).

How the shapes are chosen (``train.row_bucket``, ``train.length_bucket``):

* image rows: always ``train.batch_size`` (the epoch's short last batch repeats its last image; no
  caption or question points at the copies, so they get no gradient);
* caption / question rows: the batch's count rounded up to a multiple of ``row_bucket`` (8). The
  added rows are all ``<pad>`` (captions: no target, so no loss; questions: all-zero targets, which
  ``vqa_loss`` leaves out) and point at image row 0;
* tokens: the longest caption (question) of the batch rounded up to a multiple of ``length_bucket``
  (4), at most the longest the data can hold (``data.max_caption_len`` + 2, ``data.max_question_len``).

A COCO epoch then has a handful of shapes (``padding_cost`` counts the extra work they cost).
Padded rows and positions contribute zero loss and zero gradient (``tests/test_fast_path.py``).
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch
from torch import Tensor, nn

from mmapp.models.recurrent_decoder import RecurrentAttentionDecoder
from mmapp.models.vqa import VQANet
from mmapp.speed.teacher_forcing import use_training_path


def round_up(n: int, multiple: int, cap: int | None = None) -> int:
    """``n`` rounded up to a multiple of ``multiple`` (no rounding when it is 0 or 1), at most ``cap``
    (but never below ``n``)."""
    out = -(-n // multiple) * multiple if multiple > 1 else n
    return max(n, min(out, cap)) if cap is not None else out


def repeat_last(index: Tensor, rows: int) -> Tensor:
    """(I,) image rows -> (rows,) with the last one repeated (``rows`` >= I)."""
    return torch.cat([index, index[-1:].expand(rows - len(index))])


def _pad_rows(t: Tensor, rows: int, value: float = 0) -> Tensor:
    if t.shape[0] == rows:
        return t
    return torch.cat([t, t.new_full((rows - t.shape[0], *t.shape[1:]), value)])


def _pad_dim1(t: Tensor, length: int, value: float = 0) -> Tensor:
    if t.shape[1] == length:
        return t
    return torch.cat([t, t.new_full((t.shape[0], length - t.shape[1], *t.shape[2:]), value)], dim=1)


def _pad_images(visual: Tensor, image_rows: int) -> Tensor:
    """(I, ...) -> (image_rows, ...): the last image repeated (the epoch's short last batch)."""
    if visual.shape[0] >= image_rows:
        return visual
    return visual.index_select(0, repeat_last(torch.arange(visual.shape[0]), image_rows))


def pad_caption_batch(batch: dict[str, Any], image_rows: int, row_bucket: int, length_bucket: int,
                      max_tokens: int, pad_id: int = 0) -> dict[str, Tensor]:
    """A ``collate_by_image(..., collate_captions)`` batch -> the tensors a training step reads, at a
    fixed shape: ``visual`` (image_rows, ...), ``captions`` (B', T') with B' and T' bucketed (see the
    module docstring), ``image_index`` (B',) and, where present, ``regions`` (B', T' - 1, P)."""
    captions = batch["captions"]  # (B, T)
    rows = round_up(captions.shape[0], row_bucket)
    length = round_up(captions.shape[1], length_bucket, max_tokens)
    out = {"visual": _pad_images(batch["visual"], image_rows),
           "captions": _pad_dim1(_pad_rows(captions, rows, pad_id), length, pad_id),  # (B', T')
           "image_index": _pad_rows(batch["image_index"], rows)}  # (B',)
    if "regions" in batch:
        out["regions"] = _pad_dim1(_pad_rows(batch["regions"], rows, False), length - 1, False)  # (B', T' - 1, P)
    return out


def pad_vqa_batch(batch: dict[str, Any], image_rows: int, row_bucket: int, length_bucket: int,
                  max_tokens: int) -> dict[str, Tensor]:
    """A ``collate_by_image(..., collate_vqa)`` batch -> the tensors a training step reads, at a fixed
    shape: ``visual`` (image_rows, ...), ``questions`` (B', L'), ``lengths`` (B',) (1 on padding rows),
    ``targets`` (B', N) (0 on padding rows), ``image_index`` (B',), ``rows`` (B',) bool (the real
    questions) and, where present, ``regions`` (B', G, P) and ``centres`` (B', P)."""
    questions = batch["questions"]  # (B, L)
    rows = round_up(questions.shape[0], row_bucket)
    length = round_up(questions.shape[1], length_bucket, max_tokens)
    out = {"visual": _pad_images(batch["visual"], image_rows),
           "questions": _pad_dim1(_pad_rows(questions, rows), length),  # (B', L')
           "lengths": _pad_rows(batch["lengths"], rows, 1),
           "targets": _pad_rows(batch["targets"], rows),  # (B', N)
           "image_index": _pad_rows(batch["image_index"], rows),
           "rows": torch.arange(rows) < questions.shape[0]}  # (B',)
    for key in ("regions", "centres"):
        if key in batch:
            out[key] = _pad_rows(batch[key], rows, False)
    return out


def use_static_shapes(model: nn.Module) -> None:
    """Make the head of ``model`` (an ``EncodedHead`` or a bare head) train without waiting for the
    device: the recurrent caption decoder's ``static`` path, the VQA model's unpacked questions."""
    head = getattr(model, "head", model)
    if isinstance(head, RecurrentAttentionDecoder):
        use_training_path(head, "static")
    elif isinstance(head, VQANet):
        head.static_shapes = True
    else:
        raise ValueError(f"train.cuda_graphs: {type(head).__name__} has no fixed-shape training path")


def padding_cost(lengths: Sequence[int] | np.ndarray, per_batch: int, row_bucket: int, length_bucket: int,
                 max_tokens: int, seed: int = 0) -> dict[str, float]:
    """What the fixed shapes cost on sequences of ``lengths`` (tokens, ``<start>`` and ``<end>``
    included) shuffled into batches of ``per_batch``: the decoder steps computed per real word step
    by the fixed shapes (every padded row through every bucketed step) against the eager paths:
    ``vs_shrink`` (what ``mmapp train`` runs without the fast path: only the real steps) and
    ``vs_unpadded`` (every row through the batch's longest caption, as the ``static`` path without
    buckets); ``shapes``: the distinct (rows, tokens) shapes seen."""
    lengths = np.random.default_rng(seed).permutation(np.asarray(lengths, dtype=np.int64))
    real = fixed = unpadded = 0
    shapes = set()
    for start in range(0, len(lengths), per_batch):
        part = lengths[start : start + per_batch]
        longest = int(part.max())
        rows, tokens = round_up(len(part), row_bucket), round_up(longest, length_bucket, max_tokens)
        real += int((part - 1).sum())
        unpadded += len(part) * (longest - 1)
        fixed += rows * (tokens - 1)
        shapes.add((rows, tokens))
    return {"vs_shrink": fixed / real, "vs_unpadded": fixed / unpadded, "shapes": float(len(shapes))}
