"""torchrun support: ``EpochSampler`` (deterministic, disjoint covering shards, mid-epoch skip) and a
real 2-process CPU (gloo) ``torchrun -m mmapp train caption`` run: rank 0 alone writes, and
validation covers every validation image (gathered across ranks)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from mmapp.cli import main
from mmapp.distributed import EpochSampler

ROOT = Path(__file__).resolve().parents[1]
COCO = ROOT / "datasets" / "fixtures" / "coco"
TORCHRUN = Path(sys.executable).with_name("torchrun")


# ------------------------------------------------------------------------------------------ sampler


def test_sampler_is_a_permutation_fixed_by_seed_and_epoch():
    a = EpochSampler(50, seed=3, epoch=2).indices()
    assert a == EpochSampler(50, seed=3, epoch=2).indices()
    assert sorted(a) == list(range(50)) and a != list(range(50))
    assert a != EpochSampler(50, seed=3, epoch=3).indices()
    assert a != EpochSampler(50, seed=4, epoch=2).indices()
    assert EpochSampler(50, 3, 2, shuffle=False).indices() == list(range(50))
    torch.manual_seed(0)
    before = torch.get_rng_state()
    list(EpochSampler(50, 3, 2))
    assert torch.equal(before, torch.get_rng_state())  # the global RNG (dropout) is left alone


@pytest.mark.parametrize("size,world", [(12, 2), (13, 4), (5, 3), (2, 4)])
def test_shards_are_disjoint_and_cover_everything(size, world):
    shards = [EpochSampler(size, 7, 1, rank=r, world_size=world).indices() for r in range(world)]
    per_rank = -(-size // world)
    assert all(len(s) == per_rank == len(EpochSampler(size, 7, 1, r, world)) for r, s in enumerate(shards))
    flat = [i for s in shards for i in s]
    assert set(flat) == set(range(size))  # every item is seen
    padding = per_rank * world - size  # DistributedSampler-style wrap so every rank takes as many steps
    assert len(flat) - len(set(flat)) == padding
    if padding == 0:
        assert all(set(a).isdisjoint(b) for i, a in enumerate(shards) for b in shards[i + 1:])


@pytest.mark.parametrize("world", [1, 2])
def test_skip_resumes_inside_the_epoch(world):
    full = EpochSampler(21, 0, 5, rank=world - 1, world_size=world)
    for skip in (0, 1, 4, len(full)):
        resumed = EpochSampler(21, 0, 5, rank=world - 1, world_size=world, skip=skip)
        assert list(resumed) == full.indices()[skip:] and len(resumed) == len(full) - skip


# ------------------------------------------------------------------------------------------ torchrun


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def coco_cache(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("coco_features")
    assert main(["features", "--images", str(COCO), "--out", str(out), "encoder.input_size=64",
                 "--workers", "0", "--quiet"]) == 0
    return out


@pytest.mark.slow
def test_torchrun_two_processes_on_cpu(tmp_path, coco_cache):
    from mmapp.checkpoint import read_checkpoint
    from mmapp.data.coco_captions import load_coco_captions
    from mmapp.data.feature_cache import FeatureCache
    from mmapp.inference import Captioner
    from mmapp.metrics.caption_metrics import score_captions

    run = tmp_path / "ddp"
    val = COCO / "annotations" / "captions_val2014.json"
    cmd = [str(TORCHRUN), "--nproc_per_node=2", "--master_addr=127.0.0.1", f"--master_port={free_port()}",
           "-m", "mmapp", "train", "caption", "--out", str(run), f"data.features={coco_cache}",
           f"data.train_captions={COCO / 'annotations' / 'captions_train2014.json'}", f"data.val_captions={val}",
           "data.min_word_freq=1", "train.epochs=2", "train.batch_size=1", "train.device=cpu", "train.amp=off",
           "train.warmup_steps=0", "train.val_beam_size=2", "decoder.embed_dim=16", "decoder.hidden_dim=32",
           "decoder.attention_dim=16", "--quiet"]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]

    # rank 0 alone wrote, once: no second copy, no leftover temporary file
    assert sorted(p.name for p in run.iterdir()) == ["best.safetensors", "config.yaml", "curves.png",
                                                     "last.safetensors", "metrics.jsonl"]
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2]
    # 3 training images over 2 ranks: each rank takes ceil(3 / 2) = 2 one-image steps per epoch
    assert all(r["train"]["steps"] == 2 for r in rows)
    loop = read_checkpoint(run / "last.safetensors")[1]["train_state"]["loop"]
    assert (loop["epoch"], loop["global_step"]) == (2, 4)

    # the logged validation scores are those of all val images (both ranks' halves, gathered):
    # decode every val image with the saved weights in this process and score them the same way
    captioner = Captioner.from_checkpoint(run / "last.safetensors", device="cpu")
    cache = FeatureCache.open(coco_cache)
    images = load_coco_captions(val)
    grids = torch.stack([torch.from_numpy(cache.get(im.image_id)).float() for im in images])  # (2, P, D)
    decoded = captioner.caption_features(grids, beam_size=2, max_len=20)
    captions = {im.image_id: " ".join(captioner.vocab.decode(t)) for im, t in zip(images, decoded.tokens.tolist())}
    scores = score_captions({im.image_id: list(im.captions) for im in images}, captions, with_meteor=False).overall
    assert rows[-1]["val"] == pytest.approx({k: scores[k] for k in rows[-1]["val"]}, abs=1e-6)
