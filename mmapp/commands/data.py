"""``mmapp data ...``: dataset tools. ``mmapp data shapes`` writes the procedural shapes dataset,
``mmapp data objects`` scenes of real-photo cut-outs, both in the COCO captions / instances, VQA v2
and Karpathy formats; ``mmapp data mix`` joins generated datasets into one."""

from __future__ import annotations

import argparse
import os

from mmapp.data.mix import mix_datasets
from mmapp.data.objects.sources import SOURCES
from mmapp.data.objects.writer import generate as generate_objects
from mmapp.data.shapes.writer import generate as generate_shapes
from mmapp.errors import InputError


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "data", help="dataset tools (generate the shapes or objects datasets, mix them)",
        description="Dataset tools.")
    sub = parser.add_subparsers(dest="data_command", metavar="DATASET", required=True)
    shapes = sub.add_parser(
        "shapes", help="generate procedural shape scenes with captions and VQA questions",
        description=(
            "Generate scenes of 1-6 coloured shapes with 5 captions each (COCO captions format), "
            "object boxes (COCO instances), 5-6 balanced questions each (VQA v2 format) and a "
            "Karpathy split file, under OUT/images/<split>/ and OUT/annotations/. "
            "The output depends only on the seed and the counts, not on --workers."))
    _generator_arguments(shapes, val=1000, size=224, size_note="; geometry scales with it")
    shapes.set_defaults(func=run)

    objects = sub.add_parser(
        "objects", help="generate scenes of real-photo cut-outs with captions and VQA questions",
        description=(
            "Generate scenes of 1-4 real objects (photographs cut out on transparent backgrounds, from "
            "Debian's tuxpaint-stamps-default, and three artists' emoji of the same things: 3D renders from "
            "npm's @lobehub/fluent-emoji-3d, Noto drawings from Debian's fonts-noto-color-emoji and Twemoji "
            "drawings from npm's @twemoji/svg; the nouns "
            "come from mmapp/data/objects/vocabulary.tsv) on varied backgrounds, with 5 captions each, "
            "boxes, balanced questions of 6 types and a Karpathy split file, in the same formats as "
            "`mmapp data shapes`. Validation and test scenes use only source images held out of training. "
            "Install the sources first: bash scripts/install_object_sources.sh"))
    _generator_arguments(objects, val=300, size=448)
    objects.add_argument("--vocabulary", help="source images and their nouns (default: the committed TSV)")
    for source in SOURCES.values():
        objects.add_argument(f"--{source.name}", help=f"{source.label} folder (default {source.default_dir} or "
                             f"${source.env})")
    objects.set_defaults(func=run_objects)

    mix = sub.add_parser(
        "mix", help="join generated datasets (e.g. shapes + objects) into one",
        description=("Write one dataset whose annotation files hold every record of the given dataset folders "
                     "(images are linked, not copied), to train one model on all of them."))
    mix.add_argument("sources", nargs="+", metavar="DIR", help="dataset folders written by `mmapp data ...`")
    mix.add_argument("--out", required=True, help="output folder")
    mix.set_defaults(func=run_mix)


def _generator_arguments(p: argparse.ArgumentParser, val: int, size: int, size_note: str = "") -> None:
    """The options every scene generator takes."""
    p.add_argument("--out", required=True, help="output folder (created if missing)")
    p.add_argument("--train", type=int, default=8000, help="training images (default 8000)")
    p.add_argument("--val", type=int, default=val, help=f"validation images (default {val})")
    p.add_argument("--test", type=int, default=1000, help="test images (default 1000)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--size", type=int, default=size, help=f"image width = height in pixels (default {size}{size_note})")
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1,
                   help="worker processes (default: the number of CPUs; 1 = no subprocesses)")
    p.add_argument("--format", dest="image_format", choices=("jpg", "png"), default="jpg",
                   help="image files: jpg (quality 95, like COCO; default) or png (lossless, slower)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    if args.workers < 1:
        raise InputError(f"--workers must be >= 1, got {args.workers}")
    counts = {"train": args.train, "val": args.val, "test": args.test}
    stats = generate_shapes(args.out, counts, seed=args.seed, size=args.size, workers=args.workers,
                            progress=not args.quiet, image_format=args.image_format)
    return _report(stats, args.workers)


def run_objects(args: argparse.Namespace) -> int:
    if args.workers < 1:
        raise InputError(f"--workers must be >= 1, got {args.workers}")
    counts = {"train": args.train, "val": args.val, "test": args.test}
    stats = generate_objects(args.out, counts, seed=args.seed, size=args.size, workers=args.workers,
                             progress=not args.quiet, image_format=args.image_format, vocabulary=args.vocabulary,
                             folders={source: getattr(args, source) for source in SOURCES})
    return _report(stats, args.workers)


def run_mix(args: argparse.Namespace) -> int:
    for source, splits in mix_datasets(args.sources, args.out).items():
        print(f"{source}: " + ", ".join(f"{split} {n}" for split, n in splits.items()))
    print(f"wrote {args.out}/annotations (images linked under {args.out}/images)")
    return 0


def _report(stats: dict, workers: int) -> int:
    print(f"wrote {stats['images']} images to {stats['out_dir']} in {stats['seconds']:.1f} s "
          f"({stats['images_per_second']:.0f} images/s, {workers} workers)")
    for split, s in stats["splits"].items():
        print(f"{split}: {s['images']} images, {s['captions']} captions, {s['objects']} objects, "
              f"{s['questions']} questions (exists 'no' near misses {s['exists_no_near_miss']:.0%})")
        for qtype, answers in s["answers"].items():
            total = sum(answers.values())
            if len(answers) > 12:  # many nouns: their spread, not each one
                lo, hi = min(answers.values()), max(answers.values())
                shares = f"{len(answers)} answers, {lo}-{hi} questions each"
            else:
                shares = ", ".join(f"{a} {n / total:.0%}" for a, n in answers.items())
            print(f"  {qtype:8s} ({total}): {shares}")
    return 0
