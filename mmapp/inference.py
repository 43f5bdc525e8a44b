"""The inference API the CLI, the evaluator and the app use.

    >>> cap = Captioner.from_checkpoint("checkpoints/captioner.safetensors")
    >>> cap.caption("scene.png", beam_size=3)[0].text
    >>> vqa = VQAModel.from_checkpoint("checkpoints/vqa.safetensors")
    >>> vqa.answer("scene.png", "what color is the circle?")[0].answers

Inputs may be one image or a list: file paths, bytes, PIL images or numpy arrays (see ``images.py``).
Results always come back as a list, one entry per image (or per question).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from torch import Tensor

from mmapp.checkpoint import load_encoder, load_head
from mmapp.distributed import resolve_device
from mmapp.errors import InputError
from mmapp.images import ImageInput, load_image, preprocess
from mmapp.ood import OODStats
from mmapp.vocab import AnswerVocab, Vocab

MAX_QUESTION_CHARS = 500
DEFAULT_CHECKPOINTS = {"captioner": "captioner.safetensors", "vqa": "vqa.safetensors"}


def default_checkpoint(kind: str) -> Path:
    """The shipped checkpoint of ``kind``: ``$MMAPP_CHECKPOINTS`` or the repository's ``checkpoints/``."""
    import os

    folder = Path(os.environ.get("MMAPP_CHECKPOINTS", Path(__file__).resolve().parents[1] / "checkpoints"))
    return folder / DEFAULT_CHECKPOINTS[kind]


def as_image_list(images: ImageInput | Sequence[ImageInput]) -> list[ImageInput]:
    if isinstance(images, np.ndarray):
        return list(images) if images.ndim == 4 else [images]
    if isinstance(images, (list, tuple)):
        return list(images)
    return [images]


@dataclass
class CaptionResult:
    """One caption: its words, total log-probability and one (H, W) attention map per word."""

    text: str
    tokens: list[str]
    score: float
    attention: np.ndarray  # (T, H, W), T = len(tokens)
    image_size: tuple[int, int] = (0, 0)  # (width, height) of the input image


@dataclass
class AnswerResult:
    """Top answers with probabilities and the question's attention map (mean over glimpses)."""

    question: str
    answers: list[tuple[str, float]]
    attention: np.ndarray  # (H, W)
    glimpses: np.ndarray = field(default_factory=lambda: np.zeros((0, 0, 0)))  # (G, H, W)
    image_size: tuple[int, int] = (0, 0)


class _ImageModel:
    """Shared plumbing: the encoder, the device and the checkpoint's metadata."""

    kind = ""

    def __init__(self, encoder: Any, head: torch.nn.Module, meta: dict, device: torch.device) -> None:
        self.encoder, self.head, self.meta, self.device = encoder, head, meta, device
        self.grid = tuple(meta["grid"])  # (H, W)
        self.ood: OODStats | None = None  # set by from_checkpoint when the checkpoint has statistics

    @classmethod
    def from_checkpoint(cls, path: str | Path, device: str | torch.device = "auto", encoder: Any = None):
        """Rebuild a ready model from one checkpoint file. ``encoder`` may be shared between models
        when its config and weights match the checkpoint's."""
        dev = resolve_device(device)
        head, meta, tensors = load_head(path, cls.kind, dev)
        if encoder is None or not _same_encoder(encoder, meta):
            encoder = load_encoder(path, meta, tensors, dev)
        model = cls(encoder, head, meta, dev)
        model.ood = OODStats.from_checkpoint(meta, tensors)
        return model

    @property
    def encoder_cfg(self):
        return self.encoder.cfg

    def out_of_domain(self, features: Tensor) -> list[tuple[float, bool]] | None:
        """features (B, P, D) -> per image (score, above the threshold?), or None without statistics."""
        if self.ood is None:
            return None
        scores = self.ood.score(features)
        return [(float(s), bool(s > self.ood.threshold)) for s in scores]

    @torch.inference_mode()
    def encode(self, images: ImageInput | Sequence[ImageInput]) -> tuple[Tensor, list[tuple[int, int]]]:
        """Images -> grid features (B, P, D) and each image's (width, height)."""
        pil = [load_image(i) for i in as_image_list(images)]
        if not pil:
            raise InputError("no images given")
        batch = torch.stack([preprocess(p, self.encoder.cfg) for p in pil]).to(self.device)  # (B, 3, S, S)
        return self.encoder(batch), [p.size for p in pil]


def _same_encoder(encoder: Any, meta: dict) -> bool:
    from mmapp.config import EncoderConfig, from_dict

    # compared as configs: a checkpoint written before a field existed holds that field's default
    return (encoder.cfg == from_dict(EncoderConfig, meta["encoder"])
            and encoder.weights_id() == meta.get("encoder_weights_id"))


