"""Additive (Bahdanau / Show-Attend-Tell soft) attention over a feature grid.

The encoder-side projection ``W_f f`` does not change while a caption is decoded, so it is computed
once per image (``project``) and reused at every step (``forward``).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


class AdditiveAttention(nn.Module):
    """alpha = softmax_P( v^T tanh(W_f f_p + W_h h) ); context = sum_p alpha_p f_p."""

    def __init__(self, feature_dim: int, query_dim: int, attention_dim: int) -> None:
        super().__init__()
        self.feature_proj = nn.Linear(feature_dim, attention_dim)
        self.query_proj = nn.Linear(query_dim, attention_dim)
        self.score = nn.Linear(attention_dim, 1)

    def project(self, features: Tensor) -> Tensor:
        """features (B, P, D) -> keys (B, P, A); compute once per image."""
        return self.feature_proj(features)

    def forward(self, features: Tensor, keys: Tensor, query: Tensor) -> tuple[Tensor, Tensor]:
        """features (B, P, D), keys (B, P, A), query (B, S) -> context (B, D), alpha (B, P)."""
        energy = torch.tanh(keys + self.query_proj(query).unsqueeze(1))  # (B, P, A)
        alpha = self.score(energy).squeeze(-1).softmax(dim=-1)  # (B, P)
        context = torch.bmm(alpha.unsqueeze(1), features).squeeze(1)  # (B, D)
        return context, alpha
