"""Train every caption decoder variant on the same shapes data and write ``docs/decoders.md``.

Each variant (default: lstm, gru, peephole, rnn, transformer with one layer, and a 2-layer lstm) gets
the same run config (``configs/shapes_caption.yaml``: hidden size, optimiser, batch size), the same
training images, seed and epoch budget (no early stopping). Reported, all from this one run:

* decoder parameters; training throughput (captions/s, the metrics log's ``items_per_s``, median over
  epochs); training time (optimisation only, and wall time including validation) until the first
  epoch whose validation CIDEr-D reaches a fixed target;
* test BLEU-4, CIDEr-D (beam 3), object hallucination CHAIR-i, pointing game of the words that name an
  object (the model card's definitions: ``mmapp/model_card.py``);
* beam-search latency: beam 3, one image's cached grid, decoder only, median of ``--latency-repeats``;
* whether "the Transformer trains faster (about 4x)" holds here, computed from those numbers;
* vanishing gradients (``scripts/vanishing_gradients.py``) of untrained and of the trained decoders.

    python scripts/compare_decoders.py --data data/shapes --test-data data/shapes_test --out runs/compare_decoders
    # smoke test: python scripts/compare_decoders.py --data /tmp/sh_small --epochs 1 --train-images 200 \\
    #     --out /tmp/cmp --doc /tmp/cmp/decoders.md --note "tiny smoke run"
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import shlex
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from vanishing_gradients import first_word_gradients, markdown as gradient_markdown, untrained_decoder  # noqa: E402

from mmapp.trainer import Run  # noqa: E402


class TimedRun(Run):
    """A training run that also records the wall time (validation included) at the end of each epoch."""

    def fit(self) -> dict:
        self.started, self.epoch_walls = time.perf_counter(), []
        return super().fit()

    def _train_epoch(self) -> None:
        super()._train_epoch()
        self.epoch_walls.append(time.perf_counter() - self.started)


def parse_variants(text: str) -> list[tuple[str, str, int]]:
    """"lstm,transformer,lstm:2" -> [(name, cell, layers)]: ("lstm", "lstm", 1), ..., ("lstm x2", "lstm", 2)."""
    out = []
    for item in filter(None, (s.strip() for s in text.split(","))):
        cell, _, layers = item.partition(":")
        n = int(layers or 1)
        out.append((cell if n == 1 else f"{cell} x{n}", cell, n))
    return out


def subset_captions(src: Path, n: int, dst: Path) -> Path:
    """The first ``n`` images (by id) of a COCO captions file and their captions, written to ``dst``."""
    data = json.loads(src.read_text())
    images = sorted(data["images"], key=lambda im: im["id"])[:n]
    keep = {im["id"] for im in images}
    data = dict(data, images=images, annotations=[a for a in data["annotations"] if a["image_id"] in keep])
    dst.parent.mkdir(parents=True, exist_ok=True)
    dst.write_text(json.dumps(data))
    return dst


def load_split(data_dir: Path, split: str, limit: int) -> dict[str, Any]:
    """Images, reference captions and objects (colour, shape, size, box) of one split of a shapes folder."""
    ann = data_dir / "annotations"
    captions = json.loads((ann / f"captions_{split}.json").read_text())
    instances = json.loads((ann / f"instances_{split}.json").read_text())
    shapes = {c["id"]: c["name"] for c in instances["categories"]}
    images = {im["id"]: im for im in captions["images"]}
    ids = sorted(images)[: limit or None]
    refs: dict[int, list[str]] = {i: [] for i in ids}
    for a in captions["annotations"]:
        if a["image_id"] in refs:
            refs[a["image_id"]].append(a["caption"])
    objects: dict[int, list[dict]] = {i: [] for i in ids}
    for a in instances["annotations"]:
        if a["image_id"] in objects:
            objects[a["image_id"]].append({"shape": shapes[a["category_id"]], "color": a["color"],
                                           "size": a["size"], "bbox": a["bbox"]})
    return {"ids": ids, "images": images, "refs": refs, "objects": objects, "split": split,
            "root": data_dir / "images" / split}


def split_features(split: dict[str, Any], cache: Any, same_folder: bool, captioner: Any) -> torch.Tensor:
    """(N, P, D) grids of the split's images: from the feature cache when it was built on this data
    folder and holds them all, else encoded by the captioner's (frozen) encoder."""
    files = [split["images"][i]["file_name"] for i in split["ids"]]
    rows = [cache.find(f"{split['split']}/{f}") for f in files] if same_folder else [None]
    if all(r is not None for r in rows):
        return torch.from_numpy(np.stack([cache.get_row(r) for r in rows]).astype(np.float32))
    out = []
    for start in range(0, len(files), 32):
        features, _ = captioner.encode([str(split["root"] / f) for f in files[start:start + 32]])
        out.append(features.float().cpu())
    return torch.cat(out)


