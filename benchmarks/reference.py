"""A faithful reimplementation of the Show-Attend-Tell tutorial's decoder, training step and beam search.

Source: sgrvinod/a-PyTorch-Tutorial-to-Image-Captioning, ``models.py`` (``Attention``,
``DecoderWithAttention``), ``train.py`` (one training step) and ``caption.py``
(``caption_image_beam_search``). The algorithm and the parameter names are kept as written there, so
that benchmark ratios are measured against the real thing, not quoted:

* training sorts the batch by decode length and shrinks it step by step (``batch_size_t``), recomputes
  the encoder-side attention projection ``encoder_att(encoder_out)`` at every step, runs the output
  layer ``fc`` once per step, and writes into preallocated ``predictions``/``alphas`` tensors;
* the loss packs the valid steps (``pack_padded_sequence``), adds ``alpha_c * mean((1 - sum_t alpha)^2)``,
  clips gradients by value (``clip_gradient``: ``grad.clamp_(-clip, clip)``) and steps Adam;
* beam search captions one image at a time: k hypotheses as a batch of k, completed ones set aside in
  Python lists, the beam shrinking as hypotheses end.

Deliberate, documented departures (none changes the cost):

* no module-level ``device``: tensors go where ``encoder_out`` lives;
* ``prev_word_inds = top_k_words // vocab_size`` (the tutorial's ``/`` gives float indices on
  today's PyTorch and fails);
* beam search takes the grid already encoded (the benchmark times the encoder separately) and
  ``max_steps`` (the tutorial's fixed 50); when no hypothesis ended by then it returns the best open
  one (the tutorial fails on ``max([])``);
* ``attention_activation``: the tutorial's attention uses ReLU; mmapp's (like the paper) uses tanh.
  The benchmark keeps ReLU; the equivalence test passes ``"tanh"`` to compare the two on shared weights.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils.rnn import pack_padded_sequence

from mmapp.config import CaptionDecoderConfig
from mmapp.models.recurrent_decoder import RecurrentAttentionDecoder


class Attention(nn.Module):
    """The tutorial's attention network (``models.Attention``)."""

    def __init__(self, encoder_dim: int, decoder_dim: int, attention_dim: int, activation: str = "relu") -> None:
        super().__init__()
        self.encoder_att = nn.Linear(encoder_dim, attention_dim)
        self.decoder_att = nn.Linear(decoder_dim, attention_dim)
        self.full_att = nn.Linear(attention_dim, 1)
        self.relu = nn.ReLU() if activation == "relu" else nn.Tanh()
        self.softmax = nn.Softmax(dim=1)

    def forward(self, encoder_out: Tensor, decoder_hidden: Tensor) -> tuple[Tensor, Tensor]:
        """encoder_out (B, P, D), decoder_hidden (B, S) -> context (B, D), alpha (B, P)."""
        att1 = self.encoder_att(encoder_out)  # (B, P, A): recomputed at every step, as in the tutorial
        att2 = self.decoder_att(decoder_hidden)  # (B, A)
        att = self.full_att(self.relu(att1 + att2.unsqueeze(1))).squeeze(2)  # (B, P)
        alpha = self.softmax(att)  # (B, P)
        attention_weighted_encoding = (encoder_out * alpha.unsqueeze(2)).sum(dim=1)  # (B, D)
        return attention_weighted_encoding, alpha


