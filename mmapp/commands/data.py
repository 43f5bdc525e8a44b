"""``mmapp data ...``: dataset tools. ``mmapp data shapes`` writes the procedural shapes dataset
in the COCO captions / instances, VQA v2 and Karpathy formats."""

from __future__ import annotations

import argparse
import os


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "data", help="dataset tools (generate the synthetic shapes dataset)",
        description="Dataset tools.")
    sub = parser.add_subparsers(dest="data_command", metavar="DATASET", required=True)
    shapes = sub.add_parser(
        "shapes", help="generate procedural shape scenes with captions and VQA questions",
        description=(
            "Generate scenes of 1-6 coloured shapes with 5 captions each (COCO captions format), "
            "object boxes (COCO instances), 5-6 balanced questions each (VQA v2 format) and a "
            "Karpathy split file, under OUT/images/<split>/ and OUT/annotations/. "
            "The output depends only on the seed and the counts, not on --workers."))
    shapes.add_argument("--out", required=True, help="output folder (created if missing)")
    shapes.add_argument("--train", type=int, default=8000, help="training images (default 8000)")
    shapes.add_argument("--val", type=int, default=1000, help="validation images (default 1000)")
    shapes.add_argument("--test", type=int, default=1000, help="test images (default 1000)")
    shapes.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    shapes.add_argument("--size", type=int, default=224,
                        help="image width = height in pixels (default 224; geometry scales with it)")
    shapes.add_argument("--workers", type=int, default=os.cpu_count() or 1,
                        help="worker processes (default: the number of CPUs; 1 = no subprocesses)")
    shapes.add_argument("--format", dest="image_format", choices=("jpg", "png"), default="jpg",
                        help="image files: jpg (quality 95, like COCO; default) or png (lossless, slower)")
    shapes.add_argument("--quiet", action="store_true", help="no progress bar")
    shapes.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from mmapp.data.shapes.writer import generate
    from mmapp.errors import InputError

    if args.workers < 1:
        raise InputError(f"--workers must be >= 1, got {args.workers}")
    counts = {"train": args.train, "val": args.val, "test": args.test}
    stats = generate(args.out, counts, seed=args.seed, size=args.size, workers=args.workers,
                     progress=not args.quiet, image_format=args.image_format)
    print(f"wrote {stats['images']} images to {stats['out_dir']} in {stats['seconds']:.1f} s "
          f"({stats['images_per_second']:.0f} images/s, {args.workers} workers)")
    for split, s in stats["splits"].items():
        print(f"{split}: {s['images']} images, {s['captions']} captions, {s['objects']} objects, "
              f"{s['questions']} questions (exists 'no' near misses {s['exists_no_near_miss']:.0%})")
        for qtype, answers in s["answers"].items():
            total = sum(answers.values())
            shares = ", ".join(f"{a} {n / total:.0%}" for a, n in answers.items())
            print(f"  {qtype:8s} ({total}): {shares}")
    return 0
