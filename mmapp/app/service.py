"""What the app asks of the models: input checks, batched model calls and the out-of-domain hook.

Nothing here knows about Gradio: handlers in ``ui.py`` turn the ``MMAppError``s raised here into
``gr.Error`` messages and the results into components. Each request is checked on its own (so a bad
upload fails only its own request) and the valid ones are batched across concurrent requests.
"""

from __future__ import annotations

import base64
import logging
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
from PIL import Image
from torch import Tensor

from mmapp.app.batching import MicroBatcher
from mmapp.app.models_panel import model_card
from mmapp.errors import ImageError, InputError
from mmapp.images import load_image
from mmapp.inference import MAX_QUESTION_CHARS, AnswerResult, CaptionResult, Captioner, VQAModel
from mmapp.ood import OODStats
from mmapp.vocab import tokenize

log = logging.getLogger(__name__)

MAX_BEAM_SIZE = 10
CAPTION_MAX_LEN = 20
TOP_K = 5
OWN_DATA_SECTION = 'the README section "Train on your own data"'


# ----------------------------------------------------------------------------------------------
# Input checks: one clear ``ImageError`` / ``InputError`` per problem.


def open_upload(upload: Any, allowed_roots: Sequence[str | Path] | None = None) -> tuple[Image.Image, list[str]]:
    """A Gradio image payload (``{"path", "orig_name", ...}``, a path or a data URL) -> (RGB image, warnings).

    With ``allowed_roots`` a path must lie inside one of those folders (the server's upload folder):
    a client naming some other file on the server is refused.
    """
    if upload is None or upload == "" or upload == {}:
        raise ImageError("no image given: upload one, drop one, paste one, use the webcam or click an example")
    if isinstance(upload, Mapping):
        path, name, url = upload.get("path"), upload.get("orig_name"), upload.get("url") or ""
    else:
        path, name, url = str(upload), None, ""
    if not path and url.startswith("data:"):
        try:
            data = base64.b64decode(url.split(",", 1)[1], validate=False)
        except (IndexError, ValueError):
            raise ImageError("the pasted image data cannot be decoded") from None
        return load_image(data), []
    if not path:
        raise ImageError("no image given: the upload carried no file")
    shown = name or Path(path).name
    if allowed_roots is not None and not any(_inside(path, root) for root in allowed_roots):
        raise ImageError(f"{shown} was not uploaded to this app: send the file itself "
                         "(with gradio_client: handle_file(path))")
    try:
        image = load_image(path)
    except ImageError as e:
        raise ImageError(str(e).replace(str(path), shown)) from None
    warnings = []
    try:
        with Image.open(path) as raw:
            if getattr(raw, "n_frames", 1) > 1:
                warnings.append(f"{shown} is animated: only its first frame is used")
    except (OSError, ValueError):
        pass
    return image, warnings


def _inside(path: str | Path, root: str | Path) -> bool:
    return Path(path).resolve().is_relative_to(Path(root).resolve())


def check_beam_size(value: Any) -> int:
    """An integer beam size in 1..MAX_BEAM_SIZE, or ``InputError``."""
    try:
        beam = float(value)
    except (TypeError, ValueError):
        beam = float("nan")
    if isinstance(value, bool) or not beam.is_integer() or not 1 <= beam <= MAX_BEAM_SIZE:
        raise InputError(f"beam size must be a whole number from 1 to {MAX_BEAM_SIZE}, got {value!r}")
    return int(beam)


def check_question(question: Any, vocab: Any) -> tuple[str, list[str]]:
    """(the question, stripped; warnings) or ``InputError`` when the model cannot read a word of it."""
    if not isinstance(question, str) or not question.strip():
        raise InputError("the question is empty: type a question about the image, e.g. \"what color is the circle?\"")
    if len(question) > MAX_QUESTION_CHARS:
        raise InputError(f"the question is {len(question):,} characters long; the limit is {MAX_QUESTION_CHARS}")
    question = question.strip()
    words = tokenize(question)
    if not words:
        raise InputError("the question has no words: type a question about the image")
    unknown = [w for w in words if w not in vocab]
    if len(unknown) == len(words):
        raise InputError("none of the question's words are known to the model: ask in English about the "
                         "image, e.g. \"what color is the circle?\"")
    if unknown:
        listed = ", ".join(repr(w) for w in dict.fromkeys(unknown))
        return question, [f"words the model does not know were ignored: {listed}"]
    return question, []


# ----------------------------------------------------------------------------------------------
# Out-of-domain hook.


@dataclass(frozen=True)
class DomainCheck:
    score: float
    threshold: float

    @property
    def out_of_domain(self) -> bool:
        return self.score > self.threshold


def check_domain(features: Tensor, stats: OODStats | None) -> DomainCheck | None:
    """features (P, D) of one image -> its score against the checkpoint's OOD statistics (``model.ood``,
    see ``mmapp/ood.py``: mean squared z-score of the pooled features); None without statistics."""
    if stats is None or features.shape[-1] != stats.mean.numel():
        return None
    return DomainCheck(float(stats.score(features[None])[0]), float(stats.threshold))


