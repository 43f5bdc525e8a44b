"""The generative VQA head (``vqa.head: generate``) and ``vqa.image_first``: beam 1 equals greedy,
batched equals one by one, teacher forcing equals stepping, a tiny model overfits a handful of
questions (directly and through the trainer), checkpoints of each head round-trip and load in the app."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from mmapp.checkpoint import load_head, save_model
from mmapp.cli import main
from mmapp.config import EncoderConfig, VQAConfig
from mmapp.data.collate import collate_vqa_answers
from mmapp.data.vqa_v2 import answer_sequences
from mmapp.inference import VQAModel
from mmapp.losses import answer_sequence_loss
from mmapp.models.answer_decoder import GenerativeVQANet, build_vqa_net, write_answers
from mmapp.models.decoding import beam_search, beam_search_n_best, greedy_search
from mmapp.models.encoder import build_encoder
from mmapp.models.vqa import VQANet
from mmapp.vocab import AnswerVocab, Vocab
from tests.support.tiny import make_tiny_checkpoints, make_tiny_generate_checkpoint, write_scene
from tests.test_training import coco_cache, history, vqa_args  # noqa: F401 - the fixture is used below

WORDS = Vocab.build(["yes no red blue green circle square 2 3 large small"])
D, P, QV = 8, 16, 20  # feature width, cells (4x4), question vocabulary


def tiny_cfg(**kw) -> VQAConfig:
    base = dict(vocab_size=QV, encoder_dim=D, embed_dim=8, question_dim=16, attention_dim=16, hidden_dim=32,
                dropout=0.0, head="generate", answer_vocab_size=len(WORDS), answer_embed_dim=8,
                answer_hidden_dim=16, coords=True)
    return VQAConfig(**{**base, **kw})


def tiny_inputs(B: int = 5, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    features = torch.randn(B, P, D, generator=g)
    lengths = torch.tensor([3, 5, 1, 4, 2, 5, 3, 2][:B])
    questions = torch.randint(4, QV, (B, 5), generator=g) * (torch.arange(5) < lengths.unsqueeze(1))  # (B, L)
    return features, questions, lengths


@pytest.fixture
def net() -> GenerativeVQANet:
    torch.manual_seed(0)
    model = GenerativeVQANet(tiny_cfg()).eval()
    with torch.no_grad():  # sharper random weights: answers of different lengths
        for name, p in model.answer_decoder.named_parameters():
            if "project" not in name:
                p.normal_(0.0, 3.0 if name.startswith("output") else 0.5)
        model.answer_decoder.output.bias[Vocab.end_id] += 1.0
    return model


def test_beam_one_equals_greedy(net):
    features, questions, lengths = tiny_inputs()
    decoder, grid, _ = net.conditioned(features, questions, lengths)
    ids = (net.cfg.max_answer_len, Vocab.start_id, Vocab.end_id, Vocab.pad_id)
    greedy, beam = greedy_search(decoder, grid, *ids), beam_search(decoder, grid, 1, *ids)
    assert (greedy.lengths > 1).all() and (greedy.lengths < ids[0] + 1).any()  # never empty; some end early
    assert torch.equal(greedy.tokens, beam.tokens) and torch.equal(greedy.lengths, beam.lengths)
    torch.testing.assert_close(greedy.scores, beam.scores)
    torch.testing.assert_close(greedy.attention, beam.attention)


@pytest.mark.parametrize("beam_size", [1, 3])
def test_batched_equals_one_by_one(net, beam_size):
    features, questions, lengths = tiny_inputs()
    (batched,), attention = write_answers(net, features, questions, lengths, beam_size)
    for b in range(len(features)):
        (one,), att = write_answers(net, features[b:b + 1], questions[b:b + 1, : lengths[b]], lengths[b:b + 1],
                                    beam_size)
        n = int(one.lengths[0])
        assert int(batched.lengths[b]) == n
        assert torch.equal(batched.tokens[b, :n], one.tokens[0, :n])
        torch.testing.assert_close(batched.scores[b], one.scores[0], atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(batched.attention[b, :n], one.attention[0, :n], atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(attention[b], att[0], atol=1e-5, rtol=1e-5)


def test_n_best_are_ranked_and_the_first_is_beam_search(net):
    features, questions, lengths = tiny_inputs()
    decoder, grid, _ = net.conditioned(features, questions, lengths)
    ids = (net.cfg.max_answer_len, Vocab.start_id, Vocab.end_id, Vocab.pad_id)
    beams = beam_search_n_best(decoder, grid, 4, *ids, n_best=4)
    best = beam_search(decoder, grid, 4, *ids)
    assert torch.equal(beams[0].tokens, best.tokens)
    scores = torch.stack([d.scores for d in beams], dim=1)  # (B, 4)
    assert (scores[:, :-1] >= scores[:, 1:]).all()
    with pytest.raises(ValueError, match="n_best"):
        beam_search_n_best(decoder, grid, 2, *ids, n_best=3)


def test_teacher_forcing_equals_stepping_and_grouped_equals_per_question(net):
    features, questions, lengths = tiny_inputs(4)
    image_index = torch.tensor([0, 0, 1, 1])
    grids = features[[0, 2]]  # (I=2, P, D): questions 0, 1 about image 0; 2, 3 about image 1
    answers = torch.tensor([[1, 5, 6, 2], [1, 7, 2, 0], [1, 8, 2, 0]])  # (R, T): <start> w.. <end> <pad>
    owner = torch.tensor([0, 1, 3])
    logits, alpha, _, _ = net(grids, questions, lengths, answers, owner, image_index)  # (R, T, V), (R, T, P)
    per_q = grids[image_index]  # (B, P, D)
    decoder, grid, _ = net.conditioned(per_q, questions, lengths)
    memory = {k: v.index_select(0, owner) for k, v in decoder.prepare(grid).items()}
    state = decoder.init_state(memory)
    for t in range(3):
        step_logits, step_alpha, state = net.answer_decoder.step(answers[:, t], state, memory)
        live = (answers[:, t] != Vocab.end_id) & (answers[:, t] != Vocab.pad_id)  # others are zeroed
        torch.testing.assert_close(logits[live, t], step_logits[live], atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(alpha[live, t], step_alpha[live], atol=1e-5, rtol=1e-5)


def test_a_tiny_generative_model_overfits_eight_questions():
    torch.manual_seed(0)
    model = GenerativeVQANet(tiny_cfg(dropout=0.0))
    features, questions, lengths = tiny_inputs(8, seed=1)
    humans = [["yes"] * 9 + ["no"], ["red circle"] * 8 + ["red"] * 2, ["2"] * 10, ["blue"] * 8 + ["green"] * 2,
              ["no"] * 10, ["large square"] * 10, ["3"] * 5 + ["2"] * 5, ["green"] * 8 + ["small"] * 2]
    items = []
    for b, answers in enumerate(humans):
        seqs, weights = answer_sequences(answers, WORDS)
        items.append({"visual": features[b], "question": questions[b, : lengths[b]], "target": torch.zeros(1),
                      "question_id": b, "image_id": b, "answers": answers, "answer_seqs": seqs,
                      "answer_weights": weights})
    batch = collate_vqa_answers(items)
    assert batch["answer_inputs"].shape[0] == 13 and torch.allclose(
        torch.zeros(8).index_add_(0, batch["answer_question"], batch["answer_weights"]), torch.ones(8))
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(150):
        logits, *_ = model(batch["visual"], batch["questions"], batch["lengths"], batch["answer_inputs"],
                           batch["answer_question"])
        loss, _ = answer_sequence_loss(logits, batch["answer_targets"], batch["answer_weights"])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()
    (decoded,), _ = write_answers(model, features, questions, lengths)
    said = [" ".join(WORDS.decode(row)) for row in decoded.tokens.tolist()]
    # the most-weighted answer of each (question 6: "3" and "2" tie, either is right)
    assert said[:6] + said[7:] == ["yes", "red circle", "2", "blue", "no", "large square", "green"], said
    assert said[6] in ("2", "3")


@pytest.mark.parametrize("head", ["classify", "generate"])
def test_image_first_starts_the_question_lstm_from_the_image_and_trains(head):
    torch.manual_seed(0)
    features, questions, lengths = tiny_inputs(2)
    same_question = questions[:1].expand(2, -1), lengths[:1].expand(2)
    kw = {"num_answers": 4} if head == "classify" else {}
    plain = build_vqa_net(tiny_cfg(head=head, **kw))
    first = build_vqa_net(tiny_cfg(head=head, image_first=True, **kw))
    assert plain.question_start(features, None) is None
    h0, c0 = first.question_start(features, None)
    assert h0.shape == c0.shape == (2, 16) and not torch.allclose(h0[0], h0[1])
    q_plain = plain.question_encoder(*same_question)
    q_first = first.question_encoder(*same_question, first.question_start(features, None))
    assert torch.allclose(q_plain[0], q_plain[1]) and not torch.allclose(q_first[0], q_first[1])
    if head == "classify":
        logits, _ = first(features, questions, lengths)
        loss = logits.logsumexp(-1).sum()
    else:
        logits, *_ = first(features, questions, lengths, torch.tensor([[1, 5]]), torch.tensor([1]))
        loss = logits.sum()
    loss.backward()
    assert first.image_init.weight.grad is not None and first.image_init.weight.grad.abs().sum() > 0


@pytest.mark.parametrize("head", ["classify", "generate"])
@pytest.mark.parametrize("image_first", [False, True])
def test_checkpoint_round_trip_of_each_head(tmp_path, head, image_first):
    torch.manual_seed(0)
    encoder = build_encoder(EncoderConfig(weights="none", input_size=64))
    qvocab = Vocab.build(["what color is the circle how many squares"])
    answers = WORDS if head == "generate" else AnswerVocab.build(["yes", "no", "red"], 3)
    cfg = tiny_cfg(head=head, image_first=image_first, vocab_size=len(qvocab), encoder_dim=encoder.out_dim,
                   num_answers=len(answers) if head == "classify" else 0)
    net = build_vqa_net(cfg).eval()
    path = save_model(tmp_path / "vqa.safetensors", "vqa", net, encoder, qvocab, answers)
    loaded, meta, _ = load_head(path, "vqa")
    assert type(loaded) is type(net) and loaded.cfg == cfg and meta["model"]["head"] == head
    assert all(torch.equal(a, b) for a, b in zip(net.state_dict().values(), loaded.state_dict().values()))
    model = VQAModel.from_checkpoint(path, "cpu")
    image = write_scene(tmp_path / "scene.png", size=64)
    (r,) = model.answer(image, "what color is the circle?", top_k=3)
    assert r.head == head and 1 <= len(r.answers) <= 3 and r.attention.shape == model.grid
    if head == "generate":
        assert r.answers[0][0] == " ".join(r.tokens) and 0 < r.answers[0][1] <= 1
        assert r.word_attention.shape == (len(r.tokens), *model.grid)
        assert all(w in WORDS for w in r.tokens)
    else:
        assert r.tokens == [] and r.word_attention.size == 0
    assert {"head", "tokens", "word_attention", "answers", "attention"} <= r.to_json().keys()


def test_a_generate_checkpoint_loads_in_the_app_service(tmp_path):
    from mmapp.app.service import AppService, describe_models
    from mmapp.app.ui import answer_word_overlays
    from mmapp.inference import Captioner

    cap_path, _ = make_tiny_checkpoints(tmp_path)
    vqa_path = make_tiny_generate_checkpoint(tmp_path, image_first=True)
    captioner = Captioner.from_checkpoint(cap_path, "cpu")
    vqa = VQAModel.from_checkpoint(vqa_path, "cpu", encoder=captioner.encoder)
    service = AppService(captioner, vqa, checkpoints={"captioner": cap_path, "vqa": vqa_path})
    try:
        from PIL import Image
        picture = Image.open(write_scene(tmp_path / "scene.png")).convert("RGB")
        r = service.answer(picture, "what color is the circle?", top_k=2)
        assert r.head == "generate" and len(r.answers) <= 2 and r.tokens
        assert r.word_attention.shape == (len(r.tokens), *vqa.grid)
        (direct,) = vqa.answer(picture, "what color is the circle?", top_k=2)
        assert direct.answers[0][0] == r.answers[0][0]
        questions = ["what color is the circle?", "how many objects are there?", "is there a red square?"]
        batched = service._answer_batch([(vqa.prepare(picture), picture.size, q, k) for q, k in zip(questions, (1, 3, 3))])
        for question, k, out in zip(questions, (1, 3, 3), batched):
            (single,) = vqa.answer(picture, question, top_k=k)
            assert [a for a, _ in out.answers] == [a for a, _ in single.answers] and len(out.answers) == k
            np.testing.assert_allclose(out.word_attention, single.word_attention, atol=1e-5)
        overlays = answer_word_overlays(picture, r)
        assert [label for _, label in overlays] == [f"{i + 1}: {w}" for i, w in enumerate(r.tokens)]
        assert "vqa" in describe_models(service).lower()
    finally:
        service.close()


def test_generate_trains_through_the_trainer_and_resumes(tmp_path, coco_cache):  # noqa: F811
    run = tmp_path / "gen"
    args = vqa_args(run, coco_cache, "train.batch_size=1", "train.lr=2e-2", "train.schedule=constant",
                    "vqa.dropout=0", "vqa.head=generate", "vqa.image_first=true", "vqa.answer_hidden_dim=32",
                    "vqa.answer_embed_dim=16", "train.patience=100")
    assert main([*args, "train.epochs=8"]) == 0
    assert main(["train", "vqa", "--resume", str(run), "train.epochs=20", "--quiet"]) == 0
    rows = history(run)
    assert [r["epoch"] for r in rows] == list(range(1, 21))
    losses = [r["train"]["loss"] for r in rows]
    assert losses[-1] < 0.5 * losses[0], losses
    assert max(r["val"]["accuracy"] for r in rows) >= 0.8, [r["val"]["accuracy"] for r in rows]  # 4 of its 5 questions (0.2 at first)
    model = VQAModel.from_checkpoint(run / "best.safetensors", device="cpu")
    assert model.generate and model.head.cfg.image_first and "space" in model.answer_words


def test_the_cli_answers_with_a_generate_checkpoint(tmp_path, capsys):
    import json

    path = make_tiny_generate_checkpoint(tmp_path)
    image = write_scene(tmp_path / "scene.png", size=64)
    maps = tmp_path / "maps"
    question = "what color is the circle?"
    assert main(["ask", str(image), question, "--checkpoint", str(path), "--json", "--top-k", "2",
                 "--save-attention", str(maps)]) == 0
    out = json.loads(capsys.readouterr().out)
    (expected,) = VQAModel.from_checkpoint(path, "cpu").answer(image, question, top_k=2)
    assert out["head"] == "generate" and [a["answer"] for a in out["answers"]] == [a for a, _ in expected.answers]
    assert out["tokens"] == expected.tokens and len(out["word_attention"]) == len(expected.tokens)
    assert len(list(maps.glob("scene.answer.*.png"))) == len(expected.tokens)  # one map per answer word
