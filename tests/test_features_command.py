"""``mmapp features``: image listing (folder scan, text list, COCO/Karpathy/VQA json), encoder
config from YAML + overrides, and an end-to-end run with DataLoader workers."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from mmapp.cli import main
from mmapp.commands.features import encoder_config_from, list_images
from mmapp.config import EncoderConfig
from mmapp.data.feature_cache import FeatureCache

COCO = Path(__file__).resolve().parents[1] / "datasets" / "fixtures" / "coco"
ARGS = ["encoder.weights=none", "encoder.input_size=64", "--quiet"]


def test_list_images_sources(tmp_path):
    paths, keys, ids = list_images(COCO, None)
    assert keys[0] == "train2014/COCO_train2014_000000000009.jpg" and len(keys) == 5
    assert ids == [9, 25, 30, 42, 73]  # read from the official file names
    _, keys, ids = list_images(COCO, COCO / "vqa" / "v2_OpenEnded_mscoco_train2014_questions.json")
    assert keys == [f"train2014/COCO_train2014_{i:012d}.jpg" for i in (9, 25, 30)] and ids == [9, 25, 30]
    paths, keys, ids = list_images(COCO / "val2014", COCO / "annotations" / "captions_val2014.json")
    assert keys == ["COCO_val2014_000000000042.jpg", "COCO_val2014_000000000073.jpg"] and ids == [42, 73]
    assert all(p.is_file() for p in paths)
    _, keys, ids = list_images(COCO, COCO / "annotations" / "dataset_coco.json")
    assert keys[3] == "val2014/COCO_val2014_000000000042.jpg" and ids[3] == 42
    listing = tmp_path / "list.txt"
    listing.write_text("# two images\nval2014/COCO_val2014_000000000073.jpg\n\ntrain2014/COCO_train2014_000000000030.jpg\n")
    _, keys, ids = list_images(COCO, listing)
    assert keys == ["val2014/COCO_val2014_000000000073.jpg", "train2014/COCO_train2014_000000000030.jpg"]
    assert ids == [73, 30]


def test_encoder_config_from_yaml_and_overrides(tmp_path):
    run_cfg = tmp_path / "run.yaml"
    run_cfg.write_text("encoder:\n  grid: last\n  input_size: 448\ntrain:\n  lr: 0.001\n")
    cfg = encoder_config_from(run_cfg, ["encoder.input_size=96", "weights=none"])
    assert cfg == EncoderConfig(grid="last", input_size=96, weights="none")
    flat = tmp_path / "enc.yaml"
    flat.write_text("input_size: 320\n")
    assert encoder_config_from(flat, []).input_size == 320
    with pytest.raises(ValueError, match="encoder.bogus"):
        encoder_config_from(None, ["encoder.bogus=1"])


def test_command_end_to_end(tmp_path, capsys):
    out = tmp_path / "cache"
    assert main(["features", "--images", str(COCO), "--out", str(out), "--workers", "2", "--batch-size", "2", *ARGS]) == 0
    printed = capsys.readouterr().out
    assert "5 images, grid 4x4" in printed and "images/s" in printed
    cache = FeatureCache.open(out, expect_encoder=EncoderConfig(weights="none", input_size=64))
    assert sorted(cache.files) == sorted(list_images(COCO, None)[1]) and 42 in cache
    assert np.isfinite(cache.array.astype(np.float32)).all() and np.abs(cache.array.astype(np.float32)).sum() > 0
    assert main(["features", "--images", str(COCO), "--out", str(out), "--workers", "0", *ARGS]) == 0
    assert "already complete" in capsys.readouterr().out
    rc = main(["features", "--images", str(COCO), "--out", str(out), "--no-overwrite", "encoder.weights=none",
               "encoder.input_size=96", "--quiet"])
    assert rc == 3 and "refusing to overwrite" in capsys.readouterr().err
    meta = json.loads((out / "meta.json").read_text())
    assert meta["encoder"]["input_size"] == 64  # left untouched


def test_help_documents_the_rebuild_policy(capsys):
    with pytest.raises(SystemExit):
        main(["features", "--help"])
    text = capsys.readouterr().out
    assert "--no-overwrite" in text and "resumed" in text and "rebuilt from scratch" in text
