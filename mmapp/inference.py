"""The inference API, and the only place that turns model outputs into results.

    >>> cap = Captioner.from_pretrained()            # the shipped checkpoint; or .from_checkpoint(path)
    >>> r = cap.caption("scene.png", beam_size=3)[0]
    >>> r.text, r.attention.shape, r.domain, r.warnings
    >>> vqa = VQAModel.from_pretrained(encoder=cap.encoder)
    >>> vqa.answer("scene.png", "what color is the circle?")[0].answers

Inputs may be one image or a list: file paths, bytes, PIL images or numpy arrays (see ``images.py``);
an RGB PIL image is used as it is, never decoded again. Results always come back as a list, one entry
per image (or per question), and carry the out-of-domain verdict and the warnings about the input
(unknown words ignored, words cut off, animated images). The app, the CLI, the HTTP API, the model
card and the evaluator all build their results here; the limits below are the ones they all apply.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from torch import Tensor

from PIL import Image

from mmapp.checkpoint import load_encoder, load_head
from mmapp.config import EncoderConfig, from_dict
from mmapp.distributed import resolve_device
from mmapp.errors import CheckpointError, InputError
from mmapp.images import ImageInput, load_image, preprocess
from mmapp.models.answer_decoder import write_answers
from mmapp.models.decoding import beam_search
from mmapp.ood import DomainCheck, OODStats
from mmapp.inputs import (CAPTION_LEN, EXAMPLE_QUESTION, MAX_BEAM_SIZE, MAX_CAPTION_LEN, MAX_QUESTION_CHARS,  # noqa: F401
                          MAX_TOP_K, TOP_K, check_beam_size, check_max_len, check_question, check_top_k, open_image)
from mmapp.vocab import AnswerVocab, Vocab

DEFAULT_CHECKPOINTS = {"captioner": "captioner.safetensors", "vqa": "vqa.safetensors"}
ANSWER_BEAM = 3  # a generative VQA head's beam: max(top_k, this), so the best answer is the same for top_k <= 3


def default_checkpoint(kind: str) -> Path:
    """The shipped checkpoint of ``kind``: in ``$MMAPP_CHECKPOINTS`` when set, else the repository's
    ``checkpoints/`` (a source checkout or an editable install), else the copy inside the installed
    package (``mmapp/checkpoints/``, put there by ``pip install .`` from the same folder)."""
    import os

    name = DEFAULT_CHECKPOINTS[kind]
    if os.environ.get("MMAPP_CHECKPOINTS"):
        return Path(os.environ["MMAPP_CHECKPOINTS"]) / name
    here = Path(__file__).resolve().parent
    for folder in (here.parent / "checkpoints", here / "checkpoints"):
        if (folder / name).is_file():
            return folder / name
    return here.parent / "checkpoints" / name


def as_image_list(images: ImageInput | Sequence[ImageInput]) -> list[ImageInput]:
    if isinstance(images, np.ndarray):
        return list(images) if images.ndim == 4 else [images]
    if isinstance(images, (list, tuple)):
        return list(images)
    return [images]


def _decoded(image: Any) -> bool:
    return isinstance(image, Image.Image) and image.mode == "RGB"


def rounded(values: np.ndarray, digits: int) -> list:
    """An array as nested lists of numbers rounded to ``digits`` decimals. Rounded in float64: a float32
    0.00112 is 0.001120000029914081 as a Python float and would go out as all 19 characters."""
    return np.round(np.asarray(values, dtype=np.float64), digits).tolist()


@dataclass
class _Result:
    """What every result carries besides its content: the domain verdict and the input's warnings."""

    def messages(self) -> list[str]:
        """Everything a person should be told about this result: warnings, then the OOD verdict."""
        ood = self.domain.message(self.model_kind) if self.domain is not None else None
        return [*self.warnings, *([ood] if ood else [])]

    def _common_json(self) -> dict[str, Any]:
        return {"image_size": list(self.image_size), "grid": list(self.attention.shape[-2:]),
                "out_of_domain": None if self.domain is None else self.domain.to_json(),
                "warnings": list(self.warnings)}


