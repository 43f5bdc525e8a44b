"""Feature cache: round trip against the encoder, refusal of mismatched encoders, resuming an
interrupted extraction, rebuild/refuse on a different encoder, rank sharding, pickling."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from mmapp.config import EncoderConfig
from mmapp.data import feature_extraction as F
from mmapp.data.feature_cache import FeatureCache
from mmapp.data.feature_extraction import extract_features, shard_rows
from mmapp.distributed import DistInfo
from mmapp.errors import DataError

COCO = Path(__file__).resolve().parents[1] / "datasets" / "fixtures" / "coco"
CFG = EncoderConfig(weights="none", input_size=64)
PATHS = sorted(COCO.rglob("*.jpg"))  # 5 images
KEYS = [p.relative_to(COCO).as_posix() for p in PATHS]
IDS = [int(p.stem.rsplit("_", 1)[1]) for p in PATHS]


class CountingEncoder(torch.nn.Module):
    """Wraps an encoder: counts the images it encodes, and fails on batch ``fail_at`` (0-based)."""

    def __init__(self, inner: torch.nn.Module, fail_at: int | None = None, on_fail=lambda: None) -> None:
        super().__init__()
        self.inner, self.fail_at, self.on_fail, self.batches, self.images = inner, fail_at, on_fail, 0, 0
        self.cfg, self.out_dim = inner.cfg, inner.out_dim

    def grid_size(self):
        return self.inner.grid_size()

    def weights_id(self):
        return self.inner.weights_id()

    def forward(self, x):
        if self.batches == self.fail_at:
            self.on_fail()
            raise RuntimeError("simulated crash")
        self.batches += 1
        self.images += len(x)
        return self.inner(x)


@pytest.fixture(scope="module")
def encoder():
    from mmapp.models.encoder import build_encoder

    torch.manual_seed(0)
    return build_encoder(CFG).eval()


@pytest.fixture(scope="module")
def reference(encoder, tmp_path_factory) -> FeatureCache:
    """An uninterrupted extraction."""
    return extract_features(PATHS, KEYS, encoder, tmp_path_factory.mktemp("ref"), batch_size=2,
                            image_ids=IDS, progress=False)


def test_round_trip_equals_encoder_output(encoder, reference):
    from mmapp.images import load_image, preprocess

    with torch.inference_mode():
        want = encoder(torch.stack([preprocess(load_image(p), CFG) for p in PATHS])).numpy()  # (5, P, D)
    h, w = encoder.grid_size()
    assert reference.grid_size == (h, w) and reference.dim == encoder.out_dim and len(reference) == 5
    stored = np.load(reference.path / "features.npy", mmap_mode="r")
    assert stored.dtype == np.float16 and stored.shape == (5, h * w, encoder.out_dim)
    for i, (key, image_id) in enumerate(zip(KEYS, IDS)):
        got = reference.get(key)
        assert got.dtype == np.float16 and got.shape == (h * w, encoder.out_dim)
        np.testing.assert_allclose(got.astype(np.float32), want[i], rtol=2e-3, atol=2e-3)
        np.testing.assert_array_equal(reference.get(image_id), got)  # the image id is a key too
        assert reference.find("nope", key.split("/")[-1]) == i  # and so is the bare file name
    meta = json.loads((reference.path / "meta.json").read_text())
    assert meta["complete"] and meta["weights_id"] == encoder.weights_id() and meta["encoder"]["input_size"] == 64
    assert meta["grid"] == [h, w] and meta["dim"] == encoder.out_dim and meta["count"] == 5
    assert reference.encoder_config == CFG
    assert not list(reference.path.glob("done.*"))  # progress files are gone once complete


def test_open_refuses_mismatch(reference):
    path = reference.path
    assert FeatureCache.open(path, expect_encoder=CFG, expect_weights_id="random").dim == reference.dim
    for other, field in [(EncoderConfig(weights="none", input_size=96), "input_size"),
                         (EncoderConfig(weights="none", input_size=64, grid="last"), "grid"),
                         (EncoderConfig(weights="none", input_size=64, mean=(0.485, 0.456, 0.406)), "mean"),
                         (EncoderConfig(weights="package", input_size=64), "weights"),
                         (EncoderConfig(weights="none", input_size=64, pixel_patch=2), "pixel_patch")]:
        with pytest.raises(DataError, match=rf"{path}: features were computed with encoder\.{field}="):
            FeatureCache.open(path, expect_encoder=other)
    with pytest.raises(DataError, match="encoder weights 'random', but weights 'abc123'"):
        FeatureCache.open(path, expect_encoder=CFG, expect_weights_id="abc123")
    # fine_tune_stages does not change the stored features
    FeatureCache.open(path, expect_encoder=EncoderConfig(weights="none", input_size=64, fine_tune_stages=2))
    with pytest.raises(DataError, match="not a feature cache"):
        FeatureCache.open(path.parent)


@pytest.mark.parametrize("save_every_s, saved_before_crash", [(0.0, 4), (1e9, 0)])
def test_interrupted_extraction_resumes(encoder, reference, tmp_path, save_every_s, saved_before_crash):
    """Batches of 2: rows 0-3 are written, then the encoder crashes. Progress was saved after each
    batch (save_every_s=0: what survives a hard kill) or only on the way out (the except path)."""
    seen = []
    crashing = CountingEncoder(encoder, fail_at=2, on_fail=lambda: seen.append(F._load_done(tmp_path, 5).sum()))
    with pytest.raises(RuntimeError, match="simulated crash"):
        extract_features(PATHS, KEYS, crashing, tmp_path, batch_size=2, image_ids=IDS, progress=False,
                         save_every_s=save_every_s)
    assert crashing.images == 4 and seen == [saved_before_crash]
    assert not json.loads((tmp_path / "meta.json").read_text())["complete"]
    assert F._load_done(tmp_path, 5).tolist() == [True, True, True, True, False]
    with pytest.raises(DataError, match="did not finish"):
        FeatureCache.open(tmp_path)
    partial = np.array(np.load(tmp_path / "features.npy", mmap_mode="r")[:4])
    messages = []
    resuming = CountingEncoder(encoder)
    cache = extract_features(PATHS, KEYS, resuming, tmp_path, batch_size=2, image_ids=IDS, progress=False,
                             log=messages.append)
    assert resuming.images == 1  # only the missing row was computed
    assert any("resuming" in m and "4/5" in m for m in messages)
    np.testing.assert_array_equal(cache.array[:4], partial)
    np.testing.assert_array_equal(cache.array, reference.array)
    assert cache.run_stats["images"] == 1
    again = CountingEncoder(encoder)
    assert extract_features(PATHS, KEYS, again, tmp_path, image_ids=IDS, progress=False).run_stats is None
    assert again.images == 0  # complete and matching: nothing recomputed


def test_mismatch_rebuilds_or_refuses(encoder, tmp_path):
    extract_features(PATHS[:2], KEYS[:2], encoder, tmp_path, progress=False)
    with pytest.raises(DataError, match="refusing to overwrite"):
        extract_features(PATHS, KEYS, encoder, tmp_path, progress=False, overwrite=False)  # other image list
    messages = []
    counting = CountingEncoder(encoder)
    cache = extract_features(PATHS, KEYS, counting, tmp_path, progress=False, log=messages.append)
    assert counting.images == 5 and len(cache) == 5 and any("rebuilding" in m for m in messages)


def test_shard_rows_cover_all_rows_once():
    for n, world in [(10, 3), (5, 1), (2, 4), (0, 2)]:
        shards = [shard_rows(n, r, world) for r in range(world)]
        assert sorted(sum(shards, [])) == list(range(n))
    assert shard_rows(10, 1, 3) == [1, 4, 7]
    with pytest.raises(ValueError):
        shard_rows(10, 3, 3)


def test_ranks_write_their_shards_of_one_file(encoder, reference, tmp_path, monkeypatch):
    """Simulated 2-rank run (barriers are no-ops without torch.distributed): rank 0 creates the
    files and encodes rows 0, 2, 4; rank 1 encodes rows 1, 3; the result equals one process."""
    monkeypatch.setattr(F, "current", lambda: DistInfo(0, 2))
    rank0 = CountingEncoder(encoder)
    with pytest.raises(DataError, match="some rows were not written"):  # rank 1 has not run yet
        extract_features(PATHS, KEYS, rank0, tmp_path, batch_size=2, image_ids=IDS, progress=False)
    assert rank0.images == 3 and F._load_done(tmp_path, 5).tolist() == [True, False, True, False, True]
    monkeypatch.setattr(F, "current", lambda: DistInfo(1, 2))
    rank1 = CountingEncoder(encoder)
    with pytest.raises(DataError, match="did not finish"):  # a real rank 1 would wait at the barrier
        extract_features(PATHS, KEYS, rank1, tmp_path, batch_size=2, image_ids=IDS, progress=False)
    assert rank1.images == 2 and F._load_done(tmp_path, 5).all()
    monkeypatch.setattr(F, "current", lambda: DistInfo(0, 1))
    last = CountingEncoder(encoder)
    cache = extract_features(PATHS, KEYS, last, tmp_path, image_ids=IDS, progress=False)
    assert last.images == 0  # every row was already written by one of the ranks
    np.testing.assert_array_equal(cache.array, reference.array)


def test_pickled_cache_does_not_carry_the_array(reference):
    reference.get(KEYS[0])  # opens the memory map
    blob = pickle.dumps(reference)
    assert len(blob) < 10_000
    np.testing.assert_array_equal(pickle.loads(blob).get(KEYS[1]), reference.get(KEYS[1]))


def test_bad_inputs_name_the_file(encoder, tmp_path):
    bad = tmp_path / "imgs" / "broken.jpg"
    bad.parent.mkdir()
    bad.write_bytes(b"\xff\xd8\xff not really a jpeg")
    with pytest.raises(DataError, match="broken.jpg"):
        extract_features([PATHS[0], bad], ["a", "b"], encoder, tmp_path / "c1", progress=False)
    with pytest.raises(DataError, match="image file not found: .*nope.jpg"):
        extract_features([tmp_path / "nope.jpg"], ["x"], encoder, tmp_path / "c2", progress=False)
    with pytest.raises(DataError, match="duplicate image key 'a'"):
        extract_features(PATHS[:2], ["a", "a"], encoder, tmp_path / "c3", progress=False)


def test_a_cache_written_before_pixel_patches_existed_reads_as_none(reference, tmp_path):
    import shutil

    old = tmp_path / "old"
    shutil.copytree(reference.path, old)
    meta = json.loads((old / "meta.json").read_text())
    del meta["encoder"]["pixel_patch"]
    (old / "meta.json").write_text(json.dumps(meta))
    assert FeatureCache.open(old, expect_encoder=CFG).encoder_config.pixel_patch == 0
    with pytest.raises(DataError, match="encoder.pixel_patch=0"):
        FeatureCache.open(old, expect_encoder=EncoderConfig(weights="none", input_size=64, pixel_patch=4))
