"""Caption decoders: the interface every variant implements, and the Show-Attend-Tell recurrent decoder.

A decoder splits decoding into three calls so that greedy and beam search (``decoding.py``) are
written once for every variant:

* ``prepare(features)`` -> ``memory``: per-image tensors computed once (e.g. attention keys);
* ``init_state(memory)`` -> ``state``: the recurrent state before the first word;
* ``step(tokens, state, memory)`` -> ``(logits, alpha, state)``: one word further.

``memory`` and ``state`` are dicts of batch-first tensors, so beam search can expand and reorder them
without knowing what they hold.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from mmapp.config import CaptionDecoderConfig
from mmapp.models.attention import AdditiveAttention
from mmapp.models.cells import make_cell
from mmapp.vocab import Vocab

State = dict[str, Tensor]


class CaptionDecoder(nn.Module):
    """Interface of all caption decoders (see module docstring)."""

    cfg: CaptionDecoderConfig

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

        With ``image_index`` (N,), features are (I, P, D) for I images and caption n belongs to image
        ``image_index[n]``: per-image work (e.g. attention keys) is done once per image, not per caption.
        """
        raise NotImplementedError

    def prepare_for(self, features: Tensor, image_index: Tensor | None) -> State:
        """``prepare`` once per image, then one memory row per caption."""
        memory = self.prepare(features)
        if image_index is None:
            return memory
        return {name: t.index_select(0, image_index) for name, t in memory.items()}  # (N, ...)