def test_metrics(captioner: Any, features: torch.Tensor, split: dict[str, Any], beam: int, max_len: int) -> dict:
    """BLEU-4, CIDEr-D, CHAIR-i and the caption words' pointing game on one split (model card definitions)."""
    from mmapp.metrics.grounding import summarize_grounding
    from mmapp.model_card import caption_figures

    figures = caption_figures(captioner, features, split, split["ids"], beam, max_len, with_meteor=False)
    scores, grounding = figures["scores"].overall, figures["grounding"]
    pointing = summarize_grounding(grounding) if grounding else None
    return {"Bleu_4": scores["Bleu_4"], "CIDEr": scores["CIDEr"],
            "chair_i": figures["hallucination"]["chair_i"],
            "pointing_game": pointing["hit_rate"] if pointing else None,
            "pointing_chance": pointing["chance"] if pointing else None,
            "examples": [figures["captions"][i] for i in split["ids"][:3]]}


def beam_latency_ms(captioner: Any, grid: torch.Tensor, beam: int, max_len: int, repeats: int) -> float:
    """Median milliseconds of one beam search over one image's grid (1, P, D), after 3 warm-up runs."""
    times = []
    for i in range(repeats + 3):
        if captioner.device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        captioner.caption_features(grid, beam_size=beam, max_len=max_len)
        if captioner.device.type == "cuda":
            torch.cuda.synchronize()
        if i >= 3:
            times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def machine_description(device: str) -> str:
    """CPU model and count, torch threads, the device (GPU name) and the torch version."""
    import os

    cpu = platform.machine()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        cpu = next((line.split(":", 1)[1].strip() for line in cpuinfo.read_text().splitlines()
                    if line.startswith("model name")), cpu)
    if device.startswith("cuda"):
        device = f"{device} ({torch.cuda.get_device_name(torch.device(device))})"
    return (f"{os.cpu_count()} x {cpu}, {torch.get_num_threads()} torch threads, device {device}, "
            f"torch {torch.__version__}")


def time_to_target(history: list[dict], walls: list[float], target: float) -> tuple[float, float, int] | None:
    """(training seconds, wall seconds, epoch) at the first epoch whose validation CIDEr-D >= target."""
    train_seconds = 0.0
    for h, wall in zip(history, walls):
        train_seconds += h["train"]["seconds"]
        if h["val"].get("CIDEr", -1.0) >= target:
            return train_seconds, wall, h["epoch"]
    return None


def default_target(results: dict[str, dict]) -> tuple[float, str]:
    """0.8 x the lower of the 1-layer LSTM's and the Transformer's best validation CIDEr-D (both reach
    it), or of all variants' when one of the two is missing."""
    pair = [results[n]["best_val"] for n in ("lstm", "transformer") if n in results]
    pool = pair if len(pair) == 2 else [r["best_val"] for r in results.values()]
    which = "the 1-layer LSTM's and the Transformer's" if len(pair) == 2 else "the variants'"
    return round(0.8 * min(pool), 3), f"0.8 x the lower of {which} best validation CIDEr-D"


def verdict(ratio: float | None) -> str:
    if ratio is None:
        return "cannot be judged (a model never reached the target)"
    if ratio >= 3.0:
        return "holds"
    if ratio >= 1.5:
        return "does not hold: faster, but well short of 4x"
    if ratio > 1 / 1.5:
        return "does not hold: no clear difference"
    return "does not hold: the Transformer is slower"