@dataclass
class CaptionResult(_Result):
    """One caption: its words, total log-probability and one (H, W) attention map per word."""

    text: str
    tokens: list[str]
    score: float
    attention: np.ndarray  # (T, H, W), T = len(tokens)
    image_size: tuple[int, int] = (0, 0)  # (width, height) of the input image
    beam_size: int = 0
    domain: DomainCheck | None = None  # None: the checkpoint has no out-of-domain statistics
    warnings: list[str] = field(default_factory=list)
    model_kind = "captioner"

    def to_json(self, digits: int = 5) -> dict[str, Any]:
        """The JSON the CLI (``--json``), the HTTP API and the Gradio API return; attention (T, H, W)."""
        return {"caption": self.text, "tokens": list(self.tokens), "score": self.score,
                "beam_size": self.beam_size, "attention": rounded(self.attention, digits),
                **self._common_json()}


@dataclass
class AnswerResult(_Result):
    """Top answers with probabilities and the question's attention map (mean over glimpses); from a
    generative head (``head`` "generate") also the best answer's words and one (H, W) map per word, and
    the answers are the beam's best with their sequence probabilities."""

    question: str
    answers: list[tuple[str, float]]
    attention: np.ndarray  # (H, W)
    glimpses: np.ndarray = field(default_factory=lambda: np.zeros((0, 0, 0)))  # (G, H, W)
    image_size: tuple[int, int] = (0, 0)
    domain: DomainCheck | None = None
    warnings: list[str] = field(default_factory=list)
    head: str = "classify"
    tokens: list[str] = field(default_factory=list)  # generate: the best answer's words
    word_attention: np.ndarray = field(default_factory=lambda: np.zeros((0, 0, 0)))  # (T, H, W), T = len(tokens)
    model_kind = "VQA model"

    def to_json(self, digits: int = 5) -> dict[str, Any]:
        """The JSON the CLI, the HTTP API and the Gradio API return; attention (H, W), glimpses (G, H, W),
        word_attention (T, H, W) (empty for a classifier)."""
        return {"question": self.question,
                "answers": [{"answer": a, "probability": p} for a, p in self.answers],
                "attention": rounded(self.attention, digits), "glimpses": rounded(self.glimpses, digits),
                "head": self.head, "tokens": list(self.tokens), "word_attention": rounded(self.word_attention, digits),
                **self._common_json()}


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

    @classmethod
    def from_pretrained(cls, device: str | torch.device = "auto", encoder: Any = None):
        """The shipped checkpoint (see ``default_checkpoint``), loaded with no path."""
        path = default_checkpoint(cls.kind)
        if not path.is_file():
            raise CheckpointError(f"no shipped {cls.kind} checkpoint at {path}: pass a checkpoint file, or set "
                                  f"MMAPP_CHECKPOINTS to the folder holding {path.name}")
        return cls.from_checkpoint(path, device, encoder)

    @property
    def encoder_cfg(self):
        return self.encoder.cfg

    def domain_checks(self, features: Tensor) -> list[DomainCheck | None]:
        """features (B, P, D) -> each image's out-of-domain verdict (None without statistics)."""
        if self.ood is None:
            return [None] * features.shape[0]
        return self.ood.checks(features)

    def read(self, images: ImageInput | Sequence[ImageInput]) -> tuple[list[Image.Image], list[list[str]]]:
        """Inputs -> RGB images, each decoded once, and each one's warnings."""
        opened = [(i, []) if _decoded(i) else open_image(i) for i in as_image_list(images)]
        return [image for image, _ in opened], [warnings for _, warnings in opened]

    def encode(self, images: ImageInput | Sequence[ImageInput]) -> tuple[Tensor, list[tuple[int, int]]]:
        """Images -> grid features (B, P, D) and each image's (width, height); RGB PIL images are used
        as they are, anything else is decoded first."""
        pil = [i if _decoded(i) else load_image(i) for i in as_image_list(images)]
        if not pil:
            raise InputError("no images given")
        return self.encode_prepared(torch.stack([self.prepare(p) for p in pil])), [p.size for p in pil]

    def prepare(self, image: Image.Image) -> Tensor:
        """One RGB image -> the encoder's input (3, S, S), resized and normalised. The app does this in
        each request's own thread, so that the batched model call only runs the encoder."""
        return preprocess(image, self.encoder.cfg)

    @torch.inference_mode()
    def encode_prepared(self, batch: Tensor) -> Tensor:
        """(B, 3, S, S) from ``prepare`` -> grid features (B, P, D)."""
        return self.encoder(batch.to(self.device))


