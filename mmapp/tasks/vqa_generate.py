"""What the generative VQA head (``vqa.head: generate``) needs of a VQA run: its loss and its answers.

Training reads every distinct human answer of a question as a word sequence, weighted by its
official soft score (``data.vqa_v2.answer_sequences``, ``losses.answer_sequence_loss``); validation
answers with greedy search (``models.answer_decoder.write_answers``) and is scored, like the
classifier, with the official VQA accuracy.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from mmapp.losses import answer_sequence_loss
from mmapp.models.answer_decoder import write_answers
from mmapp.vocab import Vocab


def generation_loss(model: nn.Module, batch: dict) -> tuple[Tensor, dict[str, Tensor], Tensor, Tensor | None]:
    """A grouped training batch (``collate_vqa_answers`` by image) -> (loss, stats, glimpse attention
    (B, G, P), count-map logits (B, P) or None: what the attention supervision reads)."""
    logits, _, attention, count_map = model(batch["visual"], batch["questions"], batch["lengths"],
                                            batch["answer_inputs"], batch["answer_question"],
                                            batch["image_index"])  # (R, T, V), _, (B, G, P), (B, P)
    loss, stats = answer_sequence_loss(logits, batch["answer_targets"], batch["answer_weights"])
    return loss, stats, attention, count_map


@torch.no_grad()
def generated_answers(model: Any, visual: Tensor, questions: Tensor, lengths: Tensor, words: Vocab) -> list[str]:
    """visual (B, P, D) grids (or images), one per question -> each question's greedy answer."""
    (decoded,), _ = write_answers(model.head, model.features(visual), questions, lengths)
    return [" ".join(words.decode(row)) for row in decoded.tokens.tolist()]