class DecoderWithAttention(nn.Module):
    """The tutorial's decoder (``models.DecoderWithAttention``), one LSTM layer."""

    def __init__(self, attention_dim: int, embed_dim: int, decoder_dim: int, vocab_size: int,
                 encoder_dim: int = 2048, dropout: float = 0.5, attention_activation: str = "relu") -> None:
        super().__init__()
        self.encoder_dim, self.attention_dim, self.embed_dim = encoder_dim, attention_dim, embed_dim
        self.decoder_dim, self.vocab_size = decoder_dim, vocab_size
        self.attention = Attention(encoder_dim, decoder_dim, attention_dim, attention_activation)
        self.embedding = nn.Embedding(vocab_size, embed_dim)
        self.dropout = nn.Dropout(p=dropout)
        self.decode_step = nn.LSTMCell(embed_dim + encoder_dim, decoder_dim, bias=True)
        self.init_h = nn.Linear(encoder_dim, decoder_dim)
        self.init_c = nn.Linear(encoder_dim, decoder_dim)
        self.f_beta = nn.Linear(decoder_dim, encoder_dim)
        self.sigmoid = nn.Sigmoid()
        self.fc = nn.Linear(decoder_dim, vocab_size)
        self.embedding.weight.data.uniform_(-0.1, 0.1)
        self.fc.bias.data.fill_(0)
        self.fc.weight.data.uniform_(-0.1, 0.1)

    def init_hidden_state(self, encoder_out: Tensor) -> tuple[Tensor, Tensor]:
        mean_encoder_out = encoder_out.mean(dim=1)  # (B, D)
        return self.init_h(mean_encoder_out), self.init_c(mean_encoder_out)  # (B, S) each

    def forward(self, encoder_out: Tensor, encoded_captions: Tensor, caption_lengths: Tensor
                ) -> tuple[Tensor, Tensor, list[int], Tensor, Tensor]:
        """encoder_out (B, H, W, D) or (B, P, D), encoded_captions (B, L), caption_lengths (B, 1)
        -> predictions (B, T, V), sorted captions, decode lengths, alphas (B, T, P), sort indices."""
        batch_size = encoder_out.size(0)
        encoder_dim = encoder_out.size(-1)
        encoder_out = encoder_out.view(batch_size, -1, encoder_dim)  # (B, P, D)
        num_pixels = encoder_out.size(1)

        caption_lengths, sort_ind = caption_lengths.squeeze(1).sort(dim=0, descending=True)
        encoder_out = encoder_out[sort_ind]
        encoded_captions = encoded_captions[sort_ind]
        embeddings = self.embedding(encoded_captions)  # (B, L, E)
        h, c = self.init_hidden_state(encoder_out)  # (B, S)
        decode_lengths = (caption_lengths - 1).tolist()

        device = encoder_out.device
        predictions = torch.zeros(batch_size, max(decode_lengths), self.vocab_size, device=device)
        alphas = torch.zeros(batch_size, max(decode_lengths), num_pixels, device=device)
        for t in range(max(decode_lengths)):
            batch_size_t = sum([length > t for length in decode_lengths])
            attention_weighted_encoding, alpha = self.attention(encoder_out[:batch_size_t], h[:batch_size_t])
            gate = self.sigmoid(self.f_beta(h[:batch_size_t]))  # (B_t, D)
            attention_weighted_encoding = gate * attention_weighted_encoding
            h, c = self.decode_step(torch.cat([embeddings[:batch_size_t, t, :], attention_weighted_encoding], dim=1),
                                    (h[:batch_size_t], c[:batch_size_t]))  # (B_t, S)
            preds = self.fc(self.dropout(h))  # (B_t, V): the output layer once per step
            predictions[:batch_size_t, t, :] = preds
            alphas[:batch_size_t, t, :] = alpha
        return predictions, encoded_captions, decode_lengths, alphas, sort_ind


def clip_gradient(optimizer: torch.optim.Optimizer, grad_clip: float) -> None:
    """The tutorial's ``utils.clip_gradient``: clamp every gradient element to [-clip, clip]."""
    for group in optimizer.param_groups:
        for param in group["params"]:
            if param.grad is not None:
                param.grad.data.clamp_(-grad_clip, grad_clip)


def tutorial_loss(decoder: DecoderWithAttention, encoder_out: Tensor, caps: Tensor, caplens: Tensor,
                  alpha_c: float = 1.0) -> tuple[Tensor, Tensor, Tensor]:
    """``train.py``'s loss: (loss, packed scores (N, V), packed targets (N,)) over the decoded steps."""
    scores, caps_sorted, decode_lengths, alphas, _ = decoder(encoder_out, caps, caplens)
    targets = caps_sorted[:, 1:]
    scores = pack_padded_sequence(scores, decode_lengths, batch_first=True).data
    targets = pack_padded_sequence(targets, decode_lengths, batch_first=True).data
    loss = F.cross_entropy(scores, targets)
    loss = loss + alpha_c * ((1.0 - alphas.sum(dim=1)) ** 2).mean()
    return loss, scores, targets


