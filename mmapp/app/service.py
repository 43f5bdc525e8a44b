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
import os
from collections import defaultdict
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch
from PIL import Image
from torch import Tensor

from mmapp.app.batching import MicroBatcher
from mmapp.app.models_panel import model_card
from mmapp.errors import ImageError
from mmapp.inference import (CAPTION_LEN, MAX_TOP_K, TOP_K, AnswerResult, CaptionResult, Captioner, VQAModel, check_beam_size,
                             check_top_k, open_image)

log = logging.getLogger(__name__)

MAX_WORKERS = 4  # batch workers per model on a CPU: more only split the load into smaller batches


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

    def __init__(self, captioner: Captioner, vqa: VQAModel, max_batch_size: int = 8,
                 checkpoints: Mapping[str, str | Path] | None = None, model_threads: int = 1,
                 batch_threads: int | None = None, workers: int | None = None) -> None:
        self.captioner, self.vqa = captioner, vqa
        cores = os.cpu_count() or 1
        # one batch worker per core (at most MAX_WORKERS) on a CPU; one on a GPU, which runs a batch's
        # operations itself
        on_cpu = captioner.device.type == "cpu"
        self.workers = workers if workers is not None else (min(cores, MAX_WORKERS) if on_cpu else 1)
        self.model_threads = model_threads
        self.batch_threads = batch_threads or max(1, cores // self.workers)
        self.checkpoints = {k: Path(v) for k, v in (checkpoints or {}).items()}
        self.captions = MicroBatcher(self._caption_batch, max_batch_size, "caption-batcher", workers=self.workers)
        self.answers = MicroBatcher(self._answer_batch, max_batch_size, "answer-batcher", workers=self.workers)

    def caption(self, image: Image.Image, beam_size: Any, warnings: Sequence[str] = ()) -> CaptionResult:
        """One decoded image -> its caption, word attention (T, H, W), domain verdict; ``warnings``
        (the image's, from ``open_upload``) come first in the result's."""
        beam_size = check_beam_size(beam_size)
        result = self.captions.submit_after(lambda: (self.captioner.prepare(image), image.size, beam_size))
        return dataclasses.replace(result, warnings=[*warnings, *result.warnings])

    def answer(self, image: Image.Image, question: Any, warnings: Sequence[str] = (),
               top_k: Any = TOP_K) -> AnswerResult:
        """One decoded image and a question -> top answers, attention (H, W), domain verdict, warnings."""
        top_k = check_top_k(top_k)
        question, question_warnings = self.vqa.check_question(question)
        # a classifier's top answers do not depend on how many are kept; a generative head's beam does
        result = self.answers.submit_after(lambda: (self.vqa.prepare(image), image.size, question,
                                                    top_k if self.vqa.generate else MAX_TOP_K))
        return dataclasses.replace(result, answers=result.answers[:top_k],
                                   warnings=[*warnings, *question_warnings, *result.warnings])

    def close(self) -> None:
        self.captions.close()
        self.answers.close()

    def _threads(self, images: int = 1) -> None:
        """In a batcher's thread, before a model call: how many torch threads it runs on (OpenMP's count
        is per calling thread). On the 2-core machine, torch called from a thread other than the main
        one ran a one-image caption 2.5x slower on 2 intra-op threads than on 1 (its many small
        operations), while the encoder over a batch gained from 2 (docs/benchmarks.md, "The served
        app"): so ``model_threads`` for a single image and for the decoders, ``batch_threads`` for
        the encoder over several images. With a worker per core, each runs on one thread
        (``batch_threads = cores // workers``)."""
        wanted = self.batch_threads if images > 1 else self.model_threads
        if torch.get_num_threads() != wanted:
            torch.set_num_threads(wanted)

    # Items are (encoder input (3, S, S) from ``prepare``, the image's (width, height), then the beam
    # size, or the question and how many answers).
    def _caption_batch(self, items: Sequence[tuple[Tensor, tuple[int, int], int]]) -> list[CaptionResult]:
        self._threads(len(items))
        features = self.captioner.encode_prepared(torch.stack([pixels for pixels, _, _ in items]))  # (B, P, D)
        self._threads()
        sizes = [size for _, size, _ in items]
        rows_by_beam: dict[int, list[int]] = defaultdict(list)
        for row, (_, _, beam) in enumerate(items):
            rows_by_beam[beam].append(row)
        outputs: list[Any] = [None] * len(items)
        for beam, rows in rows_by_beam.items():
            results = self.captioner.caption_results(features[rows], [sizes[r] for r in rows], beam, CAPTION_LEN)
            for row, result in zip(rows, results):
                outputs[row] = result
        return outputs

    def _answer_batch(self, items: Sequence[tuple[Tensor, tuple[int, int], str, int]]) -> list[AnswerResult]:
        self._threads(len(items))
        features = self.vqa.encode_prepared(torch.stack([pixels for pixels, _, _, _ in items]))  # (B, P, D)
        self._threads()
        rows_by_k: dict[int, list[int]] = defaultdict(list)
        for row, (_, _, _, top_k) in enumerate(items):
            rows_by_k[top_k].append(row)
        outputs: list[Any] = [None] * len(items)
        for top_k, rows in rows_by_k.items():
            results = self.vqa.answer_results(features[rows], [items[r][2] for r in rows],
                                              [items[r][1] for r in rows], top_k)
            for row, result in zip(rows, results):
                outputs[row] = result
        return outputs


def describe_models(service: AppService) -> str:
    """Markdown for the Models panel: checkpoint, encoder, vocabulary, training data and test figures."""
    return "\n\n".join(model_card(kind, model.meta, service.checkpoints.get(kind), model.ood)
                       for kind, model in (("captioner", service.captioner), ("vqa", service.vqa)))
