"""``mmapp eval caption|vqa``: score official-format results files (or decode a split with a checkpoint
first, ``mmapp/decode_split.py``) and write ``metrics.json`` + ``metrics.md``."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from mmapp.commands.predict import limited_int
from mmapp.errors import InputError, UsageError
from mmapp.metrics import report
from mmapp.metrics.caption_metrics import score_results_file
from mmapp.metrics.vqa_accuracy import vqa_accuracy_files

CAPTION_HELP = """Score captions with the COCO caption metrics (BLEU-1..4, METEOR, ROUGE-L, CIDEr-D; SPICE
is reported unavailable offline). RESULTS is a COCO results file [{"image_id", "caption"}];
ANNOTATIONS is a COCO captions file ({"images", "annotations": [{"image_id", "caption"}]})."""
VQA_HELP = """Score answers with the official VQA accuracy (overall, per answer type, per question
type). RESULTS is a VQA results file [{"question_id", "answer"}]; QUESTIONS and ANNOTATIONS are
the official VQA v2 questions and annotations files."""


def _add_common(p: argparse.ArgumentParser) -> None:
    src = p.add_argument_group("what to score (one of)")
    src.add_argument("--results", type=Path, metavar="RES.json", help="an official-format results file")
    src.add_argument("--checkpoint", type=Path, metavar="CKPT",
                     help="decode --split of --data with this checkpoint first, then score it")
    p.add_argument("--data", type=Path, metavar="DIR", help="dataset folder (with --checkpoint)")
    p.add_argument("--split", default="test", help="split to decode (with --checkpoint; default: test)")
    p.add_argument("--features", type=Path, metavar="CACHE",
                   help="with --checkpoint: a feature cache of the split's images (else the encoder runs)")
    p.add_argument("--device", default="auto", help="with --checkpoint: auto, cpu, cuda or cuda:N")
    p.add_argument("--out", type=Path, metavar="DIR",
                   help="where metrics.json and metrics.md go (default: beside the results file; "
                        "with --checkpoint, eval-SPLIT/ beside the checkpoint)")


def _beam_size(text: str) -> int:
    return limited_int("check_beam_size")(text)


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "eval", help="score caption or VQA results with the official metrics",
        description="Score caption or VQA results with the official metrics; writes metrics.json "
                    "and metrics.md and prints the table. Scores are fractions in metrics.json "
                    "and percentages in the table.")
    tasks = p.add_subparsers(dest="task", metavar="TASK", required=True)
    cap = tasks.add_parser("caption", help="COCO caption metrics", description=CAPTION_HELP)
    _add_common(cap)
    cap.add_argument("--annotations", type=Path, metavar="ANN.json", help="COCO captions annotations file")
    cap.add_argument("--beam-size", type=_beam_size, default=3,
                     help="with --checkpoint: beam width (1 = greedy; default 3)")
    vqa = tasks.add_parser("vqa", help="official VQA accuracy", description=VQA_HELP)
    _add_common(vqa)
    vqa.add_argument("--questions", type=Path, metavar="Q.json",
                     help="VQA questions file (checks that it matches the annotations)")
    vqa.add_argument("--annotations", type=Path, metavar="A.json", help="VQA annotations file")
    p.set_defaults(func=run)


def _decode_first(args: argparse.Namespace) -> dict[str, Path]:
    """Decode ``--split`` of ``--data`` with ``--checkpoint`` (``mmapp.decode_split.decode_split``)."""
    # heavy: torch, only when a checkpoint decodes a split
    from mmapp.decode_split import decode_split

    if args.data is None:
        raise InputError("--checkpoint needs --data DIR (the dataset folder to decode)")
    out = args.out or args.checkpoint.parent / f"eval-{args.split}"
    files = decode_split(task=args.task, checkpoint=args.checkpoint, data_dir=args.data,
                         split=args.split, out_dir=out, features=args.features,
                         beam_size=getattr(args, "beam_size", 3), device=args.device)
    args.out = out
    return {k: Path(v) for k, v in files.items()}


def run(args: argparse.Namespace) -> int:
    if (args.results is None) == (args.checkpoint is None):
        raise UsageError("give exactly one of --results RES.json or --checkpoint CKPT")
    inputs: dict[str, Path | None] = {"results": args.results, "annotations": args.annotations}
    if args.task == "vqa":
        inputs["questions"] = args.questions
    if args.checkpoint is not None:
        decoded = _decode_first(args)
        inputs = {k: v if v is not None else decoded.get(k) for k, v in inputs.items()}
    if inputs["annotations"] is None:
        raise InputError("--annotations is required")

    if args.task == "caption":
        metrics = score_results_file(inputs["results"], inputs["annotations"])
        markdown = report.caption_markdown(metrics)
        missing = metrics["num_missing"], "annotated images"
    else:
        metrics = vqa_accuracy_files(inputs["results"], inputs.get("questions"), inputs["annotations"])
        markdown = report.vqa_markdown(metrics)
        missing = metrics["num_missing"], "annotated questions"
    metrics = {"task": args.task, "inputs": {k: str(v) for k, v in inputs.items() if v is not None},
               **metrics}
    out = args.out or Path(inputs["results"]).resolve().parent
    json_path, md_path = report.write_report(out, metrics, markdown)
    print(markdown, end="")
    if missing[0]:
        print(f"note: {missing[0]} {missing[1]} have no result and were not scored")
    print(f"wrote {json_path} and {md_path}")
    return 0