def claim_section(results: dict[str, dict], target: float) -> str:
    """"The Transformer trains faster (about 4x)" against the 1-layer LSTM, from the measured numbers."""
    if "transformer" not in results or "lstm" not in results:
        return "The claim needs both a `transformer` and an `lstm` variant in the run.\n"
    tr, ls = results["transformer"], results["lstm"]
    throughput = tr["captions_per_s"] / ls["captions_per_s"]
    to_target = (ls["to_target"][0] / tr["to_target"][0]) if tr["to_target"] and ls["to_target"] else None
    wall = (ls["to_target"][1] / tr["to_target"][1]) if to_target else None
    lines = [f"- Training throughput: the Transformer processes **{throughput:.2f}x** the captions per second "
             f"of the 1-layer LSTM ({tr['captions_per_s']:.0f} vs {ls['captions_per_s']:.0f}/s): "
             f"the claim **{verdict(throughput)}** for throughput."]
    if to_target:
        lines.append(f"- Time to validation CIDEr-D >= {target:.3f}: the Transformer needs **{1 / to_target:.2f}x** "
                     f"the LSTM's training time ({tr['to_target'][0]:.1f} s vs {ls['to_target'][0]:.1f} s; "
                     f"speed-up {to_target:.2f}x; wall time with validation: speed-up {wall:.2f}x): "
                     f"the claim **{verdict(to_target)}** for time to a fixed quality.")
    else:
        who = " and ".join(n for n, r in (("the Transformer", tr), ("the LSTM", ls)) if not r["to_target"])
        lines.append(f"- Time to validation CIDEr-D >= {target:.3f}: {who} never reached it, so the claim "
                     f"{verdict(None)} for time to a fixed quality.")
    lines.append("- Rule: the claim holds where the speed-up is at least 3x; a speed-up of 1.5-3x is "
                 "\"faster, but well short of 4x\"; within 1.5x either way, no clear difference.")
    return "\n".join(lines) + "\n"


def curves_table(results: dict[str, dict]) -> str:
    """Validation CIDEr-D after each epoch, one row per variant."""
    epochs = max(len(r["history"]) for r in results.values())
    lines = ["| decoder | " + " | ".join(f"epoch {e + 1}" for e in range(epochs)) + " |",
             "|---|" + "---|" * epochs]
    for name, r in results.items():
        cider = [f"{h['val'].get('CIDEr', float('nan')):.3f}" for h in r["history"]]
        lines.append(f"| {name} | " + " | ".join(cider + ["-"] * (epochs - len(cider))) + " |")
    return "\n".join(lines) + "\n"


def fmt(value: Any, spec: str = ".3f") -> str:
    return "n/a" if value is None else format(value, spec)