class Captioner(_ImageModel):
    kind = "captioner"

    def __init__(self, encoder: Any, head: torch.nn.Module, meta: dict, device: torch.device) -> None:
        super().__init__(encoder, head, meta, device)
        self.vocab = Vocab.from_dict(meta["vocab"])

    @torch.inference_mode()
    def caption_features(self, features: Tensor, beam_size: int = 3, max_len: int = 20,
                         length_penalty: float = 0.0):
        """features (B, P, D) -> ``decoding.Decoded`` (token ids, lengths, scores, attention (B, T, P))."""
        from mmapp.models.decoding import beam_search

        return beam_search(self.head, features.to(self.device), beam_size, max_len,
                           self.vocab.start_id, self.vocab.end_id, self.vocab.pad_id, length_penalty)

    def caption(self, images: ImageInput | Sequence[ImageInput], beam_size: int = 3, max_len: int = 20,
                length_penalty: float = 0.0) -> list[CaptionResult]:
        """Images -> one ``CaptionResult`` per image (attention maps (T, H, W), one per word)."""
        if not 1 <= beam_size <= 20:
            raise InputError(f"beam_size must be between 1 and 20, got {beam_size}")
        if not 1 <= max_len <= 100:
            raise InputError(f"max_len must be between 1 and 100, got {max_len}")
        features, sizes = self.encode(images)
        decoded = self.caption_features(features, beam_size, max_len, length_penalty)
        H, W = self.grid
        results = []
        for i, size in enumerate(sizes):
            words = self.vocab.decode(decoded.tokens[i].tolist())
            attention = decoded.attention[i, : len(words)].float().cpu().numpy().reshape(len(words), H, W)
            results.append(CaptionResult(" ".join(words), words, float(decoded.scores[i]), attention, size))
        return results


class VQAModel(_ImageModel):
    kind = "vqa"

    def __init__(self, encoder: Any, head: torch.nn.Module, meta: dict, device: torch.device) -> None:
        super().__init__(encoder, head, meta, device)
        self.vocab = Vocab.from_dict(meta["vocab"])
        self.answer_vocab = AnswerVocab.from_dict(meta["answers"])

    def encode_questions(self, questions: Sequence[str]) -> tuple[Tensor, Tensor]:
        """Questions -> ids (B, L) padded with 0 and lengths (B,); refuses empty or overlong text."""
        ids = []
        for q in questions:
            if not isinstance(q, str) or not q.strip():
                raise InputError("the question is empty: type a question about the image")
            if len(q) > MAX_QUESTION_CHARS:
                raise InputError(f"the question is {len(q)} characters long; the limit is {MAX_QUESTION_CHARS}")
            encoded = self.vocab.encode_question(q, max_len=self.meta["training"].get("max_question_len", 30))
            if not encoded:
                raise InputError(f"the question {q!r} has no words")
            ids.append(encoded)
        L = max(len(i) for i in ids)
        padded = torch.zeros(len(ids), L, dtype=torch.long)
        for row, i in enumerate(ids):
            padded[row, : len(i)] = torch.tensor(i)
        return padded.to(self.device), torch.tensor([len(i) for i in ids])

    @torch.inference_mode()
    def answer_features(self, features: Tensor, questions: Sequence[str]) -> tuple[Tensor, Tensor]:
        """features (B, P, D), B questions -> probabilities (B, N), attention (B, G, P)."""
        ids, lengths = self.encode_questions(questions)
        logits, attention = self.head(features.to(self.device), ids, lengths)
        return logits.float().softmax(dim=-1), attention

    def answer(self, images: ImageInput | Sequence[ImageInput], questions: str | Sequence[str],
               top_k: int = 5) -> list[AnswerResult]:
        """One question per image (or one image, several questions) -> one ``AnswerResult`` each."""
        questions = [questions] if isinstance(questions, str) else list(questions)
        images = as_image_list(images)
        if len(images) == 1 and len(questions) > 1:
            images = images * len(questions)
        if len(images) != len(questions):
            raise InputError(f"{len(images)} images but {len(questions)} questions")
        self.encode_questions(questions)  # refuse bad questions before the encoder runs
        features, sizes = self.encode(images)
        probs, attention = self.answer_features(features, questions)
        H, W = self.grid
        k = max(1, min(top_k, probs.shape[-1]))
        top_p, top_i = probs.topk(k, dim=-1)
        results = []
        for b, question in enumerate(questions):
            glimpses = attention[b].float().cpu().numpy().reshape(-1, H, W)  # (G, H, W)
            ranked = [(self.answer_vocab.answers[i], float(p)) for p, i in zip(top_p[b], top_i[b])]
            results.append(AnswerResult(question, ranked, glimpses.mean(axis=0), glimpses, sizes[b]))
        return results
