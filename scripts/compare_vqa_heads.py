"""Score trained VQA runs side by side (``vqa.head`` classify / generate, with and without
``vqa.image_first``) on generated test splits, for ``docs/vqa_heads.md``.

For every run (a folder from ``mmapp train vqa``) and every test split it reports, with the model
card's definitions (``mmapp.model_card.vqa_figures``): the official VQA accuracy overall and per
question type, and the pointing game of the questions about one object (the glimpses' mean map; for
a generative head also its answer words' mean map). Beside them:

* the questions whose answer lies outside the classifier's answer vocabulary (``--classifier-vocab``:
  a classify checkpoint; its N answers), and each run's accuracy on them;
* training seconds per epoch (the metrics log's optimisation time, median over epochs);
* answer latency on the CPU: one question at a time on its image's cached grid (head only, after 5
  warm-up questions), median milliseconds, with ``top_k`` 1 and 5.

    python scripts/compare_vqa_heads.py --run classify=runs/cmp/classify --run generate=runs/cmp/generate \\
        --test shapes=data/shapes_test --test objects=data/objects_test \\
        --classifier-vocab runs/cmp/classify/best.safetensors --out runs/cmp/report
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mmapp.checkpoint import read_meta
from mmapp.data.feature_cache import FeatureCache
from mmapp.inference import VQAModel
from mmapp.model_card import _load_split, vqa_figures
from mmapp.vqa_normalize import normalize_answer


def split_grids(model: VQAModel, data_dir: Path, data: dict[str, Any], ids: list[int]) -> torch.Tensor:
    """(N, P, D) grids of the split's images: from ``<split>/features448`` when it holds them all,
    else encoded by the model's encoder."""
    files = [data["images"][i]["file_name"] for i in ids]
    cache_dir = data_dir / "features448"
    if (cache_dir / "meta.json").is_file():
        cache = FeatureCache.open(cache_dir)
        rows = [cache.find(f"test/{f}", f) for f in files]
        if all(r is not None for r in rows):
            return torch.from_numpy(np.stack([cache.get_row(r) for r in rows]).astype(np.float32))
    out = []
    for start in range(0, len(files), 16):
        features, _ = model.encode([str(data["image_root"] / f) for f in files[start:start + 16]])
        out.append(features.float().cpu())
    return torch.cat(out)