def _same_encoder(encoder: Any, meta: dict) -> bool:
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
        return beam_search(self.head, features.to(self.device), beam_size, max_len,
                           self.vocab.start_id, self.vocab.end_id, self.vocab.pad_id, length_penalty)

    def caption(self, images: ImageInput | Sequence[ImageInput], beam_size: int = 3, max_len: int = CAPTION_LEN,
                length_penalty: float = 0.0) -> list[CaptionResult]:
        """Images -> one ``CaptionResult`` per image (attention maps (T, H, W), one per word)."""
        beam_size, max_len = check_beam_size(beam_size), check_max_len(max_len)
        pil, warnings = self.read(images)
        features, sizes = self.encode(pil)
        return self.caption_results(features, sizes, beam_size, max_len, length_penalty, warnings)

    def caption_results(self, features: Tensor, sizes: Sequence[tuple[int, int]] | None = None,
                        beam_size: int = 3, max_len: int = CAPTION_LEN, length_penalty: float = 0.0,
                        warnings: Sequence[list[str]] | None = None) -> list[CaptionResult]:
        """features (B, P, D) -> one ``CaptionResult`` per row; ``sizes`` and ``warnings`` per row."""
        decoded = self.caption_features(features, beam_size, max_len, length_penalty)
        checks = self.domain_checks(features)
        H, W = self.grid
        results = []
        for i, domain in enumerate(checks):
            words = self.vocab.decode(decoded.tokens[i].tolist())
            attention = decoded.attention[i, : len(words)].float().cpu().numpy().reshape(len(words), H, W)
            results.append(CaptionResult(" ".join(words), words, float(decoded.scores[i]), attention,
                                         tuple(sizes[i]) if sizes else (0, 0), beam_size, domain,
                                         list(warnings[i]) if warnings else []))
        return results


