"""Additive (Bahdanau / Show-Attend-Tell soft) attention over a feature grid.

The encoder-side projection ``W_f f`` does not change while a caption is decoded, so it is computed
once per image (``project``) and reused at every step (``forward``).

``tanh`` is computed as ``2 sigmoid(2x) - 1`` (the same function): on the project's CPUs
``torch.tanh`` costs about 2.5 ns per element against 0.4 for ``torch.sigmoid``, and the (B, P, A)
energies are the largest elementwise work of a decoder step (docs/benchmarks.md). Results differ
from ``torch.tanh`` by float rounding (about 1e-7).
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
        energy = _tanh(keys + self.query_proj(query).unsqueeze(1))  # (B, P, A)
        alpha = self.score(energy).squeeze(-1).softmax(dim=-1)  # (B, P)
        context = torch.bmm(alpha.unsqueeze(1), features).squeeze(1)  # (B, D)
        return context, alpha


def _tanh(x: Tensor) -> Tensor:
    """tanh(x) = 2 sigmoid(2x) - 1, several times faster than ``torch.tanh`` on a CPU. ``x`` is
    overwritten: pass a temporary (autograd needs neither it nor the doubled copy)."""
    return torch.sigmoid(x.mul_(2.0)).mul(2.0).sub_(1.0)
