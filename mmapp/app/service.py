"""What the app asks of the models: reading uploads, batched model calls and the Models panel.

Nothing here knows about Gradio or HTTP: the Gradio handlers (``ui.py``) and the HTTP routes
(``mmapp/http_api.py``) turn the ``MMAppError``s raised here into their own one-line errors. The
checks, the limits and the results are ``mmapp.inference``'s, the same the CLI uses. Each request is
checked on its own (so a bad upload fails only its own request) and the valid ones are batched across
concurrent requests.
"""

from __future__ import annotations

import base64
import dataclasses
import logging
from collections import defaultdict
from pathlib import Path
from typing import Any, Mapping, Sequence

from PIL import Image

from mmapp.app.batching import MicroBatcher
from mmapp.app.models_panel import model_card
from mmapp.errors import ImageError
from mmapp.inference import (CAPTION_LEN, MAX_TOP_K, TOP_K, AnswerResult, CaptionResult, Captioner, VQAModel, check_beam_size,
                             check_top_k, open_image)

log = logging.getLogger(__name__)


def open_upload(upload: Any, allowed_roots: Sequence[str | Path] | None = None) -> tuple[Image.Image, list[str]]:
    """A Gradio image payload (``{"path", "orig_name", ...}``, a path or a data URL) -> (RGB image, warnings).

    The file is decoded once. With ``allowed_roots`` a path must lie inside one of those folders (the
    server's upload folder): a client naming some other file on the server is refused.
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
        return open_image(data, "the pasted image")
    if not path:
        raise ImageError("no image given: the upload carried no file")
    shown = name or Path(path).name
    if allowed_roots is not None and not any(_inside(path, root) for root in allowed_roots):
        raise ImageError(f"{shown} was not uploaded to this app: send the file itself "
                         "(with gradio_client: handle_file(path))")
    try:
        return open_image(path, shown)
    except ImageError as e:
        raise ImageError(str(e).replace(str(path), shown)) from None


def _inside(path: str | Path, root: str | Path) -> bool:
    return Path(path).resolve().is_relative_to(Path(root).resolve())


class AppService:
    """The captioner and the VQA model behind two ``MicroBatcher``s, plus what the app shows about them."""

    def __init__(self, captioner: Captioner, vqa: VQAModel, max_batch_size: int = 16,
                 checkpoints: Mapping[str, str | Path] | None = None) -> None:
        self.captioner, self.vqa = captioner, vqa
        self.checkpoints = {k: Path(v) for k, v in (checkpoints or {}).items()}
        self.captions = MicroBatcher(self._caption_batch, max_batch_size, "caption-batcher")
        self.answers = MicroBatcher(self._answer_batch, max_batch_size, "answer-batcher")

    def caption(self, image: Image.Image, beam_size: Any, warnings: Sequence[str] = ()) -> CaptionResult:
        """One decoded image -> its caption, word attention (T, H, W), domain verdict; ``warnings``
        (the image's, from ``open_upload``) come first in the result's."""
        result = self.captions.submit((image, check_beam_size(beam_size)))
        return dataclasses.replace(result, warnings=[*warnings, *result.warnings])

    def answer(self, image: Image.Image, question: Any, warnings: Sequence[str] = (),
               top_k: Any = TOP_K) -> AnswerResult:
        """One decoded image and a question -> top answers, attention (H, W), domain verdict, warnings."""
        top_k = check_top_k(top_k)
        question, question_warnings = self.vqa.check_question(question)
        # a classifier's top answers do not depend on how many are kept; a generative head's beam does
        result = self.answers.submit((image, question, top_k if self.vqa.generate else MAX_TOP_K))
        return dataclasses.replace(result, answers=result.answers[:top_k],
                                   warnings=[*warnings, *question_warnings, *result.warnings])

    def close(self) -> None:
        self.captions.close()
        self.answers.close()

    def _caption_batch(self, items: Sequence[tuple[Image.Image, int]]) -> list[CaptionResult]:
        features, sizes = self.captioner.encode([image for image, _ in items])  # (B, P, D)
        rows_by_beam: dict[int, list[int]] = defaultdict(list)
        for row, (_, beam) in enumerate(items):
            rows_by_beam[beam].append(row)
        outputs: list[Any] = [None] * len(items)
        for beam, rows in rows_by_beam.items():
            results = self.captioner.caption_results(features[rows], [sizes[r] for r in rows], beam, CAPTION_LEN)
            for row, result in zip(rows, results):
                outputs[row] = result
        return outputs

    def _answer_batch(self, items: Sequence[tuple[Image.Image, str, int]]) -> list[AnswerResult]:
        features, sizes = self.vqa.encode([image for image, _, _ in items])  # (B, P, D)
        rows_by_k: dict[int, list[int]] = defaultdict(list)
        for row, (_, _, top_k) in enumerate(items):
            rows_by_k[top_k].append(row)
        outputs: list[Any] = [None] * len(items)
        for top_k, rows in rows_by_k.items():
            results = self.vqa.answer_results(features[rows], [items[r][1] for r in rows], [sizes[r] for r in rows],
                                              top_k)
            for row, result in zip(rows, results):
                outputs[row] = result
        return outputs


def describe_models(service: AppService) -> str:
    """Markdown for the Models panel: checkpoint, encoder, vocabulary, training data and test figures."""
    return "\n\n".join(model_card(kind, model.meta, service.checkpoints.get(kind), model.ood)
                       for kind, model in (("captioner", service.captioner), ("vqa", service.vqa)))
