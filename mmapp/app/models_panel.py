"""The "Models" panel: what a loaded checkpoint is, what it was trained on and how it scored.

Reads only the checkpoint's metadata and shows whatever of it is there: scalars of ``meta["training"]``
(dataset, epoch, best validation figure, ...) and every ``*metrics`` dict in it (e.g. ``test_metrics``)
as a table. Nested configuration is left out.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

TITLES = {"captioner": "Captioner", "vqa": "VQA model"}


def _fmt(value: Any) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value).replace("|", "\\|").replace("\n", " ")[:2000]


def _is_scalar(value: Any) -> bool:
    return isinstance(value, (str, int, float, bool))


def _metrics_table(name: str, metrics: Mapping[str, Any]) -> str:
    rows = [(k, v) for k, v in metrics.items() if _is_scalar(v)]
    for k, v in metrics.items():  # one level of nesting, e.g. {"overall": {...}}
        if isinstance(v, Mapping):
            rows += [(f"{k}.{kk}", vv) for kk, vv in v.items() if _is_scalar(vv)]
    if not rows:
        return ""
    lines = [f"**{name.replace('_', ' ')}**", "", "| metric | value |", "|---|---|"]
    lines += [f"| {_fmt(k)} | {_fmt(v)} |" for k, v in rows]
    return "\n".join(lines)


def model_card(kind: str, meta: Mapping[str, Any], path: Path | None, ood: Any = None) -> str:
    """Markdown describing one checkpoint from its ``meta`` (robust to missing or odd entries)."""
    lines = [f"### {TITLES.get(kind, kind)}" + (f" — `{path}`" if path else "")]
    encoder = meta.get("encoder") if isinstance(meta.get("encoder"), Mapping) else {}
    grid = meta.get("grid")
    if encoder:
        has_grid = isinstance(grid, (list, tuple)) and len(grid) == 2
        grid_text = f", {grid[0]}x{grid[1]} attention grid" if has_grid else ""
        lines.append(f"- Encoder: {_fmt(encoder.get('name', '?'))}, {_fmt(encoder.get('input_size', '?'))} px input"
                     f"{grid_text}")
    vocab = meta.get("vocab")
    if isinstance(vocab, Mapping) and isinstance(vocab.get("words"), list):
        lines.append(f"- Vocabulary: {len(vocab['words']):,} words")
    answers = meta.get("answers")
    if isinstance(answers, Mapping) and isinstance(answers.get("answers"), list):
        lines.append(f"- Answers: {len(answers['answers']):,} classes")
    training = meta.get("training") if isinstance(meta.get("training"), Mapping) else {}
    if "dataset" in training:
        lines.append(f"- Trained on: **{_fmt(training['dataset'])}**")
    lines += [f"- {_fmt(k).replace('_', ' ')}: {_fmt(v)}" for k, v in training.items()
              if k != "dataset" and _is_scalar(v)]
    if ood is None:
        lines.append("- Out-of-domain check: off (the checkpoint carries no out-of-domain statistics)")
    else:
        passed = getattr(ood, "heldout_pass_rate", 0.0)
        lines.append(f"- Out-of-domain check: on (threshold {ood.threshold:.3g}"
                     + (f"; {passed:.0%} of held-out in-domain images pass)" if passed else ")"))
    knows = training.get("knows")
    if isinstance(knows, Mapping) and knows:
        kinds = {str(k): [str(n) for n in v] for k, v in knows.items() if isinstance(v, list)}
        total = sum(len(v) for v in kinds.values())
        lines.append(f"- Knows {total:,} kinds of thing in {len(kinds)} groups (anything else is out of domain):")
        lines.append("<details><summary>what it knows, by group</summary>\n")
        lines += [f"- **{_fmt(k)}** ({len(v)}): {_fmt(', '.join(v))[:2000]}" for k, v in kinds.items()]
        lines.append("\n</details>")
    tables = [_metrics_table(k, v) for k, v in training.items() if "metric" in k and isinstance(v, Mapping)]
    tables = [t for t in tables if t]
    if not tables:
        tables = ["*No test figures recorded in this checkpoint.*"]
    return "\n".join(lines) + "\n\n" + "\n\n".join(tables)
