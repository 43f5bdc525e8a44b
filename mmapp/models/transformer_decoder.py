"""A Transformer caption decoder (``decoder.cell=transformer``) behind the ``CaptionDecoder`` interface.

Pre-norm layers (Vaswani et al., 2017; pre-norm as in GPT-2), each with three residual blocks:

    x = x + SelfAttention(LN(x))        masked: a word sees itself and the words before it
    x = x + CrossAttention(LN(x), grid) over the P cells of the (projected) image grid
    x = x + FFN(LN(x))                  Linear(d, 4d) -> GELU -> Linear(4d, d)

then a final LayerNorm and the output layer. d = ``hidden_dim`` (word embeddings have that width too;
``embed_dim`` and ``attention_dim`` are not used), ``num_layers`` layers of ``num_heads`` heads,
``positional`` = sinusoidal (fixed) or learned word positions, at most ``max_len`` positions.
Shapes: d the model width, nh heads, J the positions a query attends to (the words so far,
or the P grid cells).
Dropout acts on the embeddings and on every residual branch, never on the attention weights, so the
attention maps always sum to 1.

Attention map: the per-word map (B, P) that decoding returns is the cross-attention of the **last**
layer averaged over its heads.

Decoding: ``prepare`` computes every layer's cross-attention keys/values once per image;
``init_state`` is an empty key/value cache (a time axis of length 0) and each ``step`` appends one
position to it, so a word costs one position's work, not a recomputation of the whole prefix.
All memory and state tensors are batch-first, so beam search expands and reorders them as it does
the recurrent decoders' states. The image grid carries no positional encoding (nor does it for the
recurrent decoders): where a cell lies is whatever the CNN features encode.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from mmapp.config import CaptionDecoderConfig
from mmapp.errors import InputError
from mmapp.models.decoder_base import CaptionDecoder, State

POSITIONAL = ("sinusoidal", "learned")


def sinusoidal_positions(positions: Tensor, dim: int) -> Tensor:
    """positions (T,) integer -> (T, dim): sin on even, cos on odd features (Vaswani et al., 3.5)."""
    half = (dim + 1) // 2
    freq = torch.exp(torch.arange(half, device=positions.device, dtype=torch.float32)
                     * (-math.log(10000.0) * 2.0 / dim))  # (dim/2,)
    angles = positions.float().unsqueeze(1) * freq  # (T, dim/2)
    table = torch.stack([angles.sin(), angles.cos()], dim=-1).flatten(1)  # (T, 2 * half)
    return table[:, :dim]


class MultiHeadAttention(nn.Module):
    """Scaled dot-product attention with ``heads`` heads that also returns its weights."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.query = nn.Linear(dim, dim)
        self.key_value = nn.Linear(dim, 2 * dim)
        self.out = nn.Linear(dim, dim)

    def _split(self, x: Tensor) -> Tensor:
        B, T, d = x.shape
        return x.view(B, T, self.heads, d // self.heads).transpose(1, 2)  # (B, nh, T, d/nh)

    def keys_values(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """x (B, J, d) -> keys, values (B, nh, J, d/nh)."""
        k, v = self.key_value(x).chunk(2, dim=-1)  # 2 x (B, J, d)
        return self._split(k), self._split(v)

    def forward(self, x: Tensor, keys: Tensor, values: Tensor, mask: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """x (B, T, d) queries, keys/values (B, nh, J, d/nh), mask (T, J) True = may attend
        -> output (B, T, d), weights (B, nh, T, J)."""
        q = self._split(self.query(x))  # (B, nh, T, d/nh)
        scores = q @ keys.transpose(-2, -1) / math.sqrt(q.shape[-1])  # (B, nh, T, J)
        if mask is not None:
            scores = scores.masked_fill(~mask, float("-inf"))
        weights = scores.softmax(dim=-1)  # (B, nh, T, J)
        B, nh, T, _ = q.shape
        mixed = (weights @ values).transpose(1, 2).reshape(B, T, nh * values.shape[-1])  # (B, T, d)
        return self.out(mixed), weights


class DecoderLayer(nn.Module):
    """Masked self-attention, cross-attention over the grid and a feed-forward block, each pre-norm."""

    def __init__(self, dim: int, heads: int, dropout: float) -> None:
        super().__init__()
        self.norm_self, self.norm_cross, self.norm_ffn = nn.LayerNorm(dim), nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.self_attention = MultiHeadAttention(dim, heads)
        self.cross_attention = MultiHeadAttention(dim, heads)
        self.ffn = nn.Sequential(nn.Linear(dim, 4 * dim), nn.GELU(), nn.Linear(4 * dim, dim))
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor, past_k: Tensor, past_v: Tensor, cross_k: Tensor, cross_v: Tensor,
                mask: Tensor | None) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """x (B, T, d) new positions; past_k/v (B, nh, t, d/nh) cached earlier ones; cross_k/v (B, nh, P, d/nh);
        mask (T, t + T) or None -> x (B, T, d), cross weights (B, nh, T, P), keys/values (B, nh, t + T, d/nh)."""
        h = self.norm_self(x)
        new_k, new_v = self.self_attention.keys_values(h)  # (B, nh, T, d/nh)
        keys, values = torch.cat([past_k, new_k], dim=2), torch.cat([past_v, new_v], dim=2)  # (B, nh, t+T, d/nh)
        x = x + self.dropout(self.self_attention(h, keys, values, mask)[0])
        attended, cross = self.cross_attention(self.norm_cross(x), cross_k, cross_v)  # (B, T, d), (B, nh, T, P)
        x = x + self.dropout(attended)
        x = x + self.dropout(self.ffn(self.norm_ffn(x)))
        return x, cross, keys, values


class TransformerDecoder(CaptionDecoder):
    """Transformer decoder over the image grid (see module docstring). Memory: per layer i the
    cross-attention ``cross_k{i}``/``cross_v{i}`` (B, nh, P, d/nh); state: the self-attention cache
    ``k{i}``/``v{i}`` (B, nh, t, d/nh) of the t words so far."""

    def __init__(self, cfg: CaptionDecoderConfig) -> None:
        super().__init__(cfg)
        if cfg.hidden_dim % cfg.num_heads:
            raise ValueError(f"decoder.hidden_dim ({cfg.hidden_dim}) must be divisible by decoder.num_heads "
                             f"({cfg.num_heads}) for the Transformer decoder")
        if cfg.positional not in POSITIONAL:
            raise ValueError(f"decoder.positional must be sinusoidal or learned, got {cfg.positional!r}")
        if cfg.max_len < 1:
            raise ValueError("decoder.max_len must be >= 1")
        d = cfg.hidden_dim
        self.grid_in = nn.Sequential(nn.Linear(self.grid_dim, d), nn.LayerNorm(d))
        self.embedding = nn.Embedding(cfg.vocab_size, d)
        nn.init.normal_(self.embedding.weight, std=d ** -0.5)  # times sqrt(d) in _embed: unit scale
        self.positions = nn.Embedding(cfg.max_len, d) if cfg.positional == "learned" else None
        self.layers = nn.ModuleList(DecoderLayer(d, cfg.num_heads, cfg.dropout) for _ in range(cfg.num_layers))
        self.dropout = nn.Dropout(cfg.dropout)
        self.norm = nn.LayerNorm(d)
        self.output = nn.Linear(d, cfg.vocab_size)

    def _embed(self, tokens: Tensor, start: int) -> Tensor:
        """tokens (B, T) at positions start .. start+T-1 -> (B, T, d)."""
        T = tokens.shape[1]
        if start + T > self.cfg.max_len:
            raise InputError(f"the Transformer decoder was built for at most decoder.max_len={self.cfg.max_len} "
                             f"positions, asked for {start + T}: decode shorter captions")
        where = torch.arange(start, start + T, device=tokens.device)  # (T,)
        pos = self.positions(where) if self.positions is not None else sinusoidal_positions(where, self.cfg.hidden_dim)
        return self.dropout(self.embedding(tokens) * math.sqrt(self.cfg.hidden_dim) + pos)  # (B, T, d)

    def prepare(self, features: Tensor) -> State:
        """features (B, P, D) -> per layer cross-attention keys/values (B, nh, P, d/nh)."""
        grid = self.grid_in(self.project(features))  # (B, P, d)
        memory: State = {}
        for i, layer in enumerate(self.layers):
            memory[f"cross_k{i}"], memory[f"cross_v{i}"] = layer.cross_attention.keys_values(grid)
        return memory

    def init_state(self, memory: State) -> State:
        """An empty self-attention cache: k{i}/v{i} (B, nh, 0, d/nh)."""
        B, nh, _, hd = memory["cross_k0"].shape
        empty = memory["cross_k0"].new_zeros(B, nh, 0, hd)
        return {name: empty for i in range(len(self.layers)) for name in (f"k{i}", f"v{i}")}

    def _run(self, x: Tensor, state: State, memory: State, mask: Tensor | None) -> tuple[Tensor, Tensor, State]:
        """x (B, T, d) -> top hidden (B, T, d), last layer's cross weights mean over heads (B, T, P), new cache."""
        new_state: State = {}
        cross = x.new_zeros(0)
        for i, layer in enumerate(self.layers):
            x, cross, new_state[f"k{i}"], new_state[f"v{i}"] = layer(
                x, state[f"k{i}"], state[f"v{i}"], memory[f"cross_k{i}"], memory[f"cross_v{i}"], mask)
        return self.norm(x), cross.mean(dim=1), new_state

    def step(self, tokens: Tensor, state: State, memory: State) -> tuple[Tensor, Tensor, State]:
        """tokens (B,) -> logits (B, V), alpha (B, P), the cache one position longer."""
        x = self._embed(tokens.unsqueeze(1), start=state["k0"].shape[2])  # (B, 1, d)
        top, alpha, state = self._run(x, state, memory, mask=None)
        return self.output(top[:, 0]), alpha[:, 0], state

    def forward(self, features: Tensor, inputs: Tensor, image_index: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Teacher forcing, all positions at once: features (B, P, D) (or (I, P, D) with ``image_index``
        (B,)), inputs (B, T) -> logits (B, T, V), attention (B, T, P)."""
        memory = self.prepare_for(features, image_index)
        T = inputs.shape[1]
        causal = torch.ones(T, T, dtype=torch.bool, device=inputs.device).tril()  # (T, T) word t sees words <= t
        top, alphas, _ = self._run(self._embed(inputs, start=0), self.init_state(memory), memory, causal)
        return self.output(top), alphas  # (B, T, V), (B, T, P)
