"""Greedy and batched beam search against each other, against hand-built decoders whose answers are
known, and against a straightforward per-image reference beam search on the same weights."""

from __future__ import annotations

import math

import pytest
import torch
from torch import Tensor

from mmapp.config import CaptionDecoderConfig
from mmapp.models.caption_decoder import build_caption_decoder
from mmapp.models.decoder_base import CaptionDecoder, State
from mmapp.models.decoding import Decoded, beam_search, greedy_search

pytestmark = pytest.mark.usefixtures("one_thread")

PAD, START, END = 0, 1, 2
P, D, V = 5, 8, 12


def random_decoder(seed: int, end_bias: float = 0.0, dropout: float = 0.5) -> CaptionDecoder:
    """A random decoder in eval mode; ``end_bias`` makes ``<end>`` likelier so captions end early."""
    torch.manual_seed(seed)
    cfg = CaptionDecoderConfig(vocab_size=V, encoder_dim=D, embed_dim=8, attention_dim=8, hidden_dim=16,
                               dropout=dropout)
    decoder = build_caption_decoder(cfg).eval()
    with torch.no_grad():
        decoder.output.weight.mul_(8.0)  # peakier word distributions than the init's near-uniform ones
        decoder.output.bias[END] += end_bias
    return decoder


def features_for(seed: int, batch: int) -> Tensor:
    return torch.randn(batch, P, D, generator=torch.Generator().manual_seed(seed))


def trimmed(decoded: Decoded, b: int) -> list[int]:
    return decoded.tokens[b, : int(decoded.lengths[b])].tolist()


class TableDecoder(CaptionDecoder):
    """The next word depends only on the previous one: ``probs[prev]`` is its distribution."""

    def __init__(self, probs: dict[int, dict[int, float]], vocab_size: int = 8) -> None:
        super().__init__()
        table = torch.full((vocab_size, vocab_size), 1e-9)
        for prev, row in probs.items():
            for word, p in row.items():
                table[prev, word] = p
        self.register_buffer("logits", table.log())

    def prepare(self, features: Tensor) -> State:
        return {"features": features}

    def init_state(self, memory: State) -> State:
        return {"unused": torch.zeros(memory["features"].shape[0], 1)}

    def step(self, tokens: Tensor, state: State, memory: State) -> tuple[Tensor, Tensor, State]:
        B, P_ = memory["features"].shape[:2]
        return self.logits[tokens], torch.full((B, P_), 1.0 / P_), state


class EndAfterWords(CaptionDecoder):
    """A random decoder whose ``<end>`` logit also depends on the previous word, so that captions end
    at many different lengths (a random decoder alone ends almost always at once or never)."""

    def __init__(self, seed: int) -> None:
        super().__init__()
        self.inner = random_decoder(seed)
        with torch.no_grad():
            self.inner.output.weight.div_(8.0)
        bias = torch.empty(V).uniform_(-5.0, 3.0, generator=torch.Generator().manual_seed(seed))
        bias[START] = -6.0
        self.register_buffer("end_bias", bias)

    def prepare(self, features: Tensor) -> State:
        return self.inner.prepare(features)

    def init_state(self, memory: State) -> State:
        return self.inner.init_state(memory)

    def step(self, tokens: Tensor, state: State, memory: State) -> tuple[Tensor, Tensor, State]:
        logits, alpha, state = self.inner.step(tokens, state, memory)
        logits = logits.clone()
        logits[:, END] += self.end_bias[tokens]
        return logits, alpha, state


A, B_, C = 4, 5, 6  # words of the hand-built decoders


def test_beam_finds_the_caption_greedy_misses() -> None:
    # greedy: a (0.6) c (0.34) <end> = 0.204;  best: b (0.4) <end> (1.0) = 0.4
    decoder = TableDecoder({START: {A: 0.6, B_: 0.4}, A: {C: 0.34, B_: 0.33, END: 0.33},
                            B_: {END: 1.0}, C: {END: 1.0}})
    features = torch.zeros(1, 3, 2)
    greedy = greedy_search(decoder, features, max_len=5, start_id=START, end_id=END)
    beam = beam_search(decoder, features, beam_size=2, max_len=5, start_id=START, end_id=END)
    assert trimmed(greedy, 0) == [A, C, END]
    assert float(greedy.scores[0]) == pytest.approx(math.log(0.6 * 0.34), abs=1e-5)
    assert trimmed(beam, 0) == [B_, END]
    assert float(beam.scores[0]) == pytest.approx(math.log(0.4), abs=1e-5)
    assert beam.lengths.tolist() == [2]


def test_a_finished_beam_that_wins_late_keeps_its_own_length() -> None:
    # b <end> (0.4) finishes at step 1 behind the open a c d a ... chain (0.9 per word), which only falls
    # below 0.4 at step 4: the winner then moves to the first beam slot with its 2 tokens, not 5.
    D_ = 7
    decoder = TableDecoder({START: {A: 0.6, B_: 0.4}, B_: {END: 1.0}, A: {C: 0.9, END: 0.1},
                            C: {D_: 0.9, END: 0.1}, D_: {A: 0.9, END: 0.1}})
    decoded = beam_search(decoder, torch.zeros(1, 3, 2), beam_size=2, max_len=8, start_id=START, end_id=END)
    assert decoded.lengths.tolist() == [2]
    assert decoded.tokens[0].tolist()[:3] == [B_, END, PAD]
    assert float(decoded.scores[0]) == pytest.approx(math.log(0.4), abs=1e-5)
    assert (decoded.attention[0, 2:] == 0).all()


