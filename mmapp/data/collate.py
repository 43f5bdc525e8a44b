"""Batching: pad variable-length token sequences and stack dataset items into batch dicts;
``Ragged``, the compact store datasets keep their token ids in.

The dataset items these functions take are documented in ``coco_captions.py`` and ``vqa_v2.py``.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch
from torch import Tensor

from mmapp.vocab import Vocab


def pad_sequences(seqs: Sequence[Tensor | Sequence[int]], pad_id: int = Vocab.pad_id) -> tuple[Tensor, Tensor]:
    """Right-pad id sequences with ``pad_id``.

    Returns ``(ids, lengths)``: ids (B, T) long, T the longest length; lengths (B,) long.
    """
    lengths = torch.tensor([len(s) for s in seqs], dtype=torch.long)  # (B,)
    out = torch.full((len(seqs), int(lengths.max()) if len(seqs) else 0), pad_id, dtype=torch.long)
    for i, s in enumerate(seqs):
        out[i, : len(s)] = torch.as_tensor(s, dtype=torch.long)
    return out, lengths


def _stack_visual(items: Sequence[dict[str, Any]]) -> Tensor | None:
    if "visual" not in items[0]:  # grouped batches carry one visual per image instead (grouped.py)
        return None
    return torch.stack([it["visual"] for it in items])  # (B, P, D) or (B, 3, S, S)


def collate_captions(items: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Training batch of caption items.

    Returns ``visual`` (B, P, D) features or (B, 3, S, S) images, ``captions`` (B, T) ids padded
    with ``<pad>`` = 0 (each ``<start> ... <end>``), ``lengths`` (B,) counting start and end,
    ``image_ids`` (B,) long, and ``regions`` (B, T - 1, P) bool (False past each caption) when the
    items carry them (attention supervision, one row per decoding step).
    """
    captions, lengths = pad_sequences([it["caption"] for it in items])
    batch = {
        "visual": _stack_visual(items),
        "captions": captions,
        "lengths": lengths,
        "image_ids": torch.tensor([it["image_id"] for it in items], dtype=torch.long),
    }
    if "regions" in items[0]:
        steps, cells = captions.shape[1] - 1, items[0]["regions"].shape[1]
        regions = torch.zeros(len(items), steps, cells, dtype=torch.bool)
        for i, it in enumerate(items):
            regions[i, : len(it["regions"])] = it["regions"]
        batch["regions"] = regions  # (B, T - 1, P)
    return batch


def collate_caption_eval(items: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Evaluation batch: ``visual`` (B, ...), ``image_ids`` (B,), ``references`` B lists of raw captions."""
    return {
        "visual": _stack_visual(items),
        "image_ids": torch.tensor([it["image_id"] for it in items], dtype=torch.long),
        "references": [list(it["references"]) for it in items],
    }


def collate_vqa(items: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """VQA batch.

    Returns ``visual`` (B, P, D) or (B, 3, S, S), ``questions`` (B, L) padded with 0,
    ``lengths`` (B,), ``targets`` (B, N) soft scores, ``question_ids`` (B,), ``image_ids`` (B,),
    ``answers`` B lists of the raw human answers (empty lists without annotations), and
    ``regions`` (B, G, P) and ``centres`` (B, P) bool when the items carry them (attention supervision).
    """
    questions, lengths = pad_sequences([it["question"] for it in items])
    batch = {
        "visual": _stack_visual(items),
        "questions": questions,
        "lengths": lengths,
        "targets": torch.stack([it["target"] for it in items]),  # (B, N)
        "question_ids": torch.tensor([it["question_id"] for it in items], dtype=torch.long),
        "image_ids": torch.tensor([it["image_id"] for it in items], dtype=torch.long),
        "answers": [list(it["answers"]) for it in items],
    }
    for key in ("regions", "centres"):  # (B, G, P), (B, P)
        if key in items[0]:
            batch[key] = torch.stack([it[key] for it in items])
    return batch


def collate_vqa_answers(items: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """``collate_vqa`` plus the generative head's R answer rows (every distinct answer of every
    question): ``answer_inputs`` (R, T) ``<start> w..`` and ``answer_targets`` (R, T) ``w.. <end>``
    padded with 0, ``answer_question`` (R,) the question row of each, ``answer_weights`` (R,)."""
    batch = collate_vqa(items)
    seqs = [s for it in items for s in it["answer_seqs"]]
    padded, _ = pad_sequences(seqs) if seqs else (torch.zeros(0, 2, dtype=torch.long), None)  # (R, T + 1)
    batch["answer_inputs"], batch["answer_targets"] = padded[:, :-1], padded[:, 1:]
    batch["answer_question"] = torch.tensor([q for q, it in enumerate(items) for _ in it["answer_seqs"]],
                                            dtype=torch.long)  # (R,)
    batch["answer_weights"] = torch.tensor([w for it in items for w in it["answer_weights"]],
                                           dtype=torch.float32)  # (R,)
    return batch


class Ragged:
    """Variable-length rows stored flat (one array + offsets): compact for millions of short
    sequences, and shared copy-on-write with DataLoader workers (no per-row Python objects)."""

    def __init__(self, rows: Sequence[Sequence[float]], dtype: Any = np.int64) -> None:
        lengths = np.fromiter((len(r) for r in rows), dtype=np.int64, count=len(rows))
        self.offsets = np.zeros(len(rows) + 1, dtype=np.int64)
        np.cumsum(lengths, out=self.offsets[1:])
        self.values = np.fromiter((v for r in rows for v in r), dtype=dtype, count=int(self.offsets[-1]))

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def __getitem__(self, i: int) -> np.ndarray:
        return self.values[self.offsets[i]: self.offsets[i + 1]]
