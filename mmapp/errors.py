"""Error types with messages meant for people, not tracebacks, and the command line's exit codes."""

from __future__ import annotations

EXIT_USAGE = 2  # options that do not go together (argparse's own errors too)
EXIT_BAD_INPUT = 3  # bad input: nothing done
EXIT_PARTIAL = 4  # some inputs skipped, the rest done


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


class UsageError(MMAppError):
    """Options that do not go together (exit code 2, like argparse's own errors)."""


class NonFiniteLossError(MMAppError):
    """The training loss became NaN or infinite: training stops and no checkpoint is written."""


def format_error(e: BaseException) -> str:
    if isinstance(e, FileNotFoundError) and e.filename:
        return f"file not found: {e.filename}"
    return str(e)
