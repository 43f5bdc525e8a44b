"""``mmapp eval caption|vqa`` end to end on the tiny fixture files."""

from __future__ import annotations

import importlib.machinery
import importlib.util
import json
import shutil
import sys
import types
from pathlib import Path

import pytest

from mmapp.cli import main
from mmapp.metrics import caption_metrics
from mmapp.metrics.vqa_accuracy import vqa_accuracy_files

FIX = Path(__file__).parent / "fixtures_metrics"


def test_eval_vqa_writes_metrics(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    rc = main(["eval", "vqa", "--results", str(FIX / "vqa_results_tiny.json"),
               "--questions", str(FIX / "vqa_questions_tiny.json"),
               "--annotations", str(FIX / "vqa_annotations_tiny.json"), "--out", str(tmp_path)])
    assert rc == 0
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    expected = vqa_accuracy_files(FIX / "vqa_results_tiny.json", FIX / "vqa_questions_tiny.json",
                                  FIX / "vqa_annotations_tiny.json")
    assert metrics["task"] == "vqa" and metrics["overall"] == pytest.approx(expected["overall"])
    assert metrics["per_question"]["120"] == pytest.approx(0.6)
    md = (tmp_path / "metrics.md").read_text()
    assert "| overall | 87.50 |" in md and "| answer type: other | 75.00 |" in md
    out = capsys.readouterr().out
    assert "| overall | 87.50 |" in out and "1 annotated questions have no result" in out


def test_eval_caption_writes_metrics_beside_results(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                    capsys: pytest.CaptureFixture) -> None:
    # METEOR itself is checked against the toolkit in test_metrics_caption; here a stub saves its
    # Java start-up and shows where its numbers land.
    monkeypatch.setattr(caption_metrics, "_meteor", lambda gts, res: (0.25, [0.25] * len(res)))
    results = tmp_path / "res.json"
    shutil.copy(FIX / "caption_results_tiny.json", results)
    rc = main(["eval", "caption", "--results", str(results), "--annotations", str(FIX / "coco_captions_tiny.json")])
    assert rc == 0
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    direct = caption_metrics.score_results_file(results, FIX / "coco_captions_tiny.json")
    for name in ("Bleu_1", "Bleu_4", "ROUGE_L", "CIDEr"):
        assert metrics["overall"][name] == pytest.approx(direct["overall"][name])
    assert metrics["overall"]["METEOR"] == 0.25 and metrics["overall"]["SPICE"]["available"] is False
    assert set(metrics["per_image"]) == {"11", "12", "13", "14", "15"} and metrics["num_missing"] == 1
    md = (tmp_path / "metrics.md").read_text()
    assert "| METEOR | 25.00 |" in md and "| SPICE | unavailable |" in md
    assert f"| Bleu_1 | {100 * direct['overall']['Bleu_1']:.2f} |" in capsys.readouterr().out


def test_eval_refuses_bad_results(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    bad = tmp_path / "dup.json"
    bad.write_text(json.dumps([{"question_id": 110, "answer": "yes"}, {"question_id": 110, "answer": "no"}]))
    rc = main(["eval", "vqa", "--results", str(bad), "--annotations", str(FIX / "vqa_annotations_tiny.json")])
    assert rc == 3  # bad input
    err = capsys.readouterr().err
    assert "dup.json: record 1: duplicate question_id 110" in err
    assert not (tmp_path / "metrics.json").exists()


def test_eval_needs_exactly_one_source(capsys: pytest.CaptureFixture) -> None:
    assert main(["eval", "caption", "--annotations", str(FIX / "coco_captions_tiny.json")]) == 2
    assert "exactly one of --results" in capsys.readouterr().err


def test_checkpoint_calls_decode_split(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    calls = []

    def decode_split(**kwargs):
        calls.append(kwargs)
        return {"results": FIX / "vqa_results_tiny.json", "annotations": FIX / "vqa_annotations_tiny.json"}

    fake = types.ModuleType("mmapp.decode_split")
    fake.__spec__ = importlib.machinery.ModuleSpec("mmapp.decode_split", None)
    fake.decode_split = decode_split
    monkeypatch.setitem(sys.modules, "mmapp.decode_split", fake)
    rc = main(["eval", "vqa", "--checkpoint", str(tmp_path / "c.pt"), "--data", str(tmp_path), "--split", "val"])
    assert rc == 0
    assert calls == [{"task": "vqa", "checkpoint": tmp_path / "c.pt", "data_dir": tmp_path, "split": "val",
                      "out_dir": tmp_path / "eval-val", "features": None, "beam_size": 3, "device": "auto"}]
    assert json.loads((tmp_path / "eval-val" / "metrics.json").read_text())["overall"] == pytest.approx(0.875)
