"""``mmapp features``: run the encoder once over an image set and store the grids as a float16,
memory-mapped feature cache that training reads instead of re-running the CNN."""

from __future__ import annotations

import argparse
import os
import re
import sys
from pathlib import Path
from typing import Any

from mmapp.config import EncoderConfig, load_config
from mmapp.data.fields import read_json
from mmapp.errors import DataError, InputError

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"}
COCO_NAME = re.compile(r"COCO_[A-Za-z]+\d*_(\d{12})\.\w+$")

DESCRIPTION = """\
Run the image encoder over every image under --images (recursively), or over the images that
--list names, and store each image's (P, D) feature grid as float16 in CACHE/features.npy
(memory-mapped), with CACHE/index.json (image key -> row; keys are paths relative to --images and,
when known, image ids) and CACHE/meta.json (encoder name, weights id, full encoder config, grid,
D, dtype, count, complete flag, images/s).

The encoder config is the default, then --encoder-config FILE (encoder fields at the top level or
under an 'encoder:' section of a run config), then encoder.KEY=VALUE overrides, e.g.
  mmapp features --images coco/train2014 --out cache/train encoder.input_size=448 encoder.grid=last

Progress is saved every few seconds and on exit (Ctrl-C included). Re-running is safe: an
unfinished cache made by the same encoder, weights and image list is resumed where it stopped;
a finished one is left as is; a cache made by another encoder, weights, preprocessing or image
list is rebuilt from scratch (with a message), or refused with --no-overwrite. Under torchrun each process encodes rows rank::world_size of the same cache
(single node).
"""

LIST_HELP = """the images to encode, relative to --images: a text file (one path a line), a COCO
captions/instances json ('images' with 'file_name' and 'id'), a Karpathy dataset_coco.json, or a
VQA v2 questions json (files by official COCO naming, in --images or --images/<data_subtype>)"""


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "features", help="precompute encoder feature grids into a memory-mapped cache",
        description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--images", required=True, type=Path, metavar="DIR", help="image folder")
    p.add_argument("--out", required=True, type=Path, metavar="CACHE", help="cache folder (created if missing)")
    p.add_argument("--list", type=Path, metavar="FILE", help=LIST_HELP)
    p.add_argument("--encoder-config", type=Path, metavar="FILE", help="YAML encoder (or run) config")
    p.add_argument("overrides", nargs="*", metavar="encoder.KEY=VALUE", help="encoder config overrides")
    p.add_argument("--batch-size", type=int, default=32, help="images per forward pass (default 32)")
    p.add_argument("--device", default="auto", help="auto (cuda if available), cpu, cuda, cuda:1, ...")
    p.add_argument("--workers", type=int, default=min(4, os.cpu_count() or 1),
                   help="image-decoding worker processes (default: min(4, CPUs); 0 = in-process)")
    p.add_argument("--no-overwrite", action="store_true",
                   help="refuse (instead of rebuilding) when CACHE holds features of another encoder/image list")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def encoder_config_from(path: Path | None, overrides: list[str]) -> EncoderConfig:
    """Default EncoderConfig <- YAML file (top level or its 'encoder:' section) <- overrides."""
    return load_config(EncoderConfig, path, overrides, section="encoder")


def list_images(images_dir: Path, list_file: Path | None) -> tuple[list[Path], list[str], list[int | None]]:
    """(paths, keys relative to ``images_dir``, image ids or None) of the images to encode."""
    if not images_dir.is_dir():
        raise DataError(f"--images {images_dir}: not a folder")
    if list_file is None:
        paths = sorted(p for p in images_dir.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
        if not paths:
            raise DataError(f"{images_dir}: no image files found")
        keys = [p.relative_to(images_dir).as_posix() for p in paths]
        ids = [int(m.group(1)) if (m := COCO_NAME.search(k)) else None for k in keys]
        return paths, keys, ids
    if list_file.suffix.lower() != ".json":
        lines = [ln.strip() for ln in list_file.read_text().splitlines()]
        keys = [ln for ln in lines if ln and not ln.startswith("#")]
        ids = [int(m.group(1)) if (m := COCO_NAME.search(k)) else None for k in keys]
        return [images_dir / k for k in keys], keys, ids
    # heavy: the dataset modules load torch; the CLI imports every command to build --help
    from mmapp.data.coco_captions import image_files_from_json
    from mmapp.data.vqa_v2 import coco_image_file, load_vqa

    data = read_json(list_file)
    if isinstance(data, dict) and "questions" in data and "images" not in data:
        split = load_vqa(list_file)
        if not split.data_subtype:
            raise DataError(f"{list_file}: no 'data_subtype' to name the COCO image files by")
        ids = sorted({q.image_id for q in split.questions})
        keys = []
        for i in ids:
            name = coco_image_file(i, split.data_subtype)
            nested = f"{split.data_subtype}/{name}"
            keys.append(nested if (images_dir / nested).is_file() else name)
    else:
        files = image_files_from_json(list_file)
        ids, keys = list(files), list(files.values())
    return [images_dir / k for k in keys], keys, list(ids)


def run(args: argparse.Namespace) -> int:
    # heavy: torch and the encoder load only when this command runs
    import torch.distributed as dist

    from mmapp.data.feature_extraction import extract_features
    from mmapp.distributed import cleanup, device_for, setup
    from mmapp.memory import reuse_freed_memory_on
    from mmapp.models.encoder import build_encoder

    if args.batch_size < 1 or args.workers < 0:
        raise InputError("--batch-size must be >= 1 and --workers >= 0")
    cfg = encoder_config_from(args.encoder_config, args.overrides)
    paths, keys, ids = list_images(args.images, args.list)
    device = device_for(args.device, int(os.environ.get("LOCAL_RANK", "0")))
    started = not dist.is_initialized()
    info = setup(device)
    reuse_freed_memory_on(device)  # on a CPU, successive batches reuse freed memory
    try:
        encoder = build_encoder(cfg).fold_batchnorm()  # inference only: BatchNorms folded, ~25 % faster
        cache = extract_features(paths, keys, encoder, args.out, batch_size=args.batch_size, device=device,
                                 num_workers=args.workers, image_ids=ids, overwrite=not args.no_overwrite,
                                 progress=not args.quiet, log=lambda m: print(m, file=sys.stderr))
    finally:
        if started:
            cleanup(info)
    if not info.is_main:
        return 0
    h, w = cache.grid_size
    size_gb = len(cache) * h * w * cache.dim * 2 / 1e9
    print(f"{args.out}: {len(cache)} images, grid {h}x{w}, D={cache.dim}, float16, {size_gb:.2f} GB "
          f"(encoder {cfg.name}, weights {cache.weights_id})")
    stats = cache.run_stats
    if stats and stats["images"]:
        print(f"encoded {stats['images']} images in {stats['seconds']:.1f} s "
              f"({stats['images_per_second']:.1f} images/s on {stats['device']})")
    else:
        print("already complete: nothing to encode")
    return 0
