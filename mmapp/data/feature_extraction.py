"""Feature cache, writing side: resumable, sharded extraction of encoder grids into a cache folder
(layout: ``feature_cache.py``).

Rows are written in batches into the preallocated file; every few seconds and on exit (errors
and Ctrl-C included) the file is flushed and then the rank's done bitmap replaced atomically, so
an interrupted extraction resumes where it stopped. Under ``torch.distributed`` rank r takes rows
``r::world_size`` of the same file (single node: all ranks see one folder).
"""

from __future__ import annotations

import os
import time
from collections import Counter
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from mmapp.atomic import atomic_path, write_json
from mmapp.config import EncoderConfig, to_dict
from mmapp.data.feature_cache import (CACHE_FORMAT, FEATURES_FILE, INDEX_FILE, META_FILE, FeatureCache,
                                      encoder_identity, read_json)
from mmapp.distributed import barrier, current
from mmapp.errors import DataError, ImageError
from mmapp.images import load_image, preprocess


def shard_rows(num_rows: int, rank: int, world_size: int) -> list[int]:
    """Rows ``rank, rank + world_size, ...`` of ``range(num_rows)``: the shards of all ranks are
    disjoint and together cover every row."""
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"bad rank {rank} of world size {world_size}")
    return list(range(rank, num_rows, world_size))




class _ImageFiles(Dataset):
    """(row, image (3, S, S), error message) per row; errors travel back instead of raising in
    a worker, so the main process can name the file."""

    def __init__(self, paths: Sequence[str], rows: Sequence[int], cfg: EncoderConfig) -> None:
        self.paths, self.rows, self.cfg = paths, rows, cfg

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> tuple[int, Tensor, str]:
        row = self.rows[i]
        try:
            return row, preprocess(load_image(self.paths[row]), self.cfg), ""
        except (ImageError, OSError) as e:
            s = self.cfg.input_size
            return row, torch.zeros(3, s, s), str(e) or type(e).__name__


def _done_files(out_dir: Path) -> list[Path]:
    return sorted(out_dir.glob("done.rank*.npy"))


def _load_done(out_dir: Path, count: int) -> np.ndarray:
    done = np.zeros(count, dtype=bool)
    for f in _done_files(out_dir):
        bits = np.unpackbits(np.load(f), count=count).astype(bool)
        done |= bits
    return done


def _save_done(out_dir: Path, rank: int, done: np.ndarray) -> None:
    with atomic_path(out_dir / f"done.rank{rank}.npy") as tmp:
        np.save(tmp, np.packbits(done))


def _checkpoint(array: np.ndarray, out_dir: Path, rank: int, mine: np.ndarray) -> None:
    array.flush()  # rows reach the disk before they are marked done
    _save_done(out_dir, rank, mine)


