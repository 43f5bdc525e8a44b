"""Training losses, kept apart from the models."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def caption_loss(logits: Tensor, alphas: Tensor, targets: Tensor, pad_id: int = 0,
                 attention_weight: float = 1.0) -> tuple[Tensor, dict[str, float]]:
    """Cross-entropy over real words + the doubly stochastic attention regulariser.

    logits (B, T, V), alphas (B, T, P), targets (B, T) (``<pad>`` is ignored).
    Regulariser (Show, Attend and Tell, eq. 14): lambda * mean over images and cells of
    (1 - sum_t alpha_tp)^2 over non-pad steps, so that attention over the caption covers the grid.
    The mean over the P cells (as the widely used PyTorch tutorial does) keeps lambda = 1 meaningful
    for any grid size; the paper's sum over cells is P times larger.
    Logits and attention at steps whose target is ``<pad>`` do not matter (any values give the same loss),
    and neither do rows whose targets are all ``<pad>`` (the rows a fixed-shape batch is padded with,
    ``mmapp.speed.fixed_shapes``): the regulariser averages over the rows with a target.
    """
    loss, terms = caption_loss_terms(logits, alphas, targets, pad_id, attention_weight)
    return loss, floats(terms)


def floats(terms: dict[str, Tensor]) -> dict[str, float]:
    """Loss terms read back from the device (one synchronisation each)."""
    return {name: float(value) for name, value in terms.items()}


def caption_loss_terms(logits: Tensor, alphas: Tensor, targets: Tensor, pad_id: int = 0,
                       attention_weight: float = 1.0) -> tuple[Tensor, dict[str, Tensor]]:
    """``caption_loss`` with its terms as detached 0-dim tensors: nothing waits for the device
    (what a training step captured in a CUDA graph needs, ``mmapp.speed.graphed``)."""
    mask = targets.ne(pad_id)  # (B, T)
    xent = F.cross_entropy(logits.flatten(0, 1).float(), targets.flatten(), ignore_index=pad_id)
    coverage = (alphas.float() * mask.unsqueeze(-1)).sum(dim=1)  # (B, P)
    rows = mask.any(dim=1)  # (B,) a real caption has at least <end> as a target
    penalty = (((1.0 - coverage) ** 2).mean(dim=1) * rows).sum() / rows.sum().clamp(min=1)
    loss = xent + attention_weight * penalty
    return loss, {"xent": xent.detach(), "att_penalty": penalty.detach()}


def vqa_loss(logits: Tensor, targets: Tensor) -> tuple[Tensor, dict[str, float]]:
    """Soft-target cross-entropy. logits (B, N), targets (B, N) soft scores in [0, 1].

    Targets are renormalised to a distribution per question; questions whose answers are all out
    of the vocabulary (all-zero targets, as in a fixed-shape batch's padding rows) do not contribute.
    """
    loss, terms = vqa_loss_terms(logits, targets)
    return loss, floats(terms)


def vqa_loss_terms(logits: Tensor, targets: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
    """``vqa_loss`` with its term as a detached 0-dim tensor (nothing waits for the device)."""
    totals = targets.sum(dim=-1, keepdim=True)  # (B, 1)
    valid = totals.squeeze(-1) > 0
    dist = targets / totals.clamp(min=1e-12)
    per_question = -(dist * logits.float().log_softmax(dim=-1)).sum(dim=-1)  # (B,)
    loss = (per_question * valid).sum() / valid.sum().clamp(min=1)
    return loss, {"xent": loss.detach()}


def attention_grounding_loss(attention: Tensor, regions: Tensor) -> tuple[Tensor, dict[str, float]]:
    """Attention supervision: -log of the attention mass each glimpse puts on its target cells.

    attention (B, G, P) (each glimpse, or caption step, sums to 1 over P), regions (B, G, P) bool
    target cells (``data.vqa_regions``, ``data.caption_regions``); glimpses with no target cell do
    not contribute. Returns the mean over
    supervised glimpses (0 when there are none) and the mean mass they put on their targets.
    """
    loss, terms = attention_grounding_loss_terms(attention, regions)
    return loss, floats(terms)


def attention_grounding_loss_terms(attention: Tensor, regions: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
    """``attention_grounding_loss`` with its terms as detached 0-dim tensors."""
    supervised = regions.any(dim=-1)  # (B, G)
    mass = (attention.float() * regions).sum(dim=-1)  # (B, G)
    n = supervised.sum().clamp(min=1)
    loss = -(mass.clamp(min=1e-6).log() * supervised).sum() / n
    return loss, {"ground": loss.detach(), "ground_mass": (mass.detach() * supervised).sum() / n}


def count_map_loss(count_logits: Tensor, centres: Tensor) -> tuple[Tensor, dict[str, float]]:
    """Per-cell binary cross-entropy of the count map against the asked-about objects' centre cells,
    summed over cells and averaged over questions, plus the absolute error of its summed sigmoid
    against the number of centres (the count itself: the per-cell term alone leaves neighbouring
    cells half lit and the total off by most of an object).

    count_logits (B, P), centres (B, P) bool. Returns the total and its terms: ``count_bce`` and
    ``count_error`` (mean absolute count error).
    """
    loss, terms = count_map_loss_terms(count_logits, centres)
    return loss, floats(terms)


def count_map_loss_terms(count_logits: Tensor, centres: Tensor, rows: Tensor | None = None
                         ) -> tuple[Tensor, dict[str, Tensor]]:
    """``count_map_loss`` with its terms as detached 0-dim tensors; ``rows`` (B,) bool, where given,
    names the questions that count (a fixed-shape batch's padding rows do not)."""
    target = centres.float()
    weight = torch.ones(len(target), device=target.device) if rows is None else rows.float()  # (B,)
    n = weight.sum().clamp(min=1)
    bce = (F.binary_cross_entropy_with_logits(count_logits.float(), target, reduction="none").sum(-1)
           * weight).sum() / n
    error = ((torch.sigmoid(count_logits.float()).sum(-1) - target.sum(-1)).abs() * weight).sum() / n
    return bce + error, {"count_bce": bce.detach(), "count_error": error.detach()}


def answer_sequence_loss(logits: Tensor, targets: Tensor, weights: Tensor, pad_id: int = 0
                         ) -> tuple[Tensor, dict[str, Tensor]]:
    """The generative VQA head's soft-target loss: the weighted negative log-likelihood of each
    question's distinct human answers, as whole word sequences.

    logits (R, T, V), targets (R, T) = ``w1 .. <end> <pad>..`` of R answers, weights (R,): each answer's
    official soft score min(1, #humans / 3), normalised to sum to 1 over its question's answers. The
    loss is sum_r w_r * (-log p(answer_r)) / #questions: for one-word answers it is the classifier's
    soft-target cross-entropy (``vqa_loss``) over whole answers. No attention regulariser: an answer
    of one or two words should not be pushed to cover the grid.
    """
    token_nll = F.cross_entropy(logits.flatten(0, 1).float(), targets.flatten(), ignore_index=pad_id,
                                reduction="none").view(targets.shape)  # (R, T)
    sequence_nll = token_nll.sum(dim=1)  # (R,)
    questions = weights.sum().clamp(min=1e-12)  # each question's weights sum to 1
    loss = (weights * sequence_nll).sum() / questions
    return loss, {"xent": loss.detach()}
