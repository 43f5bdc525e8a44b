"""Feature cache: encoder grids computed once, stored as float16 and memory-mapped.

Layout of a cache folder::

    features.npy        (num_images, P, D) float16, ``np.load(mmap_mode="r")``-able
    index.json          {"files": [key per row], "image_ids": [id or null per row], "keys": {lookup key: row}}
    meta.json           encoder name, weights_id, encoder config, grid (H, W), dim D, dtype, count,
                        complete flag, extraction speed
    done.rank<r>.npy    (while unfinished) packed bitmap of the rows rank r has written

Lookup keys are the image's file path relative to the extraction folder and, where unique, its
image id as a string (``"391895"``) and its bare file name.

Rows are written in batches into the preallocated file; every few seconds and on exit (errors
and Ctrl-C included) the file is flushed and then the rank's done bitmap replaced atomically, so
an interrupted extraction resumes where it stopped. Under ``torch.distributed`` rank r takes rows
``r::world_size`` of the same file (single node: all ranks see one folder).

``VisualSource`` is the one place datasets turn an image id into a model input: a cached
(P, D) grid, or the image file decoded and preprocessed to (3, S, S).
"""

from __future__ import annotations

import json
import os
import time
from collections import Counter
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from mmapp.atomic import atomic_path, write_json
from mmapp.config import EncoderConfig, from_dict, to_dict
from mmapp.errors import DataError, ImageError

FEATURES_FILE, INDEX_FILE, META_FILE = "features.npy", "index.json", "meta.json"
CACHE_FORMAT = 1
# Encoder fields that change the features (fine_tune_stages only matters for training).
IDENTITY_FIELDS = ("name", "weights", "input_size", "grid", "mean", "std", "pixel_patch")
IDENTITY_DEFAULTS = {"pixel_patch": 0}  # fields added later: what caches written before them hold


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise DataError(f"{path}: not valid JSON ({e}); delete the cache folder and rebuild it") from None


def _encoder_identity(cfg: dict[str, Any]) -> dict[str, Any]:
    return {k: (list(cfg[k]) if isinstance(cfg.get(k), (list, tuple)) else cfg.get(k, IDENTITY_DEFAULTS.get(k)))
            for k in IDENTITY_FIELDS}


def shard_rows(num_rows: int, rank: int, world_size: int) -> list[int]:
    """Rows ``rank, rank + world_size, ...`` of ``range(num_rows)``: the shards of all ranks are
    disjoint and together cover every row."""
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"bad rank {rank} of world size {world_size}")
    return list(range(rank, num_rows, world_size))


class FeatureCache:
    """Read access to a cache folder. Open with ``FeatureCache.open``; safe to send to
    DataLoader workers (the memory map is reopened in each process, never pickled)."""

    def __init__(self, path: Path, meta: dict[str, Any], index: dict[str, Any]) -> None:
        self.path = path
        self.meta = meta
        self.files: list[str] = list(index["files"])
        self.image_ids: list[int | None] = list(index["image_ids"])
        self._keys: dict[str, int] = dict(index["keys"])
        self._array: np.ndarray | None = None
        # Set by extract_features when it encoded images in this call (this rank's share):
        # {"images", "seconds", "images_per_second", "device", "world_size"}.
        self.run_stats: dict[str, Any] | None = None

    @classmethod
    def open(
        cls,
        path: str | Path,
        expect_encoder: EncoderConfig | None = None,
        expect_weights_id: str | None = None,
        allow_incomplete: bool = False,
    ) -> "FeatureCache":
        """Open a cache; refuse (``DataError``) one that is unfinished or was built by another
        encoder/preprocessing than ``expect_encoder`` or other weights than ``expect_weights_id``.

        Weights are compared by ``expect_weights_id`` when given, else by ``expect_encoder.weights``.
        """
        path = Path(path)
        meta_path = path / META_FILE
        if not meta_path.is_file():
            raise DataError(f"{path}: not a feature cache (no {META_FILE}); build one with `mmapp features`")
        meta = _read_json(meta_path)
        if meta.get("format") != CACHE_FORMAT:
            raise DataError(f"{meta_path}: unknown cache format {meta.get('format')!r}; rebuild the cache")
        if not meta.get("complete") and not allow_incomplete:
            raise DataError(f"{path}: feature extraction did not finish; rerun `mmapp features` to resume it")
        if expect_encoder is not None:
            have = _encoder_identity(meta["encoder"])
            want = _encoder_identity(to_dict(expect_encoder))
            if expect_weights_id is not None:
                have.pop("weights"), want.pop("weights")
            for key in have:
                if have[key] != want[key]:
                    raise DataError(
                        f"{path}: features were computed with encoder.{key}={have[key]!r}, but "
                        f"encoder.{key}={want[key]!r} is asked for; rebuild the cache with `mmapp features`"
                    )
        if expect_weights_id is not None and meta["weights_id"] != expect_weights_id:
            raise DataError(
                f"{path}: features were computed with encoder weights {meta['weights_id']!r}, but weights "
                f"{expect_weights_id!r} are asked for; rebuild the cache with `mmapp features`"
            )
        return cls(path, meta, _read_json(path / INDEX_FILE))

    # ---------------------------------------------------------------- properties
    @property
    def grid_size(self) -> tuple[int, int]:
        """(H, W) of the stored grids; P = H * W."""
        h, w = self.meta["grid"]
        return int(h), int(w)

    @property
    def dim(self) -> int:
        """D, the feature width."""
        return int(self.meta["dim"])

    @property
    def keys(self) -> list[str]:
        """Every lookup key: file keys (one per row), image ids and bare file names."""
        return list(self._keys)

    @property
    def encoder_config(self) -> EncoderConfig:
        return from_dict(EncoderConfig, self.meta["encoder"])

    @property
    def weights_id(self) -> str:
        return str(self.meta["weights_id"])

    def __len__(self) -> int:
        return len(self.files)

    def __contains__(self, key: object) -> bool:
        return str(key) in self._keys

    # ---------------------------------------------------------------- access
    @property
    def array(self) -> np.ndarray:
        """The whole (num_images, P, D) float16 memory map (read-only)."""
        if self._array is None:
            self._array = np.load(self.path / FEATURES_FILE, mmap_mode="r")
        return self._array

    def row(self, key: str | int) -> int:
        try:
            return self._keys[str(key)]
        except KeyError:
            raise DataError(f"{self.path}: no features for image {key!r}") from None

    def find(self, *candidates: str | int) -> int | None:
        """Row of the first candidate key present, else None."""
        for c in candidates:
            r = self._keys.get(str(c))
            if r is not None:
                return r
        return None

    def get_row(self, row: int) -> np.ndarray:
        """(P, D) float16 copy of one row."""
        return np.array(self.array[row])

    def get(self, key: str | int) -> np.ndarray:
        """(P, D) float16 grid of the image with file key or image id ``key``."""
        return self.get_row(self.row(key))

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_array"] = None  # a pickled memmap would copy the whole array
        return state