def _prepare(out_dir: Path, meta: dict[str, Any], index: dict[str, Any], overwrite: bool,
             log: Callable[[str], None]) -> None:
    """Rank 0: make ``out_dir`` hold a cache (complete or resumable) matching ``meta``/``index``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    meta_path, feat_path = out_dir / META_FILE, out_dir / FEATURES_FILE
    if meta_path.is_file():
        old = read_json(meta_path)
        old_index = read_json(out_dir / INDEX_FILE) if (out_dir / INDEX_FILE).is_file() else None
        same = (all(old.get(k) == meta[k] for k in ("format", "weights_id", "grid", "dim", "dtype", "count"))
                and encoder_identity(old.get("encoder", {})) == encoder_identity(meta["encoder"])
                and old_index == index and feat_path.is_file())
        if same and old.get("complete"):
            return
        if same:
            shape = np.load(feat_path, mmap_mode="r").shape
            if shape == (meta["count"], meta["grid"][0] * meta["grid"][1], meta["dim"]):
                done = int(_load_done(out_dir, meta["count"]).sum())
                log(f"resuming feature extraction in {out_dir}: {done}/{meta['count']} images already done")
                return
        if not overwrite:
            raise DataError(f"{out_dir}: holds features of another encoder, weights or image list; "
                            "refusing to overwrite (drop --no-overwrite or choose another --out)")
        log(f"{out_dir}: existing features do not match this encoder/image list: rebuilding from scratch")
    for stale in [meta_path, out_dir / INDEX_FILE, feat_path, *_done_files(out_dir)]:
        stale.unlink(missing_ok=True)
    p = meta["grid"][0] * meta["grid"][1]
    np.lib.format.open_memmap(feat_path, mode="w+", dtype=np.float16, shape=(meta["count"], p, meta["dim"]))
    write_json(out_dir / INDEX_FILE, index, indent=1)
    write_json(meta_path, meta, indent=1)  # written last: its presence means the other files exist


def build_index(keys: Sequence[str], image_ids: Sequence[int | None] | None) -> dict[str, Any]:
    """index.json content: file keys, image ids, and the lookup map: every file key, plus image
    ids and bare file names (``a/b/x.jpg`` -> ``x.jpg``) where they are unique."""
    ids = list(image_ids) if image_ids is not None else [None] * len(keys)
    lookup = {k: r for r, k in enumerate(keys)}
    aliases: dict[str, list[int]] = {}
    for r, (k, i) in enumerate(zip(keys, ids)):
        if i is not None:
            aliases.setdefault(str(i), []).append(r)
        if "/" in k:
            aliases.setdefault(k.rsplit("/", 1)[1], []).append(r)
    for k, rows in aliases.items():
        if len(set(rows)) == 1 and k not in lookup:
            lookup[k] = rows[0]
    return {"files": list(keys), "image_ids": ids, "keys": lookup}


def extract_features(
    image_paths: Sequence[str | Path],
    keys: Sequence[str],
    encoder: torch.nn.Module,
    out_dir: str | Path,
    batch_size: int = 32,
    device: str | torch.device = "cpu",
    num_workers: int = 0,
    image_ids: Sequence[int | None] | None = None,
    overwrite: bool = True,
    progress: bool = True,
    log: Callable[[str], None] = lambda msg: None,
    save_every_s: float = 5.0,
) -> FeatureCache:
    """Run ``encoder`` (an ``mmapp.models.encoder.Encoder``) over the images and store their
    (P, D) grids as rows of a float16 cache in ``out_dir``; return the opened cache.

    ``keys[i]`` (unique, usually the path relative to the image folder) and ``image_ids[i]``
    become lookup keys of ``image_paths[i]``. An unfinished cache with the same encoder, weights
    and image list is resumed; a different one is rebuilt (``overwrite``) or refused
    (``DataError``); a finished matching one is returned as is. Progress is saved every
    ``save_every_s`` seconds and when the loop exits (errors and Ctrl-C included).
    ``cache.run_stats`` tells what this call encoded (None when nothing was left to do).
    """
    out_dir = Path(out_dir)
    paths = [str(p) for p in image_paths]
    if len(paths) != len(keys) or (image_ids is not None and len(image_ids) != len(keys)):
        raise ValueError("image_paths, keys and image_ids must have the same length")
    if not paths:
        raise DataError("no images to extract features from")
    if len(set(keys)) != len(keys):
        dup = next(k for k, n in Counter(keys).items() if n > 1)
        raise DataError(f"duplicate image key {dup!r} in the image list")
    missing = [p for p in paths if not os.path.isfile(p)]
    if missing:
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        raise DataError(f"image file not found: {missing[0]}{more}")

    cfg: EncoderConfig = encoder.cfg
    grid_h, grid_w = encoder.grid_size()
    meta = {"format": CACHE_FORMAT, "encoder_name": cfg.name, "weights_id": encoder.weights_id(),
            "encoder": to_dict(cfg), "grid": [grid_h, grid_w], "dim": int(encoder.out_dim),
            "dtype": "float16", "count": len(paths), "complete": False}
    index = build_index(keys, image_ids)
    info = current()
    rank, world = info.rank, info.world_size
    if rank == 0:
        _prepare(out_dir, meta, index, overwrite, log)
    barrier(info)
    if read_json(out_dir / META_FILE).get("complete"):
        log(f"{out_dir}: features are complete and match this encoder and image list: nothing to do")
        return FeatureCache.open(out_dir, expect_encoder=cfg, expect_weights_id=meta["weights_id"])

    done = _load_done(out_dir, len(paths))
    mine = np.zeros(len(paths), dtype=bool)
    mine |= done  # keep earlier progress in this rank's file too
    todo = [r for r in shard_rows(len(paths), rank, world) if not done[r]]
    seconds, computed = _run_rows(paths, todo, encoder, out_dir, mine, rank, batch_size, device,
                                  num_workers, progress, save_every_s)
    barrier(info)
    stats = {"images": computed, "seconds": round(seconds, 3),
             "images_per_second": round(computed / seconds, 2) if seconds > 0 else None,
             "device": str(device), "world_size": world}
    if rank == 0:
        if not _load_done(out_dir, len(paths)).all():
            raise DataError(f"{out_dir}: some rows were not written; rerun to resume")
        meta.update(complete=True, extraction=stats)
        write_json(out_dir / META_FILE, meta, indent=1)
        for f in _done_files(out_dir):
            f.unlink(missing_ok=True)
    barrier(info)
    cache = FeatureCache.open(out_dir, expect_encoder=cfg, expect_weights_id=meta["weights_id"])
    cache.run_stats = stats
    return cache


def _run_rows(paths: Sequence[str], todo: Sequence[int], encoder: torch.nn.Module, out_dir: Path,
              mine: np.ndarray, rank: int, batch_size: int, device: str | torch.device,
              num_workers: int, progress: bool, save_every_s: float) -> tuple[float, int]:
    """Encode rows ``todo`` into the memmap; flush it and save this rank's done bitmap every
    ``save_every_s`` seconds and on the way out. Returns (seconds, images computed)."""
    if not todo:
        return 0.0, 0
    device = torch.device(device)
    on_cuda = device.type == "cuda"
    array = np.load(out_dir / FEATURES_FILE, mmap_mode="r+")
    loader = DataLoader(_ImageFiles(paths, todo, encoder.cfg), batch_size=batch_size,
                        num_workers=num_workers, pin_memory=on_cuda)
    encoder = encoder.eval().to(device)
    if on_cuda:
        encoder = encoder.to(memory_format=torch.channels_last)
    bar = tqdm(total=len(todo), unit="img", disable=not progress or rank != 0, desc="features")
    start = last_save = time.perf_counter()
    computed = 0
    try:
        with torch.inference_mode():
            for rows, images, errors in loader:
                bad = next((i for i, e in enumerate(errors) if e), None)
                if bad is not None:
                    path, err = paths[int(rows[bad])], errors[bad]
                    raise DataError(err if path in err else f"{path}: cannot read image: {err}")
                images = images.to(device, non_blocking=True)
                if on_cuda:
                    images = images.contiguous(memory_format=torch.channels_last)
                with torch.autocast("cuda", dtype=torch.float16, enabled=on_cuda):
                    grids = encoder(images)  # (B, P, D)
                idx = rows.numpy()
                array[idx] = grids.float().cpu().numpy().astype(np.float16)
                mine[idx] = True
                computed += len(idx)
                bar.update(len(idx))
                if time.perf_counter() - last_save >= save_every_s:
                    _checkpoint(array, out_dir, rank, mine)
                    last_save = time.perf_counter()
    finally:  # an exception or Ctrl-C keeps every finished batch; a hard kill loses <= save_every_s
        _checkpoint(array, out_dir, rank, mine)
        bar.close()
    return time.perf_counter() - start, computed
