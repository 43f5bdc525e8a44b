"""The Show, Attend and Tell recurrent decoder (soft attention) behind the ``CaptionDecoder`` interface.

Its ``forward`` is the plain teacher-forcing loop: every caption through every step, one ``_advance``
per word. Training-speed variants of that loop (shrinking the batch as captions end, a compiled
update, fixed shapes for CUDA graphs) live in ``mmapp/speed/teacher_forcing.py``, chosen by one
switch (``use_training_path``); they compute the same thing.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor, nn

from mmapp.config import CaptionDecoderConfig
from mmapp.models.attention import AdditiveAttention
from mmapp.models.cells import make_cell
from mmapp.models.decoder_base import CaptionDecoder, State
from mmapp.models.image_rows import weighted_sum
from mmapp.models.imagenet_evidence import ImageNetEvidence
from mmapp.vocab import Vocab

# (decoder, features, inputs, image_index) -> (logits, alpha): a faster loop computing what forward does.
TrainingPath = Callable[["RecurrentAttentionDecoder", Tensor, Tensor, "Tensor | None"], "tuple[Tensor, Tensor]"]


class RecurrentAttentionDecoder(CaptionDecoder):
    """Show, Attend and Tell (soft attention): embedding, additive attention, gated context,
    a (stacked) recurrent cell whose first layer reads [word; context], dropout, output layer.

    The cell is ``cfg.cell``: lstm (default), gru, peephole or rnn; ``cfg.num_layers`` >= 1.
    """

    weighted_memory = ("features", "imagenet_logits")  # read only through weighted_sum

    def __init__(self, cfg: CaptionDecoderConfig) -> None:
        super().__init__(cfg)
        S, L, D = cfg.hidden_dim, cfg.num_layers, self.grid_dim
        self.embedding = nn.Embedding(cfg.vocab_size, cfg.embed_dim)
        self.attention = AdditiveAttention(D, S + (cfg.embed_dim if cfg.word_query else 0), cfg.attention_dim)
        self.init_h = nn.Linear(D, L * S)
        # GRU / plain RNN cells carry c through unchanged: a learned init_c would never get a gradient.
        self.init_c = nn.Linear(D, L * S) if cfg.cell in ("lstm", "peephole") else None
        self.gate = nn.Linear(S, D)  # beta: how much of the context to let in
        self.cells = nn.ModuleList(
            make_cell(cfg.cell, (cfg.embed_dim + D) if i == 0 else S, S) for i in range(L))
        self.dropout = nn.Dropout(cfg.dropout)
        self.output = nn.Linear(S + (D if cfg.deep_output else 0), cfg.vocab_size)
        # decoder.imagenet_weight: the ImageNet classifier's evidence for the words it can name
        start, stop = cfg.imagenet_channels
        self.imagenet = (ImageNetEvidence(cfg.imagenet_classes, cfg.vocab_size, stop - start)
                         if cfg.imagenet_weight and cfg.imagenet_classes else None)
        self.imagenet_gate = nn.Linear(self.output.in_features, 1) if self.imagenet is not None else None
        self.training_path: TrainingPath | None = None  # set by mmapp.speed.use_training_path

    def prepare(self, features: Tensor) -> State:
        memory = {}
        if self.imagenet is not None:  # every cell's ImageNet class logits (B, P, K), once per image
            start, stop = self.cfg.imagenet_channels
            head = features[..., start:stop]  # (B, P, C)
            memory["imagenet_logits"] = self.imagenet.cell_logits(head, self.cfg.imagenet_head_resize)
        features = self.project(features)  # (B, P, D')
        return {**memory, "features": features, "keys": self.attention.project(features)}  # (B, P, D'), (B, P, A)

    def attended_logits(self, alpha: Tensor, memory: State) -> Tensor | None:
        """alpha (B, P) -> the attended cell's ImageNet class logits (B, K); None without
        ``decoder.imagenet_weight``."""
        if self.imagenet is None:
            return None
        return weighted_sum(alpha, memory["imagenet_logits"])

    def word_logits(self, top: Tensor, attended: Tensor | None) -> Tensor:
        """The output layer: top (..., S [+ D]) and the attended cells' class logits (..., K) or None
        -> (..., V), plus the gated ImageNet evidence with ``decoder.imagenet_weight``."""
        logits = self.output(self.dropout(top))
        if attended is None:
            return logits
        gate = torch.sigmoid(self.imagenet_gate(top))  # (..., 1): a word's step decides how much to trust it
        return logits + self.cfg.imagenet_weight * gate * self.imagenet.from_logits(attended)

    def init_state(self, memory: State) -> State:
        mean = memory["features"].mean(dim=1)  # (B, D)
        B, L, S = mean.shape[0], self.cfg.num_layers, self.cfg.hidden_dim
        h = self.init_h(mean).view(B, L, S)
        c = self.init_c(mean).view(B, L, S) if self.init_c is not None else torch.zeros_like(h)
        return {"h": h, "c": c}

    def _advance(self, embedded: Tensor, state: State, memory: State) -> tuple[Tensor, Tensor, State]:
        """embedded (B, E) -> what the output layer reads (top hidden (B, S); with ``deep_output``
        [top hidden; gated context] (B, S + D)), alpha (B, P), next state (h, c: (B, L, S))."""
        h, c = state["h"], state["c"]
        query = torch.cat([h[:, -1], embedded], dim=-1) if self.cfg.word_query else h[:, -1]  # (B, S [+ E])
        context, alpha = self.attention(memory["features"], memory["keys"], query)  # (B, D), (B, P)
        context = torch.sigmoid(self.gate(h[:, -1])) * context
        x = torch.cat([embedded, context], dim=-1)  # (B, E + D)
        hs, cs = [], []
        for i, cell in enumerate(self.cells):
            h_i, c_i = cell(x, (h[:, i], c[:, i]))
            hs.append(h_i)
            cs.append(c_i)
            x = self.dropout(h_i)
        new_state = {"h": torch.stack(hs, dim=1), "c": torch.stack(cs, dim=1)}  # (B, L, S)
        top = torch.cat([hs[-1], context], dim=-1) if self.cfg.deep_output else hs[-1]
        return top, alpha, new_state

    def step(self, tokens: Tensor, state: State, memory: State) -> tuple[Tensor, Tensor, State]:
        top, alpha, state = self._advance(self.embedding(tokens), state, memory)
        return self.word_logits(top, self.attended_logits(alpha, memory)), alpha, state

    def forward(self, features: Tensor, inputs: Tensor, image_index: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Teacher forcing (see ``CaptionDecoder.forward``): features (B, P, D) (or (I, P, D) with
        ``image_index`` (B,)), inputs (B, T) -> logits (B, T, V), attention (B, T, P).

        In a padded caption batch (``<start> w.. <end> <pad>..``) the steps that read ``<end>`` or
        ``<pad>`` (whose targets are padding) give logits and attention 0; every other position is
        what ``step`` gives.
        """
        if self.training_path is not None:
            return self.training_path(self, features, inputs, image_index)
        return self.teacher_force(self.prepare_for(features, image_index), inputs)

    def teacher_force(self, memory: State, inputs: Tensor) -> tuple[Tensor, Tensor]:
        """The plain loop of ``forward`` from a memory of one row per caption: inputs (B, T) ->
        logits (B, T, V), attention (B, T, P)."""
        state = self.init_state(memory)
        embedded = self.embedding(inputs)  # (B, T, E)
        tops, alphas, attended = [], [], []
        for t in range(inputs.shape[1]):
            top, alpha, state = self._advance(embedded[:, t], state, memory)
            tops.append(top)
            alphas.append(alpha)
            attended.append(self.attended_logits(alpha, memory))
        logits = self.word_logits(torch.stack(tops, dim=1), stack_or_none(attended, dim=1))  # (B, T, V)
        return zero_after_end(inputs, logits, torch.stack(alphas, dim=1))  # (B, T, V), (B, T, P)