class VisualSource:
    """Turns an image into a model input: a cached (P, D) float32 grid (``features``) or the image
    file under ``images_root`` decoded and preprocessed to (3, S, S) (needs ``encoder_cfg``)."""

    def __init__(
        self,
        features: FeatureCache | None = None,
        images_root: str | Path | None = None,
        encoder_cfg: EncoderConfig | None = None,
    ) -> None:
        if (features is None) == (images_root is None):
            raise ValueError("give exactly one of features= (a FeatureCache) or images_root= (a folder)")
        if images_root is not None and encoder_cfg is None:
            raise ValueError("images_root= needs encoder_cfg= for preprocessing")
        self.features = features
        self.images_root = Path(images_root) if images_root is not None else None
        self.encoder_cfg = encoder_cfg

    def _resolve(self, image_id: int, files: Sequence[str]) -> int | str | None:
        if self.features is not None:
            return self.features.find(image_id, *files, *(Path(f).name for f in files))
        assert self.images_root is not None
        for f in files:
            p = self.images_root / f
            if p.is_file():
                return str(p)
        return None

    def resolve_all(self, requests: Sequence[tuple[int, Sequence[str], str]]) -> list[int | str]:
        """Handles for ``(image_id, candidate relative files, where)`` requests, checked up front:
        raises ``DataError`` naming the first image that has no features / no file."""
        handles, missing = [], []
        for image_id, files, where in requests:
            h = self._resolve(image_id, files)
            if h is None:
                missing.append((image_id, files, where))
            handles.append(h)
        if missing:
            image_id, files, where = missing[0]
            more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
            if self.features is not None:
                raise DataError(f"{where}: image {image_id} ({files[0]}) is not in the feature cache "
                                f"{self.features.path}{more}")
            assert self.images_root is not None
            raise DataError(f"{where}: image {image_id}: file not found: {self.images_root / files[0]}{more}")
        return handles

    def load(self, handle: int | str) -> Tensor:
        """(P, D) float32 features or a (3, S, S) preprocessed image."""
        if self.features is not None:
            return torch.from_numpy(self.features.get_row(int(handle)).astype(np.float32))  # (P, D)
        from mmapp.images import load_image, preprocess

        return preprocess(load_image(handle), self.encoder_cfg)  # (3, S, S); ImageError names the file


# -------------------------------------------------------------------------------------------------
# Extraction


class _ImageFiles(Dataset):
    """(row, image (3, S, S), error message) per row; errors travel back instead of raising in
    a worker, so the main process can name the file."""

    def __init__(self, paths: Sequence[str], rows: Sequence[int], cfg: EncoderConfig) -> None:
        self.paths, self.rows, self.cfg = paths, rows, cfg

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> tuple[int, Tensor, str]:
        from mmapp.images import load_image, preprocess

        row = self.rows[i]
        try:
            return row, preprocess(load_image(self.paths[row]), self.cfg), ""
        except (ImageError, OSError) as e:
            s = self.cfg.input_size
            return row, torch.zeros(3, s, s), str(e) or type(e).__name__


def _dist_info() -> tuple[int, int]:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


def _barrier() -> None:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.barrier()


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
        old = _read_json(meta_path)
        old_index = _read_json(out_dir / INDEX_FILE) if (out_dir / INDEX_FILE).is_file() else None
        same = (all(old.get(k) == meta[k] for k in ("format", "weights_id", "grid", "dim", "dtype", "count"))
                and _encoder_identity(old.get("encoder", {})) == _encoder_identity(meta["encoder"])
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
    rank, world = _dist_info()
    if rank == 0:
        _prepare(out_dir, meta, index, overwrite, log)
    _barrier()
    if _read_json(out_dir / META_FILE).get("complete"):
        log(f"{out_dir}: features are complete and match this encoder and image list: nothing to do")
        return FeatureCache.open(out_dir, expect_encoder=cfg, expect_weights_id=meta["weights_id"])

    done = _load_done(out_dir, len(paths))
    mine = np.zeros(len(paths), dtype=bool)
    mine |= done  # keep earlier progress in this rank's file too
    todo = [r for r in shard_rows(len(paths), rank, world) if not done[r]]
    seconds, computed = _run_rows(paths, todo, encoder, out_dir, mine, rank, batch_size, device,
                                  num_workers, progress, save_every_s)
    _barrier()
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
    _barrier()
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
    from tqdm import tqdm

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
