"""``decoder.imagenet_weight``: the captioner's word logits get the ImageNet classifier's evidence
for the words its classes name, on the cell attended at each step. Stepping (what greedy and beam
search run) equals teacher forcing and every training path; a checkpoint keeps the evidence."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from mmapp.checkpoint import load_head, save_model
from mmapp.config import CaptionDecoderConfig, EncoderConfig
from mmapp.losses import caption_loss
from mmapp.models import imagenet_evidence
from mmapp.models.caption_decoder import build_caption_decoder
from mmapp.models.encoder import build_encoder
from mmapp.models.imagenet_evidence import ImageNetEvidence
from mmapp.speed import teacher_forcing
from mmapp.speed.teacher_forcing import use_training_path
from mmapp.vocab import Vocab
from tests.test_speed_paths import IMAGE_INDEX, INPUTS, PAD, TARGETS
from tests.test_training import coco_cache  # noqa: F401 - the fixture is used below

REPO = Path(__file__).resolve().parents[1]
MATCHES = [[], [], [], [], [0, 3], [1], [], [2], [], [3], [], []]  # 12 words, 4 classes


def make_decoder(weight: float = 1.5):
    torch.manual_seed(0)
    cfg = CaptionDecoderConfig(vocab_size=12, encoder_dim=10, embed_dim=8, attention_dim=8, hidden_dim=16,
                               dropout=0.0, deep_output=True, word_query=True, imagenet_weight=weight,
                               imagenet_classes=4, imagenet_channels=(2, 8))
    decoder = build_caption_decoder(cfg)
    classifier = torch.nn.Linear(6, 9)
    with torch.no_grad():
        classifier.weight.mul_(4.0)
    if decoder.imagenet is not None:
        decoder.imagenet.fill(classifier, MATCHES)
    return decoder


def test_singulars_pair_plural_words_with_their_nouns():
    assert imagenet_evidence.singulars(["dog", "dogs", "box", "boxes", "cherry", "cherries", "glass", "bus"]) == {
        "dogs": "dog", "boxes": "box", "cherries": "cherry"}


def test_stepping_equals_teacher_forcing_and_the_evidence_changes_the_words():
    decoder = make_decoder().eval()
    features = torch.randn(2, 5, 10, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        logits, alphas = decoder(features, INPUTS, IMAGE_INDEX)
        memory = decoder.prepare_for(features, IMAGE_INDEX)
        state = decoder.init_state(memory)
        for t in range(3):
            step_logits, alpha, state = decoder.step(INPUTS[:, t], state, memory)
            torch.testing.assert_close(step_logits[[0, 2]], logits[[0, 2], t])  # rows 0, 2 read a word at t < 3
            torch.testing.assert_close(alpha[[0, 2]], alphas[[0, 2], t])
        attended = torch.bmm(alphas[:, 0:1], memory["imagenet_logits"]).squeeze(1)
        without = make_decoder(weight=0.0).eval()
        assert without.imagenet is None and "imagenet_logits" not in without.prepare(features)
        assert not torch.allclose(without(features, INPUTS, IMAGE_INDEX)[0], logits)
        evidence = decoder.imagenet.from_logits(attended)
        assert torch.equal(evidence[:, [0, 1, 2, 3, 6, 8, 10, 11]], torch.zeros(4, 8))
        assert (evidence[:, [4, 5, 7, 9]] < 0).all()


@pytest.fixture
def plain_compile(monkeypatch):
    monkeypatch.setattr(teacher_forcing.torch, "compile", lambda fn: fn)


@pytest.mark.parametrize("path", ["shrink", "compile", "static"])
def test_every_training_path_computes_the_plain_forward_with_evidence(path, plain_compile):
    features = torch.randn(2, 5, 10, generator=torch.Generator().manual_seed(1))
    plain, fast = make_decoder(), make_decoder()
    use_training_path(fast, path)
    results = []
    for decoder in (plain, fast):
        decoder.zero_grad()
        logits, alphas = decoder(features, INPUTS, IMAGE_INDEX)
        loss = caption_loss(logits, alphas, TARGETS, PAD, 0.5)[0]
        loss.backward()
        results.append((logits, loss.item(), {n: p.grad.clone() for n, p in decoder.named_parameters()}))
    (logits, loss, grads), (f_logits, f_loss, f_grads) = results
    real = TARGETS.ne(PAD)
    torch.testing.assert_close(f_logits[real], logits[real])
    assert f_loss == pytest.approx(loss, rel=1e-5)
    assert grads["imagenet_gate.weight"].abs().sum() > 0  # the gate learns
    for name in grads:
        torch.testing.assert_close(f_grads[name], grads[name], rtol=1e-4, atol=1e-6)


def test_a_captioner_checkpoint_keeps_the_evidence(tmp_path):
    encoder = build_encoder(EncoderConfig(input_size=64))  # the packaged ImageNet weights
    vocab = Vocab.build(["a cat and two dogs on a table", "a cup and a dog"])
    cfg = CaptionDecoderConfig(vocab_size=len(vocab), encoder_dim=encoder.out_dim, embed_dim=8, attention_dim=8,
                               hidden_dim=16, project_dim=8, imagenet_weight=1.0)
    cfg, matches = imagenet_evidence.configure(cfg, vocab.words, encoder, imagenet_evidence.singulars(vocab.words))
    decoder = build_caption_decoder(cfg)
    imagenet_evidence.fill(decoder, matches, encoder)
    dogs = vocab.words.index("dogs")
    assert matches[dogs] == matches[vocab.words.index("dog")] != [] and cfg.imagenet_channels == (112, 1392)
    path = save_model(tmp_path / "captioner.safetensors", "captioner", decoder, encoder, vocab, None)
    loaded, _, _ = load_head(path, "captioner")
    assert loaded.cfg == cfg
    assert all(torch.equal(a, b) for a, b in zip(decoder.state_dict().values(), loaded.state_dict().values()))
    with pytest.raises(ValueError, match="recurrent"):
        CaptionDecoderConfig(vocab_size=10, cell="transformer", imagenet_weight=1.0)


def test_a_captioner_with_evidence_trains_through_the_trainer(tmp_path, coco_cache):  # noqa: F811
    from mmapp.cli import main
    from mmapp.inference import Captioner
    from tests.test_training import caption_args, history

    run = tmp_path / "cap"
    assert main([*caption_args(run, coco_cache), "train.epochs=3", "decoder.imagenet_weight=1"]) == 0
    assert len(history(run)) == 3
    captioner = Captioner.from_checkpoint(run / "best.safetensors", device="cpu")
    assert captioner.head.imagenet is not None and captioner.head.cfg.imagenet_classes > 0
    assert captioner.head.cfg.imagenet_head_resize == captioner.encoder.head_resize() == (2, 2, 4, 4)  # 64 input
    (result,) = captioner.caption(str(next(p for p in sorted((REPO / "datasets" / "fixtures" / "coco" / "val2014").iterdir()))), beam_size=2)
    assert result.text and result.attention.shape[0] == len(result.tokens)


def test_the_evidence_sums_each_answers_classes_and_is_rebuilt_on_load():
    torch.manual_seed(0)
    classifier = torch.nn.Linear(8, 10)
    matches = [[2], [], [5, 7], [2, 9]]  # answer 1 has no class; class 2 names two answers
    evidence = ImageNetEvidence(4, len(matches), 8).fill(classifier, matches)
    logits = torch.randn(3, 4)
    p = logits.softmax(-1)  # over the kept classes 2, 5, 7, 9
    expected = torch.stack([p[:, 0].log(), torch.zeros(3), (p[:, 1] + p[:, 2]).log(), (p[:, 0] + p[:, 3]).log()], -1)
    torch.testing.assert_close(evidence.from_logits(logits), expected)
    loaded = ImageNetEvidence(4, len(matches), 8)
    loaded.load_state_dict(evidence.state_dict())  # the pairs are derived, not saved
    assert "pair_answer" not in evidence.state_dict()
    torch.testing.assert_close(loaded.from_logits(logits), expected)


@pytest.mark.parametrize("grid", ["joined", "last"])
def test_a_resized_heads_cell_logits_are_every_cells_class_logits(grid):
    """On a joined grid the head's 3 x 3 map is resized to the 6 x 6 grid: its cells' logits are
    computed on the 9 cells and resized, and equal the 36 cells' own."""
    encoder = build_encoder(EncoderConfig(weights="none", input_size=96, grid=grid)).eval()
    resize = encoder.head_resize()
    assert resize == ((3, 3, 6, 6) if grid == "joined" else ())
    start, stop = encoder.head_channels()
    evidence = ImageNetEvidence(5, 2, stop - start)
    evidence.weight.normal_(generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        head = encoder(torch.randn(2, 3, 96, 96, generator=torch.Generator().manual_seed(1)))[..., start:stop]
        expected = evidence.class_logits(head)  # (2, 36, 5)
        torch.testing.assert_close(evidence.cell_logits(head, resize), expected, rtol=1e-4, atol=1e-4)


def test_cell_logits_read_a_non_square_resize_and_ignore_a_grid_of_another_size():
    evidence = ImageNetEvidence(4, 2, 6)
    evidence.weight.normal_(generator=torch.Generator().manual_seed(0))
    evidence.bias.normal_(generator=torch.Generator().manual_seed(1))
    own = torch.randn(2, 6, 3, 4, generator=torch.Generator().manual_seed(2))  # (B, C, h, w)
    head = torch.nn.functional.interpolate(own, size=(5, 8), mode="bilinear", align_corners=False)
    head = head.flatten(2).transpose(1, 2)  # (2, 40, 6)
    expected = evidence.class_logits(head)
    torch.testing.assert_close(evidence.cell_logits(head, (3, 4, 5, 8)), expected)
    assert not torch.allclose(evidence.cell_logits(head, (4, 3, 8, 5)), expected, atol=1e-3)  # the axes matter
    other = head[:, :20]  # not the 5 x 8 grid the resize names: every cell's own logits
    assert torch.equal(evidence.cell_logits(other, (3, 4, 5, 8)), evidence.class_logits(other))


def test_a_joined_grids_projection_is_computed_on_the_heads_own_cells():
    """The grid projection equals the plain product (within float rounding) on a joined grid, the
    weights' gradients too, and runs the head channels' share of the product on the 3 x 3 head cells, not the
    36 grid cells. (The gradient at the grid is another, which the resize up from the head's cells
    takes back to the same.)"""
    from torch.utils.flop_counter import FlopCounterMode

    encoder = build_encoder(EncoderConfig(weights="none", input_size=96, grid="joined")).eval()
    torch.manual_seed(0)
    cfg = CaptionDecoderConfig(vocab_size=12, encoder_dim=encoder.out_dim, project_dim=256, embed_dim=8,
                               attention_dim=8, hidden_dim=16, imagenet_channels=encoder.head_channels(),
                               imagenet_head_resize=encoder.head_resize())
    decoder = build_caption_decoder(cfg)
    with torch.no_grad():
        features = encoder(torch.randn(2, 3, 96, 96, generator=torch.Generator().manual_seed(1)))  # (2, 36, D)
    linear = decoder.project[0]
    expected = torch.relu(linear(features))  # the plain product
    with FlopCounterMode(display=False) as flops:
        got = decoder.project(features)
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)
    plain_flops = 2 * 2 * 36 * cfg.encoder_dim * 256  # 2 images x 36 cells; the head's 1280 channels on 9 cells
    assert flops.get_total_flops() < 0.5 * plain_flops
    weights = list(decoder.project.parameters())
    for grad, expected_grad in zip(*(torch.autograd.grad(y.square().sum(), weights) for y in (got, expected))):
        torch.testing.assert_close(grad, expected_grad, rtol=1e-4, atol=1e-4)
    plain = build_caption_decoder(CaptionDecoderConfig(**{**cfg.__dict__, "imagenet_head_resize": ()}))
    plain.load_state_dict(decoder.state_dict())
    assert torch.equal(plain.project(features), torch.relu(plain.project[0](features)))  # without the resize: as it is