def stack_or_none(parts: list[Tensor | None], dim: int = 0, cat: bool = False) -> Tensor | None:
    """torch.stack (or torch.cat) of per-step tensors; None when the steps gave None."""
    if not parts or parts[0] is None:
        return None
    return torch.cat(parts, dim=dim) if cat else torch.stack(parts, dim=dim)


def caption_lengths(inputs: Tensor) -> Tensor | None:
    """inputs (B, T) -> (B,) how many leading tokens are neither ``<end>`` nor ``<pad>``; None when
    some row goes on after one (not a padded caption batch)."""
    inside = inputs.ne(Vocab.pad_id) & inputs.ne(Vocab.end_id)  # (B, T)
    lengths = inside.sum(dim=1)
    if not torch.equal(inside, torch.arange(inputs.shape[1], device=inputs.device) < lengths.unsqueeze(1)):
        return None
    return lengths


def zero_after_end(inputs: Tensor, logits: Tensor, alpha: Tensor) -> tuple[Tensor, Tensor]:
    """Zero the logits (B, T, V) and attention (B, T, P) of the steps that read ``<end>`` or ``<pad>``
    in a padded caption batch ``inputs`` (B, T); anything else is returned as it is."""
    lengths = caption_lengths(inputs)
    if lengths is None:
        return logits, alpha
    skipped = (torch.arange(inputs.shape[1], device=inputs.device) >= lengths.unsqueeze(1)).unsqueeze(-1)  # (B, T, 1)
    return logits.masked_fill(skipped, 0.0), alpha.masked_fill(skipped, 0.0)
