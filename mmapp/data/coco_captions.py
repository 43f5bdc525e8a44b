"""COCO captions as torch Datasets, from the official files or the Karpathy split.

- ``captions_{train,val}2014.json`` (official; read with pycocotools): ``images`` [{id, file_name}],
  ``annotations`` [{id, image_id, caption}]. One file is one split. Any folder with the same
  format works (the shapes generator writes ``captions_<split>.json``).
- ``dataset_coco.json`` (Karpathy split): ``images`` [{filepath, filename, split, cocoid,
  sentences [{raw, tokens}]}] with split in train/restval/val/test; "restval" counts as train
  unless ``restval_as_train=False``. Flickr versions (no ``filepath``/``cocoid``) use ``imgid``.

Files are validated eagerly; bad data raises ``DataError`` naming the file and the record.
``CaptionDataset`` yields one item per caption (training), ``CaptionEvalDataset`` one item per
image with all its reference captions (scoring). Batch them with ``mmapp.data.collate``.
"""

from __future__ import annotations

import contextlib
import io
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from mmapp.config import EncoderConfig
from mmapp.data.feature_cache import FeatureCache, VisualSource
from mmapp.data.fields import field, has_word, read_json, top_list
from mmapp.errors import DataError
from mmapp.vocab import Vocab

KARPATHY_SPLITS = ("train", "restval", "val", "test")


@dataclass(frozen=True)
class CaptionImage:
    """One image and its reference captions (raw strings)."""

    image_id: int
    file_name: str  # relative to the images root, e.g. "train2014/COCO_train2014_000000000009.jpg"
    captions: tuple[str, ...]
    source: str = ""  # the annotation file, for error messages
    split: str = ""


# -------------------------------------------------------------------------------------------------
# JSON helpers (shared with vqa_v2.py)


def image_files_from_json(path: str | Path) -> dict[int, str]:
    """``{image_id: relative file}`` from a COCO captions/instances file (``images`` with ``id`` and
    ``file_name``) or a Karpathy ``dataset_coco.json`` (``filepath``/``filename``, ``cocoid``)."""
    images = top_list(read_json(path), "images", path)
    out: dict[int, str] = {}
    for i, img in enumerate(images):
        if isinstance(img, dict) and "filename" in img:
            image_id, name = _karpathy_id_and_file(img, path, i)
        else:
            image_id = field(img, "id", int, path, f"image #{i}")
            name = field(img, "file_name", str, path, f"image #{i} (id {image_id})")
        if image_id in out:
            raise DataError(f"{path}: image #{i}: duplicate image id {image_id}")
        out[image_id] = name
    return out


# -------------------------------------------------------------------------------------------------
# Loaders


def load_coco_captions(path: str | Path) -> list[CaptionImage]:
    """Images with their captions from an official-format ``captions_*.json`` (via pycocotools),
    sorted by image id. Images without any caption are left out."""
    return _coco_captions(read_json(path), path)


def _coco_captions(data: Any, path: str | Path) -> list[CaptionImage]:
    # heavy: pycocotools, only for the official-loader check
    from pycocotools.coco import COCO

    images, anns = top_list(data, "images", path), top_list(data, "annotations", path)
    files: dict[int, str] = {}
    for i, img in enumerate(images):
        image_id = field(img, "id", int, path, f"image #{i}")
        name = field(img, "file_name", str, path, f"image #{i} (id {image_id})")
        if image_id in files:
            raise DataError(f"{path}: image #{i}: duplicate image id {image_id}")
        files[image_id] = name
    ann_ids: set[int] = set()
    for i, ann in enumerate(anns):
        ann_id = field(ann, "id", int, path, f"annotation #{i}")
        where = f"annotation #{i} (id {ann_id})"
        image_id = field(ann, "image_id", int, path, where)
        caption = field(ann, "caption", str, path, where)
        if ann_id in ann_ids:
            raise DataError(f"{path}: {where}: duplicate annotation id {ann_id}")
        ann_ids.add(ann_id)
        if image_id not in files:
            raise DataError(f"{path}: {where}: image_id {image_id} is not in 'images'")
        if not caption.strip():
            raise DataError(f"{path}: {where}: empty caption")
    coco = COCO()
    coco.dataset = data
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints progress
        coco.createIndex()
    out = []
    for image_id in sorted(coco.imgs):
        caps = sorted(coco.imgToAnns.get(image_id, []), key=lambda a: a["id"])
        if caps:
            out.append(CaptionImage(image_id, files[image_id], tuple(a["caption"].strip() for a in caps),
                                    str(path)))
    return out


