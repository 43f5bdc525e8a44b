"""Faster teacher forcing for the recurrent decoder, behind one switch.

``use_training_path(decoder, path)`` makes ``decoder.forward`` run one of these instead of its plain
loop (``RecurrentAttentionDecoder.forward``, every row through every step):

* ``plain``: the plain loop (the switch off);
* ``shrink`` (what ``mmapp train`` uses): rows sorted by length and the batch shrinking as captions
  end, like the Show-Attend-Tell tutorial, and the output layer run once on the decoded steps. The
  steps that read ``<end>`` or ``<pad>`` are never computed; their logits and attention are 0, as in
  the plain loop. The memory a step reads with weights stays one row per image
  (``mmapp.models.image_rows``), not one copy per caption;
* ``compile`` (``train.compile=true``, GPU training): every row through every step with the per-word
  update compiled by ``torch.compile`` (fixed shapes fuse best), padded steps zeroed afterwards; the
  first batches pay the compilation;
* ``static`` (CUDA graphs, ``mmapp.speed.graphed``): every row through every step, no host
  synchronisation, and the padded steps keep what they computed instead of being zeroed. Their
  targets are padding, so the caption loss is the same.

All four give the same logits at every position whose target is a word (up to float rounding), and
``compile``/``static`` only while a gradient is recorded: evaluation (no gradient) shrinks. Decoding
(``step``) is never affected.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor

from mmapp.models.recurrent_decoder import RecurrentAttentionDecoder, caption_lengths, stack_or_none, zero_after_end

PATHS = ("plain", "shrink", "compile", "static")


def use_training_path(decoder: RecurrentAttentionDecoder, path: str) -> None:
    """Switch ``decoder``'s teacher forcing to ``path`` (one of ``PATHS``, see module docstring)."""
    if path not in PATHS:
        raise ValueError(f"training path must be one of {', '.join(PATHS)}, got {path!r}")
    if path == "plain":
        decoder.training_path = None
    elif path == "shrink":
        decoder.training_path = shrinking_forward
    elif path == "compile":
        decoder.training_path = _AllSteps(torch.compile(decoder._advance), zero_padded=True)
    else:
        decoder.training_path = _AllSteps(None, zero_padded=False)


class _AllSteps:
    """Every row through every step with ``advance`` (the decoder's own when None) while a gradient
    is recorded; without one, the shrinking forward."""

    def __init__(self, advance: Callable | None, zero_padded: bool) -> None:
        self.advance, self.zero_padded = advance, zero_padded

    def __call__(self, decoder: RecurrentAttentionDecoder, features: Tensor, inputs: Tensor,
                 image_index: Tensor | None) -> tuple[Tensor, Tensor]:
        if not torch.is_grad_enabled():
            return shrinking_forward(decoder, features, inputs, image_index)
        logits, alpha = all_steps_forward(decoder, features, inputs, image_index, self.advance)
        return zero_after_end(inputs, logits, alpha) if self.zero_padded else (logits, alpha)


def all_steps_forward(decoder: RecurrentAttentionDecoder, features: Tensor, inputs: Tensor,
                      image_index: Tensor | None, advance: Callable | None = None) -> tuple[Tensor, Tensor]:
    """Every row through every step, nothing zeroed: features (B, P, D), inputs (B, T)
    -> logits (B, T, V), attention (B, T, P)."""
    advance = advance or decoder._advance
    memory = decoder.prepare_for(features, image_index)
    state = decoder.init_state(memory)
    embedded = decoder.embedding(inputs).transpose(0, 1).contiguous()  # (T, B, E): same strides at every T
    tops, alphas, attended = [], [], []
    for t in range(inputs.shape[1]):
        top, alpha, state = advance(embedded[t], state, memory)
        tops.append(top)
        alphas.append(alpha)
        attended.append(decoder.attended_logits(alpha, memory))
    hidden = torch.stack(tops, dim=1)  # (B, T, S) (S + D with deep_output)
    # The output layer runs once over all steps instead of once per step.
    logits = decoder.word_logits(hidden, stack_or_none(attended, dim=1))  # (B, T, V)
    return logits, torch.stack(alphas, dim=1)  # (B, T, V), (B, T, P)


def shrinking_forward(decoder: RecurrentAttentionDecoder, features: Tensor, inputs: Tensor,
                      image_index: Tensor | None) -> tuple[Tensor, Tensor]:
    """The plain forward's result with the steps that read ``<end>``/``<pad>`` never computed:
    features (B, P, D), inputs (B, T) -> logits (B, T, V), attention (B, T, P)."""
    lengths = caption_lengths(inputs)
    if lengths is None or int(lengths.min()) == inputs.shape[1] or int(lengths.max()) == 0:
        return all_steps_forward(decoder, features, inputs, image_index)  # nothing to skip, or nothing to keep
    B, T = inputs.shape
    order = torch.argsort(lengths, descending=True, stable=True)  # (B,) longest first
    rows_at = (lengths.unsqueeze(1) > torch.arange(T, device=inputs.device)).sum(dim=0).tolist()  # per step
    image_of_row = order if image_index is None else image_index.index_select(0, order)  # (B,) sorted rows' images
    memory, state = decoder.rows_of_images(decoder.prepare(features), image_of_row)
    embedded = decoder.embedding(inputs.index_select(0, order))  # (B, T, E) in sorted order
    tops, alphas, attended = [], [], []
    for t, rows in enumerate(rows_at):
        if rows == 0:
            break
        if rows < state["h"].shape[0]:  # the shortest captions have ended: shrink the batch
            state = {name: v[:rows] for name, v in state.items()}
            memory = {name: v[:rows] for name, v in memory.items()}
        top, alpha, state = decoder._advance(embedded[:rows, t], state, memory)
        tops.append(top)
        alphas.append(alpha)
        attended.append(decoder.attended_logits(alpha, memory))
    # Row-major (B*T) positions of the decoded steps, in the order they were appended (step by step).
    sorted_lengths = lengths.index_select(0, order)
    decoded = torch.arange(T, device=inputs.device) < sorted_lengths.unsqueeze(1)  # (B, T)
    positions = (order.unsqueeze(1) * T + torch.arange(T, device=inputs.device)).t()[decoded.t()]  # (M,) M decoded
    packed = decoder.word_logits(torch.cat(tops), stack_or_none(attended, cat=True))  # (M, V)
    logits = packed.new_zeros(B * T, packed.shape[-1]).index_copy(0, positions, packed)
    packed_alpha = torch.cat(alphas)  # (M, P)
    alpha = packed_alpha.new_zeros(B * T, packed_alpha.shape[-1]).index_copy(0, positions, packed_alpha)
    return logits.view(B, T, -1), alpha.view(B, T, -1)  # (B, T, V), (B, T, P)