class VQAModel(_ImageModel):
    kind = "vqa"

    def __init__(self, encoder: Any, head: torch.nn.Module, meta: dict, device: torch.device) -> None:
        super().__init__(encoder, head, meta, device)
        self.vocab = Vocab.from_dict(meta["vocab"])
        self.generate = head.cfg.head == "generate"
        # a classifier's N answers, or a generative head's answer words
        self.answer_vocab = None if self.generate else AnswerVocab.from_dict(meta["answers"])
        self.answer_words = Vocab.from_dict(meta["answers"]) if self.generate else None

    @property
    def max_question_words(self) -> int:
        """How many words of a question the model reads (the length it was trained with)."""
        return int(self.meta["training"].get("max_question_len", 30))

    def check_question(self, question: Any) -> tuple[str, list[str]]:
        """``check_question`` against this model's vocabulary and question length."""
        return check_question(question, self.vocab, self.max_question_words)

    def encode_questions(self, questions: Sequence[str]) -> tuple[Tensor, Tensor]:
        """Questions -> ids (B, L) padded with 0 and lengths (B,). Unknown words read as ``<unk>``;
        callers with people's questions check them first with ``check_question``."""
        ids = []
        for q in questions:
            encoded = self.vocab.encode_question(q, max_len=self.max_question_words) if isinstance(q, str) else []
            if not encoded:
                check_question(q, self.vocab)  # raises the message for an empty or wordless question
            ids.append(encoded)
        L = max(len(i) for i in ids)
        padded = torch.zeros(len(ids), L, dtype=torch.long)  # (B, L)
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
               top_k: int = TOP_K) -> list[AnswerResult]:
        """One question per image (or one image, several questions) -> one ``AnswerResult`` each.
        Questions are checked (``check_question``) before the encoder runs."""
        top_k = check_top_k(top_k)
        questions = [questions] if isinstance(questions, str) else list(questions)
        images = as_image_list(images)
        if len(images) not in (1, len(questions)):
            raise InputError(f"{len(images)} images but {len(questions)} questions")
        checked = [self.check_question(q) for q in questions]  # refuse bad questions before the encoder runs
        pil, image_warnings = self.read(images)
        features, sizes = self.encode(pil)
        if len(pil) == 1 and len(questions) > 1:  # one image, encoded once, for every question
            features, sizes = features.expand(len(questions), -1, -1), sizes * len(questions)  # (B, P, D)
            image_warnings = image_warnings * len(questions)
        warnings = [iw + qw for iw, (_, qw) in zip(image_warnings, checked)]
        return self.answer_results(features, [q for q, _ in checked], sizes, top_k, warnings)

    def answer_results(self, features: Tensor, questions: Sequence[str],
                       sizes: Sequence[tuple[int, int]] | None = None, top_k: int = TOP_K,
                       warnings: Sequence[list[str]] | None = None) -> list[AnswerResult]:
        """features (B, P, D) and B questions -> one ``AnswerResult`` each (top ``top_k`` answers; from a
        generative head the best ``top_k`` of a beam of max(``top_k``, ``ANSWER_BEAM``))."""
        if self.generate:
            return self._generated_results(features, questions, sizes, top_k, warnings)
        probs, attention = self.answer_features(features, questions)  # (B, N), (B, G, P)
        checks = self.domain_checks(features)
        H, W = self.grid
        top_p, top_i = probs.topk(max(1, min(top_k, probs.shape[-1])), dim=-1)  # (B, k)
        results = []
        for b, question in enumerate(questions):
            glimpses = attention[b].float().cpu().numpy().reshape(-1, H, W)  # (G, H, W)
            ranked = [(self.answer_vocab.answers[i], p) for p, i in zip(top_p[b].tolist(), top_i[b].tolist())]
            results.append(AnswerResult(question, ranked, glimpses.mean(axis=0), glimpses,
                                        tuple(sizes[b]) if sizes else (0, 0), checks[b],
                                        list(warnings[b]) if warnings else []))
        return results

    @torch.inference_mode()
    def _generated_results(self, features: Tensor, questions: Sequence[str], sizes: Sequence[tuple[int, int]] | None,
                           top_k: int, warnings: Sequence[list[str]] | None) -> list[AnswerResult]:
        ids, lengths = self.encode_questions(questions)
        k = max(1, top_k)
        beams, attention = write_answers(self.head, features.to(self.device), ids, lengths, max(k, ANSWER_BEAM),
                                         k)  # k x Decoded, (B, G, P)
        checks, (H, W) = self.domain_checks(features), self.grid
        results = []
        for b, question in enumerate(questions):
            words = [self.answer_words.decode(d.tokens[b].tolist()) for d in beams]
            ranked = [(" ".join(w), float(np.exp(float(d.scores[b])))) for w, d in zip(words, beams)]
            maps = beams[0].attention[b, : len(words[0])].float().cpu().numpy().reshape(len(words[0]), H, W)
            glimpses = attention[b].float().cpu().numpy().reshape(-1, H, W)  # (G, H, W)
            results.append(AnswerResult(question, ranked, glimpses.mean(axis=0), glimpses,
                                        tuple(sizes[b]) if sizes else (0, 0), checks[b],
                                        list(warnings[b]) if warnings else [], "generate", words[0], maps))
        return results
