"""The HTTP API served beside the Gradio UI: ``POST /v1/caption`` and ``POST /v1/answer``.

No Gradio client is needed: send the image as a multipart upload (field ``image``) or as JSON with
the image base64-encoded (``{"image": "<base64 or data: URL>", ...}``). The reply is the JSON of
``mmapp caption --json`` / ``mmapp ask --json`` (``CaptionResult.to_json`` / ``AnswerResult.to_json``
plus ``image``, the uploaded file's name). The limits and the messages are ``mmapp.inference``'s;
requests go through the app's ``MicroBatcher``s, so concurrent HTTP and Gradio requests are batched
together. Bad input gets a 4xx status and ``{"error": "<one line>"}``. The routes appear in the
server's OpenAPI schema (``/openapi.json``, browsable at ``/docs``).

    curl -F image=@scene.png -F beam_size=3 http://127.0.0.1:7860/v1/caption
    curl -F image=@scene.png -F "question=what color is the circle?" http://127.0.0.1:7860/v1/answer
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
from typing import Any, Callable

import orjson
from fastapi import APIRouter, Request
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool

from mmapp.app.service import AppService
from mmapp.errors import ImageError, InputError, MMAppError
from mmapp.inference import MAX_BEAM_SIZE, MAX_QUESTION_CHARS, MAX_TOP_K, TOP_K, open_image

log = logging.getLogger(__name__)

MAX_UPLOAD_BYTES = 20 * 1024 * 1024  # as the Gradio UI's uploads
PREFIX = "/v1"


class JSONReply(Response):
    """A JSON reply encoded by orjson: the same values as ``json.dumps`` (floats in their shortest
    round-trip form) in a tenth of the time, 0.04 against 0.42 ms a caption reply (docs/benchmarks.md,
    "The HTTP path in C")."""

    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content)


class RequestError(MMAppError):
    """A request the API cannot take (status ``status``): too large, wrong content type, bad JSON."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


def _body_schema(fields: dict[str, dict], required: list[str]) -> dict:
    """The OpenAPI request body: the same fields as multipart form data or as JSON (image in base64)."""
    form = {"type": "object", "required": required,
            "properties": {**fields, "image": {"type": "string", "format": "binary", "description": "the image file"}}}
    as_json = {"type": "object", "required": required,
               "properties": {**fields, "image": {"type": "string", "format": "byte",
                                                  "description": "the image file, base64 (a data: URL is fine)"}}}
    return {"requestBody": {"required": True, "content": {"multipart/form-data": {"schema": form},
                                                          "application/json": {"schema": as_json}}}}


CAPTION_FIELDS = {"beam_size": {"type": "integer", "minimum": 1, "maximum": MAX_BEAM_SIZE, "default": 3}}
ANSWER_FIELDS = {"question": {"type": "string", "maxLength": MAX_QUESTION_CHARS,
                              "example": "what color is the circle?"},
                 "top_k": {"type": "integer", "minimum": 1, "maximum": MAX_TOP_K, "default": TOP_K}}
ERRORS = {400: {"description": "bad input: {\"error\": \"<one line>\"}"},
          413: {"description": "the image is over 20 MB"},
          415: {"description": "neither multipart/form-data nor application/json"}}


async def _read_request(request: Request) -> tuple[bytes, str | None, dict[str, Any]]:
    """(image bytes, file name or None, the other fields) from a multipart or JSON body."""
    length = request.headers.get("content-length")
    if length is not None and length.isdigit() and int(length) > MAX_UPLOAD_BYTES + 65536:
        raise RequestError(f"the request is {int(length):,} bytes; images may be at most 20 MB", 413)
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind == "multipart/form-data":
        form = await request.form(max_files=1, max_fields=10)
        fields = {k: v for k, v in form.items() if isinstance(v, str)}
        upload = form.get("image")
        if upload is None or isinstance(upload, str):
            raise ImageError("no image given: send the file in the multipart field \"image\"")
        data, name = await upload.read(), upload.filename
    elif kind == "application/json":
        try:
            fields = json.loads(await request.body())
        except ValueError:
            raise RequestError("the body is not valid JSON") from None
        if not isinstance(fields, dict):
            raise RequestError("the JSON body must be an object, e.g. {\"image\": \"<base64>\"}")
        encoded = fields.pop("image", None)
        if not isinstance(encoded, str) or not encoded:
            raise ImageError("no image given: send it base64-encoded in the JSON field \"image\"")
        try:
            data = base64.b64decode(encoded.split(",", 1)[1] if encoded.startswith("data:") else encoded,
                                    validate=True)
        except (binascii.Error, ValueError, IndexError):
            raise ImageError("the JSON field \"image\" is not valid base64") from None
        name = fields.pop("filename", None) if isinstance(fields.get("filename"), str) else None
    else:
        raise RequestError("send multipart/form-data (curl -F image=@photo.jpg) or application/json "
                           f"({{\"image\": \"<base64>\"}}), not {kind or 'no content type'}", 415)
    if len(data) > MAX_UPLOAD_BYTES:
        raise RequestError(f"the image is {len(data):,} bytes; the limit is 20 MB", 413)
    return data, name, fields


def _number(fields: dict[str, Any], key: str, default: int) -> Any:
    value = fields.get(key, default)
    return value.strip() if isinstance(value, str) else value


def routes(service: AppService) -> APIRouter:
    """The API's routes over ``service`` (its batchers are shared with the Gradio UI)."""
    router = APIRouter(prefix=PREFIX, tags=["mmapp"])

    async def handle(request: Request, work: Callable[[Any, list[str], dict], dict]) -> JSONReply:
        try:
            data, name, fields = await _read_request(request)

            def run() -> dict:  # in a worker thread: decoding and the model call block
                image, warnings = open_image(data, name or "the image")
                return work(image, warnings, fields)

            return JSONReply({"image": name, **await run_in_threadpool(run)})
        except RequestError as e:
            return JSONReply({"error": str(e)}, status_code=e.status)
        except MMAppError as e:
            return JSONReply({"error": str(e)}, status_code=400)
        except Exception:  # noqa: BLE001 - a traceback must never reach the client
            log.exception("unexpected error in %s", request.url.path)
            return JSONReply({"error": "something went wrong on the server (it has been logged)"}, 500)

    @router.post("/caption", summary="Caption an image", responses=ERRORS,
                 openapi_extra=_body_schema(CAPTION_FIELDS, ["image"]))
    async def caption(request: Request) -> JSONReply:
        """The caption, its tokens and log-probability, one attention map (H x W) per token, the
        out-of-domain verdict and warnings: the JSON of `mmapp caption --json`."""
        def work(image: Any, warnings: list[str], fields: dict) -> dict:
            return service.caption(image, _number(fields, "beam_size", 3), warnings).to_json()

        return await handle(request, work)

    @router.post("/answer", summary="Answer a question about an image", responses=ERRORS,
                 openapi_extra=_body_schema(ANSWER_FIELDS, ["image", "question"]))
    async def answer(request: Request) -> JSONReply:
        """The top answers with probabilities, the question's attention map (H x W) and its glimpses,
        the out-of-domain verdict and warnings: the JSON of `mmapp ask --json`."""
        def work(image: Any, warnings: list[str], fields: dict) -> dict:
            if "question" not in fields:
                raise InputError("no question given: send it in the field \"question\"")
            return service.answer(image, fields["question"], warnings, _number(fields, "top_k", TOP_K)).to_json()

        return await handle(request, work)

    return router
