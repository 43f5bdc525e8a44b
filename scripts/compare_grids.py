"""Which 14x14 grid grounds better per second of extraction: 448 input with the last stage, or 224
input with the stride-16 stage joined to it? Writes ``docs/grids.md``.

Both grids are 14x14 (P = 196) from the same EfficientNet-Lite0:

* ``joined@224``: ``encoder.grid=joined encoder.input_size=224``, D = 112 + 1280 = 1392;
* ``last@448``:   ``encoder.grid=last   encoder.input_size=448``, D = 1280.

For each grid the script (1) times feature extraction (``mmapp.data.feature_extraction.extract_features``, the
code behind ``mmapp features``: decode, resize, encoder, float16 write; no decoding workers, so the
torch threads are all it uses) on the same ``--timing-images`` training images after a warm-up,
best of ``--timing-repeats``; (2) builds a feature cache of the first N training and M validation
scenes; (3) trains the default VQA config (``configs/shapes_vqa.yaml``) on it with the same seed and
epochs (no early stopping); (4) scores the final epoch's model on the M validation scenes: VQA
accuracy (official metric) and the pointing game (peak of the glimpse-averaged attention inside the
box of the object a question refers to; questions that refer to exactly one object, as in
``mmapp/model_card.py``), per question type, with its chance level (the mean box share of the image).

"Grounding per second" = extraction images/s x (pointing game - chance): correctly grounded scenes
beyond chance that one second of extraction buys. The verdict compares it between the two grids.

    python scripts/compare_grids.py --data data/shapes --out runs/compare_grids --doc docs/grids.md
    # smoke test: python scripts/compare_grids.py --data data/shapes --train-images 60 --val-images 30 \\
    #     --epochs 1 --timing-images 20 --timing-repeats 1 --out /tmp/cmp_grids --doc /tmp/cmp_grids/grids.md
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import math
import os
import platform
import shlex
import shutil
import statistics
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch

# (name, encoder.grid, encoder.input_size): the two ways to a 14x14 grid.
GRIDS: tuple[tuple[str, str, int], ...] = (("joined@224", "joined", 224), ("last@448", "last", 448))


# ------------------------------------------------------------------------------------------ data
def split_images(data: Path, split: str, limit: int) -> list[dict]:
    """The first ``limit`` images (by id) of a split: ``{"id", "file_name", "width", "height"}``."""
    instances = json.loads((data / "annotations" / f"instances_{split}.json").read_text())
    return sorted(instances["images"], key=lambda im: im["id"])[:limit]


def write_subset(data: Path, split: str, image_ids: set[int], out: Path) -> tuple[Path, Path]:
    """VQA v2 questions and annotations of ``split`` restricted to ``image_ids``, written into ``out``."""
    ann = data / "annotations"
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for kind, key in (("questions", "questions"), ("annotations", "annotations")):
        full = json.loads((ann / f"{kind}_{split}.json").read_text())
        subset = dict(full, **{key: [r for r in full[key] if r["image_id"] in image_ids]})
        path = out / f"{kind}_{split}_first{len(image_ids)}.json"
        path.write_text(json.dumps(subset))
        paths.append(path)
    return paths[0], paths[1]


def object_boxes(data: Path, split: str) -> dict[int, list[float]]:
    """Instance id -> COCO box [x, y, w, h] of a split."""
    instances = json.loads((data / "annotations" / f"instances_{split}.json").read_text())
    return {a["id"]: a["bbox"] for a in instances["annotations"]}


# ------------------------------------------------------------------------------------ extraction
def time_extraction(images: list[dict], root: Path, encoder: Any, scratch: Path, batch_size: int,
                    device: str, repeats: int) -> dict[str, float]:
    """Best-of-``repeats`` images/s of ``extract_features`` on ``images`` (a fresh cache each time,
    after a warm-up forward pass); a busy machine only slows a run down, so the best is the fairest."""
    from mmapp.data.feature_extraction import extract_features

    s = encoder.cfg.input_size
    encoder = encoder.eval().to(device)
    with torch.inference_mode():
        encoder(torch.zeros(2, 3, s, s, device=device))  # one-off allocations and kernel choice
    paths = [root / im["file_name"] for im in images]
    keys = [im["file_name"] for im in images]
    speeds = []
    for _ in range(repeats):
        shutil.rmtree(scratch, ignore_errors=True)
        cache = extract_features(paths, keys, encoder, scratch, batch_size=batch_size, device=device,
                                 num_workers=0, progress=False)
        speeds.append(cache.run_stats["images"] / cache.run_stats["seconds"])
    shutil.rmtree(scratch, ignore_errors=True)
    best = max(speeds)
    return {"images": len(images), "images_per_s": best, "s_per_1000": 1000 / best, "all_images_per_s": speeds}


def build_cache(data: Path, images: dict[str, list[dict]], encoder: Any, out: Path, batch_size: int,
                device: str, quiet: bool) -> tuple[Any, dict | None]:
    """A feature cache of the given train/val images (keys ``<split>/<file name>`` and image ids);
    resumed or reused when ``out`` already holds it. Returns (cache, extraction stats)."""
    from mmapp.data.feature_extraction import extract_features

    paths, keys, ids = [], [], []
    for split, ims in images.items():
        for im in ims:
            paths.append(data / "images" / split / im["file_name"])
            keys.append(f"{split}/{im['file_name']}")
            ids.append(im["id"])
    cache = extract_features(paths, keys, encoder, out, batch_size=batch_size, device=device, num_workers=0,
                             image_ids=ids, progress=not quiet)
    return cache, cache.meta.get("extraction")


# ------------------------------------------------------------------------------------ evaluation
def evaluate(checkpoint: Path, cache: Any, questions_path: Path, annotations_path: Path,
             images: list[dict], boxes: dict[int, list[float]], device: str) -> dict[str, Any]:
    """VQA accuracy and the pointing game (glimpse-averaged attention) of one checkpoint on cached grids."""
    from mmapp.inference import VQAModel
    from mmapp.metrics.grounding import score_grounding, summarize_grounding
    from mmapp.metrics.vqa_accuracy import vqa_accuracy

    model = VQAModel.from_checkpoint(checkpoint, device)
    questions_json = json.loads(questions_path.read_text())
    annotations_json = json.loads(annotations_path.read_text())
    anns = {a["question_id"]: a for a in annotations_json["annotations"]}
    sizes = {im["id"]: (im["width"], im["height"]) for im in images}
    questions = questions_json["questions"]
    H, W = model.grid
    results, scores, groups = [], [], []
    for start in range(0, len(questions), 256):
        chunk = questions[start:start + 256]
        rows = [cache.row(q["image_id"]) for q in chunk]
        grids = torch.from_numpy(cache.array[rows].astype(np.float32))  # (B, P, D)
        probs, attention = model.answer_features(grids, [q["question"] for q in chunk])  # (B, N), (B, G, P)
        maps = attention.float().mean(dim=1).cpu().numpy().reshape(len(chunk), H, W)  # mean over glimpses
        for q, best, amap in zip(chunk, probs.argmax(-1).tolist(), maps):
            results.append({"question_id": q["question_id"], "answer": model.answer_vocab.answers[best]})
            ann = anns[q["question_id"]]
            if len(ann.get("object_ids", [])) == 1:
                scores.append(score_grounding(amap, sizes[q["image_id"]], boxes[ann["object_ids"][0]]))
                groups.append(ann["question_type"])
    accuracy = vqa_accuracy(results, questions_json, annotations_json)
    pointing = summarize_grounding(scores, groups) if scores else None
    return {"accuracy": accuracy["overall"], "accuracy_by_type": accuracy["per_question_type"],
            "questions": len(questions), "pointing": pointing}


def grounding_per_second(images_per_s: float, pointing: dict | None) -> float | None:
    """Scenes grounded beyond chance per second of extraction: images/s x (pointing game - chance)."""
    if pointing is None:
        return None
    return images_per_s * (pointing["hit_rate"] - pointing["chance"])


def standard_error(p: float, n: int) -> float:
    return math.sqrt(max(p * (1 - p), 0.0) / max(n, 1))


def verdict(results: dict[str, dict]) -> str:
    """One line from the numbers: which grid buys more above-chance grounding per extraction second,
    and whether the pointing games differ by more than two standard errors."""
    (name_a, a), (name_b, b) = results.items()
    pa, pb = a["eval"]["pointing"], b["eval"]["pointing"]
    if pa is None or pb is None:
        return "No verdict: no validation question refers to exactly one object."
    ga, gb = a["grounding_per_s"], b["grounding_per_s"]
    if ga <= 0 and gb <= 0:
        return (f"No verdict: neither grid points above chance yet (pointing game {pa['hit_rate']:.3f} and "
                f"{pb['hit_rate']:.3f}, chance {pa['chance']:.3f}); train longer or on more scenes.")
    (win, w), (lose, lo) = sorted(results.items(), key=lambda kv: -kv[1]["grounding_per_s"])
    pw, pl = w["eval"]["pointing"], lo["eval"]["pointing"]
    diff = pw["hit_rate"] - pl["hit_rate"]
    noise = 2 * math.hypot(standard_error(pw["hit_rate"], pw["n"]), standard_error(pl["hit_rate"], pl["n"]))
    ratio = (f"{w['grounding_per_s'] / lo['grounding_per_s']:.1f}x the above-chance grounded scenes per "
             f"extraction second of {lose}" if lo["grounding_per_s"] > 0
             else f"{lose} points no better than chance")
    speed = w["timing"]["images_per_s"] / lo["timing"]["images_per_s"]
    if abs(diff) <= noise:
        quality = f"pointing game {pw['hit_rate']:.3f} vs {pl['hit_rate']:.3f}, within noise (2 SE = {noise:.3f})"
    elif diff > 0:
        quality = (f"it also points better per question: {pw['hit_rate']:.3f} vs {pl['hit_rate']:.3f} "
                   f"(2 SE = {noise:.3f})")
    else:
        quality = (f"although {lose} points better per question: {pl['hit_rate']:.3f} vs {pw['hit_rate']:.3f} "
                   f"(beyond 2 SE = {noise:.3f})")
    return (f"**{win} grounds better per second of extraction**: {ratio}; it extracts at {speed:.2f}x the "
            f"images/s of {lose}; {quality}.")


# ------------------------------------------------------------------------------------------ doc
def machine_facts(device: str) -> str:
    cpu = platform.machine()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        cpu = next((ln.split(":", 1)[1].strip() for ln in cpuinfo.read_text().splitlines()
                    if ln.startswith("model name")), cpu)
    if device.startswith("cuda"):
        device = f"{device} ({torch.cuda.get_device_name(torch.device(device))})"
    return (f"{os.cpu_count()} x {cpu}; torch.get_num_threads() = {torch.get_num_threads()}; device {device}; "
            f"torch {torch.__version__}; Python {platform.python_version()}")


def fmt(value: float | None, spec: str = ".3f") -> str:
    return "n/a" if value is None else format(value, spec)


def write_doc(path: Path, results: dict[str, dict], setup: dict[str, Any]) -> None:
    types = sorted({t for r in results.values() if r["eval"]["pointing"]
                    for t in r["eval"]["pointing"].get("by_group", {})})
    head = ["grid", "input", "D", "extraction images/s", "s per 1000 images", "cache MB per 1000 images",
            "train s/epoch", "VQA accuracy", "pointing game", *[f"pointing: {t}" for t in types],
            "grounded scenes per extraction s (above chance)"]
    lines = ["# 14x14 grids compared: joined stride-16 stage at 224 vs last stage at 448", ""]
    if setup["note"]:
        lines += [f"> **{setup['note']}**", ""]
    lines += [
        f"Measured on **{setup['train_images']} training scenes, {setup['epochs']} "
        f"epoch{'s' if setup['epochs'] != 1 else ''}** (validation: "
        f"{setup['val_images']} scenes, {setup['val_questions']} questions); written by `{setup['command']}` "
        f"on {setup['date']}.",
        "",
        f"Machine: {setup['machine']}. Load average (1 min) {setup['load_before']:.2f} at the start, "
        f"{setup['load_after']:.2f} at the end: other work on the machine slows extraction down.",
        "",
        "| " + " | ".join(head) + " |",
        "|" + "---|" * len(head),
    ]
    for name, r in results.items():
        t, e, p = r["timing"], r["eval"], r["eval"]["pointing"]
        by = p.get("by_group", {}) if p else {}
        cells = [name, f"{r['input_size']}x{r['input_size']}", str(r["dim"]), f"{t['images_per_s']:.1f}",
                 f"{t['s_per_1000']:.0f}", f"{r['cache_mb_per_1000']:.0f}", f"{r['train_s_per_epoch']:.1f}",
                 f"{e['accuracy']:.3f}", f"{fmt(p and p['hit_rate'])} (n={p['n'] if p else 0})",
                 *[fmt(by[t]["hit_rate"]) if t in by else "n/a" for t in types],
                 fmt(r["grounding_per_s"], ".2f")]
        lines.append("| " + " | ".join(cells) + " |")
    chance = next((r["eval"]["pointing"] for r in results.values() if r["eval"]["pointing"]), None)
    if chance:
        per_type = ", ".join(f"{t} {chance['by_group'][t]['chance']:.3f}" for t in types)
        lines += ["", f"Chance level of the pointing game (mean share of the image the referred box covers, the "
                      f"same questions for both grids): {chance['chance']:.3f} overall; {per_type}."]
    lines += [
        "",
        f"**Verdict:** {setup['verdict']}",
        "",
        "## How it is measured",
        "",
        f"- Extraction: `mmapp.data.feature_extraction.extract_features` (what `mmapp features` runs: JPEG decode, bicubic "
        f"resize, EfficientNet-Lite0 forward, float16 write), batch {setup['batch_size']}, no decoding workers, "
        f"on the same first {setup['timing_images']} training images for both grids, after a warm-up forward "
        f"pass; best of {setup['timing_repeats']} runs (all runs, images/s: "
        + "; ".join(f"{n} {', '.join(f'{v:.1f}' for v in r['timing']['all_images_per_s'])}"
                    for n, r in results.items()) + ").",
        "- Subset caches (" + "; ".join(
            f"{n}: {r['cache_stats']['images']} images in {r['cache_stats']['seconds']:.0f} s, "
            f"{r['cache_stats']['images_per_second']:.1f} images/s" if r["cache_stats"] and r["cache_stats"]["images"]
            else f"{n}: reused from an earlier run" for n, r in results.items()) + ") are not the timing figure.",
        f"- Training: `{setup['config']}` (the default VQA model) with the same seed ({setup['seed']}) and "
        f"{setup['epochs']} epoch(s) for both, no early stopping; overrides: data.features, the subset "
        "question/annotation files, train.epochs, train.patience. `train s/epoch`: median optimisation time per "
        "epoch (validation excluded).",
        "- Evaluation: the final epoch's model (`last.safetensors`, not the best-on-validation one, so the "
        "scenes that score it did not pick it) on the validation subset. VQA accuracy: official metric. "
        "Pointing game: share of the questions that refer to exactly one object (`object_ids`) whose "
        "glimpse-averaged attention peaks (centre of the argmax cell) inside that object's box "
        "(`mmapp.metrics.grounding`, no tolerance).",
        "- Grounding per s = extraction images/s x (pointing game - chance): scenes grounded beyond chance per "
        "second of extraction. The verdict names the grid with the higher figure and calls a pointing-game "
        "difference noise when it is within two binomial standard errors.",
        "",
        "Per-type VQA accuracy:",
        "",
    ]
    acc_types = sorted({t for r in results.values() for t in r["eval"]["accuracy_by_type"]})
    lines += ["| grid | " + " | ".join(acc_types) + " |", "|---|" + "---|" * len(acc_types)]
    for name, r in results.items():
        lines.append(f"| {name} | " + " | ".join(fmt(r["eval"]["accuracy_by_type"].get(t)) for t in acc_types) + " |")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")


# ------------------------------------------------------------------------------------------ main
def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default="data/shapes", help="a shapes dataset folder (mmapp data shapes)")
    parser.add_argument("--train-images", type=int, default=1000, help="train on the first N training scenes")
    parser.add_argument("--val-images", type=int, default=300, help="evaluate on the first M validation scenes")
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--config", default="configs/shapes_vqa.yaml")
    parser.add_argument("--timing-images", type=int, default=100, help="images per extraction timing run")
    parser.add_argument("--timing-repeats", type=int, default=2, help="timing runs per grid (the best counts)")
    parser.add_argument("--batch-size", type=int, default=32, help="images per extraction batch")
    parser.add_argument("--threads", type=int, default=2, help="torch threads (extraction and training)")
    parser.add_argument("--device", default="cpu", help="cpu, cuda, ... (extraction, training, evaluation)")
    parser.add_argument("--out", default="runs/compare_grids", help="folder for subsets, caches, runs, results.json")
    parser.add_argument("--doc", default="docs/grids.md")
    parser.add_argument("--note", default="", help="a line shown at the top of the document")
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args()
    if min(args.train_images, args.val_images, args.epochs, args.timing_images, args.timing_repeats) < 1:
        parser.error("--train-images, --val-images, --epochs, --timing-images and --timing-repeats must be >= 1")

    from mmapp.config import load_config
    from mmapp.models.encoder import build_encoder
    from mmapp.run_config import RunConfig
    from mmapp.tasks.vqa import VQATask
    from mmapp.trainer import Run

    torch.set_num_threads(args.threads)
    data, out = Path(args.data), Path(args.out)
    load_before = os.getloadavg()[0]
    train_ims, val_ims = split_images(data, "train", args.train_images), split_images(data, "val", args.val_images)
    timing_ims = split_images(data, "train", args.timing_images)
    train_q, train_a = write_subset(data, "train", {im["id"] for im in train_ims}, out / "subsets")
    val_q, val_a = write_subset(data, "val", {im["id"] for im in val_ims}, out / "subsets")
    boxes = object_boxes(data, "val")
    base = load_config(RunConfig, args.config)

    results: dict[str, dict] = {}
    for name, grid, size in GRIDS:
        tag = name.replace("@", "")
        encoder = build_encoder(dataclasses.replace(base.encoder, grid=grid, input_size=size))
        h, w = encoder.grid_size()
        print(f"== {name}: timing extraction of {len(timing_ims)} images ({h}x{w}x{encoder.out_dim})",
              file=sys.stderr, flush=True)
        timing = time_extraction(timing_ims, data / "images" / "train", encoder, out / f"timing_{tag}",
                                 args.batch_size, args.device, args.timing_repeats)
        print(f"== {name}: {timing['images_per_s']:.1f} images/s; caching {len(train_ims)}+{len(val_ims)} scenes",
              file=sys.stderr, flush=True)
        cache, cache_stats = build_cache(data, {"train": train_ims, "val": val_ims}, encoder,
                                         out / f"features_{tag}", args.batch_size, args.device, args.quiet)
        del encoder
        run_dir = out / f"run_{tag}"
        cfg = load_config(RunConfig, args.config, [
            "task=vqa", f"out={run_dir}", f"data.features={cache.path}",
            f"data.train_questions={train_q}", f"data.train_annotations={train_a}",
            f"data.val_questions={val_q}", f"data.val_annotations={val_a}",
            f"data.image_index={data / 'annotations' / 'captions_train.json'},"
            f"{data / 'annotations' / 'captions_val.json'}",
            f"train.epochs={args.epochs}", f"train.patience={args.epochs + 1}", f"train.seed={args.seed}",
            f"train.device={args.device}"])
        print(f"== {name}: training {args.epochs} epochs in {run_dir}", file=sys.stderr, flush=True)
        fit = Run(cfg, VQATask, quiet=args.quiet).fit()
        scores = evaluate(run_dir / "last.safetensors", cache, val_q, val_a, val_ims, boxes, args.device)
        results[name] = {
            "grid": grid, "input_size": size, "grid_hw": [h, w], "dim": cache.dim, "timing": timing,
            "cache_stats": cache_stats, "cache_mb_per_1000": h * w * cache.dim * 2 * 1000 / 1e6,
            "train_s_per_epoch": statistics.median(e["train"]["seconds"] for e in fit["history"]),
            "history": fit["history"], "eval": scores,
            "grounding_per_s": grounding_per_second(timing["images_per_s"], scores["pointing"]),
        }
        p = scores["pointing"]
        print(f"== {name}: accuracy {scores['accuracy']:.3f}, pointing game {fmt(p and p['hit_rate'])}, "
              f"grounding per s {fmt(results[name]['grounding_per_s'], '.2f')}", file=sys.stderr, flush=True)

    setup = {
        "command": "python scripts/compare_grids.py " + " ".join(shlex.quote(a) for a in sys.argv[1:]),
        "date": datetime.date.today().isoformat(), "machine": machine_facts(args.device),
        "load_before": load_before, "load_after": os.getloadavg()[0], "note": args.note,
        "train_images": len(train_ims), "val_images": len(val_ims),
        "val_questions": next(iter(results.values()))["eval"]["questions"], "epochs": args.epochs,
        "seed": args.seed, "config": args.config, "batch_size": args.batch_size,
        "timing_images": len(timing_ims), "timing_repeats": args.timing_repeats, "verdict": verdict(results),
    }
    (out / "results.json").write_text(json.dumps({"setup": setup, "results": results}, indent=1, default=str))
    write_doc(Path(args.doc), results, setup)
    print(f"verdict: {setup['verdict']}\nwrote {args.doc} and {out / 'results.json'}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
