"""COCO captions loaders on the official-format fixtures (datasets/fixtures/coco): the official
captions json via pycocotools, the Karpathy split, both visual sources, collate, bad data."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from mmapp.config import EncoderConfig
from mmapp.data.coco_captions import (CaptionDataset, CaptionEvalDataset, build_caption_vocab,
                                      image_files_from_json, load_caption_images, load_coco_captions,
                                      load_karpathy_split)
from mmapp.data.collate import collate_caption_eval, collate_captions, pad_sequences
from mmapp.data.feature_cache import FeatureCache
from mmapp.data.feature_extraction import extract_features
from mmapp.errors import DataError
from mmapp.vocab import SPECIALS, Vocab

COCO = Path(__file__).resolve().parents[1] / "datasets" / "fixtures" / "coco"
TRAIN_JSON = COCO / "annotations" / "captions_train2014.json"
VAL_JSON = COCO / "annotations" / "captions_val2014.json"
KARPATHY = COCO / "annotations" / "dataset_coco.json"
CFG = EncoderConfig(weights="none", input_size=64)


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> FeatureCache:
    from mmapp.models.encoder import build_encoder

    torch.manual_seed(0)
    paths = sorted(COCO.rglob("*.jpg"))
    keys = [p.relative_to(COCO).as_posix() for p in paths]
    ids = [int(p.stem.rsplit("_", 1)[1]) for p in paths]
    return extract_features(paths, keys, build_encoder(CFG), tmp_path_factory.mktemp("cache"), batch_size=8,
                            image_ids=ids, progress=False)


def test_official_captions_via_pycocotools():
    images = load_coco_captions(TRAIN_JSON)
    assert [im.image_id for im in images] == [9, 25, 30]
    assert images[0].file_name == "COCO_train2014_000000000009.jpg"
    assert images[1].captions == ("A cup of coffee on a saucer", "a red cup of coffee with a spoon.")
    # trailing spaces of the raw caption are stripped
    assert images[0].captions[1] == "An astronaut poses in front of a flag"


def test_caption_tokens_hand_computed():
    images = load_coco_captions(TRAIN_JSON)
    vocab = Vocab(SPECIALS + ("a", "cup", "coffee"))  # ids 4, 5, 6; everything else <unk> = 3
    ds = CaptionDataset(images, vocab, images_root=COCO / "train2014", encoder_cfg=CFG, max_len=50)
    assert len(ds) == 6  # 3 images x 2 captions, ordered by image id then annotation id
    item = ds[2]  # "A cup of coffee on a saucer"
    assert item["image_id"] == 25
    assert item["caption"].tolist() == [1, 4, 5, 3, 6, 3, 4, 3, 2]
    assert item["visual"].shape == (3, 64, 64) and item["visual"].dtype == torch.float32
    short = CaptionDataset(images, vocab, images_root=COCO / "train2014", encoder_cfg=CFG, max_len=3)
    assert short[2]["caption"].tolist() == [1, 4, 5, 3, 2]  # 3 words kept, then <end>


def test_build_vocab_from_train_captions():
    vocab = build_caption_vocab(load_coco_captions(TRAIN_JSON), min_freq=2)
    # words seen >= 2 times in the 6 train captions: a(8) of(3), then the 2-timers alphabetically
    assert vocab.words == SPECIALS + ("a", "of", "an", "at", "camera", "cat", "coffee", "cup", "in", "the", "with")


def test_karpathy_split_restval_and_paths():
    train = load_karpathy_split(KARPATHY, "train")
    assert [im.image_id for im in train] == [9, 25, 30]
    assert [im.split for im in train] == ["train", "restval", "train"]
    assert train[0].file_name == "train2014/COCO_train2014_000000000009.jpg"
    assert [im.image_id for im in load_karpathy_split(KARPATHY, "train", restval_as_train=False)] == [9, 30]
    assert [im.image_id for im in load_karpathy_split(KARPATHY, "val")] == [42]
    assert [im.image_id for im in load_caption_images(KARPATHY, "test")] == [73]
    assert [im.image_id for im in load_caption_images(VAL_JSON)] == [42, 73]  # format detected
    assert image_files_from_json(KARPATHY)[42] == "val2014/COCO_val2014_000000000042.jpg"
    assert image_files_from_json(VAL_JSON) == {42: "COCO_val2014_000000000042.jpg",
                                               73: "COCO_val2014_000000000073.jpg"}


def test_features_source_and_collate(cache):
    images = load_karpathy_split(KARPATHY, "train")
    vocab = build_caption_vocab(images, min_freq=1)
    ds = CaptionDataset(images, vocab, features=cache)
    item = ds[0]
    h, w = cache.grid_size
    assert item["visual"].shape == (h * w, cache.dim) and item["visual"].dtype == torch.float32
    np.testing.assert_array_equal(item["visual"].numpy(), cache.get(9).astype(np.float32))
    batch = collate_captions([ds[0], ds[2], ds[1]])
    lengths = [len(ds[i]["caption"]) for i in (0, 2, 1)]
    assert batch["lengths"].tolist() == lengths
    assert batch["captions"].shape == (3, max(lengths)) and batch["visual"].shape == (3, h * w, cache.dim)
    for row, n in zip(batch["captions"], lengths):
        assert row[0] == vocab.start_id and row[n - 1] == vocab.end_id and (row[n:] == 0).all()
    assert batch["image_ids"].tolist() == [9, 25, 9]
    loader = torch.utils.data.DataLoader(ds, batch_size=4, collate_fn=collate_captions, num_workers=1)
    assert sum(len(b["lengths"]) for b in loader) == len(ds) == 6


def test_eval_view_one_item_per_image(cache):
    ds = CaptionEvalDataset(load_coco_captions(VAL_JSON), features=cache)
    assert len(ds) == 2
    batch = collate_caption_eval([ds[0], ds[1]])
    assert batch["image_ids"].tolist() == [42, 73]
    assert batch["references"][0] == ["A rocket standing on a launch pad.", "A space shuttle on the launch pad"]
    assert ds.references()[73][1] == "A photographer in a black coat stands in a field."
    img = CaptionEvalDataset(load_karpathy_split(KARPATHY, "val"), images_root=COCO, encoder_cfg=CFG)
    assert img[0]["visual"].shape == (3, 64, 64)


def test_pad_sequences():
    ids, lengths = pad_sequences([[1, 5, 2], [1, 2], [1, 7, 8, 9, 2]])
    assert ids.tolist() == [[1, 5, 2, 0, 0], [1, 2, 0, 0, 0], [1, 7, 8, 9, 2]]
    assert lengths.tolist() == [3, 2, 5]


# ------------------------------------------------------------------------------ bad data


def _mutated(tmp_path: Path, src: Path, mutate) -> Path:
    data = json.loads(src.read_text())
    mutate(data)
    out = tmp_path / src.name
    out.write_text(json.dumps(data))
    return out


def _set(path, value):
    def mutate(data):
        node = data
        for k in path[:-1]:
            node = node[k]
        node[path[-1]] = value
    return mutate


def _dup_last(key):
    def mutate(data):
        data[key].append(dict(data[key][0]))
    return mutate


@pytest.mark.parametrize("mutate, expected", [
    (lambda d: d["annotations"][0].pop("caption"), "annotation #0 (id 100): missing key 'caption'"),
    (_set(["images", 1, "id"], "25"), "image #1: 'id' must be an integer"),
    (_set(["annotations", 3, "caption"], "   "), "annotation #3 (id 103): empty caption"),
    (_set(["annotations", 2, "image_id"], 999), "annotation #2 (id 102): image_id 999 is not in 'images'"),
    (_dup_last("annotations"), "annotation #6 (id 100): duplicate annotation id 100"),
    (_dup_last("images"), "image #3: duplicate image id 9"),
    (lambda d: d.pop("annotations"), "top level: missing key 'annotations'"),
])
def test_official_captions_bad_data(tmp_path, mutate, expected):
    path = _mutated(tmp_path, TRAIN_JSON, mutate)
    with pytest.raises(DataError) as e:
        load_coco_captions(path)
    assert str(path) in str(e.value) and expected in str(e.value)


@pytest.mark.parametrize("mutate, expected", [
    (_set(["images", 2, "split"], "dev"), "image #2 (id 30): split must be one of"),
    (_set(["images", 0, "sentences"], []), "image #0 (id 9): no sentences"),
    (_set(["images", 4, "sentences", 1, "raw"], ""), "image #4 (id 73) sentence #1: empty caption"),
    (_set(["images", 3, "cocoid"], 9), "image #3 (id 9): duplicate image id 9"),
    (lambda d: d["images"][1].pop("filename"), "image #1 (cocoid 25): missing key 'filename'"),
])
def test_karpathy_bad_data(tmp_path, mutate, expected):
    path = _mutated(tmp_path, KARPATHY, mutate)
    with pytest.raises(DataError) as e:
        load_karpathy_split(path, "train")
    assert str(path) in str(e.value) and expected in str(e.value)


def test_caption_without_words_and_invalid_json(tmp_path):
    path = _mutated(tmp_path, TRAIN_JSON, _set(["annotations", 1, "caption"], "... !"))
    with pytest.raises(DataError, match=r"captions_train2014.json: image 9 caption #1: no words"):
        CaptionDataset(load_coco_captions(path), Vocab(SPECIALS), images_root=COCO / "train2014", encoder_cfg=CFG)
    broken = tmp_path / "broken.json"
    broken.write_text('{"images": [')
    with pytest.raises(DataError, match="broken.json: not valid JSON"):
        load_coco_captions(broken)


def test_missing_image_file_and_missing_features(tmp_path, cache):
    root = tmp_path / "train2014"
    shutil.copytree(COCO / "train2014", root)
    (root / "COCO_train2014_000000000025.jpg").unlink()
    images = load_coco_captions(TRAIN_JSON)
    with pytest.raises(DataError) as e:  # checked at construction, not in a worker
        CaptionDataset(images, Vocab(SPECIALS), images_root=root, encoder_cfg=CFG)
    msg = str(e.value)
    assert str(TRAIN_JSON) in msg and "image 25: file not found" in msg and "COCO_train2014_000000000025.jpg" in msg
    def renumber(data):  # image 9 becomes 12345, which the cache has never seen
        data["images"][0].update(id=12345, file_name="COCO_train2014_000000012345.jpg")
        for ann in data["annotations"]:
            ann["image_id"] = 12345 if ann["image_id"] == 9 else ann["image_id"]

    ghost = _mutated(tmp_path, TRAIN_JSON, renumber)
    with pytest.raises(DataError, match=r"image 12345 \(COCO_train2014_000000012345.jpg\) is not in the feature cache"):
        CaptionEvalDataset(load_coco_captions(ghost), features=cache)