def test_length_penalty_prefers_the_longer_caption() -> None:
    # c <end> = 0.4 (2 tokens);  c a <end> = 0.3 (3 tokens);  c a b <end> = 0.3 (4 tokens)
    decoder = TableDecoder({START: {C: 1.0}, C: {END: 0.4, A: 0.6}, A: {B_: 0.5, END: 0.5}, B_: {END: 1.0}})
    features = torch.zeros(1, 3, 2)
    raw = beam_search(decoder, features, beam_size=3, max_len=6, start_id=START, end_id=END)
    assert trimmed(raw, 0) == [C, END]
    assert float(raw.scores[0]) == pytest.approx(math.log(0.4), abs=1e-5)
    for alpha in (0.5, 1.0):
        normed = beam_search(decoder, features, beam_size=3, max_len=6, start_id=START, end_id=END,
                             length_penalty=alpha)
        assert trimmed(normed, 0) == [C, A, B_, END]
        assert float(normed.scores[0]) == pytest.approx(math.log(0.3) / 4 ** alpha, abs=1e-5)


def test_beam_size_one_equals_greedy() -> None:
    for seed in range(3):
        decoder = random_decoder(seed, end_bias=1.0 * seed)  # dropout 0.5, but eval mode
        features = features_for(seed, 4)
        greedy = greedy_search(decoder, features, max_len=12, start_id=START, end_id=END)
        beam = beam_search(decoder, features, beam_size=1, max_len=12, start_id=START, end_id=END)
        assert torch.equal(greedy.tokens, beam.tokens)
        assert torch.equal(greedy.lengths, beam.lengths)
        assert torch.allclose(greedy.scores, beam.scores, atol=1e-5)
        assert torch.allclose(greedy.attention, beam.attention, atol=1e-6)


def test_decoding_output_layout() -> None:
    decoder = random_decoder(3, end_bias=2.0)
    features = features_for(3, 4)
    for decoded in (greedy_search(decoder, features, 10, START, END),
                    beam_search(decoder, features, 3, 10, START, END)):
        Bn, T = decoded.tokens.shape
        assert (Bn, decoded.attention.shape) == (4, (4, T, P))
        for b in range(4):
            n = int(decoded.lengths[b])
            assert decoded.tokens[b, n - 1] == END and END not in decoded.tokens[b, : n - 1].tolist()
            assert (decoded.tokens[b, n:] == PAD).all()
            assert START not in decoded.tokens[b].tolist() and PAD not in decoded.tokens[b, :n].tolist()
            assert torch.allclose(decoded.attention[b, :n].sum(-1), torch.ones(n), atol=1e-5)
            assert (decoded.attention[b, n:] == 0).all()


def test_batched_beam_search_equals_one_image_at_a_time() -> None:
    decoder = EndAfterWords(4)
    features = features_for(4, 5)
    for k in (2, 4):
        batched = beam_search(decoder, features, k, 12, START, END)
        for b in range(5):
            alone = beam_search(decoder, features[b : b + 1], k, 12, START, END)
            n = int(alone.lengths[0])
            assert trimmed(batched, b) == trimmed(alone, 0)
            assert float(batched.scores[b]) == pytest.approx(float(alone.scores[0]), abs=1e-5)
            assert torch.allclose(batched.attention[b, :n], alone.attention[0, :n], atol=1e-5)


def test_beams_read_their_image_memory_without_a_copy_per_beam() -> None:
    """The memory a step reads only with attention weights stays one row per image (``ImageRows``)
    in the search; the result is what a copy of it per beam gives."""
    from mmapp.models.image_rows import ImageRows

    decoder = random_decoder(5, end_bias=1.0)
    features = features_for(5, 4)
    memory, state = decoder.rows_of_images(decoder.prepare(features), torch.arange(4).repeat_interleave(3))
    assert isinstance(memory["features"], ImageRows) and memory["features"].values.shape[0] == 4
    assert memory["keys"].shape[0] == 12 and state["h"].shape[0] == 12  # read row by row: copied
    shared = beam_search(decoder, features, 3, 10, START, END)
    decoder.weighted_memory = ()  # every entry copied to each beam, as before ImageRows
    copied = beam_search(decoder, features, 3, 10, START, END)
    assert torch.equal(shared.tokens, copied.tokens)
    assert torch.allclose(shared.scores, copied.scores, atol=1e-5)
    assert torch.allclose(shared.attention, copied.attention, atol=1e-6)


