"""``mmapp caption`` and ``mmapp ask``: run the models on images from the command line.

Results come from ``mmapp.inference`` as in the app and the HTTP API (same JSON, same warnings, same
limits). Inputs may be files, folders (their images, recursively) and glob patterns; images are read
and encoded ``--batch-size`` at a time. An image that cannot be read is reported on stderr and skipped,
the rest are still done, and the exit code says so (see ``mmapp.cli``: 3 nothing could be done, 4 some
inputs were skipped).
"""

from __future__ import annotations

import argparse
import glob
import json
import re
import sys
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence, TextIO

from tqdm import tqdm

from mmapp.errors import EXIT_BAD_INPUT, EXIT_PARTIAL, DataError, ImageError, InputError, UsageError
from mmapp.memory import reuse_freed_memory_on

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff")
PROGRESS_AFTER = 8  # a progress bar for more images than this


def limited_int(check_name: str) -> Callable[[str], int]:
    """An argparse type from an ``mmapp.inference`` check: out of range is a usage error (exit 2)."""
    def convert(text: str) -> int:
        from mmapp import inference  # heavy: torch

        try:
            return getattr(inference, check_name)(text)
        except InputError as e:
            raise argparse.ArgumentTypeError(str(e)) from None

    convert.__name__ = check_name.removeprefix("check_").replace("_", "-")
    return convert


def _positive(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"must be a whole number of at least 1, got {text!r}")
    return int(text)


def register(sub: argparse._SubParsersAction) -> None:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--checkpoint", help="model checkpoint (.safetensors); default: the shipped one")
    common.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default: auto)")
    common.add_argument("--batch-size", type=_positive, default=16, metavar="N",
                        help="images read and encoded at a time (default 16)")
    common.add_argument("--json", dest="format", action="store_const", const="json",
                        help="print one JSON document (the HTTP API's JSON per result)")
    common.add_argument("--jsonl", dest="format", action="store_const", const="jsonl",
                        help="print one JSON object per line, as results come")
    common.add_argument("-o", "--output", type=Path, metavar="FILE", help="write the results here, not to stdout")
    common.add_argument("--save-attention", type=Path, metavar="DIR",
                        help="write the attention overlays the app shows as PNG files into DIR")
    common.add_argument("--strict", action="store_true",
                        help="a warning (out-of-domain image, ignored or cut-off words) makes the exit code 4; "
                             "the results are still written")

    cap = sub.add_parser("caption", parents=[common], help="caption images",
                         description="Caption images with the attention-LSTM captioner. IMAGE may be a file, a "
                                     "folder (its images, recursively) or a glob pattern (quote it).",
                         epilog="--format coco writes the official COCO results file [{\"image_id\", \"caption\"}] "
                                "that `mmapp eval caption --results` scores; image_id is the number at the end "
                                "of the file name (COCO_val2014_000000391895.jpg -> 391895, test_000003000000.jpg "
                                "-> 3000000): files without one are skipped.")
    cap.add_argument("images", nargs="+", metavar="IMAGE", help="image files, folders or glob patterns")
    cap.add_argument("--format", dest="format", choices=("text", "json", "jsonl", "coco"), default="text",
                     help="output format (default text)")
    cap.add_argument("--beam-size", type=limited_int("check_beam_size"), default=3, help="beam width (1 = greedy; default 3)")
    cap.add_argument("--max-len", type=limited_int("check_max_len"), default=20,
                     help="maximum caption length in words (default 20)")
    cap.set_defaults(func=run_caption, format="text")

    ask = sub.add_parser("ask", parents=[common], help="answer questions about images",
                         description="Answer a question about an image with the question-attention VQA model. "
                                     "With --questions, answer a file of questions; IMAGE may then be a folder or "
                                     "a glob pattern too.",
                         epilog="--questions takes an official VQA questions file ({\"questions\": [{\"image_id\", "
                                "\"question\", \"question_id\"}]}; each question is asked of the image whose file "
                                "name ends in its image_id) or a text file of questions (one per line, each asked "
                                "of every image; question_id counts the answers from 0). --format vqa writes the "
                                "official VQA results file [{\"question_id\", \"answer\"}] that `mmapp eval vqa "
                                "--results` scores.")
    ask.add_argument("image", metavar="IMAGE", help="image file (with --questions: files, a folder or a glob)")
    ask.add_argument("question", metavar="QUESTION", nargs="?", help='e.g. "what color is the circle?"')
    ask.add_argument("--questions", type=Path, metavar="FILE", help="a VQA questions file or a text file of questions")
    ask.add_argument("--format", dest="format", choices=("text", "json", "jsonl", "vqa"), default="text",
                     help="output format (default text)")
    ask.add_argument("--top-k", type=limited_int("check_top_k"), default=5, help="how many answers to show (default 5)")
    ask.set_defaults(func=run_ask, format="text")


# ---------------------------------------------------------------------------------------------- inputs


