"""Additive (Bahdanau / Show-Attend-Tell soft) attention over a feature grid.

The encoder-side projection ``W_f f`` does not change while a caption is decoded, so it is computed
once per image (``project``) and reused at every step (``forward``).

The (B, P, A) energies are the largest elementwise work of a decoder step (docs/benchmarks.md), so
``tanh`` is not computed at all. With ``tanh(x) = 2 sigmoid(2x) - 1`` and ``s = sigmoid(2x)``,
``v . tanh(x) + b = 2 (v . s + b) - (b + sum(v))``, and the softmax over the cells ignores the
constant: ``alpha = softmax(2 score(s))``. The keys are stored doubled (``project``), so a step makes
one pass to add the query and one in-place sigmoid over the energies, where ``tanh`` made one
(costing about 2.5 ns per element on the project's CPUs against 0.4 for ``sigmoid``) and the
``2 sigmoid(2x) - 1`` form four. Results differ from ``tanh`` by float rounding (about 1e-7).

Training reads the same (B, P, A) energies back three times (the score's gradient, the sigmoid's,
the query's factor 2), each a new tensor the size of the energies whose pages are touched for the
first time. ``HalfTanhScore`` is the energies and the score as one autograd function whose
backward makes the energies' gradient in place of the saved energies: no (B, P, A) tensor is
allocated in the backward pass.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from mmapp.models.image_rows import ImageRows, weighted_sum


class AdditiveAttention(nn.Module):
    """alpha = softmax_P( v^T tanh(W_f f_p + W_h h) ); context = sum_p alpha_p f_p."""

    def __init__(self, feature_dim: int, query_dim: int, attention_dim: int) -> None:
        super().__init__()
        self.feature_proj = nn.Linear(feature_dim, attention_dim)
        self.query_proj = nn.Linear(query_dim, attention_dim)
        self.score = nn.Linear(attention_dim, 1)

    def project(self, features: Tensor) -> Tensor:
        """features (B, P, D) -> keys (B, P, A), 2 W_f f (doubled for ``forward``); compute once per image."""
        return self.feature_proj(features) * 2.0

    def forward(self, features: "Tensor | ImageRows", keys: Tensor, query: Tensor) -> tuple[Tensor, Tensor]:
        """features (B, P, D) (or ``ImageRows`` of B rows), keys (B, P, A) from ``project``, query (B, S)
        -> context (B, D), alpha (B, P)."""
        score = HalfTanhScore.apply(keys, self.query_proj(query), self.score.weight.view(-1), self.score.bias)  # (B, P)
        alpha = (score * 2.0).softmax(dim=-1)  # (B, P): softmax(score(tanh(.)))
        context = weighted_sum(alpha, features)  # (B, D)
        return context, alpha


class HalfTanhScore(torch.autograd.Function):
    """keys (B, P, A) (doubled, from ``project``), query (B, A), weight (A,), bias (1,)
    -> (B, P): weight . sigmoid(keys + 2 query) + bias.

    The saved energies s = sigmoid(.) become their own gradient in the backward pass
    (ds = g w, d(pre) = ds s (1 - s), in place), so the graph can be walked back once only."""

    @staticmethod
    def forward(ctx, keys: Tensor, query: Tensor, weight: Tensor, bias: Tensor) -> Tensor:
        energies = (keys + (query * 2.0).unsqueeze(1)).sigmoid_()  # (B, P, A); add(alpha=2) is 3x slower
        ctx.save_for_backward(energies, weight)
        return torch.matmul(energies, weight).add_(bias)  # (B, P)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        energies, weight = ctx.saved_tensors  # a second walk back finds them changed: autograd refuses it
        A = energies.shape[-1]
        grad_weight = torch.mm(grad.reshape(1, -1), energies.view(-1, A)).view(A)  # sum g s
        grad_bias = grad.sum().view(1)
        pre = torch.addcmul(energies, energies, energies, value=-1.0, out=energies)  # s (1 - s), in place
        pre.mul_(grad.unsqueeze(-1)).mul_(weight)  # (B, P, A): d(keys + 2 query)
        return pre, pre.sum(dim=1).mul_(2.0), grad_weight, grad_bias
