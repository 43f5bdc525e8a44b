"""The training-speed forms of the attention read and score compute what the plain tensor code does:
``ImageRows`` (one memory row per image, read by caption rows) against a copy per caption, and
``HalfTanhScore`` (in-place backward) against ``v . tanh(W_f f + W_h h) + b`` written with autograd."""

from __future__ import annotations

import pytest
import torch

from mmapp.models.attention import AdditiveAttention, HalfTanhScore
from mmapp.models.image_rows import ImageRows, weighted_sum


def test_image_rows_read_and_gradients_equal_a_copy_per_caption() -> None:
    g = torch.Generator().manual_seed(0)
    values = torch.randn(3, 7, 5, generator=g, requires_grad=True)  # (I, P, D)
    image_of_row = torch.tensor([2, 0, 0, 2, 1, 0])  # (R,) images unequally captioned, not in order
    alpha = torch.softmax(torch.randn(6, 7, generator=g), -1).requires_grad_()
    rows = ImageRows.for_rows(values, image_of_row)
    assert rows.captions_per_image == 3 and len(rows.slot) == 6
    assert len(set(rows.slot.tolist())) == 6 and (rows.slot // 3).tolist() == image_of_row.tolist()

    out = weighted_sum(alpha, rows)
    expected = weighted_sum(alpha, values.index_select(0, image_of_row))  # the plain (R, P, D) read
    torch.testing.assert_close(out, expected)
    weights = torch.randn(6, 5, generator=g)
    grads = torch.autograd.grad((out * weights).sum(), (values, alpha))
    expected_grads = torch.autograd.grad((expected * weights).sum(), (values, alpha))
    for got, want in zip(grads, expected_grads):
        torch.testing.assert_close(got, want)
    # the shrinking batch keeps the first rows: the same as reading their copies
    torch.testing.assert_close(weighted_sum(alpha[:4], rows[:4]), expected[:4])


def test_half_tanh_score_and_its_gradients_equal_tanh_written_with_autograd() -> None:
    g = torch.Generator().manual_seed(1)
    attention = AdditiveAttention(feature_dim=6, query_dim=4, attention_dim=5)
    features = torch.randn(3, 7, 6, generator=g, requires_grad=True)
    query = torch.randn(3, 4, generator=g, requires_grad=True)
    target = torch.randn(3, 6, generator=g)

    def reference(features, query):  # the textbook form: softmax(v . tanh(W_f f + W_h h) + b)
        energies = torch.tanh(attention.feature_proj(features) + attention.query_proj(query).unsqueeze(1))
        alpha = attention.score(energies).squeeze(-1).softmax(-1)
        return torch.bmm(alpha.unsqueeze(1), features).squeeze(1), alpha

    params = [features, query, *attention.parameters()]
    context, alpha = attention(features, attention.project(features), query)
    ref_context, ref_alpha = reference(features, query)
    torch.testing.assert_close(alpha, ref_alpha, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(context, ref_context, rtol=1e-5, atol=1e-6)
    grads = torch.autograd.grad((context * target).sum() + alpha[:, 2].sum(), params)
    ref_grads = torch.autograd.grad((ref_context * target).sum() + ref_alpha[:, 2].sum(), params)
    for got, want in zip(grads, ref_grads):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-6)


def test_half_tanh_score_refuses_a_second_backward_over_its_spent_energies() -> None:
    keys = torch.randn(2, 3, 4, requires_grad=True)
    score = HalfTanhScore.apply(keys, torch.randn(2, 4), torch.randn(4), torch.zeros(1))
    score.sum().backward(retain_graph=True)
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        score.sum().backward()
