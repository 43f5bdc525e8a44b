"""Error types with messages meant for people, not tracebacks."""

from __future__ import annotations


class MMAppError(ValueError):
    """Base class: anything a user can fix (bad file, bad input, bad config)."""


class CheckpointError(MMAppError):
    """A checkpoint is missing, truncated, corrupt or does not match what was asked for."""


class ImageError(MMAppError):
    """An image cannot be read or is refused (not an image, truncated, too large, ...)."""


class InputError(MMAppError):
    """A question or other text input is refused."""


class DataError(MMAppError):
    """A dataset file or record is bad: names the file and the record."""


class NonFiniteLossError(MMAppError):
    """The training loss became NaN or infinite: training stops and no checkpoint is written."""


def format_error(e: BaseException) -> str:
    if isinstance(e, FileNotFoundError) and e.filename:
        return f"file not found: {e.filename}"
    return str(e)
