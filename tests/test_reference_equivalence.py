"""mmapp's decoder and beam search against the Show-Attend-Tell tutorial's, on the same weights.

``benchmarks/reference.py`` reimplements the tutorial's decoder (the benchmark's baseline). Its
weights are copied into mmapp's ``RecurrentAttentionDecoder`` (``benchmarks.reference.PARAMETER_MAP``)
and both must compute the same model: the same logits, attention, loss and gradients in training
(dropout off), and the same best caption with the same score from beam search.

The tutorial's attention uses ReLU where mmapp's (like the paper) uses tanh, so the reference is built
here with ``attention_activation="tanh"``; everything else is the tutorial's code path.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

import pytest
import torch

ROOT = str(Path(__file__).resolve().parents[1])
if ROOT not in sys.path:  # `benchmarks` is not installed with mmapp; plain `pytest` does not add the root
    sys.path.insert(0, ROOT)

from benchmarks.reference import (PARAMETER_MAP, DecoderWithAttention,  # noqa: E402
                                  caption_image_beam_search, to_mmapp, tutorial_loss)
from mmapp.losses import caption_loss  # noqa: E402
from mmapp.models.decoding import beam_search  # noqa: E402
from mmapp.speed.teacher_forcing import all_steps_forward, shrinking_forward  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")

PAD, START, END = 0, 1, 2
V, D, E, S, A = 23, 12, 8, 16, 10  # vocab, encoder dim, embedding, LSTM, attention


def reference_decoder(seed: int, dropout: float = 0.0) -> DecoderWithAttention:
    torch.manual_seed(seed)
    return DecoderWithAttention(attention_dim=A, embed_dim=E, decoder_dim=S, vocab_size=V, encoder_dim=D,
                                dropout=dropout, attention_activation="tanh")


def caption_batch(seed: int, batch: int, max_words: int = 9) -> tuple[torch.Tensor, torch.Tensor]:
    """(caps (B, L) = <start> words <end> <pad>.., caplens (B, 1) counting <start> and <end>), unsorted."""
    g = torch.Generator().manual_seed(seed)
    words = torch.randint(1, max_words + 1, (batch,), generator=g)
    L = int(words.max()) + 2
    caps = torch.full((batch, L), PAD, dtype=torch.long)
    for b, n in enumerate(words.tolist()):
        caps[b, 0] = START
        caps[b, 1 : n + 1] = torch.randint(3, V, (n,), generator=g)
        caps[b, n + 1] = END
    return caps, (words + 2).unsqueeze(1)


def test_parameter_map_covers_both_models() -> None:
    ref = reference_decoder(0)
    ours = to_mmapp(ref)
    assert set(PARAMETER_MAP) == set(ref.state_dict())
    assert set(PARAMETER_MAP.values()) == set(ours.state_dict())
    # our first LSTM layer reads [embedding; context] like the tutorial's torch.cat([embeddings, awe])
    assert ours.cells[0].weight_ih.shape == ref.decode_step.weight_ih.shape == (4 * S, E + D)
    for name, tensor in ref.state_dict().items():
        assert torch.equal(ours.state_dict()[PARAMETER_MAP[name]], tensor)


@pytest.mark.parametrize("grid", [4, 9])
def test_training_logits_loss_and_gradients_match_the_tutorial(grid: int) -> None:
    ref = reference_decoder(1)
    ours = to_mmapp(ref).train()  # dropout 0: train mode changes nothing
    ref.train()
    B = 7
    encoder_out = torch.randn(B, grid, D, generator=torch.Generator().manual_seed(grid))
    caps, caplens = caption_batch(grid, B)

    ref_loss, _, _ = tutorial_loss(ref, encoder_out, caps, caplens, alpha_c=0.7)
    predictions, _, decode_lengths, ref_alphas, sort_ind = ref(encoder_out, caps, caplens)
    logits, alphas = ours(encoder_out, caps[:, :-1])  # (B, L-1, V), (B, L-1, P)
    for j, b in enumerate(sort_ind.tolist()):
        n = decode_lengths[j]
        assert torch.allclose(logits[b, :n], predictions[j, :n], atol=1e-5), f"caption {b}"
        assert torch.allclose(alphas[b, :n], ref_alphas[j, :n], atol=1e-6), f"caption {b}"

    # cross-entropy over the decoded words + 0.7 * the attention penalty (a mean over images and cells)
    our_loss, _ = caption_loss(logits, alphas, caps[:, 1:], PAD, attention_weight=0.7)
    assert float(our_loss.detach()) == pytest.approx(float(ref_loss.detach()), rel=1e-5)

    ref.zero_grad()
    ref_loss.backward()
    our_loss.backward()
    ours_params = dict(ours.named_parameters())
    for name, p in ref.named_parameters():
        mine = ours_params[PARAMETER_MAP[name]].grad
        assert mine is not None and p.grad is not None
        assert torch.allclose(mine, p.grad, atol=1e-5, rtol=1e-4), f"gradient of {name}"


def shared_decoder_for_beam_search(seed: int) -> DecoderWithAttention:
    """A tutorial decoder whose captions end at many lengths (a random one ends at once or never):
    LSTM unit 0 follows the previous word and unit 1 counts the steps, and the ``<end>`` logit reads
    both. ``<start>`` and ``<pad>``, which mmapp never emits and the tutorial might, are made impossible."""
    ref = reference_decoder(seed).eval()
    g = torch.Generator().manual_seed(seed)
    cell = ref.decode_step
    with torch.no_grad():
        ref.fc.weight.mul_(10.0)  # peakier than the init's near-uniform distributions
        ref.fc.bias.uniform_(-1.0, 1.0, generator=g)
        # gate rows i, f, g, o of each unit: constant gates; unit 0's g reads embedding dim 0
        for unit, biases in ((0, (8.0, -8.0, 0.0, 8.0)), (1, (8.0, 8.0, math.atanh(0.08), 8.0))):
            for gate, bias in enumerate(biases):
                row = gate * S + unit
                cell.weight_ih[row] = 0.0
                cell.weight_hh[row] = 0.0
                cell.bias_ih[row], cell.bias_hh[row] = bias, 0.0
        cell.weight_ih[2 * S, 0] = 4.0
        ref.embedding.weight[:, 0].uniform_(-1.0, 1.0, generator=g)
        ref.fc.weight[:, 1] = 0.0
        ref.fc.weight[END] = 0.0
        ref.fc.weight[END, 0], ref.fc.weight[END, 1], ref.fc.bias[END] = 3.0, 10.0, -6.0
        ref.fc.bias[START] = ref.fc.bias[PAD] = -1e4
    return ref


def test_beam_search_matches_the_tutorials_per_image_beam_search() -> None:
    """The tutorial sets ended hypotheses aside and shrinks the beam; ours keeps them in the beam,
    competing. The two pick the same caption whenever no ended hypothesis is pushed out of our beam
    by k better open ones, which the tutorial's ``trace`` tells; such cases are counted, not compared."""
    images, max_len = 6, 40
    compared, pushed_out, differs_from_first, lengths = 0, 0, 0, set()
    for seed in (3, 4):
        ref = shared_decoder_for_beam_search(seed)
        ours = to_mmapp(ref).eval()
        features = torch.randn(images, 5, D, generator=torch.Generator().manual_seed(seed))
        for k in (1, 3, 5):
            batched = beam_search(ours, features, k, max_len, START, END, PAD)
            for b in range(images):
                trace: list = []
                seq, ref_alphas, score = caption_image_beam_search(ref, features[b : b + 1], START, END, k,
                                                                   max_steps=max_len + 1, trace=trace)
                assert seq[0] == START and seq[-1] == END, "the tutorial's caption did not end"
                if any(done and ranked[-1] > min(done) for ranked, done in trace):
                    pushed_out += 1
                    continue
                n = int(batched.lengths[b])
                assert batched.tokens[b, :n].tolist() == seq[1:], f"seed {seed}, beam {k}, image {b}"
                assert float(batched.scores[b]) == pytest.approx(score, abs=1e-4)
                assert torch.allclose(batched.attention[b, :n], torch.tensor(ref_alphas[1:]), atol=1e-5)
                compared += 1
                lengths.add(n)
                differs_from_first += k > 1 and batched.tokens[b, :n].tolist() != trimmed_greedy(ours, features, b)
    # most cases are comparable; they cover beams that beat greedy and captions of several lengths
    assert compared >= 0.75 * (compared + pushed_out), (compared, pushed_out)
    assert differs_from_first > 0 and len(lengths) >= 3


