"""The one check of an official-format results file: a JSON list of ``{id_key: int, value_key: str}``
records whose ids are known and unique (COCO captions: image_id/caption; VQA: question_id/answer)."""

from __future__ import annotations

from typing import Any, Mapping

from mmapp.errors import DataError


def check_results(results: Any, known: Mapping[int, Any], name: str, what: str, id_key: str, value_key: str,
                  unknown_hint: str) -> dict[int, str]:
    """``{id: value}`` of ``results`` (a ``what`` results file); a ``DataError`` naming file ``name`` and the record when the
    top level is not a list, a record lacks a key or has a wrong type, or an id is unknown (not in
    ``known``; ``unknown_hint`` says where ids come from) or repeated."""
    if not isinstance(results, list):
        raise DataError(f"{name}: a {what} results file is a JSON list of {{{id_key!r}, {value_key!r}}} objects")
    out: dict[int, str] = {}
    for i, r in enumerate(results):
        where = f"{name}: record {i}"
        if not isinstance(r, Mapping) or id_key not in r or value_key not in r:
            raise DataError(f"{where} needs {id_key!r} and {value_key!r}")
        record_id = r[id_key]
        if not isinstance(record_id, int) or isinstance(record_id, bool):
            raise DataError(f"{where}: {id_key} must be an integer, got {record_id!r}")
        if not isinstance(r[value_key], str):
            raise DataError(f"{where} ({id_key} {record_id}): {value_key!r} must be a string")
        if record_id not in known:
            raise DataError(f"{where}: unknown {id_key} {record_id} ({unknown_hint})")
        if record_id in out:
            raise DataError(f"{where}: duplicate {id_key} {record_id}")
        out[record_id] = r[value_key]
    return out