def _karpathy_id_and_file(img: Any, path: str | Path, i: int) -> tuple[int, str]:
    id_key = "cocoid" if isinstance(img, dict) and "cocoid" in img else "imgid"
    image_id = field(img, id_key, int, path, f"image #{i}")
    where = f"image #{i} ({id_key} {image_id})"
    name = field(img, "filename", str, path, where)
    folder = field(img, "filepath", str, path, where) if "filepath" in img else ""
    return image_id, f"{folder}/{name}" if folder else name


def karpathy_splits(split: str, restval_as_train: bool = True) -> tuple[str, ...]:
    """The Karpathy ``split`` values that make up ``split`` ("train" includes "restval")."""
    if split not in KARPATHY_SPLITS:
        raise ValueError(f"split must be one of {KARPATHY_SPLITS}, got {split!r}")
    return ("train", "restval") if split == "train" and restval_as_train else (split,)


def load_karpathy_split(path: str | Path, split: str, restval_as_train: bool = True) -> list[CaptionImage]:
    """Images of one split of a Karpathy ``dataset_*.json``, in file order. The whole file is
    validated, whatever split is asked for."""
    return _karpathy(read_json(path), path, karpathy_splits(split, restval_as_train))


def _karpathy(data: Any, path: str | Path, wanted: tuple[str, ...]) -> list[CaptionImage]:
    images = top_list(data, "images", path)
    out, seen = [], set()
    for i, img in enumerate(images):
        image_id, name = _karpathy_id_and_file(img, path, i)
        where = f"image #{i} (id {image_id})"
        img_split = field(img, "split", str, path, where)
        if img_split not in KARPATHY_SPLITS:
            raise DataError(f"{path}: {where}: split must be one of {KARPATHY_SPLITS}, got {img_split!r}")
        if image_id in seen:
            raise DataError(f"{path}: {where}: duplicate image id {image_id}")
        seen.add(image_id)
        sentences = field(img, "sentences", list, path, where)
        if not sentences:
            raise DataError(f"{path}: {where}: no sentences")
        raws = []
        for j, sent in enumerate(sentences):
            raw = field(sent, "raw", str, path, f"{where} sentence #{j}")
            if not raw.strip():
                raise DataError(f"{path}: {where} sentence #{j}: empty caption")
            raws.append(raw.strip())
        if img_split in wanted:
            out.append(CaptionImage(image_id, name, tuple(raws), str(path), img_split))
    return out


def load_caption_images(path: str | Path, split: str | None = None,
                        restval_as_train: bool = True) -> list[CaptionImage]:
    """Either format, told apart by content: a Karpathy file needs ``split``; an official file is
    one split by itself (``split`` is ignored)."""
    data = read_json(path)
    if isinstance(data, dict) and "annotations" in data:
        return _coco_captions(data, path)
    if split is None:
        raise ValueError(f"{path} looks like a Karpathy split file: give split= (train/val/test)")
    return _karpathy(data, path, karpathy_splits(split, restval_as_train))


def build_caption_vocab(images: Sequence[CaptionImage], min_freq: int = 5,
                        max_size: int | None = None) -> Vocab:
    """Word vocabulary of the (training) captions: ``Vocab.build`` over every raw caption."""
    return Vocab.build((c for img in images for c in img.captions), min_freq=min_freq, max_size=max_size)


# -------------------------------------------------------------------------------------------------
# Datasets


