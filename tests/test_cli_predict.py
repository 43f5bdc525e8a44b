"""``mmapp caption`` / ``mmapp ask`` end to end on tiny checkpoints: inputs (files, folders, globs,
unreadable images skipped), output formats (round trips through ``mmapp eval``), warnings, exit codes,
and ``python -m mmapp``."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from mmapp.cli import EXIT_BAD_INPUT, EXIT_PARTIAL, EXIT_USAGE, main
from mmapp.inference import MAX_BEAM_SIZE, Captioner, VQAModel

pytestmark = pytest.mark.usefixtures("one_thread")

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def _no_debug(monkeypatch) -> None:
    monkeypatch.delenv("MMAPP_DEBUG", raising=False)  # MMAPP_DEBUG turns errors into tracebacks


def test_caption_json(captioner_checkpoint, image_file, capsys) -> None:
    first, second = image_file("a.png", seed=1), image_file("b.jpg", seed=2)
    rc = main(["caption", str(first), str(second), "--checkpoint", str(captioner_checkpoint), "--json",
               "--beam-size", "2", "--max-len", "7", "--device", "cpu"])
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    out = json.loads(captured.out)
    expected = Captioner.from_checkpoint(captioner_checkpoint, "cpu").caption([first, second], beam_size=2,
                                                                               max_len=7)
    assert [item["image"] for item in out] == [str(first), str(second)]
    for item, r in zip(out, expected):
        assert item["caption"] == r.text and item["tokens"] == r.tokens
        assert item["score"] == pytest.approx(r.score, abs=1e-6)
        assert len(item["attention"]) == len(r.tokens) and item["beam_size"] == 2
        assert {k: v for k, v in item.items() if k != "image"}.keys() == r.to_json().keys()


def test_caption_text(captioner_checkpoint, image_file, capsys) -> None:
    path = image_file()
    assert main(["caption", str(path), "--checkpoint", str(captioner_checkpoint)]) == 0
    line = capsys.readouterr().out.strip()
    assert line.startswith(f"{path}\t") and "log-prob" in line


def test_ask_json(vqa_checkpoint, image_file, capsys) -> None:
    path = image_file()
    question = "what color is the circle?"
    rc = main(["ask", str(path), question, "--checkpoint", str(vqa_checkpoint), "--json", "--top-k", "3"])
    assert rc == 0
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


def test_missing_image_is_bad_input(captioner_checkpoint, vqa_checkpoint, tmp_path, capsys) -> None:
    missing = tmp_path / "missing.png"
    assert main(["caption", str(missing), "--checkpoint", str(captioner_checkpoint)]) == EXIT_BAD_INPUT
    assert str(missing) in _one_line_error(capsys, "caption")
    assert main(["ask", str(missing), "what color?", "--checkpoint", str(vqa_checkpoint)]) == EXIT_BAD_INPUT
    assert str(missing) in _one_line_error(capsys, "ask")


def test_bad_checkpoint_is_bad_input(tmp_path, image_file, vqa_checkpoint, capsys) -> None:
    path = image_file()
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"\x00" * 100)
    assert main(["caption", str(path), "--checkpoint", str(bad)]) == EXIT_BAD_INPUT
    assert str(bad) in _one_line_error(capsys, "caption")
    assert main(["caption", str(path), "--checkpoint", str(tmp_path / "none.safetensors")]) == EXIT_BAD_INPUT
    assert "not found" in _one_line_error(capsys, "caption")
    assert main(["caption", str(path), "--checkpoint", str(vqa_checkpoint)]) == EXIT_BAD_INPUT  # a VQA model
    assert "not a captioner model" in _one_line_error(capsys, "caption")


def test_refused_questions_are_bad_input(vqa_checkpoint, image_file, capsys) -> None:
    assert main(["ask", str(image_file()), "  ", "--checkpoint", str(vqa_checkpoint)]) == EXIT_BAD_INPUT
    assert "question is empty" in _one_line_error(capsys, "ask")
    assert main(["ask", str(image_file()), "qué es esto", "--checkpoint", str(vqa_checkpoint)]) == EXIT_BAD_INPUT
    assert "none of the question's words are known" in _one_line_error(capsys, "ask")


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


# ---------------------------------------------------------------------------------------------- usage


@pytest.mark.parametrize("argv", [["ask", "x.png", "what?", "--top-k", "0"], ["ask", "x.png", "what?", "--top-k", "-3"],
                                  ["caption", "x.png", "--beam-size", str(MAX_BEAM_SIZE + 1)],
                                  ["caption", "x.png", "--batch-size", "0"], ["caption"], ["ask", "x.png"],
                                  ["eval", "vqa", "--results", "r.json", "--beam-size", "3"]])
def test_usage_errors_exit_2(argv, capsys) -> None:
    try:
        rc = main(argv)
    except SystemExit as e:  # argparse's own errors
        rc = e.code
    assert rc == EXIT_USAGE
    assert "error:" in capsys.readouterr().err


def test_version_bare_help_and_eval_vqa_without_beam(capsys) -> None:
    from mmapp import __version__

    with pytest.raises(SystemExit) as info:
        main(["--version"])
    assert info.value.code == 0 and capsys.readouterr().out.strip() == f"mmapp {__version__}"
    assert main([]) == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: mmapp") and "caption" in out and "exit codes" in out
    for task, has_beam in (("vqa", False), ("caption", True)):
        with pytest.raises(SystemExit):
            main(["eval", task, "--help"])
        assert ("--beam-size" in capsys.readouterr().out) is has_beam


# ---------------------------------------------------------------------------------------------- inputs


@pytest.fixture
def folder(image_file, tmp_path) -> Path:
    """img_1.png, img_2.jpg, sub/img_3.png, bad_4.png (not an image) and notes.txt in one folder."""
    images = tmp_path / "images"
    (images / "sub").mkdir(parents=True)
    for name, seed in (("img_1.png", 1), ("img_2.jpg", 2), ("sub/img_3.png", 3)):
        image_file(Path(name).name, seed=seed).rename(images / name)
    (images / "bad_4.png").write_text("not an image")
    (images / "notes.txt").write_text("not an image either, and not picked from a folder")
    return images


def test_folders_and_globs_caption_every_image_and_skip_the_unreadable(folder, captioner_checkpoint, capsys) -> None:
    rc = main(["caption", str(folder), "--checkpoint", str(captioner_checkpoint), "--jsonl", "--batch-size", "2"])
    captured = capsys.readouterr()
    assert rc == EXIT_PARTIAL, captured.err
    lines = [json.loads(line) for line in captured.out.splitlines()]
    assert [Path(x["image"]).name for x in lines] == ["img_1.png", "img_2.jpg", "img_3.png"]
    assert "bad_4.png is not an image file" in captured.err and "1 skipped, 3 done" in captured.err
    expected = Captioner.from_checkpoint(captioner_checkpoint, "cpu").caption([x["image"] for x in lines])
    assert [x["caption"] for x in lines] == [r.text for r in expected]  # chunks of 2 == one batch
    assert main(["caption", str(folder / "img_*"), "--checkpoint", str(captioner_checkpoint)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert [Path(line.split("\t")[0]).name for line in out] == ["img_1.png", "img_2.jpg"]
    assert main(["caption", str(folder / "*.gif"), "--checkpoint", str(captioner_checkpoint)]) == EXIT_BAD_INPUT
    assert "no file matches" in capsys.readouterr().err


def test_progress_bar_on_many_images(image_file, captioner_checkpoint, capsys) -> None:
    paths = [str(image_file(f"p{i}.png", seed=i)) for i in range(10)]
    assert main(["caption", *paths, "--checkpoint", str(captioner_checkpoint), "--max-len", "2"]) == 0
    captured = capsys.readouterr()
    assert len(captured.out.splitlines()) == 10 and "10/10" in captured.err  # tqdm's bar on stderr
    assert main(["caption", *paths[:3], "--checkpoint", str(captioner_checkpoint), "--max-len", "2"]) == 0
    assert "3/3" not in capsys.readouterr().err  # no bar for a few images


def test_warnings_on_stderr_for_out_of_domain_images_and_unknown_words(tmp_path, capsys) -> None:
    from tests.support.tiny import make_tiny_checkpoints, write_scene

    cap, vqa = make_tiny_checkpoints(tmp_path, captioner_ood_threshold=-1.0)
    scene = write_scene(tmp_path / "scene.png")
    assert main(["caption", str(scene), "--checkpoint", str(cap)]) == 0
    err = capsys.readouterr().err
    assert f"warning: {scene}: this image looks unlike the images the captioner was trained on" in err
    assert main(["ask", str(scene), "what color is the ✨ circle?", "--checkpoint", str(vqa)]) == 0
    err = capsys.readouterr().err
    assert f"warning: {scene}: words the model does not know were ignored: '✨'" in err
    # --strict: a warning shows in the exit code; the result is still written
    assert main(["caption", str(scene), "--checkpoint", str(cap), "--strict"]) == EXIT_PARTIAL
    assert capsys.readouterr().out.startswith(f"{scene}\t")
    assert main(["ask", str(scene), "what color is the circle?", "--checkpoint", str(vqa), "--strict"]) == 0


def test_save_attention_writes_the_apps_overlays(captioner_checkpoint, vqa_checkpoint, image_file, tmp_path,
                                                 capsys) -> None:
    from PIL import Image

    from mmapp.app.overlay import fit_for_display, heatmap_overlay, word_overlays

    path = image_file("scene_5.png", size=(64, 48))
    out = tmp_path / "maps"
    assert main(["caption", str(path), "--checkpoint", str(captioner_checkpoint), "--save-attention", str(out),
                 "--json"]) == 0
    item = json.loads(capsys.readouterr().out)[0]
    files = sorted(out.glob("scene_5.*.png"))
    assert len(files) == len(item["tokens"]) > 0
    (r,) = Captioner.from_checkpoint(captioner_checkpoint, "cpu").caption(path)
    first = word_overlays(Image.open(path).convert("RGB"), r.tokens, r.attention)[0][0]
    assert files[0].name == f"scene_5.01.{r.tokens[0]}.png"
    assert np.abs(np.asarray(Image.open(files[0])).astype(int) - np.asarray(first).astype(int)).max() <= 1  # PNG round trip
    assert main(["ask", str(path), "what color is the circle?", "--checkpoint", str(vqa_checkpoint),
                 "--save-attention", str(out)]) == 0
    (a,) = VQAModel.from_checkpoint(vqa_checkpoint, "cpu").answer(path, "what color is the circle?")
    expected = heatmap_overlay(fit_for_display(Image.open(path).convert("RGB")), a.attention)
    assert np.abs(np.asarray(Image.open(out / "scene_5.answer.png")).astype(int)
                  - np.asarray(expected).astype(int)).max() <= 1  # PNG round trip


# ---------------------------------------------------------------------------------------------- formats


def test_coco_format_round_trips_through_eval_caption(folder, captioner_checkpoint, tmp_path, capsys) -> None:
    results = tmp_path / "captions_results.json"
    rc = main(["caption", str(folder), "--checkpoint", str(captioner_checkpoint), "--format", "coco",
               "-o", str(results)])
    assert rc == EXIT_PARTIAL  # bad_4.png skipped
    written = json.loads(results.read_text())
    assert sorted(r["image_id"] for r in written) == [1, 2, 3]  # the number each file name ends in
    annotations = {"images": [{"id": i} for i in (1, 2, 3)],
                   "annotations": [{"id": n, "image_id": r["image_id"], "caption": r["caption"] + " x"}
                                   for n, r in enumerate(written)]}
    (tmp_path / "ann.json").write_text(json.dumps(annotations))
    capsys.readouterr()
    assert main(["eval", "caption", "--results", str(results), "--annotations", str(tmp_path / "ann.json"),
                 "--out", str(tmp_path / "scores")]) == 0
    metrics = json.loads((tmp_path / "scores" / "metrics.json").read_text())
    assert metrics["num_missing"] == 0 and metrics["overall"]["Bleu_1"] > 0.5


def test_vqa_questions_file_round_trips_through_eval_vqa(folder, vqa_checkpoint, tmp_path, capsys) -> None:
    questions = {"info": {}, "task_type": "Open-Ended", "data_type": "mscoco", "data_subtype": "val2014",
                 "license": {}, "questions": [
                     {"image_id": 1, "question": "what color is the circle?", "question_id": 10},
                     {"image_id": 2, "question": "how many squares are there?", "question_id": 20},
                     {"image_id": 2, "question": "is there a red triangle?", "question_id": 21},
                     {"image_id": 99, "question": "what color is the circle?", "question_id": 990}]}
    qfile = tmp_path / "questions.json"
    qfile.write_text(json.dumps(questions))
    results = tmp_path / "vqa_results.json"
    rc = main(["ask", str(folder / "img_*"), "--questions", str(qfile), "--checkpoint", str(vqa_checkpoint),
               "--format", "vqa", "-o", str(results)])
    err = capsys.readouterr().err
    assert rc == 0, err
    assert "1 questions of" in err  # image 99 was not given
    written = json.loads(results.read_text())
    model = VQAModel.from_checkpoint(vqa_checkpoint, "cpu")
    expected = {10: model.answer(folder / "img_1.png", "what color is the circle?")[0].answers[0][0],
                21: model.answer(folder / "img_2.jpg", "is there a red triangle?")[0].answers[0][0]}
    got = {r["question_id"]: r["answer"] for r in written}
    assert sorted(got) == [10, 20, 21] and all(got[k] == v for k, v in expected.items())
    answers = {"info": {}, "license": {}, "data_subtype": "val2014", "annotations": [
        {"question_id": q, "image_id": i, "question_type": "what", "answer_type": "other",
         "multiple_choice_answer": got[q], "answers": [{"answer": got[q], "answer_confidence": "yes",
                                                        "answer_id": k} for k in range(1, 11)]}
        for q, i in ((10, 1), (20, 2), (21, 2))]}
    (tmp_path / "ann.json").write_text(json.dumps(answers))
    questions["questions"] = questions["questions"][:3]
    qfile.write_text(json.dumps(questions))
    assert main(["eval", "vqa", "--results", str(results), "--questions", str(qfile),
                 "--annotations", str(tmp_path / "ann.json"), "--out", str(tmp_path / "scores")]) == 0
    assert json.loads((tmp_path / "scores" / "metrics.json").read_text())["overall"] == pytest.approx(1.0)


def test_text_questions_file_asks_every_image(folder, vqa_checkpoint, tmp_path, capsys) -> None:
    qfile = tmp_path / "questions.txt"
    qfile.write_text("what color is the circle?\n# a comment\n\nqué es esto\nhow many squares are there?\n")
    rc = main(["ask", str(folder / "img_*"), "--questions", str(qfile), "--checkpoint", str(vqa_checkpoint),
               "--jsonl", "--top-k", "2"])
    captured = capsys.readouterr()
    assert rc == EXIT_PARTIAL  # "qué es esto" refused for each image, the rest answered
    rows = [json.loads(line) for line in captured.out.splitlines()]
    assert [(Path(r["image"]).name, r["question"]) for r in rows] == [
        ("img_1.png", "what color is the circle?"), ("img_1.png", "how many squares are there?"),
        ("img_2.jpg", "what color is the circle?"), ("img_2.jpg", "how many squares are there?")]
    assert all(len(r["answers"]) == 2 for r in rows)
    assert captured.err.count("none of the question's words are known") == 2


@pytest.mark.parametrize("flag", ["--max-batch-size", "--workers"])
def test_app_refuses_fewer_than_one_batch_or_worker(flag, capsys):
    assert main(["app", flag, "0"]) == EXIT_USAGE  # refused before any checkpoint is looked for
    assert f"{flag} must be at least 1" in capsys.readouterr().err
