"""The interface every caption decoder implements, and the set-up they share.

A decoder splits decoding into three calls so that greedy and beam search (``decoding.py``) are
written once for every variant:

* ``prepare(features)`` -> ``memory``: per-image tensors computed once (e.g. attention keys);
* ``init_state(memory)`` -> ``state``: the recurrent state before the first word;
* ``step(tokens, state, memory)`` -> ``(logits, alpha, state)``: one word further.

``memory`` and ``state`` are dicts of batch-first tensors, so beam search can expand and reorder them
without knowing what they hold. The variants: ``recurrent_decoder.py`` (Show-Attend-Tell) and
``transformer_decoder.py``; ``caption_decoder.build_caption_decoder`` picks one from the config.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from mmapp.config import CaptionDecoderConfig
from mmapp.models.image_rows import ImageRows
from mmapp.models.imagenet_evidence import on_head_cells

State = dict[str, Tensor]


class CaptionDecoder(nn.Module):
    """Interface of all caption decoders (see module docstring).

    Given a config, the constructor does what every variant needs first: it checks the vocabulary
    size and builds ``project``, the optional grid projection (``GridProjection``: ``Linear(encoder_dim,
    project_dim) + ReLU`` when ``cfg.project_dim`` is set, else the identity); ``grid_dim`` is the width it leaves the
    cells at. Without one (a wrapper around another decoder) it builds nothing.
    """

    cfg: CaptionDecoderConfig
    # the memory entries a step reads only through ``image_rows.weighted_sum``: ``rows_of_images``
    # keeps them one row per image (``ImageRows``) instead of copying them to every caption or beam
    weighted_memory: tuple[str, ...] = ()

    def __init__(self, cfg: CaptionDecoderConfig | None = None) -> None:
        super().__init__()
        if cfg is None:
            return
        if cfg.vocab_size < 5:
            raise ValueError("decoder.vocab_size must be set (>= 5)")
        self.cfg = cfg
        self.grid_dim = cfg.project_dim or cfg.encoder_dim
        self.project = (GridProjection(cfg.encoder_dim, self.grid_dim, cfg.imagenet_channels, cfg.imagenet_head_resize)
                        if cfg.project_dim else nn.Identity())

    def prepare(self, features: Tensor) -> State:
        """features (B, P, D) -> memory (dict of (B, ...) tensors)."""
        raise NotImplementedError

    def init_state(self, memory: State) -> State:
        raise NotImplementedError

    def step(self, tokens: Tensor, state: State, memory: State) -> tuple[Tensor, Tensor, State]:
        """tokens (B,) -> logits (B, V), attention alpha (B, P), next state."""
        raise NotImplementedError

    def forward(self, features: Tensor, inputs: Tensor, image_index: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Teacher forcing: features (B, P, D), inputs (B, T) = ``<start> w1 .. w_{T-1}``
        -> logits (B, T, V) for the next words, attention (B, T, P).

        With ``image_index`` (B,), features are (I, P, D) for I images and caption b belongs to image
        ``image_index[b]``: per-image work (e.g. attention keys) is done once per image, not per caption.
        """
        raise NotImplementedError

    def prepare_for(self, features: Tensor, image_index: Tensor | None) -> State:
        """``prepare`` once per image, then one memory row per caption."""
        memory = self.prepare(features)
        if image_index is None:
            return memory
        return {name: t.index_select(0, image_index) for name, t in memory.items()}  # (B, ...)

    def rows_of_images(self, memory: State, image_of_row: Tensor) -> tuple[State, State]:
        """Per-image memory -> (memory, initial state) for R rows, row r reading image
        ``image_of_row[r]`` (R,): the ``weighted_memory`` entries as ``ImageRows``, the other entries
        and the state copied per row. Beam search's beams and a training batch's captions both read
        their image's memory this way."""
        state = {name: v.index_select(0, image_of_row) for name, v in self.init_state(memory).items()}
        rows = {name: ImageRows.for_rows(v, image_of_row) if name in self.weighted_memory
                else v.index_select(0, image_of_row) for name, v in memory.items()}
        return rows, state


class GridProjection(nn.Sequential):
    """``Linear(D, D') + ReLU`` over a grid (B, P, D) -> (B, P, D'). On a joined grid, whose channels
    [start, stop) are the backbone head's own h x w map resized to the grid (``head_channels``,
    ``head_resize`` = (h, w, H, W), from the decoder config's ``imagenet_channels`` and
    ``imagenet_head_resize``), their share of the product is computed on the head's own cells
    (``imagenet_evidence.on_head_cells``): the same within float rounding, for a third of the products
    on the shipped captioner's 14 x 14 grid (0.86 against 1.57 ms an image, one thread). Its parameters
    are the ``Sequential``'s (``0.weight``, ``0.bias``), as the plain projection's."""

    def __init__(self, in_dim: int, out_dim: int, head_channels: tuple[int, int] = (0, 0),
                 head_resize: tuple[int, ...] = ()) -> None:
        super().__init__(nn.Linear(in_dim, out_dim), nn.ReLU())
        self.head_channels, self.head_resize = tuple(head_channels), tuple(head_resize)

    def forward(self, features: Tensor) -> Tensor:
        linear, (start, stop) = self[0], self.head_channels
        if stop <= start or len(self.head_resize) != 4:
            return super().forward(features)
        weight = linear.weight  # (D', D)
        head = on_head_cells(features[..., start:stop], self.head_resize,
                             lambda cells: F.linear(cells, weight[:, start:stop]))
        rest = F.linear(features[..., :start], weight[:, :start], linear.bias) + F.linear(features[..., stop:],
                                                                                         weight[:, stop:])
        return self[1](rest + head)
