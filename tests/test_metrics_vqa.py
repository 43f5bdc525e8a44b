"""VQA answer normalisation and accuracy against the official vqaEval.py behaviour."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

from mmapp.errors import DataError
from mmapp.metrics.vqa_accuracy import accuracy_for, vqa_accuracy, vqa_accuracy_files
from mmapp.vqa_normalize import (normalize_answer, process_digit_article, process_punctuation,
                                         soft_score)

FIX = Path(__file__).parent / "fixtures_metrics"


@pytest.mark.parametrize("raw, expected", [
    ("Two.", "2"),
    ("a dog", "dog"),
    ("dont", "don't"),
    ("yes!", "yes"),
    ("Yes", "yes"),
    ("none", "0"),
    ("ten", "10"),
    ("1,000", "1000"),          # digit-comma-digit: every punctuation mark is deleted
    ("yes/no", "yes no"),       # a mark touching no space becomes a space
    ("hello , world", "hello world"),  # a mark touching a space is deleted
    ("2.5", "2.5"),             # a period before a digit stays
    ("a.m.", "am"),
    ("(a) b", "b"),
    ("The  Cat\tsat\n", "cat sat"),
    ("Im", "im"),               # the map's capitalised keys never match after lower-casing
    ("whats", "what's"),
    ("isnt it", "isn't it"),
    ("an apple", "apple"),
    ("two-tone", "2 tone"),      # "-" becomes a space, then "two" a digit
])
def test_normalize_answer_official_examples(raw: str, expected: str) -> None:
    assert normalize_answer(raw) == expected


def test_period_strip_official_count_quirk() -> None:
    # The official call passes re.UNICODE (32) as the count: only the first 32 periods go.
    text = "x." * 40
    out = process_punctuation(text)
    assert out.count(".") == 8 and out.startswith("x" * 32)


def test_process_digit_article_keeps_other_words() -> None:
    assert process_digit_article("The Three Dogs") == "3 dogs"


def test_soft_score() -> None:
    assert [soft_score(c) for c in range(6)] == pytest.approx([0, 1 / 3, 2 / 3, 1, 1, 1])
    with pytest.raises(ValueError):
        soft_score(-1)


@pytest.mark.parametrize("agreeing, expected", [(0, 0.0), (1, 0.3), (2, 0.6), (3, 0.9), (4, 1.0), (7, 1.0), (9, 1.0)])
def test_closed_form_accuracy(agreeing: int, expected: float) -> None:
    gts = ["2"] * agreeing + [f"other {i}" for i in range(10 - agreeing)]
    assert accuracy_for("Two", gts) == pytest.approx(expected)


def test_all_identical_answers_are_not_normalised() -> None:
    # Official quirk: with ten identical human answers nothing is normalised.
    assert accuracy_for("yes", ["yes"] * 10) == 1.0
    assert accuracy_for("Yes", ["yes"] * 10) == 0.0
    assert accuracy_for(" yes\n", ["yes"] * 10) == 1.0  # whitespace is always cleaned


def _official_loop(pred: str, gt_answers: list[str]) -> float:
    """Literal transcription of the official per-question loop (answer dicts compared by value)."""
    answers = [{"answer": a.replace("\n", " ").replace("\t", " ").strip(), "answer_id": i + 1}
               for i, a in enumerate(gt_answers)]
    res = pred.replace("\n", " ").replace("\t", " ").strip()
    if len({a["answer"] for a in answers}) > 1:
        for a in answers:
            a["answer"] = process_digit_article(process_punctuation(a["answer"]))
        res = process_digit_article(process_punctuation(res))
    accs = []
    for datum in answers:
        others = [item for item in answers if item != datum]
        accs.append(min(1, len([item for item in others if item["answer"] == res]) / 3))
    return sum(accs) / len(accs)


@pytest.mark.parametrize("pred, gts", [
    ("One.", ["1"] * 7 + ["one", "2", "1 dog"]),
    ("red", ["red", "Red.", "maroon", "dark red", "red!", "red", "crimson", "red", "pink", "red/white"]),
    ("the bike", ["bike", "bicycle", "a bike", "bike", "bmx", "bike", "cycle", "bike ", "motor bike", "none"]),
    ("0", ["none", "zero", "0", "1", "2", "none", "0", "0", "3", "nothing"]),
    ("yes", ["yes"] * 3),
])
def test_accuracy_matches_official_loop(pred: str, gts: list[str]) -> None:
    assert accuracy_for(pred, gts) == pytest.approx(_official_loop(pred, gts))


def _load(name: str):
    return json.loads((FIX / name).read_text())


def test_vqa_accuracy_on_fixture_files() -> None:
    m = vqa_accuracy_files(FIX / "vqa_results_tiny.json", FIX / "vqa_questions_tiny.json",
                           FIX / "vqa_annotations_tiny.json")
    # 110: 1.0 (yes); 111: "One." -> "1", 8 matches -> 1.0; 120: 2 x "red" -> 0.6; 130: "a bike" -> 3 -> 0.9
    assert m["per_question"] == pytest.approx({110: 1.0, 111: 1.0, 120: 0.6, 130: 0.9})
    assert m["overall"] == pytest.approx((1 + 1 + 0.6 + 0.9) / 4)
    assert m["per_answer_type"] == pytest.approx({"yes/no": 1.0, "number": 1.0, "other": 0.75})
    assert m["per_question_type"] == pytest.approx(
        {"is the": 1.0, "how many": 1.0, "what color is the": 0.6, "what is the man": 0.9})
    assert (m["num_questions"], m["num_evaluated"], m["num_missing"]) == (5, 4, 1)
    assert m["missing_question_ids"] == [121]


def test_unknown_question_id_refused() -> None:
    results = _load("vqa_results_tiny.json") + [{"question_id": 999, "answer": "yes"}]
    with pytest.raises(DataError, match=r"res\.json: record 4: unknown question_id 999"):
        vqa_accuracy(results, None, _load("vqa_annotations_tiny.json"), results_name="res.json")


def test_duplicate_question_id_refused() -> None:
    results = _load("vqa_results_tiny.json") + [{"question_id": 110, "answer": "no"}]
    with pytest.raises(DataError, match=r"res\.json: record 4: duplicate question_id 110"):
        vqa_accuracy(results, None, _load("vqa_annotations_tiny.json"), results_name="res.json")


@pytest.mark.parametrize("bad, message", [
    ({"question_id": 110}, "needs 'question_id' and 'answer'"),
    ({"question_id": "110", "answer": "yes"}, "question_id must be an integer"),
    ({"question_id": 110, "answer": 3}, "'answer' must be a string"),
])
def test_malformed_records_refused(bad: dict, message: str) -> None:
    with pytest.raises(DataError, match=message):
        vqa_accuracy([bad], None, _load("vqa_annotations_tiny.json"))


def test_mismatched_questions_file_refused() -> None:
    questions = _load("vqa_questions_tiny.json")
    questions["questions"] = questions["questions"][:2]
    with pytest.raises(DataError, match="not in the questions file"):
        vqa_accuracy(_load("vqa_results_tiny.json"), questions, _load("vqa_annotations_tiny.json"))


def test_inputs_are_not_mutated() -> None:
    ann = _load("vqa_annotations_tiny.json")
    before = copy.deepcopy(ann)
    vqa_accuracy(_load("vqa_results_tiny.json"), None, ann)
    assert ann == before


def test_bad_json_file_names_the_file(tmp_path: Path) -> None:
    bad = tmp_path / "broken.json"
    bad.write_text("[{\"question_id\": 1,")
    with pytest.raises(DataError, match="broken.json"):
        vqa_accuracy_files(bad, None, FIX / "vqa_annotations_tiny.json")
