"""Shared, cheap fixtures: tiny configs, vocabularies, image files and tiny model checkpoints.

Everything here runs on the CPU in well under a second (the two checkpoints are built once per
session). Models are random (``EncoderConfig(weights="none", input_size=64)``, 4x4 joined grid of
D=1392) and seeded, so every test that uses them sees the same weights.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np
import pytest
import torch
from PIL import Image

from mmapp.config import CaptionDecoderConfig, EncoderConfig, VQAConfig
from mmapp.vocab import AnswerVocab, Vocab

CAPTIONS = (
    "a red circle left of a blue square",
    "two green triangles above a yellow circle",
    "a blue square below a red triangle",
    "one yellow square and a green circle",
)
QUESTIONS = (
    "what color is the circle?",
    "how many squares are there?",
    "is there a red triangle?",
    "what shape is left of the square?",
)
ANSWERS = ("red", "blue", "green", "yellow", "yes", "no", "1", "2", "circle", "square")


def tiny_encoder_config(**changes) -> EncoderConfig:
    """Random-weight EfficientNet-Lite0 at 64x64 input: a 4x4 joined grid (P=16, D=1392)."""
    return EncoderConfig(**{"weights": "none", "input_size": 64, **changes})


def _seeded_build(seed: int, build: Callable):
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return build()


def build_tiny_captioner(seed: int = 0, **decoder_changes):
    """(encoder, decoder, vocab): a random tiny captioner in eval mode."""
    from mmapp.models.caption_decoder import build_caption_decoder
    from mmapp.models.encoder import build_encoder

    vocab = Vocab.build(CAPTIONS)

    def build():
        encoder = build_encoder(tiny_encoder_config())
        cfg = CaptionDecoderConfig(**{"vocab_size": len(vocab), "encoder_dim": encoder.out_dim,
                                      "embed_dim": 16, "attention_dim": 16, "hidden_dim": 24,
                                      "dropout": 0.0, **decoder_changes})
        return encoder.eval(), build_caption_decoder(cfg).eval()

    encoder, decoder = _seeded_build(seed, build)
    return encoder, decoder, vocab


def build_tiny_vqa(seed: int = 0, **vqa_changes):
    """(encoder, net, question vocab, answer vocab): a random tiny VQA model in eval mode."""
    from mmapp.models.encoder import build_encoder
    from mmapp.models.vqa import VQANet

    vocab = Vocab.build(QUESTIONS)
    answers = AnswerVocab(ANSWERS)

    def build():
        encoder = build_encoder(tiny_encoder_config())
        cfg = VQAConfig(**{"vocab_size": len(vocab), "num_answers": len(answers),
                           "encoder_dim": encoder.out_dim, "embed_dim": 16, "question_dim": 24,
                           "attention_dim": 16, "glimpses": 2, "hidden_dim": 32, "dropout": 0.0,
                           **vqa_changes})
        return encoder.eval(), VQANet(cfg).eval()

    encoder, net = _seeded_build(seed, build)
    return encoder, net, vocab, answers


@pytest.fixture
def one_thread():
    """Run the test with one intra-op thread (restored afterwards).

    Tiny models gain nothing from threads, and on a busy 2-core machine OpenMP's spin-waiting makes
    them 10-30x slower; use with ``pytestmark = pytest.mark.usefixtures("one_thread")``.
    """
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def tiny_encoder_cfg() -> EncoderConfig:
    return tiny_encoder_config()


@pytest.fixture
def caption_vocab() -> Vocab:
    return Vocab.build(CAPTIONS)


@pytest.fixture
def make_tiny_captioner():
    """Factory: ``make_tiny_captioner(seed=0, **decoder_config_changes) -> (encoder, decoder, vocab)``."""
    return build_tiny_captioner


@pytest.fixture
def make_tiny_vqa():
    """Factory: ``make_tiny_vqa(seed=0, **vqa_config_changes) -> (encoder, net, vocab, answers)``."""
    return build_tiny_vqa


@pytest.fixture(scope="session")
def captioner_checkpoint(tmp_path_factory) -> Path:
    """A tiny random captioner checkpoint (read-only: copy it before damaging it)."""
    from mmapp.checkpoint import save_model

    encoder, decoder, vocab = build_tiny_captioner(seed=1)
    path = tmp_path_factory.mktemp("ckpt") / "captioner.safetensors"
    return save_model(path, "captioner", decoder, encoder, vocab, training={"note": "test fixture"})


@pytest.fixture(scope="session")
def vqa_checkpoint(tmp_path_factory) -> Path:
    """A tiny random VQA checkpoint (read-only: copy it before damaging it)."""
    from mmapp.checkpoint import save_model

    encoder, net, vocab, answers = build_tiny_vqa(seed=2)
    path = tmp_path_factory.mktemp("ckpt") / "vqa.safetensors"
    return save_model(path, "vqa", net, encoder, vocab, answers, training={"max_question_len": 30})


@pytest.fixture
def image_file(tmp_path) -> Callable[..., Path]:
    """Factory: ``image_file(name="img.png", size=(48, 40), seed=0, mode="RGB") -> Path`` of a noise image."""

    def write(name: str = "img.png", size: tuple[int, int] = (48, 40), seed: int = 0, mode: str = "RGB",
              **save_kwargs) -> Path:
        w, h = size
        rng = np.random.default_rng(seed)
        img = Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).convert(mode)
        path = tmp_path / name
        img.save(path, **save_kwargs)
        return path

    return write
