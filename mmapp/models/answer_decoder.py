"""The generative VQA head (``vqa.head: generate``): an attention-LSTM writes the answer word by word.

The answer decoder is the captioner's Show-Attend-Tell decoder (``RecurrentAttentionDecoder``: the
same embedding, additive attention, gated context, LSTM cell, output layer and ``step``); only its
first state differs: (h, c) come from the VQA model's fused image + question vector (glimpses x
question) instead of the mean grid cell. At every answer word it attends over the VQA model's
normalised grid, and its attention maps come back as the captioner's do. ``decoding``'s greedy and
beam search drive it unchanged through ``FusedInput``, which puts each question's fused vector into
the decoder's memory (beam search repeats it per beam, as every memory tensor).

``build_vqa_net`` picks the VQA model a config asks for.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from mmapp.config import CaptionDecoderConfig, VQAConfig
from mmapp.models.decoder_base import CaptionDecoder, State
from mmapp.models.decoding import Decoded, beam_search_n_best, greedy_search
from mmapp.models.recurrent_decoder import RecurrentAttentionDecoder
from mmapp.models.vqa import VQANet
from mmapp.vocab import Vocab


def answer_decoder_config(cfg: VQAConfig) -> CaptionDecoderConfig:
    """The answer decoder's config, derived from the VQA config (so checkpoints store one config)."""
    feature_dim = cfg.encoder_dim + (2 if cfg.coords else 0)
    return CaptionDecoderConfig(vocab_size=cfg.answer_vocab_size, encoder_dim=feature_dim,
                                project_dim=cfg.answer_project_dim, embed_dim=cfg.answer_embed_dim,
                                attention_dim=cfg.attention_dim,
                                hidden_dim=cfg.answer_hidden_dim, dropout=cfg.dropout, cell="lstm")


class AnswerDecoder(RecurrentAttentionDecoder):
    """Show-Attend-Tell over the grid, started from a fused (B, F) vector held in ``memory["fused"]``."""

    def __init__(self, cfg: CaptionDecoderConfig, fused_dim: int) -> None:
        super().__init__(cfg)
        L, S = cfg.num_layers, cfg.hidden_dim
        self.init_h = nn.Linear(fused_dim, L * S)
        self.init_c = nn.Linear(fused_dim, L * S)

    def init_state(self, memory: State) -> State:
        fused = memory["fused"]  # (B, F)
        B, L, S = fused.shape[0], self.cfg.num_layers, self.cfg.hidden_dim
        return {"h": self.init_h(fused).view(B, L, S), "c": self.init_c(fused).view(B, L, S)}  # (B, L, S)

    def forward(self, features: Tensor, inputs: Tensor, image_index: Tensor | None = None,
                fused: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Teacher forcing: features (B, P, D) (or (I, P, D) with ``image_index`` (B,)), inputs (B, T)
        = ``<start> w1 ..``, fused (B, F) -> logits (B, T, V), attention (B, T, P)."""
        if fused is None:
            raise ValueError("the answer decoder starts from the fused image + question: pass fused=")
        return self.teacher_force({**self.prepare_for(features, image_index), "fused": fused}, inputs)


class FusedInput(CaptionDecoder):
    """An ``AnswerDecoder`` bound to B questions' fused vectors (B, F), for ``decoding``'s searches:
    ``prepare(features)`` adds them to the memory; ``init_state`` and ``step`` are the decoder's."""

    def __init__(self, decoder: AnswerDecoder, fused: Tensor) -> None:
        super().__init__()  # a wrapper: builds nothing
        self.decoder, self.fused = decoder, fused
        self.weighted_memory = decoder.weighted_memory

    def prepare(self, features: Tensor) -> State:
        return {**self.decoder.prepare(features), "fused": self.fused}  # (B, P, D), (B, P, A), (B, F)

    def init_state(self, memory: State) -> State:
        return self.decoder.init_state(memory)

    def step(self, tokens: Tensor, state: State, memory: State) -> tuple[Tensor, Tensor, State]:
        """The decoder's step, except that an answer has at least one word: no ``<end>`` right after
        ``<start>`` (an empty answer is never right; training never teaches one)."""
        logits, alpha, state = self.decoder.step(tokens, state, memory)
        first = (tokens == Vocab.start_id).unsqueeze(-1)  # (B, 1)
        end = torch.arange(logits.shape[-1], device=logits.device) == Vocab.end_id  # (V,)
        return logits.masked_fill(first & end, float("-inf")), alpha, state


class GenerativeVQANet(VQANet):
    """The VQA model's question encoder, glimpses and fusion (``VQANet.encode``) feeding an
    ``AnswerDecoder`` instead of the classifier."""

    def __init__(self, cfg: VQAConfig) -> None:
        super().__init__(cfg)
        if cfg.answer_vocab_size < 5:
            raise ValueError("vqa.head generate needs vqa.answer_vocab_size (>= 5)")
        self.answer_decoder = AnswerDecoder(answer_decoder_config(cfg), self.fused_dim)

    def forward(self, features: Tensor, questions: Tensor, lengths: Tensor, answers: Tensor,
                answer_question: Tensor, image_index: Tensor | None = None
                ) -> tuple[Tensor, Tensor, Tensor, Tensor | None]:
        """Teacher forcing over R answers: features (B, P, D) (or (I, P, D) with ``image_index`` (B,)),
        questions (B, L), lengths (B,), answers (R, T) = ``<start> w1 ..``, answer_question (R,) the
        question of each answer -> logits (R, T, V), answer attention (R, T, P), glimpse attention
        (B, G, P), count-map logits (B, P) or None."""
        grid, fused, attention, count_map = self.encode(features, questions, lengths, image_index)
        rows = answer_question if image_index is None else image_index.index_select(0, answer_question)  # (R,)
        logits, alpha = self.answer_decoder(grid, answers, rows, fused.index_select(0, answer_question))
        return logits, alpha, attention, count_map

    def conditioned(self, features: Tensor, questions: Tensor, lengths: Tensor
                    ) -> tuple[FusedInput, Tensor, Tensor]:
        """features (B, P, D), one row per question -> (the answer decoder bound to these questions, for
        ``decoding.greedy_search`` / ``beam_search``; the grid (B, P, D') to decode over; glimpse
        attention (B, G, P))."""
        grid, fused, attention, _ = self.encode(features, questions, lengths)
        return FusedInput(self.answer_decoder, fused), grid, attention


def write_answers(net: GenerativeVQANet, features: Tensor, questions: Tensor, lengths: Tensor,
                  beam_size: int = 1, n_best: int = 1) -> tuple[list[Decoded], Tensor]:
    """features (B, P, D), one row per question -> (the ``n_best`` answers, best first, each a
    ``Decoded`` of B rows with one attention map (P,) per word; glimpse attention (B, G, P)).
    Beam size 1 is greedy search; at most ``vqa.max_answer_len`` words + ``<end>``."""
    decoder, grid, attention = net.conditioned(features, questions, lengths)
    ids = (net.cfg.max_answer_len, Vocab.start_id, Vocab.end_id, Vocab.pad_id)
    if beam_size == 1 and n_best == 1:
        return [greedy_search(decoder, grid, *ids)], attention
    return beam_search_n_best(decoder, grid, beam_size, *ids, n_best=n_best), attention


def build_vqa_net(cfg: VQAConfig) -> VQANet:
    """``vqa.head``: classify -> ``VQANet``, generate -> ``GenerativeVQANet``."""
    return GenerativeVQANet(cfg) if cfg.head == "generate" else VQANet(cfg)
