"""The benchmark suite's own pieces: ratios, the table, the VQA baseline's dimensions, the GPU script's
CPU smoke run. (The benchmarks themselves run with ``python -m benchmarks.run``, not in the tests.)"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import pytest
import torch

ROOT = str(Path(__file__).resolve().parents[1])
if ROOT not in sys.path:  # `benchmarks` is not installed with mmapp; plain `pytest` does not add the root
    sys.path.insert(0, ROOT)

from benchmarks.common import Figure, against, caption_batch  # noqa: E402
from benchmarks.run import parse_args, table  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")


def test_ratios_are_above_one_when_better() -> None:
    assert against(200.0, 100.0, higher_is_better=True) == 2.0  # twice the throughput
    assert against(25.0, 50.0, higher_is_better=False) == 2.0  # half the time
    assert against(100.0, 50.0, higher_is_better=False) == 0.5
    assert math.isnan(against(0.0, 1.0, True))
    met = Figure("g", "fast", 10.0, "ms", False, "target 35 ms", against(10.0, 35.0, False), 1.0)
    missed = Figure("g", "slow", 70.0, "ms", False, "target 35 ms", against(70.0, 35.0, False), 1.0)
    info = Figure("g", "info", 1.0, "x", True)
    assert (met.meets, missed.meets, info.meets) == (True, False, None)
    lines = table([met, missed, info]).splitlines()
    assert len(lines) == 5 and "| met (>= 1x) |" in lines[2] and "NOT met" in lines[3] and lines[4].endswith("| - |")
    assert json.loads(json.dumps(met.to_dict()))["meets"] is True


def test_caption_batches_are_coco_like() -> None:
    captions, lengths = caption_batch(2000, 100, torch.Generator().manual_seed(0))
    assert 11.5 < lengths.float().mean() < 12.5 and int(lengths.min()) >= 8  # mean 12 tokens
    for row, n in zip(captions[:50], lengths[:50].tolist()):
        assert row[0] == 1 and row[n - 1] == 2 and (row[n:] == 0).all() and (row[1 : n - 1] >= 4).all()


def test_cli_refuses_unknown_groups(capsys) -> None:
    args = parse_args(["--quick", "--only", "train,beam"])
    assert args.only == ["train", "beam"] and args.threads == 1 and args.md.suffix == ".md"
    with pytest.raises(SystemExit):
        parse_args(["--only", "train,bogus"])
    assert "bogus" in capsys.readouterr().err


def test_vqa_baseline_has_mmapps_dimensions() -> None:
    """Same parts, same sizes: the two VQA models hold the same number of parameters."""
    from benchmarks.reference_vqa import Net
    from mmapp.config import VQAConfig
    from mmapp.models.vqa import VQANet

    ref = Net(embedding_tokens=50, vision_features=32, max_answers=10)
    ours = VQANet(VQAConfig(vocab_size=50, num_answers=10, encoder_dim=32, embed_dim=300, question_dim=1024,
                            attention_dim=512, glimpses=2, fusion="concat", hidden_dim=1024))
    assert sum(p.numel() for p in ref.parameters()) == sum(p.numel() for p in ours.parameters())
    v, q = torch.rand(3, 32, 2, 2), torch.tensor([[5, 6, 7], [8, 9, 0], [4, 0, 0]])
    assert ref(v, q, torch.tensor([3, 2, 1])).shape == (3, 10)


def test_gpu_epoch_smoke_run_on_cpu(tmp_path) -> None:
    from benchmarks import gpu_epoch

    out = tmp_path / "gpu.json"
    assert gpu_epoch.main(["--tiny", "--out", str(out), "--reference-steps", "1"]) == 0
    result = json.loads(out.read_text())
    assert result["device"] == "cpu" and result["tiny"] and result["meets_target"] is None
    assert result["captions"] == 300 and result["steps_per_epoch"] == math.ceil(300 / 32)
    assert result["epoch_measured"] and math.isfinite(result["loss"]) and result["ms_per_step"] > 0
    assert result["reference_ms_per_step"] > 0


def test_gpu_epoch_graphed_smoke_run_pads_batches_to_fixed_shapes(tmp_path) -> None:
    from benchmarks import gpu_epoch

    out = tmp_path / "gpu.json"
    assert gpu_epoch.main(["--tiny", "--cuda-graphs", "--check-steps", "4", "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["cuda_graphs"] and result["graphs"] == 0 and result["eager_steps"] == result["steps_per_epoch"]
    assert math.isfinite(result["loss"]) and result["check_max_weight_diff"] == 0.0  # eager vs eager on a CPU
    g = torch.Generator().manual_seed(0)
    captions, lengths = gpu_epoch.synthetic_captions(500, 300, g)
    features = torch.rand(100, 4, 8)
    shapes = {(tuple(b["visual"].shape), b["captions"].shape[1])
              for b in gpu_epoch.batches(features, captions, lengths, 5, 32, torch.device("cpu"), g, 4)}
    assert {v for v, _ in shapes} == {(8, 4, 8)}  # ceil(32 / 5) + 1 image rows, always
    assert all(L % 4 == 0 or L == captions.shape[1] for _, L in shapes)


def test_gpu_train_check_smoke_run_on_cpu(tmp_path) -> None:
    """``benchmarks.gpu_train_check --tiny``: the synthetic data in mmapp's formats, ``mmapp train caption``
    and ``mmapp train vqa`` through the fast path (its eager steps on a CPU) and VQA's eager path,
    each for one epoch. (The benchmark step is ``gpu_epoch --tiny``, tested above.)"""
    import numpy as np

    from benchmarks import gpu_train_check
    from mmapp.data.feature_cache import FeatureCache

    out = tmp_path / "check.json"
    assert gpu_train_check.main(["--tiny", "--work", str(tmp_path / "work"), "--out", str(out), "--skip", "bench"]) == 0
    result = json.loads(out.read_text())
    cache = FeatureCache.open(tmp_path / "work" / "data" / "features")  # mmapp's own reader accepts it
    assert len(cache) == result["images"] == 40 and cache.array.dtype == np.float16
    assert isinstance(cache.array, np.memmap) and np.isfinite(cache.array).all()
    caption, vqa, eager = result["caption"], result["vqa"], result["vqa_eager"]
    assert caption["cuda_graphs"] == vqa["cuda_graphs"] == "on" and eager["cuda_graphs"] == "off"
    assert caption["steps"] == math.ceil(30 / 4) and caption["eager_steps"] == caption["steps"]  # nothing captured
    assert vqa["graphs"] == 0 and eager["graphs"] is None and vqa["steps"] == eager["steps"] == 5
    assert all(math.isfinite(r["loss"]) and r["epoch_seconds"] > 0 for r in (caption, vqa, eager))
    assert result["padding"]["vs_shrink"] >= result["padding"]["vs_unpadded"] >= 1.0
    assert result["vqa_speedup"] > 0 and "caption_vs_benchmark" not in result  # the benchmark was skipped


@pytest.mark.skipif(not Path("/proc/self/stat").is_file(), reason="reads a process's CPU time from Linux's /proc")
def test_the_app_benchmarks_cpu_clock_counts_both_processes() -> None:
    import os
    import subprocess
    import time

    from benchmarks.serving import _CPUClock

    app = subprocess.Popen([sys.executable, "-c", "import time\nend = time.process_time() + 0.3\n"
                            "while time.process_time() < end: pass\nprint('done', flush=True)\ntime.sleep(30)"],
                           stdout=subprocess.PIPE, text=True)
    try:
        clock = _CPUClock(app.pid)
        end = time.process_time() + 0.2
        while time.process_time() < end:  # the "clients": this process
            pass
        assert app.stdout.readline().strip() == "done"  # the "app" has spent its 0.3 s
        app_ms, clients_ms = clock.per_request(2)
    finally:
        app.kill()
    assert 100 <= app_ms <= 200 and 80 <= clients_ms <= 150  # per request: 300 ms and 200 ms over 2
    assert _CPUClock(os.getpid() + 10_000_000).per_request(1) is None  # no such process