def test_stopping_once_the_kept_beams_ended_changes_no_result(monkeypatch: pytest.MonkeyPatch) -> None:
    # The early stop (every image's n best beams have ended) against running until every beam has ended.
    import mmapp.models.decoding as decoding

    steps = {"early": 0, "full": 0}
    for seed in range(4):
        decoder = EndAfterWords(seed)
        features = features_for(seed, 6)
        for k, n_best in ((2, 1), (3, 1), (5, 1), (3, 2), (5, 3)):
            found = {}
            for rule in ("early", "full"):
                if rule == "full":
                    monkeypatch.setattr(decoding, "_settled", lambda finished, *_: bool(finished.all()))
                found[rule] = decoding.beam_search_n_best(decoder, features, k, 12, START, END, n_best=n_best)
                steps[rule] += found[rule][0].tokens.shape[1]
                monkeypatch.undo()
            for early, full in zip(found["early"], found["full"]):
                for b in range(6):
                    n = int(early.lengths[b])
                    assert trimmed(early, b) == trimmed(full, b)
                    assert float(early.scores[b]) == float(full.scores[b])
                    assert torch.equal(early.attention[b, :n], full.attention[b, :n])
    assert steps["early"] < steps["full"]  # it does stop earlier


@pytest.mark.parametrize("max_len", [1, 4, 9])
def test_a_caption_always_ends_and_respects_max_len(max_len: int) -> None:
    decoder = random_decoder(5)
    with torch.no_grad():
        decoder.output.bias[END] = -1e4  # the model never chooses <end> on its own
    features = features_for(5, 3)
    for decoded in (greedy_search(decoder, features, max_len, START, END),
                    beam_search(decoder, features, 1, max_len, START, END),
                    beam_search(decoder, features, 4, max_len, START, END)):
        assert decoded.lengths.tolist() == [max_len + 1] * 3
        assert decoded.tokens.shape == (3, max_len + 1)
        assert (decoded.tokens[:, max_len] == END).all()
        assert (decoded.tokens[:, :max_len] != END).all()
        assert torch.isfinite(decoded.scores).all()


def test_beam_size_must_be_positive() -> None:
    with pytest.raises(ValueError, match="beam_size"):
        beam_search(random_decoder(0), features_for(0, 1), 0, 5, START, END)


# ------------------------------------------------------------------------------------------------
# A straightforward reference: one image at a time, Python lists of hypotheses, one decoder step per
# hypothesis. Finished hypotheses stay in the beam (carried over unchanged) and compete with the open
# ones on total log-probability; the last step may only emit <end>.


def reference_beam_search(decoder: CaptionDecoder, features: Tensor, beam_size: int,
                          max_len: int) -> tuple[list[int], float, Tensor]:
    """features (1, P, D) -> (best tokens ending with <end>, total log-probability, attention (T, P))."""
    memory = decoder.prepare(features)
    # hypothesis: (tokens, score, attention maps, recurrent state after the last token, finished)
    beam = [([], 0.0, [], decoder.init_state(memory), False)]
    for t in range(max_len + 1):
        candidates = []
        for tokens, score, alphas, state, finished in beam:
            if finished:
                candidates.append((tokens, score, alphas, state, True))
                continue
            previous = tokens[-1] if tokens else START
            logits, alpha, next_state = decoder.step(torch.tensor([previous]), state, memory)
            logp = logits[0].log_softmax(-1).tolist()
            for word in range(len(logp)):
                if word in (START, PAD) or (t == max_len and word != END):
                    continue
                candidates.append((tokens + [word], score + logp[word], alphas + [alpha[0]], next_state,
                                   word == END))
        candidates.sort(key=lambda c: c[1], reverse=True)
        beam = candidates[:beam_size]
        if all(finished for *_, finished in beam):
            break
    tokens, score, alphas, _, _ = max(beam, key=lambda h: h[1])
    return tokens, score, torch.stack(alphas)


def test_beam_search_matches_the_reference_implementation() -> None:
    max_len, images = 10, 4
    differs_from_greedy, lengths = 0, set()
    with torch.no_grad():
        for seed in (6, 7, 8):
            decoder = EndAfterWords(seed)
            features = features_for(seed, images)
            greedy = greedy_search(decoder, features, max_len, START, END)
            for k in (2, 3, 4, 5):
                batched = beam_search(decoder, features, k, max_len, START, END)
                for b in range(images):
                    tokens, score, alphas = reference_beam_search(decoder, features[b : b + 1], k, max_len)
                    assert trimmed(batched, b) == tokens, f"seed {seed}, beam {k}, image {b}"
                    assert int(batched.lengths[b]) == len(tokens) and batched.tokens[b, len(tokens) - 1] == END
                    assert float(batched.scores[b]) == pytest.approx(score, abs=1e-4)
                    assert torch.allclose(batched.attention[b, : len(tokens)], alphas, atol=1e-5)
                    differs_from_greedy += trimmed(greedy, b) != tokens
                    lengths.add(len(tokens))
    # the comparison covered beams that beat greedy, and captions of many lengths, cut by max_len or not
    assert differs_from_greedy > 0
    assert len(lengths) >= 3 and max_len + 1 in lengths and min(lengths) <= max_len