def tutorial_train_step(decoder: DecoderWithAttention, optimizer: torch.optim.Optimizer, encoder_out: Tensor,
                        caps: Tensor, caplens: Tensor, alpha_c: float = 1.0, grad_clip: float = 5.0) -> float:
    """One step of ``train.py``'s loop (decoder only, cached features): forward, loss, backward, clip, Adam."""
    loss, _, _ = tutorial_loss(decoder, encoder_out, caps, caplens, alpha_c)
    optimizer.zero_grad()
    loss.backward()
    clip_gradient(optimizer, grad_clip)
    optimizer.step()
    return loss.item()


@torch.no_grad()
def caption_image_beam_search(decoder: DecoderWithAttention, encoder_out: Tensor, start_id: int, end_id: int,
                              beam_size: int = 3, max_steps: int = 50,
                              trace: list | None = None) -> tuple[list[int], list, float]:
    """``caption.py``'s beam search for ONE image. encoder_out (1, H, W, D) or (1, P, D)
    -> (sequence starting with ``<start>``, its alphas, its score).

    ``trace`` (a list, tests only) receives one ``(ranked, completed)`` pair per step: the best
    ``s + 1`` scores of all continuations of the s open hypotheses, and the scores of the hypotheses
    completed before this step.
    """
    k = beam_size
    vocab_size = decoder.vocab_size
    device = encoder_out.device
    encoder_dim = encoder_out.size(-1)
    encoder_out = encoder_out.reshape(1, -1, encoder_dim)  # (1, P, D)
    num_pixels = encoder_out.size(1)
    encoder_out = encoder_out.expand(k, num_pixels, encoder_dim)  # (k, P, D)

    k_prev_words = torch.LongTensor([[start_id]] * k).to(device)  # (k, 1)
    seqs = k_prev_words  # (k, 1)
    top_k_scores = torch.zeros(k, 1, device=device)  # (k, 1)
    seqs_alpha = torch.ones(k, 1, num_pixels, device=device)  # (k, 1, P)
    complete_seqs, complete_seqs_alpha, complete_seqs_scores = [], [], []

    step = 1
    h, c = decoder.init_hidden_state(encoder_out)
    while True:
        embeddings = decoder.embedding(k_prev_words).squeeze(1)  # (s, E)
        awe, alpha = decoder.attention(encoder_out, h)  # (s, D), (s, P)
        gate = decoder.sigmoid(decoder.f_beta(h))  # (s, D)
        awe = gate * awe
        h, c = decoder.decode_step(torch.cat([embeddings, awe], dim=1), (h, c))  # (s, S)
        scores = decoder.fc(h)  # (s, V)
        scores = F.log_softmax(scores, dim=1)
        scores = top_k_scores.expand_as(scores) + scores  # (s, V)
        if trace is not None:
            _record(trace, scores, step, complete_seqs_scores)
        if step == 1:
            top_k_scores, top_k_words = scores[0].topk(k, 0, True, True)  # (s)
        else:
            top_k_scores, top_k_words = scores.view(-1).topk(k, 0, True, True)  # (s)
        prev_word_inds = top_k_words // vocab_size  # (s)
        next_word_inds = top_k_words % vocab_size  # (s)

        seqs = torch.cat([seqs[prev_word_inds], next_word_inds.unsqueeze(1)], dim=1)  # (s, step + 1)
        seqs_alpha = torch.cat([seqs_alpha[prev_word_inds], alpha[prev_word_inds].unsqueeze(1)], dim=1)
        incomplete_inds = [ind for ind, next_word in enumerate(next_word_inds) if next_word != end_id]
        complete_inds = list(set(range(len(next_word_inds))) - set(incomplete_inds))
        if len(complete_inds) > 0:
            complete_seqs.extend(seqs[complete_inds].tolist())
            complete_seqs_alpha.extend(seqs_alpha[complete_inds].tolist())
            complete_seqs_scores.extend(top_k_scores[complete_inds])
        k -= len(complete_inds)
        if k == 0:
            break
        seqs = seqs[incomplete_inds]
        seqs_alpha = seqs_alpha[incomplete_inds]
        h = h[prev_word_inds[incomplete_inds]]
        c = c[prev_word_inds[incomplete_inds]]
        encoder_out = encoder_out[prev_word_inds[incomplete_inds]]
        top_k_scores = top_k_scores[incomplete_inds].unsqueeze(1)
        k_prev_words = next_word_inds[incomplete_inds].unsqueeze(1)
        if step >= max_steps:
            break
        step += 1

    if not complete_seqs_scores:  # nothing ended within max_steps: the best open hypothesis
        return seqs[0].tolist(), seqs_alpha[0].tolist(), float(top_k_scores[0])
    i = complete_seqs_scores.index(max(complete_seqs_scores))
    return complete_seqs[i], complete_seqs_alpha[i], float(complete_seqs_scores[i])


