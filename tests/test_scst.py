"""Self-critical sequence training: the CIDEr-D reward equals pycocoevalcap's scorer, sampling gives
the decoder's own word probabilities with a gradient, the hallucination penalty counts what CHAIR
counts, the leave-one-out baseline, a tiny decoder learning from rewards alone, and the switch from
cross-entropy to self-critical epochs in a run."""

from __future__ import annotations

import pytest
import torch

from mmapp.config import CaptionDecoderConfig
from mmapp.data.shapes.text import mentioned_objects
from mmapp.metrics.cider_reward import CiderD
from mmapp.models.recurrent_decoder import RecurrentAttentionDecoder
from mmapp.speed.teacher_forcing import all_steps_forward
from mmapp.models.decoding import sample
from mmapp.tasks.self_critical import CaptionReward, self_critical_loss
from mmapp.vocab import Vocab

REFS = {
    1: ["a red circle to the left of a blue square", "a blue square and a red circle", "two shapes"],
    2: ["a green star above a small yellow triangle", "a green star", "a star above a triangle"],
    3: ["three red circles", "some red circles", "red circles on a gradient"],
}


pytestmark = pytest.mark.usefixtures("one_thread")


def test_cider_d_equals_pycocoevalcap_with_the_same_document_frequencies():
    from pycocoevalcap.cider.cider import Cider

    candidates = {1: "a red circle left of a blue square", 2: "a green star above a yellow triangle",
                  3: "a blue square"}
    ours = CiderD({k: [r.split() for r in v] for k, v in REFS.items()})
    mean, per_image = Cider().compute_score(REFS, {k: [v] for k, v in candidates.items()})
    for k, expected in zip(sorted(REFS), per_image):
        assert ours.score(k, candidates[k].split()) == pytest.approx(float(expected), rel=1e-9, abs=1e-12)
    assert ours.score(3, "a blue square".split()) < ours.score(3, "three red circles".split())
    with pytest.raises(KeyError):
        ours.score(99, ["a"])


def _decoder(vocab_size: int, seed: int = 0) -> RecurrentAttentionDecoder:
    torch.manual_seed(seed)
    cfg = CaptionDecoderConfig(vocab_size=vocab_size, encoder_dim=8, embed_dim=8, attention_dim=8,
                               hidden_dim=16, dropout=0.0)
    return RecurrentAttentionDecoder(cfg)


def test_sampled_log_probabilities_are_the_decoders_own_and_carry_a_gradient():
    decoder = _decoder(12).eval()
    features = torch.randn(3, 5, 8)
    generator = torch.Generator().manual_seed(0)
    drawn = sample(decoder, features, 4, max_len=6, start_id=1, end_id=2, pad_id=0, generator=generator)
    R, T = drawn.tokens.shape
    assert R == 12 and T <= 7 and drawn.logp.shape == drawn.mask.shape == (R, T)
    lengths = drawn.mask.sum(dim=1)
    for row, n in enumerate(lengths.tolist()):  # every caption ends with <end>, then only <pad>
        assert drawn.tokens[row, n - 1] == 2 and drawn.tokens[row, n:].eq(0).all()
        assert not drawn.tokens[row, : n - 1].eq(2).any() and not torch.isin(drawn.tokens[row, :n], torch.tensor([0, 1])).any()
    # teacher forcing on the drawn words gives the same log-probabilities
    inputs = torch.cat([torch.ones(R, 1, dtype=torch.long), drawn.tokens[:, :-1]], dim=1)
    with torch.no_grad():
        logits, _ = all_steps_forward(decoder, features.repeat_interleave(4, dim=0), inputs, None)
    logits[..., [0, 1]] = float("-inf")
    expected = logits.log_softmax(-1).gather(2, drawn.tokens.unsqueeze(-1)).squeeze(-1)
    free = drawn.mask.clone()
    free[:, 6:] = False  # the step after max_len words is forced to <end>: log-probability 0
    assert free.sum() > 20 and torch.allclose(drawn.logp.detach()[free], expected[free], atol=1e-5)
    assert drawn.logp.detach()[~drawn.mask].eq(0).all() and drawn.logp.detach()[:, 6:].eq(0).all()
    drawn.logp.sum().backward()
    assert decoder.output.weight.grad is not None and decoder.output.weight.grad.abs().sum() > 0