class RecurrentAttentionDecoder(CaptionDecoder):
    """Show, Attend and Tell (soft attention): embedding, additive attention, gated context,
    a (stacked) recurrent cell whose first layer reads [word; context], dropout, output layer.

    The cell is ``cfg.cell``: lstm (default), gru, peephole or rnn; ``cfg.num_layers`` >= 1.
    """

    def __init__(self, cfg: CaptionDecoderConfig) -> None:
        super().__init__()
        if cfg.vocab_size < 5:
            raise ValueError("decoder.vocab_size must be set (>= 5)")
        self.cfg = cfg
        S, L = cfg.hidden_dim, cfg.num_layers
        D = cfg.project_dim or cfg.encoder_dim
        self.project = (nn.Sequential(nn.Linear(cfg.encoder_dim, D), nn.ReLU()) if cfg.project_dim
                        else nn.Identity())
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
        self._compiled_advance = None  # set by compile_step()
        self.static_shapes = False  # set by use_static_shapes()

    def prepare(self, features: Tensor) -> State:
        features = self.project(features)  # (B, P, D')
        return {"features": features, "keys": self.attention.project(features)}  # (B, P, D'), (B, P, A)

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

    def compile_step(self) -> None:
        """Train with the per-word update (attention, gate, cells, dropout) compiled by ``torch.compile``.

        Teacher forcing on a GPU is bound by kernel launches: dozens of small kernels per word,
        forward and backward. Compiled, the update's element-wise work fuses into a few kernels. A
        compiled update wants fixed shapes, so training batches then keep every row through every step
        (no shrinking as captions end; the padded steps' logits and attention are zeroed, as the
        shrinking forward leaves them). Results are the same up to float rounding; the first batches
        pay the compilation. Decoding (``step``) is not affected.
        """
        self._compiled_advance = torch.compile(self._advance)

    def use_static_shapes(self, on: bool = True) -> None:
        """Train with shapes fixed by the batch and no host synchronisation, as a training step
        captured in a CUDA graph needs (``mmapp.graphed``): every row goes through every step (no
        shrinking as captions end, which reads the lengths on the host), and the steps that read
        ``<end>`` or ``<pad>`` keep the values they computed instead of being zeroed. Their targets
        are padding, so the caption loss is the same; the update at every other step is what ``step``
        gives. Decoding and evaluation (no gradient) are not affected.
        """
        self.static_shapes = on

    def step(self, tokens: Tensor, state: State, memory: State) -> tuple[Tensor, Tensor, State]:
        top, alpha, state = self._advance(self.embedding(tokens), state, memory)
        return self.output(self.dropout(top)), alpha, state

    def forward(self, features: Tensor, inputs: Tensor, image_index: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Teacher forcing (see ``CaptionDecoder.forward``).

        Padded batches (``<start> w.. <end> <pad>..``) are decoded like the Show-Attend-Tell tutorial
        does: rows sorted by length, the batch shrinking as captions end, the output layer run once on
        the steps that were decoded. Steps that read ``<end>`` or ``<pad>`` (whose targets are padding)
        are skipped: their logits and attention are 0. Every other position is what ``step`` gives.
        """
        if self.static_shapes and torch.is_grad_enabled():
            return self._forward_all_steps(features, inputs, image_index, self._compiled_advance)
        lengths = _caption_lengths(inputs)
        if self._compiled_advance is not None and torch.is_grad_enabled():
            logits, alpha = self._forward_all_steps(features, inputs, image_index, self._compiled_advance)
            if lengths is None:
                return logits, alpha
            skipped = (torch.arange(inputs.shape[1], device=inputs.device) >= lengths.unsqueeze(1)).unsqueeze(-1)
            return logits.masked_fill(skipped, 0.0), alpha.masked_fill(skipped, 0.0)  # (B, T, V), (B, T, P)
        if lengths is None or int(lengths.min()) == inputs.shape[1] or int(lengths.max()) == 0:
            return self._forward_all_steps(features, inputs, image_index)  # nothing to skip, or nothing to keep
        B, T = inputs.shape
        order = torch.argsort(lengths, descending=True, stable=True)  # (B,) longest first
        rows_at = (lengths.unsqueeze(1) > torch.arange(T, device=inputs.device)).sum(dim=0).tolist()  # per step
        memory = self.prepare_for(features, order if image_index is None else image_index.index_select(0, order))
        state = self.init_state(memory)
        embedded = self.embedding(inputs.index_select(0, order))  # (B, T, E) in sorted order
        tops, alphas = [], []
        for t, n in enumerate(rows_at):
            if n == 0:
                break
            if n < state["h"].shape[0]:  # the shortest captions have ended: shrink the batch
                state = {name: v[:n] for name, v in state.items()}
                memory = {name: v[:n] for name, v in memory.items()}
            top, alpha, state = self._advance(embedded[:n, t], state, memory)
            tops.append(top)
            alphas.append(alpha)
        # Row-major (B*T) positions of the decoded steps, in the order they were appended (step by step).
        sorted_lengths = lengths.index_select(0, order)
        decoded = torch.arange(T, device=inputs.device) < sorted_lengths.unsqueeze(1)  # (B, T)
        positions = (order.unsqueeze(1) * T + torch.arange(T, device=inputs.device)).t()[decoded.t()]  # (N,)
        packed = self.output(self.dropout(torch.cat(tops)))  # (N, V)
        logits = packed.new_zeros(B * T, packed.shape[-1]).index_copy(0, positions, packed)
        packed_alpha = torch.cat(alphas)  # (N, P)
        alpha = packed_alpha.new_zeros(B * T, packed_alpha.shape[-1]).index_copy(0, positions, packed_alpha)
        return logits.view(B, T, -1), alpha.view(B, T, -1)  # (B, T, V), (B, T, P)

    def _forward_all_steps(self, features: Tensor, inputs: Tensor, image_index: Tensor | None,
                           advance=None) -> tuple[Tensor, Tensor]:
        """Every row through every step (inputs without padding, or not laid out as captions)."""
        advance = advance or self._advance
        memory = self.prepare_for(features, image_index)
        state = self.init_state(memory)
        embedded = self.embedding(inputs).transpose(0, 1).contiguous()  # (T, B, E): same strides at every T
        tops, alphas = [], []
        for t in range(inputs.shape[1]):
            top, alpha, state = advance(embedded[t], state, memory)
            tops.append(top)
            alphas.append(alpha)
        hidden = torch.stack(tops, dim=1)  # (B, T, S) (S + D with deep_output)
        # The output layer runs once over all steps instead of once per step.
        return self.output(self.dropout(hidden)), torch.stack(alphas, dim=1)  # (B, T, V), (B, T, P)


def _caption_lengths(inputs: Tensor) -> Tensor | None:
    """inputs (B, T) -> (B,) how many leading tokens are neither ``<end>`` nor ``<pad>``; None when
    some row goes on after one (not a padded caption batch)."""
    inside = inputs.ne(Vocab.pad_id) & inputs.ne(Vocab.end_id)  # (B, T)
    lengths = inside.sum(dim=1)
    if not torch.equal(inside, torch.arange(inputs.shape[1], device=inputs.device) < lengths.unsqueeze(1)):
        return None
    return lengths


def build_caption_decoder(cfg: CaptionDecoderConfig) -> CaptionDecoder:
    if cfg.cell == "transformer":
        from mmapp.models.transformer_decoder import TransformerDecoder

        return TransformerDecoder(cfg)
    return RecurrentAttentionDecoder(cfg)
