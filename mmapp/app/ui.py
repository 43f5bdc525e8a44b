"""The Gradio app: ``build_demo(captioner, vqa) -> gr.Blocks`` and ``launch_demo(demo, ...)``.

Layout: an image (upload, drop, paste, webcam or an example) and a beam-size slider; the caption
with one smooth attention overlay per word; a question box with the top-5 answers and the question's
attention overlay (and, from a generative VQA head, one overlay per answer word); an out-of-domain warning; a "Models" panel. Two named API endpoints, ``/caption``
and ``/answer``, return JSON (caption, tokens, score, attention maps; answers with probabilities,
attention map); ``launch_demo`` also serves the HTTP API (``mmapp/http_api.py``: ``POST /v1/caption`` and
``/v1/answer``, OpenAPI page at ``/docs``). Every handler turns bad input into a one-line ``gr.Error``,
never a traceback.
"""

from __future__ import annotations

import functools
import logging
import os
import re
from pathlib import Path
from typing import Any, Callable, Sequence

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # no network at start-up; before gradio is imported

import gradio as gr  # noqa: E402

from mmapp.app import examples as ex  # noqa: E402
from mmapp.app.overlay import fit_for_display, heatmap_overlay, word_overlays  # noqa: E402
from mmapp.app.service import AppService, describe_models, open_upload  # noqa: E402
from mmapp import __version__, http_api  # noqa: E402
from mmapp.errors import MMAppError  # noqa: E402
from mmapp.inference import MAX_BEAM_SIZE, MAX_QUESTION_CHARS, TOP_K, Captioner, VQAModel  # noqa: E402

log = logging.getLogger(__name__)

MAX_UPLOAD = "20mb"
# How often Gradio's queue looks for new UI events while it has none, and for progress to send. Gradio's
# own are 1 ms and 10 ms: about 1,100 wake-ups a second of the server's event loop, idle or not, each
# waiting for the GIL beside the batch workers (docs/benchmarks.md, "The Gradio queue's polling").
QUEUE_POLL_S = 0.01
PROGRESS_POLL_S = 0.1
CSS = """
#ood-warning {border: 1px solid #d97706; background: #fffbeb; border-radius: 8px; padding: 4px 14px;}
#ood-warning * {color: #78350f !important; border: none !important; background: none !important;}
"""
INTRO = """# mmapp: caption an image, then ask about it
Give an image (upload, drop, paste, webcam or an example). The **captioner** (Show, Attend and Tell) writes
a caption, and each word's map shows where it looked. The **VQA model** answers questions with its top 5
answers and the region it attended to."""


def _user_errors(handler: Callable) -> Callable:
    """Bad input -> its own one-line ``gr.Error``; anything unexpected -> logged, and a short apology."""

    @functools.wraps(handler)
    def wrapper(*args: Any) -> Any:
        try:
            return handler(*args)
        except gr.Error:
            raise
        except MMAppError as e:
            raise gr.Error(str(e), title="Cannot do that", print_exception=False) from None
        except Exception:  # noqa: BLE001 - a traceback must never reach the page
            log.exception("unexpected error in %s", handler.__name__)
            raise gr.Error("something went wrong on the server (it has been logged); please try again",
                           print_exception=False) from None

    return wrapper


def _escape(text: str) -> str:
    """Model output shown as Markdown, literally."""
    return re.sub(r"([\\`*_{}\[\]()#+\-.!|<>~])", r"\\\1", text)


def _warn(messages: Sequence[str]) -> None:
    for message in messages:
        gr.Warning(message)


def _ood_update(result: Any) -> Any:
    message = result.domain.message(result.model_kind) if result is not None and result.domain else None
    if message is None:
        return gr.update(value="", visible=False)
    return gr.update(value=f"**⚠ Out of domain.** {message[0].upper()}{message[1:]}.", visible=True)


