"""``mmapp caption`` / ``mmapp ask`` end to end on tiny checkpoints, their errors, and ``python -m mmapp``."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from mmapp.cli import main
from mmapp.inference import Captioner, VQAModel

pytestmark = pytest.mark.usefixtures("one_thread")

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def _no_debug(monkeypatch) -> None:
    monkeypatch.delenv("MMAPP_DEBUG", raising=False)  # MMAPP_DEBUG turns errors into tracebacks


def test_caption_json(captioner_checkpoint, image_file, capsys) -> None:
    first, second = image_file("a.png", seed=1), image_file("b.jpg", seed=2)
    rc = main(["caption", str(first), str(second), "--checkpoint", str(captioner_checkpoint), "--json",
               "--beam-size", "2", "--max-len", "7", "--device", "cpu", "--attention"])
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    out = json.loads(captured.out)
    expected = Captioner.from_checkpoint(captioner_checkpoint, "cpu").caption([first, second], beam_size=2,
                                                                               max_len=7)
    assert [item["image"] for item in out] == [str(first), str(second)]
    for item, r in zip(out, expected):
        assert item["caption"] == r.text and item["tokens"] == r.tokens
        assert item["score"] == pytest.approx(r.score, abs=1e-6)
        assert len(item["attention"]) == len(r.tokens)


def test_caption_text(captioner_checkpoint, image_file, capsys) -> None:
    path = image_file()
    assert main(["caption", str(path), "--checkpoint", str(captioner_checkpoint)]) == 0
    line = capsys.readouterr().out.strip()
    assert line.startswith(f"{path}\t") and "log-prob" in line


def test_ask_json(vqa_checkpoint, image_file, capsys) -> None:
    path = image_file()
    question = "what color is the circle?"
    rc = main(["ask", str(path), question, "--checkpoint", str(vqa_checkpoint), "--json", "--top-k", "3"])
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    out = json.loads(captured.out)
    (expected,) = VQAModel.from_checkpoint(vqa_checkpoint, "cpu").answer(path, question, top_k=3)
    assert out["image"] == str(path) and out["question"] == question
    assert [a["answer"] for a in out["answers"]] == [a for a, _ in expected.answers]
    assert [a["probability"] for a in out["answers"]] == pytest.approx([p for _, p in expected.answers], abs=1e-6)


def _one_line_error(capsys, command: str) -> str:
    captured = capsys.readouterr()
    err = captured.err.strip()
    assert captured.out == ""
    assert "Traceback" not in err and len(err.splitlines()) == 1, err
    assert err.startswith(f"mmapp {command}: error: ")
    return err


def test_missing_image_exits_2(captioner_checkpoint, vqa_checkpoint, tmp_path, capsys) -> None:
    missing = tmp_path / "missing.png"
    assert main(["caption", str(missing), "--checkpoint", str(captioner_checkpoint)]) == 2
    assert str(missing) in _one_line_error(capsys, "caption")
    assert main(["ask", str(missing), "what?", "--checkpoint", str(vqa_checkpoint)]) == 2
    assert str(missing) in _one_line_error(capsys, "ask")


def test_bad_checkpoint_exits_2(tmp_path, image_file, vqa_checkpoint, capsys) -> None:
    path = image_file()
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"\x00" * 100)
    assert main(["caption", str(path), "--checkpoint", str(bad)]) == 2
    assert str(bad) in _one_line_error(capsys, "caption")
    assert main(["caption", str(path), "--checkpoint", str(tmp_path / "none.safetensors")]) == 2
    assert "not found" in _one_line_error(capsys, "caption")
    assert main(["caption", str(path), "--checkpoint", str(vqa_checkpoint)]) == 2  # a VQA model
    assert "not a captioner model" in _one_line_error(capsys, "caption")


def test_empty_question_exits_2(vqa_checkpoint, image_file, capsys) -> None:
    assert main(["ask", str(image_file()), "  ", "--checkpoint", str(vqa_checkpoint)]) == 2
    assert "question is empty" in _one_line_error(capsys, "ask")


def test_python_dash_m_help() -> None:
    done = subprocess.run([sys.executable, "-m", "mmapp", "--help"], cwd=REPO, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    assert "usage: mmapp" in done.stdout
    assert "caption" in done.stdout and "ask" in done.stdout


def test_subcommand_help(capsys) -> None:
    with pytest.raises(SystemExit) as info:
        main(["ask", "--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    assert "QUESTION" in out and "--checkpoint" in out and "--top-k" in out