def ood_message(check: DomainCheck | None, kind: str) -> str | None:
    """The warning shown for an out-of-domain image, or None."""
    if check is None or not check.out_of_domain:
        return None
    return (f"This image looks unlike the images the {kind} was trained on (out-of-domain score "
            f"{check.score:.2f}, threshold {check.threshold:.2f}), so expect wrong answers. To use the app on "
            f"pictures like this one, train the models on your own data: see {OWN_DATA_SECTION}.")


# ----------------------------------------------------------------------------------------------
# Batched model calls.


@dataclass
class CaptionOutput:
    result: CaptionResult
    beam_size: int
    domain: DomainCheck | None = None
    warnings: list[str] = field(default_factory=list)


@dataclass
class AnswerOutput:
    result: AnswerResult
    domain: DomainCheck | None = None
    warnings: list[str] = field(default_factory=list)


class AppService:
    """The captioner and the VQA model behind two ``MicroBatcher``s, plus what the app shows about them."""

    def __init__(self, captioner: Captioner, vqa: VQAModel, max_batch_size: int = 16,
                 checkpoints: Mapping[str, str | Path] | None = None) -> None:
        self.captioner, self.vqa = captioner, vqa
        self.checkpoints = {k: Path(v) for k, v in (checkpoints or {}).items()}
        self.ood = {"captioner": captioner.ood, "vqa": vqa.ood}
        self.captions = MicroBatcher(self._caption_batch, max_batch_size, "caption-batcher")
        self.answers = MicroBatcher(self._answer_batch, max_batch_size, "answer-batcher")

    def caption(self, image: Image.Image, beam_size: int) -> CaptionOutput:
        """One checked image -> its caption, word attention (T, H, W) and domain check."""
        return self.captions.submit((image, beam_size))

    def answer(self, image: Image.Image, question: str) -> AnswerOutput:
        """One checked image and question -> top answers, attention (H, W) and domain check."""
        question, warnings = check_question(question, self.vqa.vocab)
        out = self.answers.submit((image, question))
        return AnswerOutput(out.result, out.domain, warnings)

    def close(self) -> None:
        self.captions.close()
        self.answers.close()

    def _caption_batch(self, items: Sequence[tuple[Image.Image, int]]) -> list[CaptionOutput]:
        features, sizes = self.captioner.encode([image for image, _ in items])  # (B, P, D)
        rows_by_beam: dict[int, list[int]] = defaultdict(list)
        for row, (_, beam) in enumerate(items):
            rows_by_beam[beam].append(row)
        H, W = self.captioner.grid
        outputs: list[Any] = [None] * len(items)
        for beam, rows in rows_by_beam.items():
            decoded = self.captioner.caption_features(features[rows], beam, CAPTION_MAX_LEN)
            for j, row in enumerate(rows):
                words = self.captioner.vocab.decode(decoded.tokens[j].tolist())
                attention = decoded.attention[j, : len(words)].float().cpu().numpy()  # (T, P)
                result = CaptionResult(" ".join(words), words, float(decoded.scores[j]),
                                       attention.reshape(len(words), H, W), sizes[row])
                outputs[row] = CaptionOutput(result, beam, check_domain(features[row], self.ood["captioner"]))
        return outputs

    def _answer_batch(self, items: Sequence[tuple[Image.Image, str]]) -> list[AnswerOutput]:
        questions = [question for _, question in items]
        features, sizes = self.vqa.encode([image for image, _ in items])  # (B, P, D)
        probs, attention = self.vqa.answer_features(features, questions)  # (B, N), (B, G, P)
        H, W = self.vqa.grid
        top_p, top_i = probs.topk(min(TOP_K, probs.shape[-1]), dim=-1)  # (B, k)
        outputs = []
        for b, question in enumerate(questions):
            glimpses = attention[b].float().cpu().numpy().reshape(-1, H, W)  # (G, H, W)
            ranked = [(self.vqa.answer_vocab.answers[i], p) for p, i in zip(top_p[b].tolist(), top_i[b].tolist())]
            result = AnswerResult(question, ranked, glimpses.mean(axis=0), glimpses, sizes[b])
            outputs.append(AnswerOutput(result, check_domain(features[b], self.ood["vqa"])))
        return outputs


def as_json(output: CaptionOutput | AnswerOutput, digits: int = 5) -> dict[str, Any]:
    """The API's JSON for one result: attention maps as nested lists (T, H, W) or (H, W)."""
    r = output.result
    domain = output.domain
    common = {
        "image_size": list(r.image_size),
        "grid": list(r.attention.shape[-2:]),
        "out_of_domain": None if domain is None else {
            "score": domain.score, "threshold": domain.threshold, "flagged": domain.out_of_domain},
        "warnings": list(output.warnings),
    }
    if isinstance(output, CaptionOutput):
        return {"caption": r.text, "tokens": list(r.tokens), "score": r.score, "beam_size": output.beam_size,
                "attention": np.round(r.attention, digits).tolist(), **common}
    return {"question": r.question, "answers": [{"answer": a, "probability": p} for a, p in r.answers],
            "attention": np.round(r.attention, digits).tolist(),
            "glimpses": np.round(r.glimpses, digits).tolist(), **common}


def describe_models(service: AppService) -> str:
    """Markdown for the Models panel: checkpoint, encoder, vocabulary, training data and test figures."""
    return "\n\n".join(model_card(kind, model.meta, service.checkpoints.get(kind), service.ood[kind])
                       for kind, model in (("captioner", service.captioner), ("vqa", service.vqa)))