class Handlers:
    """Event handlers: UI ones return component values, API ones return JSON."""

    def __init__(self, service: AppService) -> None:
        from gradio.utils import get_upload_folder

        self.service = service
        self.upload_roots = [get_upload_folder()]  # uploads, webcam shots and examples all land here

    def caption(self, image: Any, beam_size: Any) -> tuple:
        """UI: caption markdown, [(overlay, "i: word")], OOD warning."""
        picture, warnings = open_upload(image, self.upload_roots)
        r = self.service.caption(picture, beam_size, warnings)
        _warn(r.warnings)
        if r.tokens:
            text = (f"### {_escape(r.text)}\nlog-probability {r.score:.2f} · beam {r.beam_size} · "
                    f"{len(r.tokens)} words. Click a word's map below to enlarge it.")
        else:
            text = "*The model produced an empty caption for this image.*"
        return text, word_overlays(picture, r.tokens, r.attention), _ood_update(r)

    def recaption(self, image: Any, beam_size: Any) -> tuple:
        """UI, when the beam size changes: caption again, or leave things be while there is no image."""
        if image is None:
            return gr.skip(), gr.skip(), gr.skip()
        return self.caption(image, beam_size)

    def caption_new_image(self, image: Any, beam_size: Any) -> tuple:
        """UI, when the image changes: caption it (or clear everything when it was removed)."""
        if image is None:
            return "", None, _ood_update(None), None, None, None
        return (*self.caption(image, beam_size), None, None, None)

    def answer(self, image: Any, question: Any) -> tuple:
        """UI: {answer: probability} (top 5), attention overlay, [(overlay, "i: word")] per generated
        answer word (empty from a classifier), OOD warning (shown, never hidden here)."""
        picture, warnings = open_upload(image, self.upload_roots)
        r = self.service.answer(picture, question, warnings)
        _warn(r.warnings)
        overlay = heatmap_overlay(fit_for_display(picture), r.attention)
        flagged = r.domain is not None and r.domain.out_of_domain
        return ({a: p for a, p in r.answers}, overlay, answer_word_overlays(picture, r),
                _ood_update(r) if flagged else gr.skip())

    def caption_api(self, image: Any, beam_size: Any = 3) -> dict:
        """Caption an image: caption text, tokens, log-prob score and attention (T, H, W) as JSON."""
        picture, warnings = open_upload(image, self.upload_roots)
        return self.service.caption(picture, beam_size, warnings).to_json()

    def answer_api(self, image: Any, question: Any) -> dict:
        """Answer a question: top-5 answers with probabilities and the attention map (H, W) as JSON."""
        picture, warnings = open_upload(image, self.upload_roots)
        return self.service.answer(picture, question, warnings).to_json()


def answer_word_overlays(picture: Any, result: Any) -> list[tuple[Any, str]]:
    """One (overlay, "i: word") per word of a generated answer (``AnswerResult.word_attention``)."""
    return word_overlays(picture, result.tokens, result.word_attention) if result.tokens else []


def build_demo(captioner: Captioner, vqa: VQAModel, *, max_batch_size: int = 8,
               checkpoints: dict[str, str | Path] | None = None, workers: int | None = None) -> gr.Blocks:
    """The app around two loaded models; ``checkpoints`` (kind -> path) are named in the Models panel;
    ``workers``: batches run at once per model (``AppService``'s default when None)."""
    return build_service_demo(AppService(captioner, vqa, max_batch_size, checkpoints, workers=workers))


