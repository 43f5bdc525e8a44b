"""Greedy search, beam search and sampling, written once over a decoder's ``prepare``/``init_state``/``step``.

Beam search is batched: B images x K beams are one (B*K)-row tensor batch; there is no Python loop
over images. Finished beams stay in the beam and may only emit ``<pad>`` at no cost, so they keep
competing with open beams; the best beam is chosen by its (optionally length-normalised) score.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from mmapp.models.decoder_base import CaptionDecoder, State


@dataclass
class Decoded:
    """Decoding output for B images.

    tokens (B, T) word ids ending with ``<end>`` where one was emitted, then ``<pad>``;
    lengths (B,) number of tokens up to and including ``<end>``;
    scores (B,) total log-probability (length-normalised if asked);
    attention (B, T, P), zero after ``<end>``.
    """

    tokens: Tensor
    lengths: Tensor
    scores: Tensor
    attention: Tensor


def _rows(decoder: CaptionDecoder, features: Tensor, k: int) -> tuple[State, State]:
    """features (B, P, D) -> memory and initial state for B*K rows, image-major (K per image)."""
    image_of_row = torch.arange(features.shape[0], device=features.device).repeat_interleave(k)  # (B*K,)
    return decoder.rows_of_images(decoder.prepare(features), image_of_row)


def _select(state: State, rows: Tensor) -> State:
    return {name: t.index_select(0, rows) for name, t in state.items()}


@torch.no_grad()
def greedy_search(decoder: CaptionDecoder, features: Tensor, max_len: int, start_id: int, end_id: int,
                  pad_id: int = 0) -> Decoded:
    """features (B, P, D) -> the most likely word at every step, at most ``max_len`` words + ``<end>``.

    Written as a plain loop, independently of ``beam_search``, so each checks the other in tests.
    """
    B = features.shape[0]
    memory = decoder.prepare(features)
    state = decoder.init_state(memory)
    tokens = torch.full((B,), start_id, dtype=torch.long, device=features.device)
    finished = torch.zeros(B, dtype=torch.bool, device=features.device)
    lengths = torch.zeros(B, dtype=torch.long, device=features.device)
    scores = torch.zeros(B, device=features.device)
    words, alphas = [], []
    for t in range(max_len + 1):
        logits, alpha, state = decoder.step(tokens, state, memory)  # (B, V), (B, P)
        logp = _never(logits.float().log_softmax(dim=-1), start_id, pad_id)
        if t == max_len:  # the last step must close the caption
            logp = _only(logp, end_id)
        best_logp, word = logp.max(dim=-1)  # (B,)
        word = word.masked_fill(finished, pad_id)
        scores = scores + best_logp.masked_fill(finished, 0.0)
        lengths = lengths + (~finished).long()
        alphas.append(alpha.masked_fill(finished.unsqueeze(-1), 0.0))
        words.append(word)
        finished = finished | (word == end_id)
        tokens = word
        if bool(finished.all()):
            break
    return Decoded(tokens=torch.stack(words, dim=1), lengths=lengths, scores=scores,
                   attention=torch.stack(alphas, dim=1))


@dataclass
class Sampled:
    """Captions sampled for self-critical training: B images x K samples = B*K rows (image-major).

    tokens (B*K, T) word ids ending with ``<end>`` where one was drawn, then ``<pad>``;
    logp (B*K, T) log-probability of each drawn word, differentiable, 0 after ``<end>``;
    mask (B*K, T) True up to and including ``<end>``.
    """

    tokens: Tensor
    logp: Tensor
    mask: Tensor


def sample(decoder: CaptionDecoder, features: Tensor, num_samples: int, max_len: int, start_id: int,
           end_id: int, pad_id: int = 0, generator: torch.Generator | None = None) -> Sampled:
    """Draw ``num_samples`` captions per image from the decoder's word distributions, keeping the
    graph: features (B, P, D) -> ``Sampled`` with B*K rows, image b's samples in rows b*K .. b*K+K-1.

    Runs in whatever mode the decoder is in (self-critical.pytorch samples with dropout on, in
    training mode). At most ``max_len`` words + ``<end>``, as ``greedy_search``.
    """
    if num_samples < 1:
        raise ValueError("num_samples must be >= 1")
    B = features.shape[0]
    memory, state = _rows(decoder, features, num_samples)
    rows = B * num_samples
    tokens = torch.full((rows,), start_id, dtype=torch.long, device=features.device)
    finished = torch.zeros(rows, dtype=torch.bool, device=features.device)
    words, logps, masks = [], [], []
    never = last = None  # (V,) words a step may not draw: <start>/<pad>; at the last step all but <end>
    for t in range(max_len + 1):
        logits, _, state = decoder.step(tokens, state, memory)  # (R, V)
        if never is None:
            never = torch.zeros(logits.shape[-1], dtype=torch.bool, device=logits.device)
            never[[start_id, pad_id]] = True
            last = torch.ones_like(never)
            last[end_id] = False
        banned = last if t == max_len else never  # the last step must close the caption
        # masked, not _never/_only's in-place writes: log_softmax's backward needs its output intact
        logp = logits.float().masked_fill(banned, float("-inf")).log_softmax(dim=-1)  # (R, V)
        word = torch.multinomial(logp.detach().exp(), 1, generator=generator).squeeze(1)  # (R,)
        word = word.masked_fill(finished, pad_id)
        masks.append(~finished)
        logps.append(logp.gather(1, word.unsqueeze(1)).squeeze(1).masked_fill(finished, 0.0))
        words.append(word)
        finished = finished | (word == end_id)
        tokens = word
        if bool(finished.all()):
            break
    return Sampled(tokens=torch.stack(words, dim=1), logp=torch.stack(logps, dim=1), mask=torch.stack(masks, dim=1))


def _never(logp: Tensor, *word_ids: int) -> Tensor:
    """Words a caption never contains (``<start>``, ``<pad>``) get log-probability -inf."""
    logp[..., list(word_ids)] = float("-inf")
    return logp


def _only(logp: Tensor, word_id: int) -> Tensor:
    """Make ``word_id`` the only possible word: every other log-probability becomes -inf."""
    forced = torch.full_like(logp, float("-inf"))
    forced[..., word_id] = logp[..., word_id]
    return forced


@torch.no_grad()
def beam_search(decoder: CaptionDecoder, features: Tensor, beam_size: int, max_len: int, start_id: int,
                end_id: int, pad_id: int = 0, length_penalty: float = 0.0) -> Decoded:
    """Batched beam search. features (B, P, D) -> the best of K beams per image.

    ``max_len`` counts words before ``<end>``; a beam that reaches it without ``<end>`` is still a
    valid caption. ``length_penalty`` alpha ranks beams by score / length**alpha (0: raw score).

    The search stops as soon as no open beam can still win (``_settled``): with raw scores that is
    when every image's best beam (its ``n_best`` best, for ``beam_search_n_best``) has ended, since an
    open beam's score only falls as it grows; with a length penalty, when every beam has ended.
    Stopping there changes no result, only the steps run.
    """
    return beam_search_n_best(decoder, features, beam_size, max_len, start_id, end_id, pad_id, length_penalty)[0]


@torch.no_grad()
def beam_search_n_best(decoder: CaptionDecoder, features: Tensor, beam_size: int, max_len: int, start_id: int,
                       end_id: int, pad_id: int = 0, length_penalty: float = 0.0,
                       n_best: int = 1) -> list[Decoded]:
    """``beam_search`` keeping the ``n_best`` (<= K) final beams: a list, best first, of ``Decoded``
    (B rows each), e.g. a generated answer's top-k."""
    if beam_size < 1:
        raise ValueError("beam_size must be >= 1")
    if not 1 <= n_best <= beam_size:
        raise ValueError(f"n_best must be in 1..beam_size ({beam_size}), got {n_best}")
    B, P, K = features.shape[0], features.shape[1], beam_size
    device = features.device
    memory, state = _rows(decoder, features, K)
    tokens = torch.full((B * K,), start_id, dtype=torch.long, device=device)
    scores = torch.full((B, K), float("-inf"), device=device)
    scores[:, 0] = 0.0  # all beams start equal: only one may expand at the first step
    finished = torch.zeros(B, K, dtype=torch.bool, device=device)
    lengths = torch.zeros(B, K, dtype=torch.long, device=device)
    row_base = (torch.arange(B, device=device) * K).unsqueeze(1)  # (B, 1)
    done_row = None  # (V,): a finished beam may only continue with <pad>, at no cost
    # Per step: each beam's parent beam and word, whether its parent had finished, and the step's
    # attention rows. Sequences are read back from these once, at the end.
    history: list[tuple[Tensor, Tensor, Tensor, Tensor]] = []

    never = None  # (V,): 0, or -inf for the words a caption never holds (<start>, <pad>)
    for t in range(max_len + 1):
        logits, alpha, state = decoder.step(tokens, state, memory)  # (B*K, V), (B*K, P)
        if never is None:
            never = _never(torch.zeros(logits.shape[-1], device=device), start_id, pad_id)
        logp = (logits.float().log_softmax(dim=-1) + never).view(B, K, -1)  # (B, K, V)
        if t == max_len:  # the last step must close every open caption
            logp = _only(logp, end_id)
        V = logp.shape[-1]
        if done_row is None:
            done_row = torch.full((V,), float("-inf"), device=device)
            done_row[pad_id] = 0.0
        if t > 0:
            logp = torch.where(finished.unsqueeze(-1), done_row, logp)
        candidates = (scores.unsqueeze(-1) + logp).view(B, K * V)  # (B, K*V)
        scores, flat = candidates.topk(K, dim=-1)  # (B, K)
        parent, word = flat // V, flat % V  # (B, K)

        state = _select(state, (row_base + parent).view(-1))
        was_finished = finished.gather(1, parent)
        history.append((parent, word, was_finished, alpha.view(B, K, P)))
        lengths = lengths.gather(1, parent) + (~was_finished).long()
        finished = was_finished | (word == end_id)
        tokens = word.view(-1)
        if _settled(finished, length_penalty, n_best):
            break

    ranking = scores / lengths.clamp(min=1).float().pow(length_penalty) if length_penalty else scores
    order = ranking.argsort(dim=-1, descending=True, stable=True)[:, :n_best]  # (B, n): best first
    pick = torch.arange(B, device=device)
    out = []
    for j in range(order.shape[1]):
        beam = order[:, j]  # (B,)
        seqs, alphas = _trace_back(history, beam)
        out.append(Decoded(tokens=seqs, lengths=lengths[pick, beam], scores=ranking[pick, beam], attention=alphas))
    return out


