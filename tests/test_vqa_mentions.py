"""``vqa.copy_mentions``: answers whose every word the question names get a gated bonus, so that
"which is bigger, the cat or the dog?" picks between the two words it names."""

from __future__ import annotations

import pytest
import torch

from mmapp.checkpoint import load_head, save_model
from mmapp.cli import main
from mmapp.config import EncoderConfig, VQAConfig
from mmapp.data.vqa_v2 import answer_mentions
from mmapp.inference import VQAModel
from mmapp.models.encoder import build_encoder
from mmapp.models.vqa import VQANet
from mmapp.vocab import AnswerVocab, Vocab
from tests.test_training import coco_cache, vqa_args_answering  # noqa: F401 - fixture

QUESTION_TEXTS = ["which is bigger, the cat or the dog?", "is the hot dog left of the cat?", "what is this?"]
ANSWER_TEXTS = ["cat", "dog", "hot dog", "yes", "zebra"]


def vocabularies() -> tuple[Vocab, list[list[int]]]:
    vocab = Vocab.build(QUESTION_TEXTS)
    return vocab, answer_mentions(ANSWER_TEXTS, vocab)


def tiny_net(vocab: Vocab, **kw) -> VQANet:
    base = dict(vocab_size=len(vocab), num_answers=len(ANSWER_TEXTS), encoder_dim=12, embed_dim=8,
                question_dim=16, attention_dim=16, hidden_dim=32, dropout=0.0, copy_mentions=True, mention_words=2)
    return VQANet(VQAConfig(**{**base, **kw}))


def questions_of(vocab: Vocab) -> tuple[torch.Tensor, torch.Tensor]:
    encoded = [vocab.encode_question(q) for q in QUESTION_TEXTS]
    lengths = torch.tensor([len(e) for e in encoded])
    padded = torch.zeros(len(encoded), int(lengths.max()), dtype=torch.long)  # 0: padding
    for i, e in enumerate(encoded):
        padded[i, : len(e)] = torch.tensor(e)
    return padded, lengths


def test_mentioned_needs_every_word_of_the_answer_in_the_question():
    vocab, ids = vocabularies()
    assert ids[:3] == [[vocab.id("cat")], [vocab.id("dog")], [vocab.id("hot"), vocab.id("dog")]]
    assert ids[3] == ids[4] == []  # "yes", "zebra": no question uses them
    net = tiny_net(vocab).fill_mentions(ids)
    questions, _ = questions_of(vocab)
    assert net.mentioned(questions).tolist() == [
        [True, True, False, False, False],  # cat, dog; not "hot dog" ("hot" is not in it)
        [True, True, True, False, False],  # "hot dog" (and its "dog"), cat
        [False, False, False, False, False],
    ]


def test_the_gate_adds_to_the_mentioned_answers_only_and_learns():
    torch.manual_seed(0)
    vocab, ids = vocabularies()
    net = tiny_net(vocab).fill_mentions(ids).eval()
    questions, lengths = questions_of(vocab)
    features = torch.randn(3, 16, 12)
    logits, _ = net(features, questions, lengths)
    _, fused, _, _ = net.encode(features, questions, lengths)
    expected = net.classifier(fused) + net.mention_gate(fused) * net.mentioned(questions).float()
    torch.testing.assert_close(logits, expected)
    assert not torch.allclose(logits, net.classifier(fused))
    logits[0, 0].backward()
    assert net.mention_gate.weight.grad.abs().sum() > 0


def test_checkpoint_round_trip_keeps_the_mentions_and_config_refuses_a_generator(tmp_path):
    torch.manual_seed(0)
    vocab, ids = vocabularies()
    encoder = build_encoder(EncoderConfig(input_size=64, weights="none"))
    net = tiny_net(vocab, encoder_dim=encoder.out_dim).fill_mentions(ids)
    path = save_model(tmp_path / "vqa.safetensors", "vqa", net, encoder, vocab,
                      AnswerVocab.build(ANSWER_TEXTS, len(ANSWER_TEXTS)))
    loaded, _, _ = load_head(path, "vqa")
    assert torch.equal(loaded.mention_ids, net.mention_ids) and loaded.cfg.copy_mentions
    with pytest.raises(ValueError, match="vqa.head: classify"):
        VQAConfig(head="generate", copy_mentions=True)
    with pytest.raises(ValueError, match="answers of up to"):
        net.fill_mentions(ids[:2])


def test_copy_mentions_trains_through_the_trainer(tmp_path, coco_cache):  # noqa: F811
    """The training task spells each answer in the question vocabulary; the run's checkpoint keeps it.
    The fixture's answers renamed so that some are words of its questions."""
    run = tmp_path / "run"
    args = vqa_args_answering(run, coco_cache, ["woman", "yes", "cups", "space suit", "no"])
    assert main([*args, "train.epochs=1", "vqa.copy_mentions=true"]) == 0
    model = VQAModel.from_checkpoint(run / "best.safetensors", device="cpu")
    answers, vocab = model.answer_vocab.answers, model.vocab
    rows = dict(zip(answers, model.head.mention_ids.tolist()))
    assert [vocab.words[i] for i in rows["woman"] if i] == ["woman"]
    assert [vocab.words[i] for i in rows["cups"] if i] == ["cups"]
    assert rows["space suit"] == [0] and rows["yes"] == [0]  # words no question uses
    assert model.head.cfg.mention_words == 1  # the longest spelled answer
