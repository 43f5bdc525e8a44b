"""Checked reads of official-format JSON files (COCO captions, Karpathy splits, VQA): every error
names the file and the record, so a malformed download says where it is malformed."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from mmapp.errors import DataError


def read_json(path: str | Path) -> Any:
    """Parsed JSON; ``FileNotFoundError`` if missing, ``DataError`` naming the file if malformed."""
    path = Path(path)
    with open(path, encoding="utf-8") as f:
        try:
            return json.load(f)
        except json.JSONDecodeError as e:
            raise DataError(f"{path}: not valid JSON: {e}") from None


_TYPE_NAMES = {int: "an integer", str: "a string", list: "a list", dict: "an object", float: "a number"}


def field(record: Any, key: str, kind: type, path: str | Path, where: str) -> Any:
    """``record[key]`` checked to be of ``kind`` (bool is not an int), else ``DataError``."""
    if not isinstance(record, dict):
        raise DataError(f"{path}: {where}: expected an object, got {type(record).__name__}")
    if key not in record:
        raise DataError(f"{path}: {where}: missing key {key!r}")
    value = record[key]
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise DataError(f"{path}: {where}: {key!r} must be {_TYPE_NAMES.get(kind, kind.__name__)}, "
                        f"got {value!r:.40}")
    return value


def has_word(text: str) -> bool:
    """Whether ``tokenize(text)`` keeps at least one word (it drops only punctuation tokens),
    checked without running the tokeniser."""
    return any(ch.isalnum() for ch in text)


def top_list(data: Any, key: str, path: str | Path) -> list:
    if not isinstance(data, dict):
        raise DataError(f"{path}: the top level must be an object with a {key!r} list")
    return field(data, key, list, path, "top level")
