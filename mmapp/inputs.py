"""What every caller of the models checks first, in one place: the limits (beam size, answers, caption
length, question length), the question validator and decoding an image once. ``mmapp.inference``
re-exports them; the CLI, the HTTP API and the app's controls use the same limits."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from PIL import Image

from mmapp.errors import ImageError, InputError
from mmapp.images import ImageInput, decode_image
from mmapp.vocab import Vocab, tokenize

MAX_QUESTION_CHARS = 500
MAX_BEAM_SIZE = 10
MAX_CAPTION_LEN = 100
CAPTION_LEN = 20  # default caption length limit, in words
TOP_K = 5  # default number of answers
MAX_TOP_K = 20
EXAMPLE_QUESTION = '"what is this?"'


def _whole_number(value: Any, low: int, high: int, what: str) -> int:
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = float("nan")
    if isinstance(value, bool) or not number.is_integer() or not low <= number <= high:
        raise InputError(f"{what} must be a whole number from {low} to {high}, got {value!r}")
    return int(number)


def check_beam_size(value: Any) -> int:
    """An integer beam size in 1..MAX_BEAM_SIZE, or ``InputError``."""
    return _whole_number(value, 1, MAX_BEAM_SIZE, "beam size")


def check_top_k(value: Any) -> int:
    """An integer number of answers in 1..MAX_TOP_K, or ``InputError``."""
    return _whole_number(value, 1, MAX_TOP_K, "top-k")


def check_max_len(value: Any) -> int:
    """An integer caption length limit in 1..MAX_CAPTION_LEN, or ``InputError``."""
    return _whole_number(value, 1, MAX_CAPTION_LEN, "the caption length limit")


def check_question(question: Any, vocab: Vocab, max_words: int | None = None) -> tuple[str, list[str]]:
    """(the question, stripped; warnings) or ``InputError`` when the model cannot read a word of it.

    Warnings name the words the model does not know (read as ``<unk>``) and say when words past
    ``max_words`` (the question length the model was trained with) are cut off."""
    if not isinstance(question, str) or not question.strip():
        raise InputError(f"the question is empty: type a question about the image, e.g. {EXAMPLE_QUESTION}")
    if len(question) > MAX_QUESTION_CHARS:
        raise InputError(f"the question is {len(question):,} characters long; the limit is {MAX_QUESTION_CHARS}")
    question = question.strip()
    words = tokenize(question)
    if not words:
        raise InputError("the question has no words: type a question about the image")
    warnings = []
    if max_words is not None and len(words) > max_words:
        warnings.append(f"the question has {len(words)} words; only the first {max_words} are read: "
                        f"{' '.join(words[max_words:])!r} was cut off")
        words = words[:max_words]
    unknown = [w for w in words if w not in vocab]
    if len(unknown) == len(words):
        raise InputError("none of the question's words are known to the model: ask in English about the "
                         f"image, e.g. {EXAMPLE_QUESTION}")
    if unknown:
        listed = ", ".join(repr(w) for w in dict.fromkeys(unknown))
        warnings.insert(0, f"words the model does not know were ignored: {listed}")
    return question, warnings


def open_image(src: ImageInput, name: str | None = None) -> tuple[Image.Image, list[str]]:
    """Decode one input once -> (RGB image, warnings); ``name`` is how messages call it."""
    shown = name or (Path(src).name if isinstance(src, (str, Path)) else "the image")
    try:
        image, frames = decode_image(src)
    except ImageError as e:
        if isinstance(src, (str, Path)) or name is None:
            raise
        raise ImageError(str(e).replace(f"the given {type(src).__name__}", shown, 1)) from None
    return image, [f"{shown} is animated: only its first frame is used"] if frames > 1 else []