def _record(trace: list, scores: Tensor, step: int, completed: list) -> None:
    rows = scores[:1] if step == 1 else scores  # (s, V) cumulative scores of every continuation
    s = scores.shape[0]  # open hypotheses
    ranked = rows.flatten().topk(min(s + 1, rows.numel())).values.tolist()
    trace.append((ranked, [float(x) for x in completed]))


# ----------------------------------------------------------------------------------------------
# The same weights in mmapp's decoder.

PARAMETER_MAP = {
    "embedding.weight": "embedding.weight",
    "attention.encoder_att.weight": "attention.feature_proj.weight",
    "attention.encoder_att.bias": "attention.feature_proj.bias",
    "attention.decoder_att.weight": "attention.query_proj.weight",
    "attention.decoder_att.bias": "attention.query_proj.bias",
    "attention.full_att.weight": "attention.score.weight",
    "attention.full_att.bias": "attention.score.bias",
    "init_h.weight": "init_h.weight",
    "init_h.bias": "init_h.bias",
    "init_c.weight": "init_c.weight",
    "init_c.bias": "init_c.bias",
    "f_beta.weight": "gate.weight",
    "f_beta.bias": "gate.bias",
    "decode_step.weight_ih": "cells.0.weight_ih",
    "decode_step.weight_hh": "cells.0.weight_hh",
    "decode_step.bias_ih": "cells.0.bias_ih",
    "decode_step.bias_hh": "cells.0.bias_hh",
    "fc.weight": "output.weight",
    "fc.bias": "output.bias",
}


def mmapp_config_for(ref: DecoderWithAttention, dropout: float = 0.5) -> CaptionDecoderConfig:
    """The ``CaptionDecoderConfig`` with the tutorial decoder's dimensions (one LSTM layer, no projection)."""
    return CaptionDecoderConfig(vocab_size=ref.vocab_size, encoder_dim=ref.encoder_dim, embed_dim=ref.embed_dim,
                                attention_dim=ref.attention_dim, hidden_dim=ref.decoder_dim, dropout=dropout,
                                cell="lstm", num_layers=1, project_dim=0)


def to_mmapp(ref: DecoderWithAttention, dropout: float | None = None) -> RecurrentAttentionDecoder:
    """mmapp's ``RecurrentAttentionDecoder`` holding the tutorial decoder's weights (copied, see
    ``PARAMETER_MAP``). The LSTM input is [word embedding; gated context] in both."""
    ours = RecurrentAttentionDecoder(mmapp_config_for(ref, ref.dropout.p if dropout is None else dropout))
    source = ref.state_dict()
    mapped = {PARAMETER_MAP[name]: tensor.clone() for name, tensor in source.items()}
    ours.load_state_dict(mapped, strict=True)
    return ours.to(next(ref.parameters()).device)