def latency_ms(model: VQAModel, grids: torch.Tensor, data: dict[str, Any], ids: list[int], top_k: int,
               n: int) -> float:
    row = {image_id: r for r, image_id in enumerate(ids)}
    questions = [q for q in data["questions"]["questions"] if q["image_id"] in row][: n + 5]
    times = []
    for i, q in enumerate(questions):
        start = time.perf_counter()
        model.answer_results(grids[row[q["image_id"]]].unsqueeze(0), [q["question"]], top_k=top_k)
        if i >= 5:
            times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def epoch_seconds(run: Path) -> dict[str, Any]:
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if line.strip()]
    return {"epochs": len(rows), "train_s_per_epoch": statistics.median(r["train"]["seconds"] for r in rows),
            "items_per_s": statistics.median(r["train"]["items_per_s"] for r in rows),
            "val_accuracy": [round(r["val"]["accuracy"], 4) for r in rows]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", action="append", required=True, metavar="NAME=RUN_DIR")
    parser.add_argument("--test", action="append", required=True, metavar="NAME=DATA_DIR")
    parser.add_argument("--classifier-vocab", type=Path, required=True, metavar="CLASSIFY.safetensors")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--latency-questions", type=int, default=100)
    parser.add_argument("--limit", type=int, default=0, help="only the first N images of each split (a smoke test)")
    parser.add_argument("--latency-only", action="store_true",
                        help="only the answer latency (on the first --test split), e.g. again on a quiet machine; "
                             "writes latency.json")
    args = parser.parse_args()
    torch.set_num_threads(1)
    args.out.mkdir(parents=True, exist_ok=True)
    known = set(read_meta(args.classifier_vocab)["answers"]["answers"])
    splits = {}
    for item in args.test:
        name, folder = item.split("=", 1)
        data = _load_split(Path(folder), "test")
        splits[name] = (Path(folder), data, sorted(data["images"])[: args.limit or None])
    report: dict[str, Any] = {"classifier_answers": len(known), "runs": {}}
    grids: dict[str, torch.Tensor] = {}
    for item in args.run:
        name, folder = item.split("=", 1)
        run = Path(folder)
        model = VQAModel.from_checkpoint(run / "best.safetensors", device="cpu")
        if args.latency_only:
            first, (folder_, data, ids) = next(iter(splits.items()))
            if first not in grids:
                grids[first] = split_grids(model, folder_, data, ids)
            report["runs"][name] = {f"top_{k}": latency_ms(model, grids[first], data, ids, k, args.latency_questions)
                                    for k in (1, 5)}
            print(name, json.dumps(report["runs"][name]), flush=True)
            continue
        entry: dict[str, Any] = {**epoch_seconds(run), "head": model.head.cfg.head,
                                 "image_first": model.head.cfg.image_first, "splits": {}}
        for split, (folder_, data, ids) in splits.items():
            if split not in grids:
                grids[split] = split_grids(model, folder_, data, ids)
            figures = vqa_figures(model, grids[split], data, ids)
            acc = figures["accuracy"]
            anns = {a["question_id"]: a for a in data["annotations"]["annotations"]}
            outside = [qid for qid in acc["per_question"]
                       if normalize_answer(anns[qid]["multiple_choice_answer"]) not in known]
            said = {r["question_id"]: r["answer"] for r in figures["results"]}
            g, ag = figures["grounding"], figures["answer_grounding"]
            entry["splits"][split] = {
                "overall": acc["overall"], "per_question_type": acc["per_question_type"],
                "questions": acc["num_evaluated"], "outside_questions": len(outside),
                "outside_accuracy": (sum(acc["per_question"][q] for q in outside) / len(outside)) if outside else None,
                "said_outside_vocab": sum(normalize_answer(a) not in known for a in said.values()),
                "pointing": g["hit_rate"] if g else None, "pointing_n": g["n"] if g else 0,
                "pointing_chance": g["chance"] if g else None,
                "answer_word_pointing": ag["hit_rate"] if ag else None,
            }
            (args.out / f"{name}_{split}_results.json").write_text(json.dumps(figures["results"]))
        first = next(iter(splits))
        _, data, ids = splits[first]
        entry["latency_ms"] = {f"top_{k}": latency_ms(model, grids[first], data, ids, k, args.latency_questions)
                               for k in (1, 5)}
        report["runs"][name] = entry
        print(name, json.dumps({k: v for k, v in entry.items() if k != "splits"}), flush=True)
        for split, s in entry["splits"].items():
            print(f"  {split}: overall {s['overall']:.4f} outside {s['outside_accuracy']} "
                  f"({s['outside_questions']}) pointing {s['pointing']} answer-pointing {s['answer_word_pointing']}",
                  flush=True)
    if args.latency_only:
        (args.out / "latency.json").write_text(json.dumps(report, indent=1))
        return
    (args.out / "report.json").write_text(json.dumps(report, indent=1))
    (args.out / "table.md").write_text(markdown(report))


def markdown(report: dict[str, Any]) -> str:
    """The side-by-side tables of ``docs/vqa_heads.md``."""
    runs = report["runs"]
    names = list(runs)
    fmt = lambda v: "n/a" if v is None else f"{v:.3f}"  # noqa: E731
    lines = ["| figure | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
    splits = list(next(iter(runs.values()))["splits"])
    for split in splits:
        rows = [runs[n]["splits"][split] for n in names]
        lines.append(f"| **{split}**: VQA accuracy (official), {rows[0]['questions']} questions | "
                     + " | ".join(fmt(r["overall"]) for r in rows) + " |")
        for t in sorted(rows[0]["per_question_type"]):
            lines.append(f"| {split}: {t} | " + " | ".join(fmt(r["per_question_type"].get(t)) for r in rows) + " |")
        lines.append(f"| {split}: answer outside the classifier's {report['classifier_answers']} answers "
                     f"({rows[0]['outside_questions']} questions): accuracy | "
                     + " | ".join(fmt(r["outside_accuracy"]) for r in rows) + " |")
        lines.append(f"| {split}: answers said outside those {report['classifier_answers']} | "
                     + " | ".join(str(r["said_outside_vocab"]) for r in rows) + " |")
        lines.append(f"| {split}: pointing game, one-object questions (n={rows[0]['pointing_n']}, chance "
                     f"{fmt(rows[0]['pointing_chance'])}), glimpses | " + " | ".join(fmt(r["pointing"]) for r in rows) + " |")
        lines.append(f"| {split}: pointing game, answer words' maps | "
                     + " | ".join(fmt(r["answer_word_pointing"]) for r in rows) + " |")
    lines.append("| epochs trained | " + " | ".join(str(runs[n]["epochs"]) for n in names) + " |")
    lines.append("| validation accuracy by epoch | "
                 + " | ".join(" / ".join(f"{v:.3f}" for v in runs[n]["val_accuracy"]) for n in names) + " |")
    lines.append("| training seconds per epoch (median) | "
                 + " | ".join(f"{runs[n]['train_s_per_epoch']:.0f}" for n in names) + " |")
    lines.append("| answer latency, ms per question, top-1 | "
                 + " | ".join(f"{runs[n]['latency_ms']['top_1']:.1f}" for n in names) + " |")
    lines.append("| answer latency, ms per question, top-5 | "
                 + " | ".join(f"{runs[n]['latency_ms']['top_5']:.1f}" for n in names) + " |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
