"""Tiny random checkpoints and a shape scene, for the tests and for screenshots without real models.

The encoder is random (``weights="none"``, 64 px input, 2x2 grid): the captions and answers are
nonsense, but every shape, file and code path is the real one.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from mmapp.app.examples import QUESTIONS
from mmapp.checkpoint import save_model
from mmapp.config import CaptionDecoderConfig, EncoderConfig, VQAConfig
from mmapp.data.shapes.scene import render_scene, sample_scene
from mmapp.models.caption_decoder import build_caption_decoder
from mmapp.models.encoder import build_encoder
from mmapp.models.answer_decoder import GenerativeVQANet
from mmapp.models.vqa import VQANet
from mmapp.vocab import AnswerVocab, Vocab

WORDS = ("a red orange yellow green cyan blue purple white circle square triangle star hexagon diamond "
         "small large left right of above below the and is there what color shape size how many "
         "objects object are to").split()


def make_tiny_checkpoints(folder: str | Path, captioner_ood_threshold: float | None = None,
                          seed: int = 0) -> tuple[Path, Path]:
    """Write ``captioner.safetensors`` and ``vqa.safetensors`` into ``folder``; returns their paths.

    With ``captioner_ood_threshold`` the captioner carries OOD statistics (zero mean, unit std) and
    that threshold, so a test can force the out-of-domain warning on (a negative threshold) or off.
    """
    torch.manual_seed(seed)
    folder = Path(folder)
    encoder = build_encoder(EncoderConfig(weights="none", input_size=64))
    vocab = Vocab.build([" ".join(WORDS), *QUESTIONS])
    decoder = build_caption_decoder(CaptionDecoderConfig(
        vocab_size=len(vocab), encoder_dim=encoder.out_dim, embed_dim=16, attention_dim=16, hidden_dim=32,
        dropout=0.0)).eval()
    extra_tensors, extra_meta = {}, {}
    if captioner_ood_threshold is not None:
        extra_tensors = {"ood.mean": torch.zeros(encoder.out_dim), "ood.std": torch.ones(encoder.out_dim)}
        extra_meta = {"ood": {"threshold": captioner_ood_threshold}}
    training = {"dataset": "tiny random (tests)", "epoch": 0,
                "test_metrics": {"CIDEr": 0.0123, "Bleu_4": 0.001}}
    cap = save_model(folder / "captioner.safetensors", "captioner", decoder, encoder, vocab, training=training,
                     extra_tensors=extra_tensors, extra_meta=extra_meta)
    answers = AnswerVocab.build(["yes", "no", "red", "blue", "green", "circle", "square", "2", "3"], 9)
    net = VQANet(VQAConfig(vocab_size=len(vocab), num_answers=len(answers), encoder_dim=encoder.out_dim,
                           embed_dim=8, question_dim=16, attention_dim=16, hidden_dim=32, dropout=0.0)).eval()
    vqa = save_model(folder / "vqa.safetensors", "vqa", net, encoder, vocab, answers,
                     training={"dataset": "tiny random (tests)", "test_metrics": {"accuracy": 0.11}})
    return cap, vqa


TINY_ANSWERS = ("yes", "no", "red", "blue", "green", "circle", "square", "2", "3", "red circle")


def make_tiny_generate_checkpoint(folder: str | Path, seed: int = 0, image_first: bool = False) -> Path:
    """Write ``vqa_generate.safetensors``: a random generative VQA head (``vqa.head: generate``) on
    the same random encoder and question vocabulary as ``make_tiny_checkpoints``."""
    torch.manual_seed(seed)
    encoder = build_encoder(EncoderConfig(weights="none", input_size=64))
    vocab = Vocab.build([" ".join(WORDS), *QUESTIONS])
    words = Vocab.build(TINY_ANSWERS)
    net = GenerativeVQANet(VQAConfig(vocab_size=len(vocab), encoder_dim=encoder.out_dim, embed_dim=8,
                                     question_dim=16, attention_dim=16, hidden_dim=32, dropout=0.0,
                                     head="generate", image_first=image_first, answer_vocab_size=len(words),
                                     answer_embed_dim=8, answer_hidden_dim=16)).eval()
    return save_model(Path(folder) / "vqa_generate.safetensors", "vqa", net, encoder, vocab, words,
                      training={"dataset": "tiny random (tests)", "test_metrics": {"accuracy": 0.12}})


def write_scene(path: str | Path, seed: int = 0, size: int = 224) -> Path:
    """Render one procedural shapes scene to ``path`` (PNG)."""

    path = Path(path)
    render_scene(sample_scene(np.random.default_rng(seed), size)).save(path)
    return path