def _visual_handles(images: Sequence[CaptionImage], visual: VisualSource) -> list[int | str]:
    return visual.resolve_all([(im.image_id, [im.file_name], im.source or "captions") for im in images])


class CaptionDataset(Dataset):
    """One item per (image, caption) pair, for teacher-forced training.

    Item: ``visual`` (P, D) float32 cached features (``features=``) or (3, S, S) preprocessed image
    (``images_root=`` + ``encoder_cfg=``), ``caption`` (T,) long ``<start> w.. <end>`` (at most
    ``max_len`` words), ``image_id`` int; with ``regions`` (e.g. ``caption_regions.CaptionRegions``:
    ``(image_id, words) -> (n words, P) bool``) also ``regions`` (T - 1, P) bool, the cells the step
    writing each word (and ``<end>``) should attend. Every image is checked up front.
    """

    def __init__(self, images: Sequence[CaptionImage], vocab: Vocab, *, features: FeatureCache | None = None,
                 images_root: str | Path | None = None, encoder_cfg: EncoderConfig | None = None,
                 max_len: int | None = 50,
                 regions: Callable[[int, Sequence[str]], np.ndarray] | None = None) -> None:
        self.images, self.regions = list(images), regions
        self.visual = VisualSource(features, images_root, encoder_cfg)
        self.handles = _visual_handles(self.images, self.visual)
        self.vocab, self.max_len = vocab, max_len
        # Token ids are made in __getitem__ (in the DataLoader workers): the Treebank tokeniser
        # takes ~0.2 ms a caption, minutes for all of COCO if done here.
        pairs = []  # per caption: (image index, caption index)
        for i, im in enumerate(self.images):
            for j, raw in enumerate(im.captions):
                if not has_word(raw):
                    raise DataError(f"{im.source}: image {im.image_id} caption #{j}: no words in {raw!r}")
                pairs.append((i, j))
        self.pairs = np.asarray(pairs, dtype=np.int64).reshape(-1, 2)  # (num captions, 2)

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, index: int) -> dict[str, Any]:
        return {"visual": self.visual_of(index), **self.fields(index)}

    def fields(self, index: int) -> dict[str, Any]:
        """The item without its visual input."""
        i, j = (int(v) for v in self.pairs[index])
        im = self.images[i]
        ids = self.vocab.encode(im.captions[j], self.max_len)
        out = {"caption": torch.tensor(ids, dtype=torch.long), "image_id": im.image_id}  # (T,)
        if self.regions is not None:
            words = [self.vocab.words[i] for i in ids[1:-1]]
            cells = self.regions(im.image_id, words)  # (T - 2, P)
            out["regions"] = torch.from_numpy(np.concatenate([cells, np.zeros((1, cells.shape[1]), bool)]))  # (T - 1, P)
        return out

    def visual_of(self, index: int) -> Tensor:
        return self.visual.load(self.handles[int(self.pairs[index, 0])])

    def item_images(self) -> np.ndarray:
        """(num items,) the image each item belongs to (for ``grouped.ByImage``)."""
        return self.pairs[:, 0]


class CaptionEvalDataset(Dataset):
    """One item per image: ``visual`` as in ``CaptionDataset``, ``image_id``, ``references`` (all
    raw captions), for scoring generated captions."""

    def __init__(self, images: Sequence[CaptionImage], *, features: FeatureCache | None = None,
                 images_root: str | Path | None = None, encoder_cfg: EncoderConfig | None = None) -> None:
        self.images = list(images)
        self.visual = VisualSource(features, images_root, encoder_cfg)
        self.handles = _visual_handles(self.images, self.visual)

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> dict[str, Any]:
        im = self.images[index]
        return {"visual": self.visual.load(self.handles[index]), "image_id": im.image_id,
                "references": list(im.captions)}

    def references(self) -> Mapping[int, list[str]]:
        """``{image_id: [raw captions]}`` for the whole split (what the COCO scorers take)."""
        return {im.image_id: list(im.captions) for im in self.images}
