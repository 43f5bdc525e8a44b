"""``vqa.readout`` and ``vqa.imagenet_weight``: the attended cell read out straight to the answer
logits, and the encoder's ImageNet classifier's evidence for the answers it can name."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from mmapp.checkpoint import load_head, save_model
from mmapp.cli import main
from mmapp.config import EncoderConfig, VQAConfig
from mmapp.inference import VQAModel
from mmapp.models.encoder import build_encoder
from mmapp.models.imagenet_evidence import ImageNetEvidence, imagenet_hypernyms, imagenet_lemmas, match_answers
from mmapp.models.vqa import VQANet
from mmapp.vocab import AnswerVocab, Vocab
from tests.support.tiny import write_scene
from tests.test_training import QUESTIONS, coco_cache, history, vqa_args_answering  # noqa: F401 - fixture

D, P, QV, C = 12, 16, 20, 6  # feature width (head channels 2..8), cells, question vocabulary, classifier width


def tiny_cfg(**kw) -> VQAConfig:
    base = dict(vocab_size=QV, num_answers=5, encoder_dim=D, embed_dim=8, question_dim=16, attention_dim=16,
                hidden_dim=32, dropout=0.0, coords=True, readout=True, imagenet_weight=2.0, imagenet_classes=3,
                imagenet_channels=(2, 2 + C))
    return VQAConfig(**{**base, **kw})


def inputs(B=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    lengths = torch.tensor([3, 5, 1, 4][:B])
    questions = torch.randint(4, QV, (B, 5), generator=g) * (torch.arange(5) < lengths.unsqueeze(1))
    return torch.randn(B, P, D, generator=g), questions, lengths


def test_match_answers_takes_whole_words_and_plurals():
    lemmas = [["egyptian cat"], ["catamaran"], ["lion", "king of beasts"], ["bell peppers"], ["dogs"]]
    assert match_answers(["cat", "lion", "bell pepper", "dog", "yes"], lemmas) == [[0], [2], [3], [4], []]
    assert match_answers(["mouse"], [["mice"]], plurals={"mouse": "mice"}) == [[0]]
    lemmas = imagenet_lemmas()  # timm's copy, in the classifier's order
    assert len(lemmas) == 1000 and "tabby" in lemmas[281] and lemmas[291][0] == "lion"
    assert 281 in match_answers(["cat"], lemmas)[0] and match_answers(["yes", "2"], lemmas) == [[], []]


def test_match_answers_names_the_classes_a_word_is_a_hypernym_of():
    lemmas, hypernyms = imagenet_lemmas(), imagenet_hypernyms()  # the committed WordNet table
    assert len(hypernyms) == 1000 and hypernyms[207][0] == ["retriever"]  # golden retriever's parent
    dog, cat, fish, lion, bear = match_answers(["dog", "cat", "fish", "lion", "bear"], lemmas, None, hypernyms)
    assert 207 in dog and 151 in dog and len(dog) >= 100  # golden retriever, Chihuahua: every breed
    assert 934 not in dog  # "hot dog": the ending alone no longer names a class
    assert 281 in cat and 291 not in cat  # tabby, not lion ("big cat, cat" is headed "big cat")
    assert {0, 1} <= set(fish)  # tench, goldfish
    assert lion == [291]  # not "sea lion"
    assert 105 not in bear and 850 not in bear  # not "koala bear", not "teddy bear"
    assert 487 in match_answers(["phone"], lemmas, None, hypernyms)[0]  # "mobile phone": "phone" is above it
    assert match_answers(["object", "animal"], lemmas, None, hypernyms) == [[], []]  # above too many to name one
    # a toy hierarchy: the ending counts where the word heads or names a synset above the class
    toy_lemmas = [["egyptian cat"], ["hot dog"], ["golden retriever"]]
    toy_hypernyms = [[["domestic cat", "house cat"], ["cat", "true cat"], ["thing"]], [["sandwich"], ["thing"]],
                     [["retriever"], ["dog"], ["thing"]]]
    assert match_answers(["cat", "dog", "thing"], toy_lemmas, None, toy_hypernyms, most_classes=0.5) == [[0], [2], []]
    assert match_answers(["thing"], toy_lemmas, None, toy_hypernyms, most_classes=1.0) == [[0, 1, 2]]
    assert match_answers(["cat", "dog"], toy_lemmas) == [[0], [1]]  # without the hierarchy: the ending decides


def test_evidence_is_the_answers_renormalised_imagenet_probability():
    torch.manual_seed(0)
    classifier = torch.nn.Linear(C, 10)
    matches = [[7, 2], [], [4], [], []]  # answers 0 and 2 have classes
    evidence = ImageNetEvidence(3, 5, C).fill(classifier, matches)
    pooled = torch.randn(4, C)
    logits = classifier(pooled).detach()[:, [2, 4, 7]]  # the kept classes, sorted
    p = logits.softmax(-1)
    out = evidence(pooled)
    torch.testing.assert_close(out[:, 0], (p[:, 0] + p[:, 2]).log())
    torch.testing.assert_close(out[:, 2], p[:, 1].log())
    assert torch.equal(out[:, [1, 3, 4]], torch.zeros(4, 3))  # no class: no evidence either way
    with pytest.raises(ValueError, match="classes"):
        ImageNetEvidence(2, 5, C).fill(classifier, matches)


def test_readout_adds_the_gated_attended_cell_and_the_evidence():
    torch.manual_seed(0)
    net = VQANet(tiny_cfg()).eval()
    net.imagenet.fill(torch.nn.Linear(C, 10), [[1], [3, 5], [], [], [1]])
    features, questions, lengths = inputs()
    logits, attention = net(features, questions, lengths)
    normalised, fused, _, _ = net.encode(features, questions, lengths)
    where = attention.mean(1, keepdim=True)
    cell = torch.bmm(where, normalised).squeeze(1)
    head = torch.bmm(where, features[..., 2:2 + C]).squeeze(1)
    expected = net.classifier(fused) + torch.sigmoid(net.readout_gate(fused)) * (
        net.readout(cell) + 2.0 * net.imagenet(head))
    torch.testing.assert_close(logits, expected)
    without = VQANet(tiny_cfg(readout=False, imagenet_weight=0.0, imagenet_classes=0)).eval()
    assert without.readout is None and without.imagenet is None
    assert not torch.allclose(logits, net.classifier(fused))  # the readout changes the answer logits


def test_grouped_images_and_fixed_shapes_give_the_same_logits():
    torch.manual_seed(0)
    net = VQANet(tiny_cfg()).eval()
    net.imagenet.fill(torch.nn.Linear(C, 10), [[1], [3, 5], [], [], [1]])
    features, questions, lengths = inputs()
    image_index = torch.tensor([1, 0, 1, 2])
    images = features[:3]
    per_question, _ = net(images[image_index], questions, lengths)
    grouped, _ = net(images, questions, lengths, image_index)
    net.static_shapes = True
    fixed, _ = net(images, questions, lengths, image_index)
    torch.testing.assert_close(grouped, per_question)
    torch.testing.assert_close(fixed, per_question)


def test_config_refuses_what_cannot_work():
    with pytest.raises(ValueError, match="needs vqa.readout"):
        tiny_cfg(readout=False)
    with pytest.raises(ValueError, match="vqa.head: classify"):
        tiny_cfg(head="generate", imagenet_weight=0.0)


def test_checkpoint_round_trip_keeps_the_evidence(tmp_path):
    torch.manual_seed(0)
    encoder = build_encoder(EncoderConfig(input_size=64))  # the packaged ImageNet weights
    qvocab = Vocab.build(["what is this is there a cat"])
    answers = AnswerVocab.build(["cat", "dog", "yes", "no", "2"], 5)
    matches = match_answers(answers.answers, imagenet_lemmas())
    cfg = tiny_cfg(vocab_size=len(qvocab), encoder_dim=encoder.out_dim, num_answers=len(answers),
                   imagenet_classes=len(ImageNetEvidence.classes_for(matches)),
                   imagenet_channels=encoder.head_channels())
    net = VQANet(cfg).eval()
    net.imagenet.fill(encoder.imagenet_classifier(), matches)
    assert cfg.imagenet_classes >= 10  # "Egyptian cat", "Eskimo dog", ..., "cup", "coffee mug"
    path = save_model(tmp_path / "vqa.safetensors", "vqa", net, encoder, qvocab, answers)
    loaded, _, _ = load_head(path, "vqa")
    assert loaded.cfg == cfg
    assert all(torch.equal(a, b) for a, b in zip(net.state_dict().values(), loaded.state_dict().values()))
    (r,) = VQAModel.from_checkpoint(path, "cpu").answer(write_scene(tmp_path / "scene.png", size=64),
                                                        "what is this?", top_k=2)
    assert len(r.answers) == 2


def test_an_encoder_without_imagenet_weights_is_refused():
    with pytest.raises(ValueError, match="no pretrained ImageNet classifier"):
        build_encoder(EncoderConfig(weights="none", input_size=64)).imagenet_classifier()


def test_readout_with_imagenet_trains_through_the_trainer(tmp_path, coco_cache):  # noqa: F811
    """The fixture's answers renamed to things ImageNet knows, so the evidence is filled."""
    run = tmp_path / "run"
    args = vqa_args_answering(run, coco_cache, ["cat", "yes", "dog", "cup", "no"])
    assert main([*args, "train.epochs=12", "train.lr=2e-2", "train.batch_size=1", "train.schedule=constant",
                 "vqa.dropout=0", "vqa.readout=true", "vqa.imagenet_weight=1", "train.patience=100"]) == 0
    rows = history(run)
    assert rows[-1]["train"]["loss"] < 0.5 * rows[0]["train"]["loss"]
    model = VQAModel.from_checkpoint(run / "best.safetensors", device="cpu")
    assert model.head.imagenet is not None and model.head.cfg.imagenet_classes >= 10
    assert model.head.imagenet.membership.sum() >= 10 and QUESTIONS.is_file()