def trimmed_greedy(decoder, features: torch.Tensor, b: int) -> list[int]:
    decoded = beam_search(decoder, features[b : b + 1], 1, 40, START, END, PAD)
    return decoded.tokens[0, : int(decoded.lengths[0])].tolist()


@pytest.mark.parametrize("cell, layers, project, grouped", [("lstm", 1, 0, False), ("lstm", 2, 6, True),
                                                            ("gru", 1, 0, True), ("peephole", 2, 0, False)])
def test_shrinking_batch_equals_every_row_through_every_step(cell: str, layers: int, project: int,
                                                             grouped: bool) -> None:
    """Training on a padded batch shrinks it as captions end (like the tutorial); every decoded position,
    the loss and the gradients equal those of running every row through every step."""
    from mmapp.config import CaptionDecoderConfig
    from mmapp.models.caption_decoder import build_caption_decoder

    torch.manual_seed(5)
    decoder = build_caption_decoder(CaptionDecoderConfig(vocab_size=V, encoder_dim=D, embed_dim=E, attention_dim=A,
                                                         hidden_dim=S, dropout=0.0, cell=cell, num_layers=layers,
                                                         project_dim=project)).train()
    caps, _ = caption_batch(seed=11, batch=11)
    inputs, targets = caps[:, :-1], caps[:, 1:]
    image_index = torch.tensor([0, 0, 1, 2, 2, 2, 3, 1, 0, 3, 3]) if grouped else None
    features = torch.randn(4 if grouped else 11, 6, D)

    logits, alphas = shrinking_forward(decoder, features, inputs, image_index)
    full_logits, full_alphas = all_steps_forward(decoder, features, inputs, image_index)
    decoded = inputs.ne(PAD) & inputs.ne(END)  # steps that read <start> or a word
    assert decoded.sum() < decoded.numel()  # the batch did shrink
    assert torch.allclose(logits[decoded], full_logits[decoded], atol=1e-5)
    assert torch.allclose(alphas[decoded], full_alphas[decoded], atol=1e-6)
    assert (logits[~decoded] == 0).all() and (alphas[~decoded] == 0).all()

    grads = []
    for out_logits, out_alphas in ((logits, alphas), (full_logits, full_alphas)):
        decoder.zero_grad()
        loss, _ = caption_loss(out_logits, out_alphas, targets, PAD, attention_weight=0.5)
        loss.backward()
        grads.append((float(loss.detach()), {n: p.grad.clone() for n, p in decoder.named_parameters()}))
    assert grads[0][0] == pytest.approx(grads[1][0], rel=1e-6)
    for name, grad in grads[0][1].items():
        assert torch.allclose(grad, grads[1][1][name], atol=1e-6, rtol=1e-5), name