def build_service_demo(service: AppService) -> gr.Blocks:
    """The app around an ``AppService`` (tests pass their own to watch its batches)."""
    h = Handlers(service)
    # enough concurrent handlers to fill a batch for each worker
    limit = max(4, service.captions.max_batch_size * service.workers)
    ui = dict(api_visibility="private", preprocess=False, concurrency_limit=limit)
    api = dict(api_visibility="public", preprocess=False, concurrency_limit=limit)
    # Uploads older than two hours are deleted every hour (examples are kept).
    with gr.Blocks(title="mmapp: captions and answers with attention", analytics_enabled=False,
                   delete_cache=(3600, 7200)) as demo:
        gr.Markdown(INTRO)
        ood_box = gr.Markdown(visible=False, elem_id="ood-warning")
        with gr.Row(equal_height=False):
            with gr.Column(scale=1):
                image = gr.Image(type="filepath", sources=["upload", "webcam", "clipboard"], label="Image",
                                 height=360, elem_id="image-input")
                beam = gr.Slider(1, MAX_BEAM_SIZE, value=3, step=1, label="Beam size", info="1 = greedy decoding")
                caption_btn = gr.Button("Caption", variant="primary", elem_id="caption-button")
                _example_blocks(image)
            with gr.Column(scale=1):
                caption_md = gr.Markdown(elem_id="caption-text")
                gallery = gr.Gallery(label="Where the model looked, word by word", columns=4, height="auto",
                                     object_fit="contain", elem_id="word-maps", format="png")
        with gr.Row(equal_height=False):
            with gr.Column(scale=1):
                question = gr.Textbox(label="Question", placeholder="what is this?", lines=1,
                                      max_length=MAX_QUESTION_CHARS, elem_id="question")
                ask_btn = gr.Button("Ask", variant="primary", elem_id="ask-button")
                question_examples = gr.Examples([[q] for q in ex.QUESTIONS], inputs=[question],
                                                label="Example questions", api_visibility="private")
            with gr.Column(scale=1):
                answers = gr.Label(num_top_classes=TOP_K, label="Top answers", elem_id="answers")
                answer_map = gr.Image(label="Where the model looked to answer", type="pil", interactive=False,
                                      elem_id="answer-map", height=360)
                answer_words = gr.Gallery(label="Where the answer looked, word by word", columns=4,
                                          height="auto", object_fit="contain", elem_id="answer-word-maps",
                                          format="png", visible=service.vqa.generate)
        with gr.Accordion("Models", open=False, elem_id="models-panel"):
            gr.Markdown(describe_models(service))

        caption_out = [caption_md, gallery, ood_box]
        answer_out = [answers, answer_map, answer_words, ood_box]
        caption_btn.click(_user_errors(h.caption), [image, beam], caption_out, api_name="ui_caption",
                          concurrency_id="caption", **ui)
        beam.release(_user_errors(h.recaption), [image, beam], caption_out, api_name="ui_recaption",
                     concurrency_id="caption", **ui)
        image.change(_user_errors(h.caption_new_image), [image, beam], caption_out + [answers, answer_map, answer_words],
                     api_name="ui_caption_new_image", concurrency_id="caption", **ui)
        gr.on([ask_btn.click, question.submit], _user_errors(h.answer), [image, question], answer_out,
              api_name="ui_answer", concurrency_id="answer", **ui)
        question_examples.load_input_event.then(_user_errors(h.answer), [image, question], answer_out,
                                                api_name="ui_answer_example", concurrency_id="answer", **ui)

        # API-only endpoints: same inputs, JSON out, triggered by clients (the buttons are never shown).
        api_json = gr.JSON(visible=False, label="result")
        gr.Button(visible=False).click(_user_errors(h.caption_api), [image, beam], api_json, api_name="caption",
                                       concurrency_id="caption", **api)
        gr.Button(visible=False).click(_user_errors(h.answer_api), [image, question], api_json, api_name="answer",
                                       concurrency_id="answer", **api)
    demo.queue(default_concurrency_limit=limit, max_size=512)
    _poll_queue_less(demo)
    demo.http_routes = http_api.routes(service).routes  # served beside the UI by launch_demo
    return demo


def _poll_queue_less(demo: gr.Blocks) -> None:
    """Let Gradio's queue poll every ``QUEUE_POLL_S`` rather than every 1 ms: a UI event then waits at
    most 10 ms more to start, and the HTTP API's routes, which do not go through the queue, not at all.
    Gradio (6.x) has no public setting for this; without these attributes the queue is left as it is."""
    queue = getattr(demo, "_queue", None)
    for name, seconds in (("sleep_when_free", QUEUE_POLL_S), ("progress_update_sleep_when_free", PROGRESS_POLL_S)):
        if hasattr(queue, name):
            setattr(queue, name, max(getattr(queue, name), seconds))
        else:
            log.debug("gradio's queue has no %s: its polling is left as it is", name)


def _example_blocks(image: gr.Image) -> None:
    objects = ex.scene_examples(ex.OBJECTS_SAMPLE)
    if objects:
        gr.Examples([[str(p)] for p in objects], inputs=[image], label="Object scenes (new pictures of known things)",
                    examples_per_page=8, api_visibility="private")
    scenes = ex.scene_examples()
    if scenes:
        gr.Examples([[str(p)] for p in scenes], inputs=[image], label="Shape scenes (what the models were trained on)",
                    examples_per_page=8, api_visibility="private")
    photos = ex.photo_examples()
    if photos:
        gr.Examples([[str(p)] for p in photos], inputs=[image], label="Real photos (shipped in packages)",
                    api_visibility="private")


def launch_demo(demo: gr.Blocks, host: str = "127.0.0.1", port: int = 7860, share: bool = False,
                prevent_thread_lock: bool = False, quiet: bool = False) -> tuple:
    """Serve ``demo`` with the app's limits (20 MB uploads), theme and styles, and the HTTP API
    (``mmapp/http_api.py``: ``/v1/caption``, ``/v1/answer``, OpenAPI at ``/docs``); returns (app, url, share_url)."""
    theme = gr.themes.Soft(primary_hue="indigo", font=["ui-sans-serif", "system-ui", "sans-serif"],
                           font_mono=["ui-monospace", "monospace"])
    return demo.launch(server_name=host, server_port=port, share=share, prevent_thread_lock=prevent_thread_lock,
                       quiet=quiet, max_file_size=MAX_UPLOAD, allowed_paths=[str(ex.cache_dir())],
                       show_error=False, theme=theme, css=CSS,
                       app_kwargs={"routes": list(getattr(demo, "http_routes", [])), "docs_url": "/docs",
                                   "title": "mmapp", "version": __version__})