def write_doc(path: Path, results: dict[str, dict], target: float, target_note: str, gradients: str,
              setup: dict[str, Any], note: str) -> None:
    lines = ["# Caption decoders compared", ""]
    if note:
        lines += [f"> **{note}**", ""]
    lines += [
        f"Written by `{setup['command']}` on {setup['date']}: {setup['machine']}. Data: {setup['data']}.",
        f"Every variant: the run config `{setup['config']}` ({setup['dims']}), seed {setup['seed']}, "
        f"{setup['epochs']} epochs, no early stopping. Validation: {setup['val']}; test: {setup['test']}.",
        "",
        "| decoder | parameters | train captions/s | train s to target (wall s, epoch) | best val CIDEr-D | "
        "test BLEU-4 | test CIDEr-D | CHAIR-i | pointing game | beam-3 latency (ms) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, r in results.items():
        t = r["to_target"]
        reach = f"{t[0]:.1f} ({t[1]:.1f}, {t[2]})" if t else "not reached"
        m = r["test"]
        lines.append(f"| {name} | {r['parameters']:,} | {r['captions_per_s']:.0f} | {reach} | {r['best_val']:.3f} | "
                     f"{fmt(m['Bleu_4'])} | {fmt(m['CIDEr'])} | {fmt(m['chair_i'])} | {fmt(m['pointing_game'])} | "
                     f"{r['latency_ms']:.1f} |")
    chance = [r["test"]["pointing_chance"] for r in results.values() if r["test"]["pointing_chance"] is not None]
    lines += [
        "",
        f"Target: validation CIDEr-D >= {target:.3f} ({target_note}). \"train s\" counts optimisation only (the "
        "metrics log's per-epoch `seconds`); wall s adds validation (beam search + scoring) and checkpoints. "
        "Resolution: one epoch (validation runs after each), so a model that gets there within its first epoch "
        "is charged the whole epoch.",
        "Parameters: the decoder's (the frozen encoder is the same for all). Latency: decoder only, beam 3, "
        f"one image's cached grid, median of {setup['repeats']} runs on {setup['device']}.",
        "Pointing game: share of the caption's object words whose attention peak falls in the box of a matching "
        f"object (chance: {fmt(statistics.mean(chance) if chance else None)}). CHAIR-i: share of object mentions "
        "not in the image. The Transformer's map is its last layer's cross-attention averaged over heads.",
        "",
        "Validation CIDEr-D after each epoch:",
        "",
        curves_table(results),
        "## Does \"the Transformer trains faster (about 4x)\" hold?",
        "",
        claim_section(results, target),
        "## Vanishing gradients",
        "",
        "The loss at the LAST word of a caption of T synthetic words, differentiated w.r.t. the FIRST word's "
        "input embedding: `|g_1|` = mean ||dL_T/de_1|| over 16 captions, in brackets `|g_1|/|g_T|` (relative "
        "to the last word's own embedding); per-word factor: how much that ratio shrinks per extra word "
        "(1 = no vanishing). Untrained: one seed, PyTorch's default initialisation (same weight scale for the "
        "cells), random N(0, 1) grids; trained: this run's best checkpoints on test grids. `0.00e+00` is float32 "
        "underflow; n/a: T beyond the Transformer's `max_len`. Reproduce: `scripts/vanishing_gradients.py`.",
        "",
        gradients,
        "Sample test captions (first 3 test images, beam 3):",
        "",
    ]
    for name, r in results.items():
        lines.append(f"- {name}: " + " / ".join(f"\"{c}\"" for c in r["test"]["examples"]))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True, help="a shapes dataset folder (mmapp data shapes)")
    parser.add_argument("--features", help="its feature cache (default: DATA/features)")
    parser.add_argument("--test-data", help="folder of the test split (default: --data)")
    parser.add_argument("--test-split", default="test")
    parser.add_argument("--config", default="configs/shapes_caption.yaml")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="extra config overrides")
    parser.add_argument("--variants", default="lstm,gru,peephole,rnn,transformer,lstm:2",
                        help="comma-separated cell[:layers]")
    parser.add_argument("--epochs", type=int, help="epochs per variant (default: the config's train.epochs)")
    parser.add_argument("--train-images", type=int, default=0, help="train on the first N images only (0: all)")
    parser.add_argument("--val-images", type=int, default=0, help="validate on the first N images (0: all)")
    parser.add_argument("--test-images", type=int, default=0, help="test on the first N images (0: all)")
    parser.add_argument("--target-cider", type=float,
                        help="validation CIDEr-D to reach (default: 0.8 x the lower of the lstm's and the "
                             "transformer's best validation CIDEr-D)")
    parser.add_argument("--latency-repeats", type=int, default=20)
    parser.add_argument("--lengths", default="10,20,40,80", help="caption lengths for the vanishing-gradient table")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--out", default="runs/compare_decoders", help="folder for the runs and results.json")
    parser.add_argument("--doc", default="docs/decoders.md")
    parser.add_argument("--note", default="", help="a line shown at the top of the document")
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args()

    from mmapp.config import load_config
    from mmapp.data.feature_cache import FeatureCache
    from mmapp.inference import Captioner
    from mmapp.run_config import RunConfig
    from mmapp.tasks.caption import CaptionTask

    data, out = Path(args.data), Path(args.out)
    features_dir = Path(args.features or data / "features")
    test_dir = Path(args.test_data or data)
    ann = data / "annotations"
    train_file = ann / "captions_train.json"
    if args.train_images:
        subset = out / f"captions_train_first{args.train_images}.json"
        train_file = subset_captions(train_file, args.train_images, subset)
    epochs = args.epochs or load_config(RunConfig, args.config, args.set).train.epochs
    common = [f"data.features={features_dir}", f"data.train_captions={train_file}",
              f"data.val_captions={ann / 'captions_val.json'}", f"data.val_limit={args.val_images}",
              f"train.epochs={epochs}", f"train.patience={epochs + 1}", f"train.device={args.device}", *args.set]
    split = load_split(test_dir, args.test_split, args.test_images)
    cache = FeatureCache.open(features_dir)
    lengths = [int(t) for t in args.lengths.split(",")]

    results: dict[str, dict] = {}
    test_grids = None
    gradient_rows: dict[str, dict] = {}
    cfg, vocab_size, device = None, 0, ""
    for name, cell, layers in parse_variants(args.variants):
        run_dir = out / name.replace(" ", "")
        cfg = load_config(RunConfig, args.config, ["task=caption", f"out={run_dir}", *common,
                                                   f"decoder.cell={cell}", f"decoder.num_layers={layers}"])
        print(f"== {name}: training {epochs} epochs in {run_dir}", file=sys.stderr, flush=True)
        run = TimedRun(cfg, CaptionTask, quiet=args.quiet)
        fit = run.fit()
        captioner = Captioner.from_checkpoint(run_dir / "best.safetensors", args.device)
        if test_grids is None:
            test_grids = split_features(split, cache, test_dir.resolve() == data.resolve(), captioner)
        max_len = cfg.data.max_caption_len
        results[name] = {
            "cell": cell, "layers": layers,
            "parameters": sum(p.numel() for p in run.model.head.parameters()),
            "captions_per_s": statistics.median(h["train"]["items_per_s"] for h in fit["history"]),
            "history": fit["history"], "epoch_walls": run.epoch_walls, "best_val": fit["best"],
            "test": test_metrics(captioner, test_grids, split, 3, max_len),
            "latency_ms": beam_latency_ms(captioner, test_grids[:1], 3, max_len, args.latency_repeats),
        }
        vocab_size, device = len(captioner.vocab), str(captioner.device)
        head = captioner.head.cpu()
        gradient_rows[f"{name} (trained)"] = first_word_gradients(head, test_grids[:16], lengths)
        print(f"== {name}: {json.dumps({k: v for k, v in results[name]['test'].items() if k != 'examples'})}",
              file=sys.stderr, flush=True)

    assert cfg is not None and test_grids is not None, "no variants given"
    target, target_note = default_target(results) if args.target_cider is None else (args.target_cider, "given")
    for r in results.values():
        r["to_target"] = time_to_target(r["history"], r["epoch_walls"], target)

    d = cfg.decoder
    noise = torch.randn(16, test_grids.shape[1], test_grids.shape[2], generator=torch.Generator().manual_seed(0))
    untrained = {}
    for cell in ("rnn", "lstm", "gru", "peephole", "transformer"):
        decoder = untrained_decoder(cell, vocab_size, test_grids.shape[2], d.hidden_dim, d.embed_dim, d.attention_dim,
                                    d.num_heads, max(lengths))
        untrained[f"{cell} (untrained)"] = first_word_gradients(decoder, noise, lengths)
    gradients = gradient_markdown({**untrained, **gradient_rows}, lengths)
    print(gradients, file=sys.stderr)

    setup = {
        "command": "python " + " ".join(shlex.quote(a) for a in sys.argv if a != args.note).replace(" --note", ""),
        "date": datetime.date.today().isoformat(),
        "machine": machine_description(device),
        "data": f"{len(json.loads(Path(train_file).read_text())['images'])} training images ({train_file}), "
                f"grid {cache.grid_size[0]}x{cache.grid_size[1]} x {cache.dim} ({features_dir})",
        "config": args.config, "seed": cfg.train.seed, "epochs": epochs,
        "dims": f"hidden {d.hidden_dim}, embed {d.embed_dim}, attention {d.attention_dim}, project {d.project_dim}, "
                f"heads {d.num_heads}, dropout {d.dropout}, batch {cfg.train.batch_size} images, lr {cfg.train.lr}",
        "val": f"beam {cfg.train.val_beam_size}, " + (f"first {args.val_images} images" if args.val_images else "all"),
        "test": f"{len(split['ids'])} images of {test_dir}/{args.test_split}, beam 3",
        "repeats": args.latency_repeats, "device": device,
    }
    write_doc(Path(args.doc), results, target, target_note, gradients, setup, args.note)
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps({"target": target, "setup": setup, "results": results,
                                                  "gradients": gradient_rows | untrained}, indent=1, default=str))
    print(Path(args.doc).read_text())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
