"""Reading metric inputs (JSON files) and writing metric reports (``metrics.json`` + ``metrics.md``).

Scores are fractions in 0..1 everywhere in mmapp; the Markdown tables show them as percentages
with two decimals, as the official COCO and VQA tools print them.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any, Mapping

from mmapp.atomic import write_text
from mmapp.errors import DataError


def load_json(path: str | os.PathLike, what: str) -> Any:
    """Parse a JSON file; a missing file raises FileNotFoundError, bad JSON a DataError naming it.

    ``what`` says which input it is ("results file", "annotations file", ...).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(2, f"{what} not found", str(path))
    try:
        with path.open("r", encoding="utf-8") as f:
            return json.load(f)
    except json.JSONDecodeError as e:
        raise DataError(f"{path}: {what} is not valid JSON (line {e.lineno}, column {e.colno}: {e.msg})") from e
    except UnicodeDecodeError as e:
        raise DataError(f"{path}: {what} is not UTF-8 text") from e


def percent(value: Any) -> str:
    """A 0..1 score as ``"12.34"``; anything that is not a finite number as ``"n/a"``."""
    if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
        return f"{100.0 * value:.2f}"
    return "n/a"


def markdown_table(header: tuple[str, str], rows: list[tuple[str, str]]) -> str:
    """A two-column Markdown table."""
    lines = [f"| {header[0]} | {header[1]} |", "|---|---:|"]
    lines += [f"| {name} | {value} |" for name, value in rows]
    return "\n".join(lines)


def caption_markdown(metrics: Mapping[str, Any]) -> str:
    """Markdown summary of ``caption_metrics`` output (``CaptionScores.to_dict()``)."""
    rows = []
    notes = []
    for name, value in metrics["overall"].items():
        if isinstance(value, Mapping):
            rows.append((name, "unavailable"))
            notes.append(f"- {name} unavailable: {value.get('reason', 'unknown reason')}")
        else:
            rows.append((name, percent(value)))
    rows.append(("images scored", str(metrics["num_images"])))
    if metrics.get("num_missing"):
        rows.append(("annotated images without a result", str(metrics["num_missing"])))
    text = ["## Caption metrics (x100)", "", markdown_table(("metric", "score"), rows), ""]
    text.append(f"Tokeniser: {metrics['tokenizer']}. CIDEr is CIDEr-D (sigma 6, clipped counts).")
    text += [""] + notes + [f"- {n}" for n in metrics.get("notes", [])]
    return "\n".join(text).rstrip() + "\n"


def vqa_markdown(metrics: Mapping[str, Any], max_question_types: int = 65) -> str:
    """Markdown summary of ``vqa_accuracy`` output: overall, per answer type, per question type."""
    rows = [("overall", percent(metrics["overall"]))]
    rows += [(f"answer type: {k}", percent(v)) for k, v in sorted(metrics["per_answer_type"].items())]
    rows.append(("questions scored", str(metrics["num_evaluated"])))
    if metrics.get("num_missing"):
        rows.append(("questions without a result", str(metrics["num_missing"])))
    text = ["## VQA accuracy (x100)", "", markdown_table(("metric", "accuracy"), rows), ""]
    per_type = sorted(metrics["per_question_type"].items())
    if per_type:
        shown = per_type[:max_question_types]
        text += ["### Per question type", "",
                 markdown_table(("question type", "accuracy"), [(k, percent(v)) for k, v in shown]), ""]
        if len(per_type) > len(shown):
            text.append(f"({len(per_type) - len(shown)} more question types in metrics.json)")
    return "\n".join(text).rstrip() + "\n"


def write_report(out_dir: str | os.PathLike, metrics: Mapping[str, Any], markdown: str) -> tuple[Path, Path]:
    """Write ``metrics.json`` and ``metrics.md`` into ``out_dir`` (created if needed), atomically."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    json_path, md_path = out / "metrics.json", out / "metrics.md"
    write_text(json_path, json.dumps(metrics, indent=2, sort_keys=False) + "\n")
    write_text(md_path, markdown)
    return json_path, md_path