def _settled(finished: Tensor, length_penalty: float, n_best: int = 1) -> bool:
    """finished (B, K), the beams of each image sorted best first by score -> whether no open beam
    can still enter the ``n_best`` kept: without a length penalty, once each image's ``n_best`` best
    beams have ended (the others' scores can only fall); with one, once every beam has ended."""
    if length_penalty:
        return bool(finished.all())
    return bool(finished[:, :n_best].all())


def _trace_back(history: list[tuple[Tensor, Tensor, Tensor, Tensor]], beam: Tensor) -> tuple[Tensor, Tensor]:
    """Follow parents back from ``beam`` (B,) at the last step -> tokens (B, T), attention (B, T, P),
    the attention zero where the beam had already finished."""
    words, alphas = [], []
    for parent, word, was_finished, alpha in reversed(history):  # (B, K) x3, (B, K, P)
        words.append(word.gather(1, beam.unsqueeze(1)).squeeze(1))  # (B,)
        source = parent.gather(1, beam.unsqueeze(1))  # (B, 1): the beam it grew from
        step_alpha = alpha.gather(1, source.unsqueeze(-1).expand(-1, -1, alpha.shape[-1])).squeeze(1)  # (B, P)
        alphas.append(step_alpha.masked_fill(was_finished.gather(1, beam.unsqueeze(1)), 0.0))
        beam = source.squeeze(1)
    return torch.stack(words[::-1], dim=1), torch.stack(alphas[::-1], dim=1)  # (B, T), (B, T, P)