def expand_inputs(items: Sequence[str]) -> tuple[list[str], list[str]]:
    """Files, folders and glob patterns -> (image paths in order, problems: patterns that match nothing
    and folders without images). A path that is not there is kept: reading it reports it."""
    paths: list[str] = []
    problems: list[str] = []
    for item in items:
        if glob.has_magic(item) and not Path(item).exists():
            found = sorted(p for p in glob.glob(item, recursive=True) if Path(p).is_file())
            paths += found or []
            if not found:
                problems.append(f"no file matches {item}")
        elif Path(item).is_dir():
            found = sorted(str(p) for p in Path(item).rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
            paths += found
            if not found:
                problems.append(f"no images in the folder {item}")
        else:
            paths.append(item)
    return list(dict.fromkeys(paths)), problems


def image_id(path: str | Path) -> int | None:
    """The COCO image id of a file: the number its name ends in (``COCO_val2014_000000391895.jpg``)."""
    match = re.search(r"(\d+)$", Path(path).stem)
    return int(match.group(1)) if match else None


def _chunks(items: list, size: int) -> Iterator[list]:
    for start in range(0, len(items), size):
        yield items[start:start + size]


class Run:
    """One command's reporting: stderr lines (above the progress bar), failures and the exit code."""

    def __init__(self, command: str, total: int, strict: bool = False) -> None:
        self.command, self.failures, self.done, self.strict, self.warned = command, 0, 0, strict, 0
        self.bar = tqdm(total=total, unit="image", file=sys.stderr, disable=total <= PROGRESS_AFTER,
                        dynamic_ncols=True)

    def say(self, message: str) -> None:
        self.bar.write(f"mmapp {self.command}: {message}", file=sys.stderr)

    def fail(self, message: str) -> None:
        self.failures += 1
        self.say(f"error: {message}")

    def warn(self, where: str, messages: Sequence[str]) -> None:
        self.warned += bool(messages)
        for m in messages:
            self.say(f"warning: {where}: {m}")

    def finish(self, what: str) -> int:
        self.bar.close()
        if self.failures and self.done:
            self.say(f"{what}: {self.failures} skipped, {self.done} done")
            return EXIT_PARTIAL
        if self.failures or not self.done:
            return EXIT_BAD_INPUT
        if self.strict and self.warned:
            self.say(f"--strict: {self.warned} results with warnings")
            return EXIT_PARTIAL
        return 0


def _open(run: Run, paths: Sequence[str], name: Callable[[str], str] = str) -> list[tuple[str, Any, list[str]]]:
    """Decode each image once; unreadable ones are reported and left out."""
    from mmapp.inference import open_image  # heavy: torch

    opened = []
    for path in paths:
        try:
            image, warnings = open_image(path, name(path))
            opened.append((path, image, warnings))
        except ImageError as e:
            run.fail(str(e))
    return opened


def _writer(args: argparse.Namespace) -> TextIO:
    if args.output is None:
        return sys.stdout
    args.output.parent.mkdir(parents=True, exist_ok=True)
    return args.output.open("w", encoding="utf-8")


def _safe(text: str) -> str:
    return re.sub(r"[^\w.-]+", "_", text)[:60] or "_"


# ---------------------------------------------------------------------------------------------- caption


def run_caption(args: argparse.Namespace) -> int:
    from mmapp.app.overlay import word_overlays  # heavy: torch
    from mmapp.inference import Captioner

    paths, problems = expand_inputs(args.images)
    run = Run("caption", len(paths), args.strict)
    for problem in problems:
        run.fail(problem)
    if args.format == "coco":
        ids: dict[int, str] = {}
        for path in list(paths):
            number = image_id(path)
            if number is None or number in ids:
                run.fail(f"{path}: no image_id for --format coco (" + (
                    "its file name does not end in a number)" if number is None else f"{ids[number]} has it too)"))
                paths.remove(path)
            else:
                ids[number] = path
    if not paths:
        return run.finish("images")
    model = Captioner.from_checkpoint(args.checkpoint, args.device) if args.checkpoint else \
        Captioner.from_pretrained(args.device)
    reuse_freed_memory_on(model.device)
    out, collected = _writer(args), []
    for chunk in _chunks(paths, args.batch_size):
        opened = _open(run, chunk)
        if opened:
            features, sizes = model.encode([image for _, image, _ in opened])  # (B, P, D)
            results = model.caption_results(features, sizes, args.beam_size, args.max_len,
                                            warnings=[warnings for _, _, warnings in opened])
            for (path, image, _), r in zip(opened, results):
                run.warn(path, r.messages())
                run.done += 1
                if args.format == "text":
                    print(f"{path}\t{r.text}\t(log-prob {r.score:.2f})", file=out, flush=True)
                elif args.format == "jsonl":
                    print(json.dumps({"image": path, **r.to_json()}), file=out, flush=True)
                elif args.format == "json":
                    collected.append({"image": path, **r.to_json()})
                else:
                    collected.append({"image_id": image_id(path), "caption": r.text})
                if args.save_attention:
                    _save_words(args.save_attention, path, word_overlays(image, r.tokens, r.attention))
        run.bar.update(len(chunk))
    if args.format in ("json", "coco"):
        json.dump(collected, out, indent=2 if args.format == "json" else None)
        print(file=out)
    if out is not sys.stdout:
        out.close()
    return run.finish("images")


def _save_words(folder: Path, path: str, overlays: list) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for t, (overlay, label) in enumerate(overlays):
        overlay.save(folder / f"{Path(path).stem}.{t + 1:02d}.{_safe(label.split(': ', 1)[1])}.png")


# ---------------------------------------------------------------------------------------------- ask


def read_questions(path: Path, image_paths: list[str]) -> tuple[list[tuple[str, str, int]], int]:
    """(image path, question, question_id) to answer from a VQA questions file or a text file, and how
    many questions of a VQA file are about images that were not given."""
    text = path.read_text(encoding="utf-8")
    if path.suffix.lower() == ".json" or text.lstrip().startswith("{"):
        try:
            data = json.loads(text)
            records = data["questions"]
            by_id = {image_id(p): p for p in image_paths}
            asked = [(by_id[q["image_id"]], q["question"], int(q["question_id"])) for q in records
                     if q["image_id"] in by_id]
        except (ValueError, KeyError, TypeError) as e:
            raise DataError(f"{path}: not a VQA questions file ({{\"questions\": [{{\"image_id\", \"question\", "
                            f"\"question_id\"}}]}}): {e}") from None
        return asked, len(records) - len(asked)
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    pairs = [(p, q) for p in image_paths for q in lines]
    return [(p, q, n) for n, (p, q) in enumerate(pairs)], 0


def run_ask(args: argparse.Namespace) -> int:
    from mmapp.inference import VQAModel  # heavy: torch

    if (args.question is None) == (args.questions is None):
        raise UsageError("give a QUESTION or --questions FILE (one of them)")
    paths, problems = expand_inputs([args.image]) if args.questions else ([args.image], [])
    if args.questions:
        asked, elsewhere = read_questions(args.questions, paths)
    else:
        asked, elsewhere = [(args.image, args.question, 0)], 0
    run = Run("ask", len({p for p, _, _ in asked}), args.strict)
    for problem in problems:
        run.fail(problem)
    if elsewhere:
        run.say(f"note: {elsewhere} questions of {args.questions} are about images not given; not answered")
    if not asked:
        return run.finish("questions")
    model = VQAModel.from_checkpoint(args.checkpoint, args.device) if args.checkpoint else \
        VQAModel.from_pretrained(args.device)
    reuse_freed_memory_on(model.device)
    checked: dict[str, list[tuple[str, int, list[str]]]] = {}
    for path, question, qid in asked:
        try:
            question, warnings = model.check_question(question)
        except InputError as e:
            run.fail(f"{path}: {question!r}: {e}" if args.questions else str(e))
            continue
        checked.setdefault(path, []).append((question, qid, warnings))
    single = args.questions is None
    out, collected = _writer(args), []
    for chunk in _chunks(list(checked), args.batch_size):
        opened = _open(run, chunk)
        if opened:
            features, sizes = model.encode([image for _, image, _ in opened])  # (B, P, D)
            rows = [(b, q) for b, (path, _, _) in enumerate(opened) for q in checked[path]]
            index = [b for b, _ in rows]
            results = model.answer_results(features[index], [q for _, (q, _, _) in rows], [sizes[b] for b in index],
                                           args.top_k, [opened[b][2] + w for b, (_, _, w) in rows])
            for (b, (_, qid, _)), r in zip(rows, results):
                path, image, _ = opened[b]
                run.warn(path, r.messages())
                _emit_answer(args, out, collected, path, qid, r)
                if args.save_attention:
                    from mmapp.app.overlay import fit_for_display, heatmap_overlay, word_overlays

                    args.save_attention.mkdir(parents=True, exist_ok=True)
                    name = f"{Path(path).stem}.answer.png" if single else f"{Path(path).stem}.q{qid}.png"
                    heatmap_overlay(fit_for_display(image), r.attention).save(args.save_attention / name)
                    if r.tokens:  # a generated answer: one map per answer word too
                        _save_words(args.save_attention, name, word_overlays(image, r.tokens, r.word_attention))
            run.done += len(opened)
        run.bar.update(len(chunk))
    if args.format in ("json", "vqa"):
        data = collected[0] if single and args.format == "json" and collected else collected
        json.dump(data, out, indent=2 if args.format == "json" else None)
        print(file=out)
    if out is not sys.stdout:
        out.close()
    return run.finish("images or questions")


def _emit_answer(args: argparse.Namespace, out: TextIO, collected: list, path: str, qid: int, r: Any) -> None:
    if args.format == "text":
        print(f"{path}\tQ: {r.question}" if args.questions else f"Q: {r.question}", file=out)
        for a, p in r.answers:
            print(f"  {p:6.1%}  {a}", file=out)
    elif args.format == "vqa":
        collected.append({"question_id": qid, "answer": r.answers[0][0]})
    else:
        item = {"image": path, **({"question_id": qid} if args.questions else {}), **r.to_json()}
        if args.format == "jsonl":
            print(json.dumps(item), file=out, flush=True)
        else:
            collected.append(item)
