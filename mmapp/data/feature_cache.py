"""Feature cache, reading side: encoder grids computed once, stored as float16 and memory-mapped.

Layout of a cache folder (written by ``feature_extraction.extract_features``)::

    features.npy        (num_images, P, D) float16, ``np.load(mmap_mode="r")``-able
    index.json          {"files": [key per row], "image_ids": [id or null per row], "keys": {lookup key: row}}
    meta.json           encoder name, weights_id, encoder config, grid (H, W), dim D, dtype, count,
                        complete flag, extraction speed
    done.rank<r>.npy    (while unfinished) packed bitmap of the rows rank r has written

Lookup keys are the image's file path relative to the extraction folder and, where unique, its
image id as a string (``"391895"``) and its bare file name.

``VisualSource`` is the one place datasets turn an image id into a model input: a cached
(P, D) grid, or the image file decoded and preprocessed to (3, S, S).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from torch import Tensor

from mmapp.config import EncoderConfig, from_dict, to_dict
from mmapp.errors import DataError
from mmapp.images import load_image, preprocess

FEATURES_FILE, INDEX_FILE, META_FILE = "features.npy", "index.json", "meta.json"
CACHE_FORMAT = 1
# Encoder fields that change the features (fine_tune_stages only matters for training).
IDENTITY_FIELDS = ("name", "weights", "input_size", "grid", "mean", "std", "pixel_patch")
IDENTITY_DEFAULTS = {"pixel_patch": 0}  # fields added later: what caches written before them hold


def read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise DataError(f"{path}: not valid JSON ({e}); delete the cache folder and rebuild it") from None


def encoder_identity(cfg: dict[str, Any]) -> dict[str, Any]:
    return {k: (list(cfg[k]) if isinstance(cfg.get(k), (list, tuple)) else cfg.get(k, IDENTITY_DEFAULTS.get(k)))
            for k in IDENTITY_FIELDS}


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
        meta = read_json(meta_path)
        if meta.get("format") != CACHE_FORMAT:
            raise DataError(f"{meta_path}: unknown cache format {meta.get('format')!r}; rebuild the cache")
        if not meta.get("complete") and not allow_incomplete:
            raise DataError(f"{path}: feature extraction did not finish; rerun `mmapp features` to resume it")
        if expect_encoder is not None:
            have = encoder_identity(meta["encoder"])
            want = encoder_identity(to_dict(expect_encoder))
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
        return cls(path, meta, read_json(path / INDEX_FILE))

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
        return preprocess(load_image(handle), self.encoder_cfg)  # (3, S, S); ImageError names the file