def test_sampling_stops_at_max_len():
    decoder = _decoder(12, seed=1).eval()
    with torch.no_grad():  # a bias that makes <end> nearly impossible until it is forced
        decoder.output.bias[2] = -50.0
    drawn = sample(decoder, torch.randn(2, 5, 8), 3, max_len=2, start_id=1, end_id=2)
    assert drawn.tokens.shape == (6, 3) and drawn.tokens[:, 2].eq(2).all() and drawn.mask.all()


def test_hallucination_penalty_counts_each_missing_object_once():
    references = {7: [["a", "red", "circle"]]}
    present = {7: [("red", "circle"), ("blue", "square")]}
    reward = CaptionReward(references, present, mentioned_objects, hallucination_weight=0.5)
    good, bound_wrong = "a red circle and a blue square".split(), "a red square and a blue circle".split()
    assert reward.hallucinations(7, good) == 0
    assert reward.hallucinations(7, bound_wrong) == 2  # colour and shape both exist, not together
    assert reward.hallucinations(7, "two red squares".split()) == 1
    r, cider, wrong = reward(7, bound_wrong)
    assert wrong == 2 and r == pytest.approx(cider - 1.0)
    with pytest.raises(ValueError, match="present"):
        CaptionReward(references, hallucination_weight=1.0)


def _toy_task():
    vocab = Vocab.build(["red circle blue square green star"])
    references = {0: [["red", "circle"]] * 3, 1: [["blue", "square"]] * 3}
    features = torch.zeros(2, 4, 8)
    features[0, :, 0], features[1, :, 1] = 1.0, 1.0  # two distinguishable "images"
    return vocab, CaptionReward(references), features


def test_equal_rewards_give_no_gradient():
    vocab, _, features = _toy_task()

    class Constant:
        def __call__(self, image_id, words):
            return 1.0, 1.0, 0

    decoder = _decoder(len(vocab))
    loss, stats = self_critical_loss(decoder, features, [0, 1], Constant(), vocab, 4, max_len=4)
    loss.backward()
    assert stats["reward"] == 1.0 and loss.item() == 0.0
    assert all(p.grad is None or p.grad.abs().max() == 0 for p in decoder.parameters())


def test_a_decoder_learns_from_rewards_alone():
    vocab, reward, features = _toy_task()
    decoder = _decoder(len(vocab), seed=3).train()
    optimizer = torch.optim.Adam(decoder.parameters(), lr=2e-2)
    rewards = []
    for _ in range(130):
        loss, stats = self_critical_loss(decoder, features, [0, 1], reward, vocab, 6, max_len=4)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        rewards.append(stats["cider"])
    first, last = sum(rewards[:10]) / 10, sum(rewards[-10:]) / 10
    # the best possible here is 5: a two-word caption has no 3- or 4-grams to match
    assert first < 1.5 and last > 4.5, (first, last)


def test_a_run_switches_to_self_critical_epochs(tmp_path):
    from mmapp.cli import main
    from tests.test_training import COCO, caption_args
    import json

    cache = tmp_path / "features"
    assert main(["features", "--images", str(COCO), "--out", str(cache), "encoder.input_size=64",
                 "--workers", "0", "--quiet"]) == 0
    run = tmp_path / "run"
    assert main(caption_args(run, cache, "train.epochs=3", "train.self_critical_after=2",
                             "train.scst_samples=3", "train.lr=1e-2")) == 0
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert ["xent" in r["train"] for r in rows] == [True, True, False]
    assert {"reward", "cider", "hallucinated", "words"} <= rows[2]["train"].keys()
    assert rows[2]["train"]["steps"] == rows[0]["train"]["steps"]
    # the cosine schedule spans the two cross-entropy epochs; then train.scst_lr, constant
    assert rows[0]["lr"] == pytest.approx(5e-3) and rows[2]["lr"] == pytest.approx(5e-5)


def test_self_critical_config_is_checked():
    from mmapp.run_config import RunConfig, TrainConfig

    with pytest.raises(ValueError, match="scst_samples"):
        TrainConfig(self_critical_after=0, scst_samples=1)
    with pytest.raises(ValueError, match="train_instances"):
        RunConfig(train=TrainConfig(scst_hallucination_weight=1.0))
